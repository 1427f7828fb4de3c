//! Inference off the async executor: a fixed set of worker threads fed by a bounded queue.
//!
//! tract runs are CPU-bound and take milliseconds to seconds; on tokio's workers they would stall
//! every other request. A full queue turns into 429 at once instead of an ever-growing backlog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::oneshot;
use tract_onnx::prelude::*;

use tract_linalg::multithread::{set_default_executor, Executor};

use crate::error::ApiError;
use crate::model::{Plan, Plans};

type Reply = oneshot::Sender<Result<(TVec<TValue>, Duration), String>>;

struct Job {
    inputs: TVec<TValue>,
    reply: Reply,
}

/// Dynamic batching (TF Serving's `--enable_batching` and its batching parameters): a worker
/// that takes a request also takes the compatible requests waiting behind it, up to
/// `max_batch_size` instances, waiting at most `timeout` for more, and runs them as one batch on
/// a plan made for that size (padded with zeros up to the next allowed size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batching {
    pub max_batch_size: usize,
    pub timeout: Duration,
    /// Batch sizes that get a plan, ascending, the last one `max_batch_size`.
    pub allowed_batch_sizes: Vec<usize>,
}

impl Batching {
    /// Checks the sizes and fills the defaults: powers of two up to `max_batch_size`, and it.
    pub fn new(
        max_batch_size: usize,
        timeout: Duration,
        allowed: &[usize],
    ) -> Result<Batching, String> {
        if max_batch_size < 2 {
            return Err(format!(
                "--max_batch_size must be at least 2 for batching to merge anything (got {max_batch_size})"
            ));
        }
        let mut sizes: Vec<usize> = if allowed.is_empty() {
            std::iter::successors(Some(2usize), |n| n.checked_mul(2))
                .take_while(|&n| n < max_batch_size)
                .collect()
        } else {
            allowed.to_vec()
        };
        if let Some(bad) = sizes.iter().find(|&&n| n < 2 || n > max_batch_size) {
            return Err(format!(
                "--allowed_batch_sizes: {bad} is outside 2..={max_batch_size} (--max_batch_size)"
            ));
        }
        sizes.push(max_batch_size);
        sizes.sort_unstable();
        sizes.dedup();
        Ok(Batching {
            max_batch_size,
            timeout,
            allowed_batch_sizes: sizes,
        })
    }
}

/// Handle to the workers of one model. Dropping every handle stops the workers once the queue is
/// drained.
#[derive(Clone)]
pub struct InferencePool {
    tx: Sender<Job>,
    capacity: usize,
    stats: Arc<Counters>,
}

/// What the workers did, since start.
#[derive(Default)]
struct Counters {
    runs: AtomicU64,
    requests: AtomicU64,
}

/// Model runs and the requests they answered (more requests than runs: batching merged some).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub runs: u64,
    pub requests: u64,
}

impl InferencePool {
    /// Starts `workers` threads, each with its own reusable tract state. Batching applies only
    /// when `plans` has plans for batch sizes above 1.
    pub fn start(
        plans: Plans,
        workers: usize,
        queue_capacity: usize,
        batching: Option<Batching>,
    ) -> std::io::Result<InferencePool> {
        let (tx, rx) = bounded::<Job>(queue_capacity.max(1));
        let stats = Arc::new(Counters::default());
        let batching =
            batching.filter(|b| b.max_batch_size > 1 && plans.batch_sizes().next().is_some());
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let plans = plans.clone();
            let batching = batching.clone();
            let stats = stats.clone();
            thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || Worker::new(&plans, stats).serve(&rx, batching))?;
        }
        Ok(InferencePool {
            tx,
            capacity: queue_capacity.max(1),
            stats,
        })
    }

    /// Runs and requests answered so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            runs: self.stats.runs.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
        }
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

/// One inference thread: a runner per plan.
struct Worker {
    any: Runner,
    /// (batch size, runner), ascending.
    fixed: Vec<(usize, Runner)>,
    batch_first: bool,
    stats: Arc<Counters>,
}

