//! The models served: which models and versions the server holds (`state`, TF Serving's servable
//! life cycle), kept in step with the model config (`config`, `reload`) and the version folders
//! on disk (`layout`, `disk`) under each model's version policy (`policy`) by the model manager
//! (`manager`), which loads each version (`load`) with an engine and a worker pool (while
//! serving, after a child process survived loading it: `check`), and takes models in and out
//! of service on request (`repository`).

pub mod check;
pub mod config;
pub mod disk;
pub mod layout;
pub mod load;
mod manager;
pub mod optimization;
pub mod policy;
mod reload;
mod repository;
pub mod state;

pub use config::ModelConfig;
pub use layout::{find_latest_version, model_dir, ModelVersion};
pub use load::{load_and_warm_up, log_loaded, PoolOptions};
pub use manager::{Manager, ManagerOptions};
pub use optimization::Optimization;
pub use reload::{follow_config_file, wait_until_available};
pub use state::{
    AppState, Limits, ModelControl, ModelEntry, Models, Servable, ServableState, ServedModel,
    VersionStatus,
};
