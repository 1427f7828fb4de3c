//! The servable status the APIs report (`GET /v1/models/<name>`, ModelService.GetModelStatus,
//! the Open Inference Protocol's readiness and versions).

use super::{available, label_version, model_entry, ModelSpec, VersionChoice};
use crate::error::ApiError;
use crate::models::{AppState, Servable, VersionStatus};

/// The status of the versions `spec` names: every version known, newest first, for
/// [`VersionChoice::Latest`] (as TF Serving lists them); NotFound for an unknown model or
/// version, BadRequest for an unknown label.
pub fn status(st: &AppState, spec: &ModelSpec<'_>) -> Result<Vec<VersionStatus>, ApiError> {
    let models = st.models();
    let entry = model_entry(&models, spec)?;
    let version = match spec.version {
        VersionChoice::Latest => {
            if entry.versions.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "Could not find any versions of model {}: none is on disk yet",
                    spec.name
                )));
            }
            return Ok(entry
                .versions
                .iter()
                .rev()
                .map(|(v, s)| VersionStatus::of(*v, s))
                .collect());
        }
        VersionChoice::Number(n) => n,
        VersionChoice::Label(label) => label_version(spec.name, entry, label)?,
    };
    match entry.versions.get(&version) {
        Some(s) => Ok(vec![VersionStatus::of(version, s)]),
        None => Err(ApiError::NotFound(format!(
            "Servable not found for request: {}: {}",
            spec.version.describe(spec.name),
            available(entry)
        ))),
    }
}

/// The AVAILABLE versions of model `name`, ascending; empty for an unknown model.
pub fn available_versions(st: &AppState, name: &str) -> Vec<u64> {
    st.models()
        .get(name)
        .map(|entry| {
            entry
                .versions
                .iter()
                .filter(|(_, s)| matches!(s, Servable::Available(_)))
                .map(|(v, _)| *v)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the server is ready: there is a model and every configured model has an AVAILABLE
/// version. Unavailable naming the models that have none otherwise.
pub fn ready(st: &AppState) -> Result<(), ApiError> {
    // Every model unloaded through the repository API: ready, as Triton's explicit mode is,
    // so that a load can still reach the server behind a readiness probe. (Asked before the
    // models are borrowed: the manager changes them while holding its own lock.)
    let all_unloaded = st
        .control()
        .map(|c| c.repository())
        .is_some_and(|r| !r.is_empty() && r.iter().all(|(_, unloaded)| *unloaded));
    let models = st.models();
    if models.is_empty() && all_unloaded {
        return Ok(());
    }
    if models.is_empty() {
        return Err(ApiError::Unavailable(
            "no model is served (none is configured yet, or every one was unloaded)".into(),
        ));
    }
    let waiting: Vec<&str> = models
        .iter()
        .filter(|(_, entry)| entry.latest_available().is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if !waiting.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "no version is AVAILABLE yet of: {}",
            waiting.join(", ")
        )));
    }
    Ok(())
}
