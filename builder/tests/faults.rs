//! Faults around the builder, on real daemons and real filesystems: the Docker daemon stopping
//! mid-build, and a full disk while the builder writes the crates of its build context.
//!
//! Each test skips (saying why) without what it needs: root (to mount a tmpfs, to start a
//! daemon of its own), `dockerd`, and for the daemon test the base image (`make base-image`).
//! The daemon test runs a private `dockerd` (own socket, data root, containerd namespaces and
//! bridge), so stopping it disturbs no other test or the host's daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ sits in the workspace")
        .to_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A folder under the system temp dir, removed (after unmounting anything on it) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("osf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Whatever is still mounted under it (the test's tmpfs, a daemon's overlays), deepest
        // first.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| Path::new(p).starts_with(&self.0))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_while_vendoring_says_so_and_leaves_no_partial_copy() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let scratch = Scratch::new("full");
    let disk = scratch.0.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    // 8 MiB: the vendored crates take hundreds.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    let err = builder::vendor::vendor_crates(&workspace(), &disk.join("vendor"))
        .expect_err("8 MiB cannot hold the vendored crates");
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("the disk holding {} is full", disk.display()))
            && message.contains("df -h")
            && message.contains("partial copy was removed"),
        "not a clear full-disk message: {message}"
    );
    let left: Vec<_> = std::fs::read_dir(&disk).unwrap().flatten().collect();
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
}

/// A `dockerd` of this test's own, stopped (SIGTERM, as `systemctl stop docker` does) on drop.
struct PrivateDaemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDaemon {
    fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn start(dir: &Path) -> Result<PrivateDaemon, String> {
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        // A bridge of its own: without one (`--bridge none`) dockerd deletes the host's
        // docker0, and with the default it would take docker0 over. The build's RUN steps use
        // the host network (the toolchain comes from Debian's mirror).
        let bridge = bridge_name();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let made = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return Err(format!("cannot create the bridge {bridge} (ip link add)"));
        }
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            // Its own namespaces, should it share a system containerd with the host's daemon.
            .args([
                "--containerd-namespace",
                "onnx-serving-faults",
                "--containerd-plugins-namespace",
                "onnx-serving-faults-plugins",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let daemon = PrivateDaemon {
            dir: dir.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if daemon.docker(&["info"]).is_ok() {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(format!(
            "the private dockerd did not answer in 60 s: {}",
            std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
        ))
    }

    /// `docker -H <socket> args...`: its stdout, or its stderr as the error.
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(self.socket())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// SIGTERM, then wait for the daemon to exit (it stops its containers first).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &bridge_name()])
            .output();
    }
}

/// The private daemon's bridge interface (at most 15 characters).
fn bridge_name() -> String {
    format!("osf{}", std::process::id() % 100_000)
}

/// The builder process, killed if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_stopping_mid_build_ends_the_builder_with_one_message_and_no_container() {
    let base = builder::commands::DEFAULT_BASE_IMAGE;
    let found = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok();
    if !is_root() || !found("dockerd", "--version") || !found("ip", "-V") {
        eprintln!("SKIPPED: a private dockerd needs root, dockerd (make setup) and ip (iproute2)");
        return;
    }
    let has_base = Command::new("docker")
        .args(["image", "inspect", base])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_base {
        eprintln!("SKIPPED: the base image {base} is not in the Docker daemon (make base-image)");
        return;
    }
    let host_bridge = Path::new("/sys/class/net/docker0").exists();
    let scratch = Scratch::new("daemon");
    let mut daemon = PrivateDaemon::start(&scratch.0).expect("a private dockerd");
    let load = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "docker save {base} | docker -H {} load -q",
            daemon.socket()
        ))
        .output()
        .expect("docker save | docker load");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );

    // A devel build: vendoring, the context, then minutes of cargo; stop the daemon once
    // cargo compiles.
    let mut build = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_builder"))
            .args([
                "devel",
                "--tag",
                "onnx-serving-faults/devel",
                "--network",
                "host",
                "--verbose",
            ])
            .current_dir(workspace())
            .env("DOCKER_HOST", daemon.socket())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the builder starts"),
    );
    let (lines, seen) = mpsc::channel();
    let stderr = build.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push(line);
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut so_far = Vec::new();
    loop {
        match seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("Compiling ") => break,
            Ok(line) => so_far.push(line),
            Err(e) => panic!(
                "cargo did not start compiling in the build ({e}); the builder said:\n{}\ndockerd said:\n{}",
                so_far.join("\n"),
                std::fs::read_to_string(scratch.0.join("dockerd.log")).unwrap_or_default()
            ),
        }
    }
    daemon.stop();

    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = build.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "the builder still runs 60 s after the daemon stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = reader.join().unwrap();
    let errors: Vec<&String> = output.iter().filter(|l| l.starts_with("error:")).collect();
    assert!(!status.success(), "the builder succeeded without a daemon");
    assert!(
        !output.iter().any(|l| l.contains("panicked")),
        "the builder panicked: {output:#?}"
    );
    assert_eq!(errors.len(), 1, "not one error: {output:#?}");
    eprintln!("the builder said: {}", errors[0]);
    assert!(
        errors[0].contains("the Docker daemon stopped during the build")
            && errors[0].contains("start it again"),
        "not a clear message: {}",
        errors[0]
    );

    // The host's daemon is untouched (its bridge, above all).
    assert!(
        Command::new("docker")
            .args(["network", "inspect", "bridge"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "the host daemon lost its bridge network"
    );
    if Path::new("/sys/class/net/docker0").exists() != host_bridge {
        panic!("the host's docker0 changed while the private daemon ran");
    }

    // Started again on the same data root: no container of the interrupted build is left. The
    // restarted daemon stops the step's container and then removes it, which on a loaded
    // machine can take a moment after it answers: wait up to 60 s for that.
    let daemon = PrivateDaemon::start(&scratch.0).expect("the private dockerd restarts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut containers = daemon.docker(&["ps", "-aq"]).expect("docker ps");
    while !containers.trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        containers = daemon.docker(&["ps", "-aq"]).expect("docker ps");
    }
    assert_eq!(
        containers.trim(),
        "",
        "the interrupted build left containers: {}",
        daemon.docker(&["ps", "-a"]).unwrap_or_default()
    );
}
