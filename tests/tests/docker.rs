//! End to end on the real Docker daemon: build the devel image, build serving images with and
//! without a model, run one with a published port, predict over HTTP, stop it, clean up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, InspectContainerOptions, ListImagesOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use builder::commands::{self, Engines, ServeImageOptions};
use e2e::*;
use serde_json::{json, Value};

async fn dangling_images(docker: &Docker) -> usize {
    let filters = HashMap::from([("dangling".to_string(), vec!["true".to_string()])]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_images(Some(options))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Whether `path` exists in the container's filesystem: Docker's archive endpoint answers 404
/// for a missing path; any other error fails the test.
async fn has_file(docker: &Docker, container: &str, path: &str) -> bool {
    use futures_util::TryStreamExt;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    match docker
        .download_from_container(container, Some(options))
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("cannot read {path} in container {container}: {e}"),
    }
}

async fn container_count(docker: &Docker) -> usize {
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn serving_image_with_embedded_model_answers_predict() {
    let Some((_serial, docker, devel)) =
        prepare("serving_image_with_embedded_model_answers_predict").await
    else {
        return;
    };

    // The real CNN, baked in and validated by the runtime during the build.
    let model_dir = test_models().join("squeezenet");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir.join("reference.json")).expect("make test-models first"),
    )
    .unwrap();
    let opts = ServeImageOptions {
        devel_image: Some(devel.clone()),
        tag: Some("onnx-serving-e2e/serving-squeezenet".into()),
        embed_model: Some(model_dir.join("1/model.onnx")),
        model_name: Some("squeezenet".into()),
        optimize: None,
        engine: Engines::Tract,
        onnxruntime_library: None,
        openvino_libraries: None,
        no_cache: false,
        verbose: false,
    };
    let built = commands::serve_image(&opts)
        .await
        .expect("serving image builds");

    let image = docker.inspect_image(&built.tag).await.unwrap();
    let labels = image
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get("io.onnx-serving.role").map(String::as_str),
        Some("serving")
    );
    assert_eq!(
        labels.get("io.onnx-serving.model-name").map(String::as_str),
        Some("squeezenet")
    );
    assert_eq!(
        labels.get("io.onnx-serving.engines").map(String::as_str),
        Some("tract"),
        "--engine tract carries no onnxruntime: {labels:?}"
    );
    assert!(!labels.contains_key("io.onnx-serving.onnxruntime-version"));
    // Without --optimize the model ships as it is: no precision or optimization labels.
    assert!(
        !labels
            .keys()
            .any(|k| k == "io.onnx-serving.precision"
                || k.starts_with("io.onnx-serving.optimization")),
        "an image built without --optimize records an optimization: {labels:?}"
    );
    assert_eq!(
        labels.get("io.onnx-serving.model-sha256").map(|s| s.len()),
        Some(64)
    );
    assert!(
        labels.contains_key("org.opencontainers.image.revision")
            && labels.contains_key("io.onnx-serving.rustflags")
    );
    assert!(
        labels
            .get("io.onnx-serving.rustc")
            .is_some_and(|v| v.starts_with("rustc 1.")),
        "{labels:?}"
    );
    let config = image.config.unwrap();
    assert_eq!(
        config.user.as_deref(),
        Some("65532:65532"),
        "serving image runs as non-root"
    );
    assert!(config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .any(|p| p == "8501/tcp"));

    // Run it with a published port, as `docker run -p …` does.
    let (guard, ports) = run_published(&docker, &built.tag, None, &[]).await;
    let port = ports.rest;
    wait_available(port, "squeezenet", &docker, &guard.id).await;

    let shape: Vec<usize> = serde_json::from_value(reference["input_shape"].clone()).unwrap();
    let flat = reference["input"].as_array().unwrap();
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let image: Vec<Vec<Vec<Value>>> = (0..c)
        .map(|k| {
            (0..h)
                .map(|i| flat[(k * h + i) * w..(k * h + i + 1) * w].to_vec())
                .collect()
        })
        .collect();
    let request = json!({"instances": [image]}).to_string();
    let (status, answer) = http(port, "POST", "/v1/models/squeezenet:predict", &request).unwrap();
    assert_eq!(status, 200, "{answer}");
    let got: Vec<f64> = flatten(&answer["predictions"]);
    let want: Vec<f64> = reference["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_diff < 1e-4,
        "served prediction differs from onnxruntime by {max_diff}"
    );
    let (status, err) = http(
        port,
        "POST",
        "/v1/models/squeezenet:predict",
        "{\"instances\": [[1]]}",
    )
    .unwrap();
    assert_eq!(status, 400, "{err}");

    // The runtime compiled for this CPU logs TF Serving's lines and has nothing to say about
    // unused instructions (a portable build would list them).
    let logs = builder::docker::container_logs(&docker, &guard.id).await;
    assert!(
        logs.contains("Exporting HTTP/REST API at:0.0.0.0:8501")
            && logs.contains("Successfully loaded servable version {name: squeezenet version: 1}"),
        "{logs}"
    );
    assert!(
        !logs.contains("not compiled to use"),
        "an optimized build should use every instruction set this CPU has:\n{logs}"
    );
    assert!(
        logs.contains("Engine: tract (--engine tract)") && !logs.contains("onnxruntime 1."),
        "a tract-only image runs tract, onnxruntime not even looked for:\n{logs}"
    );
    // It carries the glibc files the runtime links, and not libstdc++, which only onnxruntime's
    // library needs.
    let lib = "/lib/x86_64-linux-gnu";
    assert!(has_file(&docker, &guard.id, &format!("{lib}/libc.so.6")).await);
    assert!(
        !has_file(&docker, &guard.id, &format!("{lib}/libstdc++.so.6")).await,
        "a tract-only image carries no libstdc++"
    );

    // docker stop sends SIGTERM: the runtime drains and exits 0.
    docker
        .stop_container(
            &guard.id,
            Some(StopContainerOptionsBuilder::default().t(20).build()),
        )
        .await
        .unwrap();
    let stopped = docker
        .inspect_container(&guard.id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(stopped.state.and_then(|s| s.exit_code), Some(0));
    drop(guard);
}

