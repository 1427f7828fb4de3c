//! The real `runtime` binary on a free port, over real HTTP: start-up logs, predictions,
//! healthcheck, graceful shutdown, and start-up failures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::{Server, BIN};
use common::*;
use serde_json::{json, Value};

/// Minimal HTTP/1.0 client: (status, JSON body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")),
    )
}

#[test]
fn serves_predictions_over_http_with_tf_serving_logs() {
    let server = Server::start("multi_io", &[]);
    let want = expected("multi_io");
    let (status, body) = http(server.port, "GET", "/v1/models/multi_io", "");
    assert_eq!(status, 200);
    assert_eq!(body["model_version_status"][0]["state"], "AVAILABLE");
    let request = json!({"inputs": want["inputs"]}).to_string();
    let (status, body) = http(server.port, "POST", "/v1/models/multi_io:predict", &request);
    assert_eq!(status, 200, "{body}");
    assert_close(&body["outputs"]["sum"], &want["outputs"]["sum"], 1e-6);
    assert_close(
        &body["outputs"]["product"],
        &want["outputs"]["product"],
        1e-6,
    );
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/models/multi_io:predict",
        "{not json",
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("malformed JSON"));

    // The healthcheck subcommand, as Docker's HEALTHCHECK runs it.
    let ok = Command::new(BIN)
        .args(["healthcheck", "--url", &server.url("/v1/models/multi_io")])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new(BIN)
        .args(["healthcheck", "--url", &server.url("/v1/models/other")])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"));
}

#[test]
fn start_up_logs_name_the_ports_and_the_signature() {
    let mut child = Command::new(BIN)
        .args([
            "--rest_api_host",
            "127.0.0.1",
            "--rest_api_port",
            "0",
            "--port",
            "0",
        ])
        .args(["--model_name", "linear", "--model_base_path"])
        .arg(models())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        seen.push(line.clone());
        if line.contains("output y") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    for needle in [
        "Running gRPC ModelServer at 127.0.0.1:",
        "Exporting HTTP/REST API at:127.0.0.1:",
        "Successfully loaded servable version {name: linear version: 1}",
        "input  x: DT_FLOAT [-1, 4]",
        "output y: DT_FLOAT [-1, 3]",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    // Intra-op threads left at 0: timed at warm-up, 1 or every core.
    let cores = hostcpu::compute_cores();
    if cores > 1 {
        assert!(
            log.contains("Intra-op threads: 1 (a lone run took")
                || log.contains(&format!("Intra-op threads: {cores} (a lone run took")),
            "no intra-op choice logged:\n{log}"
        );
    }
}

/// A gRPC Predict on the `slow` fixture with tonic's generated client: y's values. `connected`
/// hears once the channel is up, just before the call goes out.
fn grpc_predict_slow(
    port: u16,
    connected: std::sync::mpsc::Sender<()>,
) -> Result<Vec<f32>, tonic::Status> {
    use runtime::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
    let request = predict_request("slow", "x", float_tensor(&[1, 1], &[0.5]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = grpc_channel(port)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let _ = connected.send(());
        let answer = PredictionServiceClient::new(channel)
            .predict(request)
            .await?;
        Ok(answer.into_inner().outputs["y"].float_val.clone())
    })
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let server = Server::start("slow", &["--inference_threads", "1"]);
    let port = server.port;
    let grpc_port = server.grpc_port;
    let request = json!({"instances": [[0.5]]}).to_string();
    let in_flight =
        std::thread::spawn(move || http(port, "POST", "/v1/models/slow:predict", &request));
    let (connected, up) = std::sync::mpsc::channel();
    let grpc_in_flight = std::thread::spawn(move || grpc_predict_slow(grpc_port, connected));
    up.recv_timeout(Duration::from_secs(20))
        .expect("the gRPC client connects");
    std::thread::sleep(Duration::from_millis(30)); // both are now running (a run takes ~100 ms)
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "in-flight request was cut: {body}");
    let y = grpc_in_flight
        .join()
        .unwrap()
        .expect("in-flight gRPC call was cut");
    assert_eq!(y, [67108864.0], "the gRPC call's answer");
    let mut server = server;
    let exit = wait_exit(&mut server.child, Duration::from_secs(20));
    assert_eq!(exit, Some(0), "runtime did not exit 0 after SIGTERM");
    for p in [port, grpc_port] {
        assert!(
            TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still accepting after shutdown"
        );
    }
}

