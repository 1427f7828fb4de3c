//! The engine seam: tract and onnxruntime answer the same requests alike, `--engine auto` serves
//! a model with the engine that can load it, and an explicit engine that cannot fails with its
//! reason. Needs onnxruntime's library (`make onnxruntime`; `make test` points at it).

mod common;

use axum::http::StatusCode;
use common::squeezenet::Squeezenet;
use common::*;
use runtime::engine::{self, EngineChoice, EngineKind, LoadOptions};
use runtime::models::find_latest_version;
use runtime::models::{load_and_warm_up, PoolOptions};
use runtime::Limits;
use serde_json::{json, Value};

fn app_on(name: &str, engine: EngineChoice) -> axum::Router {
    let pool = PoolOptions {
        engine,
        ..PoolOptions::new(1, 16)
    };
    app_pooled(&models().join(name), name, &pool, Limits::default())
}

/// The fixture's expected inputs as a columnar request, and its outputs by name.
fn columnar(name: &str) -> (String, Value) {
    let want = expected(name);
    (
        json!({"inputs": want["inputs"]}).to_string(),
        want["outputs"].clone(),
    )
}

#[tokio::test]
async fn both_engines_answer_every_fixture_like_numpy() {
    require_onnxruntime();
    for name in ["linear", "multi_io", "int64_ids", "dtypes", "fixed_batch"] {
        let (body, want) = columnar(name);
        let mut answers = Vec::new();
        for engine in [EngineChoice::Tract, EngineChoice::Onnxruntime] {
            let app = app_on(name, engine);
            let (status, got) = post(&app, &format!("/v1/models/{name}:predict"), &body).await;
            assert_eq!(status, StatusCode::OK, "{name} on {engine:?}: {got}");
            let outputs = &got["outputs"];
            let names: Vec<&String> = want.as_object().unwrap().keys().collect();
            for out in &names {
                let have = if names.len() == 1 {
                    outputs
                } else {
                    &outputs[out.as_str()]
                };
                assert_close(have, &want[out.as_str()], 1e-4);
            }
            answers.push(got);
        }
        assert_eq!(answers[0].as_object().map(|o| o.len()), Some(1));
        for out in want.as_object().unwrap().keys() {
            let pick = |a: &Value| match &a["outputs"] {
                Value::Object(named) => named[out.as_str()].clone(),
                bare => bare.clone(),
            };
            assert_close(&pick(&answers[0]), &pick(&answers[1]), 1e-4);
        }
    }
}

#[tokio::test]
async fn status_and_metadata_name_the_engine() {
    require_onnxruntime();
    for (engine, name) in [
        (EngineChoice::Tract, "tract"),
        (EngineChoice::Onnxruntime, "onnxruntime"),
    ] {
        let app = app_on("linear", engine);
        let (_, status) = get(&app, "/v1/models/linear").await;
        assert_eq!(status["model_version_status"][0]["engine"], name);
        let (_, meta) = get(&app, "/v1/models/linear/metadata").await;
        assert_eq!(meta["metadata"]["engine"], name);
        // The signature is the model's, whoever reads it.
        let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][0]["size"], "-1");
        assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][1]["size"], "4");
    }
}

/// Det is an op onnxruntime runs and tract does not.
#[tokio::test]
async fn auto_serves_a_model_with_the_engine_that_loads_it() {
    require_onnxruntime();
    let app = app_on("determinant", EngineChoice::Auto);
    let (_, status) = get(&app, "/v1/models/determinant").await;
    assert_eq!(
        status["model_version_status"][0]["engine"], "onnxruntime",
        "{status}"
    );
    let (body, want) = columnar("determinant");
    let (code, got) = post(&app, "/v1/models/determinant:predict", &body).await;
    assert_eq!(code, StatusCode::OK, "{got}");
    assert_close(&got["outputs"], &want["det"], 1e-4);

    let found = find_latest_version(&models().join("determinant")).unwrap();
    let pool = PoolOptions {
        engine: EngineChoice::Tract,
        ..PoolOptions::new(1, 4)
    };
    let err = format!(
        "{:#}",
        load_and_warm_up(&found, &pool)
            .err()
            .expect("tract cannot load Det")
    );
    assert!(err.contains("tract could not"), "{err}");
}

#[test]
fn auto_keeps_the_faster_engine_and_says_why() {
    require_onnxruntime();
    let found = find_latest_version(&models().join("linear")).unwrap();
    let loaded = engine::load_chosen(EngineChoice::Auto, &found.path, &LoadOptions::default())
        .expect("linear loads");
    let note = loaded.notes.last().expect("a note on the choice");
    assert!(
        note.starts_with(&format!("Engine: {}", loaded.backend.kind()))
            && note.contains("onnxruntime ")
            && note.contains("tract ")
            && note.contains("; on a lone run, best of 3"),
        "{note}"
    );
}

