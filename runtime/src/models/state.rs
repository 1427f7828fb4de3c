//! What the server is serving, and in what state (TF Serving's servable life cycle): shared by
//! the REST and gRPC handlers and changed by the model manager (`manager`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::optimization::Optimization;
use crate::engine::{ComputePrecision, EngineKind};
use crate::error::ApiError;
use crate::pool::InferencePool;
use crate::proto::tensorflow::serving::ModelServerConfig;
use crate::signature::{ServingSignature, Signature};

/// A model version loaded and ready.
pub struct ServedModel {
    /// The model's name, as clients use it.
    pub name: String,
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
    /// What `builder optimize` chose for this version (`optimization.json`), if it ran.
    pub optimization: Option<Arc<Optimization>>,
    /// What the serving engine computes the float layers in (bf16 only where it was asked
    /// for, the engine supports it and the CPU has it).
    pub compute_precision: ComputePrecision,
}

impl ServedModel {
    /// The precision this version is served in, when `builder optimize` ran on it: the model
    /// file's (`fp32`, `int8`) as it recorded it, or `bf16` while the engine computes in it
    /// (`fp32` when the variant made for bf16 is served by an engine or a CPU that computes
    /// it in f32).
    pub fn precision(&self) -> Option<&str> {
        let o = self.optimization.as_ref()?;
        Some(o.served_precision(self.compute_precision))
    }
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

impl Drop for ServedModel {
    /// The last request holding an unloaded version is done: its workers stop and its memory
    /// is freed.
    fn drop(&mut self) {
        tracing::info!(
            "Done unloading servable version {{name: {} version: {}}}",
            self.name,
            self.version
        );
    }
}

/// One version's place in TF Serving's servable life cycle.
#[derive(Clone)]
pub enum Servable {
    /// Being loaded (parse, optimize, warm up).
    Loading,
    Available(Arc<ServedModel>),
    /// Out of the version policy: takes no new request, and is dropped (its workers and memory
    /// freed) once the requests holding it finish.
    Unloading(Weak<ServedModel>),
    /// Unloaded, or failed to load (`error` says why).
    End {
        error: Option<String>,
    },
}

/// A model's versions (by number) and its version labels.
#[derive(Clone, Default)]
pub struct ModelEntry {
    pub versions: BTreeMap<u64, Servable>,
    /// Label -> version (`stable` -> 1), set by the model config.
    pub labels: BTreeMap<String, u64>,
}

/// END versions (unloaded or failed) kept per model for the status API.
pub const KEEP_ENDED: usize = 16;

impl ModelEntry {
    /// Unloading versions whose requests are done become END; only the newest [`KEEP_ENDED`]
    /// END versions are kept. Whether anything changed.
    pub fn prune(&mut self) -> bool {
        let mut changed = false;
        for s in self.versions.values_mut() {
            if let Servable::Unloading(m) = s {
                if m.strong_count() == 0 {
                    *s = Servable::End { error: None };
                    changed = true;
                }
            }
        }
        let ended: Vec<u64> = self
            .versions
            .iter()
            .filter(|(_, s)| matches!(s, Servable::End { .. }))
            .map(|(v, _)| *v)
            .collect();
        for v in ended.iter().take(ended.len().saturating_sub(KEEP_ENDED)) {
            self.versions.remove(v);
            changed = true;
        }
        changed
    }

    /// The highest-numbered AVAILABLE version, which "latest" requests run on.
    pub fn latest_available(&self) -> Option<&Arc<ServedModel>> {
        self.versions.values().rev().find_map(|s| match s {
            Servable::Available(m) => Some(m),
            _ => None,
        })
    }
}

/// Every model served, by name.
pub type Models = BTreeMap<String, ModelEntry>;

/// Request limits the handlers enforce.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, decompressed (`--max_body_bytes`).
    pub max_body_bytes: usize,
    /// Longest a REST call may take, body read included (`--rest_api_timeout_in_ms`).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What every protocol's handlers share: the models and their versions, and the request limits.
pub struct AppState {
    pub limits: Limits,
    /// Every model and version; watchers (gRPC health) hear of every change.
    models: watch::Sender<Models>,
    /// Where REST serves Prometheus metrics, once enabled.
    metrics_path: OnceLock<String>,
    /// Who changes the models served (the model manager), once set.
    control: OnceLock<Weak<dyn ModelControl>>,
}

/// Changes which models are served, on a client's request: a new model config
/// (ModelService.HandleReloadConfigRequest), or the repository API's load and unload
/// (KServe V2's model repository extension). Implemented by the model manager.
pub trait ModelControl: Send + Sync {
    /// Checks `config` and serves it from now on; returns the names of the models it adds
    /// (their versions load in the background). Errors: INVALID_ARGUMENT for a config wrong in
    /// itself, FAILED_PRECONDITION for a label moved to a version that is not AVAILABLE; the
    /// models served are then unchanged.
    fn reload(&self, config: &ModelServerConfig) -> Result<Vec<String>, ApiError>;

