//! The Docker daemon through bollard, as a thin face: connection with a useful error (here),
//! streamed builds with progress (`build`), our labelled images (`images`), the containers we
//! run (`containers`) and registries (`push`).

use anyhow::{anyhow, Result};
use bollard::Docker;

mod build;
mod containers;
mod images;
mod push;

pub use build::{build, BuildRequest};
pub use containers::{container_logs, remove_container, run_once, run_serving, ServingPorts};
pub use images::{image_exists, image_labels, list_ours, remove_image};
pub use push::{push_image, tag_image};

/// Label on everything we create, so `builder images` / `builder clean` find it.
pub const ROLE_LABEL: &str = "io.onnx-serving.role";

/// Connects to the local daemon (`DOCKER_HOST` or the default socket) and pings it; an
/// unreachable daemon is an error that says how to fix it.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| daemon_error(&e.to_string()))?;
    docker
        .ping()
        .await
        .map_err(|e| daemon_error(&e.to_string()))?;
    Ok(docker)
}

fn daemon_error(cause: &str) -> anyhow::Error {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let fix = if cause.contains("ermission denied") {
        "add yourself to the docker group (sudo usermod -aG docker $USER, then log in again) or run as root"
    } else {
        "start it (systemctl start docker, or `make setup`, which starts dockerd), or point DOCKER_HOST at a running daemon"
    };
    anyhow!("cannot reach the Docker daemon at {host}: {cause}; {fix}")
}
