//! The model manager: which models and versions the server holds, kept in step with the model
//! config and the version folders on disk, as TF Serving's `ServerCore` does.
//!
//! Each poll (`--file_system_poll_wait_seconds`) scans every model's base path. A new version is
//! loaded in the background (validate, optimize, warm up) once its files have stopped changing
//! between two polls, then made AVAILABLE. Versions that leave the version policy go UNLOADING
//! only once a version the policy wants is AVAILABLE (or nothing it wants exists any more), and
//! are dropped when their in-flight requests finish: a model never has a gap. A version that
//! fails to load is END with its error, and is tried again only if its files change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use super::config::ModelConfig;
use super::disk::{self, Fingerprint};
use super::load::PoolOptions;
use super::reload::check_labels;
use super::state::{AppState, ModelEntry, Servable};
use crate::error::ApiError;

mod loading;

/// How the manager follows the disk and the config.
#[derive(Clone, Debug, Default)]
pub struct ManagerOptions {
    /// How often base paths are scanned for new versions; None: only at start and on a config
    /// change (`--file_system_poll_wait_seconds 0`).
    pub file_system_poll: Option<Duration>,
    /// Labels may name a version that is not AVAILABLE yet, if the label is new
    /// (`--allow_version_labels_for_unavailable_models`).
    pub allow_labels_for_unavailable: bool,
    /// Versions loaded while serving are loaded by `runtime check-model` in a child process
    /// first, so that an engine crash ends that version, not the server
    /// (`--check_loads_in_child_process`, [`super::check`]).
    pub check_loads_in_child: bool,
}

/// Keeps the models of [`AppState`] in step with the config and the disk.
pub struct Manager {
    state: Arc<AppState>,
    pool: PoolOptions,
    options: ManagerOptions,
    inner: Mutex<Inner>,
    wake: Notify,
    /// The first load failure of a version present at start: the server stops, as TF Serving
    /// does when its initial models do not load.
    startup_failure: watch::Sender<Option<String>>,
}

#[derive(Default)]
pub(super) struct Inner {
    /// The model config: the models the repository API may load and unload.
    pub(super) configs: Vec<ModelConfig>,
    /// Models of the config taken out of service by the repository API's unload.
    pub(super) unloaded: BTreeSet<String>,
    tracks: HashMap<String, Track>,
}

impl Inner {
    /// The models served: the config's, less the unloaded ones.
    pub(super) fn served(&self) -> Vec<ModelConfig> {
        self.configs
            .iter()
            .filter(|c| !self.unloaded.contains(&c.name))
            .cloned()
            .collect()
    }
}

/// What the manager remembers of one model's folders between polls.
#[derive(Default)]
struct Track {
    /// Each version's files at the last poll.
    last_scan: BTreeMap<u64, Fingerprint>,
    /// Versions that failed to load, with their files then: retried once those change.
    failed: BTreeMap<u64, Fingerprint>,
    /// The base path could not be read at the last poll (said once).
    unreadable: bool,
}

impl Manager {
    pub fn new(state: Arc<AppState>, pool: PoolOptions, options: ManagerOptions) -> Arc<Manager> {
        Arc::new(Manager {
            state,
            pool,
            options,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            startup_failure: watch::Sender::new(None),
        })
    }

    /// Checks that every model has a version to load, starts loading them, and keeps
    /// following the disk from then on (a tokio task).
    ///
    /// Errors: a base path is missing, or holds no version folder with an ONNX file.
    pub fn start(self: &Arc<Self>, configs: Vec<ModelConfig>) -> anyhow::Result<()> {
        for c in &configs {
            let found = disk::scan(&c.base_path)
                .map_err(anyhow::Error::from)
                .and_then(|versions| {
                    if versions.values().any(Option::is_some) {
                        return Ok(versions);
                    }
                    let err = match versions.iter().next_back() {
                        None => crate::error::ModelError::NoVersion {
                            path: c.base_path.clone(),
                        },
                        Some((v, _)) => crate::error::ModelError::NoOnnxFile {
                            path: c.base_path.join(v.to_string()),
                        },
                    };
                    Err(err.into())
                });
            let versions =
                found.map_err(|e| e.context(format!("cannot serve model '{}'", c.name)))?;
            // TF Serving refuses to start on such a label; here it waits for its version.
            for (label, v) in &c.labels {
                if !versions.contains_key(v) {
                    warn!(
                        "Model '{}': label '{label}' names version {v}, which is not under {}: the label applies once that version is AVAILABLE",
                        c.name,
                        c.base_path.display()
                    );
                }
            }
            info!(
                "Model '{}': {} from {}",
                c.name,
                c.policy,
                c.base_path.display()
            );
        }
        self.lock().configs = configs;
        self.reconcile(true);
        tokio::spawn(self.clone().follow());
        Ok(())
    }

