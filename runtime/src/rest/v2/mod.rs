//! The Open Inference Protocol (KServe V2) over REST, beside TF Serving's API on the same port
//! and through the same `serving` path: server and model health, metadata, Triton's model
//! configuration (what perf_analyzer reads), infer (`infer`, with the binary tensor
//! extension) and the model repository extension (`repository`). Routes and JSON as the spec (kserve/open-inference-protocol, REST) and Triton's
//! extensions have them; errors are `{"error": "..."}` with the TF routes' status codes.

mod data;
pub mod decode;
mod infer;
mod repository;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{parse_version, spec, Body};
use crate::error::ApiError;
use crate::models::{AppState, ServedModel};
use crate::serving::{self, VersionChoice};
use crate::signature::TensorSpec;

pub use infer::HEADER_LENGTH;

/// The V2 routes, merged into [`crate::rest::app`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{name}/load", post(repository::load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository::unload),
        )
        .route("/v2/models/{name}", get(metadata_latest))
        .route("/v2/models/{name}/ready", get(ready_latest))
        .route("/v2/models/{name}/config", get(config_latest))
        .route("/v2/models/{name}/infer", post(infer_latest))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(metadata_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(ready_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(config_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
}

/// Extensions of the protocol this server implements, as Triton names them.
pub const EXTENSIONS: [&str; 3] = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
];

/// The batch size Triton's model configuration reports for a model that takes any batch: what
/// perf_analyzer may send. Larger batches are served too, within `--max_body_bytes` (64 images
/// for an image signature).
pub const CONFIG_MAX_BATCH_SIZE: usize = serving::MAX_IMAGES_PER_REQUEST;

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "onnx-serving",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// Live while the process answers.
async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready when there is a model and every configured model has an AVAILABLE version; else 503
/// naming the ones that do not.
async fn ready(State(st): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    serving::ready(&st).map(|()| StatusCode::OK)
}

fn version_of(v: &str) -> Result<VersionChoice<'static>, ApiError> {
    Ok(VersionChoice::Number(parse_version(v)?))
}

/// The model version a route names, counted in the metrics as api `v2`.
fn with_model(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    method: &'static str,
    answer: impl FnOnce(&AppState, &ServedModel) -> Response,
) -> Result<Response, ApiError> {
    let mut guard = serving::track(st, name, "v2", method);
    let result = serving::resolve(st, &spec(name, version)).map(|model| {
        guard.version(model.version);
        answer(st, &model)
    });
    guard.finish(&result);
    result
}

async fn metadata_latest(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, VersionChoice::Latest, "metadata", metadata)
}

async fn metadata_version(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, version_of(&version)?, "metadata", metadata)
}

async fn ready_latest(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, VersionChoice::Latest, "ready", |_, _| {
        StatusCode::OK.into_response()
    })
}

async fn ready_version(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, version_of(&version)?, "ready", |_, _| {
        StatusCode::OK.into_response()
    })
}

async fn config_latest(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, VersionChoice::Latest, "config", config)
}

async fn config_version(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    with_model(&st, &name, version_of(&version)?, "config", config)
}

async fn infer_latest(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer::infer(&st, &name, VersionChoice::Latest, headers, body).await
}

async fn infer_version(
    State(st): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let version = version_of(&version)?;
    infer::infer(&st, &name, version, headers, body).await
}

/// The platform V2 metadata and Triton's configuration report: the model is ONNX whichever
/// engine runs it (the engine is in TF Serving's metadata and the status).
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Model metadata: name, the AVAILABLE versions, platform, and the public signature's tensors
/// with V2 datatypes and -1 for free dimensions.
fn metadata(st: &AppState, model: &ServedModel) -> Response {
    let versions: Vec<String> = serving::available_versions(st, &model.name)
        .iter()
        .map(u64::to_string)
        .collect();
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({"name": s.name, "datatype": s.dtype.v2_name(), "shape": s.dims()}))
            .collect()
    };
    let sig = model.api_signature();
    Json(json!({
        "name": model.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": tensors(&sig.inputs),
        "outputs": tensors(&sig.outputs),
    }))
    .into_response()
}

/// Triton's model configuration (`model_config.proto` as JSON) with the fields clients read:
/// `max_batch_size` (non-zero when every tensor's first dimension is free, which is then left
/// out of `dims`), and each tensor's `data_type` and `dims`.
fn config(_: &AppState, model: &ServedModel) -> Response {
    let sig = model.api_signature();
    let batched = sig.batches();
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| {
                let dims = &s.dims()[usize::from(batched)..];
                let mut t = json!({"name": s.name, "data_type": s.dtype.triton_config_name()});
                if dims.is_empty() {
                    // One value per batch entry: Triton spells it dims [1] reshaped to [].
                    t["dims"] = json!([1]);
                    t["reshape"] = json!({"shape": []});
                } else {
                    t["dims"] = json!(dims);
                }
                t
            })
            .collect()
    };
    Json(json!({
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": if batched { CONFIG_MAX_BATCH_SIZE } else { 0 },
        "input": tensors(&sig.inputs),
        "output": tensors(&sig.outputs),
    }))
    .into_response()
}
