//! The OpenVINO engine on real OpenVINO (the CPU plugin from PyPI's wheel): the same answers as
//! the other engines in f32, bf16 where an optimized model asks for it, and clear errors. Needs
//! OpenVINO's libraries: `make openvino` fetches them and `make test` points
//! `ONNX_SERVING_TEST_OPENVINO_LIBRARY` at them (only these tests open OpenVINO, so that `auto`
//! elsewhere keeps timing the engines it always did).

mod common;

use axum::http::StatusCode;
use common::process::Server;
use common::squeezenet::{argmax, Squeezenet};
use common::*;
use runtime::engine::{self, ComputePrecision, EngineChoice, EngineKind, LoadOptions};
use runtime::models::{find_latest_version, load_and_warm_up, PoolOptions};
use runtime::Limits;
use serde_json::json;

/// `ONNX_SERVING_TEST_OPENVINO_LIBRARY`, or fails the test with the fix.
fn openvino_library() -> String {
    std::env::var("ONNX_SERVING_TEST_OPENVINO_LIBRARY").unwrap_or_else(|_| {
        panic!(
            "ONNX_SERVING_TEST_OPENVINO_LIBRARY is not set: `make openvino` fetches OpenVINO's \
             libraries and `make test` points it at them"
        )
    })
}

/// Opens OpenVINO from `ONNX_SERVING_TEST_OPENVINO_LIBRARY`, or fails the test with the fix.
fn require_openvino() {
    let path = openvino_library();
    if let Err(why) = engine::openvino::init(Some(std::path::Path::new(&path))) {
        panic!("OpenVINO cannot be opened: {why}");
    }
}

/// Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), as /proc/cpuinfo says:
/// the runtime asks OpenVINO for bf16 only there (`engine::native_bf16`, from CPUID).
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines().filter(|l| l.starts_with("flags")).any(|l| {
            l.split_whitespace()
                .any(|f| f == "avx512_bf16" || f == "amx_bf16")
        })
    })
}

#[tokio::test]
async fn openvino_answers_every_fixture_like_numpy_over_rest() {
    require_openvino();
    for name in ["linear", "multi_io", "fixed_batch"] {
        let want = expected(name);
        let body = json!({"inputs": want["inputs"]}).to_string();
        let pool = PoolOptions {
            engine: EngineChoice::Openvino,
            ..PoolOptions::new(1, 16)
        };
        let app = app_pooled(&models().join(name), name, &pool, Limits::default());
        let (status, got) = post(&app, &format!("/v1/models/{name}:predict"), &body).await;
        assert_eq!(status, StatusCode::OK, "{name}: {got}");
        let outputs = want["outputs"].as_object().unwrap();
        for (out, value) in outputs {
            let have = if outputs.len() == 1 {
                &got["outputs"]
            } else {
                &got["outputs"][out.as_str()]
            };
            assert_close(have, value, 1e-4);
        }
        let (status, meta) = get(&app, &format!("/v1/models/{name}/metadata")).await;
        assert_eq!(status, StatusCode::OK, "{meta}");
    }
}

#[tokio::test]
async fn openvino_f32_matches_onnxruntime_python_on_squeezenet() {
    require_openvino();
    let squeezenet = Squeezenet::read();
    let loaded = engine::load(
        EngineKind::Openvino,
        &squeezenet.path,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.backend.kind(), EngineKind::Openvino);
    let notes = loaded.notes.join("\n");
    assert!(notes.contains("inference precision f32"), "{notes}");
    let out = loaded
        .backend
        .runner()
        .unwrap()
        .run(vec![squeezenet.input()])
        .unwrap();
    let diff = squeezenet.max_diff(&out);
    assert!(
        diff < 1e-4,
        "OpenVINO f32 differs from onnxruntime's Python by {diff}"
    );
}

