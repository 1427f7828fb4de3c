//! `make bench`: the engines alone, and what serving costs on top of them.
//!
//! For each CNN (batch 1): tract, our onnxruntime engine and onnxruntime's own Python
//! `InferenceSession.run` (scripts/ort_run_worker.py, in a child process) timed round by round;
//! each engine's own run vs a `:predict` round trip over real HTTP to the in-process server,
//! interleaved request by request so machine noise hits both alike; batch sizes x intra-op
//! threads; dynamic batching; the time to decode a 1x224x224x3 float JSON body; and gRPC vs
//! REST on the image model (`serving/grpc.rs`); every protocol, TF Serving's and the Open
//! Inference Protocol's, side by side (`serving/v2.rs`). With `--write FILE`, the figures replace the
//! runtime section of FILE (BENCHMARKS.md); `--only grpc` or `--only v2` runs and writes that
//! table alone.

#[path = "serving/grpc.rs"]
mod grpc;
#[path = "serving/v2.rs"]
mod v2;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime::engine::{self, EngineChoice, EngineKind, LoadOptions, Threads};
use runtime::models::find_latest_version;
use runtime::models::{load_and_warm_up, PoolOptions};
use runtime::pool::Batching;
use runtime::rest::decode::tensors_from_instances;
use runtime::rest::request::parse_predict_request;
use runtime::signature::{DType, Dim, Signature, TensorSpec};
use runtime::tensor::Tensor;
use runtime::{AppState, Limits, Servable, ServedModel};

const START: &str = "<!-- bench:runtime:start -->";
const END: &str = "<!-- bench:runtime:end -->";
const GRPC_START: &str = "<!-- bench:grpc:start -->";
const GRPC_END: &str = "<!-- bench:grpc:end -->";
const V2_START: &str = "<!-- bench:v2:start -->";
const V2_END: &str = "<!-- bench:v2:end -->";

