//! `builder optimize`: the model itself made for this host's CPU, accuracy-checked. Runs
//! `scripts/optimize_model.py` (onnxruntime's quantizer, in the workspace's Python venv, on the
//! host: nothing is fetched inside a Docker build and the serving image stays slim), which
//! tries fp32, onnxruntime's graph optimized for this host, int8 and (with `--bf16`, for images
//! that carry OpenVINO) OpenVINO computing in bf16, gates each on held-out
//! photos against fp32, times the survivors here and keeps the fastest that beats fp32 by more
//! than 5 % (else fp32). The result is a version folder: `model.onnx`, `optimization.json` (the
//! choice, the gate's figures, the speed-up), the signature and labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::LABEL_PREFIX;
use crate::context::find_workspace;

/// Make a model faster on this host's CPU (int8 quantization, onnxruntime's host-optimized graph,
/// with --bf16 OpenVINO's bf16) where an accuracy gate on held-out photos passes; else keep fp32 and say why. Writes a
/// version folder (model.onnx, optimization.json, signature.toml, labels) to serve or to embed
/// with `builder serve-image --embed-model OUT/model.onnx` (or `serve-image --optimize`).
#[derive(clap::Args)]
pub struct Args {
    /// The model: a version folder holding model.onnx (and signature.toml, labels.txt), or the
    /// .onnx file in it.
    model: PathBuf,
    /// Output folder (a version folder, e.g. /tmp/models/resnet-opt/1).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    gate: GateArgs,
}

/// What the optimizer tries and what it must pass (shared by `optimize` and `serve-image`).
#[derive(clap::Args, Clone, Debug)]
pub struct GateArgs {
    /// Precision to search: auto (the fastest that passes the gate), fp32 (no search), int8
    /// (int8 if it passes, else fp32), bf16 (OpenVINO's bf16 if it passes, else fp32).
    #[arg(long, value_parser = ["auto", "fp32", "int8", "bf16"], default_value = "auto")]
    pub precision: String,
    /// Under --precision auto, also try bf16: the fp32 model computed in bfloat16 by
    /// OpenVINO's CPU plugin, on CPUs with AMX or AVX512-BF16 (EfficientNet-Lite0 on a 2-core
    /// AMX host: 2.13x onnxruntime's fp32 at one thread, 1.63x at two, passing the default
    /// gate). A model that ships bf16 needs an image that carries OpenVINO: `serve-image
    /// --engine openvino` sets this.
    #[arg(long)]
    pub bf16: bool,
    /// Photos (JPEG/PNG) for calibration and the held-out accuracy check, split by a seeded
    /// hash, never overlapping [default: .cache/calibration, which `make calibration-photos`
    /// fetches]; .npz request files for models without an image signature.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Held-out photos for the accuracy check, instead of a share of --calibration.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Least top-1 agreement with fp32 on the held-out photos.
    #[arg(long, default_value_t = 0.98)]
    pub min_top1: f64,
    /// Least top-5 overlap with fp32 (share of fp32's five classes also in the candidate's).
    #[arg(long, default_value_t = 0.9)]
    pub min_top5: f64,
    /// Least top-1 agreement on the held-out photos where fp32 itself is confident (p >= 0.3).
    #[arg(long, default_value_t = 0.99)]
    pub min_confident_top1: f64,
    /// Largest |difference| allowed between a candidate's and fp32's outputs [default: 0.15 on
    /// a classifier's probabilities; 2 % of fp32's largest |output| for other models].
    #[arg(long)]
    pub max_abs_diff: Option<f64>,
    /// Least held-out inputs an int8 model is judged on.
    #[arg(long, default_value_t = 100)]
    pub min_images: u32,
    /// Python with onnx and onnxruntime [default: $ONNX_SERVING_PYTHON, else the workspace's
    /// .cache/venv, which `make setup`'s targets create].
    #[arg(long)]
    pub python: Option<PathBuf>,
}

