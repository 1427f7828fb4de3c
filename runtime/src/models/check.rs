//! Loading a model version in a child process first (`runtime check-model`), so that an engine
//! that dies on it takes down the child, not the server and the models it serves.
//!
//! Panics are caught where an engine is called (`engine::catch_panic`; release builds unwind).
//! What no unwinding catches is caught here: an abort (a C++ `std::terminate` in onnxruntime, a
//! failed allocation or a stack overflow in Rust) or a segmentation fault. The manager runs this
//! before it loads a version while serving (a new version, a config reload, the repository
//! API's load); a crash makes that version END with the signal and the child's last words. At
//! start-up there is nothing else to protect: a model that fails to load stops the server anyway.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::engine::{self, EngineChoice};

/// The outcome of loading a model file in a child process.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildCheck {
    /// The child loaded and ran it, or refused it with an error (which the load in this
    /// process will report in its own words): loading it here cannot crash the way it could.
    Survived(Duration),
    /// The child died: the engine crashed on this model. The text says how, for the version's
    /// END status.
    Crashed(String),
    /// No child could be started (the executable is gone, a process limit): the load goes on
    /// unchecked, with this reason logged.
    Unavailable(String),
}

/// Runs `runtime check-model FILE --engine ENGINE` (the same executable, the same onnxruntime
/// library as this process) on the model file `path` and waits for it. Blocking: call it from
/// a blocking thread.
pub fn check_in_child(path: &Path, engine: EngineChoice) -> ChildCheck {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return ChildCheck::Unavailable(format!("this executable's path: {e}")),
    };
    let mut command = Command::new(exe);
    command
        .arg("check-model")
        .arg(path)
        .arg("--engine")
        .arg(engine.to_string());
    if engine != EngineChoice::Tract {
        if let Ok(lib) = engine::onnxruntime::library() {
            command.arg("--onnxruntime_library").arg(&lib.path);
        }
    }
    let started = Instant::now();
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => return ChildCheck::Unavailable(format!("starting `runtime check-model`: {e}")),
    };
    match killed_by(&output.status) {
        None => ChildCheck::Survived(started.elapsed()),
        Some(signal) => {
            let said = last_lines(&output.stderr, 3);
            ChildCheck::Crashed(format!(
                "the engine crashed loading it in a child process (`runtime check-model` was \
                 killed by signal {signal}{}){}",
                signal_name(signal).map_or(String::new(), |n| format!(", {n}")),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ))
        }
    }
}

/// The signal that ended the child, if one did.
fn killed_by(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
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