/// The article's run: the serving image without a model, the walk-through's pretrained
/// EfficientNet-Lite0 (make example-model) bind-mounted as `resnet`, the cat photo posted as
/// base64 JPEG to /v1/models/resnet:predict: the answer must be a cat class.
#[tokio::test(flavor = "multi_thread")]
async fn pretrained_model_from_a_bind_mount_sees_the_cat() {
    let Some((_serial, docker, devel)) =
        prepare("pretrained_model_from_a_bind_mount_sees_the_cat").await
    else {
        return;
    };
    let models = test_models();
    let model_dir = models.join("efficientnet");
    let cat = std::fs::read(models.join("cat.jpg")).expect("cat.jpg: run make test-models");
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some("onnx-serving-e2e/serving".into()),
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
    let labels = docker
        .inspect_image(&built.tag)
        .await
        .unwrap()
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get("io.onnx-serving.engines").map(String::as_str),
        Some("tract,onnxruntime")
    );
    assert_eq!(
        labels
            .get("io.onnx-serving.onnxruntime-version")
            .map(String::as_str),
        Some("1.31.1")
    );
    assert_eq!(
        labels
            .get("io.onnx-serving.onnxruntime-sha256")
            .map(|s| s.len()),
        Some(64)
    );
    // onnxruntime named, so the cat must come from it (auto's timed choice is tested on the host).
    let (guard, ports) = run_published(
        &docker,
        &built.tag,
        Some((&model_dir, "/models/resnet")),
        &["MODEL_NAME=resnet", "ONNX_SERVING_ENGINE=onnxruntime"],
    )
    .await;
    let port = ports.rest;
    wait_available(port, "resnet", &docker, &guard.id).await;
    // Locked down as run_serving runs it: read-only root, no capabilities, no new privileges.
    let host = docker
        .inspect_container(&guard.id, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .host_config
        .unwrap_or_default();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert!(host
        .mounts
        .unwrap_or_default()
        .iter()
        .all(|m| m.read_only == Some(true)));
    let (_, status) = http(port, "GET", "/v1/models/resnet", "").unwrap();
    assert_eq!(
        status["model_version_status"][0]["engine"], "onnxruntime",
        "{status}"
    );
    let logs = builder::docker::container_logs(&docker, &guard.id).await;
    assert!(
        logs.contains("onnxruntime 1.31.1 loaded from /usr/lib/onnxruntime/libonnxruntime.so.1"),
        "{logs}"
    );
    assert!(
        !logs.to_lowercase().contains("telemetry"),
        "onnxruntime's telemetry must stay off in the image:\n{logs}"
    );

    let (status, meta) = http(port, "GET", "/v1/models/resnet/metadata", "").unwrap();
    assert_eq!(status, 200, "{meta}");
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["image_bytes"]["dtype"], "DT_STRING", "{sig}");

    let b64 = base64(&cat);
    let request = json!({"instances": [{"b64": b64}]}).to_string();
    let (status, answer) = http(port, "POST", "/v1/models/resnet:predict", &request).unwrap();
    assert_eq!(status, 200, "{answer}");
    let p = &answer["predictions"][0];
    let class = p["classes"].as_i64().expect("classes");
    assert!(
        (281..=285).contains(&class),
        "the cat came out as class {class} ({})",
        p["top_k_labels"]
    );
    assert!(
        p["top_k_labels"][0].as_str().unwrap_or("").contains("cat"),
        "{p}"
    );

    // A damaged upload is the client's mistake: 400 with a reason, and the server stays up.
    let bad = json!({"instances": [{"b64": base64(&cat[..cat.len() / 2])}]});
    let (status, err) = http(port, "POST", "/v1/models/resnet:predict", &bad.to_string()).unwrap();
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap_or("").contains("truncated"),
        "{err}"
    );
    let (status, _) = http(port, "POST", "/v1/models/resnet:predict", &request).unwrap();
    assert_eq!(status, 200);

    // The article's gRPC client, on port 8500: the same cat, through PredictionService.Predict.
    let cat_file = models.join("cat.jpg");
    let grpc_server = format!("127.0.0.1:{}", ports.grpc);
    let class = client_class(&python(), "resnet_client_grpc.py", &grpc_server, &cat_file);
    assert!(
        (281..=285).contains(&class),
        "over gRPC the cat came out as {class}"
    );
    // Triton's client over the Open Inference Protocol, on the REST port: the same cat.
    if let Ok(triton) = std::env::var("ONNX_SERVING_TEST_TRITON_PYTHON") {
        let rest_server = format!("127.0.0.1:{port}");
        let class = client_class(
            triton.as_ref(),
            "resnet_client_v2.py",
            &rest_server,
            &cat_file,
        );
        assert!(
            (281..=285).contains(&class),
            "over V2 the cat came out as {class}"
        );
    }
    drop(guard);
    several_models_from_a_config_file(&docker, &built.tag).await;
}

