//! The serving images' engines: which a flavour carries, and the pinned onnxruntime library
//! (scripts/onnxruntime.env) and OpenVINO libraries (scripts/openvino.env) the builder puts into
//! the build context.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::sha256_hex;

/// Which engines a serving image carries. The runtime binary always has tract; onnxruntime and
/// OpenVINO are libraries the image carries or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engines {
    /// tract and onnxruntime; the runtime keeps the faster per model (`--engine auto`).
    All,
    /// tract and onnxruntime, the runtime told to use onnxruntime (`--engine onnxruntime`).
    Onnxruntime,
    /// tract only: no onnxruntime library (an image ~11 MB smaller when compressed).
    Tract,
    /// tract, onnxruntime and OpenVINO's CPU plugin (~93 MB more; tag suffix -openvino): what a
    /// model optimized to bf16 needs (`--optimize` considers bf16 only for this flavour). The
    /// runtime serves each model on the engine it was optimized for, else the fastest.
    Openvino,
}

impl Engines {
    pub fn carries_onnxruntime(self) -> bool {
        self != Engines::Tract
    }

    pub fn carries_openvino(self) -> bool {
        self == Engines::Openvino
    }

    /// The runtime's `--engine` in the image.
    pub fn runtime_engine(self) -> &'static str {
        match self {
            Engines::All | Engines::Openvino => "auto",
            Engines::Onnxruntime => "onnxruntime",
            Engines::Tract => "tract",
        }
    }

    /// The engines' names, for the image's label: `tract,onnxruntime`.
    pub fn names(self) -> &'static str {
        match self {
            Engines::Tract => "tract",
            Engines::All | Engines::Onnxruntime => "tract,onnxruntime",
            Engines::Openvino => "tract,onnxruntime,openvino",
        }
    }
}

/// The pinned OpenVINO wheel (scripts/openvino.env): its version, sha256 and the libraries taken
/// from it.
pub struct OvPin {
    pub version: String,
    pub wheel_sha256: String,
    /// File names in the wheel's `openvino/libs/`, the C API's first.
    pub libs: Vec<String>,
}

impl OvPin {
    pub fn read(workspace: &Path) -> Result<OvPin> {
        let path = workspace.join("scripts/openvino.env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .with_context(|| format!("{} has no {key}=", path.display()))
        };
        Ok(OvPin {
            version: value("OV_VERSION")?,
            wheel_sha256: value("OV_WHEEL_SHA256")?,
            libs: value("OV_LIBS")?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        })
    }
}

/// The host's folder of OpenVINO libraries (`make openvino`), checked to come from the pinned
/// wheel (the stamp `fetch_openvino.sh` writes) and to hold every library the pin lists.
pub fn openvino_libraries(workspace: &Path, given: Option<&Path>, pin: &OvPin) -> Result<PathBuf> {
    let dir = match given {
        Some(p) => p.to_owned(),
        None => workspace.join(".cache/openvino/lib"),
    };
    // The stamp: the wheel's sha256, then the files taken from it.
    let stamp = std::fs::read_to_string(dir.join(".wheel-sha256")).unwrap_or_default();
    if stamp.split_whitespace().next() != Some(pin.wheel_sha256.as_str()) {
        bail!(
            "{} does not hold the libraries of the pinned openvino {} wheel \
             (scripts/openvino.env): run `make openvino`",
            dir.display(),
            pin.version
        );
    }
    if let Some(missing) = pin.libs.iter().find(|f| !dir.join(f).is_file()) {
        bail!(
            "{} lacks {missing}: delete the folder and run `make openvino`",
            dir.display()
        );
    }
    Ok(dir)
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
