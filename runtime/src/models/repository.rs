//! The model repository extension's model control (Triton's explicit load and unload, KServe
//! V2's `repository/models/{m}/load` and `unload`) on top of the model config.
//!
//! The repository is the model config (`--model_config_file`, or `--model_name` and
//! `--model_base_path`): load and unload take a model the config names in and out of service;
//! they do not add models or change a model's base path, policy or labels. A config applied
//! later (the file re-read, or HandleReloadConfigRequest) wins: it serves every model it
//! names, including ones unloaded before.

use tracing::info;

use super::state::ModelControl;
use super::Manager;
use crate::error::ApiError;
use crate::proto::tensorflow::serving::ModelServerConfig;

impl Manager {
    /// The config's models, in its order, each with whether the repository API unloaded it.
    pub fn repository(&self) -> Vec<(String, bool)> {
        let inner = self.lock();
        inner
            .configs
            .iter()
            .map(|c| (c.name.clone(), inner.unloaded.contains(&c.name)))
            .collect()
    }

    /// Serves `name` again if it was unloaded (its versions load in the background, as at
    /// start); a model already served is left as it is.
    ///
    /// Errors: NOT_FOUND when the config does not name the model.
    pub fn load(&self, name: &str) -> Result<(), ApiError> {
        let mut inner = self.lock();
        known(&inner.configs, name)?;
        if inner.unloaded.remove(name) {
            info!("Model '{name}' loaded through the repository API");
        }
        drop(inner);
        self.wake();
        Ok(())
    }

    /// Takes `name` out of service at once: new requests get NOT_FOUND, the ones in flight
    /// finish on the versions they hold, which are then dropped.
    ///
    /// Errors: NOT_FOUND when the config does not name the model.
    pub fn unload(&self, name: &str) -> Result<(), ApiError> {
        let mut inner = self.lock();
        known(&inner.configs, name)?;
        if inner.unloaded.insert(name.to_string()) {
            info!("Model '{name}' unloaded through the repository API: its versions go once their requests finish");
        }
        // Before the lock is released, so that a poll scanned before this cannot serve it again.
        self.state()
            .update_if(|models| models.remove(name).is_some());
        drop(inner);
        self.wake();
        Ok(())
    }
}

fn known(configs: &[super::ModelConfig], name: &str) -> Result<(), ApiError> {
    if configs.iter().any(|c| c.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    Err(ApiError::NotFound(format!(
        "model '{name}' is not in the model repository, which is the model config ({}); add it to --model_config_file to serve it",
        names.join(", ")
    )))
}

impl ModelControl for Manager {
    fn reload(&self, config: &ModelServerConfig) -> Result<Vec<String>, ApiError> {
        super::reload::apply(self, config)
    }

    fn repository(&self) -> Vec<(String, bool)> {
        Manager::repository(self)
    }

    fn load(&self, name: &str) -> Result<(), ApiError> {
        Manager::load(self, name)
    }

    fn unload(&self, name: &str) -> Result<(), ApiError> {
        Manager::unload(self, name)
    }
}
