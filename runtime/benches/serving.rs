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
//! table alone. The engines' tables are in `serving/engines.rs`, the served round trips in
//! `serving/served.rs`, what they share in `serving/common.rs`.

#[path = "serving/common.rs"]
mod common;
#[path = "serving/engines.rs"]
mod engines;
#[path = "serving/grpc.rs"]
mod grpc;
#[path = "serving/served.rs"]
mod served;
#[path = "serving/v2.rs"]
mod v2;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use runtime::engine;

pub(crate) use common::*;
pub(crate) use engines::*;
pub(crate) use served::*;

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

const ROUNDS: usize = 7;
const BATCH_SIZES: [usize; 4] = [1, 2, 4, 8];
const BATCH_TIMEOUT_MICROS: u64 = 2000;
