//! The serving signature of a model: what a client sends and gets back, in TensorFlow Serving terms.

use std::fmt;

use serde_json::{json, Value};
use tract_onnx::prelude::{DatumType, TDim};
use tract_onnx::tract_hir::internal::DimLike;

/// Element types the REST API can read from or write to JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    /// Binary or text values (`{"b64": ...}` inputs, label outputs).
    String,
}

impl DType {
    pub fn from_datum(dt: DatumType) -> Option<DType> {
        Some(match dt {
            DatumType::F16 => DType::F16,
            DatumType::F32 => DType::F32,
            DatumType::F64 => DType::F64,
            DatumType::I8 => DType::I8,
            DatumType::I16 => DType::I16,
            DatumType::I32 => DType::I32,
            DatumType::I64 => DType::I64,
            DatumType::U8 => DType::U8,
            DatumType::U16 => DType::U16,
            DatumType::U32 => DType::U32,
            DatumType::U64 => DType::U64,
            DatumType::Bool => DType::Bool,
            DatumType::String => DType::String,
            _ => return None,
        })
    }

    pub fn datum(self) -> DatumType {
        match self {
            DType::F16 => DatumType::F16,
            DType::F32 => DatumType::F32,
            DType::F64 => DatumType::F64,
            DType::I8 => DatumType::I8,
            DType::I16 => DatumType::I16,
            DType::I32 => DatumType::I32,
            DType::I64 => DatumType::I64,
            DType::U8 => DatumType::U8,
            DType::U16 => DatumType::U16,
            DType::U32 => DatumType::U32,
            DType::U64 => DatumType::U64,
            DType::Bool => DatumType::Bool,
            DType::String => DatumType::String,
        }
    }

    /// TensorFlow's name for the type, as TF Serving's metadata reports it.
    pub fn tf_name(self) -> &'static str {
        match self {
            DType::F16 => "DT_HALF",
            DType::F32 => "DT_FLOAT",
            DType::F64 => "DT_DOUBLE",
            DType::I8 => "DT_INT8",
            DType::I16 => "DT_INT16",
            DType::I32 => "DT_INT32",
            DType::I64 => "DT_INT64",
            DType::U8 => "DT_UINT8",
            DType::U16 => "DT_UINT16",
            DType::U32 => "DT_UINT32",
            DType::U64 => "DT_UINT64",
            DType::Bool => "DT_BOOL",
            DType::String => "DT_STRING",
        }
    }

    /// Short name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a tensor shape: fixed, or free (a symbol such as the batch size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Dynamic(String),
}

impl Dim {
    pub fn from_tdim(d: &TDim) -> Dim {
        match d.to_usize() {
            Ok(n) => Dim::Fixed(n),
            Err(_) => Dim::Dynamic(d.to_string()),
        }
    }

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
