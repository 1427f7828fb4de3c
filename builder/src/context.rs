//! Docker build contexts, written with the `tar` crate: workspace sources, crates vendored on the
//! host, generated files. Nothing under `target/`, `.git/` or `.cache/` goes in.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Names never sent to the daemon, wherever they appear (a `.dockerignore` of our own).
pub const EXCLUDED: &[&str] = &["target", ".git", ".cache", "node_modules", ".DS_Store"];

/// Vendored crates only Windows builds use: sent as stubs (manifest + empty checksum list), which
/// cargo accepts because it never compiles them here. Saves ~250 MB per build context.
fn windows_only(crate_dir_name: &str) -> bool {
    crate_dir_name.starts_with("windows") || crate_dir_name.starts_with("winapi")
}

pub struct BuildContext {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for BuildContext {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildContext {
    pub fn new() -> BuildContext {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        BuildContext { tar }
    }

    pub fn add_bytes(&mut self, dst: &str, data: &[u8]) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        self.tar
            .append_data(&mut header, dst, data)
            .with_context(|| format!("cannot add {dst} to the build context"))
    }

    /// A symbolic link `dst` pointing at `target` (relative to `dst`'s folder).
    pub fn add_symlink(&mut self, dst: &str, target: &str) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        self.tar
            .append_link(&mut header, dst, target)
            .with_context(|| format!("cannot add the link {dst} to the build context"))
    }

    pub fn add_file(&mut self, src: &Path, dst: &str) -> Result<()> {
        if !src.is_file() {
            bail!("{} is not a file", src.display());
        }
        self.tar
            .append_path_with_name(src, dst)
            .with_context(|| format!("cannot add {} to the build context", src.display()))
    }

    /// Adds `src` recursively under `dst`, skipping [`EXCLUDED`] names.
    pub fn add_dir(&mut self, src: &Path, dst: &str) -> Result<()> {
        self.add_tree(src, dst, EXCLUDED)
    }

    fn add_tree(&mut self, src: &Path, dst: &str, excluded: &[&str]) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .with_context(|| format!("cannot read {}", src.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if excluded.contains(&name.as_ref()) {
                continue;
            }
            let path = entry.path();
            let target = format!("{dst}/{name}");
            if path.is_dir() {
                self.add_tree(&path, &target, excluded)?;
            } else if path.is_file() {
                self.add_file(&path, &target)?;
            }
        }
        Ok(())
    }

    /// Adds a `cargo vendor` folder as `vendor/`, Windows-only crates as stubs.
    pub fn add_vendor(&mut self, vendor: &Path) -> Result<()> {
        let mut crates: Vec<_> = std::fs::read_dir(vendor)
            .with_context(|| format!("cannot read {}", vendor.display()))?
            .collect::<std::io::Result<_>>()?;
        crates.sort_by_key(|e| e.file_name());
        for entry in crates {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if windows_only(&name) {
                let checksum: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(path.join(".cargo-checksum.json"))
                        .context("vendored crate without checksum")?,
                )?;
                let stub = serde_json::json!({"files": {}, "package": checksum["package"]});
                self.add_file(
                    &path.join("Cargo.toml"),
                    &format!("vendor/{name}/Cargo.toml"),
                )?;
                self.add_bytes(
                    &format!("vendor/{name}/.cargo-checksum.json"),
                    stub.to_string().as_bytes(),
                )?;
                self.add_bytes(&format!("vendor/{name}/src/lib.rs"), b"")?;
            } else {
                // Every file a crate ships is in its checksum list: nothing may be left out
                // (cc, for one, has a source folder named `target`).
                self.add_tree(&path, &format!("vendor/{name}"), &[])?;
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        self.tar
            .into_inner()
            .context("cannot finish the build context")
    }
}

/// Cargo configuration used inside the devel image: crates come from `vendor/` only.
pub const DOCKER_CARGO_CONFIG: &str = "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n\n[net]\noffline = true\n";

/// The lower-case hex SHA-256 of `data` (64 characters): model digests, lock-file stamps.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The workspace root: `ONNX_SERVING_WORKSPACE`, else the nearest ancestor of the current
/// folder holding `dockerfiles/Dockerfile.devel`.
pub fn find_workspace() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ONNX_SERVING_WORKSPACE") {
        return Ok(PathBuf::from(dir));
    }
    let start = std::env::current_dir()?;
    let mut dir = start.as_path();
    loop {
        if dir.join("dockerfiles").join("Dockerfile.devel").is_file()
            && dir.join("Cargo.lock").is_file()
        {
            return Ok(dir.to_owned());
        }
        dir = match dir.parent() {
            Some(parent) => parent,
            None => bail!(
                "no onnx-serving checkout above {}: run builder from the repository (or set ONNX_SERVING_WORKSPACE)",
                start.display()
            ),
        };
    }
}

