//! `builder clean`: removes the images builder made.

use anyhow::Result;
use bollard::Docker;

use super::image_name;
use crate::docker::{self, ROLE_LABEL};

/// Remove the images builder made.
#[derive(clap::Args)]
pub struct Args {
    /// Also remove the base image made by `make base-image`.
    #[arg(long)]
    all: bool,
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    /// Removes (or, with `--dry-run`, lists) the images, printing one line each.
    pub async fn run(self) -> Result<()> {
        for name in clean(self.all, self.dry_run).await? {
            println!(
                "{} {name}",
                if self.dry_run {
                    "would remove"
                } else {
                    "removed"
                }
            );
        }
        Ok(())
    }
}

/// `builder clean`: removes serving images, then devel images (and the base with `all`).
pub async fn clean(all: bool, dry_run: bool) -> Result<Vec<String>> {
    let docker = docker::connect().await?;
    remove_ours(&docker, all, dry_run).await
}

async fn remove_ours(docker: &Docker, all: bool, dry_run: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for role in ["temporary", "serving", "devel", "base"] {
        if role == "base" && !all {
            continue;
        }
        for image in docker::list_ours(docker).await? {
            if image.labels.get(ROLE_LABEL).map(String::as_str) != Some(role) {
                continue;
            }
            let name = image_name(&image);
            if !dry_run {
                docker::remove_image(docker, &image.id).await?;
            }
            removed.push(name);
        }
    }
    Ok(removed)
}
