//! The workspace's crates vendored on the host (`cargo vendor`) for the devel image's offline
//! build: done once per `Cargo.lock`, atomically, with errors that say which disk to free.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::context::sha256_hex;

/// Vendors the workspace's crates (`cargo vendor --locked`) into `dest`, unless `dest` already
/// holds the crates of this `Cargo.lock` (a stamp file records its sha256).
///
/// Written beside `dest` first (`<dest>.partial`) and renamed into place once complete, so an
/// interrupted or failed run (no network, a full disk) never leaves a half-filled `dest`; the
/// partial copy is removed whatever happens. Errors: `cargo` missing, `cargo vendor` failing
/// (said with its stderr and, for a full disk, which filesystem to free).
pub fn vendor_crates(workspace: &Path, dest: &Path) -> Result<()> {
    let lock = std::fs::read(workspace.join("Cargo.lock"))
        .context("Cargo.lock is missing: the workspace must be locked")?;
    let digest = sha256_hex(&lock);
    if std::fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s.trim() == digest) {
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| disk_error(e, parent, &format!("cannot create {}", parent.display())))?;
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let guard = RemoveOnDrop(partial.clone());
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the leftover {}", partial.display()))?;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args(["vendor", "--locked", "--versioned-dirs", "--quiet"])
        .arg(&partial)
        .output()
        .context("cannot run `cargo vendor`; is cargo installed (make setup)?")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if is_disk_full(stderr) {
            bail!(
                "the disk holding {} is full: `cargo vendor` could not copy the crates ({}). Free \
                 some space there (df -h {0}) and run the command again; the partial copy was removed",
                parent.display(),
                stderr.lines().last().unwrap_or(stderr)
            );
        }
        bail!("`cargo vendor` failed (it needs crates.io, or a filled cargo cache): {stderr}");
    }
    let done = std::fs::write(partial.join(STAMP), &digest).and_then(|()| {
        match std::fs::remove_dir_all(dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => std::fs::rename(&partial, dest),
        }
    });
    done.map_err(|e| {
        disk_error(
            e,
            parent,
            &format!("cannot put the crates in {}", dest.display()),
        )
    })?;
    drop(guard);
    Ok(())
}

/// The stamp file in a vendor folder: the sha256 of the `Cargo.lock` it was vendored from.
const STAMP: &str = ".onnx-serving-lock-sha256";

/// Removes a folder when dropped (after a successful rename there is nothing left to remove).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ENOSPC` or `EDQUOT` as a tool words it in its stderr.
fn is_disk_full(stderr: &str) -> bool {
    [
        "No space left on device",
        "os error 28",
        "Disk quota exceeded",
        "os error 122",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

fn disk_error(e: std::io::Error, parent: &Path, what: &str) -> anyhow::Error {
    if is_disk_full(&e.to_string()) {
        anyhow::anyhow!(
            "{what}: the disk holding {} is full ({e}). Free some space there (df -h {0}) and run \
             the command again",
            parent.display()
        )
    } else {
        anyhow::anyhow!("{what}: {e}")
    }
}
