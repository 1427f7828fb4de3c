//! The Docker daemon through bollard: connection with a useful error, streamed builds with
//! progress, our labels, listing and removing what we made, and one-shot containers.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListImagesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// Label on everything we create, so `builder images` / `builder clean` find it.
pub const ROLE_LABEL: &str = "io.onnx-serving.role";

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

pub async fn image_exists(docker: &Docker, name: &str) -> Result<bool> {
    match docker.inspect_image(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect image {name}")),
    }
}

pub async fn image_labels(docker: &Docker, name: &str) -> Result<HashMap<String, String>> {
    let image = docker
        .inspect_image(name)
        .await
        .with_context(|| format!("cannot inspect image {name}"))?;
    Ok(image.config.and_then(|c| c.labels).unwrap_or_default())
}

pub struct BuildRequest<'a> {
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub target: Option<&'a str>,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    /// `host` lets RUN steps reach the package mirrors where bridge networking has no route.
    pub network: Option<&'a str>,
    pub no_cache: bool,
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

/// The host ports a serving container's APIs are published on (loopback).
#[derive(Clone, Copy, Debug)]
pub struct ServingPorts {
    /// 8501 in the container: REST.
    pub rest: u16,
    /// 8500 in the container: gRPC.
    pub grpc: u16,
}

/// Starts a serving container of `image` as `docker run --read-only --cap-drop ALL
/// --security-opt no-new-privileges -p 127.0.0.1::8501 -p 127.0.0.1::8500
/// [--mount type=bind,source=…,target=…,readonly] [-e …]` does (the runtime writes nothing and
/// needs no capability), labelled temporary; returns its id and the host ports 8501 and 8500
/// got. The caller removes it (`remove_container`).
pub async fn run_serving(
    docker: &Docker,
    image: &str,
    bind: Option<(&std::path::Path, &str)>,
    env: &[&str],
) -> Result<(String, ServingPorts)> {
    let mounts = bind.map(|(source, target)| {
        vec![Mount {
            typ: Some(MountType::BIND),
            source: Some(source.to_string_lossy().into_owned()),
            target: Some(target.into()),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    let body = ContainerCreateBody {
        image: Some(image.into()),
        env: Some(env.iter().map(|e| e.to_string()).collect()),
        labels: Some(HashMap::from([(ROLE_LABEL.into(), "temporary".into())])),
        exposed_ports: Some(vec!["8501/tcp".into(), "8500/tcp".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from(["8501/tcp", "8500/tcp"].map(|port| {
                (
                    port.to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )
            }))),
            mounts,
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .with_context(|| format!("cannot create a container from {image}"))?
        .id;
    let started = async {
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .with_context(|| format!("cannot start a container of {image}"))?;
        let ports = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await?
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        let published = |port: &str| {
            ports
                .get(port)
                .cloned()
                .flatten()
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("the container has no published port {port}"))
        };
        Ok::<_, anyhow::Error>(ServingPorts {
            rest: published("8501/tcp")?,
            grpc: published("8500/tcp")?,
        })
    }
    .await;
    match started {
        Ok(ports) => Ok((id, ports)),
        Err(e) => {
            remove_container(docker, &id).await;
            Err(e)
        }
    }
}

/// A container's stdout and stderr so far (empty if it cannot be read).
pub async fn container_logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(id, Some(options));
    let mut out = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        out.push_str(&chunk.to_string());
    }
    out
}

/// Removes a container, running or not; errors are ignored (it may be gone already).
pub async fn remove_container(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

/// Runs `cmd` in a fresh container of `image` to completion; returns (exit code, output).
/// The container is removed whatever happens.
pub async fn run_once(docker: &Docker, image: &str, cmd: &[&str]) -> Result<(i64, String)> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![]),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        labels: Some(HashMap::from([(
            ROLE_LABEL.to_string(),
            "temporary".to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .with_context(|| format!("cannot create a container from {image}"))?;
    let id = created.id;
    let result = async {
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        let mut wait =
            docker.wait_container(&id, Some(WaitContainerOptionsBuilder::default().build()));
        let mut code = 0;
        while let Some(item) = wait.next().await {
            match item {
                Ok(r) => code = r.status_code,
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
        let mut logs = docker.logs(
            &id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut out = String::new();
        while let Some(chunk) = logs.next().await {
            out.push_str(&chunk?.to_string());
        }
        Ok((code, out))
    }
    .await;
    let _ = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    result
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
