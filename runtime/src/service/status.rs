//! The servable status both APIs report (`GET /v1/models/<name>`, ModelService.GetModelStatus).

use super::{available, label_version, model_entry, ModelSpec, VersionChoice};
use crate::error::ApiError;
use crate::state::{AppState, Servable};

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
        VersionStatus {
            version,
            state,
            error,
            engine,
        }
    }
}

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
