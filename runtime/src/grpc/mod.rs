//! TensorFlow Serving's gRPC API on `--port` (8500), over tonic, beside the REST API and
//! sharing its models, workers, queue, batching and limits: `PredictionService` (Predict,
//! GetModelMetadata), `ModelService` (GetModelStatus), the Open Inference Protocol's
//! `inference.GRPCInferenceService` (`inference`), the standard `grpc.health.v1.Health`
//! service and server reflection (v1 and v1alpha, for grpcurl). Requests are turned into
//! tensors here; the rules live in `serving`, shared with REST.

pub mod inference;
mod model;
mod prediction;
pub mod tensor;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tonic::codegen::http::{HeaderValue, Response};
use tonic::{Code, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::error::ApiError;
use crate::models::{AppState, Models, ServedModel};
use crate::proto::{self, tensorflow::serving as pb};
use crate::serving::{self, VersionChoice};
use pb::model_service_server::ModelServiceServer;
use pb::prediction_service_server::PredictionServiceServer;
use proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;

/// The gRPC server's settings (flags of `runtime serve`).
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// Largest request message, in bytes; larger ones get RESOURCE_EXHAUSTED.
    pub max_receive_message_bytes: usize,
    /// Answer with `tensor_content` bytes instead of typed fields (`float_val` ...).
    pub response_tensor_content: bool,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            max_receive_message_bytes: 64 * 1024 * 1024,
            response_tensor_content: false,
        }
    }
}

/// The gRPC status for an API error, as TF Serving maps them: INVALID_ARGUMENT for the
/// client's mistakes, NOT_FOUND for unknown models, versions and labels, UNAVAILABLE while
/// loading, RESOURCE_EXHAUSTED for a full queue or an oversized message.
pub fn status(e: ApiError) -> Status {
    let code = Code::from_i32(e.code().0);
    if code == Code::Internal {
        tracing::error!(grpc_code = ?code, "{e}");
    } else {
        tracing::debug!(grpc_code = ?code, "{e}");
    }
    Status::new(code, e.to_string())
}

/// Records a gRPC call's outcome on its metrics guard.
pub fn finish<T>(guard: serving::RequestGuard, result: &Result<T, Status>) {
    guard.finish_as(match result {
        Ok(_) => "OK",
        Err(s) => code_name(s.code()),
    });
}

/// The canonical name of a gRPC status code ("INVALID_ARGUMENT").
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::Unknown => "UNKNOWN",
    }
}

/// The request's `ModelSpec` in the protocol-neutral form; INVALID_ARGUMENT when it is missing,
/// has no name, or names a negative version.
pub fn model_spec(spec: Option<&pb::ModelSpec>) -> Result<serving::ModelSpec<'_>, Status> {
    let spec = spec.ok_or_else(|| {
        status(ApiError::BadRequest(
            "the request has no model_spec: set model_spec.name to the model's name".into(),
        ))
    })?;
    serving::require_name(&spec.name).map_err(status)?;
    let version = match &spec.version_choice {
        None => VersionChoice::Latest,
        Some(pb::model_spec::VersionChoice::Version(v)) => match u64::try_from(*v) {
            Ok(v) => VersionChoice::Number(v),
            Err(_) => {
                return Err(status(ApiError::BadRequest(format!(
                    "model_spec.version is {v}; versions are folder numbers such as 1"
                ))))
            }
        },
        Some(pb::model_spec::VersionChoice::VersionLabel(l)) => VersionChoice::Label(l),
    };
    Ok(serving::ModelSpec {
        name: &spec.name,
        version,
        signature_name: &spec.signature_name,
    })
}

/// The `ModelSpec` a response carries: the model, the version that answered, the signature.
pub fn served_spec(model: &ServedModel, signature: &str) -> pb::ModelSpec {
    pb::ModelSpec {
        name: model.name.clone(),
        version_choice: Some(pb::model_spec::VersionChoice::Version(model.version as i64)),
        signature_name: signature.into(),
    }
}

