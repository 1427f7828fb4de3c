//! Which engine serves a model: the one `--engine` names, or with `auto` (the default) every
//! engine available loads it, each lone run is timed (interleaved, best of three) and the faster
//! serves; a model one engine cannot load is served by the other. An engine that panics while
//! loading fails that engine's load only (release builds unwind).

use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use super::tuning::{best_of_interleaved, took};
use super::{
    onnxruntime, openvino, EngineChoice, EngineError, EngineKind, LoadOptions, Loaded, Runner,
};
use crate::error::ModelError;

/// Engines this process can use: tract always, onnxruntime and OpenVINO when their libraries
/// loaded.
pub fn available() -> Vec<EngineKind> {
    let mut engines = Vec::with_capacity(3);
    if onnxruntime::library().is_ok() {
        engines.push(EngineKind::Onnxruntime);
    }
    if openvino::library().is_ok() {
        engines.push(EngineKind::Openvino);
    }
    if cfg!(feature = "tract") {
        engines.push(EngineKind::Tract);
    }
    engines
}

/// Runs `f`, with a panic inside it (an engine bug, tract's above all) turned into an error
/// holding the panic's text. Release builds unwind for this (Cargo.toml).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// The text a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Loads `path` with one engine, warms it up and tunes its threads. An engine that panics on
/// the model fails this load ([`ModelError::Engine`]), so that with `auto` the other engine
/// may still serve it.
pub fn load(kind: EngineKind, path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    #[cfg(debug_assertions)]
    abort_if_asked(path);
    catch_panic(|| load_unguarded(kind, path, opts)).unwrap_or_else(|why| {
        Err(ModelError::Engine {
            engine: kind.name(),
            stage: "load",
            path: path.to_owned(),
            message: format!("the engine panicked: {why}"),
        })
    })
}

/// Test-only engine hook (debug builds only): a model file with [`ABORT_MARKER`] beside it
/// aborts the process as it loads, as an engine that dies hard on a model would (a C++
/// `std::terminate`, a failed allocation), which no unwinding catches.
#[cfg(debug_assertions)]
fn abort_if_asked(path: &Path) {
    if path.with_file_name(ABORT_MARKER).exists() {
        eprintln!("{ABORT_MARKER} beside {}: aborting", path.display());
        std::process::abort();
    }
}

/// The file name of the test-only hook above.
pub const ABORT_MARKER: &str = "ABORT_ENGINE_FOR_TESTS";

fn load_unguarded(kind: EngineKind, path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    match kind {
        #[cfg(feature = "tract")]
        EngineKind::Tract => super::tract::load(path, opts),
        #[cfg(not(feature = "tract"))]
        EngineKind::Tract => Err(ModelError::Unsupported(
            "this runtime was built without tract (cargo feature `tract`): use --engine onnxruntime".into(),
        )),
        EngineKind::Onnxruntime => onnxruntime::load(path, opts),
        EngineKind::Openvino => openvino::load(path, opts),
    }
}

/// Loads `path` with the engine `choice` names, or with `auto` the faster of the available ones
/// that load it. An explicit engine that cannot load the model is an error with its reason.
pub fn load_chosen(
    choice: EngineChoice,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Loaded, ModelError> {
    let kind = match choice {
        EngineChoice::Tract => EngineKind::Tract,
        EngineChoice::Onnxruntime => EngineKind::Onnxruntime,
        EngineChoice::Openvino => EngineKind::Openvino,
        EngineChoice::Auto => return load_auto(path, opts),
    };
    let mut loaded = load(kind, path, opts)?;
    loaded
        .notes
        .push(format!("Engine: {kind} (--engine {kind})"));
    Ok(loaded)
}

fn load_auto(path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let mut ready = Vec::new();
    let mut failures = Vec::new();
    if let Err(why) = onnxruntime::library() {
        // Said once, not at every version loaded.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| info!("onnxruntime is not available ({why}); tract serves"));
    }
    for kind in available() {
        match load(kind, path, opts) {
            Ok(loaded) => ready.push(loaded),
            Err(e) => {
                warn!("{kind} cannot serve {}: {e}", path.display());
                failures.push(format!("{kind}: {e}"));
            }
        }
    }
    if ready.len() < 2 {
        let mut loaded = ready.pop().ok_or_else(|| ModelError::NoEngine {
            path: path.to_owned(),
            reasons: failures.join("; "),
        })?;
        let why = if failures.is_empty() {
            "the only engine available"
        } else {
            "the only engine that loaded the model"
        };
        loaded
            .notes
            .push(format!("Engine: {} ({why})", loaded.backend.kind()));
        return Ok(loaded);
    }
    let times = time_lone_runs(&ready);
    let timed: Vec<(usize, Duration)> = times
        .iter()
        .enumerate()
        .filter_map(|(k, t)| t.map(|t| (k, t)))
        .collect();
    let summary: Vec<String> = ready
        .iter()
        .zip(&times)
        .map(|(l, t)| match t {
            Some(t) => format!("{} {}", l.backend.kind(), took(*t)),
            None => format!("{} not timed", l.backend.kind()),
        })
        .collect();
    // Untimed (zeros do not fit the model): the first available, onnxruntime, the reference.
    let best = timed.iter().min_by_key(|(_, t)| *t).map_or(0, |(k, _)| *k);
    let how = if timed.len() == ready.len() {
        "on a lone run, best of 3, interleaved"
    } else {
        "on a lone run on zeros; untimed engines are not chosen over timed ones"
    };
    let mut loaded = ready.swap_remove(best);
    loaded.notes.push(format!(
        "Engine: {} ({}; {how})",
        loaded.backend.kind(),
        summary.join(", ")
    ));
    Ok(loaded)
}

/// Each backend's fastest lone batch-1 run on zeros, three rounds interleaved; `None` for one
/// that cannot run them (the reason logged).
fn time_lone_runs(ready: &[Loaded]) -> Vec<Option<Duration>> {
    let mut runners: Vec<Result<Box<dyn Runner>, EngineError>> =
        ready.iter().map(|l| l.backend.runner()).collect();
    let inputs: Vec<_> = ready
        .iter()
        .map(|l| l.backend.signature().zero_inputs(1))
        .collect();
    best_of_interleaved(3, ready.len(), |k| match &mut runners[k] {
        Ok(runner) => match catch_panic(|| runner.run(inputs[k].clone())) {
            Ok(ran) => ran.map(drop).map_err(|e| e.to_string()),
            Err(why) => Err(format!("the engine panicked: {why}")),
        },
        Err(e) => Err(format!("no runner to time: {e}")),
    })
    .into_iter()
    .zip(ready)
    .map(|(time, loaded)| {
        time.map_err(|e| {
            if loaded.warmed {
                warn!("{}: timing run on zeros failed: {e}", loaded.backend.kind());
            }
        })
        .ok()
    })
    .collect()
}
