//! Class outputs: the model's `[batch, classes]` scores turned into what `[output]` of
//! `signature.toml` asks for (classes, probabilities, labels, top-k), as TF Serving's ResNet
//! answered.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::{find, DType, Signature};
use crate::tensor::Tensor;

/// `[output]` of `signature.toml`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputFile {
    pub(super) model_output: Option<String>,
    pub(super) activation: Option<String>,
    pub(super) label_offset: Option<i64>,
    pub(super) labels: Option<String>,
    pub(super) top_k: Option<usize>,
    pub(super) emit: Option<Vec<String>>,
}

/// What the response carries, computed from the model's `[batch, classes]` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Classes,
    Probabilities,
    Labels,
    TopKClasses,
    TopKProbabilities,
    TopKLabels,
}

impl Emit {
    const ALL: [(&'static str, Emit); 6] = [
        ("classes", Emit::Classes),
        ("probabilities", Emit::Probabilities),
        ("labels", Emit::Labels),
        ("top_k_classes", Emit::TopKClasses),
        ("top_k_probabilities", Emit::TopKProbabilities),
        ("top_k_labels", Emit::TopKLabels),
    ];

    /// The name `emit` uses, and the output's in the public signature.
    pub fn name(self) -> &'static str {
        Emit::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("", |(n, _)| n)
    }
}

#[derive(Clone, Debug)]
pub struct ClassOutput {
    pub model_output: usize,
    pub classes: usize,
    pub softmax: bool,
    pub label_offset: i64,
    pub labels: Option<Vec<String>>,
    pub top_k: usize,
    pub emit: Vec<Emit>,
}

/// `[output]` of `signature.toml`, checked against the model's output; labels read from a file
/// beside `file`.
pub(super) fn class_output(
    f: OutputFile,
    model: &Signature,
    file: &Path,
) -> Result<ClassOutput, String> {
    let ix = find(&model.outputs, f.model_output.as_deref(), "output")?;
    let spec = &model.outputs[ix];
    // [batch, classes], or with trailing 1s as Caffe2's exports give (SqueezeNet: [1, 1000, 1, 1]).
    let trailing_ones = spec.shape.iter().skip(2).all(|d| d.fixed() == Some(1));
    if spec.dtype != DType::F32 || spec.shape.len() < 2 || !trailing_ones {
        return Err(format!(
            "model output '{}' is {} {}; class post-processing needs float32 [batch, classes] (trailing dimensions of 1 allowed)",
            spec.name,
            spec.dtype,
            spec.shape_string()
        ));
    }
    let classes = spec.shape[1].fixed().ok_or_else(|| {
        format!(
            "model output '{}' {} has a free class dimension",
            spec.name,
            spec.shape_string()
        )
    })?;
    let softmax = match f.activation.as_deref().unwrap_or("none") {
        "softmax" => true,
        "none" => false,
        other => {
            return Err(format!(
                "activation = \"{other}\": use \"softmax\" (the model emits logits) or \"none\" (it emits probabilities)"
            ))
        }
    };
    let label_offset = f.label_offset.unwrap_or(0);
    let labels = match &f.labels {
        None => None,
        Some(name) => {
            // A file of the version folder: not a path out of it (`/dev/zero`, `../..`).
            let inside = Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || name.is_empty() {
                return Err(format!(
                    "labels = \"{name}\": name a file in the model's version folder, beside signature.toml (e.g. labels = \"labels.txt\")"
                ));
            }
            let path = file.parent().unwrap_or(Path::new(".")).join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("labels = \"{name}\": cannot read {}: {e}", path.display()))?;
            let labels: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
            let labels = trim_trailing_empty(labels);
            if labels.len() != classes {
                return Err(format!(
                    "{} has {} labels but model output '{}' has {classes} classes; one label per line, line 1 = class 0",
                    path.display(),
                    labels.len(),
                    spec.name
                ));
            }
            Some(labels)
        }
    };
    let top_k = f.top_k.unwrap_or(classes.min(5));
    if top_k == 0 || top_k > classes {
        return Err(format!("top_k = {top_k} must be between 1 and {classes}"));
    }
    let names = f
        .emit
        .unwrap_or_else(|| vec!["classes".into(), "probabilities".into()]);
    if names.is_empty() {
        return Err("emit is empty: list at least one of classes, probabilities, labels, top_k_classes, top_k_probabilities, top_k_labels".into());
    }
    let mut seen = HashSet::new();
    let mut emit = Vec::with_capacity(names.len());
    for name in &names {
        let e = Emit::ALL
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                format!(
                    "emit: unknown output '{name}'; choose from classes, probabilities, labels, top_k_classes, top_k_probabilities, top_k_labels"
                )
            })?;
        if !seen.insert(name.as_str()) {
            return Err(format!("emit lists '{name}' twice"));
        }
        if matches!(e, Emit::Labels | Emit::TopKLabels) && labels.is_none() {
            return Err(format!("emit '{name}' needs labels = \"labels.txt\""));
        }
        emit.push(e);
    }
    Ok(ClassOutput {
        model_output: ix,
        classes,
        softmax,
        label_offset,
        labels,
        top_k,
        emit,
    })
}

