//! The onnxruntime engine, through the `ort` crate with `load-dynamic`: the library
//! (`libonnxruntime.so.1`, from PyPI's onnxruntime wheel) is opened once at start-up, so a
//! runtime built without it still starts and serves with tract.
//!
//! Sessions: graph optimization level All, sequential execution, one inter-op thread, intra-op
//! threads from the CPUs this process may use, one session per inference worker
//! (`Session::run` takes `&mut self`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use super::{
    first_run, pick_threads, threads_note, warm_up, Backend, BatchSupport, EngineKind, LoadOptions,
    Loaded, Runner, Threads, TUNE_LIMIT,
};
use crate::model::{DType, Dim, ModelError, Signature, TensorSpec};
use crate::tensor::{self, Tensor, TensorData};

/// How much faster a lone run on every core must be for onnxruntime to keep them all
/// (`pick_threads`). A lone run on zeros flatters threads: EfficientNet-Lite0 ran 1.38x faster on
/// two (8.6 vs 11.9 ms) yet, served from a 2-core container, answered slower than with one
/// thread per worker (p50 19.1 vs 16.8 ms at concurrency 1, 78 vs 103 req/s at 4: each request
/// shares the cores with its own decoding and HTTP). ResNet-50 (90 vs 46 ms) clears the bar.
const THREADS_SPEEDUP: f64 = 1.5;

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
    env: Environment,
}

static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();

/// Opens the library at `path` (or, without one, from the default places: beside the
/// executable, then [`IMAGE_LIBRARY_DIR`]). Only the first call in a process opens anything;
/// later calls return its result.
pub fn init(path: Option<&Path>) -> Result<&'static Library, String> {
    LIBRARY
        .get_or_init(|| open(path))
        .as_ref()
        .map_err(Clone::clone)
}

/// The library opened by [`init`] (opening it from the environment variable
/// `ONNX_SERVING_ONNXRUNTIME_LIBRARY` or the default places if `init` was not called), or why
/// there is none.
pub fn library() -> Result<&'static Library, String> {
    let from_env = std::env::var_os(crate::config::env::ONNXRUNTIME_LIBRARY).map(PathBuf::from);
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

/// A model loaded by onnxruntime.
pub struct OrtBackend {
    path: PathBuf,
    signature: Signature,
    threads: usize,
    spinning: bool,
    batch: BatchSupport,
    /// The session made and warmed while loading, handed to the first worker.
    spare: Mutex<Vec<Session>>,
}

/// Makes a session (and a second one to time the threads when they are automatic), warms it
/// up, and reads the model's signature from it.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, ModelError> {
    let started = Instant::now();
    let fail = |stage: &'static str| {
        move |message: String| ModelError::Engine {
            engine: "onnxruntime",
            stage,
            path: path.to_owned(),
            message,
        }
    };
    let lib =
        library().map_err(|why| fail("serve")(format!("its library is not available: {why}")))?;
    let first_threads = match opts.threads {
        Threads::Fixed(n) => n.max(1),
        Threads::Auto { .. } => 1,
    };
    let session = new_session(lib, path, first_threads, opts.ort_spinning).map_err(fail("load"))?;
    let signature = signature(&session).map_err(fail("read the signature of"))?;
    let mut runner = OrtRunner::new(session);
    let mut notes = vec![format!(
        "onnxruntime session: optimization level All, sequential, intra-op spinning {}",
        if opts.ort_spinning { "on" } else { "off" }
    )];
    let lone = first_run(&mut runner, &signature, &mut notes).map_err(fail("run"))?;
    let batch_first = lone.is_some()
        && runner
            .run(signature.zero_inputs(1))
            .is_ok_and(|outs| outs.iter().all(|o| o.batch() == Some(1)));
    let (threads, mut runner, lone) = match (opts.threads, lone) {
        (Threads::Auto { max }, Some(lone)) if max > 1 && lone <= TUNE_LIMIT => {
            let mut many = OrtRunner::new(
                new_session(lib, path, max, opts.ort_spinning).map_err(fail("load"))?,
            );
            warm_up(&mut many, &signature, &[1], &mut Vec::new()).map_err(fail("run"))?;
            let (one, t_many) = time_pair(&mut runner, &mut many, &signature);
            let chosen = pick_threads(max, one, t_many, THREADS_SPEEDUP);
            notes.push(threads_note(chosen, max, one, t_many, THREADS_SPEEDUP));
            if chosen > 1 {
                (chosen, many, Some(t_many))
            } else {
                (1, runner, Some(one))
            }
        }
        (Threads::Auto { max }, lone) if max > 1 => {
            notes.push(format!(
                "Intra-op threads: {max} ({})",
                if lone.is_some() {
                    "a lone run is too slow to time again"
                } else {
                    "not timed"
                }
            ));
            let many = OrtRunner::new(
                new_session(lib, path, max, opts.ort_spinning).map_err(fail("load"))?,
            );
            (max, many, lone)
        }
        (_, lone) => (first_threads, runner, lone),
    };
    // onnxruntime runs any batch size alike: merged requests need no padding, if every output
    // follows the batch (checked at the largest size).
    let batch = match opts.batch_sizes.iter().max() {
        Some(&largest) if batch_first && signature.inputs.iter().all(|s| s.has_dynamic_batch()) => {
            match runner.run(signature.zero_inputs(largest)) {
                Ok(outs) if outs.iter().all(|o| o.batch() == Some(largest)) => {
                    notes.push(format!(
                        "Dynamic batching: a run of {largest} checked (onnxruntime merges any \
                         batch size, no padding)"
                    ));
                    BatchSupport::Any
                }
                Ok(_) => BatchSupport::None,
                Err(e) => {
                    notes.push(format!("No batching: a run at batch {largest} failed: {e}"));
                    BatchSupport::None
                }
            }
        }
        _ => BatchSupport::None,
    };
    Ok(Loaded {
        backend: Arc::new(OrtBackend {
            path: path.to_owned(),
            signature,
            threads,
            spinning: opts.ort_spinning,
            batch,
            spare: Mutex::new(vec![runner.session]),
        }),
        load_time: started.elapsed(),
        warmed: lone.is_some(),
        notes,
    })
}

