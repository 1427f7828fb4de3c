//! Helpers for the end-to-end tests: the Docker daemon (or a visible reason to skip), the
//! workspace, test models, and a minimal HTTP client.

use std::path::PathBuf;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CNN test models (`make test-models`).
pub fn test_models() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models"))
}

/// The Python interpreter with grpcio for the gRPC clients (`make test` sets
/// `ONNX_SERVING_TEST_PYTHON` to its venv), else the venv where `make` puts it.
pub fn python() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"))
}

/// A connected daemon, or `None` after printing why the Docker tests are skipped. `.ci/run`
/// starts dockerd, so there a skip means the daemon could not be started at all.
pub async fn docker_or_skip(test: &str) -> Option<bollard::Docker> {
    match builder::docker::connect().await {
        Ok(docker) => Some(docker),
        Err(e) => {
            eprintln!("SKIPPED {test}: no Docker daemon could be reached ({e:#})");
            None
        }
    }
}

pub use builder::probe::{base64, http};
