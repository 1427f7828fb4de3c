//! The engines alone: tract, our onnxruntime engine and onnxruntime's own Python run, batch 1
//! and each batch size, 1 and every intra-op thread, round by round.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::engine::{self, EngineChoice, EngineKind, LoadOptions, Threads};
use runtime::models::find_latest_version;
use runtime::tensor::Tensor;

use super::*;

/// Loads `kind` with a fixed thread count, warmed up.
pub(crate) fn load_engine(
    kind: EngineKind,
    path: &Path,
    threads: usize,
    batch_sizes: &[usize],
) -> Result<engine::Loaded> {
    let opts = LoadOptions {
        batch_sizes: batch_sizes.to_vec(),
        threads: Threads::Fixed(threads),
        // Idle threads sleep, as the served sessions' do under load.
        ort_spinning: false,
        ..LoadOptions::default()
    };
    Ok(engine::load(kind, path, &opts)?)
}

/// tract's intra-op threads are process-wide: set them before each of its runs.
pub(crate) fn before_run(kind: EngineKind, threads: usize) {
    if kind == EngineKind::Tract {
        engine::tract::set_intra_op_threads(threads);
    }
}

/// One timed run of a contender.
pub(crate) type TimedRun = Box<dyn FnMut() -> Result<Duration>>;

/// tract vs our onnxruntime engine vs onnxruntime's Python run, batch 1, 1 and `threads`
/// intra-op threads, round by round.
pub(crate) fn engines_alone(
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
pub(crate) struct PythonWorker {
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

pub(crate) fn engine_choice(kind: EngineKind) -> EngineChoice {
    match kind {
        EngineKind::Tract => EngineChoice::Tract,
        EngineKind::Onnxruntime => EngineChoice::Onnxruntime,
        EngineKind::Openvino => EngineChoice::Openvino,
    }
}

/// Per-instance time of each engine's run at each batch size, with 1 and `threads` intra-op
/// threads, every (engine, threads, batch) once per round.
pub(crate) fn engine_rows(
    dir: &Path,
    name: &str,
    engines: &[EngineKind],
    threads: usize,
) -> Result<String> {
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
