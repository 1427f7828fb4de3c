//! `builder serve-image`: the slim serving image, from a devel image's runtime, with
//! onnxruntime's library and a model when asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::optimize::{optimize_into_cache, Choice, GateArgs};
use super::{
    common_labels, default_devel_tag, serving_tag_for, short, with_model_suffix, Built, Engines,
    OrtPin, OvPin, LABEL_PREFIX,
};
use crate::context::{self, find_workspace, sha256_hex};
use crate::cpu::TargetCpu;
use crate::docker::{self, BuildRequest};
use crate::engines::{onnxruntime_library, openvino_libraries};

/// Build the slim serving image (FROM scratch: the runtime, the glibc files it links and, by
/// default, onnxruntime's library; non-root), with a model baked in when --embed-model is
/// given (validated by the runtime with every engine during the build).
#[derive(clap::Args)]
pub struct Args {
    /// Devel image to take the runtime from [default: $USER/onnx-serving-devel].
    #[arg(long)]
    devel_image: Option<String>,
    /// Image tag [default: the devel tag without "-devel", e.g. $USER/onnx-serving; with
    /// --embed-model, the model name appended: $USER/onnx-serving-resnet].
    #[arg(long)]
    tag: Option<String>,
    /// ONNX file to bake in at /models/<name>/1/model.onnx (its signature.toml and labels.txt too).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Model name for the embedded model [default: from its path, e.g. …/resnet/1/model.onnx → resnet].
    #[arg(long, requires = "embed_model")]
    model_name: Option<String>,
    /// Bake in the embedded model optimized for this host's CPU (`builder optimize`: int8 or
    /// onnxruntime's host graph where an accuracy gate passes, with --engine openvino also
    /// OpenVINO's bf16; else fp32), with the choice, the gate's figures and the speed-up as
    /// labels.
    #[arg(long, requires = "embed_model")]
    optimize: bool,
    #[command(flatten)]
    gate: GateArgs,
    /// Engines the image carries: all (tract + onnxruntime, the faster serves each model),
    /// onnxruntime (the same, onnxruntime forced), tract (no onnxruntime library; tag
    /// suffix -tract), openvino (all + OpenVINO's CPU plugin, ~93 MB more; with --optimize,
    /// bf16 is tried too; tag suffix -openvino).
    #[arg(long, value_enum, default_value_t = Engines::All)]
    engine: Engines,
    /// onnxruntime's library on this host [default: $ONNX_SERVING_ONNXRUNTIME_LIBRARY, else
    /// .cache/onnxruntime/libonnxruntime.so.1, which `make onnxruntime` fetches]; checked
    /// against the sha256 pinned in scripts/onnxruntime.env.
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
    /// OpenVINO's libraries on this host, for --engine openvino [default:
    /// .cache/openvino/lib, which `make openvino` fetches]; checked to come from the wheel
    /// pinned in scripts/openvino.env.
    #[arg(long)]
    openvino_libraries: Option<PathBuf>,
    /// Rebuild every layer instead of reusing Docker's cache.
    #[arg(long)]
    no_cache: bool,
    /// Print every line of build output (by default only progress and errors).
    #[arg(long, short)]
    verbose: bool,
}

impl Args {
    /// Builds the serving image and prints its tag.
    pub async fn run(self) -> Result<()> {
        self.gate.validate(self.optimize)?;
        let opts = ServeImageOptions {
            devel_image: self.devel_image,
            tag: self.tag,
            embed_model: self.embed_model,
            model_name: self.model_name,
            optimize: self.optimize.then_some(self.gate),
            engine: self.engine,
            onnxruntime_library: self.onnxruntime_library,
            openvino_libraries: self.openvino_libraries,
            no_cache: self.no_cache,
            verbose: self.verbose,
        };
        let built = serve_image(&opts).await?;
        println!("{}", built.tag);
        Ok(())
    }
}