    /// Serves `configs` from now on: models added are loaded, models removed unloaded,
    /// policies and labels applied, all the same way as a new version on disk. Returns the
    /// names of the models it adds. The new config wins over the repository API: a model it
    /// names is served even if it was unloaded.
    ///
    /// Errors: FAILED_PRECONDITION, in TF Serving's words, when a label would point at a
    /// version that is not AVAILABLE (see [`super::reload::check_labels`]); the config served
    /// is then unchanged.
    pub fn reload(&self, configs: Vec<ModelConfig>) -> Result<Vec<String>, ApiError> {
        let mut inner = self.lock();
        // A model unloaded through the repository API has no versions served: its labels are
        // new again, and apply once a version is AVAILABLE.
        let served_before: Vec<ModelConfig> = configs
            .iter()
            .filter(|c| !inner.unloaded.contains(&c.name))
            .cloned()
            .collect();
        check_labels(
            &self.state,
            &served_before,
            self.options.allow_labels_for_unavailable,
        )?;
        let served = inner.served();
        let added = configs
            .iter()
            .filter(|c| !served.iter().any(|old| old.name == c.name))
            .map(|c| c.name.clone())
            .collect();
        inner.unloaded.clear();
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        info!("Model config reloaded: {}", names.join(", "));
        inner.configs = configs;
        drop(inner);
        self.wake.notify_one();
        Ok(added)
    }

