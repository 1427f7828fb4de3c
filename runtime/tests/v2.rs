//! The Open Inference Protocol (KServe V2) over REST and gRPC: Triton's tritonclient.http and
//! tritonclient.grpc (PyPI) against
//! real `runtime` servers (runtime/tests/v2_client.py), from a venv of its own
//! (`make triton-client`; ONNX_SERVING_TEST_TRITON_PYTHON names its python).

mod common;

use std::process::Command;

use common::process::Server;
use common::*;

fn triton_python() -> Option<String> {
    std::env::var("ONNX_SERVING_TEST_TRITON_PYTHON").ok()
}

#[test]
fn tritonclient_http_and_grpc_speak_to_the_server() {
    let Some(python) = triton_python() else {
        eprintln!(
            "skipped: set ONNX_SERVING_TEST_TRITON_PYTHON (make triton-client; make test sets it)"
        );
        return;
    };
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
