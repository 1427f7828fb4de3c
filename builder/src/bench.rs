//! `builder bench`: the article's experiment as a command. The same model, served by a portable
//! image and by one compiled for this CPU, gets the same requests, interleaved round by round so
//! the machine's noise hits both alike; the table compares latency, throughput, image size and
//! cold start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::commands::{self, DevelOptions, Engines, Lto, ServeImageOptions};
use crate::cpu::TargetCpu;
use crate::docker;

pub struct BenchOptions {
    /// Model folder holding numbered versions (e.g. /tmp/models/efficientnet).
    pub model: PathBuf,
    /// Photo to send as `{"b64": ...}` to a model with a signature.toml.
    pub image: Option<PathBuf>,
    /// A `:predict` JSON body to send instead.
    pub request: Option<PathBuf>,
    pub requests: usize,
    pub concurrency: usize,
    pub warmup: usize,
    /// Reuse existing images instead of (cache-)building them from the current sources.
    pub no_build: bool,
    pub base_image: String,
    pub network: Option<String>,
}

/// Figures for one image.
#[derive(Debug, Clone)]
pub struct SideResult {
    pub label: &'static str,
    pub image: String,
    pub image_bytes: i64,
    pub cold_start_ms: f64,
    pub latencies_ms: Vec<f64>,
    pub busy_seconds: f64,
    pub class: String,
    /// The engine the runtime chose for the model (its status says).
    pub engine: String,
}

impl SideResult {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }

    fn mean(&self) -> f64 {
        self.latencies_ms.iter().sum::<f64>() / self.latencies_ms.len().max(1) as f64
    }

    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.busy_seconds.max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({
            "image": self.image,
            "image_bytes": self.image_bytes,
            "cold_start_ms": self.cold_start_ms,
            "p50_ms": self.percentile(50.0),
            "p90_ms": self.percentile(90.0),
            "p99_ms": self.percentile(99.0),
            "mean_ms": self.mean(),
            "throughput_rps": self.throughput(),
            "requests": self.latencies_ms.len(),
            "prediction_class": self.class,
            "engine": self.engine,
        })
    }
}

/// Nearest-rank percentile of unsorted samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub struct BenchReport {
    pub portable: SideResult,
    pub optimized: SideResult,
    pub concurrency: usize,
    pub model: PathBuf,
}

impl BenchReport {
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "concurrency": self.concurrency,
            "portable": self.portable.to_json(),
            "optimized": self.optimized.to_json(),
            "speedup_p50": self.portable.percentile(50.0) / self.optimized.percentile(50.0),
            "speedup_mean": self.portable.mean() / self.optimized.mean(),
            "throughput_ratio": self.optimized.throughput() / self.portable.throughput(),
        })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} requests per image, concurrency {}, interleaved round by round\n\n",
            self.portable.latencies_ms.len(),
            self.concurrency
        );
        out += &format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>11}\n",
            "image", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s", "size MB", "cold start"
        );
        for side in [&self.portable, &self.optimized] {
            out += &format!(
                "{:<10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {:>9.1} {:>8.0} ms\n",
                side.label,
                side.percentile(50.0),
                side.percentile(90.0),
                side.percentile(99.0),
                side.mean(),
                side.throughput(),
                side.image_bytes as f64 / 1e6,
                side.cold_start_ms
            );
        }
        out += &format!(
            "\nspeedup (portable / optimized): p50 {:.2}x, mean {:.2}x; throughput {:.2}x\n",
            self.portable.percentile(50.0) / self.optimized.percentile(50.0),
            self.portable.mean() / self.optimized.mean(),
            self.optimized.throughput() / self.portable.throughput()
        );
        for side in [&self.portable, &self.optimized] {
            out += &format!(
                "{:<10} Prediction class: {}, avg latency: {:.1} ms   ({}, engine {})\n",
                side.label,
                side.class,
                side.mean(),
                side.image,
                side.engine
            );
        }
        out
    }
}

/// The request body: the given file, or the photo as `{"b64": ...}` for a signature model.
fn request_body(opts: &BenchOptions) -> Result<String> {
    if let Some(path) = &opts.request {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the request {}", path.display()))?;
        serde_json::from_str::<Value>(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        return Ok(text);
    }
    let photo = match &opts.image {
        Some(p) => p.clone(),
        None => opts
            .model
            .parent()
            .map(|p| p.join("cat.jpg"))
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "say what to send: --image PHOTO (for a model with signature.toml) or --request BODY.json (a :predict body)"
                )
            })?,
    };
    let bytes = std::fs::read(&photo)
        .with_context(|| format!("cannot read the photo {}", photo.display()))?;
    Ok(json!({"instances": [{"b64": base64(&bytes)}]}).to_string())
}

