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
use crate::model::{Plan, Plans};

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
        plans: Plans,
        workers: usize,
        queue_capacity: usize,
    ) -> std::io::Result<InferencePool> {
        let (tx, rx) = bounded::<Job>(queue_capacity.max(1));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let plans = plans.clone();
            thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(plans, rx))?;
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

/// A plan with its reusable run state (buffers kept between runs).
struct Runner {
    plan: Plan,
    state: Option<TypedSimpleState>,
}

impl Runner {
    fn new(plan: &Plan) -> Runner {
        Runner {
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

fn worker(plans: Plans, rx: Receiver<Job>) {
    let mut any = Runner::new(&plans.any);
    let mut batch1 = plans.batch1.as_ref().map(Runner::new);
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue; // the client went away while the job waited
        }
        let started = Instant::now();
        let batch = common_batch(&job.inputs);
        let result = match (batch1.as_mut(), batch) {
            (Some(one), Some(1)) => one.run(job.inputs),
            (Some(one), Some(n)) if n > 1 && plans.split_batches => run_split(one, &job.inputs, n),
            _ => any.run(job.inputs),
        };
        let result = result
            .map(|out| (out, started.elapsed()))
            .map_err(|e| format!("{e:#}"));
        let _ = job.reply.send(result);
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
/// (BENCHMARKS.md). Only for plans whose outputs all keep the batch first (`Plans::split_batches`,
/// decided at load).
fn run_split(one: &mut Runner, inputs: &[TValue], n: usize) -> TractResult<TVec<TValue>> {
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

/// Sets how many threads tract's matrix products may use (its multithreaded executor).
pub fn set_intra_op_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread_with_name(threads, "tract-mm"),
        );
    }
}
