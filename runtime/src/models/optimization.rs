//! `optimization.json` beside `model.onnx`: what `builder optimize` chose for the host the image
//! was built on (scripts/optimize_model.py writes it): the model file's precision (`fp32`,
//! `int8`; `fp16` or `bf16` for a model that came so and was left as it is), the variant and
//! why, with the accuracy gate's figures. The runtime reports the
//! precision; it chooses its threads itself, as for any model (models/load.rs says why).

use std::path::Path;

use serde_json::Value;

use crate::engine::{ComputePrecision, EngineKind};
use crate::error::ModelError;

/// The file looked for beside `model.onnx`.
pub const OPTIMIZATION_FILE: &str = "optimization.json";

/// What `builder optimize` recorded for this model version.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimization {
    /// The precision it runs in: `fp32`, `int8` (the model file's, ONNX dtypes' terms), or
    /// `bf16` (an fp32 file that OpenVINO computes in bfloat16); a model that came int8, fp16
    /// or bf16 and was left as it is (variant `fp32`) keeps its own.
    pub precision: String,
    /// Which candidate ships: `fp32`, `fp32-optimized`, `int8`, `int8-stem`, `bf16`.
    pub variant: String,
    /// The gate's top-1 agreement with fp32 on held-out inputs, and their count.
    pub top1: Option<(f64, u64)>,
    /// Why this variant (the optimizer's own sentence).
    pub reason: String,
    /// The portable model beside a host-specific one (`model.fp32.onnx`): what the runtime
    /// loads where the host-specific graph does not load, or was made for other vector units.
    pub fallback: Option<String>,
    /// The build host's vector units that decide onnxruntime's blocked layouts, from its
    /// `host_cpu_flags` (`/proc/cpuinfo` names, [`VECTOR_FLAGS`]): `(flag, present)`. Empty in
    /// a file without them.
    pub host_vectors: Vec<(String, bool)>,
}

/// The CPU flags whose presence sets the channel block of the layouts (NCHWc) that onnxruntime
/// bakes into a graph it optimizes and saves: MLAS blocks 16 floats with AVX-512F, 8 on any
/// other x86-64 CPU. A graph saved where this differed from this CPU is not loaded (its
/// portable model is). Each as `(the /proc/cpuinfo name optimization.json records, hostcpu's
/// name)`.
pub const VECTOR_FLAGS: [(&str, &str); 1] = [("avx512f", "AVX512F")];

/// Whether this CPU can use `flag` (a `/proc/cpuinfo` name of [`VECTOR_FLAGS`]), as
/// `hostcpu::detect` finds it: CPUID, with the OS saving the registers.
fn cpu_has(flag: &str) -> bool {
    VECTOR_FLAGS
        .iter()
        .find(|(cpuinfo, _)| *cpuinfo == flag)
        .is_some_and(|(_, name)| hostcpu::detect().usable.contains(name))
}

