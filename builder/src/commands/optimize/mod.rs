//! `builder optimize`: the model itself made for this host's CPU, accuracy-checked. Runs
//! `scripts/optimize_model.py` (onnxruntime's quantizer, in the workspace's Python venv, on the
//! host: nothing is fetched inside a Docker build and the serving image stays slim), which
//! tries fp32, onnxruntime's graph optimized for this host, int8 and (with `--bf16`, for images
//! that carry OpenVINO) OpenVINO computing in bf16, gates each on held-out
//! photos against fp32, times the survivors here and keeps the fastest that beats fp32 by more
//! than 5 % (else fp32). The result is a version folder: `model.onnx`, `optimization.json` (the
//! choice, the gate's figures, the speed-up), the signature and labels.

mod choice;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub use self::choice::Choice;
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
    /// fetches]. For models without an image signature, request files: .json (a :predict body
    /// in TF Serving's REST format, `{"instances": ...}` or `{"inputs": ...}`, or an Open
    /// Inference Protocol infer body, `{"inputs": [{"name", "shape", "datatype", "data"}]}`) or
    /// .npz (one array per model input, by name, batch included).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Held-out photos (or request files) for the accuracy check, instead of a share of
    /// --calibration.
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
