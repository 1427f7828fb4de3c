//! The model repository extension of the Open Inference Protocol (Triton's
//! `repository/index`, `repository/models/{m}/load` and `unload`), for REST and gRPC alike.
//! What load and unload mean here is the model manager's (`models::repository`): the
//! repository is the model config.

use std::time::Duration;

use crate::error::ApiError;
use crate::models::{self, AppState, ModelControl, Servable};

/// One line of the repository index: a model version, or a model with no version to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    /// None for a model with no version (unloaded, or none found on disk yet).
    pub version: Option<u64>,
    /// Triton's model states: `READY`, `LOADING`, `UNLOADING` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why a version is UNAVAILABLE: its load error, `unloaded`, or empty.
    pub reason: String,
}

/// How long a load waits for the model to become AVAILABLE (the client's own deadline may
/// end the call first).
pub const LOAD_WAIT: Duration = Duration::from_secs(600);

/// Every model of the repository with each version's state, in the config's order; with
/// `ready_only`, the READY versions alone. A server without a model manager lists the models
/// it holds.
pub fn index(st: &AppState, ready_only: bool) -> Vec<IndexEntry> {
    let listed = match st.control() {
        Some(control) => control.repository(),
        None => st.models().keys().map(|n| (n.clone(), false)).collect(),
    };
    let models = st.models();
    let mut index = Vec::new();
    for (name, unloaded) in listed {
        let entry = models.get(&name).filter(|_| !unloaded);
        let versions = entry.map(|e| &e.versions).filter(|v| !v.is_empty());
        let Some(versions) = versions else {
            index.push(IndexEntry {
                name,
                version: None,
                state: "UNAVAILABLE",
                reason: if unloaded {
                    "unloaded"
                } else {
                    "no version found yet"
                }
                .into(),
            });
            continue;
        };
        for (&version, servable) in versions.iter().rev() {
            let (state, reason) = match servable {
                Servable::Available(_) => ("READY", String::new()),
                Servable::Loading => ("LOADING", String::new()),
                Servable::Unloading(_) => ("UNLOADING", String::new()),
                Servable::End { error: Some(e) } => ("UNAVAILABLE", e.clone()),
                Servable::End { error: None } => ("UNAVAILABLE", "unloaded".into()),
            };
            index.push(IndexEntry {
                name: name.clone(),
                version: Some(version),
                state,
                reason,
            });
        }
    }
    index.retain(|e| !ready_only || e.state == "READY");
    index
}

/// Serves a model of the config again and answers once it has an AVAILABLE version, as
/// Triton's load does.
///
/// Errors: NOT_FOUND for a model the config does not name; UNKNOWN with the load error when
/// every version failed; UNAVAILABLE when it is still loading after `limit`, or when the
/// server has no model manager.
pub async fn load(st: &AppState, name: &str, limit: Duration) -> Result<(), ApiError> {
    require(st)?.load(name)?;
    models::wait_until_available(st, &[name.to_string()], limit).await
}

/// Takes a model of the config out of service: it answers NOT_FOUND from now on, and its
/// versions are dropped once their requests in flight finish.
///
/// Errors: NOT_FOUND for a model the config does not name; UNAVAILABLE without a model
/// manager.
pub fn unload(st: &AppState, name: &str) -> Result<(), ApiError> {
    require(st)?.unload(name)
}

fn require(st: &AppState) -> Result<std::sync::Arc<dyn ModelControl>, ApiError> {
    st.control().ok_or_else(|| {
        ApiError::Unavailable("this server has no model manager to load or unload models".into())
    })
}

/// Refuses load parameters this server cannot honour: Triton's `config` override and `file:`
/// contents (the model config names each model's files and policy). Triton's
/// `unload_dependents` is accepted and has nothing to do (no ensembles here).
///
/// Errors: INVALID_ARGUMENT naming the parameter.
pub fn check_parameters<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    for name in names {
        if name != "unload_dependents" {
            return Err(ApiError::BadRequest(format!(
                "the repository parameter '{name}' is not supported: the model config (--model_config_file) names each model's files, version policy and labels"
            )));
        }
    }
    Ok(())
}