fn trim_trailing_empty(mut v: Vec<String>) -> Vec<String> {
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

impl ClassOutput {
    /// The public outputs, in `emit` order, from the model's `[batch, classes]` output (or
    /// `[batch, classes, 1, ...]`, read as `[batch, classes]`).
    pub fn postprocess(&self, raw: &Tensor) -> Result<Vec<Tensor>, String> {
        let values = raw
            .as_slice::<f32>()
            .ok_or_else(|| format!("model output is {}, not float32", raw.dtype()))?;
        let shape = raw.shape();
        if shape.len() < 2 || shape[1] != self.classes || shape[2..].iter().any(|&d| d != 1) {
            return Err(format!(
                "model output has shape {shape:?}, expected [batch, {}] (trailing dimensions of 1 allowed)",
                self.classes
            ));
        }
        let batch = shape[0];
        let k = self.top_k;
        let mut classes = Vec::with_capacity(batch);
        let mut probs = Vec::with_capacity(batch * self.classes);
        let mut top_classes = Vec::with_capacity(batch * k);
        let mut top_probs = Vec::with_capacity(batch * k);
        for row in values.chunks(self.classes.max(1)) {
            let mut p: Vec<f32> = row.to_vec();
            if self.softmax {
                softmax(&mut p);
            }
            let mut order: Vec<usize> = (0..p.len()).collect();
            // NaN sorts last; ties keep the lower class first.
            order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap_or(std::cmp::Ordering::Less));
            classes.push(order[0]);
            top_classes.extend_from_slice(&order[..k]);
            top_probs.extend(order[..k].iter().map(|&i| p[i]));
            probs.extend_from_slice(&p);
        }
        let id = |c: usize| c as i64 + self.label_offset;
        let label = |c: usize| {
            self.labels
                .as_ref()
                .and_then(|l| l.get(c))
                .cloned()
                .unwrap_or_default()
        };
        let ids = |cs: &[usize]| cs.iter().map(|&c| id(c)).collect::<Vec<_>>();
        let names = |cs: &[usize]| cs.iter().map(|&c| label(c)).collect::<Vec<_>>();
        let built = |t: Result<Tensor, crate::tensor::TensorError>| {
            t.map_err(|e| format!("cannot build an output: {e}"))
        };
        self.emit
            .iter()
            .map(|e| match e {
                Emit::Classes => built(Tensor::from_vec(vec![batch], ids(&classes))),
                Emit::Labels => built(Tensor::from_vec(vec![batch], names(&classes))),
                Emit::Probabilities => {
                    built(Tensor::from_vec(vec![batch, self.classes], probs.clone()))
                }
                Emit::TopKClasses => built(Tensor::from_vec(vec![batch, k], ids(&top_classes))),
                Emit::TopKProbabilities => {
                    built(Tensor::from_vec(vec![batch, k], top_probs.clone()))
                }
                Emit::TopKLabels => built(Tensor::from_vec(vec![batch, k], names(&top_classes))),
            })
            .collect()
    }
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    if sum > 0.0 {
        for x in v.iter_mut() {
            *x /= sum;
        }
    }
}
