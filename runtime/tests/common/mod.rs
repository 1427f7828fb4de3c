//! Shared by the runtime's integration tests: fixtures, in-process app, JSON helpers.
#![allow(dead_code)]

pub mod process;
pub mod squeezenet;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use runtime::engine::EngineChoice;
use runtime::models::find_latest_version;
use runtime::models::{load_and_warm_up, PoolOptions};
use runtime::proto::tensorflow::serving::{ModelSpec, PredictRequest};
use runtime::proto::tensorflow::{DataType, TensorProto};
use runtime::{AppState, Limits, Servable};
use serde_json::Value;
use tower::ServiceExt;

/// A DT_FLOAT tensor of `dims` holding `values` in `float_val`.
pub fn float_tensor(dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(runtime::grpc::tensor::known_shape(dims.iter().copied())),
        float_val: values.to_vec(),
        ..Default::default()
    }
}

/// A Predict request for the latest version of `model` with one input.
pub fn predict_request(model: &str, input: &str, tensor: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: [(input.to_string(), tensor)].into(),
        output_filter: vec![],
    }
}

/// Serves `state` over gRPC on a free loopback port, in this process (until the test's runtime
/// ends); returns the port.
pub async fn serve_grpc(state: Arc<AppState>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(runtime::grpc::serve(
        listener,
        state,
        runtime::grpc::GrpcOptions::default(),
        std::future::pending(),
    ));
    port
}

/// A channel to a gRPC server on the loopback `port`.
pub async fn grpc_channel(port: u16) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("a loopback URI")
        .connect()
        .await
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn models() -> PathBuf {
    fixtures().join("models")
}

/// A model base path in a fresh temporary folder (`onnx-serving-<tag>-<pid>`) holding the
/// `linear` fixture as `linear/1/model.onnx` with `optimization.json` beside it, as `builder
/// optimize` leaves a version: returns the base path (the model folder is `<base>/linear`).
pub fn linear_with_optimization(tag: &str, optimization_json: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("onnx-serving-{tag}-{}", std::process::id()));
    let version = base.join("linear/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(
        models().join("linear/1/model.onnx"),
        version.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(version.join("optimization.json"), optimization_json).unwrap();
    base
}

/// Expected inputs/outputs written by scripts/make_fixtures.py (numpy, checked with onnxruntime).
pub fn expected(model: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    let all: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    all[model].clone()
}

/// The app serving fixture `name`, loaded as the server loads it.
pub fn app_for(name: &str) -> axum::Router {
    app_with(name, 1, 64, Limits::default())
}

pub fn app_with(name: &str, workers: usize, queue: usize, limits: Limits) -> axum::Router {
    app_from(&models().join(name), name, workers, queue, limits)
}

pub fn app_from(
    dir: &std::path::Path,
    name: &str,
    workers: usize,
    queue: usize,
    limits: Limits,
) -> axum::Router {
    app_pooled(dir, name, &pool_options(workers, queue), limits)
}

/// The engine the in-process tests run on: `ONNX_SERVING_TEST_ENGINE` (tract, onnxruntime or
/// auto), tract by default. `make test` runs the API tests once per engine.
pub fn test_engine() -> EngineChoice {
    match std::env::var("ONNX_SERVING_TEST_ENGINE").as_deref() {
        Ok("onnxruntime") => {
            require_onnxruntime();
            EngineChoice::Onnxruntime
        }
        Ok("auto") => EngineChoice::Auto,
        Ok("tract") | Err(_) => EngineChoice::Tract,
        Ok(other) => panic!("ONNX_SERVING_TEST_ENGINE={other}: use tract, onnxruntime or auto"),
    }
}

/// The engine name status and metadata report for [`test_engine`] (tract for auto, which only
/// the engines tests use).
pub fn engine_name() -> &'static str {
    match test_engine() {
        EngineChoice::Onnxruntime => "onnxruntime",
        _ => "tract",
    }
}

/// `workers` workers, a queue of `queue`, on [`test_engine`].
pub fn pool_options(workers: usize, queue: usize) -> PoolOptions {
    PoolOptions {
        engine: test_engine(),
        ..PoolOptions::new(workers, queue)
    }
}

/// Fails the test, with the fix, when onnxruntime's library cannot be loaded.
pub fn require_onnxruntime() {
    if let Err(why) = runtime::engine::onnxruntime::library() {
        panic!(
            "this test needs onnxruntime's library ({why}); `make onnxruntime` fetches it and \
             `make test` points ONNX_SERVING_ONNXRUNTIME_LIBRARY at it"
        );
    }
}

