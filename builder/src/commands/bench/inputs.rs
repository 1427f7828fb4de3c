//! What the bench serves and sends: the model's newest version, the optimized side's model folder
//! (made by `builder optimize` with `--optimize`) and the request body.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::BenchOptions;
use crate::commands::optimize::{optimize_into_cache, Choice, GateArgs};
use crate::probe::base64;

/// The model's newest numbered version folder (`<model>/<n>/`), as the server would pick it.
fn latest_version(model: &Path) -> Result<PathBuf> {
    let entries =
        std::fs::read_dir(model).with_context(|| format!("cannot list {}", model.display()))?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: u64 = e.file_name().to_str()?.parse().ok()?;
            e.path()
                .join("model.onnx")
                .is_file()
                .then_some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, path)| path)
        .ok_or_else(|| {
            anyhow!(
                "{} has no numbered version folder with a model.onnx (e.g. {}/1/model.onnx)",
                model.display(),
                model.display()
            )
        })
}

/// Optimizes the model's newest version for this CPU into the workspace's
/// `.cache/optimized/bench-<name>/1` and returns that model folder and the choice.
pub(super) fn optimized_model(model: &Path, gate: &GateArgs) -> Result<(PathBuf, Choice)> {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model");
    let (version, choice) =
        optimize_into_cache(&latest_version(model)?, &format!("bench-{name}"), gate)?;
    let folder = version.parent().context("a version folder has a parent")?;
    Ok((folder.to_owned(), choice))
}

/// The request body: the given file, or the photo as `{"b64": ...}` for a signature model.
pub(super) fn request_body(opts: &BenchOptions) -> Result<String> {
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
