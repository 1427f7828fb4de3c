//! The serving images' engines: which a flavour carries, and the pinned onnxruntime library
//! (scripts/onnxruntime.env) the builder puts into the build context.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::sha256_hex;

/// Which engines a serving image carries. The runtime binary always has tract; onnxruntime is a
/// library the image carries or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engines {
    /// tract and onnxruntime; the runtime keeps the faster per model (`--engine auto`).
    All,
    /// tract and onnxruntime, the runtime told to use onnxruntime (`--engine onnxruntime`).
    Onnxruntime,
    /// tract only: no onnxruntime library (an image ~11 MB smaller when compressed).
    Tract,
}

impl Engines {
    pub fn carries_onnxruntime(self) -> bool {
        self != Engines::Tract
    }

    /// The runtime's `--engine` in the image.
    pub fn runtime_engine(self) -> &'static str {
        match self {
            Engines::All => "auto",
            Engines::Onnxruntime => "onnxruntime",
            Engines::Tract => "tract",
        }
    }
}

/// The pinned onnxruntime library (scripts/onnxruntime.env): version and sha256.
pub struct OrtPin {
    pub version: String,
    pub lib_sha256: String,
}

impl OrtPin {
    pub fn read(workspace: &Path) -> Result<OrtPin> {
        let path = workspace.join("scripts/onnxruntime.env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
                .map(str::to_string)
                .with_context(|| format!("{} has no {key}=", path.display()))
        };
        Ok(OrtPin {
            version: value("ORT_VERSION")?,
            lib_sha256: value("ORT_LIB_SHA256")?,
        })
    }
}

/// The host's copy of the pinned library, checked against its sha256.
pub fn onnxruntime_library(
    workspace: &Path,
    given: Option<&Path>,
    pin: &OrtPin,
) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::var_os("ONNX_SERVING_ONNXRUNTIME_LIBRARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join(".cache/onnxruntime/libonnxruntime.so.1")),
    };
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read onnxruntime's library {}: fetch it with `make onnxruntime`, or build a \
             tract-only image with --engine tract",
            path.display()
        )
    })?;
    let digest = sha256_hex(&bytes);
    if digest != pin.lib_sha256 {
        bail!(
            "{} has sha256 {digest}, not the pinned {} (onnxruntime {}, scripts/onnxruntime.env): \
             delete it and run `make onnxruntime`",
            path.display(),
            pin.lib_sha256,
            pin.version
        );
    }
    Ok(path)
}
