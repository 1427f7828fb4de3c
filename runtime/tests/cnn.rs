//! A real CNN (the `onnx` wheel's SqueezeNet, with SqueezeNet 1.1's layout and seeded weights;
//! see scripts/fetch_test_models.py) served through the API, checked against onnxruntime's output.

mod common;

use std::path::PathBuf;

use axum::http::StatusCode;
use base64::Engine;
use common::*;
use runtime::Limits;
use serde_json::{json, Value};

fn test_models() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".cache")
                .join("models")
        })
}

fn reference(dir: &std::path::Path) -> Value {
    let path = dir.join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. The CNN test models are made by `make test-models` (make test runs it first)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("reference.json is JSON")
}

/// Nests a flat list into the given shape.
fn nest(flat: &[Value], shape: &[usize]) -> Value {
    if shape.is_empty() {
        return flat[0].clone();
    }
    let inner: usize = shape[1..].iter().product();
    Value::Array(
        (0..shape[0])
            .map(|i| nest(&flat[i * inner..(i + 1) * inner], &shape[1..]))
            .collect(),
    )
}

#[tokio::test]
async fn squeezenet_matches_onnxruntime() {
    let dir = test_models().join("squeezenet");
    let reference = reference(&dir);
    let shape: Vec<usize> = serde_json::from_value(reference["input_shape"].clone()).unwrap();
    let input = nest(reference["input"].as_array().unwrap(), &shape);
    let app = app_from(&dir, "squeezenet", 1, 4, Limits::default());

    // Row format: the one instance is the input without its batch dimension.
    let body = json!({"instances": [input[0]]}).to_string();
    let (status, got) = post(&app, "/v1/models/squeezenet:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let predictions = flat(&got["predictions"]);
    let want: Vec<f64> = reference["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(predictions.len(), want.len());
    let max_diff = predictions
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_diff < 1e-4,
        "tract and onnxruntime differ by {max_diff}"
    );
    let argmax = predictions
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(argmax as u64, reference["argmax"].as_u64().unwrap());

    // Columnar format gives the same numbers.
    let body = json!({"inputs": {reference["input_name"].as_str().unwrap(): input}}).to_string();
    let (status, got) = post(&app, "/v1/models/squeezenet:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_close(&got["outputs"], &json!(want), 1e-4);

    // A wrong image size is refused with the expected shape.
    let (status, got) = post(
        &app,
        "/v1/models/squeezenet:predict",
        r#"{"instances": [[[[0.5]]]]}"#,
    )
    .await;
    assert_error(
        status,
        &got,
        StatusCode::BAD_REQUEST,
        &["[1, 3, 224, 224]", "[1, 1, 1, 1]"],
    );
}

/// SqueezeNet's output is `[1, 1000, 1, 1]` (Caffe2's export): an image signature's `[output]`
/// reads it as `[batch, classes]`; the class answered is the argmax of the probabilities answered,
/// which are the model's softmax (they sum to 1).
#[tokio::test]
async fn a_class_output_with_trailing_ones_is_post_processed() {
    let base = test_models();
    let dir = std::env::temp_dir().join(format!("onnx-serving-squeeze-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::copy(
        base.join("squeezenet/1/model.onnx"),
        dir.join("1/model.onnx"),
    )
    .expect("squeezenet from make test-models");
    std::fs::write(
        dir.join("1/signature.toml"),
        "[input]\nkind = \"image\"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n\
         [output]\nactivation = \"none\"\ntop_k = 3\n\
         emit = [\"classes\", \"probabilities\", \"top_k_classes\"]\n",
    )
    .unwrap();
    let cat = std::fs::read(base.join("cat.jpg")).expect("cat.jpg from make example-model");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cat);
    let app = app_from(&dir, "squeezenet", 1, 4, Limits::default());
    let body = json!({"instances": [{"b64": b64}]}).to_string();
    let (status, got) = post(&app, "/v1/models/squeezenet:predict", &body).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, StatusCode::OK, "{got}");
    let p = &got["predictions"][0];
    let probabilities: Vec<f64> = p["probabilities"]
        .as_array()
        .expect("probabilities")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probabilities.len(), 1000);
    let sum: f64 = probabilities.iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "softmax sums to {sum}");
    let argmax = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(p["classes"].as_u64(), Some(argmax as u64), "{p}");
    assert_eq!(p["top_k_classes"][0].as_u64(), Some(argmax as u64), "{p}");
    assert_eq!(p["top_k_classes"].as_array().map(Vec::len), Some(3));
}

/// The walk-through's real model (`make example-model`): pretrained EfficientNet-Lite0 with its
/// signature.toml, served as `resnet`; the cat photo must come back as a cat, by either path.
#[tokio::test]
async fn efficientnet_sees_the_cat() {
    let base = test_models();
    let dir = base.join("efficientnet");
    let reference = reference(&dir);
    let app = app_from(&dir, "resnet", 1, 4, Limits::default());
    let cat = std::fs::read(base.join("cat.jpg")).expect("cat.jpg from make example-model");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cat);

    // The article's client: JPEG bytes in, predictions[0]['classes'] out.
    let body = json!({"instances": [{"b64": b64}]}).to_string();
    let (status, got) = post(&app, "/v1/models/resnet:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let p = &got["predictions"][0];
    let class = p["classes"].as_i64().expect("classes");
    assert!(
        (281..=285).contains(&class),
        "not a cat: {class} {}",
        p["top_k_labels"]
    );
    assert_eq!(class, reference["top5_classes"][0].as_i64().unwrap());
    // Same photo, PNG through Pillow + onnxruntime: same top class, close probability.
    let want = reference["top5_probabilities"][0].as_f64().unwrap();
    let prob = p["top_k_probabilities"][0].as_f64().unwrap();
    assert!((prob - want).abs() < 0.05, "p {prob} vs onnxruntime {want}");
    assert!(p["top_k_labels"][0].as_str().unwrap().contains("cat"));

    // Today's client: the PNG decoded to an HWC tensor of 0-1 floats at its own size.
    let png = std::fs::read(base.join("cat.png")).expect("cat.png");
    let img = image::load_from_memory(&png).expect("png").to_rgb8();
    let rows: Vec<Value> = img
        .rows()
        .map(|row| {
            Value::Array(
                row.map(|px| json!(px.0.map(|v| f64::from(v) / 255.0)))
                    .collect(),
            )
        })
        .collect();
    let body = json!({"instances": [rows]}).to_string();
    let (status, got) = post(&app, "/v1/models/resnet:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["predictions"][0]["classes"].as_i64(), Some(class));

    // Several photos in one request (run instance by instance on the batch-1 plan): the same
    // answer for each.
    let body = json!({"instances": [{"b64": b64}, {"b64": b64}, {"b64": b64}]}).to_string();
    let (status, got) = post(&app, "/v1/models/resnet:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    for row in got["predictions"].as_array().expect("predictions") {
        assert_eq!(row["classes"].as_i64(), Some(class));
        assert!((row["top_k_probabilities"][0].as_f64().unwrap() - prob).abs() < 1e-6);
    }
}
