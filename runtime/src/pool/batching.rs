//! Dynamic batching (TF Serving's `--enable_batching`): which queued requests may join a run,
//! and how their inputs are stacked into one batch.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio::sync::Notify;

use super::Job;
use crate::tensor::{Tensor, TensorError};

/// Dynamic batching (TF Serving's `--enable_batching` and its batching parameters): a worker
/// that takes a request also takes the compatible requests waiting behind it, up to
/// `max_batch_size` instances, waiting at most `timeout` for more, and runs them as one batch
/// (padded with zeros up to the next allowed size where the engine has a plan per size).
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

/// `first` and the queued requests that can join it: same inputs but for the batch dimension,
/// at most `max_batch_size` instances together, arriving before `timeout` runs out. Returns the
/// group and the first request that could not join (it runs next).
pub(super) fn gather(
    rx: &Receiver<Job>,
    first: Job,
    b: &Batching,
    room: &Notify,
) -> (Vec<Job>, Option<Job>) {
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
        room.notify_one();
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
fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.dtype() == y.dtype()
                && x.shape().len() == y.shape().len()
                && x.shape().get(1..) == y.shape().get(1..)
        })
}

/// Each input of the group's requests stacked along the batch, then `pad` rows of zeros.
pub(super) fn concat_inputs(group: &[Job], pad: usize) -> Result<Vec<Tensor>, TensorError> {
    let count = group.first().map_or(0, |j| j.inputs.len());
    (0..count)
        .map(|k| {
            let mut parts: Vec<Tensor> = group.iter().map(|j| j.inputs[k].clone()).collect();
            if pad > 0 {
                let like = &group[0].inputs[k];
                let mut shape = like.shape().to_vec();
                shape[0] = pad;
                parts.push(Tensor::zeros(like.dtype(), shape));
            }
            Tensor::concat_rows(&parts)
        })
        .collect()
}

/// The first dimension shared by every input, if they all have one.
pub(super) fn common_batch(inputs: &[Tensor]) -> Option<usize> {
    let n = inputs.first()?.batch()?;
    inputs.iter().all(|t| t.batch() == Some(n)).then_some(n)
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