#[test]
fn access_log_and_metrics_flags() {
    let mut server = Server::start("linear", &["--access_log", "--enable_metrics"]);
    let (status, _) = http(
        server.port,
        "POST",
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    );
    assert_eq!(status, 200);
    let line = server.wait_for_log(" request ");
    for field in [
        "model=linear",
        "version=1",
        "api=rest",
        "method=predict",
        "status=OK",
        "latency_us=",
    ] {
        assert!(
            line.contains(field),
            "{field} missing from the access log line {line:?}"
        );
    }
    assert!(
        server
            .seen
            .iter()
            .any(|l| l.contains("Prometheus metrics at http://127.0.0.1:")),
        "{:#?}",
        server.seen
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "GET /monitoring/prometheus/metrics HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("onnx_serving_requests_total{api=\"rest\",method=\"predict\",model=\"linear\",status=\"OK\",version=\"1\"} 1"),
        "{text}"
    );
}

#[test]
fn tf_servings_monitoring_config_file_enables_metrics() {
    let dir = std::env::temp_dir().join(format!("onnx-serving-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("monitoring.config");
    std::fs::write(
        &good,
        "prometheus_config {\n  enable: true,\n  path: \"/metrics\"\n}\n",
    )
    .unwrap();
    let server = Server::start(
        "linear",
        &["--monitoring_config_file", good.to_str().unwrap()],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("onnx_serving_model_state{"), "{text}");

    let bad = dir.join("bad.config");
    std::fs::write(
        &bad,
        "prometheus_config {\n  enable: true\n  port: 9090\n}\n",
    )
    .unwrap();
    let err = failed_start(
        "linear",
        &["--monitoring_config_file", bad.to_str().unwrap()],
    );
    assert!(
        err.contains("--monitoring_config_file")
            && err.contains("bad.config:3:3:")
            && err.contains("port"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_metrics_path_inside_the_api_is_refused() {
    let err = failed_start(
        "linear",
        &["--enable_metrics", "--metrics_path", "/v1/models/x"],
    );
    assert!(
        err.contains("--metrics_path /v1/models/x must start with '/'"),
        "{err}"
    );
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs the server on fixture `model` with `extra` flags, expects it to exit non-zero, and
/// returns what it printed on stderr.
fn failed_start(model: &str, extra: &[&str]) -> String {
    failed_start_env(model, extra, &[])
}

#[test]
fn batching_flags_are_checked_and_logged() {
    let err = failed_start(
        "linear",
        &[
            "--enable_batching",
            "--max_batch_size",
            "4",
            "--allowed_batch_sizes",
            "2,8",
        ],
    );
    assert!(err.contains("8 is outside 2..=4"), "{err}");

    // tract makes and warms a plan per batch size.
    let server = Server::start(
        "linear",
        &[
            "--enable_batching",
            "--batch_timeout_micros",
            "500",
            "--engine",
            "tract",
        ],
    );
    let logged = |needle: &str| server.seen.iter().any(|l| l.contains(needle));
    assert!(
        logged("Dynamic batching: up to 8 instances per run, batch sizes [2, 4, 8], waiting up to 500 µs"),
        "{:#?}",
        server.seen
    );
    assert!(logged("Warm-up run (batch 8)"), "{:#?}", server.seen);
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().map(Vec::len), Some(3));
}

#[test]
fn missing_model_exits_non_zero_with_the_fix() {
    let err = failed_start("resnet", &[]);
    assert!(
        err.contains("cannot serve model 'resnet'") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        err.contains("/models/resnet/1/model.onnx"),
        "no example layout in: {err}"
    );
}

#[test]
fn corrupt_model_fails_to_load_and_exits_non_zero() {
    let err = failed_start("corrupt", &[]);
    assert!(
        err.contains("could not be loaded") && err.contains("tract could not parse"),
        "{err}"
    );
}

#[test]
fn tf_style_base_path_pointing_at_the_model_folder_works() {
    // tensorflow_model_server --model_base_path=/models/resnet: the folder holding the versions.
    let out = Command::new(BIN)
        .args(["check-model"])
        .arg(models().join("linear"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let server = Server::start(
        "linear",
        &[
            "--model_base_path",
            models().join("linear").to_str().unwrap(),
        ],
    );
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/models/linear:predict",
        r#"{"instances": [[0, 0, 0, 0]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_close(&body["predictions"], &json!([[0.5, -1.0, 2.0]]), 1e-6);
}

#[test]
fn check_model_reports_signature_or_the_reason_it_cannot_serve() {
    let out = Command::new(BIN)
        .args(["check-model"])
        .arg(models().join("int64_ids"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "ids: DT_INT64 [-1, 5]",
        "next_ids: DT_INT64 [-1, 5]",
        "total: DT_FLOAT [-1]",
        "tract: load + optimize + warm-up",
        "onnxruntime: load + optimize + warm-up",
        "output shapes [1, 5] [1]: OK",
        "OK",
    ] {
        assert!(
            text.contains(needle),
            "check-model output lacks {needle:?}:\n{text}"
        );
    }
    let out = Command::new(BIN)
        .args(["check-model"])
        .arg(models().join("corrupt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be served") && err.contains("tract could not parse"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["check-model", "/nonexistent/model.onnx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// `runtime check-model` with no PATH, the model named only through the environment.
fn check_model_from_env(name: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("check-model")
        .env("MODEL_NAME", name)
        .env("MODEL_BASE_PATH", models())
        .output()
        .unwrap()
}

#[test]
fn check_model_without_a_path_checks_the_model_serve_would_load() {
    // The serving image's build step runs `runtime check-model` with only MODEL_NAME and
    // MODEL_BASE_PATH set, exactly as `runtime serve` would find the model.
    let out = check_model_from_env("int64_ids");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ids: DT_INT64 [-1, 5]"));
    let out = check_model_from_env("corrupt");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tract could not parse"), "{err}");
    let out = check_model_from_env("absent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("absent") && err.contains("does not exist"),
        "{err}"
    );
}

/// A file that is not onnxruntime's library, as a broken or truncated copy would be.
fn broken_library() -> String {
    models()
        .join("corrupt/1/model.onnx")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_broken_onnxruntime_library_is_one_clear_error_and_tract_serves() {
    let lib = broken_library();
    let server = Server::start_with_env(
        "linear",
        &[],
        &[("ONNX_SERVING_ONNXRUNTIME_LIBRARY", lib.as_str())],
    );
    let seen = server.seen.join("\n");
    assert!(
        seen.contains("onnxruntime is not available (cannot load")
            && seen.contains("Engine: tract (the only engine available)"),
        "{seen}"
    );
    let (status, body) = http(server.port, "GET", "/v1/models/linear", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version_status"][0]["engine"], "tract");
    let (status, _) = http(
        server.port,
        "POST",
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    );
    assert_eq!(status, 200);
    drop(server);

    // Asked for explicitly, a broken library stops the start with the reason.
    let err = failed_start_env(
        "linear",
        &["--engine", "onnxruntime"],
        &[("ONNX_SERVING_ONNXRUNTIME_LIBRARY", lib.as_str())],
    );
    assert!(
        err.contains("--engine onnxruntime, but cannot load") && err.contains("make onnxruntime"),
        "{err}"
    );
}

#[test]
fn the_start_up_log_says_which_engine_serves_and_why() {
    common::require_onnxruntime();
    let server = Server::start("linear", &["--engine", "auto"]);
    let seen = server.seen.join("\n");
    assert!(
        seen.contains("onnxruntime 1.31.1 loaded from")
            && seen.contains("; on a lone run, best of 3"),
        "{seen}"
    );
    assert!(
        seen.contains("Successfully loaded servable version {name: linear version: 1}")
            && (seen.contains("(engine tract,") || seen.contains("(engine onnxruntime,")),
        "{seen}"
    );
    // An engine that cannot load the model, asked for by name, stops the start with its reason.
    let err = failed_start("determinant", &["--engine", "tract"]);
    assert!(err.contains("tract could not"), "{err}");
}

/// As [`failed_start`], with environment variables set for the server.
fn failed_start_env(model: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args([
            "--rest_api_host",
            "127.0.0.1",
            "--rest_api_port",
            "0",
            "--port",
            "0",
        ])
        .args(["--model_name", model])
        .args(extra)
        .envs(env.iter().copied())
        .arg("--model_base_path")
        .arg(models())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{model} {extra:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // now free
    let out = Command::new(BIN)
        .args([
            "healthcheck",
            "--timeout",
            "1",
            "--url",
            &format!("http://127.0.0.1:{port}/v1/models/m"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server answers"));
}

/// Bodies refused before they are read (over --max_body_bytes, a body on a GET) still get
/// their JSON answer in clients that write the whole body before reading: Python's urllib.
#[test]
fn big_bodies_refused_early_still_get_their_answer() {
    let server = Server::start("linear", &["--max_body_bytes", "1000000"]);
    let script = r#"
import json, sys, urllib.error, urllib.request
port = sys.argv[1]
for method, path, size in [("POST", "/v1/models/linear:predict", 5_000_000),
                           ("GET", "/v1/models/linear:predict", 6_000_000),
                           ("POST", "/v1/models/nope:predict", 3_000_000)]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"[" * size, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            print(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code, json.loads(e.read())["error"])
"#;
    let said = run_python(script, server.port);
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines.len() == 3
            && lines[0].starts_with("413 ")
            && lines[0].contains("--max_body_bytes")
            && lines[1].starts_with("405 ")
            && lines[2].starts_with("404 "),
        "{said}"
    );
}

/// Slowloris: 300 connections sending their headers a byte at a time do not keep other clients
/// out, and are closed after --http_header_read_timeout_seconds; an upload slower than
/// --rest_api_timeout_in_ms ends in 504 with a JSON error.
#[test]
fn slow_clients_cannot_hold_the_server() {
    let server = Server::start(
        "linear",
        &[
            "--http_header_read_timeout_seconds",
            "2",
            "--rest_api_timeout_in_ms",
            "1000",
        ],
    );
    let script = r#"
import json, socket, sys, threading, time, urllib.request
port = int(sys.argv[1])
slow = []
for _ in range(300):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/models/linear HTTP/1.1\r\nHo")
    slow.append(s)
# Other clients are served meanwhile, promptly.
for _ in range(20):
    t = time.time()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/linear", timeout=5) as r:
        assert r.status == 200
    assert time.time() - t < 1.0, time.time() - t
# The slow ones are closed once their headers are overdue.
time.sleep(3)
closed = 0
for s in slow:
    s.settimeout(2)
    try:
        s.sendall(b"s")
        closed += s.recv(1024) == b""
    except OSError:
        closed += 1
print("closed", closed)
# An upload that trickles: 504 once the request has taken longer than its time.
s = socket.create_connection(("127.0.0.1", port))
body = b'{"instances": [[1, 2, 3, 4]]}'
s.sendall(b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
answer = b""
s.settimeout(10)
for b in body:
    try:
        s.sendall(bytes([b]))
    except OSError:
        break
    time.sleep(0.1)
    s.setblocking(False)
    try:
        answer += s.recv(65536)
    except BlockingIOError:
        pass
    s.setblocking(True)
    if answer:
        break
s.settimeout(10)
while b"\r\n\r\n" not in answer:
    answer += s.recv(65536)
print(answer.split(b"\r\n")[0].decode(), answer.split(b"\r\n\r\n", 1)[1][:200].decode(errors="replace"))
"#;
    let said = run_python(script, server.port);
    assert!(said.contains("closed 300"), "{said}");
    assert!(
        said.contains("HTTP/1.1 504") && said.contains("--rest_api_timeout_in_ms"),
        "{said}"
    );
}

/// Runs a Python client script with the server's port as its argument; its output, after
/// checking it succeeded.
fn run_python(script: &str, port: u16) -> String {
    let out = Command::new(python())
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("run python");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// A version that `builder optimize` made: `check-model` and the start-up log both name its
/// precision, variant and the accuracy gate's figures from `optimization.json`.
#[test]
fn check_model_and_the_log_name_an_optimized_models_precision_and_gate() {
    let base = linear_with_optimization(
        "optimized-log",
        r#"{"precision": "int8", "variant": "int8", "reason": "int8 passed the gate",
            "candidates": {"int8": {"gate": {"top1": 0.993, "n": 146}}}}"#,
    );
    let want = "precision int8, variant int8; accuracy gate: top-1 agreement with fp32 99.3 % on \
                146 held-out inputs (int8 passed the gate)";
    let out = Command::new(BIN)
        .args(["check-model"])
        .arg(base.join("linear"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Precision: int8") && text.contains(want),
        "check-model does not name the precision and the gate:\n{text}"
    );
    let base_path = base.to_string_lossy().to_string();
    let server = Server::start("linear", &["--model_base_path", &base_path]);
    assert!(
        server.seen.iter().any(|line| line.contains(want)),
        "the log does not name the precision and the gate: {:#?}",
        server.seen
    );
    drop(server);
    std::fs::remove_dir_all(&base).unwrap();
}
