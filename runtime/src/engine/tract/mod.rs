//! The tract engine: pure Rust, in every runtime. A model gets a plan for any batch and, when
//! its batch is free, plans optimized for concrete batch sizes (`plans.rs`); intra-op threads
//! are tract's process-wide executor.

mod plans;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_linalg::multithread::{set_default_executor, Executor};
use tract_onnx::prelude::{
    DatumType, IntoTValue, IntoTensor, TDim, TValue, TVec, TractError, TractResult,
    TypedSimpleState,
};
use tract_onnx::tract_hir::internal::DimLike;

use plans::{load_onnx_batched, Plan, Plans};

use super::tuning::{
    best_of_interleaved, first_run, pick_threads, threads_note, warm_up, TUNE_LIMIT,
};
use super::{Backend, BatchSupport, EngineError, EngineKind, LoadOptions, Loaded, Runner, Threads};
use crate::error::ModelError;
use crate::signature::{DType, Dim, Signature};
use crate::tensor::{self, TensorData};

/// How much faster a lone run on every core must be for tract to keep them all (`pick_threads`):
/// ResNet-50 ran 1.6x faster on two threads and served faster; EfficientNet-Lite0 gained nothing
/// on a lone run and served 1.39x the requests per second at concurrency 4 on one thread per
/// worker (BENCHMARKS.md).
const THREADS_SPEEDUP: f64 = 1.15;

/// A model loaded by tract.
pub struct TractBackend {
    signature: Signature,
    plans: Plans,
    threads: usize,
}

/// Parses, optimizes (with the batch sizes `opts` asks for), warms up every plan and sets the
/// intra-op threads (timed when `opts.threads` is automatic).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let started = Instant::now();
    let loaded = load_onnx_batched(path, &opts.batch_sizes)?;
    let failed = |message: String| ModelError::Engine {
        engine: "tract",
        stage: "run",
        path: path.to_owned(),
        message,
    };
    let mut notes = Vec::new();
    if let Threads::Fixed(n) = opts.threads {
        set_intra_op_threads(n);
    }
    let mut backend = TractBackend {
        signature: loaded.signature,
        plans: loaded.plan,
        threads: 1,
    };
    let mut runner = backend.tract_runner();
    // Batch 1 is what single requests run on: warm it (and choose the threads on it) first.
    let lone = first_run(&mut runner, &backend.signature, &mut notes).map_err(failed)?;
    let threads = match (opts.threads, lone) {
        (Threads::Fixed(n), _) => n.max(1),
        (Threads::Auto { max }, None) => {
            set_intra_op_threads(max);
            notes.push(format!("Intra-op threads: {max} (not timed)"));
            max
        }
        (Threads::Auto { max }, Some(lone)) if lone > TUNE_LIMIT => {
            set_intra_op_threads(max);
            notes.push(format!(
                "Intra-op threads: {max} (a lone run is too slow to time again)"
            ));
            max
        }
        (Threads::Auto { max }, Some(_)) => {
            let inputs = backend.signature.zero_inputs(1);
            let (chosen, one, many) = tune_intra_op_threads(&mut runner, inputs, max)
                .map_err(|e| failed(format!("timing run on zeros failed: {e:#}")))?;
            notes.push(threads_note(chosen, max, one, many, THREADS_SPEEDUP));
            chosen
        }
    };
    backend.threads = threads;
    let sizes: Vec<usize> = backend.plans.batch_sizes().collect();
    if lone.is_some() {
        warm_up(&mut runner, &backend.signature, &sizes, &mut notes).map_err(failed)?;
    }
    Ok(Loaded {
        backend: Arc::new(backend),
        load_time: started.elapsed(),
        warmed: lone.is_some(),
        notes,
    })
}

impl TractBackend {
    fn tract_runner(&self) -> TractRunner {
        TractRunner {
            any: PlanState::new(&self.plans.any),
            fixed: self
                .plans
                .fixed
                .iter()
                .map(|(n, p)| (*n, PlanState::new(p)))
                .collect(),
            batch_first: self.plans.batch_first,
        }
    }
}

