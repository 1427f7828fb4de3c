//! The Open Inference Protocol (KServe V2) over REST and gRPC: Triton's tritonclient.http and
//! tritonclient.grpc (PyPI) against
//! real `runtime` servers (runtime/tests/v2_client.py), from a venv of its own
//! (`make triton-client`; ONNX_SERVING_TEST_TRITON_PYTHON names its python).

mod common;

use std::process::Command;

use common::process::Server;
use common::*;

/// The venv's python with tritonclient: $ONNX_SERVING_TEST_TRITON_PYTHON, else the workspace's
/// .cache/venv-triton if `make triton-client` made it; the test fails without one.
fn triton_python() -> String {
    if let Ok(python) = std::env::var("ONNX_SERVING_TEST_TRITON_PYTHON") {
        return python;
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv-triton/bin/python");
    assert!(
        venv.is_file(),
        "tritonclient's venv is missing: run `make triton-client` (make test does), or point ONNX_SERVING_TEST_TRITON_PYTHON at a python with tritonclient[http,grpc]"
    );
    venv.to_string_lossy().into_owned()
}

#[test]
fn tritonclient_http_and_grpc_speak_to_the_server() {
    let python = triton_python();
    // The repository tests' server: a model config naming two fixtures.
    let repo = std::env::temp_dir().join(format!("onnx-serving-v2-repo-{}", std::process::id()));
    std::fs::create_dir_all(&repo).unwrap();
    let config = repo.join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n  config {{ name: \"multi_io\" base_path: \"{0}/multi_io\" }}\n  config {{ name: \"dtypes\" base_path: \"{0}/dtypes\" }}\n}}\n",
            models().display()
        ),
    )
    .unwrap();
    let mut repo_server =
        Server::start("unused", &["--model_config_file", config.to_str().unwrap()]);
    repo_server.wait_for_log("Successfully loaded servable version"); // the second model
    let servers = [
        ("V2_MULTI_IO", Server::start("multi_io", &[])),
        ("V2_DTYPES", Server::start("dtypes", &[])),
        ("V2_IMAGE", Server::start("image_classifier", &[])),
        (
            "V2_SLOW",
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
        ("V2_REPO", repo_server),
    ];
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/v2_client.py");
    let out = Command::new(python)
        .arg(&script)
        .envs(servers.iter().map(|(var, s)| (*var, s.port.to_string())))
        .envs(
            servers
                .iter()
                .map(|(var, s)| (format!("{var}_GRPC"), s.grpc_port.to_string())),
        )
        .env("FIXTURES", fixtures())
        .output()
        .expect("run the tritonclient python");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "v2_client.py failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
}

/// scripts/v2_load.py: tritonclient's asyncio HTTP and gRPC clients in a process of their own,
/// concurrency 1 to 16 against one worker and a queue of two: every answer must be a success or
/// an overload refusal (429, RESOURCE_EXHAUSTED), never another error.
#[test]
fn a_v2_load_gets_only_successes_or_refusals() {
    let python = triton_python();
    let server = Server::start(
        "image_classifier",
        &["--inference_workers", "1", "--queue_capacity", "2"],
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/v2_load.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["--model", "image_classifier", "--image"])
        .arg(fixtures().join("images/red.jpg"))
        .args(["--http", &format!("127.0.0.1:{}", server.port)])
        .args(["--grpc", &format!("127.0.0.1:{}", server.grpc_port)])
        .args(["--concurrency", "1,2,4,8,16", "--seconds", "1", "--json"])
        .output()
        .expect("run v2_load.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "v2_load.py saw errors:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(runs.len(), 10, "{report}");
    for run in &runs {
        assert!(run["ok"].as_u64() > Some(0), "{run}");
        assert_eq!(run["errors"], 0, "{run}");
    }
}
