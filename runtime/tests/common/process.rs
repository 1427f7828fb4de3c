//! The real `runtime` binary as a child process, on free ports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::models;

pub const BIN: &str = env!("CARGO_BIN_EXE_runtime");

/// A running server; killed on drop so a failing test leaves no process behind.
pub struct Server {
    pub child: Child,
    /// The REST API's port.
    pub port: u16,
    /// The gRPC API's port.
    pub grpc_port: u16,
    pub log: mpsc::Receiver<String>,
    /// Every log line read so far.
    pub seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(model: &str, extra: &[&str]) -> Server {
        Server::start_with_env(model, extra, &[])
    }

    pub fn start_with_env(model: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "--rest_api_host",
                "127.0.0.1",
                "--rest_api_port",
                "0",
                "--port",
                "0",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("MODEL_NAME", model)
            .env("MODEL_BASE_PATH", models())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runtime");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            port: 0,
            grpc_port: 0,
            log,
            seen: Vec::new(),
        };
        let line = server.wait_for_log("Running gRPC ModelServer at ");
        server.grpc_port = port_in(&line, "Running gRPC ModelServer at ");
        let line = server.wait_for_log("Exporting HTTP/REST API at:");
        server.port = port_in(&line, "Exporting HTTP/REST API at:");
        server.wait_for_log("Successfully loaded servable version");
        server
    }

    pub fn wait_for_log(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The port of the address that follows `marker` in a log line.
fn port_in(line: &str, marker: &str) -> u16 {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port after {marker:?} in {line:?}"))
}