/// What `serve_image` builds and how (the CLI's `builder serve-image` flags).
pub struct ServeImageOptions {
    /// Devel image to take the runtime from [default: the native one's default tag].
    pub devel_image: Option<String>,
    /// Image tag [default: from the devel tag, the engine and the model].
    pub tag: Option<String>,
    /// ONNX file to bake in.
    pub embed_model: Option<PathBuf>,
    /// Model name for the embedded model [default: from its path].
    pub model_name: Option<String>,
    /// Optimize the embedded model for this host first (`builder optimize`), with these gate
    /// settings.
    pub optimize: Option<GateArgs>,
    /// Engines the image carries.
    pub engine: Engines,
    /// onnxruntime's library on this host [default: `$ONNX_SERVING_ONNXRUNTIME_LIBRARY`, else
    /// `.cache/onnxruntime/libonnxruntime.so.1` in the workspace].
    pub onnxruntime_library: Option<PathBuf>,
    /// OpenVINO's libraries on this host [default: `.cache/openvino/lib` in the workspace].
    pub openvino_libraries: Option<PathBuf>,
    /// Rebuild every layer.
    pub no_cache: bool,
    /// Print every line of build output.
    pub verbose: bool,
}

/// Builds the serving image from a devel image: its runtime, the pinned onnxruntime library when
/// the engines call for it, and the model when one is embedded (the build runs the runtime's
/// check on it). The image inherits the devel image's CPU labels.
pub async fn serve_image(opts: &ServeImageOptions) -> Result<Built> {
    let workspace = find_workspace()?;
    let mut model = match &opts.embed_model {
        Some(path) => Some(check_model_file(path, opts.model_name.as_deref())?),
        None => None,
    };
    if let (Some((name, path, _)), Some(gate)) = (&model, &opts.optimize) {
        if gate.may_ship_bf16() && !opts.engine.carries_openvino() {
            bail!("bf16 runs on OpenVINO, which only an image that carries it serves: add --engine openvino");
        }
        // An image with OpenVINO may ship the model in bf16 when the search is open.
        let gate = GateArgs {
            bf16: gate.bf16 || (opts.engine.carries_openvino() && gate.precision == "auto"),
            ..gate.clone()
        };
        let (out, _) = optimize_into_cache(path, name, &gate)?;
        model = Some(check_model_file(&out.join("model.onnx"), Some(name))?);
    }
    // What `builder optimize` chose for the embedded model, when it ran (here or before).
    let choice = match &model {
        Some((_, path, _)) => Choice::read(path.parent().unwrap_or(Path::new(".")))?,
        None => None,
    };
    if let Some(choice) = &choice {
        eprintln!("{}", choice.summary());
        if choice.needs_openvino() && !opts.engine.carries_openvino() {
            bail!("the model was optimized to run in bf16 on OpenVINO, which this image would not carry: add --engine openvino (or embed the fp32 model)");
        }
    }
    let docker = docker::connect().await?;
    let devel = opts
        .devel_image
        .clone()
        .unwrap_or_else(|| default_devel_tag(&TargetCpu::Native));
    if !docker::image_exists(&docker, &devel).await? {
        bail!("the devel image {devel} does not exist: build it first with `builder devel` (or name another with --devel-image)");
    }
    // An image with a model baked in does not replace the generic one of the same devel image;
    // nor does a tract-only one.
    let tag = opts.tag.clone().unwrap_or_else(|| {
        let base = match opts.engine {
            Engines::Tract => with_model_suffix(&serving_tag_for(&devel), "tract"),
            Engines::Openvino => with_model_suffix(&serving_tag_for(&devel), "openvino"),
            _ => serving_tag_for(&devel),
        };
        match &model {
            Some((name, _, _)) => with_model_suffix(&base, name),
            None => base,
        }
    });
    let ort = if opts.engine.carries_onnxruntime() {
        let pin = OrtPin::read(&workspace)?;
        let lib = onnxruntime_library(&workspace, opts.onnxruntime_library.as_deref(), &pin)?;
        Some((pin, lib))
    } else {
        None
    };
    let ov = if opts.engine.carries_openvino() {
        let pin = OvPin::read(&workspace)?;
        let dir = openvino_libraries(&workspace, opts.openvino_libraries.as_deref(), &pin)?;
        Some((pin, dir))
    } else {
        None
    };

    let mut labels = common_labels(&workspace, "serving", "onnx-serving");
    for (k, v) in docker::image_labels(&docker, &devel).await? {
        let inherited = [
            "target-cpu",
            "x86-64-level",
            "rustflags",
            "instruction-sets",
            "base-image",
        ];
        if inherited
            .iter()
            .any(|name| k == format!("{LABEL_PREFIX}{name}"))
        {
            labels.insert(k, v);
        }
    }
    labels.insert(format!("{LABEL_PREFIX}devel-image"), devel.clone());
    if let Ok((0, version)) = docker::run_once(&docker, &devel, &["rustc", "--version"]).await {
        labels.insert(format!("{LABEL_PREFIX}rustc"), version.trim().to_string());
    }
    let engines = opts.engine.names();
    labels.insert(format!("{LABEL_PREFIX}engines"), engines.to_string());
    labels.insert(
        format!("{LABEL_PREFIX}engine"),
        opts.engine.runtime_engine().to_string(),
    );
    if let Some((pin, _)) = &ort {
        labels.insert(
            format!("{LABEL_PREFIX}onnxruntime-version"),
            pin.version.clone(),
        );
        labels.insert(
            format!("{LABEL_PREFIX}onnxruntime-sha256"),
            pin.lib_sha256.clone(),
        );
    }
    if let Some((pin, _)) = &ov {
        labels.insert(
            format!("{LABEL_PREFIX}openvino-version"),
            pin.version.clone(),
        );
        labels.insert(
            format!("{LABEL_PREFIX}openvino-wheel-sha256"),
            pin.wheel_sha256.clone(),
        );
    }
    let mut build_args = HashMap::from([
        ("DEVEL_IMAGE".to_string(), devel.clone()),
        (
            "ENGINE".to_string(),
            opts.engine.runtime_engine().to_string(),
        ),
        // The devel image's libs-<name>/ folder copied beside glibc's files: libstdc++ only
        // where onnxruntime's C++ library needs it.
        (
            "EXTRA_LIBS".to_string(),
            if ort.is_some() {
                "onnxruntime"
            } else {
                "tract"
            }
            .to_string(),
        ),
    ]);
    if let Some((name, _, digest)) = &model {
        labels.insert(format!("{LABEL_PREFIX}model-name"), name.clone());
        labels.insert(format!("{LABEL_PREFIX}model-sha256"), digest.clone());
        build_args.insert("EMBED_MODEL_NAME".to_string(), name.clone());
    }
    if let Some(choice) = &choice {
        labels.extend(choice.labels());
    }
    let ctx = context::serving_context(
        &workspace,
        model.as_ref().map(|(n, p, _)| (n.as_str(), p.as_path())),
        ort.as_ref()
            .map(|(pin, lib)| (lib.as_path(), pin.version.as_str())),
        ov.as_ref()
            .map(|(pin, dir)| (dir.as_path(), pin.libs.as_slice())),
    )?;
    eprintln!(
        "Building {tag} ({engines}) from {devel}{}",
        model
            .as_ref()
            .map(|(n, p, _)| format!(" with model '{n}' ({})", p.display()))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let request = BuildRequest {
        dockerfile: "dockerfiles/Dockerfile.serving",
        tag: &tag,
        target: Some(if model.is_some() {
            "serving-model"
        } else {
            "serving"
        }),
        build_args,
        labels,
        network: None,
        no_cache: opts.no_cache,
        verbose: opts.verbose,
    };
    let id = docker::build(&docker, &request, ctx).await.map_err(|e| {
        if missing_rootfs(&format!("{e:#}")) {
            e.context(format!(
                "{devel} lacks the folders this serving Dockerfile copies (it was built by an older onnx-serving); rebuild it with `builder devel`"
            ))
        } else if model.is_some() {
            e.context("the model was rejected or the image could not be built (the runtime's own check-model output is above)")
        } else {
            e
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let size = docker
        .inspect_image(&id)
        .await
        .ok()
        .and_then(|i| i.size)
        .unwrap_or(0);
    eprintln!(
        "Built {tag} ({}, {:.1} MB) in {seconds:.0} s",
        short(&id),
        size as f64 / 1e6
    );
    Ok(Built { tag, id, seconds })
}

/// Whether a failed build's message says the devel image lacks `/opt/onnx-serving/rootfs` or a
/// `libs-*` folder (a devel image from before the folders, which `builder devel` rebuilds).
fn missing_rootfs(message: &str) -> bool {
    message.lines().any(|line| {
        let line = line.to_lowercase();
        !line.starts_with("step ")
            && (line.contains("onnx-serving/rootfs") || line.contains("onnx-serving/libs-"))
            && ["not exist", "not found", "no such file"]
                .iter()
                .any(|m| line.contains(m))
    })
}

/// The model file must exist and be a file; returns (model name, path, sha256).
fn check_model_file(path: &Path, name: Option<&str>) -> Result<(String, PathBuf, String)> {
    if !path.exists() {
        bail!("--embed-model {}: no such file", path.display());
    }
    if !path.is_file() {
        bail!(
            "--embed-model {}: not a file; give the .onnx file itself",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        bail!("--embed-model {}: the file is empty", path.display());
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => default_model_name(path),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("model name '{name}' must be letters, digits, '_', '-' or '.' (it is a URL path segment); set --model-name");
    }
    Ok((name, path.to_owned(), sha256_hex(&bytes)))
}

/// `…/resnet/1/model.onnx` → `resnet`; `squeezenet.onnx` → `squeezenet`.
fn default_model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let parent = path.parent();
    let version_dir = parent
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().parse::<u64>().is_ok());
    if stem == "model" && version_dir {
        if let Some(name) = parent.and_then(Path::parent).and_then(Path::file_name) {
            return name.to_string_lossy().to_string();
        }
    }
    if stem.is_empty() {
        "model".into()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_and_checks() {
        assert_eq!(
            default_model_name(Path::new("/tmp/resnet/1/model.onnx")),
            "resnet"
        );
        assert_eq!(
            default_model_name(Path::new("/tmp/squeezenet.onnx")),
            "squeezenet"
        );
        assert_eq!(default_model_name(Path::new("model.onnx")), "model");
        let err = check_model_file(Path::new("/nonexistent/m.onnx"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        let err = check_model_file(Path::new("/tmp"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a file"), "{err}");
        let file = std::env::temp_dir().join(format!("onnx-serving-m-{}.onnx", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = check_model_file(&file, Some("a/b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--model-name"), "{err}");
        let (name, _, digest) = check_model_file(&file, Some("ok")).unwrap();
        assert_eq!((name.as_str(), digest.len()), ("ok", 64));
    }

    #[test]
    fn a_devel_image_without_the_rootfs_folders_is_told_apart() {
        // The classic builder's words, from a serve-image on an image without the folders.
        let stale = "building t failed: Docker stream error: COPY failed: stat \
                     opt/onnx-serving/rootfs/: file does not exist\n--- last build output ---\n\
                     Step 5/29 : COPY --from=devel /opt/onnx-serving/rootfs/ /";
        assert!(missing_rootfs(stale));
        // What a devel image from before the libs- folders gives (it has rootfs/).
        let old = "COPY failed: stat opt/onnx-serving/libs-onnxruntime/: file does not exist";
        assert!(missing_rootfs(old));
        // Another failure whose output only shows the COPY step is not.
        let other = "building t failed: layer does not exist\n--- last build output ---\n\
                     Step 5/29 : COPY --from=devel /opt/onnx-serving/rootfs/ /opt/onnx-serving/libs-tract/ /";
        assert!(!missing_rootfs(other));
    }
}
