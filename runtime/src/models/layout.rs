//! TF Serving's model layout: `<base>/<name>/<version>/model.onnx`, numeric versions, latest wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// The model file chosen to serve, and its version number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVersion {
    pub version: u64,
    pub path: PathBuf,
}

/// Finds the highest numeric version folder under `model_dir` and the ONNX file inside it.
/// Folders whose names are not numbers (`.git`, `tmp-upload`) are ignored, as TF Serving does.
pub fn find_latest_version(model_dir: &Path) -> Result<ModelVersion, ModelError> {
    let (version, dir) =
        version_dirs(model_dir)?
            .pop_last()
            .ok_or_else(|| ModelError::NoVersion {
                path: model_dir.to_owned(),
            })?;
    Ok(ModelVersion {
        version,
        path: onnx_file_in(&dir)?,
    })
}

/// The numbered version folders under `model_dir`, by version (other names are ignored, as
/// TF Serving does). Errors: `model_dir` is missing or unreadable.
pub fn version_dirs(model_dir: &Path) -> Result<BTreeMap<u64, PathBuf>, ModelError> {
    if !model_dir.is_dir() {
        return Err(ModelError::MissingBase {
            path: model_dir.to_owned(),
        });
    }
    let io = |source| ModelError::Io {
        path: model_dir.to_owned(),
        source,
    };
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(model_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            found.insert(version, entry.path());
        }
    }
    Ok(found)
}

/// `model.onnx`, or else the only `*.onnx` file of the folder.
pub fn onnx_file_in(dir: &Path) -> Result<PathBuf, ModelError> {
    let preferred = dir.join("model.onnx");
    if preferred.is_file() {
        return Ok(preferred);
    }
    let io = |source| ModelError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            found.push(path);
        }
    }
    match found.len() {
        0 => Err(ModelError::NoOnnxFile {
            path: dir.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(ModelError::AmbiguousOnnxFile {
            path: dir.to_owned(),
        }),
    }
}

/// The folder holding the version sub-folders: `<base>/<name>`, or `<base>` itself when it
/// already holds numbered versions (TF Serving's `--model_base_path=/models/resnet` style).
pub fn model_dir(base: &Path, name: &str) -> PathBuf {
    let nested = base.join(name);
    if nested.is_dir() || !has_version_folders(base) {
        nested
    } else {
        base.to_owned()
    }
}

fn has_version_folders(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.path().is_dir()
                && e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u64>().is_ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("onnx-serving-layout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn picks_highest_numeric_version_and_ignores_other_folders() {
        let dir = tmp("versions");
        for v in ["1", "10", "2", "not-a-version"] {
            std::fs::create_dir_all(dir.join(v)).unwrap();
            std::fs::write(dir.join(v).join("model.onnx"), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.join("99999999999999999999999")).unwrap(); // overflows u64: ignored
        let found = find_latest_version(&dir).unwrap();
        assert_eq!(found.version, 10);
        assert_eq!(found.path, dir.join("10").join("model.onnx"));
    }

    #[test]
    fn accepts_a_single_onnx_file_with_another_name() {
        let dir = tmp("single");
        std::fs::create_dir_all(dir.join("3")).unwrap();
        std::fs::write(dir.join("3").join("resnet50.onnx"), b"x").unwrap();
        assert_eq!(
            find_latest_version(&dir).unwrap().path,
            dir.join("3").join("resnet50.onnx")
        );
    }

    #[test]
    fn explains_what_is_missing() {
        let dir = tmp("missing");
        let err = find_latest_version(&dir.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("/models/resnet/1/model.onnx"),
            "{err}"
        );
        let err = find_latest_version(&dir).unwrap_err().to_string();
        assert!(err.contains("no model version found"), "{err}");
        std::fs::create_dir_all(dir.join("1")).unwrap();
        let err = find_latest_version(&dir).unwrap_err().to_string();
        assert!(err.contains("holds no .onnx file"), "{err}");
        std::fs::write(dir.join("1").join("a.onnx"), b"x").unwrap();
        std::fs::write(dir.join("1").join("b.onnx"), b"x").unwrap();
        let err = find_latest_version(&dir).unwrap_err().to_string();
        assert!(err.contains("several .onnx files"), "{err}");
    }
}
