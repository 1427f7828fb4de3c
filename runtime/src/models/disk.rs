//! What a model's base path holds: numbered version folders, each with its ONNX file, and a
//! fingerprint of each folder's files to tell a finished copy from one still being written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::layout::{onnx_file_in, version_dirs};
use crate::error::ModelError;

/// Every file of a version folder (path inside it, size in bytes, modification time): equal
/// in two polls means the copy has settled.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// A version folder that holds an ONNX file.
#[derive(Clone, Debug)]
pub struct VersionDir {
    /// The model file (`model.onnx`, or the folder's only `.onnx`).
    pub model: PathBuf,
    pub fingerprint: Fingerprint,
}

/// Folders deeper than this inside a version folder are not fingerprinted.
const MAX_DEPTH: usize = 4;

/// The numbered version folders under `base` (other names ignored, as TF Serving does). A
/// version without a usable ONNX file yet (being copied, or empty) maps to None.
///
/// Errors: `base` is missing or unreadable.
pub fn scan(base: &Path) -> Result<BTreeMap<u64, Option<VersionDir>>, ModelError> {
    Ok(version_dirs(base)?
        .into_iter()
        .map(|(version, dir)| {
            let found = onnx_file_in(&dir).ok().map(|model| {
                let mut fingerprint = Vec::new();
                walk(&dir, Path::new(""), 0, &mut fingerprint);
                fingerprint.sort();
                VersionDir { model, fingerprint }
            });
            (version, found)
        })
        .collect())
}

fn walk(root: &Path, rel: &Path, depth: usize, out: &mut Fingerprint) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(root, &rel, depth + 1, out);
            }
        } else {
            out.push((rel, meta.len(), meta.modified().ok()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versions_and_sees_files_change() {
        let base = std::env::temp_dir().join(format!("onnx-serving-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for v in ["1", "2", "notes"] {
            std::fs::create_dir_all(base.join(v)).unwrap();
        }
        std::fs::write(base.join("1/model.onnx"), b"x").unwrap();
        let found = scan(&base).unwrap();
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(found[&2].is_none(), "no ONNX file yet");
        let before = found[&1].clone().unwrap().fingerprint;
        std::fs::write(base.join("1/model.onnx"), b"xy").unwrap();
        let after = scan(&base).unwrap()[&1].clone().unwrap().fingerprint;
        assert_ne!(before, after);
        assert!(scan(&base.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
