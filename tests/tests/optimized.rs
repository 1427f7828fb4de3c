//! The "optimized for this CPU" image end to end: `serve-image --optimize` runs `builder optimize`
//! on the walk-through's model with its default accuracy gate and photo set, bakes in what it
//! chose, and the image says so (labels, status) and still sees the cat.

use builder::commands::{self, Engines, GateArgs, ServeImageOptions};
use e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_optimized_walk_through_image_says_what_it_chose_and_sees_the_cat() {
    let Some((_serial, docker, devel)) =
        prepare("the_optimized_walk_through_image_says_what_it_chose_and_sees_the_cat").await
    else {
        return;
    };
    let models = test_models();
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some("onnx-serving-e2e/serving-optimized".into()),
        embed_model: Some(models.join("efficientnet/1/model.onnx")),
        model_name: Some("efficientnet".into()),
        optimize: Some(GateArgs {
            precision: "auto".into(),
            calibration: None,
            validation: None,
            min_top1: 0.98,
            min_top5: 0.9,
            min_confident_top1: 0.99,
            max_abs_diff: None,
            min_images: 100,
            python: Some(python()),
        }),
        engine: Engines::All,
        onnxruntime_library: None,
        no_cache: false,
        verbose: false,
    };
    let built = commands::serve_image(&opts)
        .await
        .expect("the optimized image builds");
    let labels = builder::docker::image_labels(&docker, &built.tag)
        .await
        .unwrap();
    let label = |k: &str| {
        labels
            .get(&format!("io.onnx-serving.{k}"))
            .cloned()
            .unwrap_or_default()
    };
    let precision = label("precision");
    assert!(
        ["fp32", "int8", "bf16"].contains(&precision.as_str()),
        "{labels:?}"
    );
    assert!(!label("optimization.variant").is_empty(), "{labels:?}");
    assert!(!label("optimization.reason").is_empty(), "{labels:?}");
    assert_eq!(
        label("optimization.calibration-sha256").len(),
        64,
        "{labels:?}"
    );

    let (guard, ports) =
        run_published(&docker, &built.tag, None, &["MODEL_NAME=efficientnet"]).await;
    wait_available(ports.rest, "efficientnet", &docker, &guard.id).await;
    let (_, status) = http(ports.rest, "GET", "/v1/models/efficientnet", "").unwrap();
    assert_eq!(
        status["model_version_status"][0]["precision"], precision,
        "the status names the precision the labels record: {status}"
    );
    let cat = std::fs::read(models.join("cat.jpg")).expect("cat.jpg: run make test-models");
    let request = json!({"instances": [{"b64": base64(&cat)}]}).to_string();
    let (code, answer) = http(
        ports.rest,
        "POST",
        "/v1/models/efficientnet:predict",
        &request,
    )
    .expect("predict answers");
    assert_eq!(code, 200, "{answer}");
    let class = answer["predictions"][0]["classes"]
        .as_i64()
        .expect("classes");
    assert!(
        (281..=285).contains(&class),
        "through the {precision} model the cat came out as {class}"
    );
    drop(guard);
    let _ = builder::docker::remove_image(&docker, &built.tag).await;
}
