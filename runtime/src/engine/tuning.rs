//! Warm-up and intra-op threads: runs on zeros at load, timed to choose between one thread and
//! every core, and the interleaved timing `auto` also uses to choose the engine.

use std::time::{Duration, Instant};

use super::{BatchSupport, Runner};
use crate::signature::Signature;

/// The fastest of `rounds` runs of each of `n` contenders, run in turn every round (`run(k)`
/// runs contender k once) so that the machine's noise hits all alike. A contender whose run
/// fails is not run again; its entry is the error.
pub fn best_of_interleaved(
    rounds: usize,
    n: usize,
    mut run: impl FnMut(usize) -> Result<(), String>,
) -> Vec<Result<Duration, String>> {
    let mut best: Vec<Result<Duration, String>> = vec![Ok(Duration::MAX); n];
    for _ in 0..rounds {
        for (k, best) in best.iter_mut().enumerate() {
            let Ok(so_far) = *best else { continue };
            let started = Instant::now();
            *best = run(k).map(|()| so_far.min(started.elapsed()));
        }
    }
    best
}

/// Milliseconds, for logs.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A run's time for logs: `28.6 ms`, or `85.2 µs` below a millisecond.
pub fn took(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", ms(d))
    }
}

/// Runs `runner` on zeros at each of `batches`, notes each time, and returns the last run's
/// time; the error names the batch that failed.
pub fn warm_up(
    runner: &mut dyn Runner,
    signature: &Signature,
    batches: &[usize],
    notes: &mut Vec<String>,
) -> Result<Duration, String> {
    let mut last = Duration::ZERO;
    for &n in batches {
        let started = Instant::now();
        runner
            .run(signature.zero_inputs(n))
            .map_err(|e| format!("warm-up run on zeros (batch {n}) failed: {e}"))?;
        last = started.elapsed();
        notes.push(format!("Warm-up run (batch {n}) took {}", took(last)));
    }
    Ok(last)
}

/// The first warm-up run, at batch 1. Its failure stops the load, unless the model has free
/// dimensions beyond the batch: zeros at size 1 need not be a valid input for such a model (an
/// OCR network downsampling a 1x1 image, an audio model given one sample), so the failure is
/// noted and `None` returned: the model is served without warm-up, its threads not timed.
pub fn first_run(
    runner: &mut dyn Runner,
    signature: &Signature,
    notes: &mut Vec<String>,
) -> Result<Option<Duration>, String> {
    match warm_up(runner, signature, &[1], notes) {
        Ok(took) => Ok(Some(took)),
        Err(e) if zeros_may_not_fit(signature) => {
            notes.push(format!(
                "Warm-up skipped: {e} (the model has free dimensions beyond the batch, which \
                 zeros of size 1 may not fit; the first request warms it up)"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether the model has free dimensions beyond the batch, which zeros of size 1 may not fit.
pub fn zeros_may_not_fit(signature: &Signature) -> bool {
    signature
        .inputs
        .iter()
        .any(|spec| spec.shape.iter().skip(1).any(|d| d.fixed().is_none()))
}

/// Whether an engine that runs every batch size alike may merge requests into one run: each
/// input's batch is free, and runs on zeros at batch 1 and at `largest` (the most instances a
/// merged run holds) give every output that batch first. `Any` if so, with a note; `None`
/// otherwise (a failed run is noted). `engine` names the engine in the note.
pub fn any_batch(
    runner: &mut dyn Runner,
    signature: &Signature,
    largest: usize,
    engine: &str,
    notes: &mut Vec<String>,
) -> BatchSupport {
    if !signature.inputs.iter().all(|s| s.has_dynamic_batch()) {
        return BatchSupport::None;
    }
    for n in [1, largest] {
        match runner.run(signature.zero_inputs(n)) {
            Ok(outs) if outs.iter().all(|o| o.batch() == Some(n)) => {}
            Ok(outs) => {
                let shapes: Vec<_> = outs.iter().map(|o| o.shape().to_vec()).collect();
                notes.push(format!(
                    "No batching: at batch {n} the outputs' shapes are {shapes:?}, not all \
                     {n} first"
                ));
                return BatchSupport::None;
            }
            Err(e) => {
                notes.push(format!("No batching: a run at batch {n} failed: {e}"));
                return BatchSupport::None;
            }
        }
    }
    notes.push(format!(
        "Dynamic batching: a run of {largest} checked ({engine} merges any batch size, no \
         padding)"
    ));
    BatchSupport::Any
}

/// The intra-op thread count to keep: `max` only if a lone run on `max` threads is at least
/// `speedup` times faster than on one (each engine says what it takes to pay off when served).
pub fn pick_threads(max: usize, one: Duration, many: Duration, speedup: f64) -> usize {
    if max > 1 && many.as_secs_f64() * speedup <= one.as_secs_f64() {
        max
    } else {
        1
    }
}

/// The log line for an automatic thread choice.
pub fn threads_note(
    chosen: usize,
    max: usize,
    one: Duration,
    many: Duration,
    speedup: f64,
) -> String {
    format!(
        "Intra-op threads: {chosen} (a lone run took {} on 1 thread, {} on {max}; \
         {max} must make it {speedup:.2}x faster to be worth holding cores that concurrent \
         requests could use)",
        took(one),
        took(many)
    )
}

/// A lone run slower than this is not timed again to choose the intra-op threads (six more runs
/// would delay start-up too much); such a model gets every core.
pub const TUNE_LIMIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_timing_runs_each_in_turn_and_drops_a_failure() {
        let mut calls = Vec::new();
        let times = best_of_interleaved(3, 2, |k| {
            calls.push(k);
            if k == 1 && calls.iter().filter(|&&c| c == 1).count() == 2 {
                Err("failed on its second run".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(
            calls,
            [0, 1, 0, 1, 0],
            "in turn, the failed one not run again"
        );
        assert!(times[0].as_ref().is_ok_and(|t| *t < Duration::MAX));
        assert_eq!(times[1], Err("failed on its second run".to_string()));
    }

    #[test]
    fn threads_pay_only_past_the_engines_speedup() {
        let ms = Duration::from_millis;
        assert_eq!(pick_threads(2, ms(12), ms(9), 1.5), 1);
        assert_eq!(pick_threads(2, ms(90), ms(46), 1.5), 2);
        assert_eq!(pick_threads(2, ms(12), ms(10), 1.15), 2);
        assert_eq!(pick_threads(1, ms(12), ms(1), 1.15), 1);
    }
}
