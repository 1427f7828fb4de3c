//! Loading one version off the request path: in a child process first where asked (a model
//! that crashes an engine ends its version, not the server), then on the blocking pool with
//! panics caught; the outcome (AVAILABLE, or END with the error) published to the state.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info};

use super::Manager;
use crate::models::check::crash_in_child;
use crate::models::disk::Fingerprint;
use crate::models::layout::ModelVersion;
use crate::models::load::{load_and_warm_up, log_loaded, PoolOptions};
use crate::models::state::Servable;

impl Manager {
    /// Sets the outcome of a load, if the version is still LOADING in a model still served (a
    /// config reload may have removed it meanwhile). Returns whether it was set.
    fn publish(&self, name: &str, version: u64, outcome: Servable) -> bool {
        let mut set = false;
        self.state.update_if(|models| {
            let slot = models
                .get_mut(name)
                .and_then(|entry| entry.versions.get_mut(&version));
            if let Some(slot @ Servable::Loading) = slot {
                *slot = outcome;
                set = true;
            }
            set
        });
        set
    }

    /// Loads one version on the blocking pool and publishes the result.
    pub(super) fn spawn_load(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        model: PathBuf,
        fingerprint: Fingerprint,
        startup: bool,
    ) {
        let manager = self.clone();
        let pool = PoolOptions {
            model_name: name.to_string(),
            ..self.pool.clone()
        };
        info!(
            "Loading servable version {{name: {name} version: {version}}} from {}",
            model.display()
        );
        tokio::task::spawn_blocking(move || {
            let found = ModelVersion {
                version,
                path: model,
            };
            let name = pool.model_name.clone();
            // A model that trips an engine bug ends its version (END with the panic's text, or
            // the child's signal), not the server and the models it serves (release builds
            // unwind; a crash is caught in a child while serving).
            let crashed = if startup || !manager.options.check_loads_in_child {
                None
            } else {
                crash_in_child(&name, version, &found.path, pool.engine)
            };
            let loaded = match crashed {
                Some(crash) => Err(anyhow::anyhow!(crash)),
                None => crate::engine::catch_panic(|| load_and_warm_up(&found, &pool))
                    .unwrap_or_else(|why| {
                        Err(anyhow::anyhow!(
                            "the engine panicked while loading it: {why}"
                        ))
                    }),
            };
            match loaded {
                Ok(model) => {
                    let model = Arc::new(model);
                    // Publish before saying so: clients (and tests) act on this log line.
                    if manager.publish(&name, version, Servable::Available(model.clone())) {
                        log_loaded(&model);
                    } else {
                        info!("Servable version {{name: {name} version: {version}}} loaded, but is no longer wanted: dropped");
                    }
                }
                Err(e) => manager.failed(&name, version, fingerprint, &format!("{e:#}"), startup),
            }
            manager.wake.notify_one();
        });
    }

    /// A version that could not be loaded: END with its error, not tried again until its files
    /// change; at start-up, the server's start fails with it.
    fn failed(
        &self,
        name: &str,
        version: u64,
        fingerprint: Fingerprint,
        message: &str,
        startup: bool,
    ) {
        error!("Failed to load servable version {{name: {name} version: {version}}}: {message}");
        self.lock()
            .tracks
            .entry(name.to_string())
            .or_default()
            .failed
            .insert(version, fingerprint);
        self.publish(
            name,
            version,
            Servable::End {
                error: Some(message.to_string()),
            },
        );
        if startup {
            self.startup_failure.send_if_modified(|f| {
                f.get_or_insert_with(|| format!("model '{name}' could not be loaded: {message}"));
                true
            });
        }
    }
}
