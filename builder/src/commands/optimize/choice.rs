//! What `builder optimize` chose: `optimization.json` read back, as the serving image's labels
//! and the table `optimize` prints.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::commands::LABEL_PREFIX;

/// What `optimize` chose, from the `optimization.json` it wrote.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The whole `optimization.json`.
    pub report: Value,
}

impl Choice {
    /// Reads `optimization.json` in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Choice>> {
        let file = dir.join("optimization.json");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        Ok(Some(Choice { report }))
    }

    fn text(&self, pointer: &str) -> String {
        match self.report.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }

    /// Whether the variant that ships runs on OpenVINO (bf16): the image must carry it.
    pub fn needs_openvino(&self) -> bool {
        let variant = self.text("/variant");
        self.text(&format!("/candidates/{variant}/engine")) == "openvino"
    }

    /// `Precision int8 (variant int8): <the optimizer's reason>`; the reason gives the speed-up
    /// at each thread count timed (the runtime picks its own threads by the load).
    pub fn summary(&self) -> String {
        format!(
            "Precision {} (variant {}): {}",
            self.text("/precision"),
            self.text("/variant"),
            self.text("/reason")
        )
    }

    /// Every candidate's gate figures (top-1 agreement and top-5 overlap with fp32 on the
    /// held-out inputs, the largest probability difference) and timings (engine alone, batch 1,
    /// ms per run and speed-up over fp32 at the same threads), one line each, the chosen one
    /// marked, then why each failure failed.
    pub fn candidates_table(&self) -> String {
        let Some(Value::Object(candidates)) = self.report.pointer("/candidates") else {
            return String::new();
        };
        let chosen = self.text("/variant");
        let num = |v: Option<&Value>, digits: usize| {
            v.and_then(Value::as_f64)
                .map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
        };
        let mut threads: Vec<String> = candidates
            .values()
            .filter_map(|c| c.get("timing")?.as_object())
            .flat_map(|t| t.keys().filter(|k| k.starts_with("threads_")).cloned())
            .collect();
        threads.sort();
        threads.dedup();
        let mut out = format!(
            "{:<16} {:>5} {:>6} {:>6} {:>8}",
            "candidate", "gate", "top-1", "top-5", "max|dp|"
        );
        for t in &threads {
            out += &format!(" {:>17}", t.replace("threads_", "ms, threads "));
        }
        out.push('\n');
        let mut reasons = String::new();
        for (name, c) in candidates {
            let gate = c.get("gate");
            let verdict = match gate.and_then(|g| g.get("passed")).and_then(Value::as_bool) {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            };
            out += &format!(
                "{:<16} {:>5} {:>6} {:>6} {:>8}",
                if *name == chosen {
                    format!("{name} *")
                } else {
                    name.clone()
                },
                verdict,
                num(gate.and_then(|g| g.get("top1")), 3),
                num(gate.and_then(|g| g.get("top5")), 3),
                num(gate.and_then(|g| g.get("max_abs_diff")), 3)
            );
            for t in &threads {
                let timing = c.get("timing").and_then(|x| x.get(t));
                let cell = match timing {
                    Some(f) => format!("{} x{}", num(f.get("ms"), 2), num(f.get("speedup"), 2)),
                    None => "-".into(),
                };
                out += &format!(" {cell:>17}");
            }
            out.push('\n');
            if let Some(Value::Array(why)) = gate.and_then(|g| g.get("reasons")) {
                if !why.is_empty() {
                    let why: Vec<&str> = why.iter().filter_map(Value::as_str).collect();
                    reasons += &format!("  {name}: {}\n", why.join("; "));
                }
            }
        }
        if !reasons.is_empty() {
            out += &format!("refused by the gate:\n{reasons}");
        }
        out + "(* ships; times: engine alone, batch 1, x = speed-up over fp32 at the same threads)\n"
    }

    /// The host's CPU flags the optimizer looked at and found (`avx2 fma avx512_vnni`), as
    /// /proc/cpuinfo names them: what an int8 model's rounding, and so its gate, depended on.
    fn host_cpu_flags(&self) -> String {
        let Some(Value::Object(flags)) = self.report.pointer("/host_cpu_flags") else {
            return String::new();
        };
        flags
            .iter()
            .filter(|(k, v)| v.as_bool() == Some(true) && k.as_str() != "vnni_or_amx")
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Image labels recording the choice: precision, variant, quantizer settings, calibration
    /// set sha256, the gate's figures and the measured speed-up (`io.onnx-serving.*`; the least
    /// over the thread counts timed, as the runtime picks its threads by the load).
    pub fn labels(&self) -> HashMap<String, String> {
        let variant = self.text("/variant");
        let c = format!("/candidates/{variant}");
        let pairs = [
            ("precision", self.text("/precision")),
            ("optimization.variant", variant.clone()),
            ("optimization.reason", self.text("/reason")),
            ("optimization.onnxruntime", self.text("/onnxruntime")),
            ("optimization.openvino", self.text(&format!("{c}/openvino"))),
            (
                "optimization.calibration-sha256",
                self.text("/data/calibration_sha256"),
            ),
            (
                "optimization.gate-top1",
                self.text(&format!("{c}/gate/top1")),
            ),
            (
                "optimization.gate-top5",
                self.text(&format!("{c}/gate/top5")),
            ),
            (
                "optimization.gate-inputs",
                self.text(&format!("{c}/gate/n")),
            ),
            ("optimization.speedup", self.text("/speedup")),
            ("optimization.host-cpu-flags", self.host_cpu_flags()),
            (
                "optimization.quantizer",
                self.report
                    .pointer(&format!("{c}/quantizer"))
                    .map(Value::to_string)
                    .unwrap_or_default(),
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_record_the_choice_and_the_gate() {
        let report = serde_json::json!({
            "precision": "int8", "variant": "int8", "speedup": 1.4, "reason": "passed",
            "data": {"calibration_sha256": "abc"},
            "candidates": {"int8": {
                "quantizer": {"per_channel": true},
                "gate": {"top1": 0.99, "top5": 0.97, "n": 146},
                "timing": {"threads_2": {"speedup": 1.4}}}}
        });
        let labels = Choice { report }.labels();
        let get = |k: &str| labels[&format!("{LABEL_PREFIX}{k}")].as_str();
        assert_eq!(get("precision"), "int8");
        assert_eq!(get("optimization.gate-top1"), "0.99");
        assert_eq!(get("optimization.gate-inputs"), "146");
        assert_eq!(get("optimization.speedup"), "1.4");
        assert_eq!(get("optimization.calibration-sha256"), "abc");
        assert!(get("optimization.quantizer").contains("per_channel"));
    }

    #[test]
    fn the_candidates_table_marks_the_choice_and_says_why_others_failed() {
        let report = serde_json::json!({
            "precision": "fp32", "variant": "fp32", "speedup": 1.0,
            "candidates": {
                "fp32": {"timing": {"threads_1": {"ms": 8.6, "speedup": 1.0},
                                    "threads_2": {"ms": 4.7, "speedup": 1.0}}},
                "int8": {"gate": {"passed": false, "top1": 0.932, "top5": 0.918,
                                  "max_abs_diff": 0.181, "reasons": ["top-1 agreement 0.932 < 0.98"]}}}
        });
        let table = Choice { report }.candidates_table();
        assert!(table.contains("fp32 *"), "{table}");
        assert!(table.contains("4.70 x1.00"), "{table}");
        assert!(table.contains("FAIL  0.932"), "{table}");
        assert!(
            table.contains("int8: top-1 agreement 0.932 < 0.98"),
            "{table}"
        );
    }
}
