//! One inference thread: takes jobs from the pool's queue, merges them when batching is on, and
//! runs each on its own runner or, for a request that came alone, on the runner for every core.

use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::Instant;

use crossbeam_channel::Receiver;
use tokio::sync::Notify;

use super::batching::{common_batch, concat_inputs, gather};
use super::{run_guarded, Batching, Counters, Job, Lone, RunError};
use crate::engine::{Backend, BatchSupport, Runner};
use crate::tensor::{Tensor, TensorError};

/// One inference thread.
pub(super) struct Worker {
    pub(super) runner: Box<dyn Runner>,
    /// For a fresh runner after one panicked (its state may be half-way through a run).
    pub(super) backend: Arc<dyn Backend>,
    pub(super) support: BatchSupport,
    pub(super) stats: Arc<Counters>,
    pub(super) batch_sizes: Option<prometheus::Histogram>,
    pub(super) room: Arc<Notify>,
    pub(super) lone: Arc<Lone>,
}

impl Worker {
    /// Runs a request on the runner for every core when it is the only one admitted (none
    /// other being read, decoded, queued or run; `alone`: nobody was queued when it was taken)
    /// and no one else holds that runner; else on this worker's own runner. A panic there drops
    /// that runner: lone requests then run on their worker's runner, as concurrent ones do.
    fn run_one(&mut self, inputs: Vec<Tensor>, alone: bool) -> Result<Vec<Tensor>, RunError> {
        // A run through `run` without `admit` (tests, the bench) counts as 0.
        if alone && self.lone.admitted.load(Ordering::Acquire) <= 1 {
            let lone = match self.lone.runner.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut guard) = lone {
                if let Some(runner) = guard.as_mut() {
                    let result = run_guarded(runner.as_mut(), inputs);
                    self.stats.lone_runs.fetch_add(1, Ordering::Relaxed);
                    if matches!(result, Err(RunError::Panicked(_))) {
                        *guard = None;
                    }
                    return result;
                }
            }
        }
        self.run(inputs)
    }

    /// One engine run; after a panic, the runner is replaced by a fresh one.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let result = run_guarded(self.runner.as_mut(), inputs);
        if let Err(RunError::Panicked(why)) = &result {
            match self.backend.runner() {
                Ok(fresh) => self.runner = fresh,
                Err(e) => tracing::error!("the engine panicked ({why}) and no new runner can be made ({e}): this worker keeps the old one"),
            }
        }
        result
    }

    fn count(&self, requests: usize, instances: usize) {
        if let Some(h) = &self.batch_sizes {
            h.observe(instances as f64);
        }
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }

    pub(super) fn serve(mut self, rx: &Receiver<Job>, batching: Option<Batching>) {
        let mut carried: Option<Job> = None;
        loop {
            let job = match carried.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => {
                        // Room in the queue: a request waiting in `admit` may come in.
                        self.room.notify_one();
                        job
                    }
                    Err(_) => return, // every handle dropped and the queue drained
                },
            };
            if job.reply.is_closed() {
                continue; // the client went away while the job waited
            }
            let group = match &batching {
                Some(b) => {
                    let (group, next) = gather(rx, job, b, &self.room);
                    carried = next;
                    group
                }
                None => vec![job],
            };
            if group.len() > 1 {
                self.run_merged(group);
            } else if let Some(job) = group.into_iter().next() {
                let alone = rx.is_empty();
                self.run_alone(job, alone);
            }
        }
    }

    /// Several requests as one batch: concatenated, padded to the next size with a plan (for
    /// engines that need one), run, and each request answered with its own rows.
    fn run_merged(&mut self, group: Vec<Job>) {
        let started = Instant::now();
        let sizes: Vec<usize> = group
            .iter()
            .map(|j| common_batch(&j.inputs).unwrap_or(1))
            .collect();
        let total: usize = sizes.iter().sum();
        let pad = match &self.support {
            BatchSupport::Padded(plans) => plans.iter().find(|&&n| n >= total).map(|n| n - total),
            BatchSupport::Any => Some(0),
            BatchSupport::None => None,
        };
        let result = match pad {
            Some(pad) => concat_inputs(&group, pad)
                .map_err(RunError::refused)
                .and_then(|inputs| self.run(inputs))
                .and_then(|outputs| {
                    // Every output must have a row per instance to be split back.
                    match outputs.iter().find(|o| o.batch() != Some(total + pad)) {
                        Some(odd) => Err(RunError::refused(format!(
                            "an output of shape {:?}",
                            odd.shape()
                        ))),
                        None => Ok(outputs),
                    }
                }),
            None => Err(RunError::refused(format!("no plan for a batch of {total}"))),
        };
        let elapsed = started.elapsed();
        match result {
            Ok(outputs) => {
                self.count(group.len(), total);
                let mut offset = 0;
                for (job, n) in group.into_iter().zip(sizes) {
                    let mine: Result<Vec<Tensor>, TensorError> =
                        outputs.iter().map(|o| o.rows(offset, offset + n)).collect();
                    offset += n;
                    let _ = job
                        .reply
                        .send(mine.map(|m| (m, elapsed)).map_err(RunError::refused));
                }
            }
            // The merged run failed: run each request alone, so one bad request does not fail
            // the others (and each gets its own error).
            Err(_) => {
                for job in group {
                    self.run_alone(job, false);
                }
            }
        }
    }

    /// Runs one request by itself and answers it (`alone`: nobody else was waiting).
    fn run_alone(&mut self, job: Job, alone: bool) {
        let instances = common_batch(&job.inputs).unwrap_or(1);
        let started = Instant::now();
        let result = self.run_one(job.inputs, alone);
        self.count(1, instances);
        let _ = job.reply.send(result.map(|out| (out, started.elapsed())));
    }
}
