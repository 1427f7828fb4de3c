//! Prometheus metrics, in the text exposition format, at TF Serving's path
//! (`/monitoring/prometheus/metrics`) when `--enable_metrics` is on. Recorded by both APIs
//! through [`Metrics::request`] and by the serving path ([`Metrics::engine_run`]); the model's
//! state, load time and queue depth are handed to [`Metrics::render`] at each scrape
//! (`serving::render_metrics` reads them from the models served). The process's CPU and memory
//! come from the `prometheus` crate's process collector. This module knows no other room but
//! the error type: every room may record here.
//!
//! Names follow Prometheus' conventions (`_total`, `_seconds`) under `onnx_serving_`:
//!
//! | metric | labels |
//! |---|---|
//! | `onnx_serving_requests_total` | model, version, api (rest, grpc: TF Serving; v2, grpc-v2: Open Inference Protocol), method, status (gRPC code name: OK, INVALID_ARGUMENT, ...) |
//! | `onnx_serving_request_duration_seconds` (histogram) | model, api, method |
//! | `onnx_serving_inference_duration_seconds` (histogram) | model, version, engine |
//! | `onnx_serving_requests_in_flight` | model, api |
//! | `onnx_serving_queue_depth` | model |
//! | `onnx_serving_model_state` (1 for the version's state) | model, version, state |
//! | `onnx_serving_model_load_duration_seconds` | model, version |
//! | `onnx_serving_batch_size` (histogram, with `--enable_batching`) | model |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::ApiError;

/// TF Serving's metrics path.
pub const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

/// Latency buckets, seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label for a model name a client sent that this server does not serve: client-chosen
/// strings must not become label values (each would be a new time series).
pub const UNKNOWN_MODEL: &str = "_unknown";

/// Whether each answered request is logged (`--access_log`).
static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Logs every answered request at info level, target `access`: model, version, api, method,
/// status and latency in µs as structured fields.
pub fn enable_access_log() {
    ACCESS_LOG.store(true, Ordering::Relaxed);
}

/// The process's metrics (one registry per process).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    inference_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    queue: IntGaugeVec,
    state: IntGaugeVec,
    load_seconds: GaugeVec,
    batch_size: HistogramVec,
}

