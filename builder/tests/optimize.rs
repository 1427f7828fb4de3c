//! `builder optimize` on the walk-through's real model (EfficientNet-Lite0) and real photos: the
//! accuracy gate refuses an int8 model calibrated on noise and ships fp32 with the reason, and
//! `--precision fp32` skips the search; a model of an old opset is quantized and gated too; bf16
//! (OpenVINO) is gated and keeps the fp32 file; a model without photos is calibrated on JSON
//! request files (TF Serving REST, Open Inference Protocol).
//! Needs `make test-models calibration-photos` (the model, the venv with onnxruntime, the
//! photos); `make test` runs them first.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ sits in the workspace")
        .to_owned()
}

fn model_dir() -> PathBuf {
    let models = std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models"));
    let dir = models.join("efficientnet/1");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} missing: run `make test-models`",
        dir.display()
    );
    dir
}

fn python() -> PathBuf {
    workspace().join(".cache/venv/bin/python")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("builder-optimize-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `builder optimize MODEL --out OUT ARGS` on the walk-through model.
fn optimize(out: &Path, args: &[&str]) -> Value {
    optimize_model(&model_dir(), out, args)
}

/// Runs `builder optimize MODEL --out OUT ARGS`; returns optimization.json.
fn optimize_model(model: &Path, out: &Path, args: &[&str]) -> Value {
    let run = Command::new(env!("CARGO_BIN_EXE_builder"))
        .arg("optimize")
        .arg(model)
        .arg("--out")
        .arg(out)
        .arg("--python")
        .arg(python())
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("builder runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "builder optimize failed:\n{stderr}");
    let text = std::fs::read_to_string(out.join("optimization.json")).expect("optimization.json");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn the_gate_refuses_int8_calibrated_on_noise_and_ships_fp32_with_the_reason() {
    let photos = workspace().join(".cache/calibration");
    assert!(
        photos.is_dir(),
        "{} missing: run `make calibration-photos`",
        photos.display()
    );
    // 120 images of random noise: an absurd calibration set.
    let noise = scratch("noise");
    let made = Command::new(python())
        .args([
            "-c",
            "import sys, numpy as np; from PIL import Image\n\
             r = np.random.default_rng(0)\n\
             for i in range(120): Image.fromarray(r.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(f'{sys.argv[1]}/noise-{i}.png')",
        ])
        .arg(&noise)
        .status()
        .expect("python runs");
    assert!(made.success());
    let out = scratch("out");
    let report = optimize(
        &out,
        &[
            "--calibration",
            noise.to_str().unwrap(),
            "--validation",
            photos.to_str().unwrap(),
        ],
    );
    assert_eq!(report["precision"], "fp32", "{report:#}");
    let int8 = &report["candidates"]["int8"]["gate"];
    assert_eq!(int8["passed"], false, "{report:#}");
    assert!(int8["n"].as_u64().unwrap() >= 100, "{int8}");
    // Every int8 variant (int8-stem too: the same, the first Conv in float) is refused.
    let candidates = report["candidates"].as_object().unwrap();
    for (name, c) in candidates.iter().filter(|(n, _)| n.starts_with("int8")) {
        assert_eq!(c["gate"]["passed"], false, "{name}: {report:#}");
    }
    // What ships is the model as it was, the reason naming the refused candidate; or
    // onnxruntime's own graph of it where that was faster, the original beside it. Never int8.
    let reason = report["reason"].as_str().unwrap();
    if report["variant"] == "fp32" {
        assert!(
            reason.contains("failed the gate: int8"),
            "the reason must name the refused candidate: {reason}"
        );
        assert_eq!(
            std::fs::read(out.join("model.onnx")).unwrap(),
            std::fs::read(model_dir().join("model.onnx")).unwrap()
        );
    } else {
        assert_eq!(report["variant"], "fp32-optimized", "{report:#}");
        assert!(out.join("model.fp32.onnx").is_file());
    }
    for f in ["signature.toml", "labels.txt"] {
        assert!(out.join(f).is_file(), "{f} travels with the model");
    }
    let _ = std::fs::remove_dir_all(&noise);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn precision_fp32_skips_the_search() {
    let out = scratch("fp32");
    let report = optimize(&out, &["--precision", "fp32"]);
    assert_eq!(report["precision"], "fp32");
    assert_eq!(report["reason"], "--precision fp32");
    assert!(report["candidates"].as_object().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_model_of_an_old_opset_is_quantized_and_gated_not_dropped() {
    // The SqueezeNet from onnx's test data is opset 9; per-channel int8 needs opset 13.
    let photos = workspace().join(".cache/calibration");
    assert!(photos.is_dir(), "run `make calibration-photos`");
    let models = model_dir().join("../..");
    let source = models.join("squeezenet/1/model.onnx");
    assert!(
        source.is_file(),
        "{} missing: run `make test-models`",
        source.display()
    );
    let model = scratch("squeezenet");
    std::fs::copy(&source, model.join("model.onnx")).unwrap();
    std::fs::write(
        model.join("signature.toml"),
        "[input]\nmodel_input = \"data_0\"\nkind = \"image\"\nlayout = \"NCHW\"\nsize = [224, 224]\n\
         mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n[output]\nactivation = \"none\"\n",
    )
    .unwrap();
    let out = scratch("squeezenet-out");
    let report = optimize_model(&model, &out, &["--calibration", photos.to_str().unwrap()]);
    let int8 = &report["candidates"]["int8"];
    assert_eq!(int8["quantizer"]["per_channel"], true, "{report:#}");
    assert!(int8["gate"]["n"].as_u64().unwrap() >= 100, "{report:#}");
    assert!(
        int8["gate"]["top1"].as_f64().is_some(),
        "gated on the photos: {report:#}"
    );
    // SqueezeNet's first Conv reads the 3 colour channels: a second candidate keeps it in float.
    let excluded = |c: &str| {
        report["candidates"][c]["quantizer"]["nodes_to_exclude"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(
        excluded("int8-stem"),
        excluded("int8") + 1,
        "int8-stem leaves one more node in float: {report:#}"
    );
    assert!(
        report["candidates"]["int8-stem"]["gate"]["top1"]
            .as_f64()
            .is_some(),
        "int8-stem is gated too: {report:#}"
    );
    let _ = std::fs::remove_dir_all(&model);
    let _ = std::fs::remove_dir_all(&out);
}

/// `--precision bf16` tries OpenVINO's bf16 alone: on a CPU with AMX or AVX512-BF16 it is gated
/// on the held-out photos and timed, and where it ships the model file is fp32's own (the
/// engine computes in bf16); elsewhere the candidate says why it was not tried. No int8 is made.
#[test]
fn precision_bf16_gates_openvino_and_keeps_the_fp32_file() {
    let out = scratch("bf16");
    let report = optimize(&out, &["--precision", "bf16"]);
    let candidates = report["candidates"].as_object().unwrap();
    assert!(
        !candidates.keys().any(|k| k.starts_with("int8")),
        "{report:#}"
    );
    let bf16 = &report["candidates"]["bf16"];
    let flags = &report["host_cpu_flags"];
    if flags["amx_bf16"] == true || flags["avx512_bf16"] == true {
        assert_eq!(bf16["engine"], "openvino", "{report:#}");
        assert!(
            bf16["openvino"].as_str().unwrap().starts_with("2026."),
            "{bf16}"
        );
        let top1 = bf16["gate"]["top1"].as_f64().unwrap();
        assert!(top1 > 0.9, "bf16 keeps most of fp32's classes: {bf16}");
        assert!(bf16["gate"]["n"].as_u64().unwrap() >= 100, "{bf16}");
        if report["variant"] == "bf16" {
            // --precision bf16 ships on the gate alone: the speed-up is timed, not required.
            assert_eq!(report["precision"], "bf16");
            assert!(bf16["timing"]["threads_1"]["speedup"].is_f64(), "{bf16}");
            assert_eq!(
                std::fs::read(out.join("model.onnx")).unwrap(),
                std::fs::read(model_dir().join("model.onnx")).unwrap(),
                "bf16 ships the fp32 file"
            );
        }
    } else {
        assert_eq!(report["variant"], "fp32", "{report:#}");
        let why = bf16["gate"]["reasons"][0].as_str().unwrap();
        assert!(why.contains("neither AMX nor AVX512-BF16"), "{why}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Gate flags that would be ignored or that contradict each other stop the command at once,
/// before the optimizer, Docker or a build runs, with the fix in the message.
#[test]
fn contradictory_or_ignored_gate_flags_are_refused_before_any_work() {
    let model = model_dir().join("model.onnx");
    let model = model.to_str().unwrap();
    let out = scratch("flags");
    let out_arg = out.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["serve-image", "--bf16"], "add --optimize"),
        (
            &["bench", "--model", out_arg, "--precision", "int8"],
            "add --optimize",
        ),
        (
            &[
                "optimize",
                model,
                "--out",
                out_arg,
                "--bf16",
                "--precision",
                "int8",
            ],
            "drop one of them",
        ),
        (
            &[
                "serve-image",
                "--embed-model",
                model,
                "--optimize",
                "--precision",
                "bf16",
            ],
            "add --engine openvino",
        ),
        (
            &[
                "serve-image",
                "--embed-model",
                model,
                "--optimize",
                "--bf16",
            ],
            "add --engine openvino",
        ),
    ];
    for (args, want) in cases {
        let run = Command::new(env!("CARGO_BIN_EXE_builder"))
            .args(args)
            .current_dir(workspace())
            .output()
            .expect("builder runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded:\n{stderr}");
        assert!(
            stderr.contains(want),
            "{args:?}: want {want:?} in:\n{stderr}"
        );
        assert!(
            !out.join("optimization.json").exists(),
            "{args:?} ran the optimizer"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A model without an image signature is calibrated and checked on request files as clients
/// send them: TF Serving's REST bodies (rows and columns) and the Open Inference Protocol's.
/// The `linear` fixture answers `x = [k, 0, 0, 0]` with `[0.5, 0.1k - 1, 0.2k + 2]`, so held-out
/// requests up to k = 1000 make fp32's largest output 202 and the default bound (2 % of it)
/// 4.04 (each format is checked value by value in `every_json_request_format_is_read_as_sent`).
/// Copies of calibration requests put among
/// the held-out ones are dropped (the sets never share an input). A file naming an input the
/// model lacks stops the optimizer with the file's name.
#[test]
fn request_files_in_rest_and_v2_json_calibrate_and_gate_a_model_without_photos() {
    let model = scratch("linear");
    std::fs::copy(
        workspace().join("runtime/tests/fixtures/models/linear/1/model.onnx"),
        model.join("model.onnx"),
    )
    .unwrap();
    let body = |k: usize, x: [f64; 4]| -> Value {
        let rows = serde_json::json!([x]);
        match k % 5 {
            0 => serde_json::json!({ "instances": rows }),
            1 => serde_json::json!({ "inputs": rows }),
            2 => serde_json::json!({ "inputs": { "x": rows } }),
            3 => serde_json::json!({ "instances": [{ "x": x }] }),
            _ => serde_json::json!({ "inputs": [
                { "name": "x", "shape": [1, 4], "datatype": "FP32", "data": x }
            ] }),
        }
    };
    let write = |dir: &Path, k: usize, v: &Value| {
        std::fs::write(dir.join(format!("{k:03}.json")), v.to_string()).unwrap();
    };
    let calibration = scratch("linear-calibration");
    for k in 0..40 {
        let t = k as f64 / 10.0;
        write(&calibration, k, &body(k, [t, -t, 1.0, 0.5]));
    }
    let validation = scratch("linear-validation");
    for k in 1..=100 {
        write(&validation, k, &body(k, [10.0 * k as f64, 0.0, 0.0, 0.0]));
    }
    // Ten calibration requests under other names: dropped from the held-out set by content.
    for k in 0..10 {
        std::fs::copy(
            calibration.join(format!("{k:03}.json")),
            validation.join(format!("copy-{k}.json")),
        )
        .unwrap();
    }
    let out = scratch("linear-out");
    let report = optimize_model(
        &model,
        &out,
        &[
            "--calibration",
            calibration.to_str().unwrap(),
            "--validation",
            validation.to_str().unwrap(),
        ],
    );
    assert_eq!(report["data"]["calibration_files"], 40, "{report:#}");
    assert_eq!(report["data"]["validation_files"], 100, "{report:#}");
    let gate = &report["candidates"]["fp32-optimized"]["gate"];
    assert_eq!(gate["n"], 100, "{report:#}");
    let bound = gate["max_abs_diff_bound"].as_f64().expect("a bound");
    assert!((bound - 4.04).abs() < 1e-3, "bound {bound}: {report:#}");

    let bad = validation.join("050.json");
    std::fs::write(
        &bad,
        r#"{"inputs": [{"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#,
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_builder"))
        .arg("optimize")
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .arg("--python")
        .arg(python())
        .arg("--calibration")
        .arg(&calibration)
        .arg("--validation")
        .arg(&validation)
        .current_dir(workspace())
        .output()
        .expect("builder runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "a request for input 'y' passed:\n{stderr}"
    );
    assert!(
        stderr.contains("050.json") && stderr.contains("'y' is not an input of the model"),
        "not a clear error:\n{stderr}"
    );
    for dir in [model, calibration, validation, out] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A model that comes int8 (quantization ops) or fp16 (half-precision weights) is left as it is:
/// the same bytes ship, with its own precision in optimization.json and the reason, and no
/// input file is read.
#[test]
fn a_model_already_int8_or_fp16_is_left_as_it_is_with_its_precision() {
    let maker = r#"
import sys
import onnx
from onnx import TensorProto, helper

def save(nodes, inputs, outputs, inits, path):
    graph = helper.make_graph(nodes, "reduced", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)

v = helper.make_tensor_value_info
save([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
      helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
     [v("x", TensorProto.FLOAT, ["batch", 4])], [v("y", TensorProto.FLOAT, ["batch", 4])],
     [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
      helper.make_tensor("z", TensorProto.UINT8, [], [128])], sys.argv[1])
save([helper.make_node("Add", ["x", "c"], ["y"])],
     [v("x", TensorProto.FLOAT16, ["batch", 4])], [v("y", TensorProto.FLOAT16, ["batch", 4])],
     [helper.make_tensor("c", TensorProto.FLOAT16, [4], [1.0, 2.0, 3.0, 4.0])], sys.argv[2])
"#;
    let int8 = scratch("as-is-int8");
    let fp16 = scratch("as-is-fp16");
    let made = Command::new(python())
        .arg("-c")
        .arg(maker)
        .arg(int8.join("model.onnx"))
        .arg(fp16.join("model.onnx"))
        .output()
        .expect("python runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let no_inputs = scratch("as-is-inputs");
    for (model, want) in [(&int8, "int8"), (&fp16, "fp16")] {
        let out = scratch(&format!("as-is-{want}-out"));
        let report = optimize_model(model, &out, &["--calibration", no_inputs.to_str().unwrap()]);
        assert_eq!(report["precision"], want, "{report:#}");
        assert_eq!(report["variant"], "fp32", "{report:#}");
        assert!(
            report["reason"]
                .as_str()
                .is_some_and(|r| r.contains("already quantized or reduced")),
            "{report:#}"
        );
        assert_eq!(
            std::fs::read(model.join("model.onnx")).unwrap(),
            std::fs::read(out.join("model.onnx")).unwrap(),
            "{want}: the model changed"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    for dir in [int8, fp16, no_inputs] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Every JSON request format the optimizer reads gives the arrays a server would feed: the
/// same two rows from TF Serving's rows, named rows, columns and named columns, and from an
/// Open Inference Protocol body (flat and nested data), for a model of two inputs; and a body
/// that breaks a rule stops it (exit code 2).
#[test]
fn every_json_request_format_is_read_as_sent() {
    let check = r#"
import json, os, sys, tempfile
import numpy as np
sys.path.insert(0, sys.argv[1])
import optimize_model as om

inputs = {"x": np.float32, "ids": np.int64}
x, ids = [[1.5, 2, 3, 4], [5, 6, 7, 8.25]], [[1], [2]]
bodies = [
    {"instances": [{"x": x[0], "ids": ids[0]}, {"x": x[1], "ids": ids[1]}]},
    {"inputs": {"x": x, "ids": ids}},
    {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": sum(x, [])},
                {"name": "ids", "shape": [2, 1], "datatype": "INT64", "data": ids}]},
]
folder = tempfile.mkdtemp()
path = os.path.join(folder, "r.json")
for body in bodies:
    json.dump(body, open(path, "w"))
    got = om.json_request(path, inputs)
    assert list(got) == ["x", "ids"], got
    assert got["x"].dtype == np.float32 and got["x"].tolist() == x, (body, got)
    assert got["ids"].dtype == np.int64 and got["ids"].tolist() == ids, (body, got)
for body in [{"instances": x}, {"inputs": x}]:
    json.dump(body, open(path, "w"))
    assert om.json_request(path, {"x": np.float32})["x"].tolist() == x, body
for body, ins in [
    ({"instances": x}, inputs),
    ({"inputs": [{"name": "x", "datatype": "FP32", "data": sum(x, [])}]}, {"x": np.float32}),
    ({"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": sum(x, [])}]}, {"x": np.float32}),
    ({"instances": [[1.5]]}, {"ids": np.int64}),
    ({"instances": [{"b64": "AAAA"}]}, {"x": np.float32}),
    ({"predict": x}, {"x": np.float32}),
]:
    json.dump(body, open(path, "w"))
    try:
        om.json_request(path, ins)
        raise AssertionError(f"accepted {body}")
    except SystemExit as e:
        assert e.code == 2, body
print("OK")
"#;
    let run = Command::new(python())
        .arg("-c")
        .arg(check)
        .arg(workspace().join("scripts"))
        .output()
        .expect("python runs");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && out.trim_end().ends_with("OK"),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
