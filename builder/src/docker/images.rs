//! Images: whether one exists, its labels, the ones we made, removing one.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;

use super::ROLE_LABEL;

/// Whether the daemon has the image `name` (a 404 is `false`, any other failure an error).
pub async fn image_exists(docker: &Docker, name: &str) -> Result<bool> {
    match docker.inspect_image(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect image {name}")),
    }
}

/// The labels of the image `name`.
pub async fn image_labels(docker: &Docker, name: &str) -> Result<HashMap<String, String>> {
    let image = docker
        .inspect_image(name)
        .await
        .with_context(|| format!("cannot inspect image {name}"))?;
    Ok(image.config.and_then(|c| c.labels).unwrap_or_default())
}

/// Our images: (id, tags, labels, size).
pub async fn list_ours(docker: &Docker) -> Result<Vec<bollard::models::ImageSummary>> {
    let filters = HashMap::from([("label".to_string(), vec![ROLE_LABEL.to_string()])]);
    let options = ListImagesOptionsBuilder::default()
        .all(false)
        .filters(&filters)
        .build();
    docker
        .list_images(Some(options))
        .await
        .context("cannot list images")
}

/// Removes an image by id, forced (its tags go with it).
pub async fn remove_image(docker: &Docker, id: &str) -> Result<()> {
    let options = RemoveImageOptionsBuilder::default()
        .force(true)
        .noprune(false)
        .build();
    docker
        .remove_image(id, Some(options), None)
        .await
        .with_context(|| format!("cannot remove image {id}"))?;
    Ok(())
}
