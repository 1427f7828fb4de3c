//! Model config changes after start: `--model_config_file_poll_wait_seconds` and
//! ModelService.HandleReloadConfigRequest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

use super::state::Reload;
use super::{config, Manager};
use crate::proto::tensorflow::serving::ModelServerConfig;

impl Reload for Manager {
    fn reload(&self, config: &ModelServerConfig) -> Result<(), String> {
        let configs = config::check(config).map_err(|(_, e)| e)?;
        config::check_folders(&configs).map_err(|(_, e)| e)?;
        Manager::reload(self, configs);
        Ok(())
    }
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
        match config::read(&file) {
            Ok(configs) => {
                manager.reload(configs);
                applied = Some(text);
                refused = None;
            }
            Err(e) => {
                if refused.as_deref() != Some(text.as_str()) {
                    error!("--model_config_file {e}; the models served are unchanged");
                    refused = Some(text);
                }
            }
        }
    }
}