impl GateArgs {
    /// Errors on gate flags that would be silently ignored: any of them on a command that
    /// runs the optimizer only with `--optimize` when it was not given (`optimize` is false),
    /// and `--bf16`, which widens the `auto` search, beside `--precision int8` or `fp32`.
    pub fn validate(&self, optimize: bool) -> Result<()> {
        if !optimize && (self.bf16 || self.precision != "auto") {
            bail!("--bf16 and --precision choose what the optimizer tries: add --optimize");
        }
        if self.bf16 && !matches!(self.precision.as_str(), "auto" | "bf16") {
            bail!(
                "--bf16 adds bf16 to --precision auto's search; with --precision {} it would be \
                 ignored: drop one of them (--precision bf16 tries bf16 alone)",
                self.precision
            );
        }
        Ok(())
    }

    /// Whether the search may ship bf16 (which needs OpenVINO in the image).
    pub fn may_ship_bf16(&self) -> bool {
        self.precision == "bf16" || (self.bf16 && self.precision == "auto")
    }
}

impl Args {
    /// Optimizes the model and prints the output folder.
    pub async fn run(self) -> Result<()> {
        self.gate.validate(true)?;
        let choice = optimize(&self.model, &self.out, &self.gate)?;
        eprint!("{}", choice.candidates_table());
        eprintln!("{}", choice.summary());
        println!("{}", self.out.display());
        Ok(())
    }
}

/// What `optimize` chose, from the `optimization.json` it wrote.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The whole `optimization.json`.
    pub report: Value,
}

impl Choice {
    /// Reads `optimization.json` in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Choice>> {
        let file = dir.join("optimization.json");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        Ok(Some(Choice { report }))
    }

    fn text(&self, pointer: &str) -> String {
        match self.report.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }

    /// Whether the variant that ships runs on OpenVINO (bf16): the image must carry it.
    pub fn needs_openvino(&self) -> bool {
        let variant = self.text("/variant");
        self.text(&format!("/candidates/{variant}/engine")) == "openvino"
    }

    /// `Precision int8 (variant int8): <the optimizer's reason>`; the reason gives the speed-up
    /// at each thread count timed (the runtime picks its own threads by the load).
    pub fn summary(&self) -> String {
        format!(
            "Precision {} (variant {}): {}",
            self.text("/precision"),
            self.text("/variant"),
            self.text("/reason")
        )
    }

    /// Every candidate's gate figures (top-1 agreement and top-5 overlap with fp32 on the
    /// held-out inputs, the largest probability difference) and timings (engine alone, batch 1,
    /// ms per run and speed-up over fp32 at the same threads), one line each, the chosen one
    /// marked, then why each failure failed.
    pub fn candidates_table(&self) -> String {
        let Some(Value::Object(candidates)) = self.report.pointer("/candidates") else {
            return String::new();
        };
        let chosen = self.text("/variant");
        let num = |v: Option<&Value>, digits: usize| {
            v.and_then(Value::as_f64)
                .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
        };
        let mut threads: Vec<String> = candidates
            .values()
            .filter_map(|c| c.get("timing")?.as_object())
            .flat_map(|t| t.keys().filter(|k| k.starts_with("threads_")).cloned())
            .collect();
        threads.sort();
        threads.dedup();
        let mut out = format!(
            "{:<16} {:>5} {:>6} {:>6} {:>8}",
            "candidate", "gate", "top-1", "top-5", "max|dp|"
        );
        for t in &threads {
            out += &format!(" {:>17}", t.replace("threads_", "ms, threads "));
        }
        out.push('\n');
        let mut reasons = String::new();
        for (name, c) in candidates {
            let gate = c.get("gate");
            let verdict = match gate.and_then(|g| g.get("passed")).and_then(Value::as_bool) {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            };
            out += &format!(
                "{:<16} {:>5} {:>6} {:>6} {:>8}",
                if *name == chosen {
                    format!("{name} *")
                } else {
                    name.clone()
                },
                verdict,
                num(gate.and_then(|g| g.get("top1")), 3),
                num(gate.and_then(|g| g.get("top5")), 3),
                num(gate.and_then(|g| g.get("max_abs_diff")), 3)
            );
            for t in &threads {
                let timing = c.get("timing").and_then(|x| x.get(t));
                let cell = match timing {
                    Some(f) => format!("{} x{}", num(f.get("ms"), 2), num(f.get("speedup"), 2)),
                    None => "-".into(),
                };
                out += &format!(" {cell:>17}");
            }
            out.push('\n');
            if let Some(Value::Array(why)) = gate.and_then(|g| g.get("reasons")) {
                if !why.is_empty() {
                    let why: Vec<&str> = why.iter().filter_map(Value::as_str).collect();
                    reasons += &format!("  {name}: {}\n", why.join("; "));
                }
            }
        }
        if !reasons.is_empty() {
            out += &format!("refused by the gate:\n{reasons}");
        }
        out + "(* ships; times: engine alone, batch 1, x = speed-up over fp32 at the same threads)\n"
    }

    /// The host's CPU flags the optimizer looked at and found (`avx2 fma avx512_vnni`), as
    /// /proc/cpuinfo names them: what an int8 model's rounding, and so its gate, depended on.
    fn host_cpu_flags(&self) -> String {
        let Some(Value::Object(flags)) = self.report.pointer("/host_cpu_flags") else {
            return String::new();
        };
        flags
            .iter()
            .filter(|(k, v)| v.as_bool() == Some(true) && k.as_str() != "vnni_or_amx")
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Image labels recording the choice: precision, variant, quantizer settings, calibration
    /// set sha256, the gate's figures and the measured speed-up (`io.onnx-serving.*`; the least
    /// over the thread counts timed, as the runtime picks its threads by the load).
    pub fn labels(&self) -> HashMap<String, String> {
        let variant = self.text("/variant");
        let c = format!("/candidates/{variant}");
        let pairs = [
            ("precision", self.text("/precision")),
            ("optimization.variant", variant.clone()),
            ("optimization.reason", self.text("/reason")),
            ("optimization.onnxruntime", self.text("/onnxruntime")),
            ("optimization.openvino", self.text(&format!("{c}/openvino"))),
            (
                "optimization.calibration-sha256",
                self.text("/data/calibration_sha256"),
            ),
            (
                "optimization.gate-top1",
                self.text(&format!("{c}/gate/top1")),
            ),
            (
                "optimization.gate-top5",
                self.text(&format!("{c}/gate/top5")),
            ),
            (
                "optimization.gate-inputs",
                self.text(&format!("{c}/gate/n")),
            ),
            ("optimization.speedup", self.text("/speedup")),
            ("optimization.host-cpu-flags", self.host_cpu_flags()),
            (
                "optimization.quantizer",
                self.report
                    .pointer(&format!("{c}/quantizer"))
                    .map(Value::to_string)
                    .unwrap_or_default(),
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v))
            .collect()
    }
}

