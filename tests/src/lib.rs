//! Helpers for the end-to-end tests: the Docker daemon (or a visible reason to skip), the
//! workspace, test models, and a minimal HTTP client.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;
use builder::commands::{self, DevelOptions, Lto, DEFAULT_BASE_IMAGE};
use builder::cpu::TargetCpu;
use builder::docker::ServingPorts;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CNN test models (`make test-models`).
pub fn test_models() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models"))
}

/// The Python interpreter with grpcio for the gRPC clients (`make test` sets
/// `ONNX_SERVING_TEST_PYTHON` to its venv), else the venv where `make` puts it.
pub fn python() -> PathBuf {
    std::env::var_os("ONNX_SERVING_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv/bin/python"))
}

/// A connected daemon, or `None` after printing why the Docker tests are skipped. `.ci/run`
/// starts dockerd, so there a skip means the daemon could not be started at all.
pub async fn docker_or_skip(test: &str) -> Option<bollard::Docker> {
    match builder::docker::connect().await {
        Ok(docker) => Some(docker),
        Err(e) => {
            eprintln!("SKIPPED {test}: no Docker daemon could be reached ({e:#})");
            None
        }
    }
}

pub use builder::probe::{base64, http};

pub const DEVEL_TAG: &str = "onnx-serving-e2e/devel";

/// One test at a time talks to the daemon: the corrupt-model test counts images and containers,
/// which another test's build would change under it.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The devel image, built once for all tests of this binary (a cold build compiles tract).
pub fn devel_image() -> &'static Result<String, String> {
    static DEVEL: OnceLock<Result<String, String>> = OnceLock::new();
    DEVEL.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let docker = builder::docker::connect()
                .await
                .map_err(|e| format!("{e:#}"))?;
            if !builder::docker::image_exists(&docker, DEFAULT_BASE_IMAGE)
                .await
                .map_err(|e| e.to_string())?
            {
                let status = std::process::Command::new("bash")
                    .arg(workspace().join("scripts/make-base-image.sh"))
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err("make-base-image.sh failed".to_string());
                }
            }
            let opts = DevelOptions {
                tag: Some(DEVEL_TAG.into()),
                target_cpu: TargetCpu::Native,
                // The tests check behaviour, not size: `local` builds the devel image in about
                // half the time of the default `fat` (which a CI run with it took to 50 minutes).
                lto: Lto::Local,
                base_image: DEFAULT_BASE_IMAGE.into(),
                network: Some("host".into()),
                no_cache: false,
                verbose: false,
            };
            let (built, _) = commands::devel(&opts).await.map_err(|e| format!("{e:#}"))?;
            Ok(built.tag)
        })
    })
}

/// One test at a time, the daemon (or a skip when there is none) and the devel image.
pub async fn prepare(test: &str) -> Option<(tokio::sync::MutexGuard<'static, ()>, Docker, String)> {
    let serial = SERIAL.lock().await;
    let docker = docker_or_skip(test).await?;
    let devel = tokio::task::spawn_blocking(devel_image)
        .await
        .expect("the devel build thread")
        .as_ref()
        .expect("devel image builds")
        .clone();
    Some((serial, docker, devel))
}

/// Removes the container when the test ends, passed or not.
pub struct ContainerGuard<'a> {
    pub docker: &'a Docker,
    pub id: String,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = rt.block_on(docker.remove_container(&id, Some(options)));
            }
        })
        .join();
    }
}

/// `docker run -p 127.0.0.1::8501 -p 127.0.0.1::8500 [--mount …] [-e …] image`, removed when
/// the guard drops.
pub async fn run_published<'a>(
    docker: &'a Docker,
    image: &str,
    bind: Option<(&std::path::Path, &str)>,
    env: &[&str],
) -> (ContainerGuard<'a>, ServingPorts) {
    let (id, ports) = builder::docker::run_serving(docker, image, bind, env)
        .await
        .expect("the serving container starts");
    (ContainerGuard { docker, id }, ports)
}

/// Polls the model's status until AVAILABLE; fails with the container's logs after 90 s.
pub async fn wait_available(port: u16, model: &str, docker: &Docker, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok((200, status)) = http(port, "GET", &format!("/v1/models/{model}"), "") {
            if status["model_version_status"][0]["state"] == "AVAILABLE" {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "model '{model}' never became AVAILABLE:\n{}",
                builder::docker::container_logs(docker, id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