impl Worker {
    fn new(plans: &Plans, stats: Arc<Counters>) -> Worker {
        Worker {
            any: Runner::new(&plans.any),
            fixed: plans
                .fixed
                .iter()
                .map(|(n, p)| (*n, Runner::new(p)))
                .collect(),
            batch_first: plans.batch_first,
            stats,
        }
    }

    fn count(&self, requests: usize) {
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }

    fn serve(mut self, rx: &Receiver<Job>, batching: Option<Batching>) {
        let mut carried: Option<Job> = None;
        loop {
            let job = match carried.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return, // every handle dropped and the queue drained
                },
            };
            if job.reply.is_closed() {
                continue; // the client went away while the job waited
            }
            let group = match &batching {
                Some(b) => {
                    let (group, next) = gather(rx, job, b);
                    carried = next;
                    group
                }
                None => vec![job],
            };
            if group.len() > 1 {
                self.run_merged(group);
            } else if let Some(job) = group.into_iter().next() {
                self.run_alone(job);
            }
        }
    }

    /// One request's inputs: on the plan made for its batch size, else instance by instance on
    /// the batch-1 plan, else on the general plan.
    fn run_one(&mut self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let batch = common_batch(&inputs);
        if let Some(n) = batch {
            if let Some((_, runner)) = self.fixed.iter_mut().find(|(size, _)| *size == n) {
                return runner.run(inputs);
            }
            if n > 1 && self.batch_first {
                if let Some((_, one)) = self.fixed.iter_mut().find(|(size, _)| *size == 1) {
                    return run_split(one, &inputs, n);
                }
            }
        }
        self.any.run(inputs)
    }

    /// Several requests as one batch: concatenated, padded to the next size with a plan, run,
    /// and each request answered with its own rows.
    fn run_merged(&mut self, group: Vec<Job>) {
        let started = Instant::now();
        let sizes: Vec<usize> = group
            .iter()
            .map(|j| common_batch(&j.inputs).unwrap_or(1))
            .collect();
        let total: usize = sizes.iter().sum();
        let result = (|| -> TractResult<TVec<TValue>> {
            let (size, runner) = self
                .fixed
                .iter_mut()
                .find(|(size, _)| *size >= total)
                .ok_or_else(|| TractError::msg(format!("no plan for a batch of {total}")))?;
            let inputs = concat_inputs(&group, *size - total)?;
            runner.run(inputs)
        })();
        let elapsed = started.elapsed();
        match result {
            Ok(outputs) => {
                self.count(group.len());
                let mut offset = 0;
                for (job, n) in group.into_iter().zip(sizes) {
                    let mine: TractResult<TVec<TValue>> = outputs
                        .iter()
                        .map(|o| o.slice(0, offset, offset + n).map(IntoTValue::into_tvalue))
                        .collect();
                    offset += n;
                    let _ = job
                        .reply
                        .send(mine.map(|m| (m, elapsed)).map_err(|e| format!("{e:#}")));
                }
            }
            // The merged run failed: run each request alone, so one bad request does not fail
            // the others (and each gets its own error).
            Err(_) => {
                for job in group {
                    self.run_alone(job);
                }
            }
        }
    }

    /// Runs one request by itself and answers it.
    fn run_alone(&mut self, job: Job) {
        let started = Instant::now();
        let result = self.run_one(job.inputs);
        self.count(1);
        let _ = job.reply.send(
            result
                .map(|out| (out, started.elapsed()))
                .map_err(|e| format!("{e:#}")),
        );
    }
}