/// The devel build context: manifests, vendored crates, runtime and hostcpu sources and the
/// runtime's build script, the gRPC protos it compiles, the Dockerfile.
pub fn devel_context(workspace: &Path, vendor: &Path) -> Result<Vec<u8>> {
    let mut ctx = BuildContext::new();
    ctx.add_file(
        &workspace.join("dockerfiles/Dockerfile.devel"),
        "dockerfiles/Dockerfile.devel",
    )?;
    ctx.add_bytes("docker-cargo-config.toml", DOCKER_CARGO_CONFIG.as_bytes())?;
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "hostcpu/Cargo.toml",
        "runtime/Cargo.toml",
        "builder/Cargo.toml",
        "tests/Cargo.toml",
        "examples/Cargo.toml",
        "runtime/build.rs",
    ] {
        ctx.add_file(&workspace.join(file), file)?;
    }
    ctx.add_dir(&workspace.join("proto"), "proto")?;
    ctx.add_dir(&workspace.join("hostcpu/src"), "hostcpu/src")?;
    ctx.add_dir(&workspace.join("runtime/src"), "runtime/src")?;
    ctx.add_dir(&workspace.join("runtime/benches"), "runtime/benches")?;
    ctx.add_vendor(vendor)?;
    ctx.finish()
}

