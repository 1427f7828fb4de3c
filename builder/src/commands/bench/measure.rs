//! The bench's load: warm-up, then rounds of concurrent requests to one server and then the
//! other, timed per request.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::probe::{http, predicted_class};

/// One server's figures from `measure`.
pub(super) struct Measured {
    pub(super) latencies_ms: Vec<f64>,
    pub(super) busy_seconds: f64,
    /// The class the last answer predicted.
    pub(super) class: String,
}

/// The quiet before each server's turn. onnxruntime's lone-request session spins its idle
/// threads for a while after a run: on a 2-core host, a turn that starts at once shares the cores
/// with the other server's spinning (the same fp32 model read 0.75x-1.15x p50 between the two
/// images). `scripts/bench_servers.py --pause-ms` waits as long.
const PAUSE: Duration = Duration::from_millis(50);

/// Round by round, `concurrency` requests at once to one server, then to the other, after a
/// [`PAUSE`]; the order alternates every round so neither always goes first.
pub(super) fn measure(
    ports: &[u16],
    body: &str,
    requests: usize,
    concurrency: usize,
    warmup: usize,
) -> Result<Vec<Measured>> {
    let concurrency = concurrency.max(1);
    let mut out: Vec<Measured> = ports
        .iter()
        .map(|_| Measured {
            latencies_ms: Vec::with_capacity(requests),
            busy_seconds: 0.0,
            class: String::new(),
        })
        .collect();
    for &port in ports {
        for _ in 0..warmup {
            check(post(port, body)?)?;
        }
    }
    let rounds = requests.div_ceil(concurrency);
    let bar = ProgressBar::new(rounds as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for round in 0..rounds {
        let n = concurrency.min(requests - round * concurrency);
        let order: Vec<usize> = if round % 2 == 0 {
            (0..ports.len()).collect()
        } else {
            (0..ports.len()).rev().collect()
        };
        for side in order {
            let port = ports[side];
            std::thread::sleep(PAUSE);
            let started = Instant::now();
            let answers: Vec<Result<(f64, Value)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        s.spawn(move || {
                            let t = Instant::now();
                            let answer = check(post(port, body)?)?;
                            Ok((t.elapsed().as_secs_f64() * 1000.0, answer))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
                    })
                    .collect()
            });
            out[side].busy_seconds += started.elapsed().as_secs_f64();
            for answer in answers {
                let (ms, value) = answer?;
                out[side].latencies_ms.push(ms);
                out[side].class = predicted_class(&value["predictions"][0]);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn check((status, answer): (u16, Value)) -> Result<Value> {
    if status != 200 {
        bail!("the server answered {status}: {answer}");
    }
    Ok(answer)
}

/// One `POST /v1/models/bench:predict` over a fresh connection (as the article's client does).
pub(super) fn post(port: u16, body: &str) -> Result<(u16, Value)> {
    Ok(http(port, "POST", "/v1/models/bench:predict", body)?)
}
