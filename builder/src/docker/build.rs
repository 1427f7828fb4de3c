//! Image builds: the request, the streamed build with its progress display, and the cleanup
//! of a failed or interrupted build's layers.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// What to build: `docker build -f dockerfile -t tag [--target …] [--build-arg …] [--label …]
/// [--network …] [--no-cache]`, over a tar context given to `build`.
pub struct BuildRequest<'a> {
    /// The Dockerfile's path inside the context.
    pub dockerfile: &'a str,
    /// The image's tag.
    pub tag: &'a str,
    /// The Dockerfile stage to build (all of it when `None`).
    pub target: Option<&'a str>,
    /// `ARG` values.
    pub build_args: HashMap<String, String>,
    /// Labels the image gets.
    pub labels: HashMap<String, String>,
    /// `host` lets RUN steps reach the package mirrors where bridge networking has no route.
    pub network: Option<&'a str>,
    /// Rebuild every layer instead of reusing the cache.
    pub no_cache: bool,
    /// Print every line of build output, not only steps and errors.
    pub verbose: bool,
}

/// Builds an image from a tar context, showing progress; returns the image id. A failed step
/// arrives inside the stream: its last output lines are part of the error.
pub async fn build(docker: &Docker, req: &BuildRequest<'_>, context: Vec<u8>) -> Result<String> {
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(req.dockerfile)
        .t(req.tag)
        .rm(true)
        .forcerm(true)
        .nocache(req.no_cache)
        .buildargs(&req.build_args)
        .labels(&req.labels);
    if let Some(network) = req.network {
        options = options.networkmode(network);
    }
    if let Some(target) = req.target {
        options = options.target(target);
    }
    let context_mb = context.len() as f64 / 1e6;
    let progress = Progress::new(req.verbose);
    progress.line(&format!(
        "Sending build context ({context_mb:.1} MB) for {}",
        req.tag
    ));
    let mut stream = docker.build_image(
        options.build(),
        None,
        Some(bollard::body_full(context.into())),
    );
    let mut tail: Vec<String> = Vec::new();
    let mut layers: Vec<String> = Vec::new();
    let mut image_id = None;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = tokio::signal::ctrl_c() => {
                progress.finish();
                drop(stream);
                remove_dangling(docker, &layers).await;
                bail!("build of {} interrupted; the daemon stops it and removes its intermediate containers", req.tag);
            }
        };
        let Some(item) = item else { break };
        let failure = match item {
            Err(e) => Some(e.to_string()),
            Ok(info) => match info.error_detail.and_then(|d| d.message) {
                Some(message) => Some(message),
                None => {
                    let text = strip_ansi(info.stream.as_deref().unwrap_or_default());
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        progress.line(line);
                        if let Some(id) = layer_id(line) {
                            layers.push(id.to_string());
                        }
                        tail.push(line.to_string());
                        if tail.len() > 40 {
                            tail.remove(0);
                        }
                    }
                    if let Some(id) = info.aux {
                        image_id = id.id.or(image_id);
                    }
                    None
                }
            },
        };
        if let Some(message) = failure {
            progress.finish();
            drop(stream);
            if daemon_gone(docker).await {
                // Stopped, restarted or crashed: the stream broke, or the step's container was
                // killed on the way down. No cleanup can reach it, and the build output says
                // nothing about why.
                bail!(
                    "the Docker daemon stopped during the build of {} ({message}); start it \
                     again (systemctl start docker, or `make setup`) and rerun the command: the \
                     steps that finished are cached, and the daemon removes the interrupted \
                     step's container when it starts",
                    req.tag
                );
            }
            remove_dangling(docker, &layers).await;
            bail!(
                "building {} failed: {message}\n--- last build output ---\n{}",
                req.tag,
                tail.join("\n")
            );
        }
    }
    progress.finish();
    image_id.ok_or_else(|| {
        anyhow!(
            "the build of {} ended without an image:\n{}",
            req.tag,
            tail.join("\n")
        )
    })
}

/// Whether the daemon stopped answering: a ping now, and another half a second later (a daemon
/// on its way down kills the build's container before it stops answering).
async fn daemon_gone(docker: &Docker) -> bool {
    if docker.ping().await.is_err() {
        return true;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    docker.ping().await.is_err()
}

/// The classic builder colours a step's stderr (`ESC[91m` … `ESC[0m`); keep only the text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC '[' parameters, ended by a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// ` ---> 80458530c59b`: the layer a classic-builder step produced.
fn layer_id(line: &str) -> Option<&str> {
    line.strip_prefix(" ---> ")
        .filter(|id| id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

/// After a failed build the classic builder keeps the last step's layer as an untagged `<none>`
/// image. Remove the untagged layers this build went through; a non-forced remove refuses any
/// layer that another image still depends on, so shared cache stays.
async fn remove_dangling(docker: &Docker, layers: &[String]) {
    let options = RemoveImageOptionsBuilder::default()
        .force(false)
        .noprune(false)
        .build();
    for id in layers.iter().rev() {
        let untagged = docker
            .inspect_image(id)
            .await
            .is_ok_and(|i| i.repo_tags.unwrap_or_default().is_empty());
        if untagged {
            let _ = docker.remove_image(id, Some(options.clone()), None).await;
        }
    }
}

/// A spinner with the current step, elapsed time and last output line on a terminal; plain step
/// lines otherwise (CI logs). `verbose` prints every line.
struct Progress {
    bar: Option<ProgressBar>,
    verbose: bool,
    step: std::sync::Mutex<String>,
}

impl Progress {
    fn new(verbose: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            verbose,
            step: std::sync::Mutex::new(String::new()),
        }
    }

    fn line(&self, line: &str) {
        let is_step = line.starts_with("Step ") || line.starts_with("Sending build context");
        if is_step {
            if let Ok(mut step) = self.step.lock() {
                *step = line.chars().take(70).collect();
            }
        }
        match &self.bar {
            Some(bar) => {
                if self.verbose {
                    bar.println(line);
                }
                if is_step {
                    bar.set_prefix(self.step.lock().map(|s| s.clone()).unwrap_or_default());
                    bar.set_message("");
                } else {
                    bar.set_message(line.trim().chars().take(100).collect::<String>());
                }
            }
            None if self.verbose
                || is_step
                || line.trim_start().starts_with("Compiling runtime") =>
            {
                eprintln!("{line}")
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_loses_its_colour_codes_only() {
        assert_eq!(
            strip_ansi("\u{1b}[91merror: \u{1b}[0m\n\u{1b}[91m/models/x does not exist\n\u{1b}[0m"),
            "error: \n/models/x does not exist\n"
        );
        assert_eq!(
            strip_ansi("Step 1/3 : FROM scratch"),
            "Step 1/3 : FROM scratch"
        );
        assert_eq!(layer_id(" ---> 80458530c59b"), Some("80458530c59b"));
        assert_eq!(layer_id(" ---> Running in 80458530c59b"), None);
    }
}
