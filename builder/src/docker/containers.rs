//! Containers: a serving container on loopback ports, its logs, removal, and one-shot commands.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::ROLE_LABEL;

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
    remove_container(docker, &id).await;
    result
}
