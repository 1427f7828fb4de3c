//! Models on disk: where they live, how they load, what they take and return.

pub mod layout;
pub mod serving;
pub mod signature;

use std::path::PathBuf;

pub use layout::{find_latest_version, ModelVersion};
pub use serving::ServingSignature;
pub use signature::{DType, Dim, Signature, TensorSpec};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder {path} does not exist; expected <model_base_path>/<model_name>/<version>/model.onnx, e.g. /models/resnet/1/model.onnx (mount it with --mount type=bind,source=...,target=/models/<model_name>)")]
    MissingBase { path: PathBuf },
    #[error("no model version found under {path}: expected numbered sub-folders holding model.onnx, e.g. {path}/1/model.onnx")]
    NoVersion { path: PathBuf },
    #[error("version folder {path} holds no .onnx file (expected model.onnx)")]
    NoOnnxFile { path: PathBuf },
    #[error("version folder {path} holds several .onnx files and none is named model.onnx")]
    AmbiguousOnnxFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{engine} could not {stage} {path}: {message}")]
    Engine {
        engine: &'static str,
        stage: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("no engine can serve {path}: {reasons}")]
    NoEngine { path: PathBuf, reasons: String },
    #[error("{path}: {message}")]
    Signature { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
}