    /// The models of the config, in its order, each with whether it was unloaded.
    fn repository(&self) -> Vec<(String, bool)>;

    /// Serves a model of the config again (its versions load in the background).
    /// Errors: NOT_FOUND for a model the config does not name.
    fn load(&self, name: &str) -> Result<(), ApiError>;

    /// Takes a model of the config out of service (requests in flight finish).
    /// Errors: NOT_FOUND for a model the config does not name.
    fn unload(&self, name: &str) -> Result<(), ApiError>;
}

impl AppState {
    /// A server with no model yet (the model manager adds them).
    pub fn new(limits: Limits) -> Arc<AppState> {
        Arc::new(AppState {
            limits,
            models: watch::Sender::new(Models::new()),
            metrics_path: OnceLock::new(),
            control: OnceLock::new(),
        })
    }

    /// A server with one model, `name`, whose `version` is in state `servable`.
    pub fn serving(name: &str, version: u64, servable: Servable, limits: Limits) -> Arc<AppState> {
        let state = AppState::new(limits);
        state.set_version(name, version, servable);
        state
    }

    /// The models now. Hold the guard briefly: updates wait for it.
    pub fn models(&self) -> watch::Ref<'_, Models> {
        self.models.borrow()
    }

    /// Changes the models; watchers are told only if `change` says it changed something.
    pub fn update_if(&self, change: impl FnOnce(&mut Models) -> bool) {
        self.models.send_if_modified(change);
    }

    /// Sets one version's state (adding the model if new).
    pub fn set_version(&self, name: &str, version: u64, servable: Servable) {
        self.models.send_modify(|models| {
            models
                .entry(name.to_string())
                .or_default()
                .versions
                .insert(version, servable);
        });
    }

    /// Serves Prometheus metrics at `path` (REST's port), for apps built after this call.
    pub fn enable_metrics(&self, path: impl Into<String>) {
        let _ = self.metrics_path.set(path.into());
    }

    /// Where metrics are served, when enabled.
    pub fn metrics_path(&self) -> Option<&str> {
        self.metrics_path.get().map(String::as_str)
    }

    /// Lets HandleReloadConfigRequest and the repository API reach `control`.
    pub fn set_control(&self, control: Weak<dyn ModelControl>) {
        let _ = self.control.set(control);
    }

    /// Who changes the models served, if anyone (a server built without a model manager,
    /// as in tests, has no one).
    pub fn control(&self) -> Option<Arc<dyn ModelControl>> {
        self.control.get().and_then(Weak::upgrade)
    }

    /// A receiver that wakes on every change of the models (the current state counts as seen).
    pub fn watch_models(&self) -> watch::Receiver<Models> {
        self.models.subscribe()
    }
}

/// TF Serving's servable states (`ModelVersionStatus.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServableState {
    Loading,
    Available,
    Unloading,
    End,
}

impl ServableState {
    /// The state's name in TF Serving's API ("AVAILABLE").
    pub fn name(self) -> &'static str {
        match self {
            ServableState::Loading => "LOADING",
            ServableState::Available => "AVAILABLE",
            ServableState::Unloading => "UNLOADING",
            ServableState::End => "END",
        }
    }
}

/// One version's status, as GetModelStatus and `GET /v1/models/<name>` report it.
#[derive(Clone, Debug)]
pub struct VersionStatus {
    pub version: u64,
    pub state: ServableState,
    /// Why loading failed (error code UNKNOWN), or None (OK).
    pub error: Option<String>,
    /// The engine running an AVAILABLE version.
    pub engine: Option<&'static str>,
    /// An AVAILABLE version's precision, when `builder optimize` recorded it.
    pub precision: Option<String>,
}

impl VersionStatus {
    /// TF Serving's `error_code` for the status: "OK", or "UNKNOWN" with a load error.
    pub fn error_code(&self) -> &'static str {
        if self.error.is_some() {
            "UNKNOWN"
        } else {
            "OK"
        }
    }

    /// The status of `version` in state `servable`.
    pub fn of(version: u64, servable: &Servable) -> VersionStatus {
        let (state, error, engine) = match servable {
            Servable::Loading => (ServableState::Loading, None, None),
            Servable::Available(m) => (ServableState::Available, None, Some(m.engine.name())),
            // Requests still hold it: its memory is not freed yet.
            Servable::Unloading(m) if m.strong_count() > 0 => {
                (ServableState::Unloading, None, None)
            }
            Servable::Unloading(_) => (ServableState::End, None, None),
            Servable::End { error } => (ServableState::End, error.clone(), None),
        };
        let precision = match servable {
            Servable::Available(m) => m.precision().map(str::to_owned),
            _ => None,
        };
        VersionStatus {
            version,
            state,
            error,
            engine,
            precision,
        }
    }
}