/// `first` and the queued requests that can join it: same inputs but for the batch dimension,
/// at most `max_batch_size` instances together, arriving before `timeout` runs out. Returns the
/// group and the first request that could not join (it runs next).
fn gather(rx: &Receiver<Job>, first: Job, b: &Batching) -> (Vec<Job>, Option<Job>) {
    let Some(mut total) = common_batch(&first.inputs).filter(|&n| n < b.max_batch_size) else {
        return (vec![first], None);
    };
    let deadline = Instant::now() + b.timeout;
    let mut group = vec![first];
    while total < b.max_batch_size {
        let next = if b.timeout.is_zero() {
            rx.try_recv().ok()
        } else {
            rx.recv_deadline(deadline).ok()
        };
        let Some(job) = next else { break };
        if job.reply.is_closed() {
            continue;
        }
        match common_batch(&job.inputs) {
            Some(n)
                if total + n <= b.max_batch_size && compatible(&group[0].inputs, &job.inputs) =>
            {
                total += n;
                group.push(job);
            }
            _ => return (group, Some(job)),
        }
    }
    (group, None)
}

/// Same number of inputs, same element types, same shapes but for the first dimension.
fn compatible(a: &[TValue], b: &[TValue]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.datum_type() == y.datum_type()
                && x.rank() == y.rank()
                && x.shape().get(1..) == y.shape().get(1..)
        })
}

/// Each input of the group's requests stacked along the batch, then `pad` rows of zeros.
fn concat_inputs(group: &[Job], pad: usize) -> TractResult<TVec<TValue>> {
    let count = group.first().map_or(0, |j| j.inputs.len());
    (0..count)
        .map(|k| {
            let mut parts: Vec<Tensor> = group
                .iter()
                .map(|j| j.inputs[k].clone().into_tensor())
                .collect();
            if pad > 0 {
                let like = &group[0].inputs[k];
                let mut shape = like.shape().to_vec();
                shape[0] = pad;
                parts.push(Tensor::zero_dt(like.datum_type(), &shape)?);
            }
            Tensor::stack_tensors(0, &parts).map(IntoTValue::into_tvalue)
        })
        .collect()
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

/// Sets how many threads tract's matrix products (and depthwise convolutions) may use: its
/// multithreaded executor; 1 runs them on the calling thread.
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

/// Chooses between one intra-op thread and `max` for this model and sets it: a lone run on
/// `max` threads must be at least 15 % faster than on one, or the cores are better left to
/// concurrent requests (one worker per core). Best of three runs each, interleaved. Returns the
/// choice and the two times.
///
/// Measured: ResNet-50 runs 1.6x faster on two threads; EfficientNet-Lite0 no faster (tract
/// splits its depthwise convolutions per channel plane, which costs what the second core gives),
/// and one thread per worker served it 1.39x the requests per second at concurrency 4.
pub fn tune_intra_op_threads(
    plan: &Plan,
    inputs: &TVec<TValue>,
    max: usize,
) -> TractResult<(usize, Duration, Duration)> {
    let many = executor(max);
    let (mut t_one, mut t_many) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        for (exec, best) in [
            (Executor::SingleThread, &mut t_one),
            (many.clone(), &mut t_many),
        ] {
            set_default_executor(exec);
            let started = Instant::now();
            plan.run(inputs.clone())?;
            *best = (*best).min(started.elapsed());
        }
    }
    let chosen = if max > 1 && t_many.as_secs_f64() * 1.15 <= t_one.as_secs_f64() {
        max
    } else {
        1
    };
    set_default_executor(if chosen > 1 {
        many
    } else {
        Executor::SingleThread
    });
    Ok((chosen, t_one, t_many))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_default_to_powers_of_two_and_end_at_the_maximum() {
        let sizes = |max, allowed: &[usize]| {
            Batching::new(max, Duration::ZERO, allowed).map(|b| b.allowed_batch_sizes)
        };
        assert_eq!(sizes(8, &[]), Ok(vec![2, 4, 8]));
        assert_eq!(sizes(6, &[]), Ok(vec![2, 4, 6]));
        assert_eq!(sizes(2, &[]), Ok(vec![2]));
        assert_eq!(sizes(8, &[3, 3]), Ok(vec![3, 8]));
        assert!(sizes(1, &[]).unwrap_err().contains("--max_batch_size"));
        assert!(sizes(8, &[16]).unwrap_err().contains("16 is outside 2..=8"));
        assert!(sizes(8, &[1]).unwrap_err().contains("1 is outside"));
    }
}
