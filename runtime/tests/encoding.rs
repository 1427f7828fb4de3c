//! Compressed request bodies (`Content-Encoding: gzip` / `deflate`), as TF Serving takes them:
//! decompressed while read, the decompressed size held to `--max_body_bytes`, and a body that
//! does not match its header refused with a reason.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use http_body_util::BodyExt;
use runtime::Limits;
use serde_json::Value;
use tower::ServiceExt;

const URI: &str = "/v1/models/linear:predict";
const BODY: &str = r#"{"instances": [[1, 2, 3, 4]]}"#;

async fn post_encoded(app: &axum::Router, encoding: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::post(URI)
        .header("content-encoding", encoding)
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_decompressed() {
    let app = app_for("linear");
    let (status, body) = post_encoded(&app, "gzip", gzip(BODY.as_bytes())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["predictions"][0][0], 6.5);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(BODY.as_bytes()).unwrap();
    let (status, body) = post_encoded(&app, "deflate", z.finish().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["predictions"][0][0], 6.5);
}

#[tokio::test]
async fn a_body_that_does_not_match_its_encoding_is_refused() {
    let app = app_for("linear");
    let (status, body) = post_encoded(&app, "gzip", BODY.as_bytes().to_vec()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &["request body"]);
    let mut truncated = gzip(BODY.as_bytes());
    truncated.truncate(truncated.len() / 2);
    let (status, body) = post_encoded(&app, "gzip", truncated).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &["request body"]);
    let (status, body) = post_encoded(&app, "br", BODY.as_bytes().to_vec()).await;
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &["gzip or deflate"],
    );
}

#[tokio::test]
async fn the_decompressed_size_is_what_the_limit_counts() {
    // 1 GiB of zeros in about 1 MB of gzip: 413 once --max_body_bytes (64 MiB) is read,
    // without holding the rest.
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 8 << 20, "{} bytes", bomb.len());
    let app = app_with("linear", 1, 4, Limits::default());
    let before = peak_rss_mib();
    let (status, body) = post_encoded(&app, "gzip", bomb).await;
    let grew = peak_rss_mib() - before;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["--max_body_bytes"],
    );
    assert!(grew < 256.0, "peak memory grew by {grew:.0} MiB");
    // Under the limit compressed, over it decompressed: 413.
    let small = Limits {
        max_body_bytes: 100,
        ..Limits::default()
    };
    let app = app_with("linear", 1, 4, small);
    let padded = gzip(format!("{BODY}{}", " ".repeat(1000)).as_bytes());
    assert!(padded.len() < 100, "{}", padded.len());
    let (status, body) = post_encoded(&app, "gzip", padded).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, &["100 bytes"]);
}