impl Optimization {
    /// Reads the `optimization.json` beside the ONNX file `model_path`, if there is one.
    ///
    /// Errors: the file cannot be read, is not JSON, or has no `precision`.
    pub fn load(model_path: &Path) -> Result<Option<Optimization>, ModelError> {
        let file = model_path.with_file_name(OPTIMIZATION_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModelError::Io { path: file, source }),
        };
        Optimization::parse(&text)
            .map(Some)
            .map_err(|message| ModelError::Signature {
                path: file,
                message,
            })
    }

    /// Parses the file's text. Unknown fields are kept out of the way: only what the runtime
    /// uses is read.
    pub fn parse(text: &str) -> Result<Optimization, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let text_of = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let precision = text_of("precision").ok_or("no \"precision\" (fp32 or int8)")?;
        let variant = text_of("variant").unwrap_or_else(|| precision.clone());
        let gate = v.pointer(&format!("/candidates/{variant}/gate"));
        let top1 = gate.and_then(|g| Some((g.get("top1")?.as_f64()?, g.get("n")?.as_u64()?)));
        let host_vectors = VECTOR_FLAGS
            .iter()
            .filter_map(|&(f, _)| {
                let present = v.pointer(&format!("/host_cpu_flags/{f}"))?.as_bool()?;
                Some((f.to_string(), present))
            })
            .collect();
        Ok(Optimization {
            host_vectors,
            top1,
            reason: text_of("reason").unwrap_or_default(),
            fallback: text_of("fallback").filter(|f| !f.contains('/') && f.ends_with(".onnx")),
            precision,
            variant,
        })
    }

    /// For a host-specific graph (one with a portable fallback): how this CPU's vector units
    /// differ from the build host's, e.g. "avx512f: build host yes, this CPU no"; `None` when
    /// they match, when the file does not record them, or for a portable model.
    pub fn other_vectors(&self) -> Option<String> {
        self.fallback.as_ref()?;
        let differ: Vec<String> = self
            .host_vectors
            .iter()
            .filter(|(flag, there)| cpu_has(flag) != *there)
            .map(|(flag, there)| {
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                format!(
                    "{flag}: build host {}, this CPU {}",
                    yes_no(*there),
                    yes_no(!*there)
                )
            })
            .collect();
        (!differ.is_empty()).then(|| differ.join(", "))
    }

    /// The engine this variant was made and timed on: OpenVINO for `bf16`, onnxruntime for its
    /// int8 (QDQ) models and its host graph (`fp32-optimized`); `None` for the model as it was
    /// (`fp32`), which any engine may serve. `--engine auto` serves such a variant on its engine
    /// without timing the others, which on an int8 QDQ graph only costs start-up
    /// (EfficientNet-Lite0 on tract: about 1.5 s more to the first answer, and a run of 127 ms
    /// against onnxruntime's 5 ms).
    pub fn engine(&self) -> Option<EngineKind> {
        match self.variant.as_str() {
            "fp32" => None,
            "bf16" => Some(EngineKind::Openvino),
            _ => Some(EngineKind::Onnxruntime),
        }
    }

    /// The arithmetic the engine is asked for: bfloat16 for the `bf16` variant (its file is
    /// the fp32 model), the model's own otherwise.
    pub fn compute_precision(&self) -> ComputePrecision {
        if self.variant == "bf16" {
            ComputePrecision::Bf16
        } else {
            ComputePrecision::F32
        }
    }

    /// The precision this variant is served in when the engine computes its float layers in
    /// `computes`: the recorded one, except that a variant made to compute in bf16 is fp32
    /// wherever it is computed in f32 (another engine, a CPU without bf16).
    pub fn served_precision(&self, computes: ComputePrecision) -> &str {
        if self.compute_precision() == ComputePrecision::Bf16 && computes != ComputePrecision::Bf16
        {
            "fp32"
        } else {
            &self.precision
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let gate = match self.top1 {
            Some((top1, n)) => format!(
                "; accuracy gate: top-1 agreement with fp32 {:.1} % on {n} held-out inputs",
                top1 * 100.0
            ),
            None => String::new(),
        };
        if self.variant == "fp32" && self.precision != "fp32" {
            // A model that came int8 or fp16: left as it is, nothing was made here.
            return format!(
                "Model left as it came: precision {} ({})",
                self.precision, self.reason
            );
        }
        format!(
            "Model optimized for its build host: precision {}, variant {}{gate} ({})",
            self.precision, self.variant, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_choice_and_the_gate_of_the_chosen_variant() {
        let text = r#"{"precision": "int8", "variant": "int8", "threads": 2,
            "candidates": {"int8": {"gate": {"top1": 0.99, "n": 146}}},
            "reason": "int8 passed the gate"}"#;
        let o = Optimization::parse(text).unwrap();
        assert_eq!(o.precision, "int8");
        assert_eq!(o.top1, Some((0.99, 146)));
        assert!(o.describe().contains("99.0 % on 146"), "{}", o.describe());
        assert_eq!(o.engine(), Some(EngineKind::Onnxruntime));
        let as_it_was = Optimization::parse(r#"{"precision": "int8", "variant": "fp32"}"#).unwrap();
        assert_eq!(
            as_it_was.engine(),
            None,
            "a model left as it is: any engine"
        );
        assert_eq!(o.compute_precision(), ComputePrecision::F32);
        let bf16 = Optimization::parse(r#"{"precision": "bf16", "variant": "bf16"}"#).unwrap();
        assert_eq!(bf16.engine(), Some(EngineKind::Openvino));
        assert_eq!(bf16.compute_precision(), ComputePrecision::Bf16);
        assert_eq!(bf16.served_precision(ComputePrecision::Bf16), "bf16");
        assert_eq!(bf16.served_precision(ComputePrecision::F32), "fp32");
        assert_eq!(o.served_precision(ComputePrecision::F32), "int8");
        assert!(
            as_it_was
                .describe()
                .starts_with("Model left as it came: precision int8"),
            "{}",
            as_it_was.describe()
        );
        assert!(Optimization::parse("{}").unwrap_err().contains("precision"));
        // A host graph made where AVX-512F's presence was the opposite of this CPU's.
        let flip = !cpu_has("avx512f");
        let host_graph = Optimization::parse(&format!(
            r#"{{"precision": "fp32", "variant": "fp32-optimized", "fallback": "model.fp32.onnx",
                "host_cpu_flags": {{"avx2": true, "fma": true, "avx512f": {flip}, "amx_int8": true}}}}"#,
        ))
        .unwrap();
        assert_eq!(host_graph.host_vectors, [("avx512f".to_string(), flip)]);
        let why = host_graph.other_vectors().expect("the vector units differ");
        assert!(why.starts_with("avx512f: build host"), "{why}");
        let same = Optimization {
            host_vectors: VECTOR_FLAGS
                .iter()
                .map(|(f, _)| (f.to_string(), cpu_has(f)))
                .collect(),
            ..host_graph.clone()
        };
        assert_eq!(same.other_vectors(), None);
        let portable = Optimization {
            fallback: None,
            ..host_graph
        };
        assert_eq!(
            portable.other_vectors(),
            None,
            "no fallback: nothing to compare"
        );
        assert!(Optimization::parse("not json").is_err());
    }
}