/// Runs the optimizer on `model` into `<workspace>/.cache/optimized/<name>/1`, the folder
/// `<name>` cleared first so only the new version is there to serve; returns that version
/// folder and the choice. Errors: `name` is not a plain folder name, or as `optimize`.
pub fn optimize_into_cache(model: &Path, name: &str, gate: &GateArgs) -> Result<(PathBuf, Choice)> {
    let plain = matches!(
        Path::new(name).components().collect::<Vec<_>>()[..],
        [std::path::Component::Normal(_)]
    );
    if !plain {
        bail!("model name '{name}' cannot name a folder under .cache/optimized: use letters, digits, '-' or '_'");
    }
    let folder = find_workspace()?.join(".cache/optimized").join(name);
    let _ = std::fs::remove_dir_all(&folder);
    let out = folder.join("1");
    let choice = optimize(model, &out, gate)?;
    Ok((out, choice))
}

/// Runs the optimizer on `model` (a version folder or its .onnx file) into `out`.
///
/// Errors: no Python with onnxruntime (run `make setup` targets), no calibration photos (`make
/// calibration-photos`), or the optimizer's own error (printed above it).
pub fn optimize(model: &Path, out: &Path, gate: &GateArgs) -> Result<Choice> {
    let workspace = find_workspace()?;
    let dir = if model.is_file() {
        model.parent().unwrap_or(Path::new(".")).to_owned()
    } else {
        model.to_owned()
    };
    if !dir.join("model.onnx").is_file() {
        bail!(
            "{} holds no model.onnx: give a version folder (…/resnet/1) or its model.onnx",
            dir.display()
        );
    }
    let python = gate
        .python
        .clone()
        .or_else(|| std::env::var_os("ONNX_SERVING_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| workspace.join(".cache/venv/bin/python"));
    if !python.exists() {
        bail!(
            "no Python at {}: `make calibration-photos` creates the venv (onnx, onnxruntime), or name one with --python",
            python.display()
        );
    }
    let mut cmd = Command::new(&python);
    cmd.arg(workspace.join("scripts/optimize_model.py"))
        .arg(&dir)
        .arg("--out")
        .arg(out)
        .args(["--precision", &gate.precision])
        .args(["--min-top1", &gate.min_top1.to_string()])
        .args(["--min-top5", &gate.min_top5.to_string()])
        .args(["--min-confident-top1", &gate.min_confident_top1.to_string()])
        .args(["--min-images", &gate.min_images.to_string()]);
    if gate.bf16 {
        cmd.arg("--bf16");
    }
    if let Some(bound) = gate.max_abs_diff {
        cmd.args(["--max-abs-diff", &bound.to_string()]);
    }
    if gate.precision != "fp32" {
        let photos = gate
            .calibration
            .clone()
            .unwrap_or_else(|| workspace.join(".cache/calibration"));
        if !photos.is_dir() {
            bail!(
                "no calibration photos at {}: `make calibration-photos` fetches a default set, or give --calibration DIR (or --precision fp32)",
                photos.display()
            );
        }
        cmd.arg("--calibration").arg(photos);
        if let Some(validation) = &gate.validation {
            cmd.arg("--validation").arg(validation);
        }
    }
    eprintln!(
        "Optimizing {} for this CPU (calibrate, accuracy gate, timing; about a minute)",
        dir.display()
    );
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("the optimizer failed ({status}); its error is above");
    }
    Choice::read(out)?.with_context(|| {
        format!(
            "the optimizer wrote no optimization.json in {}",
            out.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_record_the_choice_and_the_gate() {
        let report = serde_json::json!({
            "precision": "int8", "variant": "int8", "speedup": 1.4, "reason": "passed",
            "data": {"calibration_sha256": "abc"},
            "candidates": {"int8": {
                "quantizer": {"per_channel": true},
                "gate": {"top1": 0.99, "top5": 0.97, "n": 146},
                "timing": {"threads_2": {"speedup": 1.4}}}}
        });
        let labels = Choice { report }.labels();
        let get = |k: &str| labels[&format!("{LABEL_PREFIX}{k}")].as_str();
        assert_eq!(get("precision"), "int8");
        assert_eq!(get("optimization.gate-top1"), "0.99");
        assert_eq!(get("optimization.gate-inputs"), "146");
        assert_eq!(get("optimization.speedup"), "1.4");
        assert_eq!(get("optimization.calibration-sha256"), "abc");
        assert!(get("optimization.quantizer").contains("per_channel"));
    }

    #[test]
    fn the_candidates_table_marks_the_choice_and_says_why_others_failed() {
        let report = serde_json::json!({
            "precision": "fp32", "variant": "fp32", "speedup": 1.0,
            "candidates": {
                "fp32": {"timing": {"threads_1": {"ms": 8.6, "speedup": 1.0},
                                    "threads_2": {"ms": 4.7, "speedup": 1.0}}},
                "int8": {"gate": {"passed": false, "top1": 0.932, "top5": 0.918,
                                  "max_abs_diff": 0.181, "reasons": ["top-1 agreement 0.932 < 0.98"]}}}
        });
        let table = Choice { report }.candidates_table();
        assert!(table.contains("fp32 *"), "{table}");
        assert!(table.contains("4.70 x1.00"), "{table}");
        assert!(table.contains("FAIL  0.932"), "{table}");
        assert!(
            table.contains("int8: top-1 agreement 0.932 < 0.98"),
            "{table}"
        );
    }
}
