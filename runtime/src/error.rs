//! API errors: every failure a client sees is `{"error": "..."}` with a status that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
            ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => (3, "INVALID_ARGUMENT"),
            ApiError::DeadlineExceeded(_) => (4, "DEADLINE_EXCEEDED"),
            ApiError::NotFound(_) => (5, "NOT_FOUND"),
            ApiError::PayloadTooLarge(_) | ApiError::Overloaded(_) => (8, "RESOURCE_EXHAUSTED"),
            ApiError::MethodNotAllowed(_) | ApiError::NotImplemented(_) => (12, "UNIMPLEMENTED"),
            ApiError::Internal(_) => (13, "INTERNAL"),
            ApiError::Unavailable(_) => (14, "UNAVAILABLE"),
        }
    }

    /// The HTTP status REST answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = status.as_u16(), "{self}");
        } else {
            tracing::debug!(status = status.as_u16(), "{self}");
        }
        let mut response =
            (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::Overloaded(_) | ApiError::Unavailable(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