/// The process's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new(
                    "onnx_serving_requests_total",
                    "Requests answered, by status",
                ),
                &["model", "version", "api", "method", "status"],
            )
            .unwrap_or_else(|e| panic!("metric requests: {e}")),
            request_seconds: histogram(
                "onnx_serving_request_duration_seconds",
                "Time from a request's arrival to its answer",
                &["model", "api", "method"],
            ),
            inference_seconds: histogram(
                "onnx_serving_inference_duration_seconds",
                "Time of one model run in the engine (a batched run counts once per request)",
                &["model", "version", "engine"],
            ),
            in_flight: gauge(
                "onnx_serving_requests_in_flight",
                "Requests received and not answered yet",
                &["model", "api"],
            ),
            queue: gauge(
                "onnx_serving_queue_depth",
                "Requests waiting for an inference worker",
                &["model"],
            ),
            state: gauge(
                "onnx_serving_model_state",
                "1 for the state each model version is in (LOADING, AVAILABLE, END)",
                &["model", "version", "state"],
            ),
            load_seconds: GaugeVec::new(
                Opts::new(
                    "onnx_serving_model_load_duration_seconds",
                    "Time to load, optimize and warm up a model version",
                ),
                &["model", "version"],
            )
            .unwrap_or_else(|e| panic!("metric load: {e}")),
            batch_size: HistogramVec::new(
                HistogramOpts::new(
                    "onnx_serving_batch_size",
                    "Instances per model run, with --enable_batching (merged requests, padding excluded)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
                &["model"],
            )
            .unwrap_or_else(|e| panic!("metric batch size: {e}")),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.inference_seconds.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.queue.clone()),
            Box::new(m.state.clone()),
            Box::new(m.load_seconds.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::warn!("a metric could not be registered: {e}");
            }
        }
        m
    }

    /// Starts timing a request to `model` over `api` ("rest", "grpc", "v2", "grpc-v2") for `method`; the guard
    /// records it when [`RequestGuard::finish`]ed (or as CANCELLED when dropped unfinished: the
    /// client went away). `model` is a served model's name or [`UNKNOWN_MODEL`], never a
    /// client's string.
    pub fn request(&self, model: String, api: &'static str, method: &'static str) -> RequestGuard {
        self.in_flight
            .with_label_values(&[model.as_str(), api])
            .inc();
        RequestGuard {
            model,
            version: String::new(),
            api,
            method,
            started: Instant::now(),
            done: false,
        }
    }

    /// The histogram `model`'s inference workers record their batch sizes in.
    pub fn batch_sizes(&self, model: &str) -> Histogram {
        self.batch_size.with_label_values(&[model])
    }

    /// One engine run of `took` for a request to `model` `version`.
    pub fn engine_run(&self, model: &str, version: u64, engine: &str, took: Duration) {
        self.inference_seconds
            .with_label_values(&[model, &version.to_string(), engine])
            .observe(took.as_secs_f64());
    }

    /// The exposition text, with the state, load time and queue of `models` (every model
    /// served, read at this scrape).
    pub fn render(&self, models: &[ModelGauges<'_>]) -> Result<String, String> {
        self.state.reset();
        self.queue.reset();
        self.load_seconds.reset();
        for model in models {
            for v in &model.versions {
                let version = v.version.to_string();
                self.state
                    .with_label_values(&[model.name, &version, v.state])
                    .set(1);
                if let Some(load) = v.load_time {
                    self.load_seconds
                        .with_label_values(&[model.name, &version])
                        .set(load.as_secs_f64());
                }
            }
            self.queue
                .with_label_values(&[model.name])
                .set(i64::try_from(model.queued).unwrap_or(i64::MAX));
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .map_err(|e| format!("cannot write the metrics: {e}"))?;
        String::from_utf8(text).map_err(|e| format!("cannot write the metrics: {e}"))
    }
}

/// One model as a scrape sees it.
#[derive(Clone, Debug)]
pub struct ModelGauges<'a> {
    pub name: &'a str,
    /// Requests waiting for any of its versions' workers.
    pub queued: usize,
    pub versions: Vec<VersionGauge>,
}

/// One model version as a scrape sees it.
#[derive(Clone, Copy, Debug)]
pub struct VersionGauge {
    pub version: u64,
    /// TF Serving's state name: LOADING, AVAILABLE, UNLOADING, END.
    pub state: &'static str,
    /// Load time of an AVAILABLE version.
    pub load_time: Option<Duration>,
}

/// A request being timed (see [`Metrics::request`]).
pub struct RequestGuard {
    model: String,
    version: String,
    api: &'static str,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl RequestGuard {
    /// The model version that answers.
    pub fn version(&mut self, version: u64) {
        self.version = version.to_string();
    }

    /// Records the request with the status of `result` (the gRPC code name).
    pub fn finish<T>(self, result: &Result<T, ApiError>) {
        self.finish_as(match result {
            Ok(_) => "OK",
            Err(e) => e.code().1,
        });
    }

    /// Records the request with `status`, a gRPC code name ("OK", "INVALID_ARGUMENT", ...).
    pub fn finish_as(mut self, status: &str) {
        self.record(status);
    }

    fn record(&mut self, status: &str) {
        let took = self.started.elapsed();
        if ACCESS_LOG.load(Ordering::Relaxed) {
            tracing::info!(
                target: "access",
                model = %self.model,
                version = %self.version,
                api = %self.api,
                method = %self.method,
                status = %status,
                latency_us = took.as_micros() as u64,
                "request"
            );
        }
        let m = metrics();
        m.requests
            .with_label_values(&[
                self.model.as_str(),
                &self.version,
                self.api,
                self.method,
                status,
            ])
            .inc();
        m.request_seconds
            .with_label_values(&[self.model.as_str(), self.api, self.method])
            .observe(took.as_secs_f64());
        self.done = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.done {
            self.record("CANCELLED");
        }
        metrics()
            .in_flight
            .with_label_values(&[self.model.as_str(), self.api])
            .dec();
    }
}
