//! Model management on the real `runtime` binary: `--model_config_file` with several models,
//! version policies and labels; versions reloaded from disk under load; the config re-read and
//! replaced over gRPC; memory given back by unloaded versions; engine panics contained; bad
//! config files. The clients
//! are Python's urllib and grpcio (`models_client.py`), not our code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{Server, BIN};
use common::*;

/// A fresh folder for one test's models.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("onnx-serving-models-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies `from` (a version folder) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Fixture `fixture`'s version 1 as `<base>/<version>`.
fn add_version(base: &Path, version: u64, fixture: &str) {
    copy_dir(
        &models().join(fixture).join("1"),
        &base.join(version.to_string()),
    );
}

/// Runs one case of models_client.py against `server`; fails with the client's report.
fn run_client(case: &str, server: &Server, base: &Path, config: Option<&Path>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models_client.py");
    let stubs = scratch(&format!("stubs-{case}"));
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(case)
        .env("REST", server.port.to_string())
        .env("GRPC", server.grpc_port.to_string())
        .env("PID", server.child.id().to_string())
        .env("BASE", base)
        .env("FIXTURES", fixtures())
        .env("ONNX_SERVING_STUBS_DIR", &stubs);
    if let Some(config) = config {
        cmd.env("CONFIG", config);
    }
    let out = cmd.output().expect("run python");
    let _ = std::fs::remove_dir_all(&stubs);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim_end().ends_with("OK"),
        "models_client.py {case} failed:\n{report}"
    );
    eprintln!("{report}");
}

/// A server started with `args` (its model folders are the test's own).
fn start(args: &[&str]) -> Server {
    Server::start("unused", args)
}

#[test]
fn several_models_from_a_config_file_with_policies_and_labels() {
    let base = scratch("config");
    add_version(&base.join("linear"), 1, "linear");
    add_version(&base.join("linear"), 2, "linear_v2");
    add_version(&base.join("linear"), 3, "linear_v2"); // outside the policy: never loaded
    add_version(&base.join("multi_io"), 1, "multi_io");
    let config = base.join("models.config");
    std::fs::write(
        &config,
        format!(
            r#"# Two models, as TF Serving reads them.
model_config_list {{
  config {{
    name: "linear"
    base_path: "{0}/linear"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "multi_io"
    base_path: "{0}/multi_io"
    model_platform: "tensorflow"
  }}
}}
"#,
            base.display()
        ),
    )
    .unwrap();
    let server = start(&[
        "--model_config_file",
        config.to_str().unwrap(),
        "--enable_metrics",
    ]);
    run_client("config", &server, &base, Some(&config));
    assert!(
        server
            .seen
            .iter()
            .any(|l| l.contains("model 'multi_io': model_platform \"tensorflow\" read as \"onnx\"")),
        "no warning for a copied TF config"
    );
}

#[test]
fn versions_reload_from_disk_under_load_without_a_failed_request() {
    let base = scratch("reload");
    add_version(&base.join("m"), 1, "linear");
    let server = start(&[
        "--model_name",
        "m",
        "--model_base_path",
        base.to_str().unwrap(),
        "--file_system_poll_wait_seconds",
        "1",
    ]);
    run_client("reload", &server, &base, None);
}

#[test]
fn an_engine_panic_fails_one_request_or_one_version_never_the_server() {
    // The engine-abort hook the client's last step uses is compiled into debug builds only.
    if !cfg!(debug_assertions) {
        eprintln!("skipped: `cargo test --release` builds the runtime without its test hook");
        return;
    }
    let base = scratch("panics");
    add_version(&base.join("gather"), 1, "gather");
    add_version(&base.join("linear"), 1, "linear");
    let config = base.join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n  config {{ name: \"gather\" base_path: \"{0}/gather\" }}\n  \
             config {{ name: \"linear\" base_path: \"{0}/linear\" }}\n}}\n",
            base.display()
        ),
    )
    .unwrap();
    // tract: the engine that panics on these models (onnxruntime answers an error).
    let server = start(&[
        "--model_config_file",
        config.to_str().unwrap(),
        "--engine",
        "tract",
        "--file_system_poll_wait_seconds",
        "1",
    ]);
    run_client("engine_panics", &server, &base, None);
}