/// bf16 changes the arithmetic (the outputs move, on a CPU that computes bf16) but not the
/// answer: SqueezeNet's class stays onnxruntime's.
#[tokio::test]
async fn openvino_bf16_moves_the_outputs_not_the_class() {
    require_openvino();
    let squeezenet = Squeezenet::read();
    let opts = LoadOptions {
        compute_precision: ComputePrecision::Bf16,
        ..LoadOptions::default()
    };
    let loaded = engine::load(EngineKind::Openvino, &squeezenet.path, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    // The plugin's own precision, read back: bf16 only on a CPU that computes it (CPUID and
    // the kernel's flags agree on which).
    assert_eq!(engine::native_bf16(), cpu_has_bf16());
    let notes = loaded.notes.join("\n");
    if cpu_has_bf16() {
        assert!(notes.contains("inference precision bf16"), "{notes}");
        assert_eq!(loaded.backend.compute_precision(), ComputePrecision::Bf16);
    } else {
        assert!(notes.contains("inference precision f32"), "{notes}");
        assert_eq!(loaded.backend.compute_precision(), ComputePrecision::F32);
    }
    let out = loaded
        .backend
        .runner()
        .unwrap()
        .run(vec![squeezenet.input()])
        .unwrap();
    let got = out[0].as_slice::<f32>().unwrap();
    assert_eq!(
        argmax(got.iter().map(|&v| f64::from(v))),
        squeezenet.want_top1()
    );
    let diff = squeezenet.max_diff(&out);
    // Measured on an AMX host: 0.002 (SqueezeNet's outputs are probabilities).
    assert!(diff < 0.05, "bf16 moved an output by {diff}");
    if cpu_has_bf16() {
        assert!(
            diff > 1e-4,
            "bf16 on a bf16 CPU left the outputs as f32's ({diff}): was the precision applied?"
        );
    }
}

/// An `optimization.json` that chose bf16 (OpenVINO's) is served by OpenVINO under `--engine
/// auto`, without timing the other engines, in bf16 where the CPU computes it.
#[tokio::test]
async fn a_bf16_optimized_model_is_served_by_openvino() {
    require_openvino();
    let base = linear_with_optimization(
        "openvino-bf16",
        r#"{"precision": "bf16", "variant": "bf16", "reason": "bf16 passed the gate"}"#,
    );
    let found = find_latest_version(&base.join("linear")).unwrap();
    let pool = PoolOptions {
        engine: EngineChoice::Auto,
        model_name: "linear".into(),
        ..PoolOptions::new(1, 16)
    };
    let served = load_and_warm_up(&found, &pool).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(served.engine, EngineKind::Openvino);
    // What status and metadata report: bf16 only where OpenVINO computes in it.
    let want = if cpu_has_bf16() { "bf16" } else { "fp32" };
    assert_eq!(served.precision(), Some(want));
    std::fs::remove_dir_all(&base).unwrap();
}

/// `--enable_batching` on OpenVINO: concurrent requests (of 1 and 2 instances) to a model with
/// a free batch share runs, and each gets its own rows back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openvino_batching_merges_concurrent_requests_and_answers_each_its_own() {
    use runtime::pool::Batching;
    use std::sync::Arc;
    use std::time::Duration;

    require_openvino();
    let found = find_latest_version(&models().join("linear")).unwrap();
    // One worker that waits up to 300 ms for a batch of 4 to fill.
    let pool = PoolOptions {
        engine: EngineChoice::Openvino,
        model_name: "linear".into(),
        batching: Some(Batching::new(4, Duration::from_millis(300), &[]).unwrap()),
        ..PoolOptions::new(1, 64)
    };
    let model = Arc::new(load_and_warm_up(&found, &pool).unwrap_or_else(|e| panic!("{e:#}")));
    assert_eq!(model.engine, EngineKind::Openvino);
    linear_requests_merge_and_answer_each_its_own(model).await;
}

/// `--enable_batching` on a model whose batch is fixed at 1: OpenVINO offers no merging (the
/// pool then runs each request alone), and concurrent requests are all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openvino_batching_leaves_a_fixed_batch_model_to_single_runs() {
    use futures_util::future::join_all;
    use runtime::engine::BatchSupport;
    use runtime::pool::Batching;
    use std::time::Duration;

    require_openvino();
    let found = find_latest_version(&models().join("fixed_batch")).unwrap();
    let pool = PoolOptions {
        engine: EngineChoice::Openvino,
        batching: Some(Batching::new(4, Duration::from_millis(100), &[]).unwrap()),
        ..PoolOptions::new(1, 64)
    };
    let loaded = engine::load(
        EngineKind::Openvino,
        &found.path,
        &LoadOptions {
            batch_sizes: vec![2, 4],
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.backend.batch_support(), BatchSupport::None);
    let app = app_pooled(
        &models().join("fixed_batch"),
        "fixed_batch",
        &pool,
        Limits::default(),
    );
    let want = expected("fixed_batch");
    let body = json!({"instances": want["inputs"]["x"]}).to_string();
    let answers = join_all((0..4).map(|_| post(&app, "/v1/models/fixed_batch:predict", &body)));
    for (status, got) in answers.await {
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_close(&got["predictions"], &want["outputs"]["y"], 1e-5);
    }
}

/// The served binary's log on a bf16 variant: where the CPU computes bf16, no warning; elsewhere
/// exactly one line names the missing instructions, and it is a warning (the engine used to add
/// an info note saying the same).
#[test]
fn the_log_warns_once_when_a_bf16_variant_is_computed_in_f32() {
    let library = openvino_library();
    let base = linear_with_optimization(
        "openvino-bf16-log",
        r#"{"precision": "bf16", "variant": "bf16", "reason": "bf16 passed the gate"}"#,
    );
    let base_path = base.to_string_lossy().to_string();
    let server = Server::start(
        "linear",
        &[
            "--model_base_path",
            &base_path,
            "--engine",
            "openvino",
            "--openvino_library",
            &library,
        ],
    );
    let about_bf16: Vec<&String> = server
        .seen
        .iter()
        .filter(|line| line.contains("AVX512-BF16"))
        .collect();
    if cpu_has_bf16() {
        assert!(about_bf16.is_empty(), "{about_bf16:#?}");
    } else {
        assert_eq!(about_bf16.len(), 1, "{:#?}", server.seen);
        assert!(about_bf16[0].contains("WARN"), "{}", about_bf16[0]);
        assert!(
            about_bf16[0].contains("at fp32's speed"),
            "{}",
            about_bf16[0]
        );
    }
    drop(server);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_missing_library_is_an_error_that_says_what_to_do() {
    // A process of its own: the library, once opened, stays for the process.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["check-model", "--engine", "openvino", "--openvino_library"])
        .arg("/nonexistent/libopenvino_c.so")
        .arg(models().join("linear"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("--openvino_library") && text.contains("make openvino"),
        "{text}"
    );
}
