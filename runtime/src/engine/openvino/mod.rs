//! The OpenVINO engine, through the `openvino` crate with runtime linking: OpenVINO's C
//! library (`libopenvino_c.so`, from PyPI's openvino wheel) is opened once at start-up, so a
//! runtime whose image carries no OpenVINO still starts and serves with the other engines.
//!
//! One compiled model per loaded version on the CPU plugin, one infer request per inference
//! worker. Threads: a fixed count gives each worker a stream of that many threads (streams =
//! cores / threads); automatic threads give one stream on every core and one worker (OpenVINO's
//! latency setting). The plugin computes in the precision [`LoadOptions::compute_precision`]
//! names: f32 keeps the model's own arithmetic; bf16 runs its float layers in bfloat16 where
//! the CPU has AMX or AVX512-BF16 (measured on EfficientNet-Lite0 in BENCHMARKS.md: 2.13x
//! onnxruntime's fp32 at one thread, 1.63x at two, top-1 agreement 98.6 %), which only an
//! accuracy-gated optimization asks for. On a CPU without either (where OpenVINO would emulate
//! bf16, slower than f32) bf16 is not asked for, and the load warns (models/load.rs); the
//! precision the plugin settled on is read back from the compiled model and reported.
//!
//! Dynamic batching (`--enable_batching`): the model is compiled as read, so a free batch stays
//! free and merged requests run at whatever size they add up to, as on onnxruntime. Merged only
//! if the warm-up ran and runs on zeros at batch 1 and at the largest merged batch give every
//! output that batch first (`tuning::any_batch`).

mod convert;
mod library;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openvino::{CompiledModel, Core, DeviceType, InferRequest, PropertyKey, RwPropertyKey};

pub use library::{expected, init, library, Library, IMAGE_LIBRARY_DIR, LIBRARY_ENV, LIBRARY_FILE};

use super::tuning::{any_batch, first_run};
use super::{
    Backend, BatchSupport, ComputePrecision, EngineError, EngineKind, LoadOptions, Loaded, Runner,
    Threads,
};
use crate::error::ModelError;
use crate::signature::Signature;
use crate::tensor::Tensor;
use convert::{input_tensor, output_tensor, signature};

/// A model compiled by OpenVINO's CPU plugin.
pub struct OvBackend {
    signature: Signature,
    /// Threads per stream (per worker).
    threads: usize,
    streams: usize,
    /// What the CPU plugin computes in, read back after compiling.
    precision: ComputePrecision,
    /// Any batch size when the model's batch is free and every output keeps it (checked at
    /// load): the CPU plugin compiles the dynamic batch and runs each size it is given.
    batch: BatchSupport,
    /// Warmed requests no runner holds: the one made while loading, and those of runners
    /// dropped since (the engine choice's timing runner), handed to the next runner. Declared
    /// before the compiled model, so they are freed first.
    spare: Spare,
    /// Infer requests are made from it (`create_infer_request` takes `&mut`).
    compiled: Mutex<CompiledModel>,
    /// Kept for as long as the compiled model: it holds the plugin.
    _core: Mutex<Core>,
}