struct Args {
    models: PathBuf,
    names: Vec<String>,
    requests: usize,
    write: Option<PathBuf>,
    /// A Python with onnxruntime and numpy, for the engines-alone table.
    python: Option<PathBuf>,
    /// Only the gRPC vs REST table.
    only_grpc: bool,
    /// Only the protocol overhead table (TF Serving's API and the Open Inference Protocol).
    only_v2: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        models: PathBuf::from(".cache/models"),
        names: vec![],
        requests: 50,
        write: None,
        python: None,
        only_grpc: false,
        only_v2: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--models" => args.models = it.next().context("--models DIR")?.into(),
            "--model" => args.names.push(it.next().context("--model NAME")?),
            "--requests" => args.requests = it.next().context("--requests N")?.parse()?,
            "--write" => args.write = Some(it.next().context("--write FILE")?.into()),
            "--python" => args.python = Some(it.next().context("--python PATH")?.into()),
            "--only" => match it.next().as_deref() {
                Some("grpc") => args.only_grpc = true,
                Some("v2") => args.only_v2 = true,
                other => bail!("--only takes grpc or v2, not {other:?}"),
            },
            "--bench" => {} // passed by `cargo bench`
            other => bail!(
                "unknown argument {other}; use --models DIR --model NAME --requests N --write FILE --python PATH --only grpc|v2"
            ),
        }
    }
    if args.names.is_empty() {
        args.names = vec![
            "efficientnet".into(),
            "resnet50".into(),
            "resnet50_free".into(),
            "squeezenet".into(),
        ];
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let threads = hostcpu::compute_cores();
    let engines = engine::available();
    if let Err(why) = engine::onnxruntime::library() {
        eprintln!("onnxruntime is not available ({why}): tract only (make onnxruntime)");
    }
    let python = args.python.clone();

    // Every protocol, TF Serving's and the Open Inference Protocol's, on the same two models.
    let mut v2_report = v2::header(args.requests);
    for name in ["efficientnet", "resnet50"] {
        let dir = args.models.join(name);
        if !dir.exists() {
            eprintln!(
                "skipping {name} in the protocol table: {} is missing (make bench-models)",
                dir.display()
            );
            continue;
        }
        for &kind in &engines {
            v2_report.push_str(&rt.block_on(v2::rows(&dir, name, kind, threads, args.requests))?);
        }
    }
    println!("{v2_report}");
    if let Some(path) = &args.write {
        write_section(
            path,
            &v2_report,
            (V2_START, V2_END),
            "Runtime: TF Serving's API and the Open Inference Protocol",
        )?;
    }
    if args.only_v2 {
        return Ok(());
    }

    // gRPC vs REST: the walk-through's image model (it has the signature.toml) and ResNet-50,
    // whose input tensor goes straight to the engine.
    let mut grpc_report = grpc::header(args.requests);
    for name in ["efficientnet", "resnet50"] {
        let dir = args.models.join(name);
        if !dir.exists() {
            eprintln!(
                "skipping {name} in the gRPC table: {} is missing (make bench-models)",
                dir.display()
            );
            continue;
        }
        for &kind in &engines {
            grpc_report.push_str(&rt.block_on(grpc::rows(
                &dir,
                name,
                kind,
                threads,
                args.requests,
            ))?);
        }
    }
    println!("{grpc_report}");
    if let Some(path) = &args.write {
        write_section(
            path,
            &grpc_report,
            (GRPC_START, GRPC_END),
            "Runtime: gRPC vs REST",
        )?;
    }
    if args.only_grpc {
        return Ok(());
    }

    let mut report = String::new();
    report.push_str(&format!(
        "Command: `make bench` (`cargo bench -p runtime --bench serving`), {} requests per model, \
         batch 1.\n\nMachine: {}\n\n### Engines alone, batch 1\n\n\
         A lone run on the same random input, milliseconds, p50 of {} rounds; each round runs \
         every engine and thread count in turn. `ours` is our onnxruntime engine (the `ort` crate, \
         libonnxruntime {}); `python` is onnxruntime's own Python `InferenceSession.run` \
         (scripts/ort_run_worker.py, onnxruntime from scripts/requirements-models.txt) with the \
         same session settings.\n\n",
        args.requests,
        machine(),
        args.requests,
        engine::onnxruntime::library().map_or("-".into(), |l| l.version.clone()),
    ));
    report.push_str("| model | threads | tract | ours (onnxruntime) | python onnxruntime | ours / python | tract / ours |\n");
    report.push_str("|---|---|---|---|---|---|---|\n");
    for name in &args.names {
        let dir = args.models.join(name);
        if !dir.exists() {
            eprintln!(
                "skipping {name}: {} is missing (make bench-models)",
                dir.display()
            );
            continue;
        }
        report.push_str(&engines_alone(
            &dir,
            name,
            threads,
            args.requests,
            python.as_deref(),
        )?);
    }
    report.push_str(&format!(
        "\n### Serving overhead\n\n\
         Each engine's own batch-1 run vs a `:predict` round trip to an in-process server on that \
         engine (one inference worker, {threads} intra-op thread(s)), interleaved request by \
         request. An image model gets the cat photo as b64 JPEG (decode + resize included in \
         the overhead).\n\n"
    ));
    report.push_str("| model | engine | body | engine run p50 | served :predict p50 | overhead p50 | overhead / inference | engine mean | served mean |\n");
    report.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for name in &args.names {
        let dir = args.models.join(name);
        if !dir.exists() {
            continue;
        }
        for &kind in &engines {
            report.push_str(&rt.block_on(bench_model(&dir, name, kind, threads, args.requests))?);
        }
    }
    report.push_str(&format!(
        "\n### Engine alone: batch size and intra-op threads\n\n\
         Each engine's run at each batch size (tract: on a plan made for that size, what \
         `--enable_batching` runs merged requests on), milliseconds per instance, p50 of {ROUNDS} \
         rounds, each round running every (engine, threads, batch) in turn; 1 intra-op thread vs \
         {threads} (`--inference_threads`).\n\n"
    ));
    report.push_str(
        "| model | engine | threads | batch 1 | batch 2 | batch 4 | batch 8 | best batch vs batch 1 |\n",
    );
    report.push_str("|---|---|---|---|---|---|---|---|\n");
    for name in &args.names {
        let dir = args.models.join(name);
        if dir.exists() {
            report.push_str(&engine_rows(&dir, name, &engines, threads)?);
        }
    }
    report.push_str(&format!(
        "\n### Dynamic batching, served\n\n\
         Two in-process servers on the same model and engine ({threads} intra-op threads at most, \
         the engine's default workers), one plain, one with `--enable_batching --max_batch_size 8 \
         --batch_timeout_micros {BATCH_TIMEOUT_MICROS}`; rounds of C concurrent `:predict` requests \
         (batch 1 each), the two servers in turn, order alternating.\n\n"
    ));
    report.push_str("| model | engine | concurrency | plain req/s | batching req/s | ratio | plain p50 | batching p50 |\n");
    report.push_str("|---|---|---|---|---|---|---|---|\n");
    for name in &args.names {
        let dir = args.models.join(name);
        if dir.exists() {
            for &kind in &engines {
                report.push_str(&rt.block_on(batching_rows(
                    &dir,
                    name,
                    kind,
                    threads,
                    args.requests,
                ))?);
            }
        }
    }
    let (parse, convert) = decode_time(50)?;
    report.push_str(&format!(
        "\nJSON decode of a 1x224x224x3 float32 `instances` body ({:.2} MB): parse {:.2} ms, parse + tensor {:.2} ms (p50 of 50).\n",
        nhwc_body().len() as f64 / 1e6,
        ms(parse),
        ms(convert)
    ));
    println!("\n{report}");
    if let Some(path) = args.write {
        write_section(&path, &report, (START, END), "Runtime: serving overhead")?;
        println!("(written to {})", path.display());
    }
    Ok(())
}

