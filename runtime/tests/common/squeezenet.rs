//! SqueezeNet, the real CNN of the engine tests: its file and onnxruntime's Python run of it
//! (`reference.json`, written by `make test-models`).

use std::path::PathBuf;

use runtime::models::find_latest_version;
use serde_json::Value;

use super::flat;

/// `ONNX_SERVING_TEST_MODELS`, or the workspace's `.cache/models`.
pub fn test_models() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models"))
}

/// SqueezeNet's model file, and onnxruntime's Python run of it (reference.json).
pub struct Squeezenet {
    pub path: PathBuf,
    shape: Vec<usize>,
    input: Vec<f32>,
    want: Vec<f64>,
}

impl Squeezenet {
    pub fn read() -> Squeezenet {
        let dir = test_models().join("squeezenet");
        let text = std::fs::read_to_string(dir.join("reference.json"))
            .expect("reference.json: the CNN test models are made by `make test-models`");
        let reference: Value = serde_json::from_str(&text).unwrap();
        Squeezenet {
            path: find_latest_version(&dir).unwrap().path,
            shape: serde_json::from_value(reference["input_shape"].clone()).unwrap(),
            input: flat(&reference["input"])
                .iter()
                .map(|&v| v as f32)
                .collect(),
            want: flat(&reference["output"]),
        }
    }

    pub fn input(&self) -> runtime::tensor::Tensor {
        runtime::tensor::Tensor::from_vec(self.shape.clone(), self.input.clone()).unwrap()
    }

    /// The largest difference of the first output from the reference's.
    pub fn max_diff(&self, out: &[runtime::tensor::Tensor]) -> f64 {
        let got = out[0].as_slice::<f32>().unwrap();
        assert_eq!(got.len(), self.want.len());
        got.iter()
            .zip(&self.want)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max)
    }
}

impl Squeezenet {
    /// The class onnxruntime's Python run gives the input (its largest output).
    pub fn want_top1(&self) -> usize {
        argmax(self.want.iter().copied())
    }
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: impl IntoIterator<Item = f64>) -> usize {
    values
        .into_iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (k, v)| {
            if v > best.1 {
                (k, v)
            } else {
                best
            }
        })
        .0
}
