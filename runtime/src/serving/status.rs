//! The servable status both APIs report (`GET /v1/models/<name>`, ModelService.GetModelStatus).

use super::{available, label_version, model_entry, ModelSpec, VersionChoice};
use crate::error::ApiError;
use crate::models::{AppState, VersionStatus};

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
