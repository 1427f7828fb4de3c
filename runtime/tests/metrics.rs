//! Prometheus metrics: known traffic over REST and gRPC, then a scrape whose counts must match,
//! checked by `promtool check metrics` (Debian's prometheus package; `make setup` installs it).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use common::*;
use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use runtime::Limits;

const MODEL: &str = "metrics_linear";

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn grpc_predict(port: u16, x: &[f32]) {
    let channel = grpc_channel(port).await.expect("connect");
    PredictionServiceClient::new(channel)
        .predict(predict_request(MODEL, "x", float_tensor(&[1, 4], x)))
        .await
        .expect("gRPC Predict");
}

#[tokio::test]
async fn scrape_counts_the_traffic_and_passes_promtool() {
    let state = state_pooled(
        &models().join("linear"),
        MODEL,
        &pool_options(1, 8),
        Limits::default(),
    );
    state.enable_metrics(runtime::metrics::DEFAULT_PATH);
    let app = runtime::app(state.clone());
    let grpc_port = serve_grpc(state).await;

    let predict = format!("/v1/models/{MODEL}:predict");
    for _ in 0..3 {
        let (s, b) = post(&app, &predict, r#"{"instances": [[1, 2, 3, 4]]}"#).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, _) = post(&app, &predict, r#"{"instances": [[1, 2, 3]]}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&app, &format!("/v1/models/{MODEL}")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(&app, "/v1/models/some_client_string:predict", "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for _ in 0..2 {
        grpc_predict(grpc_port, &[1.0, 2.0, 3.0, 4.0]).await;
    }
    let v2 =
        r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#;
    let (s, b) = post(&app, &format!("/v2/models/{MODEL}/infer"), v2).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (status, text) = send_raw(&app, runtime::metrics::DEFAULT_PATH).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let requests = |api, method, status| {
        sample(
            &text,
            "onnx_serving_requests_total",
            &[
                ("model", MODEL),
                ("api", api),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("rest", "predict", "OK"), Some(3.0), "{text}");
    assert_eq!(requests("rest", "predict", "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(requests("rest", "status", "OK"), Some(1.0));
    assert_eq!(requests("grpc", "predict", "OK"), Some(2.0));
    assert_eq!(requests("v2", "infer", "OK"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "onnx_serving_requests_total",
            &[("model", "_unknown"), ("status", "NOT_FOUND")]
        ),
        Some(1.0),
        "a client's model name is not a label value"
    );
    assert!(!text.contains("some_client_string"));
    assert_eq!(
        sample(
            &text,
            "onnx_serving_inference_duration_seconds_count",
            &[("model", MODEL), ("version", "1")]
        ),
        Some(6.0),
        "one engine run per answered predict or infer"
    );
    assert_eq!(
        sample(
            &text,
            "onnx_serving_request_duration_seconds_count",
            &[("model", MODEL), ("api", "rest"), ("method", "predict")]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "onnx_serving_model_state",
            &[("model", MODEL), ("version", "1"), ("state", "AVAILABLE")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "onnx_serving_requests_in_flight",
            &[("model", MODEL), ("api", "rest")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "onnx_serving_queue_depth", &[("model", MODEL)]),
        Some(0.0)
    );
    assert!(sample(
        &text,
        "onnx_serving_model_load_duration_seconds",
        &[("model", MODEL)]
    )
    .is_some_and(|s| s > 0.0));
    assert!(
        sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6),
        "{text}"
    );

    // The exposition format, checked by Prometheus' own tool.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool ({e}): install Debian's prometheus package (make setup does)")
        });
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_sizes_are_recorded_with_batching() {
    const NAME: &str = "metrics_batching";
    // One worker that waits up to 50 ms for a batch: four concurrent requests share runs.
    let pool = runtime::models::PoolOptions {
        batching: Some(
            runtime::pool::Batching::new(4, std::time::Duration::from_millis(50), &[]).unwrap(),
        ),
        model_name: NAME.into(),
        ..pool_options(1, 16)
    };
    let state = state_pooled(&models().join("linear"), NAME, &pool, Limits::default());
    state.enable_metrics(runtime::metrics::DEFAULT_PATH);
    let app = runtime::app(state);
    let path = format!("/v1/models/{NAME}:predict");
    let requests = (0..4).map(|_| post(&app, &path, r#"{"instances": [[1, 2, 3, 4]]}"#));
    for (s, b) in futures_util::future::join_all(requests).await {
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, text) = send_raw(&app, runtime::metrics::DEFAULT_PATH).await;
    let runs = sample(&text, "onnx_serving_batch_size_count", &[("model", NAME)]);
    let instances = sample(&text, "onnx_serving_batch_size_sum", &[("model", NAME)]);
    assert_eq!(instances, Some(4.0), "every instance counted once:\n{text}");
    assert!(
        runs.is_some_and(|r| (1.0..4.0).contains(&r)),
        "merged runs: {runs:?}\n{text}"
    );
}

#[tokio::test]
async fn no_metrics_route_unless_enabled() {
    let app = app_for("linear");
    let (status, _) = send_raw(&app, runtime::metrics::DEFAULT_PATH).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
