//! What the server is serving, and in what state: shared by the HTTP handlers.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::EngineKind;
use crate::infer::InferencePool;
use crate::model::{ServingSignature, Signature};

/// A model version loaded and ready.
pub struct ServedModel {
    pub version: u64,
    pub path: PathBuf,
    /// The ONNX graph's own inputs and outputs.
    pub signature: Signature,
    /// The public signature from `signature.toml` (image inputs, class outputs), if any.
    pub serving: Option<Arc<ServingSignature>>,
    pub pool: InferencePool,
    /// The engine that runs it.
    pub engine: EngineKind,
    /// Inference worker threads.
    pub workers: usize,
    /// From the start of loading to ready: every engine tried, warm-up included.
    pub load_time: Duration,
}

impl ServedModel {
    /// What clients send and get back: the signature file's view when there is one.
    pub fn api_signature(&self) -> &Signature {
        match &self.serving {
            Some(s) => &s.public,
            None => &self.signature,
        }
    }
}

/// TF Serving's servable states, as `GET /v1/models/<name>` reports them.
#[derive(Clone)]
pub enum ModelState {
    /// Loading this version (parse, optimize, warm up).
    Loading {
        version: u64,
    },
    Available(Arc<ServedModel>),
    /// Loading failed; the message says why.
    Failed {
        version: Option<u64>,
        message: String,
    },
}

/// Request limits the handlers enforce.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What every protocol's handlers share: the model and its state, and the request limits.
pub struct AppState {
    pub model_name: String,
    pub limits: Limits,
    /// The current state; watchers (gRPC health) hear of every change.
    state: watch::Sender<ModelState>,
    /// Where REST serves Prometheus metrics, once enabled.
    metrics_path: OnceLock<String>,
}

impl AppState {
    pub fn new(
        model_name: impl Into<String>,
        initial: ModelState,
        limits: Limits,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            model_name: model_name.into(),
            limits,
            state: watch::Sender::new(initial),
            metrics_path: OnceLock::new(),
        })
    }

    pub fn model_state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    pub fn set_model_state(&self, new: ModelState) {
        self.state.send_replace(new);
    }

    /// Serves Prometheus metrics at `path` (REST's port), for apps built after this call.
    pub fn enable_metrics(&self, path: impl Into<String>) {
        let _ = self.metrics_path.set(path.into());
    }

    /// Where metrics are served, when enabled.
    pub fn metrics_path(&self) -> Option<&str> {
        self.metrics_path.get().map(String::as_str)
    }

    /// A receiver that wakes on every state change (the current state counts as seen).
    pub fn watch_state(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }
}
