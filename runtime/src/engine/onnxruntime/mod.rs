//! The onnxruntime engine, through the `ort` crate with `load-dynamic`: the library
//! (`libonnxruntime.so.1`, from PyPI's onnxruntime wheel) is opened once at start-up, so a
//! runtime built without it still starts and serves with tract.
//!
//! Sessions: graph optimization level All, sequential execution, one inter-op thread, intra-op
//! threads from the CPUs this process may use, one session per inference worker
//! (`Session::run` takes `&mut self`).

mod convert;
mod library;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

pub use library::{init, library, Library, IMAGE_LIBRARY_DIR, LIBRARY_ENV, LIBRARY_FILE};

use super::tuning::{
    any_batch, best_of_interleaved, first_run, pick_threads, threads_note, took, warm_up,
    TUNE_LIMIT,
};
use super::{Backend, BatchSupport, EngineError, EngineKind, LoadOptions, Loaded, Runner, Threads};
use crate::error::ModelError;
use crate::signature::Signature;
use crate::tensor::Tensor;
use convert::{input_value, output_tensor, signature};

/// The parallel efficiency (speedup on every core / cores) a lone run on every core must show
/// for onnxruntime to give every worker all cores (`pick_threads`; 1.8x on two cores). Under
/// load, all cores per worker serve `efficiency` of what one thread per worker does, so the bar
/// bounds that loss at 10 %; below it threads follow the load: one per worker, and a session on
/// every core for a request that comes alone, whose idle threads spin (without spinning,
/// handing each operator to a sleeping thread ate the second core's gain: SqueezeNet 7.3 ->
/// 7.6 ms on two threads). The cost of following the load is memory: one more session.
/// ResNet-50 (90 vs 46 ms on two cores, 0.98) clears it and runs every request on every core
/// with one session. EfficientNet-Lite0 (1.38x-1.78x from start to start, 0.69-0.89) does not:
/// a former 1.5x bar flipped its choice between starts, and when it gave it two threads it
/// served 78 against 103 req/s at concurrency 4.
const THREADS_EFFICIENCY: f64 = 0.9;

/// A model loaded by onnxruntime.
pub struct OrtBackend {
    path: PathBuf,
    signature: Signature,
    threads: usize,
    spinning: bool,
    batch: BatchSupport,
    /// The session made and warmed while loading, handed to the first worker.
    spare: Mutex<Vec<Session>>,
    /// The session on every core timed while loading, kept for lone requests when the workers
    /// run one thread each ([`Backend::lone_runner`]).
    lone: Mutex<Option<Session>>,
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
    let mut lone_session = None;
    let (threads, mut runner, lone) = match (opts.threads, lone) {
        (Threads::Auto { max }, Some(lone)) if max > 1 && lone <= TUNE_LIMIT => {
            let mut many = OrtRunner::new(
                new_session(lib, path, max, opts.ort_spinning).map_err(fail("load"))?,
            );
            warm_up(&mut many, &signature, &[1], &mut Vec::new()).map_err(fail("run"))?;
            let (one, t_many) = time_pair(&mut runner, &mut many, &signature);
            let speedup = THREADS_EFFICIENCY * max as f64;
            let chosen = pick_threads(max, one, t_many, speedup);
            notes.push(threads_note(chosen, max, one, t_many, speedup));
            if chosen > 1 {
                (chosen, many, Some(t_many))
            } else {
                // One thread per worker under load; a request alone gets a session on every
                // core, unless the model is too quick to split.
                drop(many);
                let (session, t_lone) =
                    lone_session_for(lib, path, max, &mut runner, &signature, one)
                        .map_err(fail("load"))?;
                notes.push(match session {
                    Some(_) => format!(
                        "Lone requests: a session with {max} spinning threads ({} a run at load), used when the other workers are idle",
                        took(t_lone)
                    ),
                    None => format!(
                        "Lone requests: on their worker's thread (a run takes {}, under the {} worth splitting)",
                        took(one),
                        took(LONE_MIN_RUN)
                    ),
                });
                lone_session = session;
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
    // follows the batch. A model that zeros do not fit (no warm-up) is not merged.
    let batch = match opts.batch_sizes.iter().max() {
        Some(&largest) if lone.is_some() => {
            any_batch(&mut runner, &signature, largest, "onnxruntime", &mut notes)
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
            lone: Mutex::new(lone_session),
        }),
        load_time: started.elapsed(),
        warmed: lone.is_some(),
        notes,
    })
}

/// A lone run on one thread at least this long is worth splitting over the cores: a model
/// that runs in microseconds gains nothing from more threads but their hand-offs. Not timed
/// against the session for every core: a load under load (a reload while serving) would time
/// contention, not the model.
const LONE_MIN_RUN: Duration = Duration::from_millis(1);

/// A session on `max` threads whose idle threads spin for work (one lone request at a time
/// runs on it, and only when the cores are otherwise idle, so the spinning takes nothing a
/// request needs), kept when a lone run on one thread (`one`, on `runner`) is at least
/// [`LONE_MIN_RUN`]. Returns the session if kept, and its time on a lone run, for the log.
fn lone_session_for(
    lib: &Library,
    path: &Path,
    max: usize,
    runner: &mut OrtRunner,
    signature: &Signature,
    one: Duration,
) -> Result<(Option<Session>, Duration), String> {
    if one < LONE_MIN_RUN {
        return Ok((None, one));
    }
    // The session is an option: failing to make one leaves lone requests on their worker.
    let Ok(session) = new_session(lib, path, max, true) else {
        return Ok((None, one));
    };
    let mut lone = OrtRunner::new(session);
    if warm_up(&mut lone, signature, &[1], &mut Vec::new()).is_err() {
        return Ok((None, one));
    }
    // Timed for the log only: a load under load (a reload while serving) times contention.
    let (_, t_lone) = time_pair(runner, &mut lone, signature);
    Ok((Some(lone.session), t_lone))
}

/// Best of three lone runs on each runner, interleaved; a runner that fails counts as slowest.
fn time_pair(a: &mut OrtRunner, b: &mut OrtRunner, sig: &Signature) -> (Duration, Duration) {
    let inputs = sig.zero_inputs(1);
    let times = best_of_interleaved(3, 2, |k| {
        let runner = if k == 0 { &mut *a } else { &mut *b };
        runner
            .run(inputs.clone())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let time = |k: usize| times[k].clone().unwrap_or(Duration::MAX);
    (time(0), time(1))
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

    fn runner(&self) -> Result<Box<dyn Runner>, EngineError> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let runner = match spare {
            Some(session) => OrtRunner::new(session),
            None => {
                let session = library()
                    .and_then(|lib| new_session(lib, &self.path, self.threads, self.spinning))
                    .map_err(EngineError::Failed)?;
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

    fn lone_runner(&self) -> Option<Box<dyn Runner>> {
        let session = self.lone.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(Box::new(OrtRunner::new(session)))
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
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let values = inputs
            .iter()
            .map(input_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(EngineError::InvalidInput)?;
        let outputs = self
            .session
            .run(&values[..])
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        self.outputs
            .iter()
            .map(|name| {
                outputs
                    .get(name)
                    .ok_or_else(|| format!("onnxruntime returned no output '{name}'"))
                    .and_then(output_tensor)
                    .map_err(EngineError::Failed)
            })
            .collect()
    }
}
