//! The model repository extension over REST (Triton's HTTP/REST spelling):
//! `POST /v2/repository/index` (body `{"ready": bool}`, optional) answers
//! `[{"name", "version", "state", "reason"}]`; `POST /v2/repository/models/{m}/load` and
//! `/unload` (body optional, `{"parameters": {...}}`) answer 200 with an empty body.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::models::AppState;
use crate::rest::{read_body, Body};
use crate::serving::{self, repository};

/// What the index and load/unload bodies may hold; each may be empty.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn request(st: &AppState, body: Body) -> Result<Request, ApiError> {
    let body = read_body(body, st.limits.max_body_bytes).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Request::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the repository request is not valid JSON: {e}")))
}

/// `POST /v2/repository/index`.
pub(super) async fn index(
    State(st): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let guard = serving::track(&st, "", "v2", "repository_index");
    let result = request(&st, body).await.map(|r| {
        let entries: Vec<Value> = repository::index(&st, r.ready)
            .into_iter()
            .map(|e| {
                let mut v = json!({"name": e.name, "state": e.state, "reason": e.reason});
                if let Some(version) = e.version {
                    v["version"] = json!(version.to_string());
                }
                v
            })
            .collect();
        Json(Value::Array(entries))
    });
    guard.finish(&result);
    result
}

/// `POST /v2/repository/models/{m}/load`: answers once the model is AVAILABLE.
pub(super) async fn load(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    control(&st, &name, body, true).await
}

/// `POST /v2/repository/models/{m}/unload`.
pub(super) async fn unload(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    control(&st, &name, body, false).await
}

/// Loads (`load`) or unloads a model, counted in the metrics as api `v2`.
async fn control(
    st: &AppState,
    name: &str,
    body: Body,
    load: bool,
) -> Result<StatusCode, ApiError> {
    let method = if load { "load" } else { "unload" };
    let guard = serving::track(st, name, "v2", method);
    let result = async {
        let r = request(st, body).await?;
        serving::require_name(name)?;
        repository::check_parameters(r.parameters.keys().map(String::as_str))?;
        if load {
            repository::load(st, name, repository::LOAD_WAIT).await
        } else {
            repository::unload(st, name)
        }
    }
    .await;
    guard.finish(&result);
    result.map(|()| StatusCode::OK)
}
