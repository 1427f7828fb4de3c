//! The servable status both APIs report (`GET /v1/models/<name>`, ModelService.GetModelStatus).

use super::{
    check_name, check_version, check_version_number, unknown_label, ModelSpec, VersionChoice,
};
use crate::error::ApiError;
use crate::state::{AppState, ModelState};

/// TF Serving's servable states (`ModelVersionStatus.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServableState {
    Loading,
    Available,
    End,
}

impl ServableState {
    /// The state's name in TF Serving's API ("AVAILABLE").
    pub fn name(self) -> &'static str {
        match self {
            ServableState::Loading => "LOADING",
            ServableState::Available => "AVAILABLE",
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
}

/// The status of the versions `spec` names (all of them for [`VersionChoice::Latest`]).
pub fn status(st: &AppState, spec: &ModelSpec<'_>) -> Result<Vec<VersionStatus>, ApiError> {
    check_name(st, spec)?;
    if let VersionChoice::Label(label) = spec.version {
        return Err(unknown_label(st, label));
    }
    let status = match st.model_state() {
        ModelState::Available(model) => {
            check_version(st, &model, spec.version)?;
            VersionStatus {
                version: model.version,
                state: ServableState::Available,
                error: None,
                engine: Some(model.engine.name()),
            }
        }
        ModelState::Loading { version } => {
            check_version_number(st, version, spec.version)?;
            VersionStatus {
                version,
                state: ServableState::Loading,
                error: None,
                engine: None,
            }
        }
        ModelState::Failed { version, message } => {
            if let Some(v) = version {
                check_version_number(st, v, spec.version)?;
            }
            VersionStatus {
                version: version.unwrap_or(match spec.version {
                    VersionChoice::Number(n) => n,
                    _ => 0,
                }),
                state: ServableState::End,
                error: Some(message),
                engine: None,
            }
        }
    };
    Ok(vec![status])
}
