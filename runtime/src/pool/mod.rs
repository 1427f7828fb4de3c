//! The worker pool: inference off the async executor, on a fixed set of worker threads fed by a
//! bounded queue, with admission (a request is admitted or refused before it is read) and
//! dynamic batching (`batching`); the threads themselves are `worker`'s.
//!
//! Model runs are CPU-bound and take milliseconds to seconds; on tokio's workers they would stall
//! every other request. A full queue turns into 429 at once instead of an ever-growing backlog.
//! The workers know models only as [`Backend`]s: which engine runs them is not their concern.
//!
//! Threads follow the load: each worker's runner uses one intra-op thread (many requests, one
//! core each), and a request that is the only one admitted (none other read, decoded, queued or
//! running) runs on the backend's runner for every core ([`Backend::lone_runner`]), when it has
//! one.

mod batching;
mod worker;

pub use batching::Batching;
use worker::Worker;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use tokio::sync::{oneshot, Notify};

use crate::engine::{Backend, BatchSupport, EngineError, Runner};
use crate::error::ApiError;
use crate::tensor::Tensor;

type Reply = oneshot::Sender<Result<(Vec<Tensor>, Duration), RunError>>;

/// Why a run gave no outputs.
#[derive(Debug)]
enum RunError {
    /// The engine refused the input (400: the client can change it) or failed (500).
    Engine(EngineError),
    /// The engine panicked (500: a bug, in the engine or in our glue). The worker lives on.
    Panicked(String),
}

impl RunError {
    fn refused(why: impl ToString) -> RunError {
        RunError::Engine(EngineError::InvalidInput(why.to_string()))
    }
}

/// Runs the engine with a panic inside it turned into this run's error, so that an input that
/// trips an engine bug fails its own request, not the server (release builds unwind).
fn run_guarded(runner: &mut dyn Runner, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
    match crate::engine::catch_panic(|| runner.run(inputs)) {
        Ok(result) => result.map_err(RunError::Engine),
        Err(why) => Err(RunError::Panicked(why)),
    }
}

struct Job {
    inputs: Vec<Tensor>,
    reply: Reply,
}

/// Handle to the workers of one model. Dropping every handle stops the workers once the queue is
/// drained.
#[derive(Clone)]
pub struct InferencePool {
    tx: Sender<Job>,
    capacity: usize,
    stats: Arc<Counters>,
    /// Woken when a worker takes a job: room in the queue for a waiting request.
    room: Arc<Notify>,
    lone: Arc<Lone>,
}

/// A request admitted by [`InferencePool::admit`], counted as in flight until dropped (hold it
/// until the answer is made).
#[must_use = "the request counts as in flight only while this is held"]
pub struct Admitted(Arc<Lone>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the workers did, since start.
#[derive(Default)]
struct Counters {
    runs: AtomicU64,
    requests: AtomicU64,
    lone_runs: AtomicU64,
}

/// Model runs and the requests they answered (more requests than runs: batching merged some).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub runs: u64,
    pub requests: u64,
    /// Runs on the runner for every core ([`Backend::lone_runner`]): requests that came alone.
    pub lone_runs: u64,
}

