//! The engine seam: everything outside this module sees a model through [`Backend`] and
//! [`Runner`], and tensors as [`Tensor`]s. One module per engine: `tract` (pure Rust, in every
//! binary built with the default `tract` feature) and [`onnxruntime`] (the C library, loaded at
//! start-up when present). Nothing outside `engine/` names a tract or ort type.
//!
//! Without the `tract` feature (the fuzz targets build so, to keep their instrumented build
//! small) only onnxruntime can load models.
//!
//! With `--engine auto` (the default) a model is loaded by every engine available, each lone run
//! is timed (interleaved, best of three) and the faster engine serves; a model one engine cannot
//! load is served by the other.

pub mod onnxruntime;
#[cfg(feature = "tract")]
pub mod tract;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::model::{ModelError, Signature};
use crate::tensor::Tensor;

/// An engine that can run ONNX models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EngineKind {
    /// tract-onnx: pure Rust, compiled into every runtime.
    Tract,
    /// Microsoft's onnxruntime, from `libonnxruntime.so.1` (images built with it carry it).
    Onnxruntime,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--engine`: one engine, or the faster of those available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// Time a lone run on every available engine at load and keep the faster.
    Auto,
    Tract,
    Onnxruntime,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Tract => "tract",
            EngineChoice::Onnxruntime => "onnxruntime",
        })
    }
}

/// Intra-op threads: how many threads one run may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    Fixed(usize),
    /// 1 or `max`, timed at load: `max` only if it makes a lone run at least 15 % faster.
    Auto {
        max: usize,
    },
}

/// How a model is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Batch sizes that dynamic batching merges requests into (empty: batching off).
    pub batch_sizes: Vec<usize>,
    pub threads: Threads,
    /// onnxruntime: let idle intra-op threads spin for work instead of sleeping.
    pub ort_spinning: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch_sizes: Vec::new(),
            threads: Threads::Fixed(1),
            ort_spinning: false,
        }
    }
}

/// How requests may be merged into one run (dynamic batching).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchSupport {
    /// Not at all: the batch is fixed, or an output does not keep it first.
    None,
    /// Into these sizes (ascending), the merged batch padded with zeros up to the next one:
    /// the engine has a plan made for each.
    Padded(Vec<usize>),
    /// Into any size: the engine runs every batch size alike.
    Any,
}

/// A model loaded by one engine, shared by the inference workers.
pub trait Backend: Send + Sync {
    fn kind(&self) -> EngineKind;
    /// The model's own inputs and outputs, free dimensions as [`crate::model::Dim::Dynamic`].
    fn signature(&self) -> &Signature;
    fn batch_support(&self) -> BatchSupport;
    /// A runner for one worker thread, with state of its own (buffers, a session).
    fn runner(&self) -> Result<Box<dyn Runner>, String>;
    /// Intra-op threads one run uses.
    fn intra_op_threads(&self) -> usize;
    /// Inference workers that keep `cores` busy without oversubscribing them.
    fn default_workers(&self, cores: usize) -> usize;
}

/// Runs a model on one worker thread.
pub trait Runner: Send {
    /// Inputs in the signature's order, outputs in its order; the error says why the engine
    /// refused or failed the run.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
}

/// A model ready to serve: the engine's backend, and what loading it found out.
pub struct Loaded {
    pub backend: Arc<dyn Backend>,
    /// Parse + optimize + warm-up.
    pub load_time: Duration,
    /// Whether it ran on zeros at load (see [`first_run`]): a model that did not may still
    /// serve real inputs.
    pub warmed: bool,
    /// What was chosen and why (threads, engine), for the start-up log.
    pub notes: Vec<String>,
}

/// Engines this process can use: tract always, onnxruntime when its library loaded.
pub fn available() -> Vec<EngineKind> {
    let mut engines = Vec::with_capacity(2);
    if onnxruntime::library().is_ok() {
        engines.push(EngineKind::Onnxruntime);
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
    catch_panic(|| load_unguarded(kind, path, opts)).unwrap_or_else(|why| {
        Err(ModelError::Engine {
            engine: kind.name(),
            stage: "load",
            path: path.to_owned(),
            message: format!("the engine panicked: {why}"),
        })
    })
}

fn load_unguarded(kind: EngineKind, path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    match kind {
        #[cfg(feature = "tract")]
        EngineKind::Tract => tract::load(path, opts),
        #[cfg(not(feature = "tract"))]
        EngineKind::Tract => Err(ModelError::Unsupported(
            "this runtime was built without tract (cargo feature `tract`): use --engine onnxruntime".into(),
        )),
        EngineKind::Onnxruntime => onnxruntime::load(path, opts),
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
    let mut runners: Vec<Result<Box<dyn Runner>, String>> =
        ready.iter().map(|l| l.backend.runner()).collect();
    let inputs: Vec<_> = ready
        .iter()
        .map(|l| l.backend.signature().zero_inputs(1))
        .collect();
    best_of_interleaved(3, ready.len(), |k| match &mut runners[k] {
        Ok(runner) => catch_panic(|| runner.run(inputs[k].clone()))
            .unwrap_or_else(|why| Err(format!("the engine panicked: {why}")))
            .map(drop),
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

/// The fastest of `rounds` runs of each of `n` contenders, run in turn every round (`run(k)`
/// runs contender k once) so that the machine's noise hits all alike. A contender whose run
/// fails is not run again; its entry is the error.
pub fn best_of_interleaved(
    rounds: usize,
    n: usize,
    mut run: impl FnMut(usize) -> Result<(), String>,
) -> Vec<Result<Duration, String>> {
    let mut best: Vec<Result<Duration, String>> = vec![Ok(Duration::MAX); n];
    for _ in 0..rounds {
        for (k, best) in best.iter_mut().enumerate() {
            let Ok(so_far) = *best else { continue };
            let started = Instant::now();
            *best = run(k).map(|()| so_far.min(started.elapsed()));
        }
    }
    best
}

/// Milliseconds, for logs.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A run's time for logs: `28.6 ms`, or `85.2 µs` below a millisecond.
pub fn took(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", ms(d))
    }
}

/// Runs `runner` on zeros at each of `batches`, notes each time, and returns the last run's
/// time; the error names the batch that failed.
pub fn warm_up(
    runner: &mut dyn Runner,
    signature: &Signature,
    batches: &[usize],
    notes: &mut Vec<String>,
) -> Result<Duration, String> {
    let mut last = Duration::ZERO;
    for &n in batches {
        let started = Instant::now();
        runner
            .run(signature.zero_inputs(n))
            .map_err(|e| format!("warm-up run on zeros (batch {n}) failed: {e}"))?;
        last = started.elapsed();
        notes.push(format!("Warm-up run (batch {n}) took {}", took(last)));
    }
    Ok(last)
}

/// The first warm-up run, at batch 1. Its failure stops the load, unless the model has free
/// dimensions beyond the batch: zeros at size 1 need not be a valid input for such a model (an
/// OCR network downsampling a 1x1 image, an audio model given one sample), so the failure is
/// noted and `None` returned: the model is served without warm-up, its threads not timed.
pub fn first_run(
    runner: &mut dyn Runner,
    signature: &Signature,
    notes: &mut Vec<String>,
) -> Result<Option<Duration>, String> {
    match warm_up(runner, signature, &[1], notes) {
        Ok(took) => Ok(Some(took)),
        Err(e) if zeros_may_not_fit(signature) => {
            notes.push(format!(
                "Warm-up skipped: {e} (the model has free dimensions beyond the batch, which \
                 zeros of size 1 may not fit; the first request warms it up)"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether the model has free dimensions beyond the batch, which zeros of size 1 may not fit.
pub fn zeros_may_not_fit(signature: &Signature) -> bool {
    signature
        .inputs
        .iter()
        .any(|spec| spec.shape.iter().skip(1).any(|d| d.fixed().is_none()))
}

/// The intra-op thread count to keep: `max` only if a lone run on `max` threads is at least
/// `speedup` times faster than on one (each engine says what it takes to pay off when served).
pub fn pick_threads(max: usize, one: Duration, many: Duration, speedup: f64) -> usize {
    if max > 1 && many.as_secs_f64() * speedup <= one.as_secs_f64() {
        max
    } else {
        1
    }
}

/// The log line for an automatic thread choice.
pub fn threads_note(
    chosen: usize,
    max: usize,
    one: Duration,
    many: Duration,
    speedup: f64,
) -> String {
    format!(
        "Intra-op threads: {chosen} (a lone run took {} on 1 thread, {} on {max}; \
         {max} must make it {speedup:.2}x faster to be worth holding cores that concurrent \
         requests could use)",
        took(one),
        took(many)
    )
}

/// A lone run slower than this is not timed again to choose the intra-op threads (six more runs
/// would delay start-up too much); such a model gets every core.
pub const TUNE_LIMIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_timing_runs_each_in_turn_and_drops_a_failure() {
        let mut calls = Vec::new();
        let times = best_of_interleaved(3, 2, |k| {
            calls.push(k);
            if k == 1 && calls.iter().filter(|&&c| c == 1).count() == 2 {
                Err("failed on its second run".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(
            calls,
            [0, 1, 0, 1, 0],
            "in turn, the failed one not run again"
        );
        assert!(times[0].as_ref().is_ok_and(|t| *t < Duration::MAX));
        assert_eq!(times[1], Err("failed on its second run".to_string()));
    }

    #[test]
    fn threads_pay_only_past_the_engines_speedup() {
        let ms = Duration::from_millis;
        assert_eq!(pick_threads(2, ms(12), ms(9), 1.5), 1);
        assert_eq!(pick_threads(2, ms(90), ms(46), 1.5), 2);
        assert_eq!(pick_threads(2, ms(12), ms(10), 1.15), 2);
        assert_eq!(pick_threads(1, ms(12), ms(1), 1.15), 1);
    }
}
