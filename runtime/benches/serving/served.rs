//! What serving costs on top of the engine: each engine's own run vs a `:predict` round trip to
//! the in-process server, and dynamic batching's throughput.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::engine::{EngineKind, Threads};
use runtime::models::find_latest_version;
use runtime::models::{load_and_warm_up, PoolOptions};
use runtime::pool::Batching;
use runtime::ServedModel;

use super::*;

/// The model in `dir` on engine `kind` twice: loaded alone (for its own runs) and served (one
/// inference worker, `threads` intra-op threads), both warmed up.
pub(crate) fn engine_and_served(
    dir: &Path,
    kind: EngineKind,
    threads: usize,
) -> Result<(engine::Loaded, ServedModel)> {
    let found = find_latest_version(dir)?;
    let direct = load_engine(kind, &found.path, threads, &[])?;
    let mut pool = PoolOptions::new(1, 4);
    pool.engine = engine_choice(kind);
    pool.threads = Threads::Fixed(threads);
    let served = load_and_warm_up(&found, &pool)?;
    Ok((direct, served))
}

pub(crate) async fn bench_model(
    dir: &Path,
    name: &str,
    kind: EngineKind,
    threads: usize,
    n: usize,
) -> Result<String> {
    let (direct, served) = engine_and_served(dir, kind, threads)?;
    let signature = served.signature.clone();
    let has_image_signature = served.serving.is_some();
    let port = serve_in_process(name, served).await?;

    let input = random_input(&signature)?;
    let body = request_body(dir, has_image_signature, &input)?;
    let body_len = body.len();
    let path = format!("/v1/models/{name}:predict");
    let mut runner = direct.backend.runner().map_err(anyhow::Error::msg)?;

    let (direct_times, served_times) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut client = Client::connect(port)?;
        client.post(&path, &body)?; // warm the connection and the worker
        let (mut d, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            before_run(kind, threads);
            let t = Instant::now();
            runner
                .run(vec![input.clone()])
                .map_err(anyhow::Error::msg)?;
            d.push(t.elapsed());
            let t = Instant::now();
            let answer = client.post(&path, &body)?;
            s.push(t.elapsed());
            if !answer.starts_with(b"{\"predictions\"") {
                bail!(
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                );
            }
        }
        Ok((d, s))
    })
    .await??;
    let (dp, sp) = (p50(&direct_times), p50(&served_times));
    let overhead = sp.saturating_sub(dp);
    Ok(format!(
        "| {name} | {kind} | {:.2} MB | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} % | {:.1} ms | {:.1} ms |\n",
        body_len as f64 / 1e6,
        ms(dp),
        ms(sp),
        ms(overhead),
        100.0 * overhead.as_secs_f64() / dp.as_secs_f64(),
        ms(mean(&direct_times)),
        ms(mean(&served_times)),
    ))
}

/// Throughput of a plain server and a batching one on the same model at concurrency 1, 4, 16.
pub(crate) async fn batching_rows(
    dir: &Path,
    name: &str,
    kind: EngineKind,
    threads: usize,
    n: usize,
) -> Result<String> {
    let found = find_latest_version(dir)?;
    let mut plain = PoolOptions::new(threads, 64);
    plain.workers = None;
    plain.cores = threads;
    plain.engine = engine_choice(kind);
    plain.threads = Threads::Auto { max: threads };
    let mut batched = plain.clone();
    batched.batching = Some(
        Batching::new(8, Duration::from_micros(BATCH_TIMEOUT_MICROS), &[])
            .map_err(anyhow::Error::msg)?,
    );
    let mut ports = Vec::new();
    let mut signature = None;
    for pool in [&plain, &batched] {
        let served = load_and_warm_up(&found, pool)?;
        signature = Some((served.signature.clone(), served.serving.is_some()));
        ports.push(serve_in_process(name, served).await?);
    }
    let (signature, has_image_signature) = signature.context("no signature")?;
    let body = Arc::new(request_body(
        dir,
        has_image_signature,
        &random_input(&signature)?,
    )?);
    let path = Arc::new(format!("/v1/models/{name}:predict"));
    let mut rows = String::new();
    for conc in [1usize, 4, 16] {
        let (body, path, ports) = (body.clone(), path.clone(), ports.clone());
        let rounds = n.div_ceil(conc).max(3);
        let stats = tokio::task::spawn_blocking(move || -> Result<_> {
            // per server: (busy time, latencies)
            let mut stats = vec![(Duration::ZERO, Vec::new()); 2];
            for round in 0..=rounds {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for s in order {
                    let started = Instant::now();
                    let latencies = std::thread::scope(|scope| {
                        let handles: Vec<_> = (0..conc)
                            .map(|_| {
                                scope.spawn(|| -> Result<Duration> {
                                    let mut client = Client::connect(ports[s])?;
                                    let t = Instant::now();
                                    let answer = client.post(&path, &body)?;
                                    if !answer.starts_with(b"{\"predictions\"") {
                                        bail!(
                                            "unexpected answer: {}",
                                            String::from_utf8_lossy(
                                                &answer[..answer.len().min(200)]
                                            )
                                        );
                                    }
                                    Ok(t.elapsed())
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().map_err(|_| anyhow::anyhow!("client panicked"))?)
                            .collect::<Result<Vec<_>>>()
                    })?;
                    if round > 0 {
                        stats[s].0 += started.elapsed();
                        stats[s].1.extend(latencies);
                    }
                }
            }
            Ok(stats)
        })
        .await??;
        let rate = |(busy, lat): &(Duration, Vec<Duration>)| lat.len() as f64 / busy.as_secs_f64();
        let (plain_rate, batched_rate) = (rate(&stats[0]), rate(&stats[1]));
        rows.push_str(&format!(
            "| {name} | {kind} | {conc} | {plain_rate:.1} | {batched_rate:.1} | {:.2}x | {:.1} ms | {:.1} ms |\n",
            batched_rate / plain_rate,
            ms(p50(&stats[0].1)),
            ms(p50(&stats[1].1)),
        ));
    }
    Ok(rows)
}