    /// Set when a version present at start fails to load.
    pub fn startup_failure(&self) -> watch::Receiver<Option<String>> {
        self.startup_failure.subscribe()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The models and versions this manager keeps.
    pub(super) fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs a poll soon (on the tokio task that follows the disk).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Polls: every `file_system_poll`, and whenever a load ends or the config changes.
    async fn follow(self: Arc<Self>) {
        loop {
            match self.options.file_system_poll {
                Some(every) => tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = self.wake.notified() => {}
                },
                None => self.wake.notified().await,
            }
            let manager = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || manager.reconcile(false)).await {
                error!("the model manager's poll stopped: {e}");
            }
        }
    }

    /// One poll: scan each model's base path, then load, unload and label as the policy says.
    fn reconcile(self: &Arc<Self>, startup: bool) {
        let configs = self.lock().served();
        // Scanned without the lock: a slow mount must not hold up a config reload.
        let scans: Vec<_> = configs.iter().map(|c| disk::scan(&c.base_path)).collect();
        let mut inner = self.lock();
        if inner.served() != configs {
            return; // reloaded (or loaded, unloaded) meanwhile: that change's own pass follows
        }
        let wanted: BTreeSet<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        // An unloaded model's track is kept: loading it again needs no second look at its files.
        let unloaded = inner.unloaded.clone();
        inner
            .tracks
            .retain(|name, _| wanted.contains(name.as_str()) || unloaded.contains(name));
        self.state.update_if(|models| {
            let before = models.len();
            models.retain(|name, _| {
                let keep = wanted.contains(name.as_str());
                if !keep {
                    info!("Model '{name}' is no longer in the config: unloading it once its requests finish");
                }
                keep
            });
            models.len() != before
        });
        // Without polling there is no second look to wait for: take the files as they are.
        let settle = !startup && self.options.file_system_poll.is_some();
        for (config, scan) in configs.iter().zip(scans) {
            let track = inner.tracks.entry(config.name.clone()).or_default();
            let scan = match scan {
                Ok(scan) => {
                    track.unreadable = false;
                    scan
                }
                Err(e) => {
                    // Keep what is served: a passing mount hiccup must not unload a model.
                    if !std::mem::replace(&mut track.unreadable, true) {
                        warn!("model '{}': {e}; serving what is loaded", config.name);
                    }
                    continue;
                }
            };
            let loads = self.plan(config, track, &scan, settle);
            for (version, model, fingerprint) in loads {
                self.spawn_load(&config.name, version, model, fingerprint, startup);
            }
        }
    }

    /// Decides one model's loads, unloads and labels from its folders, and applies them to
    /// the state. Returns the loads to start.
    fn plan(
        &self,
        config: &ModelConfig,
        track: &mut Track,
        scan: &BTreeMap<u64, Option<disk::VersionDir>>,
        settle: bool,
    ) -> Vec<(u64, PathBuf, Fingerprint)> {
        let mut loads = Vec::new();
        self.state.update_if(|models| {
            let mut changed = !models.contains_key(&config.name);
            let entry = models.entry(config.name.clone()).or_default();
            let live = |v: &u64| {
                matches!(
                    entry.versions.get(v),
                    Some(Servable::Loading | Servable::Available(_))
                )
            };
            // Versions that could be served: loaded or loading, or complete on disk, settled,
            // and not a failure whose files are unchanged.
            let mut candidates = BTreeSet::new();
            let mut complete = BTreeSet::new();
            for (v, dir) in scan {
                // A loaded version whose folder is still there keeps serving from memory, even
                // if its files are damaged or removed meanwhile; removing the folder unloads it.
                if live(v) {
                    complete.insert(*v);
                    candidates.insert(*v);
                    continue;
                }
                let Some(dir) = dir else { continue };
                complete.insert(*v);
                match track.failed.get(v) {
                    Some(f) if *f == dir.fingerprint => continue,
                    Some(_) => {
                        track.failed.remove(v);
                    }
                    None => {}
                }
                if settle && track.last_scan.get(v) != Some(&dir.fingerprint) {
                    continue; // still being copied, or just appeared: look again next poll
                }
                candidates.insert(*v);
            }
            track.last_scan = scan
                .iter()
                .filter_map(|(v, d)| d.as_ref().map(|d| (*v, d.fingerprint.clone())))
                .collect();
            let aspired = config.policy.aspired(&candidates);
            for v in &aspired {
                if !live(v) {
                    if let Some(Some(dir)) = scan.get(v) {
                        loads.push((*v, dir.model.clone(), dir.fingerprint.clone()));
                    }
                }
            }
            let available = |v: &u64| matches!(entry.versions.get(v), Some(Servable::Available(_)));
            // Availability first: unload only once a wanted version serves, or when nothing the
            // policy wants exists any more (the operator removed it).
            let unload = aspired.iter().any(available)
                || (aspired.is_empty() && config.policy.aspired(&complete).is_empty());
            for (v, servable) in entry.versions.iter_mut() {
                if let Servable::Available(model) = servable {
                    if unload && !aspired.contains(v) {
                        info!(
                            "Unloading servable version {{name: {} version: {v}}} once its requests finish",
                            config.name
                        );
                        *servable = Servable::Unloading(Arc::downgrade(model));
                        changed = true;
                    }
                }
            }
            for (v, _, _) in &loads {
                entry.versions.insert(*v, Servable::Loading);
            }
            changed |= !loads.is_empty();
            changed |= self.label(config, entry);
            changed |= entry.prune();
            changed
        });
        loads
    }

    /// Points each label of the config at its version once that version is AVAILABLE (or
    /// at once, for a new label, with `allow_labels_for_unavailable`); until then a label keeps
    /// the version it had, so clients using it are never cut off.
    /// Returns whether a label changed.
    fn label(&self, config: &ModelConfig, entry: &mut ModelEntry) -> bool {
        let before = entry.labels.len();
        entry.labels.retain(|l, _| config.labels.contains_key(l));
        let mut changed = entry.labels.len() != before;
        for (label, &v) in &config.labels {
            let available = matches!(entry.versions.get(&v), Some(Servable::Available(_)));
            let new = !entry.labels.contains_key(label);
            let may = available || (new && self.options.allow_labels_for_unavailable);
            if may && entry.labels.insert(label.clone(), v) != Some(v) {
                info!("Model '{}': label '{label}' -> version {v}", config.name);
                changed = true;
            }
        }
        changed
    }
}
