//! The errors every protocol shares, free of any protocol: [`ApiError`] (why a request failed,
//! and whose fault it is) and [`ModelError`] (why a model cannot be found or loaded). Each
//! protocol maps them to its own status at its edge (`rest::error`, `grpc::status`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client sent something the model cannot take: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown model, version or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this HTTP method: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Request body over `--max_body_bytes`: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body in a Content-Encoding the server cannot decode: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The inference queue is full: 429, try again later.
    #[error("{0}")]
    Overloaded(String),
    /// A TF Serving method that ONNX models do not serve: 501.
    #[error("{0}")]
    NotImplemented(String),
    /// The call took longer than `--rest_api_timeout_in_ms`: 504.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The request is well formed but the server's state refuses it (a version label moved to
    /// a version that is not AVAILABLE): 400, FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something the request waited for failed (a model added by a config reload did not
    /// load): 500, UNKNOWN, as TF Serving answers.
    #[error("{0}")]
    Unknown(String),
    /// The model is not loaded (yet), or the server is shutting down: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Our fault: 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The canonical (gRPC) status code, number and name, as TF Serving maps these errors:
    /// what gRPC answers, and the `status` label of the request metrics for both APIs.
    pub fn code(&self) -> (i32, &'static str) {
        match self {
            ApiError::Unknown(_) => (2, "UNKNOWN"),
            ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => (3, "INVALID_ARGUMENT"),
            ApiError::DeadlineExceeded(_) => (4, "DEADLINE_EXCEEDED"),
            ApiError::NotFound(_) => (5, "NOT_FOUND"),
            ApiError::PayloadTooLarge(_) | ApiError::Overloaded(_) => (8, "RESOURCE_EXHAUSTED"),
            ApiError::FailedPrecondition(_) => (9, "FAILED_PRECONDITION"),
            ApiError::MethodNotAllowed(_) | ApiError::NotImplemented(_) => (12, "UNIMPLEMENTED"),
            ApiError::Internal(_) => (13, "INTERNAL"),
            ApiError::Unavailable(_) => (14, "UNAVAILABLE"),
        }
    }
}

/// Why a model version cannot be found on disk, read, or loaded by an engine.
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
