//! The gRPC API: a tonic client in-process (the generated client, a real HTTP/2 connection),
//! then Python's grpcio against real `runtime` servers (runtime/tests/grpc_client.py).

mod common;

use std::process::Command;
use std::sync::Arc;

use common::process::Server;
use common::*;
use runtime::proto::tensorflow::serving::model_service_client::ModelServiceClient;
use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use runtime::proto::tensorflow::serving::{
    model_spec, GetModelStatusRequest, ModelSpec, PredictRequest,
};
use runtime::{AppState, Limits, Servable};
use tonic::transport::Channel;
use tonic::Code;

/// Serves `state` over gRPC on a free loopback port; the server stops with the test's runtime.
async fn serve(state: Arc<AppState>) -> Channel {
    grpc_channel(serve_grpc(state).await)
        .await
        .expect("connect to the gRPC server")
}

fn spec(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn tonic_client_predicts_and_reads_status() {
    let state = state_pooled(
        &models().join("linear"),
        "linear",
        &pool_options(1, 8),
        Limits::default(),
    );
    let channel = serve(state).await;
    let want = expected("linear");
    let x: Vec<f32> = flat(&want["inputs"]["x"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    let mut client = PredictionServiceClient::new(channel.clone());
    let response = client
        .predict(PredictRequest {
            model_spec: spec("linear"),
            inputs: [("x".to_string(), float_tensor(&[2, 4], &x))].into(),
            output_filter: vec![],
        })
        .await
        .expect("Predict")
        .into_inner();
    let y = &response.outputs["y"];
    let got: Vec<f64> = y.float_val.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(got.len(), 6, "y as float_val: {got:?}");
    let dims: Vec<i64> = y
        .tensor_shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.size)
        .collect();
    assert_eq!(dims, [2, 3]);
    for (g, w) in got.iter().zip(flat(&want["outputs"]["y"])) {
        assert!((g - w).abs() < 1e-5, "{got:?}");
    }
    assert_eq!(
        response.model_spec.unwrap().version_choice,
        Some(model_spec::VersionChoice::Version(1))
    );

    let err = client
        .predict(PredictRequest {
            model_spec: spec("linear"),
            inputs: [("x".to_string(), float_tensor(&[1, 3], &[1.0, 2.0, 3.0]))].into(),
            output_filter: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("[-1, 4]"), "{}", err.message());

    let status = ModelServiceClient::new(channel)
        .get_model_status(GetModelStatusRequest {
            model_spec: spec("linear"),
        })
        .await
        .expect("GetModelStatus")
        .into_inner();
    assert_eq!(status.model_version_status[0].state, 30, "AVAILABLE");
}

/// The health service's answer for `service`.
async fn health(channel: &Channel, service: &str) -> i32 {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("Health/Check")
        .into_inner()
        .status
}

#[tokio::test]
async fn health_follows_the_model_from_loading_to_available() {
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let loaded = state_pooled(
        &models().join("linear"),
        "linear",
        &pool_options(1, 8),
        Limits::default(),
    )
    .models()["linear"]
        .versions[&1]
        .clone();
    let state = AppState::serving("linear", 1, Servable::Loading, Limits::default());
    let channel = serve(state.clone()).await;
    for service in ["", "linear", "tensorflow.serving.PredictionService"] {
        assert_eq!(
            health(&channel, service).await,
            NOT_SERVING,
            "{service:?} while loading"
        );
    }
    state.set_version("linear", 1, loaded);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while health(&channel, "linear").await != SERVING {
        assert!(
            std::time::Instant::now() < deadline,
            "health never turned SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(health(&channel, "").await, SERVING);
}

#[tokio::test]
async fn a_loading_model_is_unavailable() {
    let state = AppState::serving("m", 3, Servable::Loading, Limits::default());
    let channel = serve(state).await;
    let err = PredictionServiceClient::new(channel.clone())
        .predict(PredictRequest {
            model_spec: spec("m"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("still loading"), "{}", err.message());
    let status = ModelServiceClient::new(channel.clone())
        .get_model_status(GetModelStatusRequest {
            model_spec: spec("m"),
        })
        .await
        .unwrap()
        .into_inner();
    let v = &status.model_version_status[0];
    assert_eq!((v.version, v.state), (3, 20), "version 3 LOADING");
    let err = PredictionServiceClient::new(channel)
        .predict(PredictRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("model_spec"), "{}", err.message());
}

#[test]
fn python_grpcio_client_against_real_servers() {
    let servers = [
        ("GRPC_MULTI_IO", Server::start("multi_io", &[])),
        ("GRPC_DTYPES", Server::start("dtypes", &[])),
        ("GRPC_IMAGE", Server::start("image_classifier", &[])),
        (
            "GRPC_SLOW",
            Server::start(
                "slow",
                &[
                    "--inference_workers",
                    "1",
                    "--inference_threads",
                    "1",
                    "--queue_capacity",
                    "1",
                ],
            ),
        ),
        (
            "GRPC_SMALL",
            Server::start(
                "multi_io",
                &[
                    "--grpc_max_receive_message_bytes",
                    "4096",
                    "--grpc_response_tensor_content",
                ],
            ),
        ),
    ];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client.py");
    let stubs = std::env::temp_dir().join(format!("onnx-serving-stubs-{}", std::process::id()));
    let out = Command::new(python())
        .arg(&script)
        .envs(
            servers
                .iter()
                .map(|(var, s)| (*var, s.grpc_port.to_string())),
        )
        .env("FIXTURES", fixtures())
        .env("ONNX_SERVING_STUBS_DIR", &stubs)
        .output()
        .expect("run python");
    let _ = std::fs::remove_dir_all(&stubs);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpc_client.py failed:\n{report}");
    // The run must have run the tests, not skipped them.
    assert!(
        report.contains("OK") && !report.contains("skipped"),
        "{report}"
    );
}