pub fn app_pooled(
    dir: &std::path::Path,
    name: &str,
    pool: &PoolOptions,
    limits: Limits,
) -> axum::Router {
    runtime::app(state_pooled(dir, name, pool, limits))
}

/// The shared state serving the model in `dir` as `name`, as the server loads it.
pub fn state_pooled(
    dir: &std::path::Path,
    name: &str,
    pool: &PoolOptions,
    limits: Limits,
) -> Arc<AppState> {
    let found = find_latest_version(dir).expect("model folder");
    let mut model = load_and_warm_up(&found, pool).expect("model loads");
    model.name = name.into();
    AppState::serving(
        name,
        model.version,
        Servable::Available(Arc::new(model)),
        limits,
    )
}

/// One request through the app: the status and the whole body.
async fn respond(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Body,
) -> (StatusCode, axum::body::Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .expect("request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("infallible service");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes)
}

/// `GET uri`: the status and the body as text (for answers that are not JSON).
pub async fn send_raw(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let (status, bytes) = respond(app, "GET", uri, Body::empty()).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// POSTs `body`; the status and the body as text (for answers that are not strict JSON).
pub async fn post_raw(app: &axum::Router, uri: &str, body: &str) -> (StatusCode, String) {
    let (status, bytes) = respond(app, "POST", uri, Body::from(body.to_string())).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

pub async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let (status, bytes) = respond(app, method, uri, body.into()).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {uri}: {status} body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

pub async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    send(app, "GET", uri, Body::empty()).await
}

pub async fn post(app: &axum::Router, uri: &str, body: &str) -> (StatusCode, Value) {
    send(app, "POST", uri, body.to_string()).await
}

/// Asserts a `{"error": "..."}` body with exactly that one key, mentioning every `needle`.
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needles: &[&str]) {
    assert_eq!(status, want, "body: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.len(), 1, "error body has other keys: {body}");
    let message = obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("'error' is not a string: {body}"));
    for needle in needles {
        assert!(
            message.contains(needle),
            "error {message:?} does not mention {needle:?}"
        );
    }
}

/// Flattens nested JSON arrays of numbers.
pub fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number")],
        Value::Bool(b) => vec![f64::from(u8::from(*b))],
        other => panic!("not a number: {other}"),
    }
}

pub fn assert_close(got: &Value, want: &Value, tol: f64) {
    let (g, w) = (flat(got), flat(want));
    assert_eq!(g.len(), w.len(), "got {got}, want {want}");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {i}: got {a}, want {b} (got {got}, want {want})"
        );
    }
}

/// The Python interpreter with the clients the tests use (grpcio, ...): the venv `make test`
/// makes; or the fix.
#[allow(dead_code)]
pub fn python() -> String {
    std::env::var("ONNX_SERVING_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ONNX_SERVING_TEST_PYTHON is not set: this test runs Python clients; `make test` points \
             it at .cache/venv (scripts/requirements-models.txt)"
        )
    })
}

/// Serves `model` (the `linear` fixture, loaded with batching) as `linear`, sends 12 concurrent
/// requests of 1 and 2 instances, each with its own values, and checks that each gets its own
/// rows back (`x * W[0] + b = [0.5, x*0.1 - 1, x*0.2 + 2]`) and that some shared a run.
pub async fn linear_requests_merge_and_answer_each_its_own(model: Arc<runtime::ServedModel>) {
    let app = runtime::app(AppState::serving(
        "linear",
        1,
        Servable::Available(model.clone()),
        Limits::default(),
    ));
    let requests = (0..12).map(|i| {
        let app = app.clone();
        async move {
            let body = if i % 3 == 0 {
                serde_json::json!({"instances": [[i, 0, 0, 0], [i + 100, 0, 0, 0]]})
            } else {
                serde_json::json!({"instances": [[i, 0, 0, 0]]})
            };
            (
                i,
                post(&app, "/v1/models/linear:predict", &body.to_string()).await,
            )
        }
    });
    for (i, (status, got)) in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{got}");
        let row = |x: f64| serde_json::json!([0.5, x * 0.1 - 1.0, x * 0.2 + 2.0]);
        let want = if i % 3 == 0 {
            serde_json::json!([row(i as f64), row(i as f64 + 100.0)])
        } else {
            serde_json::json!([row(i as f64)])
        };
        assert_close(&got["predictions"], &want, 1e-4);
    }
    let stats = model.pool.stats();
    assert_eq!(stats.requests, 12, "{stats:?}");
    assert!(
        stats.runs < stats.requests,
        "no request was merged into another's run: {stats:?}"
    );
}
