//! Model config changes after start: `--model_config_file_poll_wait_seconds` and
//! ModelService.HandleReloadConfigRequest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

use super::config::ModelConfig;
use super::state::{AppState, Servable};
use super::{config, Manager};
use crate::error::ApiError;
use crate::proto::tensorflow::serving::ModelServerConfig;

/// Checks a config a client sent (HandleReloadConfigRequest) and serves it from now on.
/// Errors: INVALID_ARGUMENT for a config wrong in itself or naming a missing folder, and
/// those of [`Manager::reload`].
pub(super) fn apply(
    manager: &Manager,
    config: &ModelServerConfig,
) -> Result<Vec<String>, ApiError> {
    let refused =
        |(_, e): (usize, String)| ApiError::BadRequest(format!("the model config is refused: {e}"));
    let configs = config::check(config).map_err(refused)?;
    config::check_folders(&configs).map_err(refused)?;
    manager.reload(configs)
}

/// Refuses a config whose version labels would point at a version that is not AVAILABLE, as TF
/// Serving's `UpdateModelVersionLabelMap` does: with `allow_unavailable`
/// (`--allow_version_labels_for_unavailable_models`) only a new label, or one that keeps its
/// version, may point ahead. Checked against the versions served now, before anything changes.
pub(super) fn check_labels(
    state: &AppState,
    configs: &[ModelConfig],
    allow_unavailable: bool,
) -> Result<(), ApiError> {
    let models = state.models();
    for c in configs {
        let entry = models.get(&c.name);
        for (label, &version) in &c.labels {
            let current = entry.and_then(|e| e.labels.get(label)).copied();
            let may_point_ahead = allow_unavailable && current.is_none_or(|v| v == version);
            let available = entry
                .is_some_and(|e| matches!(e.versions.get(&version), Some(Servable::Available(_))));
            if !may_point_ahead && !available {
                return Err(ApiError::FailedPrecondition(format!(
                    "Request to assign label to version {version} of model {}, which is not currently available for inference",
                    c.name
                )));
            }
        }
    }
    Ok(())
}

/// Waits until each model of `names` has an AVAILABLE version (a config reload that adds them
/// answers then, as TF Serving's does), at most `limit`.
///
/// Errors: UNKNOWN, in TF Serving's words, naming the models whose versions failed to load
/// with their errors; UNAVAILABLE when `limit` passes first (they keep loading).
pub async fn wait_until_available(
    state: &AppState,
    names: &[String],
    limit: Duration,
) -> Result<(), ApiError> {
    let mut models = state.watch_models();
    let outcome = tokio::time::timeout(limit, async {
        loop {
            let failed = {
                let now = models.borrow_and_update();
                let mut pending = false;
                let mut failed = Vec::new();
                for name in names {
                    match now.get(name).map(|e| (e.latest_available(), e)) {
                        Some((Some(_), _)) => {}
                        Some((None, entry)) if settled(entry) => {
                            failed.extend(entry.versions.iter().filter_map(|(v, s)| match s {
                                Servable::End { error: Some(e) } => {
                                    Some(format!("{{name: {name} version: {v}}} due to error: {e}"))
                                }
                                _ => None,
                            }))
                        }
                        _ => pending = true,
                    }
                }
                (!pending).then_some(failed)
            };
            match failed {
                Some(failed) => return failed,
                None if models.changed().await.is_err() => return Vec::new(),
                None => {}
            }
        }
    })
    .await;
    match outcome {
        Ok(failed) if failed.is_empty() => Ok(()),
        Ok(failed) => Err(ApiError::Unknown(format!(
            "{} model(s) did not become available: {{{}}}",
            failed.len(),
            failed.join(", ")
        ))),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the model config is applied, but {} did not become available within {} ms; they keep loading (GetModelStatus shows their state)",
            names.join(", "),
            limit.as_millis()
        ))),
    }
}

/// Whether a model with no AVAILABLE version is done trying: nothing loading, and a version
/// that failed.
fn settled(entry: &super::ModelEntry) -> bool {
    !entry
        .versions
        .values()
        .any(|s| matches!(s, Servable::Loading))
        && entry
            .versions
            .values()
            .any(|s| matches!(s, Servable::End { error: Some(_) }))
}

/// Re-reads `file` every `every` (`--model_config_file_poll_wait_seconds`) and applies it when
/// its text changes. A config with an error is reported (with its line) and not applied: the
/// models served stay as they are.
pub async fn follow_config_file(manager: Arc<Manager>, file: PathBuf, every: Duration) {
    // The text last applied, and the last one refused (said once, tried again at each poll:
    // a config may fail only until the folder it names is copied in).
    let mut applied = std::fs::read_to_string(&file).ok();
    let mut refused: Option<String> = None;
    loop {
        tokio::time::sleep(every).await;
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                warn!("cannot read --model_config_file {}: {e}", file.display());
                continue;
            }
        };
        if applied.as_deref() == Some(text.as_str()) {
            continue;
        }
        let applied_now = config::read(&file)
            .map_err(|e| format!("--model_config_file {e}"))
            .and_then(|configs| {
                manager
                    .reload(configs)
                    .map_err(|e| format!("--model_config_file {}: {e}", file.display()))
            });
        match applied_now {
            Ok(_) => {
                applied = Some(text);
                refused = None;
            }
            Err(e) => {
                if refused.as_deref() != Some(text.as_str()) {
                    error!("{e}; the models served are unchanged");
                    refused = Some(text);
                }
            }
        }
    }
}
