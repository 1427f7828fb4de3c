//! Opening onnxruntime's C library, once per process, and the environment sessions are made in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;

/// onnxruntime's switch for its telemetry.
const TELEMETRY_OFF: &str = "ORT_DISABLE_TELEMETRY";

/// The library's file name (its SONAME).
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1";
/// Where images built with onnxruntime keep the library.
pub const IMAGE_LIBRARY_DIR: &str = "/usr/lib/onnxruntime";

/// The opened library and the environment every session is made in.
pub struct Library {
    pub path: PathBuf,
    /// `1.31.1`, from the library's build information.
    pub version: String,
    pub(super) env: Environment,
}

static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();

/// The environment variable naming the library's path (`--onnxruntime_library`'s), read by
/// [`library`] when no one called [`init`] (tests, benches, tools).
pub const LIBRARY_ENV: &str = "ONNX_SERVING_ONNXRUNTIME_LIBRARY";

/// Opens the library at `path` (or, without one, from the default places: beside the
/// executable, then [`IMAGE_LIBRARY_DIR`]). Only the first call in a process opens anything;
/// later calls return its result.
pub fn init(path: Option<&Path>) -> Result<&'static Library, String> {
    LIBRARY
        .get_or_init(|| open(path))
        .as_ref()
        .map_err(Clone::clone)
}

/// The library opened by [`init`] (opening it from the environment variable [`LIBRARY_ENV`] or
/// the default places if `init` was not called), or why there is none.
pub fn library() -> Result<&'static Library, String> {
    let from_env = std::env::var_os(LIBRARY_ENV).map(PathBuf::from);
    init(from_env.as_deref())
}

fn default_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
    {
        paths.push(dir.join(LIBRARY_FILE));
    }
    paths.push(Path::new(IMAGE_LIBRARY_DIR).join(LIBRARY_FILE));
    paths
}

fn open(path: Option<&Path>) -> Result<Library, String> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => default_paths()
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no {LIBRARY_FILE} beside the executable or in {IMAGE_LIBRARY_DIR} (this \
                     image or build carries tract only; point --onnxruntime_library at the \
                     library to add onnxruntime)"
                )
            })?,
    };
    if !path.is_file() {
        return Err(format!(
            "{} does not exist: point --onnxruntime_library (or ONNX_SERVING_ONNXRUNTIME_LIBRARY) at \
             libonnxruntime.so from onnxruntime 1.24 or newer (`make onnxruntime` fetches it)",
            path.display()
        ));
    }
    // onnxruntime 1.31's Linux library carries Microsoft's 1DS telemetry, which tries HTTPS
    // uploads from the first environment on; ORT_DISABLE_TELEMETRY, read then, turns it off
    // (the serving image sets it too). Set before any other thread reads the environment.
    if std::env::var_os(TELEMETRY_OFF).is_none() {
        std::env::set_var(TELEMETRY_OFF, "1");
    }
    let env = ort::init_from(&path)
        .map_err(|e| {
            format!(
                "cannot load {}: {e}; it must be onnxruntime's C library for Linux x86-64, \
                 version 1.24 or newer (`make onnxruntime` fetches 1.31.1)",
                path.display()
            )
        })?
        .with_name("onnx-serving")
        // A model server sends nothing anywhere on its own.
        .with_telemetry(false)
        .with_logger(Arc::new(log_to_tracing))
        .build()
        .map_err(|e| format!("onnxruntime from {} cannot start: {e}", path.display()))?;
    // The C API's version string is not exposed by `ort`: the versioned file name the SONAME
    // link points at says it (libonnxruntime.so.1 -> libonnxruntime.so.1.31.1).
    let version = std::fs::canonicalize(&path)
        .ok()
        .and_then(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("libonnxruntime.so.")
                .filter(|v| v.matches('.').count() == 2)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(version unknown)".to_string());
    Ok(Library { path, version, env })
}

/// onnxruntime's own log lines, through `tracing`. A failed run's error also comes back to the
/// caller (the client's 400, the load's error), so onnxruntime's copy of it is only for debug.
fn log_to_tracing(
    level: ort::logging::LogLevel,
    _category: &str,
    _id: &str,
    at: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Fatal => tracing::error!("onnxruntime: {message} ({at})"),
        LogLevel::Warning => tracing::warn!("onnxruntime: {message}"),
        LogLevel::Error | LogLevel::Info | LogLevel::Verbose => {
            tracing::debug!("onnxruntime: {message} ({at})")
        }
    }
}
