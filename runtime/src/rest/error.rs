//! REST's side of [`ApiError`]: the HTTP status of each error kind, and the JSON body
//! (`{"error": "..."}`, TF Serving's) every failure answers with.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;

/// The HTTP status REST answers `e` with: 400 for the client's mistakes, 404 for unknown
/// models, versions and routes, 429/503 when overloaded or not ready, 504 past the deadline,
/// 500 only for our own failures.
pub fn http_status(e: &ApiError) -> StatusCode {
    match e {
        ApiError::BadRequest(_) | ApiError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::Internal(_) | ApiError::Unknown(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(&self);
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

/// tower-http answers a Content-Encoding it cannot decode with an empty 415: say why in JSON.
pub(super) fn unsupported_encoding(response: Response) -> Response {
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    let mut answer = ApiError::UnsupportedMediaType(
        "this server decodes request bodies sent with Content-Encoding gzip or deflate (or none)"
            .into(),
    )
    .into_response();
    if let Some(accepted) = response.headers().get(header::ACCEPT_ENCODING) {
        answer
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, accepted.clone());
    }
    answer
}