pub async fn bench(opts: &BenchOptions) -> Result<BenchReport> {
    if !opts.model.is_dir() {
        bail!(
            "--model {} is not a folder; give the model folder that holds numbered versions, e.g. /tmp/models/efficientnet (make example-model)",
            opts.model.display()
        );
    }
    let model = opts
        .model
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.model.display()))?;
    let body = request_body(opts)?;
    let docker = docker::connect().await?;

    let mut images = Vec::new();
    for (label, target) in [
        ("portable", TargetCpu::Portable),
        ("optimized", TargetCpu::Native),
    ] {
        let devel = commands::default_devel_tag(&target);
        let serving = commands::serving_tag_for(&devel);
        let have = docker::image_exists(&docker, &serving).await?;
        if opts.no_build {
            if !have {
                bail!("--no-build: {serving} does not exist; run without --no-build to build it");
            }
        } else {
            eprintln!(
                "Building the {label} images (cached layers make this quick when nothing changed)"
            );
            let devel_opts = DevelOptions {
                tag: Some(devel.clone()),
                target_cpu: target,
                lto: Lto::default(),
                base_image: opts.base_image.clone(),
                network: opts.network.clone(),
                no_cache: false,
                verbose: false,
            };
            commands::devel(&devel_opts).await?;
            let serve_opts = ServeImageOptions {
                devel_image: Some(devel.clone()),
                tag: Some(serving.clone()),
                embed_model: None,
                model_name: None,
                engine: Engines::All,
                onnxruntime_library: None,
                no_cache: false,
                verbose: false,
            };
            commands::serve_image(&serve_opts).await?;
        }
        let size = docker
            .inspect_image(&serving)
            .await
            .with_context(|| format!("cannot inspect {serving}"))?
            .size
            .unwrap_or(0);
        images.push((label, serving, size));
    }

    let mut containers: Vec<String> = Vec::new();
    let result = async {
        let mut sides = Vec::new();
        for (label, image, size) in &images {
            let (id, port, cold) = start(&docker, image, &model, &body).await?;
            containers.push(id);
            let engine = http(port, "GET", "/v1/models/bench", "")
                .ok()
                .and_then(|(_, status)| {
                    status["model_version_status"][0]["engine"]
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into());
            eprintln!(
                "{label}: {image} answered its first request {cold:.0} ms after start ({engine})"
            );
            sides.push((
                SideResult {
                    label,
                    image: image.clone(),
                    image_bytes: *size,
                    cold_start_ms: cold,
                    latencies_ms: Vec::new(),
                    busy_seconds: 0.0,
                    class: String::new(),
                    engine,
                },
                port,
            ));
        }
        let ports: Vec<u16> = sides.iter().map(|(_, p)| *p).collect();
        let body2 = body.clone();
        let measured = tokio::task::spawn_blocking({
            let (requests, concurrency, warmup) = (opts.requests, opts.concurrency, opts.warmup);
            move || measure(&ports, &body2, requests, concurrency, warmup)
        })
        .await
        .context("the benchmark thread stopped")??;
        let mut results = Vec::new();
        for ((mut side, _), m) in sides.into_iter().zip(measured) {
            side.latencies_ms = m.latencies_ms;
            side.busy_seconds = m.busy_seconds;
            side.class = m.class;
            results.push(side);
        }
        Ok::<_, anyhow::Error>(results)
    };
    let outcome = tokio::select! {
        r = result => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    for id in &containers {
        docker::remove_container(&docker, id).await;
    }
    let mut results = outcome?;
    let optimized = results.pop().context("no optimized result")?;
    let portable = results.pop().context("no portable result")?;
    Ok(BenchReport {
        portable,
        optimized,
        concurrency: opts.concurrency,
        model,
    })
}

/// Starts `image` with the model bind-mounted and 8501 on a free localhost port; returns the
/// container, the port and the cold start (container start to first answered predict).
async fn start(
    docker: &Docker,
    image: &str,
    model: &Path,
    body: &str,
) -> Result<(String, u16, f64)> {
    let started = Instant::now();
    let (id, ports) = docker::run_serving(
        docker,
        image,
        Some((model, "/models/bench")),
        &["MODEL_NAME=bench"],
    )
    .await?;
    let port = ports.rest;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match post(port, body) {
            Ok((200, _)) => return Ok((id, port, started.elapsed().as_secs_f64() * 1000.0)),
            // Still loading (503) or not listening yet: wait. Anything else is the answer.
            Ok((503, _)) | Err(_) => {}
            Ok((status, answer)) => {
                docker::remove_container(docker, &id).await;
                bail!("{image} refused the benchmark request with {status}: {answer}");
            }
        }
        let running = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running || Instant::now() > deadline {
            let (_, answer) = post(port, body).unwrap_or((0, Value::Null));
            let logs = docker::container_logs(docker, &id).await;
            docker::remove_container(docker, &id).await;
            bail!(
                "{image} did not answer the request{}: {answer}\n--- container log ---\n{logs}",
                if running {
                    " within 120 s"
                } else {
                    " (the container exited)"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Measured {
    latencies_ms: Vec<f64>,
    busy_seconds: f64,
    class: String,
}

/// Round by round, `concurrency` requests at once to one server, then to the other; the order
/// alternates every round so neither always goes first.
fn measure(
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

/// `classes` of a signature model, else the argmax of the bare scores.
pub fn predicted_class(prediction: &Value) -> String {
    if let Some(c) = prediction.get("classes") {
        return c.to_string();
    }
    let mut scores = Vec::new();
    flatten(prediction, &mut scores);
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or_else(|| "?".into(), |(i, _)| i.to_string())
}

fn flatten(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        Value::Number(n) => out.extend(n.as_f64()),
        _ => {}
    }
}

/// One `POST /v1/models/bench:predict` over a fresh connection (as the article's client does).
fn post(port: u16, body: &str) -> Result<(u16, Value)> {
    Ok(http(port, "POST", "/v1/models/bench:predict", body)?)
}

/// `(status, JSON body)` of one HTTP request to 127.0.0.1:`port` over a fresh connection; a body
/// that is not JSON comes back as a JSON string. Also the e2e tests' client.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let malformed = || std::io::Error::other("malformed HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    let payload = &raw[split + 4..];
    let value = serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()));
    Ok((status, value))
}

/// Standard base64 with padding (what clients put in `{"b64": ...}`).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 90.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn classes_or_argmax() {
        assert_eq!(
            predicted_class(&json!({"classes": 285, "probabilities": [0.1]})),
            "285"
        );
        assert_eq!(predicted_class(&json!([[0.1], [0.7], [0.2]])), "1");
    }
}
