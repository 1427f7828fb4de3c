//! Image signatures (`signature.toml`) through the HTTP API: preprocessing against Pillow's,
//! the b64 and tensor paths against each other, post-processing, and every bad image a 400.

mod common;

use axum::http::StatusCode;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn image(name: &str) -> Vec<u8> {
    let path = fixtures().join("images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_request(bytes: &[u8]) -> String {
    json!({"instances": [{"b64": b64(bytes)}]}).to_string()
}

/// Max and mean absolute difference between two nested arrays of numbers.
fn diff(got: &Value, want: &Value) -> (f64, f64) {
    let (g, w) = (flat(got), flat(want));
    assert_eq!(g.len(), w.len(), "different sizes");
    let d: Vec<f64> = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).collect();
    (
        d.iter().copied().fold(0.0, f64::max),
        d.iter().sum::<f64>() / d.len() as f64,
    )
}

#[tokio::test]
async fn png_preprocessing_matches_pillow() {
    let app = app_for("image_identity");
    let want = &expected("image_identity")["pillow_nchw"];
    let (status, got) = post(
        &app,
        "/v1/models/image_identity:predict",
        &b64_request(&image("photo.png")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let (max, mean) = diff(&got["predictions"][0], want);
    eprintln!("b64 PNG vs Pillow: max {max:.4}, mean {mean:.5}");
    // Same filter and crop as Pillow's BILINEAR; both round to 8 bits once. One level of
    // 255 is 0.0157 after the smallest std (0.25).
    assert!(
        max <= 0.02 && mean <= 0.003,
        "max {max}, mean {mean}: {got}"
    );
}

#[tokio::test]
async fn tensor_path_matches_the_b64_path() {
    let app = app_for("image_identity");
    let fixture = expected("image_identity");
    // What today's resnet_client.py sends: the photo at its own size, HWC, pixel / 255.
    let body = json!({"instances": [fixture["photo_hwc"]]}).to_string();
    let (status, tensor) = post(&app, "/v1/models/image_identity:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{tensor}");
    let (_, from_png) = post(
        &app,
        "/v1/models/image_identity:predict",
        &b64_request(&image("photo.png")),
    )
    .await;
    let (max, _) = diff(&tensor["predictions"][0], &from_png["predictions"][0]);
    assert!(max <= 0.035, "tensor vs b64 PNG: max {max}");
    let (max, mean) = diff(&tensor["predictions"][0], &fixture["pillow_nchw"]);
    assert!(
        max <= 0.035 && mean <= 0.006,
        "tensor vs Pillow: max {max}, mean {mean}"
    );

    // Columnar: the same image as a batch of one, and named by the public input.
    let body = json!({"inputs": {"image_bytes": [fixture["photo_hwc"]]}}).to_string();
    let (status, columnar) = post(&app, "/v1/models/image_identity:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{columnar}");
    assert_close(&columnar["outputs"][0], &tensor["predictions"][0], 1e-6);
}

#[tokio::test]
async fn classes_labels_and_probabilities() {
    let app = app_for("image_classifier");
    let body = json!({"instances": [
        {"b64": b64(&image("red.jpg"))},
        {"image_bytes": {"b64": b64(&image("blue.png"))}},
        [[[0.0, 1.0, 0.0]]],
    ]})
    .to_string();
    let (status, got) = post(&app, "/v1/models/image_classifier:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let rows = got["predictions"].as_array().expect("predictions");
    // label_offset = 1: class ids count from 1, labels do not move.
    let classes: Vec<i64> = rows
        .iter()
        .map(|r| r["classes"].as_i64().unwrap())
        .collect();
    assert_eq!(classes, [1, 3, 2], "{got}");
    let labels: Vec<&str> = rows.iter().map(|r| r["labels"].as_str().unwrap()).collect();
    assert_eq!(labels, ["red", "blue", "green"]);
    for row in rows {
        let p = flat(&row["probabilities"]);
        assert_eq!(p.len(), 4);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5, "softmax: {p:?}");
        assert_eq!(row["top_k_classes"].as_array().unwrap().len(), 2);
        assert_eq!(row["top_k_labels"][0], row["labels"]);
        assert_eq!(row["top_k_classes"][0], row["classes"]);
    }
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");

    // The metadata describes what clients send and get, not the ONNX graph.
    let (status, meta) = get(&app, "/v1/models/image_classifier/metadata").await;
    assert_eq!(status, StatusCode::OK);
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["image_bytes"]["dtype"], "DT_STRING", "{sig}");
    assert_eq!(sig["outputs"]["classes"]["dtype"], "DT_INT64");
    assert_eq!(sig["outputs"]["labels"]["dtype"], "DT_STRING");
    assert_eq!(
        sig["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"],
        "4"
    );
    assert!(sig["inputs"].get("pixels").is_none());
}

#[tokio::test]
async fn columnar_b64_lists_hold_one_image_per_batch_entry() {
    let app = app_for("image_classifier");
    let uri = "/v1/models/image_classifier:predict";
    let (red, blue) = (b64(&image("red.jpg")), b64(&image("blue.png")));
    for (body, classes) in [
        (
            json!({"inputs": {"image_bytes": [{"b64": red}, {"b64": blue}]}}),
            json!([1, 3]),
        ),
        (json!({"inputs": [{"b64": blue}]}), json!([3])),
        (json!({"inputs": {"image_bytes": {"b64": red}}}), json!([1])),
    ] {
        let (status, got) = post(&app, uri, &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {got}");
        assert_eq!(got["outputs"]["classes"], classes, "{got}");
    }
    let (status, got) = post(
        &app,
        uri,
        &json!({"inputs": [{"b64": red}, [[[0.0, 1.0, 0.0]]]]}).to_string(),
    )
    .await;
    assert_error(
        status,
        &got,
        StatusCode::BAD_REQUEST,
        &["one per batch entry"],
    );
    // Not for a numeric input: its tensor is asked for.
    let (status, got) = post(
        &app_for("linear"),
        "/v1/models/linear:predict",
        &json!({"inputs": [{"b64": red}]}).to_string(),
    )
    .await;
    assert_error(
        status,
        &got,
        StatusCode::BAD_REQUEST,
        &["b64", "not accepted"],
    );
}

#[tokio::test]
async fn bad_images_get_400_with_a_reason() {
    let app = app_for("image_classifier");
    let uri = "/v1/models/image_classifier:predict";
    let jpeg = image("photo.jpg");
    let truncated = &jpeg[..jpeg.len() / 2];
    let cases: Vec<(String, &[&str])> = vec![
        (
            json!({"instances": [{"b64": "not base64 at all!"}]}).to_string(),
            &["instances[0]", "not valid base64"],
        ),
        (
            b64_request(b"just some text, not an image"),
            &["not a JPEG or PNG"],
        ),
        (b64_request(truncated), &["truncated"]),
        (b64_request(&image("photo.png")[..300]), &["PNG"]),
        (
            b64_request(&image("huge.png")),
            &["20000x20000", "megapixels"],
        ),
        (json!({"instances": [{"b64": ""}]}).to_string(), &["empty"]),
        (
            json!({"instances": [[[[[0.5, 0.5, 0.5]]]]]}).to_string(),
            &["batch"],
        ),
        (
            json!({"instances": [[[[0.5, 0.5, 2.0]]]]}).to_string(),
            &["0-1", "2"],
        ),
        (
            json!({"instances": [[[[0.5, 0.5]]]]}).to_string(),
            &["[height, width, 3]"],
        ),
        (
            json!({"instances": [{"photo": {"b64": "aGk="}}]}).to_string(),
            &["unknown input 'photo'", "image_bytes"],
        ),
        (json!({"instances": []}).to_string(), &["empty"]),
        (
            json!({"instances": vec![json!({"b64": b64(&image("red.jpg"))}); 65]}).to_string(),
            &["65 images", "at most 64"],
        ),
    ];
    for (body, needles) in cases {
        let (status, got) = post(&app, uri, &body).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{shown}: {got}");
        assert_error(status, &got, StatusCode::BAD_REQUEST, needles);
    }
    // The server is still fine afterwards.
    let (status, _) = post(&app, uri, &b64_request(&image("red.jpg"))).await;
    assert_eq!(status, StatusCode::OK);
}
