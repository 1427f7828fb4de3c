//! A model's public serving signature, from an optional `signature.toml` beside `model.onnx`.
//!
//! ONNX image classifiers take normalized float tensors and return logits; TF Serving's ResNet
//! took JPEG bytes and returned `classes` and `probabilities`. The signature file bridges the two:
//!
//! ```toml
//! [input]
//! name = "image_bytes"      # public input name (default image_bytes)
//! model_input = "images"    # ONNX input it feeds (default: the only input)
//! kind = "image"
//! layout = "NCHW"           # or NHWC (default: from the model's shape)
//! size = [224, 224]         # height, width (default: the model's fixed dimensions)
//! resize = "shorter_side"   # or "stretch"
//! filter = "bilinear"       # nearest | bilinear | bicubic | lanczos3
//! mean = [0.485, 0.456, 0.406]   # (x - mean) / std, x in 0-1
//! std = [0.229, 0.224, 0.225]
//!
//! [output]
//! model_output = "logits"   # ONNX output, [batch, classes] or [batch, classes, 1, 1] (default: the only)
//! activation = "softmax"    # or "none" when the model already emits probabilities
//! label_offset = 0          # added to class ids (1 for TF's 1001-class numbering)
//! labels = "labels.txt"     # one label per line, a file beside this one (no path out of the folder)
//! top_k = 5
//! emit = ["classes", "probabilities"]
//! ```
//!
//! Clients then send an image as `{"b64": "<JPEG or PNG>"}` or as an HWC tensor of 0-1 floats at
//! any size (what today's `resnet_client.py` sends); both go through the same resize, crop and
//! normalization.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::classes::{class_output, ClassOutput, Emit, OutputFile};
use super::image::{image_input, ImageInput, InputFile};
use super::{DType, Dim, Signature, TensorSpec};
use crate::error::ModelError;

/// The file looked for beside `model.onnx`.
pub const SIGNATURE_FILE: &str = "signature.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    input: InputFile,
    output: Option<OutputFile>,
}

/// A parsed and validated `signature.toml`.
#[derive(Clone, Debug)]
pub struct ServingSignature {
    pub file: PathBuf,
    pub input: ImageInput,
    pub output: Option<ClassOutput>,
    /// What clients see: the metadata endpoint reports this, responses follow its outputs.
    pub public: Signature,
}

impl ServingSignature {
    /// Reads the `signature.toml` beside the ONNX file `model_path`, if there is one, checked
    /// against the model's signature.
    pub fn load(
        model_path: &Path,
        model: &Signature,
    ) -> Result<Option<ServingSignature>, ModelError> {
        let file = model_path.with_file_name(SIGNATURE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModelError::Io { path: file, source }),
        };
        Self::parse(&text, &file, model).map(Some)
    }

    pub fn parse(
        text: &str,
        file: &Path,
        model: &Signature,
    ) -> Result<ServingSignature, ModelError> {
        let bad = |message: String| ModelError::Signature {
            path: file.to_owned(),
            message,
        };
        let spec: FileSpec = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let input = image_input(spec.input, model).map_err(&bad)?;
        let output = match spec.output {
            Some(out) => Some(class_output(out, model, file).map_err(&bad)?),
            None => None,
        };
        let public = public_signature(&input, output.as_ref(), model);
        Ok(ServingSignature {
            file: file.to_owned(),
            input,
            output,
            public,
        })
    }
}

/// What clients see: the image input as a string (bytes) tensor, and the outputs `[output]`
/// emits (or the model's own).
fn public_signature(
    input: &ImageInput,
    output: Option<&ClassOutput>,
    model: &Signature,
) -> Signature {
    let batch = || Dim::Dynamic("batch".into());
    let inputs = vec![TensorSpec {
        name: input.name.clone(),
        dtype: DType::String,
        shape: vec![batch()],
    }];
    let outputs = match output {
        None => model.outputs.clone(),
        Some(out) => out
            .emit
            .iter()
            .map(|e| {
                let (dtype, per_row) = match e {
                    Emit::Classes => (DType::I64, None),
                    Emit::Labels => (DType::String, None),
                    Emit::Probabilities => (DType::F32, Some(out.classes)),
                    Emit::TopKClasses => (DType::I64, Some(out.top_k)),
                    Emit::TopKProbabilities => (DType::F32, Some(out.top_k)),
                    Emit::TopKLabels => (DType::String, Some(out.top_k)),
                };
                let mut shape = vec![batch()];
                shape.extend(per_row.map(Dim::Fixed));
                TensorSpec {
                    name: e.name().into(),
                    dtype,
                    shape,
                }
            })
            .collect(),
    };
    Signature { inputs, outputs }
}

#[cfg(test)]
mod tests;