/// The serving build context: the Dockerfile, `onnxruntime/` (the library at `version`, or only a
/// note for a tract-only image) and, when embedding, `models/<name>/1/`.
pub fn serving_context(
    workspace: &Path,
    model: Option<(&str, &Path)>,
    onnxruntime: Option<(&Path, &str)>,
    openvino: Option<(&Path, &[String])>,
) -> Result<Vec<u8>> {
    let mut ctx = BuildContext::new();
    ctx.add_file(
        &workspace.join("dockerfiles/Dockerfile.serving"),
        "dockerfiles/Dockerfile.serving",
    )?;
    match onnxruntime {
        Some((lib, version)) => {
            // The versioned file and its SONAME link, as a library is installed (the runtime
            // reads the version from the name the link points at).
            let file = format!("libonnxruntime.so.{version}");
            ctx.add_file(lib, &format!("onnxruntime/{file}"))?;
            ctx.add_symlink("onnxruntime/libonnxruntime.so.1", &file)?;
        }
        None => ctx.add_bytes(
            "onnxruntime/README",
            b"This image carries tract only (builder serve-image --engine tract).\n",
        )?,
    }
    match openvino {
        // The libraries under their file names (OpenVINO finds its plugin and front end beside
        // libopenvino.so by name), and libopenvino_c.so for the runtime to open.
        Some((dir, files)) => {
            for file in files {
                ctx.add_file(&dir.join(file), &format!("openvino/{file}"))?;
            }
            if let Some(c_api) = files.iter().find(|f| f.starts_with("libopenvino_c.so.")) {
                ctx.add_symlink("openvino/libopenvino_c.so", c_api)?;
            }
        }
        None => ctx.add_bytes(
            "openvino/README",
            b"This image carries no OpenVINO (builder serve-image --engine openvino adds it).\n",
        )?,
    }
    if let Some((name, file)) = model {
        ctx.add_file(file, &format!("models/{name}/1/model.onnx"))?;
        // The model's companion files (signature, labels) travel with it.
        if let Some(dir) = file.parent() {
            // optimization.json and the portable fallback: what `builder optimize` chose.
            for extra in [
                "signature.toml",
                "labels.txt",
                "optimization.json",
                "model.fp32.onnx",
            ] {
                if dir.join(extra).is_file() {
                    ctx.add_file(&dir.join(extra), &format!("models/{name}/1/{extra}"))?;
                }
            }
        }
    }
    ctx.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn add_dir_skips_excluded_names() {
        let dir = std::env::temp_dir().join(format!("onnx-serving-ctx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["src", "target/release", ".git", "src/nested/target"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.join("target/release/runtime"), "binary").unwrap();
        std::fs::write(dir.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(dir.join("src/nested/target/x"), "x").unwrap();
        std::fs::write(dir.join("Cargo.toml"), "[package]").unwrap();
        let mut ctx = BuildContext::new();
        ctx.add_dir(&dir, "ws").unwrap();
        ctx.add_bytes("generated.toml", b"a = 1").unwrap();
        let names = entries(&ctx.finish().unwrap());
        assert_eq!(
            names,
            vec!["ws/Cargo.toml", "ws/src/main.rs", "generated.toml"]
        );
    }

    #[test]
    fn windows_crates_become_stubs() {
        let dir = std::env::temp_dir().join(format!("onnx-serving-vendor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for krate in ["windows-sys-0.61.2", "serde-1.0.0"] {
            std::fs::create_dir_all(dir.join(krate).join("src/target")).unwrap();
            std::fs::write(
                dir.join(krate).join("src/target/llvm.rs"),
                "// a source folder named target",
            )
            .unwrap();
            std::fs::write(dir.join(krate).join("Cargo.toml"), "[package]").unwrap();
            std::fs::write(dir.join(krate).join("src/lib.rs"), "// big").unwrap();
            std::fs::write(
                dir.join(krate).join(".cargo-checksum.json"),
                r#"{"files":{"src/lib.rs":"ab"},"package":"cd"}"#,
            )
            .unwrap();
        }
        let mut ctx = BuildContext::new();
        ctx.add_vendor(&dir).unwrap();
        let bytes = ctx.finish().unwrap();
        let names = entries(&bytes);
        assert!(names.contains(&"vendor/serde-1.0.0/src/lib.rs".to_string()));
        assert!(
            names.contains(&"vendor/serde-1.0.0/src/target/llvm.rs".to_string()),
            "{names:?}"
        );
        assert!(!names
            .iter()
            .any(|n| n.starts_with("vendor/windows-sys-0.61.2/src/target")));
        assert!(names.contains(&"vendor/windows-sys-0.61.2/Cargo.toml".to_string()));
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            if path == "vendor/windows-sys-0.61.2/.cargo-checksum.json" {
                assert_eq!(text, r#"{"files":{},"package":"cd"}"#);
            }
            if path == "vendor/windows-sys-0.61.2/src/lib.rs" {
                assert!(text.is_empty());
            }
        }
    }

    #[test]
    fn the_openvino_flavour_carries_the_pinned_libraries_and_the_c_api_link() {
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = std::env::temp_dir().join(format!("onnx-serving-ov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<String> = [
            "libopenvino_c.so.2641",
            "libopenvino.so.2641",
            "libtbb.so.12",
        ]
        .iter()
        .map(|f| f.to_string())
        .collect();
        for f in &files {
            std::fs::write(dir.join(f), b"ELF").unwrap();
        }
        let with = entries(&serving_context(&ws, None, None, Some((&dir, &files))).unwrap());
        for f in &files {
            assert!(with.contains(&format!("openvino/{f}")), "{with:?}");
        }
        assert!(
            with.contains(&"openvino/libopenvino_c.so".to_string()),
            "{with:?}"
        );
        assert!(with.contains(&"onnxruntime/README".to_string()), "{with:?}");
        let without = entries(&serving_context(&ws, None, None, None).unwrap());
        assert!(
            without.contains(&"openvino/README".to_string()),
            "{without:?}"
        );
        assert!(
            !without.iter().any(|e| e.contains("libopenvino")),
            "{without:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devel_context_of_this_workspace_has_sources_not_builds() {
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let vendor =
            std::env::temp_dir().join(format!("onnx-serving-empty-vendor-{}", std::process::id()));
        std::fs::create_dir_all(&vendor).unwrap();
        let names = entries(&devel_context(&ws, &vendor).unwrap());
        for want in [
            "dockerfiles/Dockerfile.devel",
            "Cargo.lock",
            "runtime/src/main.rs",
            "runtime/benches/serving.rs",
            "docker-cargo-config.toml",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("target/") || n.contains("fixtures")),
            "{names:?}"
        );
    }
}