/// The CPUs this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Reads the ONNX file, compiles it for the CPU with the threads and precision asked for, warms
/// it up on zeros, and reads its signature. Errors name the stage that failed.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let started = Instant::now();
    let fail = |stage: &'static str| {
        move |message: String| ModelError::Engine {
            engine: "openvino",
            stage,
            path: path.to_owned(),
            message,
        }
    };
    let lib =
        library().map_err(|why| fail("serve")(format!("its library is not available: {why}")))?;
    let cores = cores();
    let (threads, streams) = match opts.threads {
        Threads::Fixed(n) => (n.max(1), (cores / n.max(1)).max(1)),
        Threads::Auto { max } => (max.max(1), 1),
    };
    let mut notes = Vec::new();
    // OpenVINO emulates bf16 on AVX-512 CPUs without it (slower than f32): ask for it only
    // where the CPU computes it. The first note names the precision used; models/load.rs warns
    // once when it is not the one the optimizer chose.
    let precision = match opts.compute_precision {
        ComputePrecision::Bf16 if super::native_bf16() => "bf16",
        ComputePrecision::F32 | ComputePrecision::Bf16 => "f32",
    };
    let mut core = Core::new().map_err(|e| fail("load")(e.to_string()))?;
    let file = path
        .to_str()
        .ok_or_else(|| fail("load")("the path is not UTF-8".into()))?;
    let model = core
        .read_model_from_file(file, "")
        .map_err(|e| fail("load")(e.to_string()))?;
    let cpu = DeviceType::CPU;
    let total = (threads * streams).to_string();
    let streams_text = streams.to_string();
    core.set_properties(
        &cpu,
        [
            (RwPropertyKey::NumStreams, streams_text.as_str()),
            (RwPropertyKey::InferenceNumThreads, total.as_str()),
            (RwPropertyKey::HintInferencePrecision, precision),
        ],
    )
    .map_err(|e| fail("configure the CPU plugin for")(e.to_string()))?;
    let mut compiled = core
        .compile_model(&model, cpu)
        .map_err(|e| fail("compile")(e.to_string()))?;
    let signature = signature(&compiled).map_err(fail("read the signature of"))?;
    // The hint is a request: what the plugin settled on is read back.
    let effective =
        match compiled.get_property(&PropertyKey::Rw(RwPropertyKey::HintInferencePrecision)) {
            Ok(p) => p.to_ascii_lowercase(),
            Err(e) => {
                notes.push(format!(
                    "OpenVINO did not say its inference precision ({e}); taken as asked"
                ));
                precision.to_string()
            }
        };
    let effective_precision = if effective == "bf16" {
        ComputePrecision::Bf16
    } else {
        ComputePrecision::F32
    };
    let request = compiled
        .create_infer_request()
        .map_err(|e| fail("load")(e.to_string()))?;
    let spare: Spare = Arc::default();
    let mut runner = OvRunner::new(request, &signature, &spare);
    notes.insert(
        0,
        format!(
            "OpenVINO {} CPU plugin: {streams} stream(s) of {threads} thread(s), inference precision {effective}",
            lib.version
        ),
    );
    if effective != precision {
        notes.push(format!(
            "Asked OpenVINO for inference precision {precision}; its CPU plugin computes in \
             {effective}"
        ));
    }
    if let Threads::Auto { .. } = opts.threads {
        notes.push(format!(
            "Intra-op threads: {threads}, one stream and one worker (OpenVINO's latency setting: \
             its threads are shared by the stream, not timed)"
        ));
    }
    let lone = first_run(&mut runner, &signature, &mut notes).map_err(fail("run"))?;
    let batch = match opts.batch_sizes.iter().max() {
        Some(&largest) if lone.is_some() => {
            any_batch(&mut runner, &signature, largest, "OpenVINO", &mut notes)
        }
        _ => BatchSupport::None,
    };
    Ok(Loaded {
        backend: Arc::new(OvBackend {
            signature,
            threads,
            streams,
            precision: effective_precision,
            batch,
            spare,
            compiled: Mutex::new(compiled),
            _core: Mutex::new(core),
        }),
        load_time: started.elapsed(),
        warmed: lone.is_some(),
        notes,
    })
}

impl Backend for OvBackend {
    fn kind(&self) -> EngineKind {
        EngineKind::Openvino
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn batch_support(&self) -> BatchSupport {
        self.batch.clone()
    }

    fn runner(&self) -> Result<Box<dyn Runner>, EngineError> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let request = match spare {
            Some(request) => request,
            None => self
                .compiled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .create_infer_request()
                .map_err(|e| EngineError::Failed(e.to_string()))?,
        };
        Ok(Box::new(OvRunner::new(
            request,
            &self.signature,
            &self.spare,
        )))
    }

    fn intra_op_threads(&self) -> usize {
        self.threads
    }

    /// One worker per stream: more would queue on the streams.
    fn default_workers(&self, cores: usize) -> usize {
        self.streams.min(cores).max(1)
    }

    fn compute_precision(&self) -> ComputePrecision {
        self.precision
    }
}

/// Infer requests waiting for a runner.
type Spare = Arc<Mutex<Vec<InferRequest>>>;

struct OvRunner {
    /// Always `Some` until dropped, when it goes back to `spare`.
    request: Option<InferRequest>,
    /// Set during a run: a runner dropped mid-run (its run panicked) keeps its request out of
    /// `spare`, as the worker pool keeps the runner out of service.
    in_run: bool,
    spare: Spare,
    /// The model's inputs, in the signature's order.
    inputs: Vec<String>,
    outputs: usize,
}

impl OvRunner {
    fn new(request: InferRequest, signature: &Signature, spare: &Spare) -> OvRunner {
        OvRunner {
            request: Some(request),
            in_run: false,
            spare: spare.clone(),
            inputs: signature.inputs.iter().map(|s| s.name.clone()).collect(),
            outputs: signature.outputs.len(),
        }
    }
}

impl Drop for OvRunner {
    /// The warmed request serves the next runner instead of a cold new one.
    fn drop(&mut self) {
        if self.in_run {
            return;
        }
        if let Some(request) = self.request.take() {
            self.spare
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(request);
        }
    }
}

impl Runner for OvRunner {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.in_run = true;
        let ran = self.run_request(inputs);
        self.in_run = false;
        ran
    }
}

impl OvRunner {
    fn run_request(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let request = self
            .request
            .as_mut()
            .ok_or_else(|| EngineError::Failed("the runner was dropped".into()))?;
        for (name, t) in self.inputs.iter().zip(&inputs) {
            let tensor = input_tensor(t)?;
            request
                .set_tensor(name, &tensor)
                .map_err(|e| EngineError::InvalidInput(format!("input '{name}': {e}")))?;
        }
        request
            .infer()
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        (0..self.outputs)
            .map(|k| {
                request
                    .get_output_tensor_by_index(k)
                    .map_err(|e| e.to_string())
                    .and_then(|t| output_tensor(&t))
                    .map_err(EngineError::Failed)
            })
            .collect()
    }
}