/// Best of three lone runs on each runner, interleaved.
fn time_pair(a: &mut OrtRunner, b: &mut OrtRunner, sig: &Signature) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        for (runner, best) in [(&mut *a, &mut ta), (&mut *b, &mut tb)] {
            let started = Instant::now();
            if runner.run(sig.zero_inputs(1)).is_ok() {
                *best = (*best).min(started.elapsed());
            }
        }
    }
    (ta, tb)
}

fn new_session(
    lib: &Library,
    path: &Path,
    threads: usize,
    spinning: bool,
) -> Result<Session, String> {
    let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    Session::builder(&lib.env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(text)?
        .with_parallel_execution(false)
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        .with_intra_threads(threads)
        .map_err(text)?
        .with_intra_op_spinning(spinning)
        .map_err(text)?
        .commit_from_file(path)
        .map_err(|e| e.to_string())
}

impl Backend for OrtBackend {
    fn kind(&self) -> EngineKind {
        EngineKind::Onnxruntime
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn batch_support(&self) -> BatchSupport {
        self.batch.clone()
    }

    fn runner(&self) -> Result<Box<dyn Runner>, String> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let runner = match spare {
            Some(session) => OrtRunner::new(session),
            None => {
                let session = new_session(library()?, &self.path, self.threads, self.spinning)?;
                let mut runner = OrtRunner::new(session);
                // A new session's first run is its slow one: not a client's. Zeros may not fit
                // the model (free dimensions), which only costs the warm-up.
                let _ = runner.run(self.signature.zero_inputs(1));
                runner
            }
        };
        Ok(Box::new(runner))
    }

    fn intra_op_threads(&self) -> usize {
        self.threads
    }

    /// Each session has a pool of its own: as many workers as fill the cores.
    fn default_workers(&self, cores: usize) -> usize {
        (cores / self.threads.max(1)).max(1)
    }
}

struct OrtRunner {
    session: Session,
    /// The session's outputs, in the signature's order.
    outputs: Vec<String>,
}

impl OrtRunner {
    fn new(session: Session) -> OrtRunner {
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        OrtRunner { session, outputs }
    }
}

impl Runner for OrtRunner {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let values = inputs
            .iter()
            .map(input_value)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self.session.run(&values[..]).map_err(|e| e.to_string())?;
        self.outputs
            .iter()
            .map(|name| {
                outputs
                    .get(name)
                    .ok_or_else(|| format!("onnxruntime returned no output '{name}'"))
                    .and_then(output_tensor)
            })
            .collect()
    }
}