/// Every service on one tonic router, and the reporter that sets the health service's answers.
pub fn routes(
    state: Arc<AppState>,
    opts: &GrpcOptions,
) -> Result<(tonic::service::Routes, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let limit = opts.max_receive_message_bytes;
    let prediction = PredictionServiceServer::new(prediction::Prediction::new(state.clone(), opts))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let models = ModelServiceServer::new(model::Models::new(state.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let inference = GrpcInferenceServiceServer::new(inference::Inference::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .context("cannot build gRPC reflection (v1)")?;
    let v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build gRPC reflection (v1alpha)")?;
    let mut routes = tonic::service::Routes::new(prediction);
    routes = routes
        .add_service(models)
        .add_service(inference)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((routes, reporter))
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets in-flight calls finish. The
/// health service follows the models: a model's name is SERVING while it has an AVAILABLE
/// version; "" and the three services are SERVING while every model has one; all turn
/// NOT_SERVING from the start of shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    opts: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (routes, reporter) = routes(state.clone(), &opts)?;
    // Subscribe first, then set the first answers before the first call can come in: a change
    // in between is then still seen by the follower.
    let changes = state.watch_models();
    let named = set_health(&reporter, &state, Vec::new()).await;
    let follow = tokio::spawn(follow_health(
        state.clone(),
        reporter.clone(),
        changes,
        named,
    ));
    let shutdown = {
        let reporter = reporter.clone();
        let state = state.clone();
        async move {
            shutdown.await;
            follow.abort();
            let _ = follow.await; // no SERVING written after the NOT_SERVING below
            for (name, _) in health(&state) {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        }
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Larger HTTP/2 windows and frames than hyper's defaults (1 MB windows, 16 KB frames): a
    // 600 KB tensor then arrives in one frame and without waiting for window updates. ResNet-50's
    // overhead over its own run fell from ~5.5 % to ~2 % (BENCHMARKS.md, "gRPC vs REST").
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some(1 << 20))
        .layer(tower::util::MapResponseLayer::new(size_limit_code(
            opts.max_receive_message_bytes,
        )))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed")
}

/// What the health service answers for each name: "" (the whole server) and the three
/// services (TF Serving's two, V2's) are SERVING when every model has an AVAILABLE version; each model's name
/// when it has one.
fn health(state: &AppState) -> Vec<(String, ServingStatus)> {
    let models = state.models();
    let serving = |yes: bool| {
        if yes {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let all = !models.is_empty() && models.values().all(|m| m.latest_available().is_some());
    let mut names: Vec<(String, ServingStatus)> = [
        "",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        inference::SERVICE,
    ]
    .into_iter()
    .map(|n| (n.to_string(), serving(all)))
    .collect();
    for (name, entry) in models.iter() {
        names.push((name.clone(), serving(entry.latest_available().is_some())));
    }
    names
}

/// Sets every health answer; names answered before (in `before`) that are gone (a model
/// removed from the config) are forgotten. Returns the names answered now.
async fn set_health(
    reporter: &HealthReporter,
    state: &AppState,
    before: Vec<String>,
) -> Vec<String> {
    let now = health(state);
    for name in before {
        if !now.iter().any(|(n, _)| *n == name) {
            reporter.clone().clear_service_status(&name).await;
        }
    }
    let mut names = Vec::with_capacity(now.len());
    for (name, status) in now {
        reporter.set_service_status(&name, status).await;
        names.push(name);
    }
    names
}

async fn follow_health(
    state: Arc<AppState>,
    reporter: HealthReporter,
    mut changes: tokio::sync::watch::Receiver<Models>,
    mut named: Vec<String>,
) {
    while changes.changed().await.is_ok() {
        named = set_health(&reporter, &state, named).await;
    }
}

/// tonic refuses an oversized message with OUT_OF_RANGE; gRPC's other servers (TF Serving
/// included) say RESOURCE_EXHAUSTED, which is what clients retry or report on. This rewrites
/// that one answer, and says which flag raises the limit.
fn size_limit_code<B>(limit: usize) -> impl Fn(Response<B>) -> Response<B> + Clone {
    move |mut response| {
        let headers = response.headers_mut();
        let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
            && headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .is_some_and(|m| m.contains("message") && m.contains("too") && m.contains("large"));
        if too_large {
            // Printable ASCII without '%' needs no percent-encoding in grpc-message.
            let message = format!(
                "Received message larger than max: this server takes request messages up to {limit} bytes (--grpc_max_receive_message_bytes)"
            );
            headers.insert("grpc-status", HeaderValue::from_static("8"));
            if let Ok(v) = HeaderValue::from_str(&message) {
                headers.insert("grpc-message", v);
            }
        }
        response
    }
}