impl Backend for TractBackend {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn batch_support(&self) -> BatchSupport {
        let sizes: Vec<usize> = self.plans.batch_sizes().collect();
        if sizes.is_empty() || !self.plans.batch_first {
            BatchSupport::None
        } else {
            BatchSupport::Padded(sizes)
        }
    }

    fn runner(&self) -> Result<Box<dyn Runner>, EngineError> {
        Ok(Box::new(self.tract_runner()))
    }

    fn intra_op_threads(&self) -> usize {
        self.threads
    }

    /// One per core: tract's workers share one intra-op pool.
    fn default_workers(&self, cores: usize) -> usize {
        cores.max(1)
    }
}

/// A plan with its reusable run state (buffers kept between runs).
struct PlanState {
    plan: Plan,
    state: Option<TypedSimpleState>,
}

impl PlanState {
    fn new(plan: &Plan) -> PlanState {
        PlanState {
            plan: plan.clone(),
            state: plan.spawn().ok(),
        }
    }

    fn run(&mut self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let result = match self.state.as_mut() {
            Some(state) => state.run(inputs),
            None => self.plan.run(inputs),
        };
        if result.is_err() {
            // A failed run may leave buffers half-written: start the next one from a fresh state.
            self.state = self.plan.spawn().ok();
        }
        result
    }
}

/// One worker's plans.
struct TractRunner {
    any: PlanState,
    /// (batch size, plan), ascending.
    fixed: Vec<(usize, PlanState)>,
    batch_first: bool,
}

impl Runner for TractRunner {
    fn run(&mut self, inputs: Vec<tensor::Tensor>) -> Result<Vec<tensor::Tensor>, EngineError> {
        let refused = |e: TractError| EngineError::InvalidInput(format!("{e:#}"));
        let inputs: TVec<TValue> = inputs
            .into_iter()
            .map(to_tract)
            .collect::<TractResult<_>>()
            .map_err(refused)?;
        let outputs = self.run_tract(inputs).map_err(refused)?;
        outputs
            .iter()
            .map(|t| from_tract(t).map_err(EngineError::Failed))
            .collect()
    }
}

impl TractRunner {
    /// On the plan made for the inputs' batch size, else instance by instance on the batch-1
    /// plan, else on the general plan.
    fn run_tract(&mut self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if let Some(n) = common_batch(&inputs) {
            if let Some((_, plan)) = self.fixed.iter_mut().find(|(size, _)| *size == n) {
                return plan.run(inputs);
            }
            if n > 1 && self.batch_first {
                if let Some((_, one)) = self.fixed.iter_mut().find(|(size, _)| *size == 1) {
                    return run_split(one, &inputs, n);
                }
            }
        }
        self.any.run(inputs)
    }
}

/// The first dimension shared by every input, if they all have one.
fn common_batch(inputs: &[TValue]) -> Option<usize> {
    let n = *inputs.first()?.shape().first()?;
    inputs
        .iter()
        .all(|t| t.shape().first() == Some(&n))
        .then_some(n)
}

/// Runs a batch instance by instance on the batch-1 plan and concatenates the outputs.
///
/// tract runs a batch slower than its instances one by one: EfficientNet-Lite0, batch 2 on the
/// free-batch plan 553 ms vs 2 x 50 ms; even a plan made for batch 4 takes 392 ms vs 4 x 51 ms
/// (BENCHMARKS.md). Only for plans whose outputs all keep the batch first (`Plans::batch_first`,
/// decided at load).
fn run_split(one: &mut PlanState, inputs: &[TValue], n: usize) -> TractResult<TVec<TValue>> {
    use tract_onnx::prelude::Tensor;
    let mut per_output: Vec<Vec<Tensor>> = Vec::new();
    for i in 0..n {
        let slice: TVec<TValue> = inputs
            .iter()
            .map(|t| t.slice(0, i, i + 1).map(IntoTValue::into_tvalue))
            .collect::<TractResult<_>>()?;
        let outputs = one.run(slice)?;
        if per_output.is_empty() {
            per_output = vec![Vec::with_capacity(n); outputs.len()];
        }
        for (k, out) in outputs.into_iter().enumerate() {
            per_output[k].push(out.into_tensor());
        }
    }
    per_output
        .iter()
        .map(|parts| Tensor::stack_tensors(0, parts).map(IntoTValue::into_tvalue))
        .collect()
}