/// Runs `examples/<client>` with `python` against `server` on `image` (3 requests) and returns
/// the class it printed ("Prediction class: N, ...").
fn client_class(
    python: &std::path::Path,
    client: &str,
    server: &str,
    image: &std::path::Path,
) -> i64 {
    let out = std::process::Command::new(python)
        .arg(workspace().join("examples").join(client))
        .args(["--server", server])
        .arg("--image")
        .arg(image)
        .args(["-n", "3"])
        .output()
        .unwrap_or_else(|e| panic!("run {client}: {e}"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{client}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said.split("Prediction class: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{client}: no class in {said:?}"))
}

/// The same image with `--model_config_file` (through its environment variable) on a read-only
/// bind mount: two models, each answering; a version copied into the host folder afterwards is
/// picked up by polling.
async fn several_models_from_a_config_file(docker: &Docker, image: &str) {
    let dir = std::env::temp_dir().join(format!("onnx-serving-e2e-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = |from: std::path::PathBuf, to: std::path::PathBuf| {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    let fixtures = workspace().join("runtime/tests/fixtures/models");
    copy(test_models().join("efficientnet/1"), dir.join("cat/1"));
    copy(fixtures.join("linear/1"), dir.join("linear/1"));
    std::fs::write(
        dir.join("models.config"),
        "model_config_list {\n  config { name: \"cat\" base_path: \"/models/cat\" model_platform: \"onnx\" }\n  config { name: \"linear\" base_path: \"/models/linear\" }\n}\n",
    )
    .unwrap();
    let env = [
        "MODEL_NAME=cat",
        "ONNX_SERVING_MODEL_CONFIG_FILE=/models/models.config",
        "ONNX_SERVING_ENGINE=tract",
    ];
    let (guard, ports) = run_published(docker, image, Some((&dir, "/models")), &env).await;
    let port = ports.rest;
    wait_available(port, "cat", docker, &guard.id).await;
    wait_available(port, "linear", docker, &guard.id).await;
    let cat = std::fs::read(test_models().join("cat.jpg")).unwrap();
    let request = json!({"instances": [{"b64": base64(&cat)}]}).to_string();
    let (status, answer) = http(port, "POST", "/v1/models/cat:predict", &request).unwrap();
    assert_eq!(status, 200, "{answer}");
    let class = answer["predictions"][0]["classes"].as_i64().unwrap_or(-1);
    assert!((281..=285).contains(&class), "{answer}");
    let linear = r#"{"instances": [[1, 2, 3, 4]]}"#;
    let (status, answer) = http(port, "POST", "/v1/models/linear:predict", linear).unwrap();
    assert_eq!(
        (status, &answer["predictions"][0][0]),
        (200, &json!(6.5)),
        "{answer}"
    );
    // Version 2 appears in the host folder: the container loads it and answers with it.
    let staged = dir.join(".linear-2");
    copy(fixtures.join("linear_v2/1"), staged.clone());
    std::fs::rename(&staged, dir.join("linear/2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = http(port, "POST", "/v1/models/linear:predict", linear).unwrap();
        assert_eq!(status, 200, "{answer}");
        if answer["predictions"][0][0] == json!(106.5) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 2 was never served:\n{}",
            builder::docker::container_logs(docker, &guard.id).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // docker kill while a request is in flight: the client gets an error, not a hang, and a
    // new container on the same folder serves (the newest version, from the start).
    let in_flight = std::thread::spawn(move || {
        let request = json!({"instances": [{"b64": base64(&cat)}]}).to_string();
        http(port, "POST", "/v1/models/cat:predict", &request)
    });
    docker
        .kill_container(
            &guard.id,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("docker kill");
    let _ = in_flight.join().expect("the client thread ends");
    drop(guard);
    let (guard, ports) = run_published(docker, image, Some((&dir, "/models")), &env).await;
    wait_available(ports.rest, "linear", docker, &guard.id).await;
    let (status, answer) = http(ports.rest, "POST", "/v1/models/linear:predict", linear).unwrap();
    assert_eq!(
        (status, &answer["predictions"][0][0]),
        (200, &json!(106.5)),
        "{answer}"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_model_fails_the_build_and_leaves_nothing_behind() {
    let Some((_serial, docker, devel)) =
        prepare("corrupt_model_fails_the_build_and_leaves_nothing_behind").await
    else {
        return;
    };
    let (dangling, containers) = (
        dangling_images(&docker).await,
        container_count(&docker).await,
    );
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some("onnx-serving-e2e/serving-corrupt".into()),
        embed_model: Some(workspace().join("runtime/tests/fixtures/models/corrupt/1/model.onnx")),
        model_name: Some("corrupt".into()),
        optimize: None,
        engine: Engines::All,
        onnxruntime_library: None,
        openvino_libraries: None,
        no_cache: false,
        verbose: false,
    };
    let err = format!(
        "{:#}",
        commands::serve_image(&opts)
            .await
            .expect_err("a corrupt model must fail the build")
    );
    assert!(
        err.contains("tract could not parse") && err.contains("onnxruntime could not load"),
        "each engine's reason is not shown: {err}"
    );
    assert!(
        !builder::docker::image_exists(&docker, "onnx-serving-e2e/serving-corrupt")
            .await
            .unwrap()
    );
    assert_eq!(
        container_count(&docker).await,
        containers,
        "the failed build left a container behind"
    );
    assert_eq!(
        dangling_images(&docker).await,
        dangling,
        "the failed build left a <none> image behind"
    );

    let missing = ServeImageOptions {
        embed_model: Some("/nonexistent/model.onnx".into()),
        ..opts
    };
    let err = format!("{:#}", commands::serve_image(&missing).await.unwrap_err());
    assert!(err.contains("no such file"), "{err}");
}