impl InferencePool {
    /// Starts `workers` threads, each with a runner of its own from `backend`. Batching applies
    /// only when the backend can merge requests (`Backend::batch_support`).
    /// `batch_sizes`, when given, receives the instances of every run (the batch-size metric).
    pub fn start(
        backend: Arc<dyn Backend>,
        workers: usize,
        queue_capacity: usize,
        batching: Option<Batching>,
        batch_sizes: Option<prometheus::Histogram>,
    ) -> Result<InferencePool, String> {
        let (tx, rx) = bounded::<Job>(queue_capacity.max(1));
        let stats = Arc::new(Counters::default());
        let support = backend.batch_support();
        let batching = batching.filter(|b| b.max_batch_size > 1 && support != BatchSupport::None);
        let running = Arc::new(AtomicUsize::new(workers.max(1)));
        let room = Arc::new(Notify::new());
        // With a single worker, every request is alone: its own runner is all there is.
        let lone = Arc::new(Lone {
            // Taken either way, so that the backend does not keep it for nothing.
            runner: Mutex::new(backend.lone_runner().filter(|_| workers > 1)),
            admitted: AtomicUsize::new(0),
        });
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let running = running.clone();
            let worker = Worker {
                runner: backend.runner().map_err(|e| e.to_string())?,
                backend: backend.clone(),
                support: support.clone(),
                stats: stats.clone(),
                batch_sizes: batch_sizes.clone(),
                room: room.clone(),
                lone: lone.clone(),
            };
            let batching = batching.clone();
            thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || {
                    worker.serve(&rx, batching);
                    // The last worker of an unloaded model has dropped its runner: the model's
                    // memory is free, and can go back to the system.
                    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                        release_free_memory();
                    }
                })
                .map_err(|e| format!("cannot start inference threads: {e}"))?;
        }
        Ok(InferencePool {
            tx,
            capacity: queue_capacity.max(1),
            stats,
            room,
            lone,
        })
    }

    /// Admits a request before any of its work is done (reading, decoding), or refuses it
    /// when the queue stays full for [`ADMISSION_WAIT`]. Waiting costs an idle connection;
    /// refusing at once would have a flood's clients (which retry at once) send bodies faster
    /// than the server can discard them, taking the cores the model needs. A request admitted
    /// while the queue had room may still find it full once decoded (429 then); decoding runs
    /// one request per core (`service::off_executor`), so that waste stays small.
    ///
    /// The request counts as in flight while the returned [`Admitted`] lives (a lone request
    /// gets every core).
    ///
    /// Errors: Overloaded (429 with Retry-After; RESOURCE_EXHAUSTED over gRPC).
    pub async fn admit(&self) -> Result<Admitted, ApiError> {
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        let admitted = || {
            self.lone.admitted.fetch_add(1, Ordering::AcqRel);
            Admitted(self.lone.clone())
        };
        loop {
            if self.tx.len() < self.capacity {
                return Ok(admitted());
            }
            // A worker taking a job in between leaves a permit: the wait then ends at once.
            if tokio::time::timeout_at(deadline, self.room.notified())
                .await
                .is_err()
            {
                // A last look: room may have come without a wake-up reaching us.
                if self.tx.len() < self.capacity {
                    return Ok(admitted());
                }
                return Err(self.full());
            }
        }
    }

    fn full(&self) -> ApiError {
        ApiError::Overloaded(format!(
            "the inference queue is full ({} requests waiting); retry later or raise --queue_capacity",
            self.capacity
        ))
    }

    /// Requests waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Runs and requests answered so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            runs: self.stats.runs.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
            lone_runs: self.stats.lone_runs.load(Ordering::Relaxed),
        }
    }

    /// Queues a run and waits for its outputs. Returns the outputs and the time spent in the
    /// engine.
    pub async fn run(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration), ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job { inputs, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(self.full()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Unavailable(
                    "the inference workers have stopped".into(),
                ))
            }
        }
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(RunError::Engine(EngineError::InvalidInput(message)))) => Err(
                ApiError::BadRequest(format!("the model could not run on this input: {message}")),
            ),
            Ok(Err(RunError::Engine(EngineError::Failed(message)))) => Err(ApiError::Internal(
                format!("the engine failed ({message}); the server goes on serving"),
            )),
            Ok(Err(RunError::Panicked(message))) => Err(ApiError::Internal(format!(
                "the engine failed on this input ({message}); the server goes on serving"
            ))),
            Err(_) => Err(ApiError::Internal(
                "an inference worker stopped while running this request".into(),
            )),
        }
    }
}

/// Returns the heap's free pages to the system. glibc's malloc keeps what a model freed in its
/// arenas; after unloading a version that is tens or hundreds of MB the process would stay at
/// its peak (the reload test measured +50 MB kept over five swaps of a 18 MB CNN without it).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long a request may wait for room in a full queue before it is refused (429). Longer
/// waits mean fewer refusals per second for a flood's clients to resend (each refused body is
/// still read and dropped): with 256 clients on a CNN, 250 ms kept 0.81x of the unloaded
/// goodput where 100 ms kept 0.71x, for +50 ms on the admitted requests' p99 (BENCHMARKS.md).
pub const ADMISSION_WAIT: Duration = Duration::from_millis(250);

/// The runner on every core for lone requests, and how many requests are admitted now.
struct Lone {
    runner: Mutex<Option<Box<dyn Runner>>>,
    admitted: AtomicUsize,
}
