//! Helpers for the end-to-end tests: the Docker daemon (or a visible reason to skip), the
//! workspace, test models, and a minimal HTTP client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CNN test models (`make test-models`).
pub fn test_models() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models"))
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

/// `(status, JSON body)` of an HTTP/1.0 request.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok((status, json))
}

pub use builder::bench::base64;
