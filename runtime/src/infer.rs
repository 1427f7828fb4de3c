//! Inference off the async executor: a fixed set of worker threads fed by a bounded queue.
//!
//! tract runs are CPU-bound and take milliseconds to seconds; on tokio's workers they would stall
//! every other request. A full queue turns into 429 at once instead of an ever-growing backlog.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;
use tract_onnx::prelude::*;

use crate::error::ApiError;
use crate::model::Plan;

struct Job {
    inputs: TVec<TValue>,
    reply: oneshot::Sender<Result<(TVec<TValue>, Duration), String>>,
}

/// Handle to the workers of one model. Dropping every handle stops the workers once the queue is
/// drained.
#[derive(Clone)]
pub struct InferencePool {
    tx: Sender<Job>,
    capacity: usize,
}

impl InferencePool {
    /// Starts `workers` threads, each with its own reusable tract state.
    pub fn start(
        plan: Plan,
        workers: usize,
        queue_capacity: usize,
    ) -> std::io::Result<InferencePool> {
        let (tx, rx) = bounded::<Job>(queue_capacity.max(1));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let plan = plan.clone();
            thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(plan, rx))?;
        }
        Ok(InferencePool {
            tx,
            capacity: queue_capacity.max(1),
        })
    }

    /// Queues a run and waits for its outputs. Returns the outputs and the time spent in tract.
    pub async fn run(&self, inputs: TVec<TValue>) -> Result<(TVec<TValue>, Duration), ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Job { inputs, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::Overloaded(format!(
                    "the inference queue is full ({} requests waiting); retry later or raise --queue_capacity",
                    self.capacity
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Unavailable("the inference workers have stopped".into()))
            }
        }
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(message)) => Err(ApiError::BadRequest(format!(
                "the model could not run on this input: {message}"
            ))),
            Err(_) => Err(ApiError::Internal(
                "an inference worker stopped while running this request".into(),
            )),
        }
    }
}

fn worker(plan: Plan, rx: Receiver<Job>) {
    let mut state = plan.spawn().ok();
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue; // the client went away while the job waited
        }
        let started = Instant::now();
        let result = match state.as_mut() {
            Some(state) => state.run(job.inputs),
            None => plan.run(job.inputs),
        };
        let result = result
            .map(|out| (out, started.elapsed()))
            .map_err(|e| format!("{e:#}"));
        if result.is_err() {
            // A failed run may leave buffers half-written: start the next one from a fresh state.
            state = plan.spawn().ok();
        }
        let _ = job.reply.send(result);
    }
}

/// Sets how many threads tract's matrix products may use (its multithreaded executor).
pub fn set_intra_op_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread_with_name(threads, "tract-mm"),
        );
    }
}