/// Loads `kind` with a fixed thread count, warmed up.
fn load_engine(
    kind: EngineKind,
    path: &Path,
    threads: usize,
    batch_sizes: &[usize],
) -> Result<engine::Loaded> {
    let opts = LoadOptions {
        batch_sizes: batch_sizes.to_vec(),
        threads: Threads::Fixed(threads),
        ..LoadOptions::default()
    };
    Ok(engine::load(kind, path, &opts)?)
}

/// tract's intra-op threads are process-wide: set them before each of its runs.
fn before_run(kind: EngineKind, threads: usize) {
    if kind == EngineKind::Tract {
        engine::tract::set_intra_op_threads(threads);
    }
}

/// One timed run of a contender.
type TimedRun = Box<dyn FnMut() -> Result<Duration>>;

/// tract vs our onnxruntime engine vs onnxruntime's Python run, batch 1, 1 and `threads`
/// intra-op threads, round by round.
fn engines_alone(
    dir: &Path,
    name: &str,
    threads: usize,
    n: usize,
    python: Option<&Path>,
) -> Result<String> {
    let found = find_latest_version(dir)?;
    let mut rows = String::new();
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    for t in counts {
        let mut contenders: Vec<(String, TimedRun)> = Vec::new();
        let mut input = None;
        for kind in engine::available() {
            let loaded = load_engine(kind, &found.path, t, &[])?;
            let x = random_input(loaded.backend.signature())?;
            input.get_or_insert_with(|| x.clone());
            let mut runner = loaded.backend.runner().map_err(anyhow::Error::msg)?;
            contenders.push((
                kind.name().into(),
                Box::new(move || {
                    before_run(kind, t);
                    let started = Instant::now();
                    runner.run(vec![x.clone()]).map_err(anyhow::Error::msg)?;
                    Ok(started.elapsed())
                }),
            ));
        }
        if let (Some(python), Some(x)) = (python, &input) {
            let mut worker = PythonWorker::start(python, &found.path, t, x)?;
            contenders.push(("python".into(), Box::new(move || worker.run())));
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        for round in 0..=n {
            for (k, (_, run)) in contenders.iter_mut().enumerate() {
                let took = run()?;
                if round > 0 {
                    times[k].push(took);
                }
            }
        }
        let p = |who: &str| {
            contenders
                .iter()
                .position(|(n, _)| n == who)
                .map(|k| p50(&times[k]))
        };
        let cell = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} ms", ms(d)));
        let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
            _ => "-".into(),
        };
        let (tract, ours, py) = (p("tract"), p("onnxruntime"), p("python"));
        rows.push_str(&format!(
            "| {name} | {t} | {} | {} | {} | {} | {} |\n",
            cell(tract),
            cell(ours),
            cell(py),
            ratio(ours, py),
            ratio(tract, ours)
        ));
    }
    Ok(rows)
}

/// onnxruntime's Python API in a child process (scripts/ort_run_worker.py): each `run` asks it
/// for one timed `InferenceSession.run` on the input given at start.
struct PythonWorker {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
}

