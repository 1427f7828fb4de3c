//! Beyond one machine, as far as this one goes: the walk-through's model embedded in a serving
//! image, pushed to a real registry (Debian's docker-registry on loopback), removed here, pulled
//! back by digest; then run exactly as `builder k8s`'s Deployment and KServe ServingRuntime say
//! (args, env, user, read-only root, dropped capabilities, CPU and memory limits, probes), the
//! closest this machine gets to a kubelet, and asked about the cat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use builder::commands::k8s::{self, Options};
use builder::commands::{self, push, Engines, ServeImageOptions};
use e2e::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Debian's docker-registry on a free loopback port, storage in a temporary folder; killed and
/// removed on drop.
struct Registry {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("e2e-registry-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry runs (Debian package docker-registry; `make setup` installs it)",
            );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, dir, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cat() -> Vec<u8> {
    std::fs::read(test_models().join("cat.jpg")).expect("cat.jpg: run make test-models")
}

/// Posts the cat as b64 JPEG; asserts a cat class comes back.
fn sees_the_cat(port: u16, model: &str) {
    let request = json!({"instances": [{"b64": base64(&cat())}]}).to_string();
    let (status, answer) = http(
        port,
        "POST",
        &format!("/v1/models/{model}:predict"),
        &request,
    )
    .expect("predict answers");
    assert_eq!(status, 200, "{answer}");
    let p = &answer["predictions"][0];
    let class = p["classes"].as_i64().expect("classes");
    assert!(
        (281..=285).contains(&class),
        "the cat came out as {class}: {p}"
    );
}

/// `docker run` of a manifest's container: its image, args, env, user, read-only root,
/// capabilities, no-new-privileges, CPU and memory limits, its ports on loopback, and `binds`
/// (host folder → mountPath) for its volumes. Returns the guard and host port of `rest`.
async fn run_as_manifest<'a>(
    docker: &'a Docker,
    container: &Value,
    rest: u16,
    binds: &[(&Path, &str)],
) -> (ContainerGuard<'a>, u16) {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    let limits = &container["resources"]["limits"];
    let cpus = quantity(limits["cpu"].as_str().expect("cpu limit"));
    let memory = quantity(limits["memory"].as_str().expect("memory limit"));
    let env: Vec<String> = container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}={}",
                        e["name"].as_str().unwrap(),
                        e["value"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ports: Vec<u16> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
        .collect();
    let body = ContainerCreateBody {
        image: container["image"].as_str().map(str::to_string),
        cmd: Some(strings(&container["args"])),
        env: Some(env),
        user: Some(format!("{}:{}", sc["runAsUser"], sc["runAsGroup"])),
        labels: Some(HashMap::from([(
            builder::docker::ROLE_LABEL.to_string(),
            "temporary".to_string(),
        )])),
        exposed_ports: Some(ports.iter().map(|p| format!("{p}/tcp")).collect()),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            cap_drop: Some(strings(&sc["capabilities"]["drop"])),
            security_opt: Some(vec!["no-new-privileges".into()]),
            nano_cpus: Some((cpus * 1e9) as i64),
            memory: Some(memory as i64),
            port_bindings: Some(
                ports
                    .iter()
                    .map(|p| {
                        let binding = PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(String::new()),
                        };
                        (format!("{p}/tcp"), Some(vec![binding]))
                    })
                    .collect(),
            ),
            mounts: Some(
                binds
                    .iter()
                    .map(|(source, target)| Mount {
                        typ: Some(MountType::BIND),
                        source: Some(source.to_string_lossy().into_owned()),
                        target: Some(target.to_string()),
                        read_only: Some(true),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
        .await
        .expect("the manifest's container is created");
    let guard = ContainerGuard {
        docker,
        id: created.id.clone(),
    };
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("the manifest's container starts");
    let inspect = docker
        .inspect_container(
            &created.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let host_port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{rest}/tcp")).cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .and_then(|p| p.parse().ok())
        .expect("the REST port is published");
    (guard, host_port)
}

/// A Kubernetes quantity as a number: `1500m` → 1.5, `1Gi` → 2^30.
fn quantity(q: &str) -> f64 {
    for (suffix, scale) in [
        ("m", 1e-3),
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
    ] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * scale;
        }
    }
    q.parse().unwrap()
}

/// Runs the manifest's readiness probe command inside the container (`kubectl`'s exec probe).
async fn probe_passes(docker: &Docker, id: &str, probe: &Value) -> bool {
    let cmd: Vec<String> = probe["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let exec = docker
        .create_exec(
            id,
            bollard::exec::CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while output.next().await.is_some() {}
    }
    let inspect = docker.inspect_exec(&exec.id).await.unwrap();
    inspect.exit_code == Some(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_by_digest_pulled_back_and_run_as_the_manifests_say() {
    let Some((_serial, docker, devel)) =
        prepare("pushed_by_digest_pulled_back_and_run_as_the_manifests_say").await
    else {
        return;
    };
    let models = test_models();
    let tag = "onnx-serving-e2e/serving-efficientnet";
    let opts = ServeImageOptions {
        devel_image: Some(devel),
        tag: Some(tag.into()),
        embed_model: Some(models.join("efficientnet/1/model.onnx")),
        model_name: Some("efficientnet".into()),
        optimize: None,
        engine: Engines::All,
        onnxruntime_library: None,
        openvino_libraries: None,
        no_cache: false,
        verbose: false,
    };
    let built = commands::serve_image(&opts)
        .await
        .expect("serving image builds");
    let labels = builder::docker::image_labels(&docker, &built.tag)
        .await
        .unwrap();

    // Push, forget it here, pull it back by digest.
    let registry = Registry::start();
    let host = format!("127.0.0.1:{}", registry.port);
    let pushed = push::push(&built.tag, &host, true).await.expect("push");
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    builder::docker::remove_image(&docker, &built.id)
        .await
        .unwrap();
    assert!(!builder::docker::image_exists(&docker, &pushed.tagged)
        .await
        .unwrap());
    let reference = pushed.reference();
    let mut pull = docker.create_image(
        Some(
            CreateImageOptionsBuilder::default()
                .from_image(&reference)
                .build(),
        ),
        None,
        None,
    );
    while let Some(step) = pull.next().await {
        step.expect("pull by digest");
    }
    assert_eq!(
        builder::docker::image_labels(&docker, &reference)
            .await
            .unwrap(),
        labels,
        "the pulled image is the one built"
    );

    // The manifests for what was pulled, with a CPU limit of 1 on this 2-core machine.
    let options = Options {
        image_ref: reference.clone(),
        name: None,
        namespace: None,
        model_name: "model".into(),
        storage_uri: None,
        cpu: "1".into(),
        memory: "1Gi".into(),
        min_replicas: 1,
        max_replicas: 2,
        cluster_runtime: false,
    };
    let target = k8s::target(&labels, options).unwrap();
    let deployment = k8s::manifests::deployment(&target);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let (guard, port) = run_as_manifest(&docker, container, 8501, &[]).await;
    wait_available(port, "efficientnet", &docker, &guard.id).await;
    sees_the_cat(port, "efficientnet");
    assert!(probe_passes(&docker, &guard.id, &container["readinessProbe"]).await);
    let logs = builder::docker::container_logs(&docker, &guard.id).await;
    assert!(
        logs.contains("Cores for inference: 1") && logs.contains("CPU quota 1.00"),
        "the runtime must size itself to the manifest's CPU limit:\n{logs}"
    );
    drop(guard);

    // KServe's way: the ServingRuntime's container, {{.Name}} filled in as KServe does, the
    // model folder where the storage initializer puts it.
    let runtime = k8s::manifests::serving_runtime(&target);
    let container: Value = serde_json::from_str(
        &runtime["spec"]["containers"][0]
            .to_string()
            .replace("{{.Name}}", "cat-classifier"),
    )
    .unwrap();
    let (guard, port) = run_as_manifest(
        &docker,
        &container,
        k8s::manifests::KSERVE_REST_PORT,
        &[(&models.join("efficientnet"), "/mnt/models")],
    )
    .await;
    wait_available(port, "cat-classifier", &docker, &guard.id).await;
    sees_the_cat(port, "cat-classifier");
    assert!(probe_passes(&docker, &guard.id, &container["readinessProbe"]).await);
    drop(guard);
    let _ = builder::docker::remove_image(&docker, &reference).await;
    drop(registry);
}
