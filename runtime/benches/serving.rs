//! `make bench`: what serving costs on top of inference.
//!
//! For each CNN (batch 1): tract's own run vs a `:predict` round trip over real HTTP to the
//! in-process server, interleaved request by request so machine noise hits both alike; the
//! overhead as a ratio of inference time; and the time to decode a 1x224x224x3 float JSON body.
//! With `--write FILE`, the figures replace the runtime section of FILE (BENCHMARKS.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime::api::codec::tensors_from_instances;
use runtime::api::request::parse_predict_request;
use runtime::model::{
    find_latest_version, load_onnx, zero_inputs, DType, Dim, Signature, TensorSpec,
};
use runtime::server::load_and_warm_up;
use runtime::{AppState, Limits, ModelState};
use tract_onnx::prelude::*;

const START: &str = "<!-- bench:runtime:start -->";
const END: &str = "<!-- bench:runtime:end -->";

struct Args {
    models: PathBuf,
    names: Vec<String>,
    requests: usize,
    write: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        models: PathBuf::from(".cache/models"),
        names: vec![],
        requests: 50,
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--models" => args.models = it.next().context("--models DIR")?.into(),
            "--model" => args.names.push(it.next().context("--model NAME")?),
            "--requests" => args.requests = it.next().context("--requests N")?.parse()?,
            "--write" => args.write = Some(it.next().context("--write FILE")?.into()),
            "--bench" => {} // passed by `cargo bench`
            other => bail!(
                "unknown argument {other}; use --models DIR --model NAME --requests N --write FILE"
            ),
        }
    }
    if args.names.is_empty() {
        args.names = vec!["resnet50".into(), "squeezenet".into()];
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let threads = runtime::config::compute_cores();
    runtime::infer::set_intra_op_threads(threads);

    let mut report = String::new();
    report.push_str(&format!(
        "Command: `make bench` (`cargo bench -p runtime --bench serving`), {} requests per model, batch 1, \
         {threads} intra-op thread(s), one inference worker.\n\nMachine: {}\n\n",
        args.requests,
        machine()
    ));
    report.push_str("| model | body | tract run p50 | served :predict p50 | overhead p50 | overhead / inference | tract mean | served mean |\n");
    report.push_str("|---|---|---|---|---|---|---|---|\n");
    for name in &args.names {
        let dir = args.models.join(name);
        if !dir.exists() {
            eprintln!(
                "skipping {name}: {} is missing (make bench-models)",
                dir.display()
            );
            continue;
        }
        let row = rt.block_on(bench_model(&dir, name, args.requests))?;
        report.push_str(&row);
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
        write_section(&path, &report)?;
        println!("(written to {})", path.display());
    }
    Ok(())
}

async fn bench_model(dir: &Path, name: &str, n: usize) -> Result<String> {
    let found = find_latest_version(dir)?;
    let direct = load_onnx(&found.path)?;
    let served = load_and_warm_up(&found, 1, 4)?;
    let signature = served.signature.clone();
    let state = AppState::new(
        name,
        ModelState::Available(Arc::new(served)),
        Limits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, runtime::app(state)).await });

    let input = random_input(&signature)?;
    let body = instances_body(&input)?;
    let path = format!("/v1/models/{name}:predict");
    // The plan the server runs single requests on.
    let plan = direct.plan.for_batch(Some(1)).clone();
    let inputs: TVec<TValue> = tvec!(input.into_tvalue());
    let warm = zero_inputs(&direct.signature, 1)?;
    plan.run(warm)?;

    let (direct_times, served_times) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut client = Client::connect(port)?;
        client.post(&path, &body)?; // warm the connection and the worker
        let (mut d, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            plan.run(inputs.clone())?;
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
        "| {name} | {:.2} MB | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} % | {:.1} ms | {:.1} ms |\n",
        instances_len(&signature) as f64 / 1e6,
        ms(dp),
        ms(sp),
        ms(overhead),
        100.0 * overhead.as_secs_f64() / dp.as_secs_f64(),
        ms(mean(&direct_times)),
        ms(mean(&served_times)),
    ))
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
    Tensor::from_shape(&shape, &data)
}

fn instances_body(input: &Tensor) -> Result<Vec<u8>> {
    let view = input.to_plain_array_view::<f32>()?;
    let first = view.index_axis(tract_onnx::tract_core::ndarray::Axis(0), 0);
    let nested = to_json(first);
    Ok(serde_json::to_vec(
        &serde_json::json!({ "instances": [nested] }),
    )?)
}

fn instances_len(sig: &Signature) -> usize {
    random_input(sig)
        .and_then(|t| instances_body(&t))
        .map(|b| b.len())
        .unwrap_or(0)
}

fn to_json(view: tract_onnx::tract_core::ndarray::ArrayViewD<'_, f32>) -> serde_json::Value {
    if view.ndim() == 0 {
        return serde_json::json!(view.iter().next().copied().unwrap_or_default());
    }
    serde_json::Value::Array(view.outer_iter().map(to_json).collect())
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
        write!(self.writer, "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())?;
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

/// Replaces the text between our markers in `path` (or appends the section).
fn write_section(path: &Path, report: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{START}\n{report}{END}");
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &old[..a], &old[b + END.len()..]),
        _ => format!(
            "{}\n## Runtime: serving overhead\n\n{section}\n",
            old.trim_end()
        ),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}
