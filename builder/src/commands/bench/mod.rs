//! `builder bench`: the article's experiment as a command. The same model, served by a portable
//! image and by one compiled for this CPU, gets the same requests, interleaved round by round so
//! the machine's noise hits both alike (`measure`); the table compares latency, throughput, image
//! size and cold start (`report`). With `--optimize` the optimized side also serves the model
//! made for this CPU (`builder optimize`: int8 or onnxruntime's host graph where the accuracy
//! gate passes), so the table shows what the whole optimized path buys.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use serde_json::Value;

use super::optimize::GateArgs;
use super::{network_mode, DevelOptions, Engines, Lto, ServeImageOptions, DEFAULT_BASE_IMAGE};
use crate::cpu::TargetCpu;
use crate::docker;
use crate::probe::{http, percentile};

mod inputs;
mod measure;
mod report;

use inputs::{optimized_model, request_body};
use measure::{measure, post};
pub use report::{BenchReport, SideResult};

/// The article's experiment: serve the same model from a portable image and from one
/// compiled for this CPU, send both the same requests (interleaved round by round, so the
/// machine's noise hits both alike), and compare latency, throughput, size and cold start.
/// Images are (re)built from the current sources first; Docker's layer cache makes that
/// quick when nothing changed.
#[derive(clap::Args)]
#[command(
    after_help = "Example: builder bench --model /tmp/models/efficientnet --image /tmp/models/cat.jpg"
)]
pub struct Args {
    /// Model folder holding numbered versions (<folder>/1/model.onnx), bind-mounted into both.
    #[arg(long, default_value = "/tmp/models/efficientnet")]
    model: PathBuf,
    /// Photo sent as {"b64": ...} (models with a signature.toml) [default: cat.jpg beside
    /// the model folder, as `make example-model` leaves it].
    #[arg(long, conflicts_with = "request")]
    image: Option<PathBuf>,
    /// A :predict JSON body to send instead of a photo.
    #[arg(long)]
    request: Option<PathBuf>,
    /// Timed requests per image.
    #[arg(long, short = 'n', default_value_t = 50)]
    requests: usize,
    /// Requests in flight at once (each round sends this many to one image, then the other).
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Untimed requests per image first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Times each image is started to time its cold start (container start to the first
    /// answered predict), alternating between the images; the median is reported (the lower
    /// middle one for an even count: an odd count is best).
    #[arg(long, default_value_t = 3)]
    cold_starts: usize,
    /// Use the existing images as they are instead of building them from the current sources.
    #[arg(long)]
    no_build: bool,
    /// Base image for the devel builds.
    #[arg(long, default_value = DEFAULT_BASE_IMAGE)]
    base_image: String,
    /// Network for the devel builds' RUN steps (see `builder devel --help`).
    #[arg(long, default_value = "host")]
    network: String,
    /// Serve the optimized image with the model made for this CPU (`builder optimize` on the
    /// model's latest version: int8 or onnxruntime's host graph where the accuracy gate passes,
    /// with --bf16 (or --precision bf16) also OpenVINO's bf16, which when it ships is served
    /// from an optimized image that carries OpenVINO; else fp32); the portable image keeps the
    /// model as it is. The gate flags below apply.
    #[arg(long)]
    optimize: bool,
    #[command(flatten)]
    gate: GateArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Runs the benchmark and prints its report (a table, or JSON with `--json`).
    pub async fn run(self) -> Result<()> {
        if self.requests == 0 || self.concurrency == 0 || self.cold_starts == 0 {
            bail!("--requests, --concurrency and --cold-starts must be at least 1");
        }
        self.gate.validate(self.optimize)?;
        let opts = BenchOptions {
            model: self.model,
            image: self.image,
            request: self.request,
            requests: self.requests,
            concurrency: self.concurrency,
            warmup: self.warmup,
            cold_starts: self.cold_starts,
            no_build: self.no_build,
            base_image: self.base_image,
            network: network_mode(self.network),
            optimize: self.optimize.then_some(self.gate),
        };
        let report = bench(&opts).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.render());
        }
        Ok(())
    }
}

/// What `bench` measures and how: the model, the request, the load, and how the images are had.
pub struct BenchOptions {
    /// Model folder holding numbered versions (e.g. /tmp/models/efficientnet).
    pub model: PathBuf,
    /// Photo to send as `{"b64": ...}` to a model with a signature.toml.
    pub image: Option<PathBuf>,
    /// A `:predict` JSON body to send instead.
    pub request: Option<PathBuf>,
    /// Timed requests per image.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Untimed requests per image first.
    pub warmup: usize,
    /// Starts per image to time the cold start (the median is reported); at least 1.
    pub cold_starts: usize,
    /// Reuse existing images instead of (cache-)building them from the current sources.
    pub no_build: bool,
    /// Base image for the devel builds.
    pub base_image: String,
    /// Network for the devel builds' RUN steps (`None`: the daemon's default).
    pub network: Option<String>,
    /// Optimize the model for this CPU for the optimized side, with this gate (`None`: both
    /// sides serve the model as it is).
    pub optimize: Option<GateArgs>,
}

