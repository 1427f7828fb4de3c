//! The REST API of TensorFlow Serving, over axum: JSON in and out, the rules in `service`.
//!
//! axum cannot route `/{name}:predict` (a capture fills a whole path segment), so the segment
//! `resnet:predict` is captured whole and split on `:` here.

pub mod codec;
pub mod drain;
pub mod images;
pub mod json;
pub mod request;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::util::MapResponseLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::ApiError;
use crate::metrics::{metrics, RequestGuard};
use crate::model::signature::DEFAULT_SIGNATURE;
use crate::service::{self, ModelSpec, VersionChoice};
use crate::state::{AppState, ServedModel};
use crate::tensor::Tensor;
use request::parse_predict_request;

use service::DECODE_INLINE_MAX;

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
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies reach the handlers decompressed; `read_body` holds them to --max_body_bytes.
        .layer(RequestDecompressionLayer::new().gzip(true).deflate(true))
        .layer(MapResponseLayer::new(unsupported_encoding))
        .layer(axum::middleware::from_fn(drain::drain_unread_body))
        .with_state(state)
}

/// tower-http answers a Content-Encoding it cannot decode with an empty 415: say why in JSON.
fn unsupported_encoding(response: Response) -> Response {
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

/// A request body, read by the handler once the request is admitted (see [`read_body`]).
type Body = axum::body::Body;

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

fn spec<'a>(name: &'a str, version: VersionChoice<'a>) -> ModelSpec<'a> {
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
    let guard = metrics().request(st, name, "rest", "status");
    let result = status_json(st, name, version);
    guard.finish(&result);
    result
}

fn status_json(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
) -> Result<Response, ApiError> {
    let entries: Vec<Value> = service::status(st, &spec(name, version))?
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
            entry
        })
        .collect();
    Ok(Json(json!({ "model_version_status": entries })).into_response())
}

fn metadata(st: &AppState, name: &str, version: VersionChoice<'_>) -> Result<Response, ApiError> {
    let mut guard = metrics().request(st, name, "rest", "metadata");
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
    let model = service::resolve(st, &spec(name, version))?;
    guard.version(model.version);
    Ok(Json(json!({
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version.to_string()},
        "metadata": {
            "signature_def": {
                "signature_def": {DEFAULT_SIGNATURE: model.api_signature().signature_def()}
            },
            "engine": model.engine.name(),
        },
    }))
    .into_response())
}

async fn call(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    method: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let label = match method {
        "predict" => "predict",
        "classify" => "classify",
        "regress" => "regress",
        _ => "other",
    };
    let mut guard = metrics().request(st, name, "rest", label);
    let limit = st.limits.request_timeout;
    let call = predict_call(st, name, version, method, body, &mut guard);
    let result = match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::DeadlineExceeded(format!(
            "the request took longer than {} ms (--rest_api_timeout_in_ms): a slow upload, or a model run that long",
            limit.as_millis()
        ))),
    };
    guard.finish(&result);
    result
}

async fn predict_call(
    st: &AppState,
    name: &str,
    version: VersionChoice<'_>,
    method: &str,
    body: Body,
    guard: &mut RequestGuard,
) -> Result<Response, ApiError> {
    match method {
        "predict" => {}
        "classify" | "regress" => {
            return Err(service::predict_only(
                &format!(":{method}"),
                &format!(":predict (POST /v1/models/{name}:predict)"),
            ))
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown method ':{other}'; ONNX models are served through :predict"
            )))
        }
    }
    let model = service::resolve(st, &spec(name, version))?;
    guard.version(model.version);
    // Refused before the body is even read when the queue stays full: cheap under a flood.
    model.pool.admit().await?;
    let body = read_body(body, st.limits.max_body_bytes).await?;
    // Image decoding takes milliseconds: never on the async executor.
    let (inputs, format) = if body.len() > DECODE_INLINE_MAX || model.serving.is_some() {
        let decoding = model.clone();
        service::off_executor(move || decode_predict(&decoding, &body)).await?
    } else {
        decode_predict(&model, &body)?
    };
    let outputs = service::predict(&model, inputs).await?;
    let sig = model.api_signature();
    let json = match format {
        Format::Rows { batch } => codec::predictions_json(sig, &outputs, batch)?,
        Format::Columns => codec::outputs_json(sig, &outputs)?,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Which of TF Serving's two request formats the client used; the response follows it.
enum Format {
    Rows { batch: usize },
    Columns,
}

fn decode_predict(model: &ServedModel, body: &[u8]) -> Result<(Vec<Tensor>, Format), ApiError> {
    let request = parse_predict_request(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON request: {e}")))?;
    service::check_signature_name(request.signature_name.as_deref().unwrap_or_default())?;
    if let Some(serving) = &model.serving {
        return match (&request.instances, &request.inputs) {
            (Some(instances), None) => Ok((
                vec![images::from_instances(
                    serving,
                    &model.signature,
                    instances,
                )?],
                Format::Rows {
                    batch: instances.len(),
                },
            )),
            (None, Some(inputs)) => Ok((
                vec![images::from_inputs(serving, &model.signature, inputs)?],
                Format::Columns,
            )),
            _ => Err(format_error(request.instances.is_some())),
        };
    }
    match (request.instances, request.inputs) {
        (Some(instances), None) => {
            let tensors = codec::tensors_from_instances(&model.signature, &instances)?;
            Ok((
                tensors,
                Format::Rows {
                    batch: instances.len(),
                },
            ))
        }
        (None, Some(inputs)) => Ok((
            codec::tensors_from_inputs(&model.signature, &inputs)?,
            Format::Columns,
        )),
        (both, _) => Err(format_error(both.is_some())),
    }
}

fn format_error(both: bool) -> ApiError {
    ApiError::BadRequest(if both {
        "send either 'instances' (row format) or 'inputs' (columnar format), not both".into()
    } else {
        "the request needs an 'instances' (row format) or an 'inputs' (columnar format) key".into()
    })
}

/// The whole body, up to `limit` bytes (decompressed): 413 past it, 400 if it cannot be read
/// (the connection broke, a gzip body is damaged).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge(format!(
                    "the request body is larger than the server's limit of {limit} bytes (--max_body_bytes)"
                ));
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    })
}

/// Prometheus' text exposition of [`crate::metrics`].
async fn prometheus_metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = metrics().render(&st).map_err(ApiError::Internal)?;
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
        "no route for {}; the API is GET /v1/models/<name>[/versions/<v> or /labels/<label>][/metadata] and POST /v1/models/<name>[/versions/<v> or /labels/<label>]:predict",
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
