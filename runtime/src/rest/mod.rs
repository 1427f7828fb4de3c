//! The REST API of TensorFlow Serving, over axum: JSON in and out, the rules in `serving`; the
//! Open Inference Protocol's routes beside it (`v2`).
//!
//! axum cannot route `/{name}:predict` (a capture fills a whole path segment), so the segment
//! `resnet:predict` is captured whole and split on `:` here.

pub mod decode;
pub mod drain;
pub mod encode;
pub mod error;
pub mod images;
pub mod json;
pub mod listener;
mod predict;
pub mod request;
pub mod v2;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::util::MapResponseLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::ApiError;
use crate::models::AppState;
use crate::serving::{self, ModelSpec, RequestGuard, VersionChoice};
use crate::signature::DEFAULT_SIGNATURE;
use predict::{call, read_body};

/// The HTTP application; tests drive it in-process with `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    if let Some(path) = state.metrics_path() {
        router = router.route(path, get(prometheus_metrics));
    }
    router
        .route("/v1/models/{segment}", get(status_latest).post(call_latest))
        .route("/v1/models/{name}/metadata", get(metadata_latest))
        .route(
            "/v1/models/{name}/versions/{segment}",
            get(status_version).post(call_version),
        )
        .route(
            "/v1/models/{name}/versions/{version}/metadata",
            get(metadata_version),
        )
        .route(
            "/v1/models/{name}/labels/{segment}",
            get(status_label).post(call_label),
        )
        .route(
            "/v1/models/{name}/labels/{label}/metadata",
            get(metadata_label),
        )
        .merge(v2::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies reach the handlers decompressed; `read_body` holds them to --max_body_bytes.
        .layer(RequestDecompressionLayer::new().gzip(true).deflate(true))
        .layer(MapResponseLayer::new(error::unsupported_encoding))
        .layer(axum::middleware::from_fn(drain::drain_unread_body))
        .with_state(state)
}

/// A request body, read by the handler once the request is admitted (see [`read_body`]).
pub(super) type Body = axum::body::Body;

async fn status_latest(
    State(st): State<Arc<AppState>>,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    get_only(&segment)?;
    model_status(&st, &segment, VersionChoice::Latest)
}

async fn status_version(
    State(st): State<Arc<AppState>>,
    Path((name, segment)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_only(&segment)?;
    let version = VersionChoice::Number(parse_version(&segment)?);
    model_status(&st, &name, version)
}

async fn status_label(
    State(st): State<Arc<AppState>>,
    Path((name, segment)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_only(&segment)?;
    model_status(&st, &name, VersionChoice::Label(&segment))
}

async fn metadata_label(
    State(st): State<Arc<AppState>>,
    Path((name, label)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    metadata(&st, &name, VersionChoice::Label(&label))
}

async fn call_label(
    State(st): State<Arc<AppState>>,
    Path((name, segment)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (label, method) = split_method(&segment)?;
    call(&st, &name, VersionChoice::Label(label), method, body).await
}

async fn metadata_latest(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    metadata(&st, &name, VersionChoice::Latest)
}

async fn metadata_version(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version = VersionChoice::Number(parse_version(&version)?);
    metadata(&st, &name, version)
}

async fn call_latest(
    State(st): State<Arc<AppState>>,
    Path(segment): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (name, method) = split_method(&segment)?;
    call(&st, name, VersionChoice::Latest, method, body).await
}

async fn call_version(
    State(st): State<Arc<AppState>>,
    Path((name, segment)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (version, method) = split_method(&segment)?;
    let version = VersionChoice::Number(parse_version(version)?);
    call(&st, &name, version, method, body).await
}

/// A GET of `name:method` is the wrong HTTP method, not an unknown model.
fn get_only(segment: &str) -> Result<(), ApiError> {
    match segment.split_once(':') {
        Some((_, method)) => Err(ApiError::MethodNotAllowed(format!(
            ":{method} takes POST, not GET"
        ))),
        None => Ok(()),
    }
}

fn split_method(segment: &str) -> Result<(&str, &str), ApiError> {
    segment.split_once(':').ok_or_else(|| {
        ApiError::MethodNotAllowed(format!(
            "POST needs a method after the model: /v1/models/{segment}:predict; GET {segment} for its status"
        ))
    })
}

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "version '{v}' is not a number; versions are folder numbers such as 1"
        ))
    })
}

/// Runs one REST call within `limit` (`--rest_api_timeout_in_ms`); past it, the call is
/// dropped (its body read, decode or queued run with it) and the client gets DEADLINE_EXCEEDED
/// (HTTP 504).
pub(super) async fn within_deadline<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ApiError::DeadlineExceeded(format!(
            "the request took longer than {} ms (--rest_api_timeout_in_ms): a slow upload, or a model run that long",
            limit.as_millis()
        )))
    })
}

pub(super) fn spec<'a>(name: &'a str, version: VersionChoice<'a>) -> ModelSpec<'a> {
    ModelSpec {
        name,
        version,
        signature_name: "",
    }
}

fn model_status(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
) -> Result<Response, ApiError> {
    let guard = serving::track(st, name, "rest", "status");
    let result = status_json(st, name, version);
    guard.finish(&result);
    result
}

fn status_json(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
) -> Result<Response, ApiError> {
    let entries: Vec<Value> = serving::status(st, &spec(name, version))?
        .into_iter()
        .map(|s| {
            let mut entry = json!({
                "version": s.version.to_string(),
                "state": s.state.name(),
                "status": {
                    "error_code": s.error_code(),
                    "error_message": s.error.unwrap_or_default(),
                },
            });
            // Beyond TF Serving's fields: which engine runs this version.
            if let Some(engine) = s.engine {
                entry["engine"] = json!(engine);
            }
            if let Some(precision) = s.precision {
                entry["precision"] = json!(precision);
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "model_version_status": entries })).into_response())
}

fn metadata(st: &AppState, name: &str, version: VersionChoice<'_>) -> Result<Response, ApiError> {
    let mut guard = serving::track(st, name, "rest", "metadata");
    let result = metadata_json(st, name, version, &mut guard);
    guard.finish(&result);
    result
}

fn metadata_json(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    guard: &mut RequestGuard,
) -> Result<Response, ApiError> {
    let model = serving::resolve(st, &spec(name, version))?;
    guard.version(model.version);
    let mut answer = json!({
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version.to_string()},
        "metadata": {
            "signature_def": {
                "signature_def": {DEFAULT_SIGNATURE: model.api_signature().signature_def()}
            },
            "engine": model.engine.name(),
        },
    });
    // Beyond TF Serving's fields, as `engine`: the precision it is served in, when `builder
    // optimize` made it (ServedModel::precision).
    if let Some(precision) = model.precision() {
        answer["metadata"]["precision"] = json!(precision);
    }
    Ok(Json(answer).into_response())
}

/// Prometheus' text exposition of [`crate::metrics`], with each version's state read now.
async fn prometheus_metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = serving::render_metrics(&st).map_err(ApiError::Internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {}; TF Serving's API is GET /v1/models/<name>[/versions/<v> or /labels/<label>][/metadata] and POST /v1/models/<name>[/versions/<v> or /labels/<label>]:predict; the Open Inference Protocol's is GET /v2, /v2/health/live|ready, /v2/models/<name>[/versions/<v>][/ready|/config] and POST /v2/models/<name>[/versions/<v>]/infer",
        uri.path()
    ))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// For `GET /v1/models/<name>` style checks from outside (the `healthcheck` subcommand).
pub fn state_of(status: &Value) -> Option<&str> {
    status
        .get("model_version_status")?
        .get(0)?
        .get("state")?
        .as_str()
}
