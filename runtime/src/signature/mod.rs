//! The serving signature of a model: what a client sends and gets back, in TensorFlow Serving
//! terms. Here the model's own inputs and outputs ([`Signature`], [`TensorSpec`], [`Dim`]);
//! beside it the optional `signature.toml` (`file`) that makes an image classifier take JPEG or
//! PNG bytes (`image`: decode, resize, normalize) and answer classes (`classes`: softmax, top-k,
//! labels).

pub mod classes;
mod decode;
pub mod file;
pub mod image;

use std::fmt;

use serde_json::{json, Value};

pub use crate::tensor::DType;
use crate::tensor::Tensor;
pub use classes::{ClassOutput, Emit};
pub use decode::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
pub use file::{ServingSignature, SIGNATURE_FILE};
pub use image::{FloatImage, ImageInput, ImageSource};

/// One dimension of a tensor shape: fixed, or free (a symbol such as the batch size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Dynamic(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Dynamic(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// `[-1, 224, 224, 3]`-style rendering, -1 for a free dimension, as TF Serving prints shapes.
    pub fn shape_string(&self) -> String {
        shape_string(
            self.shape
                .iter()
                .map(|d| d.fixed().map_or(-1, |n| n as i64)),
        )
    }

    /// Whether `shape` fits this spec: same rank, equal fixed dimensions.
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(d, &n)| d.fixed().is_none_or(|f| f == n))
    }

    /// The shape with -1 for a free dimension, as the Open Inference Protocol's metadata and
    /// Triton's model configuration write it.
    pub fn dims(&self) -> Vec<i64> {
        self.shape
            .iter()
            .map(|d| d.fixed().map_or(-1, |n| n as i64))
            .collect()
    }

    /// Whether the first dimension is free, i.e. the model takes any batch size.
    pub fn has_dynamic_batch(&self) -> bool {
        matches!(self.shape.first(), Some(Dim::Dynamic(_)))
    }

    /// TF Serving's `TensorInfo` JSON.
    pub fn tensor_info(&self) -> Value {
        let dims: Vec<Value> = self
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => json!({"size": n.to_string(), "name": ""}),
                Dim::Dynamic(name) => json!({"size": "-1", "name": name}),
            })
            .collect();
        json!({
            "dtype": self.dtype.tf_name(),
            "tensor_shape": {"dim": dims, "unknown_rank": false},
            "name": self.name,
        })
    }
}

pub fn shape_string(dims: impl IntoIterator<Item = impl fmt::Display>) -> String {
    let parts: Vec<String> = dims.into_iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Inputs and outputs of a model, in the model's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// The only signature an ONNX model has, under TF Serving's default name.
pub const DEFAULT_SIGNATURE: &str = "serving_default";
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

impl Signature {
    /// Zero-filled inputs at batch size `batch` (other free dimensions at 1), for warm-up and
    /// `check-model` runs.
    pub fn zero_inputs(&self, batch: usize) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape = spec
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(k, d)| d.fixed().unwrap_or(if k == 0 { batch } else { 1 }))
                    .collect();
                Tensor::zeros(spec.dtype, shape)
            })
            .collect()
    }

    /// Whether every input and output takes any batch size (a free first dimension): what
    /// Triton's model configuration calls batching (`max_batch_size` > 0, dims without it).
    pub fn batches(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(TensorSpec::has_dynamic_batch)
    }

    pub fn input_names(&self) -> String {
        names(&self.inputs)
    }

    pub fn output_names(&self) -> String {
        names(&self.outputs)
    }

    /// TF Serving's `SignatureDef` JSON.
    pub fn signature_def(&self) -> Value {
        let infos = |specs: &[TensorSpec]| -> serde_json::Map<String, Value> {
            specs
                .iter()
                .map(|s| (s.name.clone(), s.tensor_info()))
                .collect()
        };
        json!({
            "inputs": infos(&self.inputs),
            "outputs": infos(&self.outputs),
            "method_name": PREDICT_METHOD,
        })
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("'{}'", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}",
            self.name,
            self.dtype.tf_name(),
            self.shape_string()
        )
    }
}

/// The index of the input or output `name` names (or the only one, without a name).
pub(crate) fn find(specs: &[TensorSpec], name: Option<&str>, kind: &str) -> Result<usize, String> {
    match name {
        Some(n) => specs.iter().position(|s| s.name == n).ok_or_else(|| {
            format!(
                "{kind} '{n}' is not in the model; it has {}",
                specs
                    .iter()
                    .map(|s| format!("'{}'", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        None if specs.len() == 1 => Ok(0),
        None => Err(format!(
            "the model has {} {kind}s: say which with model_{kind} = \"...\"",
            specs.len()
        )),
    }
}
