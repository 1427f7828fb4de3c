//! `builder images`: the images builder made, with their CPU and model labels.

use anyhow::Result;

use super::{image_name, LABEL_PREFIX};
use crate::docker;

/// List the images builder made, with their CPU and model labels.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Prints the table (or JSON with `--json`).
    pub async fn run(self) -> Result<()> {
        print!("{}", images(self.json).await?);
        Ok(())
    }
}

/// `builder images`: what we made, with the labels that matter.
pub async fn images(json: bool) -> Result<String> {
    let docker = docker::connect().await?;
    let images = docker::list_ours(&docker).await?;
    if json {
        let rows: Vec<serde_json::Value> = images
            .iter()
            .map(|i| serde_json::json!({"id": i.id, "tags": i.repo_tags, "size": i.size, "labels": i.labels}))
            .collect();
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    let mut out = format!(
        "{:<44} {:<8} {:<12} {:<6} {:<14} {:>9}\n",
        "IMAGE", "ROLE", "TARGET CPU", "LEVEL", "MODEL", "SIZE"
    );
    for image in &images {
        let label = |k: &str| {
            image
                .labels
                .get(&format!("{LABEL_PREFIX}{k}"))
                .cloned()
                .unwrap_or_else(|| "-".into())
        };
        let name = image_name(image);
        out.push_str(&format!(
            "{:<44} {:<8} {:<12} {:<6} {:<14} {:>7.1}MB\n",
            name,
            label("role"),
            label("target-cpu"),
            label("x86-64-level"),
            label("model-name"),
            image.size as f64 / 1e6
        ));
    }
    if images.is_empty() {
        out.push_str("(none: `builder devel` makes the first)\n");
    }
    Ok(out)
}
