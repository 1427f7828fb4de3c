//! `builder push`: an image built here, tagged under a registry's name and pushed; prints the
//! digest reference a cluster should pull (`registry/me/onnx-serving@sha256:…`).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::user_namespace;
use crate::docker;

/// Push a serving image to a registry (tag it REGISTRY/NAME:TAG, push with progress) and print
/// the reference by digest, which `builder k8s --image-ref` takes. Credentials are the Docker
/// daemon's (`docker login` first for a private registry).
#[derive(clap::Args)]
pub struct Args {
    /// The image to push [default: $USER/onnx-serving].
    image: Option<String>,
    /// The registry, HOST[:PORT] (registry.example.com, 127.0.0.1:5000).
    #[arg(long)]
    registry: String,
    /// The registry speaks plain HTTP. Only for a registry on loopback (localhost, 127.0.0.0/8,
    /// ::1), which the Docker daemon already reaches without TLS; any other registry needs TLS
    /// (or the daemon's `insecure-registries`, configured outside this tool).
    #[arg(long)]
    insecure: bool,
}

impl Args {
    /// Pushes and prints `registry/name@sha256:…`.
    pub async fn run(self) -> Result<()> {
        let image = self
            .image
            .unwrap_or_else(|| format!("{}/onnx-serving", user_namespace()));
        let pushed = push(&image, &self.registry, self.insecure).await?;
        eprintln!("Pushed {} ({})", pushed.tagged, pushed.digest);
        println!("{}", pushed.reference());
        Ok(())
    }
}

/// What a push left in the registry.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `registry/name` (the repository).
    pub repository: String,
    /// `registry/name:tag`.
    pub tagged: String,
    /// The manifest's digest, `sha256:…`.
    pub digest: String,
}

impl Pushed {
    /// `registry/name@sha256:…`: the reference that pulls exactly what was pushed.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// Tags `image` under `registry` and pushes it. Errors: no such image, `--insecure` for a
/// registry off loopback, no registry answering there, or the daemon's push error.
pub async fn push(image: &str, registry: &str, insecure: bool) -> Result<Pushed> {
    let host = registry
        .trim_end_matches('/')
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    if host.is_empty() || host.contains('/') {
        bail!(
            "--registry {registry}: give HOST[:PORT], e.g. 127.0.0.1:5000 or registry.example.com"
        );
    }
    if insecure {
        if !is_loopback(host) {
            bail!(
                "--insecure is only for a registry on loopback; {host} needs TLS (or add it to \
                 the Docker daemon's insecure-registries yourself, knowing what that exposes)"
            );
        }
        check_plain_registry(host)?;
    }
    let docker = docker::connect().await?;
    if !docker::image_exists(&docker, image).await? {
        bail!("no image {image} here: build it with `builder serve-image` (or name another)");
    }
    let (name, tag) = split_tag(image);
    // Drop a registry the name may already carry (a first part with '.' or ':', or localhost).
    let path = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    };
    let repository = format!("{host}/{path}");
    docker::tag_image(&docker, image, &repository, tag).await?;
    eprintln!("Pushing {image} as {repository}:{tag}");
    let digest = docker::push_image(&docker, &repository, tag).await?;
    Ok(Pushed {
        tagged: format!("{repository}:{tag}"),
        repository,
        digest,
    })
}

/// `me/x:v1` → (`me/x`, `v1`); no tag → `latest`. A `:` before the last `/` is a port.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `GET /v2/` over plain HTTP: a registry answers 200 or 401 (auth needed), with the
/// `Docker-Distribution-API-Version` header. Anything else is not a registry.
fn check_plain_registry(host: &str) -> Result<()> {
    let address = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("{host}: not a HOST:PORT this machine can resolve"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("no registry answers at {host}: is it running?"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut head = String::new();
    let _ = stream.take(8192).read_to_string(&mut head);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let is_registry = head
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version");
    if !(status == "200" || status == "401") || !is_registry {
        bail!(
            "{host} is not a plain-HTTP container registry (GET /v2/ answered '{}')",
            head.lines().next().unwrap_or("nothing")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_loopback() {
        assert_eq!(split_tag("me/onnx-serving"), ("me/onnx-serving", "latest"));
        assert_eq!(split_tag("me/x:v2"), ("me/x", "v2"));
        assert_eq!(split_tag("reg:5000/me/x"), ("reg:5000/me/x", "latest"));
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.com", "10.0.0.1:5000", "192.168.1.2"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[tokio::test]
    async fn insecure_is_refused_off_loopback() {
        let e = push("me/x", "registry.example.com", true)
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("only for a registry on loopback"),
            "{e:#}"
        );
    }
}
