//! The builder's commands: one module a subcommand, each with its flags (`Args`) and its `run`,
//! and the library functions behind them that the CLI and the end-to-end tests share. Here: what
//! they share (image tags and labels, the default base image, the network option).

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::ImageSummary;

use crate::cpu::TargetCpu;
use crate::docker::ROLE_LABEL;
pub use crate::engines::{Engines, OrtPin, OvPin};

pub mod bench;
pub mod clean;
pub mod cpu;
pub mod devel;
pub mod images;
pub mod k8s;
pub mod optimize;
pub mod push;
pub mod serve_image;

pub use bench::{bench, BenchOptions, BenchReport};
pub use clean::clean;
pub use devel::{devel, DevelOptions, Lto};
pub use images::images;
pub use optimize::{optimize, Choice, GateArgs};
pub use serve_image::{serve_image, ServeImageOptions};

/// The base image `make base-image` creates (debootstrap + docker import): no registry needed.
pub const DEFAULT_BASE_IMAGE: &str = "onnx-serving-base:bookworm";
const LABEL_PREFIX: &str = "io.onnx-serving.";

/// An image a command built.
#[derive(Debug)]
pub struct Built {
    /// Its tag.
    pub tag: String,
    /// Its id (`sha256:…`).
    pub id: String,
    /// How long the build took.
    pub seconds: f64,
}

/// `$USER`, as the article names its images `$USER/tensorflow-serving`; lowercase, as Docker
/// repository names must be.
pub fn user_namespace() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let clean: String = user
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if clean.is_empty() {
        "local".into()
    } else {
        clean
    }
}

/// `$USER/onnx-serving-devel`, with `-<target>` for anything but a native build.
pub fn default_devel_tag(target: &TargetCpu) -> String {
    match target {
        TargetCpu::Native => format!("{}/onnx-serving-devel", user_namespace()),
        other => format!("{}/onnx-serving-devel-{}", user_namespace(), other.name()),
    }
}

/// `me/onnx-serving` + `resnet` → `me/onnx-serving-resnet` (a `:tag` stays at the end).
fn with_model_suffix(serving_tag: &str, model: &str) -> String {
    match serving_tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => format!("{name}-{model}:{tag}"),
        _ => format!("{serving_tag}-{model}"),
    }
}

/// The serving tag that goes with a devel tag: `…/onnx-serving-devel[-x]` → `…/onnx-serving[-x]`.
pub fn serving_tag_for(devel_tag: &str) -> String {
    let (name, tag) = match devel_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (devel_tag, None),
    };
    let serving = name.replacen("onnx-serving-devel", "onnx-serving", 1);
    let serving = if serving == name {
        format!("{name}-serving")
    } else {
        serving
    };
    match tag {
        Some(t) => format!("{serving}:{t}"),
        None => serving,
    }
}

/// `--network`: `default` leaves the choice to the daemon (`None`); any other value is the network.
fn network_mode(network: String) -> Option<String> {
    (network != "default").then_some(network)
}

/// The labels every image we build gets: our role label and the OCI annotations.
fn common_labels(workspace: &Path, role: &str, title: &str) -> HashMap<String, String> {
    let revision = std::process::Command::new("git")
        .current_dir(workspace)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    HashMap::from([
        (ROLE_LABEL.to_string(), role.to_string()),
        (
            "org.opencontainers.image.title".to_string(),
            title.to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("org.opencontainers.image.revision".to_string(), revision),
        (
            "org.opencontainers.image.created".to_string(),
            rfc3339_now(),
        ),
        (
            "org.opencontainers.image.source".to_string(),
            env!("CARGO_PKG_REPOSITORY").to_string(),
        ),
    ])
}

/// UTC now as RFC 3339, without a date crate (days-to-civil, Howard Hinnant's algorithm).
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An image id without `sha256:`, cut to 12 characters as `docker images` shows it.
fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// An image's first tag, else its short id.
fn image_name(image: &ImageSummary) -> String {
    image
        .repo_tags
        .first()
        .cloned()
        .unwrap_or_else(|| short(&image.id).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let user = user_namespace();
        assert_eq!(
            default_devel_tag(&TargetCpu::Native),
            format!("{user}/onnx-serving-devel")
        );
        assert_eq!(
            default_devel_tag(&TargetCpu::Portable),
            format!("{user}/onnx-serving-devel-portable")
        );
        assert_eq!(serving_tag_for("me/onnx-serving-devel"), "me/onnx-serving");
        assert_eq!(
            serving_tag_for("me/onnx-serving-devel-portable"),
            "me/onnx-serving-portable"
        );
        assert_eq!(
            serving_tag_for("reg:5000/me/onnx-serving-devel:v2"),
            "reg:5000/me/onnx-serving:v2"
        );
        assert_eq!(serving_tag_for("mine"), "mine-serving");
    }

    #[test]
    fn embedded_model_images_get_their_own_tag() {
        assert_eq!(
            with_model_suffix("me/onnx-serving", "resnet"),
            "me/onnx-serving-resnet"
        );
        assert_eq!(
            with_model_suffix("localhost:5000/me/onnx-serving:v1", "resnet"),
            "localhost:5000/me/onnx-serving-resnet:v1"
        );
    }

    #[test]
    fn created_label_is_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(
            now.starts_with("20") && now.ends_with('Z') && now.as_bytes()[10] == b'T',
            "{now}"
        );
    }
}
