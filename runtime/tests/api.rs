//! The REST API in-process (`app()` + oneshot) against real ONNX fixtures, run by the engine
//! `ONNX_SERVING_TEST_ENGINE` names (tract by default; `make test` runs these once per engine).

mod common;

use axum::http::StatusCode;
use common::*;
use futures_util::future::join_all;
use runtime::{AppState, Limits, Servable};
use serde_json::{json, Value};

#[tokio::test]
async fn model_status_is_tf_serving_json() {
    let app = app_for("linear");
    let (status, body) = get(&app, "/v1/models/linear").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}, "engine": engine_name()}]})
    );
    let (status, body) = get(&app, "/v1/models/linear/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version_status"][0]["state"], "AVAILABLE");
}

#[tokio::test]
async fn metadata_describes_the_signature() {
    let app = app_for("int64_ids");
    let (status, body) = get(&app, "/v1/models/int64_ids/metadata").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["model_spec"],
        json!({"name": "int64_ids", "signature_name": "", "version": "1"})
    );
    let sig = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    assert_eq!(
        sig["inputs"]["ids"],
        json!({"dtype": "DT_INT64", "name": "ids", "tensor_shape": {"dim": [{"size": "-1", "name": "batch"}, {"size": "5", "name": ""}], "unknown_rank": false}})
    );
    assert_eq!(sig["outputs"]["next_ids"]["dtype"], "DT_INT64");
    assert_eq!(sig["outputs"]["total"]["dtype"], "DT_FLOAT");
    assert_eq!(
        sig["outputs"]["total"]["tensor_shape"]["dim"][0]["size"],
        "-1"
    );
    let (status, body) = get(&app, "/v1/models/int64_ids/versions/1/metadata").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn row_format_single_input_single_output_gives_bare_values() {
    let app = app_for("linear");
    let want = expected("linear");
    let body = json!({"instances": want["inputs"]["x"]}).to_string();
    let (status, got) = post(&app, "/v1/models/linear:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got.as_object().unwrap().len(), 1);
    let predictions = got["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2, "dynamic batch of 2 → 2 predictions");
    assert!(predictions[0].is_array(), "one output → bare values: {got}");
    assert_close(&got["predictions"], &want["outputs"]["y"], 1e-6);
    // The same through the version URL, with the default signature named explicitly.
    let body =
        json!({"signature_name": "serving_default", "instances": want["inputs"]["x"]}).to_string();
    let (status, again) = post(&app, "/v1/models/linear/versions/1:predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, got);
}

#[tokio::test]
async fn dynamic_batch_sizes_one_to_many() {
    let app = app_for("linear");
    for batch in [1usize, 3, 17] {
        let instances: Vec<Value> = (0..batch).map(|i| json!([i, 0, 0, 1])).collect();
        let (status, got) = post(
            &app,
            "/v1/models/linear:predict",
            &json!({"instances": instances}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let rows = got["predictions"].as_array().unwrap();
        assert_eq!(rows.len(), batch);
        // y = x @ W + b with W = arange(12)/10 reshaped 4x3, b = [0.5, -1, 2]: row i = i*W[0] + W[3] + b.
        let last = batch - 1;
        let want = [
            last as f64 * 0.0 + 0.9 + 0.5,
            last as f64 * 0.1 + 1.0 - 1.0,
            last as f64 * 0.2 + 1.1 + 2.0,
        ];
        assert_close(&rows[last], &json!(want), 1e-5);
    }
}

#[tokio::test]
async fn columnar_format() {
    let app = app_for("linear");
    let want = expected("linear");
    let (status, got) = post(
        &app,
        "/v1/models/linear:predict",
        &json!({"inputs": want["inputs"]["x"]}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_close(&got["outputs"], &want["outputs"]["y"], 1e-6);
    let (status, got) = post(
        &app,
        "/v1/models/linear:predict",
        &json!({"inputs": {"x": want["inputs"]["x"]}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_close(&got["outputs"], &want["outputs"]["y"], 1e-6);
}

#[tokio::test]
async fn several_named_inputs_and_outputs() {
    let app = app_for("multi_io");
    let want = expected("multi_io");
    let (a, b) = (&want["inputs"]["a"], &want["inputs"]["b"]);
    let instances: Vec<Value> = (0..2).map(|i| json!({"a": a[i], "b": b[i]})).collect();
    let (status, got) = post(
        &app,
        "/v1/models/multi_io:predict",
        &json!({"instances": instances}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    for i in 0..2 {
        let row = &got["predictions"][i];
        assert_eq!(
            row.as_object().unwrap().len(),
            2,
            "several outputs → object per row: {row}"
        );
        assert_close(&row["sum"], &want["outputs"]["sum"][i], 1e-6);
        assert_close(&row["product"], &want["outputs"]["product"][i], 1e-6);
    }
    let (status, got) = post(
        &app,
        "/v1/models/multi_io:predict",
        &json!({"inputs": {"a": a, "b": b}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_close(&got["outputs"]["sum"], &want["outputs"]["sum"], 1e-6);
    assert_close(
        &got["outputs"]["product"],
        &want["outputs"]["product"],
        1e-6,
    );
}

#[tokio::test]
async fn int64_values_keep_full_precision() {
    let app = app_for("int64_ids");
    let want = expected("int64_ids");
    let (status, got) = post(
        &app,
        "/v1/models/int64_ids:predict",
        &json!({"instances": want["inputs"]["ids"]}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    // Compared as integers: 9007199254740001 is not representable in an f64.
    for i in 0..2 {
        assert_eq!(
            got["predictions"][i]["next_ids"],
            want["outputs"]["next_ids"][i]
        );
    }
    assert_eq!(
        got["predictions"][1]["next_ids"][4].as_i64(),
        Some(9_007_199_254_740_001)
    );
    assert_close(
        &got["predictions"][0]["total"],
        &want["outputs"]["total"][0],
        1e-6,
    );
}

#[tokio::test]
async fn every_supported_dtype_round_trips() {
    let app = app_for("dtypes");
    let want = expected("dtypes");
    let (status, got) = post(
        &app,
        "/v1/models/dtypes:predict",
        &json!({"inputs": want["inputs"]}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let out = &got["outputs"];
    assert_eq!(out["i32_out"], want["outputs"]["i32_out"]);
    assert_eq!(out["bool_out"], want["outputs"]["bool_out"]);
    assert_eq!(out["u8_as_float"], json!([[0.0, 255.0]]));
    assert_close(&out["f64_out"], &want["outputs"]["f64_out"], 1e-12);
}

/// The fixed_batch fixture's expected input gets its expected output.
async fn answers_fixed_batch_as_expected(app: &axum::Router) {
    let want = expected("fixed_batch");
    let (status, got) = post(
        app,
        "/v1/models/fixed_batch:predict",
        &json!({"instances": want["inputs"]["x"]}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_close(&got["predictions"], &want["outputs"]["y"], 1e-6);
}

#[tokio::test]
async fn fixed_shape_model() {
    let app = app_for("fixed_batch");
    answers_fixed_batch_as_expected(&app).await;
    let (status, body) = post(
        &app,
        "/v1/models/fixed_batch:predict",
        r#"{"instances": [[1, 2], [3, 4]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["'x'", "fixed batch size of 1", "2 instances"],
    );
}

/// (request body, words the error must contain): all must be 400 with `{"error"}`.
const BAD_LINEAR_REQUESTS: &[(&str, &[&str])] = &[
    (r#"{"instances": [[1, 2, 3, 4]"#, &["malformed JSON"]),
    ("", &["malformed JSON"]),
    ("[1, 2]", &["malformed JSON"]),
    (
        r#"{"signature_name": "serving_default"}"#,
        &["'instances'", "'inputs'"],
    ),
    (
        r#"{"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}"#,
        &["not both"],
    ),
    (r#"{"instances": []}"#, &["empty"]),
    (r#"{"instances": [[[1, 2], [3]]]}"#, &["ragged"]),
    (
        r#"{"instances": [[1, 2, 3, 4], [1, 2, 3]]}"#,
        &["ragged instances", "'x'", "instances[1]", "[3]", "[4]"],
    ),
    (
        r#"{"instances": [[1, 2, 3]]}"#,
        &["'x'", "[-1, 4]", "[1, 3]"],
    ),
    (
        r#"{"instances": [[[1, 2, 3, 4]]]}"#,
        &["'x'", "[-1, 4]", "[1, 1, 4]"],
    ),
    (r#"{"inputs": [1, 2, 3, 4]}"#, &["'x'", "[-1, 4]", "[4]"]),
    (
        r#"{"instances": [[1, 2, true, 4]]}"#,
        &["'x'", "float32", "numbers", "true"],
    ),
    (r#"{"instances": [[1, 2, "3", 4]]}"#, &["strings", "b64"]),
    (r#"{"instances": [[1, 2, null, 4]]}"#, &["null"]),
    (r#"{"instances": [{"b64": "AAAA"}]}"#, &["'x'", "b64"]),
    (
        r#"{"instances": [{"y": [1, 2, 3, 4]}]}"#,
        &["'x'", "missing"],
    ),
    (
        r#"{"instances": [{"x": [1, 2, 3, 4], "z": [1]}]}"#,
        &["unknown input 'z'"],
    ),
    (
        r#"{"inputs": {"x": [[1, 2, 3, 4]], "z": 1}}"#,
        &["unknown input 'z'"],
    ),
    (
        r#"{"signature_name": "classify_it", "instances": [[1, 2, 3, 4]]}"#,
        &["signature_name", "serving_default"],
    ),
];

#[tokio::test]
async fn bad_requests_are_400_with_a_reason() {
    let app = app_for("linear");
    for (body, needles) in BAD_LINEAR_REQUESTS {
        let (status, got) = post(&app, "/v1/models/linear:predict", body).await;
        assert_error(status, &got, StatusCode::BAD_REQUEST, needles);
    }
}

#[tokio::test]
async fn wrong_dtypes_and_ranges_are_400() {
    let app = app_for("int64_ids");
    let (status, body) = post(
        &app,
        "/v1/models/int64_ids:predict",
        r#"{"instances": [[1, 2, 3.5, 4, 5]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["'ids'", "int64", "3.5"],
    );
    let (status, body) = post(
        &app,
        "/v1/models/int64_ids:predict",
        r#"{"instances": [[1, 2, 3, 4, 18446744073709551615]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["'ids'", "range of int64"],
    );
    // 3.0 is an integer written as a float: accepted.
    let (status, body) = post(
        &app,
        "/v1/models/int64_ids:predict",
        r#"{"instances": [[1, 2, 3.0, 4, 5]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let app = app_for("dtypes");
    let ok = json!({"f64_in": [[1, 2]], "i32_in": [[1, 2]], "bool_in": [[true, false]], "u8_in": [[1, 2]]});
    for (input, value, needles) in [
        ("u8_in", json!([[1, 256]]), &["'u8_in'", "uint8", "256"][..]),
        ("u8_in", json!([[1, -1]]), &["'u8_in'", "uint8", "-1"][..]),
        (
            "i32_in",
            json!([[1, 3000000000u64]]),
            &["'i32_in'", "int32"][..],
        ),
        (
            "bool_in",
            json!([[1, 0]]),
            &["'bool_in'", "true or false"][..],
        ),
    ] {
        let mut inputs = ok.clone();
        inputs[input] = value;
        let (status, body) = post(
            &app,
            "/v1/models/dtypes:predict",
            &json!({"inputs": inputs}).to_string(),
        )
        .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, needles);
    }
    let (status, body) = post(
        &app,
        "/v1/models/dtypes:predict",
        r#"{"instances": [[1, 2]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["4 inputs", "'f64_in'", "object keyed by input name"],
    );
}

#[tokio::test]
async fn unknown_models_versions_routes_and_methods() {
    let app = app_for("linear");
    let body = r#"{"instances": [[1, 2, 3, 4]]}"#;
    let (s, b) = get(&app, "/v1/models/resnet").await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        &["resnet", "this server serves model 'linear'"],
    );
    let (s, b) = post(&app, "/v1/models/resnet:predict", body).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &["Latest(resnet)"]);
    let (s, b) = get(&app, "/v1/models/linear/versions/2").await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        &["Specific(linear, 2)", "version available is 1"],
    );
    let (s, b) = post(&app, "/v1/models/linear/versions/7:predict", body).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &["Specific(linear, 7)"]);
    let (s, b) = get(&app, "/v1/models/linear/versions/latest").await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        &["'latest'", "not a number"],
    );
    let (s, b) = get(&app, "/v1/models/linear/versions/9/metadata").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &["Specific(linear, 9)"]);
    let (s, b) = post(&app, "/v1/models/linear:classify", body).await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_IMPLEMENTED,
        &[":classify", ":predict"],
    );
    let (s, b) = post(&app, "/v1/models/linear:regress", body).await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_IMPLEMENTED,
        &[":regress", ":predict"],
    );
    let (s, b) = post(&app, "/v1/models/linear:explain", body).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &[":explain"]);
    let (s, b) = get(&app, "/v1/models/linear:predict").await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, &["POST"]);
    let (s, b) = post(&app, "/v1/models/linear", body).await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, &[":predict"]);
    let (s, b) = send(&app, "DELETE", "/v1/models/linear/metadata", "").await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, &["DELETE"]);
    let (s, b) = get(&app, "/v2/models").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &["/v2/models", "/v1/models"]);
}

#[tokio::test]
async fn an_unknown_version_label_is_400_as_in_tf_serving() {
    let app = app_for("linear");
    let body = r#"{"instances": [[1, 2, 3, 4]]}"#;
    let (s, b) = get(&app, "/v1/models/linear/labels/stable").await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        &["Unrecognized servable version label: stable"],
    );
    let (s, b) = get(&app, "/v1/models/linear/labels/canary/metadata").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, &["label: canary"]);
    let (s, b) = post(&app, "/v1/models/linear/labels/stable:predict", body).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, &["label: stable"]);
    // An unknown model is still 404 before its labels are looked at.
    let (s, b) = post(&app, "/v1/models/other/labels/stable:predict", body).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, &["Labeled(other, stable)"]);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = app_with(
        "linear",
        1,
        8,
        Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        },
    );
    let big = json!({"instances": vec![[1.0, 2.0, 3.0, 4.0]; 200]}).to_string();
    assert!(big.len() > 1024);
    let (status, body) = post(&app, "/v1/models/linear:predict", &big).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["1024 bytes", "--max_body_bytes"],
    );
    let (status, body) = post(
        &app,
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn large_bodies_decode_off_the_executor_and_agree() {
    // Above the inline-decoding threshold: same answer as a small body.
    let app = app_for("linear");
    let rows = 20_000;
    let instances: Vec<Value> = (0..rows).map(|i| json!([i % 7, 1, 2.5, -1])).collect();
    let body = json!({"instances": instances}).to_string();
    assert!(body.len() > 64 * 1024);
    let (status, got) = post(&app, "/v1/models/linear:predict", &body).await;
    assert_eq!(status, StatusCode::OK);
    let predictions = got["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), rows);
    let (_, small) = post(
        &app,
        "/v1/models/linear:predict",
        r#"{"instances": [[6, 1, 2.5, -1]]}"#,
    )
    .await;
    assert_eq!(predictions[6], small["predictions"][0]);
}

#[tokio::test]
async fn a_full_queue_answers_429() {
    // One worker on the `slow` model and room for one waiting job: of 32 simultaneous requests
    // (each waits up to 250 ms for room), some must be turned away, and all others must succeed.
    let app = app_with("slow", 1, 1, Limits::default());
    let want = expected("slow");
    let body = json!({"instances": want["inputs"]["x"]}).to_string();
    let requests = (0..32).map(|_| post(&app, "/v1/models/slow:predict", &body));
    let results = join_all(requests).await;
    let mut rejected = 0;
    for (status, got) in &results {
        if *status == StatusCode::TOO_MANY_REQUESTS {
            assert_error(
                *status,
                got,
                StatusCode::TOO_MANY_REQUESTS,
                &["queue is full", "--queue_capacity"],
            );
            rejected += 1;
        } else {
            assert_eq!(*status, StatusCode::OK, "{got}");
            assert_close(&got["predictions"], &want["outputs"]["y"], 1e-6);
        }
    }
    assert!(rejected >= 1, "no request was rejected: {results:?}");
    assert!(rejected <= 31, "every request was rejected");
}

#[tokio::test]
async fn not_ready_is_503_and_status_says_loading_or_failed() {
    let state = AppState::serving("linear", 3, Servable::Loading, Limits::default());
    let app = runtime::app(state.clone());
    let (status, body) = get(&app, "/v1/models/linear").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version_status"][0]["state"], "LOADING");
    assert_eq!(body["model_version_status"][0]["version"], "3");
    let (status, body) = post(
        &app,
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        &["still loading"],
    );
    let (status, body) = get(&app, "/v1/models/linear/metadata").await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        &["still loading"],
    );

    state.set_version(
        "linear",
        3,
        Servable::End {
            error: Some("tract could not parse".into()),
        },
    );
    let (status, body) = get(&app, "/v1/models/linear").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version_status"][0]["state"], "END");
    assert_eq!(
        body["model_version_status"][0]["status"]["error_message"],
        "tract could not parse"
    );
    let (status, body) = post(
        &app,
        "/v1/models/linear:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        &["failed to load", "tract could not parse"],
    );
}

#[tokio::test]
async fn concurrent_requests_all_get_their_own_answer() {
    let app = app_with("linear", 2, 64, Limits::default());
    let requests = (0..32).map(|i| {
        let app = app.clone();
        async move {
            let body = json!({"instances": [[i, 0, 0, 0]]}).to_string();
            (i, post(&app, "/v1/models/linear:predict", &body).await)
        }
    });
    for (i, (status, got)) in join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{got}");
        // row = i * W[0] + b = [0.5, i*0.1 - 1, i*0.2 + 2]
        assert_close(
            &got["predictions"][0],
            &json!([0.5, i as f64 * 0.1 - 1.0, i as f64 * 0.2 + 2.0]),
            1e-5,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batching_merges_concurrent_requests_and_answers_each_its_own() {
    use runtime::models::{load_and_warm_up, PoolOptions};
    use runtime::pool::Batching;
    use std::sync::Arc;
    use std::time::Duration;

    // One worker that waits up to 300 ms for a batch of 4 to fill: concurrent requests must
    // share runs. Requests of 1 and 2 instances, each with its own values.
    let found = runtime::models::find_latest_version(&models().join("linear")).unwrap();
    let pool = PoolOptions {
        batching: Some(Batching::new(4, Duration::from_millis(300), &[]).unwrap()),
        ..pool_options(1, 64)
    };
    let mut model = load_and_warm_up(&found, &pool).expect("model loads");
    model.name = "linear".into();
    linear_requests_merge_and_answer_each_its_own(Arc::new(model)).await;
}

#[tokio::test]
async fn batching_is_a_no_op_for_a_fixed_batch_model() {
    use runtime::models::PoolOptions;
    use runtime::pool::Batching;
    use std::time::Duration;

    let pool = PoolOptions {
        batching: Some(Batching::new(4, Duration::from_millis(10), &[]).unwrap()),
        ..pool_options(1, 64)
    };
    let app = app_pooled(
        &models().join("fixed_batch"),
        "fixed_batch",
        &pool,
        Limits::default(),
    );
    answers_fixed_batch_as_expected(&app).await;
}

#[tokio::test]
async fn non_finite_numbers_as_tf_serving_reads_and_writes_them() {
    let app = app_for("linear");
    let uri = "/v1/models/linear:predict";
    // linear: y = x @ W + b with W's first row [0, 0.1, 0.2]: inf * 0 is NaN.
    for (x, want) in [
        ("NaN", "[[NaN,NaN,NaN]]"),
        ("Infinity", "[[NaN,Infinity,Infinity]]"),
        ("-Infinity", "[[NaN,-Infinity,-Infinity]]"),
    ] {
        let body = format!(r#"{{"instances": [[{x}, 0, 0, 0]]}}"#);
        let (status, text) = post_raw(&app, uri, &body).await;
        assert_eq!(status, StatusCode::OK, "{x}: {text}");
        assert_eq!(text, format!(r#"{{"predictions":{want}}}"#), "{x}");
    }
    let (status, text) = post_raw(&app, uri, r#"{"inputs": [[NaN, 1, 2, 3]]}"#).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with(r#"{"outputs":[[NaN,"#), "{text}");
    // Other spellings are not JSON, and a string is not a number.
    for x in [
        "nan",
        "Nan",
        "inf",
        "-inf",
        "infinity",
        "\"NaN\"",
        "+Infinity",
    ] {
        let body = format!(r#"{{"instances": [[{x}, 0, 0, 0]]}}"#);
        let (status, text) = post_raw(&app, uri, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{x}: {text}");
    }
    // A finite literal beyond float32 is refused, not sent as infinity.
    let (status, body) = post(&app, uri, r#"{"instances": [[1e39, 0, 0, 0]]}"#).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["1e39", "range of float32"],
    );
    // float64 takes it; integers take no NaN.
    let dtypes = app_for("dtypes");
    let body = r#"{"instances": [{"f64_in": [1e39, NaN], "i32_in": [1, 2], "bool_in": [true, false], "u8_in": [0, 1]}]}"#;
    let (status, text) = post_raw(&dtypes, "/v1/models/dtypes:predict", body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("[2e+39,NaN]"), "{text}");
    let body = r#"{"instances": [{"f64_in": [1, 2], "i32_in": [NaN, 2], "bool_in": [true, false], "u8_in": [0, 1]}]}"#;
    let (status, got) = post(&dtypes, "/v1/models/dtypes:predict", body).await;
    assert_error(status, &got, StatusCode::BAD_REQUEST, &["i32_in", "NaN"]);
}

#[tokio::test]
async fn an_optimized_model_reports_its_precision_in_status_and_metadata() {
    // What `builder optimize` leaves beside model.onnx (scripts/optimize_model.py's format).
    let base = linear_with_optimization(
        "optimized",
        r#"{"precision": "int8", "variant": "int8",
            "candidates": {"int8": {"gate": {"top1": 0.99, "n": 120}}},
            "reason": "int8 passed the gate and beats fp32 by more than 1.05x"}"#,
    );
    let dir = base.join("linear");
    let pool = runtime::models::PoolOptions {
        threads: runtime::engine::Threads::Auto { max: 2 },
        ..pool_options(1, 8)
    };
    let app = app_pooled(&dir, "linear", &pool, Limits::default());
    let (status, body) = get(&app, "/v1/models/linear").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["model_version_status"][0]["precision"], "int8",
        "{body}"
    );
    let (status, body) = get(&app, "/v1/models/linear/metadata").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["precision"], "int8", "{body}");
    // A model without the file reports no precision (nothing was measured).
    let (_, body) = get(&app_for("linear"), "/v1/models/linear").await;
    assert!(
        body["model_version_status"][0].get("precision").is_none(),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// A host-specific graph that loads, made where AVX-512F (which sets the block of onnxruntime's
/// NCHWc layouts) was the opposite of this CPU's, is not served: the portable model beside it
/// is, without trying the other. Where they match, the host graph serves, and where the
/// portable model is missing it is tried anyway. (Here the "host graph" is `linear_v2`, which
/// answers 100 more than `linear`, the portable model.)
#[tokio::test]
async fn a_host_graph_made_for_other_vector_units_gives_way_to_the_portable_model() {
    // As the runtime detects it: CPUID with the OS's register support (hostcpu).
    let here = hostcpu::detect().usable.contains("AVX512F");
    let host_graph = std::fs::read(models().join("linear_v2/1/model.onnx")).unwrap();
    for (avx512f, portable, want) in [
        (!here, true, 6.5),
        (here, true, 106.5),
        (!here, false, 106.5),
    ] {
        let record = json!({
            "precision": "fp32", "variant": "fp32-optimized", "fallback": "model.fp32.onnx",
            "host_cpu_flags": {"avx2": true, "fma": true, "avx512f": avx512f},
        });
        let got = predict_beside_a_portable_model(
            &format!("vectors-{avx512f}-{portable}"),
            &host_graph,
            portable,
            &record,
        )
        .await;
        assert_eq!(
            got[0][0],
            json!(want),
            "avx512f {avx512f}, portable model {portable}: {got}"
        );
    }
}

/// Serves a version folder holding `host_graph` as model.onnx, the `linear` fixture as
/// model.fp32.onnx when `portable`, and `record` as optimization.json; returns the predictions
/// for `[[1, 2, 3, 4]]` (`linear` answers `[6.5, 6, 10]`, `linear_v2` 100 more).
async fn predict_beside_a_portable_model(
    tag: &str,
    host_graph: &[u8],
    portable: bool,
    record: &Value,
) -> Value {
    let dir = std::env::temp_dir().join(format!("onnx-serving-{tag}-{}", std::process::id()));
    let version = dir.join("1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("model.onnx"), host_graph).unwrap();
    if portable {
        std::fs::copy(
            models().join("linear/1/model.onnx"),
            version.join("model.fp32.onnx"),
        )
        .unwrap();
    }
    std::fs::write(version.join("optimization.json"), record.to_string()).unwrap();
    let app = app_pooled(&dir, "linear", &pool_options(1, 8), Limits::default());
    let (status, body) = post(
        &app,
        "/v1/models/linear:predict",
        r#"{"instances": [[1.0, 2.0, 3.0, 4.0]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
    body["predictions"].clone()
}

#[tokio::test]
async fn a_host_specific_model_that_does_not_load_falls_back_to_the_portable_one() {
    // builder optimize ships onnxruntime's host-specific graph with the portable model beside
    // it; where the former does not load (here: not ONNX at all), the latter serves.
    let record =
        json!({"precision": "fp32", "variant": "fp32-optimized", "fallback": "model.fp32.onnx"});
    let got =
        predict_beside_a_portable_model("fallback", b"a graph for another CPU", true, &record)
            .await;
    assert_close(&got, &json!([[6.5, 6.0, 10.0]]), 1e-4);
}
