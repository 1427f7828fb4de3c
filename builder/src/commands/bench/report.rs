//! The bench's figures: one image's results, and the two side by side as a table or JSON.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::commands::optimize::Choice;
use crate::probe::percentile;

/// Figures for one image.
#[derive(Debug, Clone)]
pub struct SideResult {
    /// `portable` or `optimized`.
    pub label: &'static str,
    /// The serving image's tag.
    pub image: String,
    /// The image's size.
    pub image_bytes: i64,
    /// Container start to the first answered predict: the median (nearest rank) of `cold_starts_ms`.
    pub cold_start_ms: f64,
    /// Every start's time to the first answered predict, in order.
    pub cold_starts_ms: Vec<f64>,
    /// Each timed request's latency.
    pub latencies_ms: Vec<f64>,
    /// Wall time of the rounds sent to this image.
    pub busy_seconds: f64,
    /// The class the last answer predicted.
    pub class: String,
    /// The engine the runtime chose for the model (its status says).
    pub engine: String,
    /// The served model's precision (`fp32`, `int8`), as its status reports it.
    pub precision: String,
}

impl SideResult {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }

    fn mean(&self) -> f64 {
        self.latencies_ms.iter().sum::<f64>() / self.latencies_ms.len().max(1) as f64
    }

    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.busy_seconds.max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({
            "image": self.image,
            "image_bytes": self.image_bytes,
            "cold_start_ms": self.cold_start_ms,
            "cold_starts_ms": self.cold_starts_ms,
            "p50_ms": self.percentile(50.0),
            "p90_ms": self.percentile(90.0),
            "p99_ms": self.percentile(99.0),
            "mean_ms": self.mean(),
            "throughput_rps": self.throughput(),
            "requests": self.latencies_ms.len(),
            "prediction_class": self.class,
            "engine": self.engine,
            "precision": self.precision,
        })
    }
}

/// The two images' results, side by side.
pub struct BenchReport {
    /// The image built for any x86-64.
    pub portable: SideResult,
    /// The image built for this CPU.
    pub optimized: SideResult,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The model folder served.
    pub model: PathBuf,
    /// What `builder optimize` chose for the optimized side, with `--optimize`.
    pub optimization: Option<Choice>,
}

impl BenchReport {
    /// The report as JSON (`--json`), speedups included.
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "concurrency": self.concurrency,
            "portable": self.portable.to_json(),
            "optimized": self.optimized.to_json(),
            "speedup_p50": self.portable.percentile(50.0) / self.optimized.percentile(50.0),
            "speedup_mean": self.portable.mean() / self.optimized.mean(),
            "throughput_ratio": self.optimized.throughput() / self.portable.throughput(),
            "optimization": self.optimization.as_ref().map(|c| &c.report),
        })
    }

    /// The report as a table with the speedups and each image's prediction.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} requests per image, concurrency {}, interleaved round by round\n\n",
            self.portable.latencies_ms.len(),
            self.concurrency
        );
        out += &format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>11}\n",
            "image", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s", "size MB", "cold start"
        );
        for side in [&self.portable, &self.optimized] {
            out += &format!(
                "{:<10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {:>9.1} {:>8.0} ms\n",
                side.label,
                side.percentile(50.0),
                side.percentile(90.0),
                side.percentile(99.0),
                side.mean(),
                side.throughput(),
                side.image_bytes as f64 / 1e6,
                side.cold_start_ms
            );
        }
        out += &format!(
            "\nspeedup (portable / optimized): p50 {:.2}x, mean {:.2}x; throughput {:.2}x\n",
            self.portable.percentile(50.0) / self.optimized.percentile(50.0),
            self.portable.mean() / self.optimized.mean(),
            self.optimized.throughput() / self.portable.throughput()
        );
        out += &format!(
            "cold start: the median of {} start(s) each, alternating (portable {} ms; optimized {} ms)\n",
            self.portable.cold_starts_ms.len(),
            join_ms(&self.portable.cold_starts_ms),
            join_ms(&self.optimized.cold_starts_ms)
        );
        for side in [&self.portable, &self.optimized] {
            out += &format!(
                "{:<10} Prediction class: {}, avg latency: {:.1} ms   ({}, engine {}, {})\n",
                side.label,
                side.class,
                side.mean(),
                side.image,
                side.engine,
                side.precision
            );
        }
        if let Some(choice) = &self.optimization {
            out += &format!("\nThe optimized side's model: {}\n", choice.summary());
            out += &choice.candidates_table();
        }
        out
    }
}

/// `[1203.4, 998.1]` → `1203, 998`.
fn join_ms(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
