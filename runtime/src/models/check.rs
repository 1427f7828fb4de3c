//! Loading a model version in a child process first (`runtime check-model`), so that an engine
//! that dies on it takes down the child, not the server and the models it serves.
//!
//! Panics are caught where an engine is called (`engine::catch_panic`; release builds unwind).
//! What no unwinding catches is caught here: an abort (a C++ `std::terminate` in onnxruntime, a
//! failed allocation or a stack overflow in Rust) or a segmentation fault. The manager runs this
//! before it loads a version while serving (a new version, a config reload, the repository
//! API's load); a crash makes that version END with the signal and the child's last words. At
//! start-up there is nothing else to protect: a model that fails to load stops the server anyway.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::engine::{self, EngineChoice};

/// How long the child may take to load and run a model before it is killed and the version
/// ends: far more than any model the server could serve takes to load (ResNet-50: ~1 s).
pub const CHILD_CHECK_TIMEOUT: Duration = Duration::from_secs(600);

/// The outcome of loading a model file in a child process.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildCheck {
    /// The child loaded and ran it, or refused it with an error (which the load in this
    /// process will report in its own words): loading it here cannot crash the way it could.
    Survived(Duration),
    /// The child died, or hung past [`CHILD_CHECK_TIMEOUT`]: the engine crashed on this model.
    /// The text says how, for the version's END status.
    Crashed(String),
    /// No child could be started (the executable is gone, a process limit): the load goes on
    /// unchecked, with this reason logged.
    Unavailable(String),
}

/// Runs `runtime check-model --engine ENGINE -- FILE` (the same executable, the same
/// onnxruntime library as this process) on the model file `path` and waits for it, at most
/// [`CHILD_CHECK_TIMEOUT`]. Blocking: call it from a blocking thread.
pub fn check_in_child(path: &Path, engine: EngineChoice) -> ChildCheck {
    // /proc/self/exe still opens the binary this process runs when its file was replaced or
    // deleted (an upgrade in place); current_exe would then name another file or none.
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => return ChildCheck::Unavailable(format!("this executable's path: {e}")),
        }
    };
    let mut command = Command::new(exe);
    command
        .arg("check-model")
        .arg("--engine")
        .arg(engine.to_string());
    if matches!(engine, EngineChoice::Auto | EngineChoice::Onnxruntime) {
        if let Ok(lib) = engine::onnxruntime::library() {
            command.arg("--onnxruntime_library").arg(&lib.path);
        }
    }
    if matches!(engine, EngineChoice::Auto | EngineChoice::Openvino) {
        if let Ok(lib) = engine::openvino::library() {
            command.arg("--openvino_library").arg(&lib.path);
        }
    }
    command
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return ChildCheck::Unavailable(format!("starting `runtime check-model`: {e}")),
    };
    // Drained beside the wait, so that a child that writes much cannot block on a full pipe.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < CHILD_CHECK_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let said = stderr
        .and_then(|reader| reader.join().ok())
        .map(|text| last_lines(&text, 3))
        .unwrap_or_default();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    let Some(status) = status else {
        return ChildCheck::Crashed(format!(
            "loading it in a child process (`runtime check-model`) did not finish within {} s \
             and was killed{said}; try `runtime check-model` on the file, or another `--engine`",
            CHILD_CHECK_TIMEOUT.as_secs()
        ));
    };
    match killed_by(&status) {
        None => {
            if !status.success() {
                // The load here reports the model's error in its own words; a usage error
                // would mean the check itself is broken, which the log should show.
                tracing::debug!("`runtime check-model` in a child exited with {status}{said}");
            }
            ChildCheck::Survived(started.elapsed())
        }
        Some(signal) => ChildCheck::Crashed(format!(
            "the engine crashed loading it in a child process (`runtime check-model` was \
             killed by signal {signal}{}){said}; the version stays END until its files change \
             (try another `--engine`, or `runtime check-model` on the file to see it happen)",
            signal_name(signal).map_or(String::new(), |n| format!(", {n}")),
        )),
    }
}

/// Loads version `version` of model `name` from `path` in a child process first
/// ([`check_in_child`]), logging how that went: the crash's description if the engine crashed
/// there, for the version's END status.
pub fn crash_in_child(
    name: &str,
    version: u64,
    path: &Path,
    engine: EngineChoice,
) -> Option<String> {
    match check_in_child(path, engine) {
        ChildCheck::Survived(took) => {
            info!(
                "Servable version {{name: {name} version: {version}}}: a child process loaded it \
                 without crashing in {:.0} ms",
                took.as_secs_f64() * 1000.0
            );
            None
        }
        ChildCheck::Crashed(crash) => Some(crash),
        ChildCheck::Unavailable(why) => {
            warn!("Servable version {{name: {name} version: {version}}}: loading it unchecked: no child process ({why})");
            None
        }
    }
}

/// The signal that ended the child, if one did.
#[cfg(unix)]
fn killed_by(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn killed_by(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL (out of memory?)",
        11 => "SIGSEGV",
        _ => return None,
    })
}

/// The last `n` non-empty lines of `text`, joined with " / ".
fn last_lines(text: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_words_of_a_child_are_its_last_lines() {
        assert_eq!(last_lines(b"a\n\nb\nc\nd\n", 3), "b / c / d");
        assert_eq!(last_lines(b"", 3), "");
        assert_eq!(signal_name(6), Some("SIGABRT"));
        assert_eq!(signal_name(64), None);
    }
}