/// `<base>/models.config`, serving model `a` from `<base>/a`.
fn config_serving_a(base: &Path) -> PathBuf {
    let config = base.join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{ config {{ name: \"a\" base_path: \"{}/a\" }} }}\n",
            base.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_config_file_is_reread_and_handle_reload_config_request_replaces_it() {
    let base = scratch("config-reload");
    add_version(&base.join("a"), 1, "linear");
    add_version(&base.join("b"), 1, "linear");
    let config = config_serving_a(&base);
    let server = start(&[
        "--model_config_file",
        config.to_str().unwrap(),
        "--model_config_file_poll_wait_seconds",
        "1",
    ]);
    run_client("config_reload", &server, &base, Some(&config));
}

#[test]
fn allow_version_labels_for_unavailable_models_lets_only_new_labels_point_ahead() {
    let base = scratch("allow-labels");
    add_version(&base.join("a"), 1, "linear");
    let config = config_serving_a(&base);
    let server = start(&[
        "--model_config_file",
        config.to_str().unwrap(),
        "--allow_version_labels_for_unavailable_models",
    ]);
    run_client("allow_labels", &server, &base, Some(&config));
}

#[test]
fn unloaded_versions_give_their_memory_back() {
    let cnn = std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"))
        .join("efficientnet")
        .join("1");
    assert!(
        cnn.join("model.onnx").is_file(),
        "{} is missing: `make test-models` makes it",
        cnn.display()
    );
    let base = scratch("memory");
    copy_dir(&cnn, &base.join("m").join("1"));
    let mut server = start(&[
        "--model_name",
        "m",
        "--model_base_path",
        base.to_str().unwrap(),
        "--engine",
        "tract",
        "--file_system_poll_wait_seconds",
        "1",
    ]);
    run_client("memory", &server, &base, None);
    // Every replaced version was dropped, not just taken out of the map.
    for v in 1..=5 {
        server.wait_for_log(&format!(
            "Done unloading servable version {{name: m version: {v}}}"
        ));
    }
}

/// Starts the server on `config` (text); returns its stderr, after checking it failed.
fn refused(name: &str, config: &str) -> (String, PathBuf) {
    let base = scratch(&format!("bad-{name}"));
    add_version(&base.join("linear"), 1, "linear");
    let path = base.join(format!("{name}.config"));
    std::fs::write(&path, config.replace("BASE", base.to_str().unwrap())).unwrap();
    let out = Command::new(BIN)
        .args(["--rest_api_port", "0", "--port", "0", "--model_config_file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{name}: the server started");
    (String::from_utf8_lossy(&out.stderr).into_owned(), path)
}

#[test]
fn bad_model_config_files_fail_with_the_line_named() {
    let good = "config {\n  name: \"linear\"\n  base_path: \"BASE/linear\"\n}";
    let cases: [(&str, String, &str, &[&str]); 6] = [
        (
            "syntax",
            format!("model_config_list {{\n{good}\n"),
            ":6:",
            &["end of input"],
        ),
        (
            "unknown_field",
            format!("model_config_list {{\n{good}\nconfig {{\n  name: \"x\"\n  base_pth: \"/x\"\n}}\n}}"),
            ":8:3:",
            &["base_pth"],
        ),
        (
            "duplicate",
            format!("model_config_list {{\n{good}\n{good}\n}}"),
            ":6:",
            &["'linear' is used twice"],
        ),
        (
            "no_base_path",
            "model_config_list {\n  config { name: \"linear\" }\n}".to_string(),
            ":2:",
            &["no base_path"],
        ),
        (
            "missing_folder",
            "model_config_list {\n\n  config { name: \"linear\" base_path: \"BASE/nope\" }\n}"
                .to_string(),
            ":3:",
            &["nope is not a folder"],
        ),
        (
            "platform",
            "model_config_list { config { name: \"linear\" base_path: \"BASE/linear\" model_platform: \"pytorch\" } }".to_string(),
            ":1:",
            &["\"pytorch\" is not served here"],
        ),
    ];
    for (name, text, line, needles) in cases {
        let (err, path) = refused(name, &text);
        let at = format!("{}{line}", path.display());
        assert!(err.contains(&at), "{name}: no {at:?} in:\n{err}");
        for needle in needles {
            assert!(err.contains(needle), "{name}: no {needle:?} in:\n{err}");
        }
        assert!(err.contains("--model_config_file"), "{name}: {err}");
    }
}