/// A variant `builder optimize` made and timed on onnxruntime (its `optimization.json` says
/// int8) is served there by the server's default `--engine auto` without timing tract, and the
/// start-up log says why.
#[test]
fn auto_serves_an_optimized_variant_on_the_engine_it_was_made_on() {
    require_onnxruntime();
    let base = linear_with_optimization(
        "made-on",
        r#"{"precision": "int8", "variant": "int8", "reason": "int8 passed the gate"}"#,
    );
    let server = process::Server::start("linear", &["--model_base_path", base.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&base);
    // Server::start waited for the version to load: its log so far has the choice.
    let log = server.seen.join("\n");
    let said = |needle: &str| server.seen.iter().any(|line| line.contains(needle));
    assert!(
        said("Engine: onnxruntime, which this optimized model was made and timed on")
            && said("(engine onnxruntime, ")
            && !said("tract cannot serve")
            && !said("best of 3"),
        "{log}"
    );
}

#[test]
fn check_with_every_engine_reports_each_verdict() {
    require_onnxruntime();
    for kind in [EngineKind::Tract, EngineKind::Onnxruntime] {
        let found = find_latest_version(&models().join("int64_ids")).unwrap();
        let loaded = engine::load(kind, &found.path, &LoadOptions::default()).unwrap();
        let mut runner = loaded.backend.runner().unwrap();
        let ids =
            runtime::tensor::Tensor::from_vec(vec![1, 5], vec![1i64, 2, 3, 4, 1 << 53]).unwrap();
        let out = runner.run(vec![ids]).unwrap();
        // int64 stays exact through both engines.
        assert_eq!(
            out[0].as_slice::<i64>().unwrap(),
            [2, 3, 4, 5, (1 << 53) + 1],
            "{kind}"
        );
    }
}

/// The real CNN: both engines within 1e-4 of onnxruntime's Python output (reference.json).
#[tokio::test]
async fn both_engines_match_onnxruntime_python_on_squeezenet() {
    require_onnxruntime();
    let squeezenet = Squeezenet::read();
    for kind in [EngineKind::Tract, EngineKind::Onnxruntime] {
        let loaded = engine::load(kind, &squeezenet.path, &LoadOptions::default()).unwrap();
        let mut runner = loaded.backend.runner().unwrap();
        let out = runner.run(vec![squeezenet.input()]).unwrap();
        let max_diff = squeezenet.max_diff(&out);
        assert!(
            max_diff < 1e-4,
            "{kind} differs from onnxruntime's Python by {max_diff}"
        );
    }
}

/// Threads follow the load: with one thread per worker, a request admitted alone runs on
/// onnxruntime's session for every core (its answer the same), and requests admitted together
/// each on a worker's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_request_runs_on_every_core_and_concurrent_ones_on_one_each() {
    require_onnxruntime();
    let squeezenet = Squeezenet::read();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = LoadOptions {
        threads: engine::Threads::Auto { max: cores },
        ..LoadOptions::default()
    };
    let loaded = engine::load(EngineKind::Onnxruntime, &squeezenet.path, &opts).unwrap();
    let notes = loaded.notes.join("\n");
    // SqueezeNet runs for milliseconds: a session on every core is kept for lone requests.
    // (Unless every core made it 0.9 x cores faster: every worker then has all cores.)
    let all_cores = notes.contains(&format!("Intra-op threads: {cores} (a lone run"));
    assert_eq!(
        notes.contains("Lone requests: a session with"),
        cores > 1 && !all_cores,
        "{notes}"
    );
    let pool = runtime::pool::InferencePool::start(loaded.backend, 2, 16, None, None).unwrap();
    let check = |out: Vec<runtime::tensor::Tensor>| {
        let diff = squeezenet.max_diff(&out);
        assert!(diff < 1e-4, "differs from onnxruntime's Python by {diff}");
    };
    let x = || squeezenet.input();
    for _ in 0..4 {
        let _admitted = pool.admit().await.unwrap();
        check(pool.run(vec![x()]).await.unwrap().0);
    }
    let alone = pool.stats().lone_runs;
    let lone_session = cores > 1 && !all_cores;
    assert_eq!(
        alone,
        if lone_session { 4 } else { 0 },
        "{:?}",
        pool.stats()
    );
    // Eight admitted at once: none is alone, each runs on a worker's own session.
    let mut admitted = Vec::new();
    for _ in 0..8 {
        admitted.push(pool.admit().await.unwrap());
    }
    let runs: Vec<_> = (0..8).map(|_| pool.run(vec![x()])).collect();
    for out in futures_util::future::join_all(runs).await {
        check(out.unwrap().0);
    }
    let stats = pool.stats();
    assert_eq!(stats.requests, 12, "{stats:?}");
    assert_eq!(
        stats.lone_runs, alone,
        "a concurrent request ran alone: {stats:?}"
    );
}