/// Our tensor as an onnxruntime input, borrowing the values (strings are copied).
fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>, String> {
    let shape = t.shape().to_vec();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, &$v[..]))
                .map(SessionInputValue::from)
                .map_err(|e| e.to_string())
        };
    }
    match t.data() {
        TensorData::F16(v) => view!(v),
        TensorData::F32(v) => view!(v),
        TensorData::F64(v) => view!(v),
        TensorData::I8(v) => view!(v),
        TensorData::I16(v) => view!(v),
        TensorData::I32(v) => view!(v),
        TensorData::I64(v) => view!(v),
        TensorData::U8(v) => view!(v),
        TensorData::U16(v) => view!(v),
        TensorData::U32(v) => view!(v),
        TensorData::U64(v) => view!(v),
        TensorData::Bool(v) => view!(v),
        TensorData::String(v) => ort::value::Tensor::from_string_array((shape, &v[..]))
            .map(SessionInputValue::from)
            .map_err(|e| e.to_string()),
    }
}

/// An onnxruntime output as our tensor (one copy of the values).
fn output_tensor(value: &DynValue) -> Result<Tensor, String> {
    let ty = value.dtype().tensor_type().ok_or_else(|| {
        "an output is not a tensor (sequences and maps cannot be served)".to_string()
    })?;
    macro_rules! copy {
        ($variant:ident, $t:ty) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| e.to_string())?;
            (shape.to_vec(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float16 => copy!(F16, tensor::f16),
        TensorElementType::Float32 => copy!(F32, f32),
        TensorElementType::Float64 => copy!(F64, f64),
        TensorElementType::Int8 => copy!(I8, i8),
        TensorElementType::Int16 => copy!(I16, i16),
        TensorElementType::Int32 => copy!(I32, i32),
        TensorElementType::Int64 => copy!(I64, i64),
        TensorElementType::Uint8 => copy!(U8, u8),
        TensorElementType::Uint16 => copy!(U16, u16),
        TensorElementType::Uint32 => copy!(U32, u32),
        TensorElementType::Uint64 => copy!(U64, u64),
        TensorElementType::Bool => copy!(Bool, bool),
        TensorElementType::String => {
            let (shape, data) = value.try_extract_strings().map_err(|e| e.to_string())?;
            (shape.to_vec(), TensorData::String(data))
        }
        other => return Err(format!("outputs of type {other:?} cannot be served")),
    };
    let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn dtype(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Uint16 => DType::U16,
        TensorElementType::Uint32 => DType::U32,
        TensorElementType::Uint64 => DType::U64,
        TensorElementType::Bool => DType::Bool,
        TensorElementType::String => DType::String,
        _ => return None,
    })
}

/// The session's inputs and outputs; a free dimension keeps the model's symbol, or the name
/// tract would give it (`batch` first, `<input>_<k>` elsewhere) when the model has none.
fn signature(session: &Session) -> Result<Signature, String> {
    let specs = |outlets: &[ort::value::Outlet], kind: &str| -> Result<Vec<TensorSpec>, String> {
        outlets
            .iter()
            .map(|o| {
                let ValueType::Tensor {
                    ty,
                    shape,
                    dimension_symbols,
                } = o.dtype()
                else {
                    return Err(format!(
                        "{kind} '{}' is not a tensor (sequences and maps cannot be sent as JSON)",
                        o.name()
                    ));
                };
                let dtype = dtype(*ty).ok_or_else(|| {
                    format!(
                        "{kind} '{}' has element type {ty:?}, which cannot be sent as JSON",
                        o.name()
                    )
                })?;
                let shape = shape
                    .iter()
                    .enumerate()
                    .map(|(k, &d)| match (d, dimension_symbols.get(k)) {
                        (d, _) if d >= 0 => Dim::Fixed(d as usize),
                        (_, Some(sym)) if !sym.is_empty() => Dim::Dynamic(sym.clone()),
                        (_, _) if k == 0 => Dim::Dynamic("batch".into()),
                        _ => Dim::Dynamic(format!("{}_{k}", o.name())),
                    })
                    .collect();
                Ok(TensorSpec {
                    name: o.name().to_string(),
                    dtype,
                    shape,
                })
            })
            .collect()
    };
    Ok(Signature {
        inputs: specs(session.inputs(), "input")?,
        outputs: specs(session.outputs(), "output")?,
    })
}
