//! Registries: tag an image under a registry's name and push it, with progress; the digest the
//! registry gave it comes back.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// Tags `image` as `repo:tag` (`docker tag`).
pub async fn tag_image(docker: &Docker, image: &str, repo: &str, tag: &str) -> Result<()> {
    let options = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .with_context(|| format!("cannot tag {image} as {repo}:{tag}"))
}

/// Pushes `repo:tag` (`docker push`), showing each layer's state, and returns the manifest's
/// digest (`sha256:…`) from the daemon's last status line (`<tag>: digest: sha256:… size: N`).
/// Errors carry the registry's message (unreachable, HTTPS expected, unauthorized).
pub async fn push_image(docker: &Docker, repo: &str, tag: &str) -> Result<String> {
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = docker.push_image(repo, Some(options), None);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] pushing {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut digest = None;
    let mut layers = 0usize;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow!("pushing {repo}:{tag} failed: {e}"))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            bail!("pushing {repo}:{tag} failed: {detail}");
        }
        let status = info.status.unwrap_or_default();
        if status == "Pushed" || status == "Layer already exists" {
            layers += 1;
            if bar.is_none() {
                eprintln!("  layer {layers}: {status}");
            }
        }
        if let Some(found) = status.split_whitespace().find(|w| w.starts_with("sha256:")) {
            if status.contains("digest:") {
                digest = Some(found.to_string());
            }
        }
        if let Some(bar) = &bar {
            let progress = info
                .progress_detail
                .and_then(|p| Some((p.current?, p.total?)))
                .map(|(c, t)| format!(" {:.1}/{:.1} MB", c as f64 / 1e6, t as f64 / 1e6))
                .unwrap_or_default();
            bar.set_message(format!(
                "{repo}:{tag}: {layers} layer(s) done; {status}{progress}"
            ));
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    digest.with_context(|| format!("the daemon pushed {repo}:{tag} but reported no digest"))
}