/// Builds (or, with `no_build`, finds) the portable and the optimized serving images, serves the
/// model from both, and measures them side by side; the containers are removed whatever happens.
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
    let made_for_cpu = match &opts.optimize {
        Some(gate) => {
            let (folder, choice) = optimized_model(&model, gate)?;
            eprintln!("{}", choice.summary());
            Some((folder, choice))
        }
        None => None,
    };

    let mut images = Vec::new();
    for (label, target) in [
        ("portable", TargetCpu::Portable),
        ("optimized", TargetCpu::Native),
    ] {
        let devel = super::default_devel_tag(&target);
        // A model the optimizer shipped in bf16 needs OpenVINO in the optimized image.
        let engines = match &made_for_cpu {
            Some((_, choice)) if choice.needs_openvino() && label == "optimized" => {
                Engines::Openvino
            }
            _ => Engines::All,
        };
        let serving = match engines {
            Engines::Openvino => {
                super::with_model_suffix(&super::serving_tag_for(&devel), "openvino")
            }
            _ => super::serving_tag_for(&devel),
        };
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
            super::devel(&devel_opts).await?;
            let serve_opts = ServeImageOptions {
                devel_image: Some(devel.clone()),
                tag: Some(serving.clone()),
                embed_model: None,
                model_name: None,
                optimize: None,
                engine: engines,
                onnxruntime_library: None,
                openvino_libraries: None,
                no_cache: false,
                verbose: false,
            };
            super::serve_image(&serve_opts).await?;
        }
        let size = docker
            .inspect_image(&serving)
            .await
            .with_context(|| format!("cannot inspect {serving}"))?
            .size
            .unwrap_or(0);
        images.push((label, serving, size));
    }

    let served = |label: &str| match (&made_for_cpu, label) {
        (Some((folder, _)), "optimized") => folder.clone(),
        _ => model.clone(),
    };
    let mut containers: Vec<String> = Vec::new();
    let result = async {
        // Cold starts, each container alone on the machine and removed once it answered;
        // the order flips every round so that a warm page cache or a busy moment favours
        // neither image. The containers measured below are started afterwards, untimed.
        let mut colds: Vec<Vec<f64>> = vec![Vec::new(); images.len()];
        for round in 0..opts.cold_starts.max(1) {
            let mut order: Vec<usize> = (0..images.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (label, image, _) = &images[i];
                let (id, _, cold) =
                    start(&docker, image, &served(label), &body, &mut containers).await?;
                docker::remove_container(&docker, &id).await;
                containers.retain(|c| *c != id);
                colds[i].push(cold);
            }
        }
        let mut sides = Vec::new();
        for ((label, image, size), times) in images.iter().zip(colds) {
            let (_, port, _) =
                start(&docker, image, &served(label), &body, &mut containers).await?;
            let cold = percentile(&times, 50.0);
            let status = http(port, "GET", "/v1/models/bench", "")
                .map(|(_, status)| status["model_version_status"][0].clone())
                .unwrap_or(Value::Null);
            let field = |key: &str, default: &str| {
                status[key]
                    .as_str()
                    .map_or_else(|| default.to_string(), str::to_string)
            };
            let (engine, precision) = (field("engine", "unknown"), field("precision", "fp32"));
            eprintln!(
                "{label}: {image} answers its first request {cold:.0} ms after start (median of {}; {engine})",
                times.len()
            );
            sides.push((
                SideResult {
                    label,
                    image: image.clone(),
                    image_bytes: *size,
                    cold_start_ms: cold,
                    cold_starts_ms: times,
                    latencies_ms: Vec::new(),
                    busy_seconds: 0.0,
                    class: String::new(),
                    engine,
                    precision,
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
        optimization: made_for_cpu.map(|(_, choice)| choice),
    })
}

/// Starts `image` with the model bind-mounted and 8501 on a free localhost port; returns the
/// container, the port and the cold start (container start to first answered predict). The
/// container goes into `containers` as soon as it exists: the caller removes it, whether this
/// fails, is interrupted (Ctrl-C) or succeeds.
async fn start(
    docker: &Docker,
    image: &str,
    model: &Path,
    body: &str,
    containers: &mut Vec<String>,
) -> Result<(String, u16, f64)> {
    let started = Instant::now();
    let (id, ports) = docker::run_serving(
        docker,
        image,
        Some((model, "/models/bench")),
        &["MODEL_NAME=bench"],
    )
    .await?;
    containers.push(id.clone());
    let port = ports.rest;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match post(port, body) {
            Ok((200, _)) => return Ok((id, port, started.elapsed().as_secs_f64() * 1000.0)),
            // Still loading (503) or not listening yet: wait. Anything else is the answer.
            Ok((503, _)) | Err(_) => {}
            Ok((status, answer)) => {
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
