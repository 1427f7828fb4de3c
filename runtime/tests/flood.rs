//! Floods from a separate process (Debian's wrk, through scripts/flood.lua) at 256 connections:
//! a fast model and an image model fed b64 JPEGs with a small queue. Every answer must be 200,
//! or 429 with Retry-After; no 5xx, no timeout, no dropped connection; the server's memory stays
//! bounded. Throughput figures live in BENCHMARKS.md (scripts/flood.py), not here.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::process::Server;
use common::*;
use serde_json::Value;

/// Runs wrk against `server`'s `path` for `seconds`, POSTing `body`; returns flood.lua's report
/// and the server's peak RSS in MiB.
fn flood(server: &Server, path: &str, body: &str, seconds: u32) -> (Value, f64) {
    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flood.lua");
    let body_file = std::env::temp_dir().join(format!("flood-body-{}.json", std::process::id()));
    std::fs::write(&body_file, body).unwrap();
    let out = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            "256",
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&lua)
        .arg(server.url(path))
        .env("FLOOD_BODY", &body_file)
        .output()
        .expect("wrk is missing: scripts/setup-host.sh installs it (apt-get install wrk)");
    let _ = std::fs::remove_file(&body_file);
    let text = String::from_utf8_lossy(&out.stdout);
    let report = text
        .lines()
        .find_map(|l| l.strip_prefix("FLOOD "))
        .unwrap_or_else(|| {
            panic!(
                "no report from wrk:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let peak = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap()
        / 1024.0;
    (serde_json::from_str(report).unwrap(), peak)
}

fn check(what: &str, report: &Value, peak_mib: f64, max_mib: f64) -> (u64, u64) {
    let status = report["status"].as_object().unwrap();
    let count = |code: &str| status.get(code).and_then(Value::as_u64).unwrap_or(0);
    let others: Vec<_> = status
        .keys()
        .filter(|k| *k != "200" && *k != "429")
        .collect();
    assert!(
        others.is_empty(),
        "{what}: statuses other than 200 and 429: {report}"
    );
    for key in [
        "no_retry_after",
        "timeouts",
        "connect_errors",
        "read_errors",
        "write_errors",
    ] {
        assert_eq!(report[key], 0, "{what}: {key}: {report}");
    }
    assert!(count("200") > 0, "{what}: nothing answered 200: {report}");
    assert!(peak_mib < max_mib, "{what}: peak RSS {peak_mib:.0} MiB");
    eprintln!("{what}: {report}, peak RSS {peak_mib:.0} MiB");
    (count("200"), count("429"))
}

#[test]
fn floods_get_200_or_429_with_retry_after_and_bounded_memory() {
    let fast = Server::start("linear", &["--queue_capacity", "64"]);
    let (report, peak) = flood(
        &fast,
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
        8,
    );
    check("fast model, 256 connections", &report, peak, 200.0);
    drop(fast);

    // The image model with a queue of 4: most requests are refused, before their decoding.
    let image = Server::start(
        "image_classifier",
        &["--queue_capacity", "4", "--inference_workers", "1"],
    );
    let jpeg = std::fs::read(fixtures().join("images/photo.jpg")).unwrap();
    let body = format!(
        r#"{{"instances": [{{"b64": "{}"}}]}}"#,
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    );
    let (report, peak) = flood(&image, "/v1/models/image_classifier:predict", &body, 8);
    let (ok, refused) = check(
        "image model, queue 4, 256 connections",
        &report,
        peak,
        300.0,
    );
    assert!(refused > 0, "a queue of 4 refused nothing: {report}");
    assert!(ok > 0);
}
