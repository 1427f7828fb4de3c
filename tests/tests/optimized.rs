//! The "optimized for this CPU" image end to end: `serve-image --optimize` runs `builder optimize`
//! on the walk-through's model with its default accuracy gate and photo set, bakes in what it
//! chose, and the image says so (labels, status) and still sees the cat. And an int8 model that
//! passed the gate, served beside its fp32 original, gives the held-out photos the fp32 classes
//! over REST and gRPC as often as the gate measured.

use std::collections::HashMap;
use std::path::Path;

use builder::commands::{self, Engines, GateArgs, ServeImageOptions};
use e2e::*;
use serde_json::{json, Value};

fn gate(precision: &str) -> GateArgs {
    GateArgs {
        precision: precision.into(),
        calibration: None,
        validation: None,
        min_top1: 0.98,
        min_top5: 0.9,
        min_confident_top1: 0.99,
        max_abs_diff: None,
        min_images: 100,
        python: Some(python()),
        bf16: false,
    }
}

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
        optimize: Some(gate("auto")),
        engine: Engines::All,
        onnxruntime_library: None,
        openvino_libraries: None,
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

/// The walk-through's EfficientNet-Lite0 (pretrained: its classes vary from photo to photo, unlike
/// the seeded test models') quantized to int8 on the first 120 of the photo set and gated on the
/// other 131 (`--validation`, so the held-out photos are known here), with the gate relaxed to
/// what int8 gives it (about 93-95 % top-1 agreement, BENCHMARKS.md), so int8 or int8-stem
/// ships. Served as model `int8` beside the original as `fp32`, each held-out photo goes to both
/// over REST and gRPC (Python's urllib and grpcio): both protocols give the same class, fp32
/// answers many different classes, and int8's class differs from fp32's on about as many photos
/// as the gate counted (the server decodes and resizes in Rust, the gate in Python, so near-ties
/// may fall either way).
#[tokio::test(flavor = "multi_thread")]
async fn a_passing_int8_model_answers_the_held_out_photos_with_the_fp32_classes() {
    let test = "a_passing_int8_model_answers_the_held_out_photos_with_the_fp32_classes";
    let Some((_serial, docker, devel)) = prepare(test).await else {
        return;
    };
    let photos = workspace().join(".cache/calibration");
    let mut all: Vec<_> = std::fs::read_dir(&photos)
        .expect("run `make calibration-photos`")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    all.sort();
    assert!(all.len() >= 240, "{} photos", all.len());
    let dir = std::env::temp_dir().join(format!("onnx-serving-e2e-int8-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let link_all = |to: &Path, photos: &[std::path::PathBuf]| {
        std::fs::create_dir_all(to).unwrap();
        for p in photos {
            std::os::unix::fs::symlink(p, to.join(p.file_name().unwrap())).unwrap();
        }
    };
    let (calibration, held_out) = (dir.join("calibration"), dir.join("held-out"));
    link_all(&calibration, &all[..120]);
    link_all(&held_out, &all[120..]);
    let fp32 = dir.join("models/fp32/1");
    std::fs::create_dir_all(&fp32).unwrap();
    for file in ["model.onnx", "signature.toml", "labels.txt"] {
        std::fs::copy(
            test_models().join("efficientnet/1").join(file),
            fp32.join(file),
        )
        .expect("efficientnet: run `make example-model`");
    }
    let int8 = dir.join("models/int8/1");
    let choice = commands::optimize(
        &fp32,
        &int8,
        &GateArgs {
            calibration: Some(calibration.clone()),
            validation: Some(held_out.clone()),
            min_top1: 0.85,
            min_top5: 0.85,
            min_confident_top1: 0.95,
            max_abs_diff: Some(0.5),
            ..gate("int8")
        },
    )
    .expect("builder optimize");
    let report = &choice.report;
    assert_eq!(report["precision"], "int8", "{report:#}");
    // The int8 variant that shipped: int8, or int8-stem (its first Conv in float).
    let variant = report["variant"].as_str().unwrap_or_default();
    assert!(variant.starts_with("int8"), "{report:#}");
    let figures = &report["candidates"][variant]["gate"];
    let gate_n = figures["n"].as_u64().unwrap() as usize;
    let gate_top1 = figures["top1"].as_f64().unwrap();
    assert_eq!(
        gate_n,
        all.len() - 120,
        "gated on exactly the held-out photos: {figures}"
    );

    std::fs::write(
        dir.join("models/models.config"),
        "model_config_list {\n  config { name: \"fp32\" base_path: \"/models/fp32\" }\n  config { name: \"int8\" base_path: \"/models/int8\" }\n}\n",
    )
    .unwrap();
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some("onnx-serving-e2e/serving-held-out".into()),
        embed_model: None,
        model_name: None,
        optimize: None,
        engine: Engines::All,
        onnxruntime_library: None,
        openvino_libraries: None,
        no_cache: false,
        verbose: false,
    };
    let built = commands::serve_image(&opts)
        .await
        .expect("serving image builds");
    let env = [
        "MODEL_NAME=fp32",
        "ONNX_SERVING_MODEL_CONFIG_FILE=/models/models.config",
    ];
    let (guard, ports) = run_published(
        &docker,
        &built.tag,
        Some((&dir.join("models"), "/models")),
        &env,
    )
    .await;
    wait_available(ports.rest, "fp32", &docker, &guard.id).await;
    wait_available(ports.rest, "int8", &docker, &guard.id).await;
    let (_, status) = http(ports.rest, "GET", "/v1/models/int8", "").unwrap();
    assert_eq!(
        status["model_version_status"][0]["precision"], "int8",
        "{status}"
    );

    let out = std::process::Command::new(python())
        .arg(workspace().join("tests/tests/held_out_client.py"))
        .arg(format!("127.0.0.1:{}", ports.rest))
        .arg(format!("127.0.0.1:{}", ports.grpc))
        .arg(&held_out)
        .args(["fp32", "int8"])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "held_out_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: HashMap<String, Value> =
        serde_json::from_slice(&out.stdout).expect("the client prints JSON");
    assert_eq!(answers.len(), gate_n);
    let fp32_classes: std::collections::HashSet<String> = answers
        .values()
        .map(|a| a["rest"]["fp32"].to_string())
        .collect();
    assert!(
        fp32_classes.len() >= 20,
        "fp32 gave only {} classes to {gate_n} photos: the comparison would say little",
        fp32_classes.len()
    );
    let mut differ = Vec::new();
    for (photo, a) in &answers {
        for model in ["fp32", "int8"] {
            assert_eq!(
                a["rest"][model], a["grpc"][model],
                "{photo}: REST and gRPC disagree on {model}"
            );
        }
        if a["rest"]["int8"] != a["rest"]["fp32"] {
            differ.push(format!(
                "{photo}: fp32 {} int8 {}",
                a["rest"]["fp32"], a["rest"]["int8"]
            ));
        }
    }
    let gate_differ = ((1.0 - gate_top1) * gate_n as f64).round() as usize;
    assert!(
        differ.len() <= gate_differ + 4,
        "served int8 differs from fp32 on {} of {gate_n} held-out photos, the gate counted {gate_differ}: {differ:#?}",
        differ.len()
    );
    drop(guard);
    let _ = builder::docker::remove_image(&docker, &built.tag).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The OpenVINO flavour: the image carries OpenVINO's CPU plugin (labelled with its version),
/// `--optimize` tries bf16 there, and on a CPU with native bf16 (AMX or AVX512-BF16) passes the
/// default gate and ships (EfficientNet-Lite0: 98.6 % top-1 agreement, 1.85x-2.13x onnxruntime's
/// fp32 at one thread, BENCHMARKS.md); elsewhere it is not tried and another precision ships.
/// The runtime serves the image, its status and log name the precision, and it sees the cat.
#[tokio::test(flavor = "multi_thread")]
async fn the_openvino_image_ships_bf16_where_the_cpu_has_it_and_sees_the_cat() {
    let test = "the_openvino_image_ships_bf16_where_the_cpu_has_it_and_sees_the_cat";
    let Some((_serial, docker, devel)) = prepare(test).await else {
        return;
    };
    let models = test_models();
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some("onnx-serving-e2e/serving-openvino".into()),
        embed_model: Some(models.join("efficientnet/1/model.onnx")),
        model_name: Some("efficientnet".into()),
        optimize: Some(gate("auto")),
        engine: Engines::Openvino,
        onnxruntime_library: None,
        openvino_libraries: None,
        no_cache: false,
        verbose: false,
    };
    let built = commands::serve_image(&opts)
        .await
        .expect("the OpenVINO image builds (make openvino fetches its libraries)");
    let labels = builder::docker::image_labels(&docker, &built.tag)
        .await
        .unwrap();
    let label = |k: &str| {
        labels
            .get(&format!("io.onnx-serving.{k}"))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(label("engines"), "tract,onnxruntime,openvino", "{labels:?}");
    let pin = builder::engines::OvPin::read(&workspace()).unwrap();
    assert_eq!(label("openvino-version"), pin.version, "{labels:?}");
    let precision = label("precision");
    let native_bf16 = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|flag| flag == "amx_bf16" || flag == "avx512_bf16");
    if native_bf16 {
        assert_eq!(
            precision, "bf16",
            "on a CPU with native bf16 it should ship: {labels:?}"
        );
        assert!(!label("optimization.openvino").is_empty(), "{labels:?}");
    } else {
        assert_ne!(
            precision, "bf16",
            "without native bf16 OpenVINO would emulate it, slower than fp32: {labels:?}"
        );
    }

    let (guard, ports) =
        run_published(&docker, &built.tag, None, &["MODEL_NAME=efficientnet"]).await;
    wait_available(ports.rest, "efficientnet", &docker, &guard.id).await;
    let (_, status) = http(ports.rest, "GET", "/v1/models/efficientnet", "").unwrap();
    assert_eq!(
        status["model_version_status"][0]["precision"], precision,
        "{status}"
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
    let logs = builder::docker::container_logs(&docker, &guard.id).await;
    assert!(
        logs.contains("OpenVINO") && logs.contains("loaded from /usr/lib/openvino"),
        "{logs}"
    );
    if precision == "bf16" {
        assert!(
            logs.contains("inference precision bf16") && logs.contains("engine openvino"),
            "{logs}"
        );
    }
    drop(guard);
    let _ = builder::docker::remove_image(&docker, &built.tag).await;
}
