//! Opening OpenVINO's C library (`libopenvino_c.so`), once per process. The CPU plugin, the ONNX
//! front end and TBB are opened by OpenVINO itself, from the same folder.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The C library's file name as PyPI's openvino wheel ships it (`openvino/libs/`, versioned
/// 2026.4.1 -> `.2641`); images keep the library under this name.
pub const LIBRARY_FILE: &str = "libopenvino_c.so";
/// Where images built with OpenVINO keep its libraries.
pub const IMAGE_LIBRARY_DIR: &str = "/usr/lib/openvino";
/// The environment variable naming the library (`--openvino_library`'s), read by [`library`]
/// when no one called [`init`] (tests, benches, tools).
pub const LIBRARY_ENV: &str = "ONNX_SERVING_OPENVINO_LIBRARY";

/// The opened library.
pub struct Library {
    pub path: PathBuf,
    /// OpenVINO's build number, `2026.4.1-...`.
    pub version: String,
}

static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();

/// Opens the library at `path` (a file, or a folder holding [`LIBRARY_FILE`] or a versioned
/// `libopenvino_c.so.*`), or without one from [`IMAGE_LIBRARY_DIR`]. Only the first call in a
/// process opens anything; later calls return its result.
pub fn init(path: Option<&Path>) -> Result<&'static Library, String> {
    LIBRARY
        .get_or_init(|| open(path))
        .as_ref()
        .map_err(Clone::clone)
}

/// The library opened by [`init`] (opening it from [`LIBRARY_ENV`] or the image's folder if
/// `init` was not called), or why there is none.
pub fn library() -> Result<&'static Library, String> {
    let from_env = std::env::var_os(LIBRARY_ENV).map(PathBuf::from);
    init(from_env.as_deref())
}

/// Whether OpenVINO is meant to be there: a library was named (`path`), or the image's folder
/// holds one. A failure to open it is then worth a warning; otherwise this build simply
/// carries no OpenVINO.
pub fn expected(path: Option<&Path>) -> bool {
    path.is_some() || in_folder(Path::new(IMAGE_LIBRARY_DIR)).is_some()
}

/// `dir`'s C library: `libopenvino_c.so`, else the newest versioned one (the wheel has only those).
fn in_folder(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join(LIBRARY_FILE);
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so."))
        })
        .collect();
    versioned.sort();
    versioned.pop()
}

fn open(path: Option<&Path>) -> Result<Library, String> {
    let path = match path {
        Some(p) if p.is_dir() => in_folder(p).ok_or_else(|| {
            format!("{} holds no {LIBRARY_FILE}: point --openvino_library at the folder of OpenVINO's libraries (`make openvino` fetches them)", p.display())
        })?,
        Some(p) if p.is_file() => p.to_owned(),
        Some(p) => {
            return Err(format!(
                "{} does not exist: point --openvino_library (or {LIBRARY_ENV}) at OpenVINO's \
                 {LIBRARY_FILE}, 2025.1 or newer, or its folder (`make openvino` fetches 2026.4.1)",
                p.display()
            ))
        }
        None => in_folder(Path::new(IMAGE_LIBRARY_DIR)).ok_or_else(|| {
            format!(
                "no {LIBRARY_FILE} in {IMAGE_LIBRARY_DIR} (this image carries no OpenVINO; \
                 point --openvino_library at the library to add it)"
            )
        })?,
    };
    // The bindings panic on a library without a symbol they expect; the caller's load catches
    // panics, this call is made before any: keep it from taking the process down.
    let loaded = std::panic::catch_unwind(|| openvino_sys::library::load_from(path.clone()));
    match loaded {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            return Err(format!(
                "cannot load {}: {why}; it must be OpenVINO's C library for Linux x86-64, 2025.1 or newer",
                path.display()
            ))
        }
        Err(_) => return Err(format!("loading {} panicked", path.display())),
    }
    let version = std::panic::catch_unwind(|| openvino::version().build_number)
        .map_err(|_| format!("{} does not say its version", path.display()))?;
    Ok(Library { path, version })
}