impl PythonWorker {
    fn start(python: &Path, model: &Path, threads: usize, input: &Tensor) -> Result<PythonWorker> {
        let values = input
            .as_slice::<f32>()
            .context("the input is not float32")?;
        let raw =
            std::env::temp_dir().join(format!("onnx-serving-bench-{}.f32", std::process::id()));
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&raw, bytes)?;
        let shape: Vec<String> = input.shape().iter().map(|d| d.to_string()).collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ort_run_worker.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg(model)
            .arg(&raw)
            .arg(shape.join(","))
            .arg(threads.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", python.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut worker = PythonWorker {
            child,
            reader: BufReader::new(stdout),
        };
        worker.run()?; // waits for the session, and warms it up
        let _ = std::fs::remove_file(&raw);
        Ok(worker)
    }

    fn run(&mut self) -> Result<Duration> {
        let stdin = self.child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(b"run\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let seconds: f64 = line
            .trim()
            .parse()
            .with_context(|| format!("ort_run_worker.py said {line:?}"))?;
        Ok(Duration::from_secs_f64(seconds))
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The model in `dir` on engine `kind` twice: loaded alone (for its own runs) and served (one
/// inference worker, `threads` intra-op threads), both warmed up.
fn engine_and_served(
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

async fn bench_model(
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

fn engine_choice(kind: EngineKind) -> EngineChoice {
    match kind {
        EngineKind::Tract => EngineChoice::Tract,
        EngineKind::Onnxruntime => EngineChoice::Onnxruntime,
    }
}

const ROUNDS: usize = 7;
const BATCH_SIZES: [usize; 4] = [1, 2, 4, 8];
const BATCH_TIMEOUT_MICROS: u64 = 2000;

/// Per-instance time of each engine's run at each batch size, with 1 and `threads` intra-op
/// threads, every (engine, threads, batch) once per round.
fn engine_rows(dir: &Path, name: &str, engines: &[EngineKind], threads: usize) -> Result<String> {
    let found = find_latest_version(dir)?;
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    // (engine, threads, runner, inputs per batch size)
    let mut cases = Vec::new();
    for &kind in engines {
        for &t in &counts {
            let loaded = load_engine(kind, &found.path, t, &BATCH_SIZES)?;
            if !loaded.backend.signature().inputs[0].has_dynamic_batch() {
                return Ok(format!(
                    "| {name} | - | - | fixed batch: no batch plans | | | | |\n"
                ));
            }
            let one = random_input(loaded.backend.signature())?;
            let inputs: Vec<Tensor> = BATCH_SIZES
                .iter()
                .map(|&n| Tensor::concat_rows(&vec![one.clone(); n]))
                .collect::<Result<_, _>>()?;
            let runner = loaded.backend.runner().map_err(anyhow::Error::msg)?;
            cases.push((kind, t, runner, inputs));
        }
    }
    // times[c][k]: case c, batch size k
    let mut times = vec![vec![Vec::new(); BATCH_SIZES.len()]; cases.len()];
    for round in 0..=ROUNDS {
        for (c, (kind, t, runner, inputs)) in cases.iter_mut().enumerate() {
            for (k, x) in inputs.iter().enumerate() {
                before_run(*kind, *t);
                let started = Instant::now();
                runner.run(vec![x.clone()]).map_err(anyhow::Error::msg)?;
                if round > 0 {
                    // round 0 warms each plan up
                    times[c][k].push(started.elapsed() / BATCH_SIZES[k] as u32);
                }
            }
        }
    }
    let mut rows = String::new();
    for ((kind, t, _, _), times) in cases.iter().zip(&times) {
        let per: Vec<Duration> = times.iter().map(|t| p50(t)).collect();
        let best = per.iter().skip(1).min().copied().unwrap_or(per[0]);
        rows.push_str(&format!(
            "| {name} | {kind} | {t} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x |\n",
            ms(per[0]),
            ms(per[1]),
            ms(per[2]),
            ms(per[3]),
            per[0].as_secs_f64() / best.as_secs_f64()
        ));
    }
    Ok(rows)
}

/// Throughput of a plain server and a batching one on the same model at concurrency 1, 4, 16.
async fn batching_rows(
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

/// Serves `served` as `name` on a free loopback port, in this process; returns the port.
async fn serve_in_process(name: &str, mut served: ServedModel) -> Result<u16> {
    served.name = name.into();
    serve_rest(AppState::serving(
        name,
        served.version,
        Servable::Available(Arc::new(served)),
        Limits::default(),
    ))
    .await
}

/// Serves `state`'s REST API on a free loopback port, in this process; returns the port.
async fn serve_rest(state: Arc<AppState>) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, runtime::app(state)).await });
    Ok(port)
}

/// Deterministic pseudo-random values in [0, 1) of the first input's shape at batch 1.
fn random_input(sig: &Signature) -> Result<Tensor> {
    let spec = &sig.inputs[0];
    let shape: Vec<usize> = spec.shape.iter().map(|d| d.fixed().unwrap_or(1)).collect();
    let len: usize = shape.iter().product();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<f32> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Ok(Tensor::from_vec(shape, data)?)
}

fn instances_body(input: &Tensor) -> Result<Vec<u8>> {
    let values = input
        .as_slice::<f32>()
        .context("the input is not float32")?;
    let nested = to_json(values, &input.shape()[1..]);
    Ok(serde_json::to_vec(
        &serde_json::json!({ "instances": [nested] }),
    )?)
}

/// The request a client sends: the photo beside the model folders as `{"b64": JPEG}` for a model
/// with an image signature (what the walk-through sends), else `input` as nested JSON.
fn request_body(model_dir: &Path, image: bool, input: &Tensor) -> Result<Vec<u8>> {
    if !image {
        return instances_body(input);
    }
    use base64::Engine as _;
    let photo = model_dir.with_file_name("cat.jpg");
    let jpeg = std::fs::read(&photo)
        .with_context(|| format!("cannot read {} (make bench-models)", photo.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    Ok(serde_json::to_vec(
        &serde_json::json!({ "instances": [{ "b64": b64 }] }),
    )?)
}

/// Row-major `values` of `shape` as nested JSON arrays.
fn to_json(values: &[f32], shape: &[usize]) -> serde_json::Value {
    let Some((&n, inner)) = shape.split_first() else {
        return serde_json::json!(values.first().copied().unwrap_or_default());
    };
    let per: usize = inner.iter().product();
    serde_json::Value::Array(
        (0..n)
            .map(|i| to_json(&values[i * per..(i + 1) * per], inner))
            .collect(),
    )
}

fn nhwc_body() -> Vec<u8> {
    let spec = TensorSpec {
        name: "x".into(),
        dtype: DType::F32,
        shape: vec![
            Dim::Fixed(1),
            Dim::Fixed(224),
            Dim::Fixed(224),
            Dim::Fixed(3),
        ],
    };
    let sig = Signature {
        inputs: vec![spec],
        outputs: vec![],
    };
    random_input(&sig)
        .and_then(|t| instances_body(&t))
        .unwrap_or_default()
}

fn decode_time(n: usize) -> Result<(Duration, Duration)> {
    let body = nhwc_body();
    let sig = Signature {
        inputs: vec![TensorSpec {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![
                Dim::Dynamic("batch".into()),
                Dim::Fixed(224),
                Dim::Fixed(224),
                Dim::Fixed(3),
            ],
        }],
        outputs: vec![],
    };
    let (mut parse, mut full) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let request = parse_predict_request(&body).map_err(anyhow::Error::msg)?;
        parse.push(t.elapsed());
        let t = Instant::now();
        let request2 = parse_predict_request(&body).map_err(anyhow::Error::msg)?;
        let tensors =
            tensors_from_instances(&sig, request2.instances.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        full.push(t.elapsed());
        assert_eq!(tensors[0].shape(), &[1, 224, 224, 3]);
        drop(request);
    }
    Ok((p50(&parse), p50(&full)))
}

/// A keep-alive HTTP/1.1 client: enough for Content-Length answers from our own server.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn post(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        self.post_with(path, body, &[])
    }

    /// As `post`, with extra request headers.
    fn post_with(
        &mut self,
        path: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> Result<Vec<u8>> {
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(self.writer, "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n", body.len())?;
        self.writer.write_all(body)?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let mut answer = vec![0; length.context("answer without Content-Length")?];
        self.reader.read_exact(&mut answer)?;
        Ok(answer)
    }
}

fn p50(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len() as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = sysinfo::System::new().map_or(0, |mut sys| {
        sys.refresh_memory();
        sys.total_memory()
    });
    format!(
        "{cpu}, {} logical / {} physical cores, {:.0} GiB RAM",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        sysinfo::System::physical_core_count().unwrap_or(0),
        memory as f64 / (1u64 << 30) as f64
    )
}

/// Replaces the text between the `markers` in `path` (or appends it as a `heading` section).
fn write_section(path: &Path, report: &str, markers: (&str, &str), heading: &str) -> Result<()> {
    let (start, end) = markers;
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{start}\n{report}{end}");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n## {heading}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}
