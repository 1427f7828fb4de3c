//! The engine seam: everything outside this module sees a model through [`Backend`] and
//! [`Runner`], tensors as [`Tensor`]s, and failures as [`EngineError`] (run) or
//! [`ModelError`](crate::error::ModelError) (load). One module per engine: `tract` (pure Rust, in
//! every binary built with the default `tract` feature), [`onnxruntime`] and [`openvino`] (C
//! libraries, each opened at start-up when present). Nothing outside `engine/` names a tract,
//! ort or openvino type.
//! Which engine serves a model is decided in [`choice`]; warm-up and intra-op thread timing in
//! [`tuning`].
//!
//! Without the `tract` feature (the fuzz targets build so, to keep their instrumented build
//! small) only onnxruntime can load models.

pub mod choice;
pub mod onnxruntime;
pub mod openvino;
#[cfg(feature = "tract")]
pub mod tract;
pub mod tuning;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::signature::Signature;
use crate::tensor::Tensor;

pub use choice::{available, catch_panic, load, load_chosen, panic_message};
pub use tuning::{ms, took, zeros_may_not_fit};

/// Why a run gave no outputs. The worker pool maps it to the client's status: the input's
/// fault (400) or ours (500).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine refused the input: a dtype or shape the model does not take, or a value its
    /// graph cannot run on. The client can change it.
    #[error("{0}")]
    InvalidInput(String),
    /// The engine failed for a reason of its own (it cannot make a session, an output it
    /// cannot convert): a bug or an unsupported model, not the client's input.
    #[error("{0}")]
    Failed(String),
}

/// An engine that can run ONNX models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EngineKind {
    /// tract-onnx: pure Rust, compiled into every runtime.
    Tract,
    /// Microsoft's onnxruntime, from `libonnxruntime.so.1` (images built with it carry it).
    Onnxruntime,
    /// Intel's OpenVINO (CPU plugin), from `libopenvino_c.so` (images built with it carry it).
    Openvino,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
            EngineKind::Openvino => "openvino",
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
    Openvino,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Tract => "tract",
            EngineChoice::Onnxruntime => "onnxruntime",
            EngineChoice::Openvino => "openvino",
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
    /// The arithmetic float layers may run in (OpenVINO's inference precision; the other
    /// engines run the model as it is).
    pub compute_precision: ComputePrecision,
}

/// The precision an engine computes a float model's layers in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComputePrecision {
    /// The model's own float32 arithmetic.
    #[default]
    F32,
    /// bfloat16 (8-bit exponent, 7-bit mantissa) on CPUs with AMX or AVX512-BF16: the model
    /// file stays float32, the engine converts weights and activations as it runs. Changes the
    /// outputs: only what passed an accuracy gate (`builder optimize`) asks for it.
    Bf16,
}

/// Whether this CPU computes bfloat16 itself (AVX512-BF16 or AMX-BF16, with the OS saving
/// their state): where a bf16 variant pays. Elsewhere OpenVINO would emulate bf16 on AVX-512,
/// slower than f32, so the engine computes such a variant in f32. Detected once.
pub fn native_bf16() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| {
        let cpu = hostcpu::detect();
        cpu.usable.contains("AVX512BF16") || cpu.usable.contains("AMX-BF16")
    })
}

impl fmt::Display for ComputePrecision {
    /// ONNX's dtype terms, as the rest of the API names precisions: `fp32`, `bf16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputePrecision::F32 => "fp32",
            ComputePrecision::Bf16 => "bf16",
        })
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch_sizes: Vec::new(),
            threads: Threads::Fixed(1),
            ort_spinning: false,
            compute_precision: ComputePrecision::F32,
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
    /// The model's own inputs and outputs, free dimensions as [`crate::signature::Dim::Dynamic`].
    fn signature(&self) -> &Signature;
    fn batch_support(&self) -> BatchSupport;
    /// A runner for one worker thread, with state of its own (buffers, a session).
    fn runner(&self) -> Result<Box<dyn Runner>, EngineError>;
    /// Intra-op threads one run uses.
    fn intra_op_threads(&self) -> usize;
    /// Inference workers that keep `cores` busy without oversubscribing them.
    fn default_workers(&self, cores: usize) -> usize;
    /// A runner on every core, for a request that finds the other workers idle, when the
    /// workers' own runners use one thread each: a lone request then runs as fast as the
    /// cores allow, concurrent ones one per core. None (the default): the engine keeps none,
    /// or its runners already use every core. Taken once, by the worker pool.
    fn lone_runner(&self) -> Option<Box<dyn Runner>> {
        None
    }
    /// The arithmetic the engine actually computes the float layers in, which may be less than
    /// [`LoadOptions::compute_precision`] asked for (bf16 on a CPU without AMX or
    /// AVX512-BF16). The default: the model's own float32.
    fn compute_precision(&self) -> ComputePrecision {
        ComputePrecision::F32
    }
}

/// Runs a model on one worker thread.
pub trait Runner: Send {
    /// Inputs in the signature's order, outputs in its order; the error says why the engine
    /// refused or failed the run.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;
}

/// A model ready to serve: the engine's backend, and what loading it found out.
pub struct Loaded {
    pub backend: Arc<dyn Backend>,
    /// Parse + optimize + warm-up.
    pub load_time: Duration,
    /// Whether it ran on zeros at load (see [`tuning::first_run`]): a model that did not may still
    /// serve real inputs.
    pub warmed: bool,
    /// What was chosen and why (threads, engine), for the start-up log.
    pub notes: Vec<String>,
}