/// Sets how many threads tract's matrix products (and depthwise convolutions) may use: its
/// process-wide executor; 1 runs them on the calling thread.
pub fn set_intra_op_threads(threads: usize) {
    set_default_executor(executor(threads));
}

fn executor(threads: usize) -> Executor {
    if threads > 1 {
        Executor::multithread_with_name(threads, "tract-mm")
    } else {
        Executor::SingleThread
    }
}

/// Chooses between one intra-op thread and `max` for this model and sets it (`pick_threads`):
/// best of three lone runs each, interleaved. Returns the choice and the two times.
///
/// Measured: ResNet-50 runs 1.6x faster on two threads; EfficientNet-Lite0 no faster (tract
/// splits its depthwise convolutions per channel plane, which costs what the second core gives),
/// and one thread per worker served it 1.39x the requests per second at concurrency 4.
fn tune_intra_op_threads(
    runner: &mut TractRunner,
    inputs: Vec<tensor::Tensor>,
    max: usize,
) -> TractResult<(usize, Duration, Duration)> {
    let inputs: TVec<TValue> = inputs
        .into_iter()
        .map(to_tract)
        .collect::<TractResult<_>>()?;
    let executors = [Executor::SingleThread, executor(max)];
    let times = best_of_interleaved(3, executors.len(), |k| {
        set_default_executor(executors[k].clone());
        runner
            .run_tract(inputs.clone())
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    });
    let (t_one, t_many) = match (&times[0], &times[1]) {
        (Ok(one), Ok(many)) => (*one, *many),
        (Err(e), _) | (_, Err(e)) => return Err(TractError::msg(e.clone())),
    };
    let [single, many] = executors;
    let chosen = pick_threads(max, t_one, t_many, THREADS_SPEEDUP);
    set_default_executor(if chosen > 1 { many } else { single });
    Ok((chosen, t_one, t_many))
}

/// ONNX's element types as tract names them; `None` for those JSON cannot carry.
fn dtype(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F16 => DType::F16,
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I8 => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::Bool => DType::Bool,
        DatumType::String => DType::String,
        _ => return None,
    })
}

fn dim(d: &TDim) -> Dim {
    match d.to_usize() {
        Ok(n) => Dim::Fixed(n),
        Err(_) => Dim::Dynamic(d.to_string()),
    }
}

/// Our tensor as tract's: the values move, nothing is copied.
fn to_tract(t: tensor::Tensor) -> TractResult<TValue> {
    let (shape, data) = t.into_parts();
    crate::tensor::each_data!(data, v => {
        let array = tract_onnx::tract_core::ndarray::ArrayD::from_shape_vec(shape, v)
            .map_err(|e| TractError::msg(format!("cannot shape an input: {e}")))?;
        Ok(tract_onnx::prelude::Tensor::from(array).into_tvalue())
    })
}

/// tract's tensor as ours (one copy of the values).
fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<tensor::Tensor, String> {
    macro_rules! copy {
        ($variant:ident, $ty:ty) => {
            TensorData::$variant(
                t.try_as_plain_ram()
                    .and_then(|plain| plain.as_slice::<$ty>())
                    .map_err(|e| format!("{e:#}"))?
                    .to_vec(),
            )
        };
    }
    let data = match t.datum_type() {
        DatumType::F16 => copy!(F16, tensor::f16),
        DatumType::F32 => copy!(F32, f32),
        DatumType::F64 => copy!(F64, f64),
        DatumType::I8 => copy!(I8, i8),
        DatumType::I16 => copy!(I16, i16),
        DatumType::I32 => copy!(I32, i32),
        DatumType::I64 => copy!(I64, i64),
        DatumType::U8 => copy!(U8, u8),
        DatumType::U16 => copy!(U16, u16),
        DatumType::U32 => copy!(U32, u32),
        DatumType::U64 => copy!(U64, u64),
        DatumType::Bool => copy!(Bool, bool),
        DatumType::String => copy!(String, String),
        other => return Err(format!("outputs of type {other:?} cannot be served")),
    };
    tensor::Tensor::new(t.shape().to_vec(), data).map_err(|e| e.to_string())
}
