//! The builder's commands, as library functions the CLI and the end-to-end tests share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::context::{self, find_workspace, sha256_hex};
use crate::cpu::{build_plan, BuildPlan, TargetCpu};
use crate::docker::{self, BuildRequest, ROLE_LABEL};
use crate::onnxruntime::onnxruntime_library;
pub use crate::onnxruntime::{Engines, OrtPin};

/// The base image `make base-image` creates (debootstrap + docker import): no registry needed.
pub const DEFAULT_BASE_IMAGE: &str = "onnx-serving-base:bookworm";
const LABEL_PREFIX: &str = "io.onnx-serving.";

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

/// Link-time optimization of the devel build. `local` (cargo's `lto = false`: each crate's
/// codegen units optimized together) serves as fast as `thin` and rebuilds a source change in
/// seconds; `off` (none at all) serves ~1.3x slower; `thin` and `fat` relink every crate (tract
/// included) after any source change. Figures in BENCHMARKS.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lto {
    #[default]
    Local,
    Off,
    Thin,
    Fat,
}

impl Lto {
    /// (cargo's `lto` value, codegen units)
    fn profile(self) -> (&'static str, &'static str) {
        match self {
            Lto::Local => ("false", "16"),
            Lto::Off => ("off", "16"),
            Lto::Thin => ("thin", "16"),
            Lto::Fat => ("fat", "1"),
        }
    }
}

pub struct DevelOptions {
    pub tag: Option<String>,
    pub target_cpu: TargetCpu,
    pub lto: Lto,
    pub base_image: String,
    pub network: Option<String>,
    pub no_cache: bool,
    pub verbose: bool,
}

#[derive(Debug)]
pub struct Built {
    pub tag: String,
    pub id: String,
    pub seconds: f64,
}

pub async fn devel(opts: &DevelOptions) -> Result<(Built, BuildPlan)> {
    let workspace = find_workspace()?;
    let docker = docker::connect().await?;
    let base_is_local = docker::image_exists(&docker, &opts.base_image).await?;
    if !base_is_local {
        if opts.base_image == DEFAULT_BASE_IMAGE {
            bail!(
                "the base image {DEFAULT_BASE_IMAGE} does not exist. Make it without any registry: `make base-image` \
                 (debootstrap + docker import, about a minute), or, where a registry is reachable, use an official \
                 image: --base-image debian:bookworm"
            );
        }
        eprintln!(
            "base image {} is not local: the daemon will try to pull it",
            opts.base_image
        );
    }
    let plan = build_plan(&opts.target_cpu, &crate::hostcpu::detect());
    let tag = opts
        .tag
        .clone()
        .unwrap_or_else(|| default_devel_tag(&opts.target_cpu));
    eprintln!(
        "Building {tag} for {} (RUSTFLAGS={})",
        opts.target_cpu.name(),
        plan.rustflags
    );

    let vendor = workspace.join(".cache").join("vendor");
    eprintln!("Vendoring crates into {}", vendor.display());
    context::vendor_crates(&workspace, &vendor)?;
    let ctx = context::devel_context(&workspace, &vendor)?;

    let mut labels = common_labels(&workspace, "devel", "onnx-serving-devel");
    labels.extend(cpu_labels(&plan));
    labels.insert(format!("{LABEL_PREFIX}base-image"), opts.base_image.clone());
    let (lto, codegen_units) = opts.lto.profile();
    labels.insert(format!("{LABEL_PREFIX}lto"), lto.to_string());
    let build_args = HashMap::from([
        ("BASE_IMAGE".to_string(), opts.base_image.clone()),
        ("RUSTFLAGS".to_string(), plan.rustflags.clone()),
        ("LTO".to_string(), lto.to_string()),
        ("CODEGEN_UNITS".to_string(), codegen_units.to_string()),
    ]);
    let started = Instant::now();
    let request = BuildRequest {
        dockerfile: "dockerfiles/Dockerfile.devel",
        tag: &tag,
        target: None,
        build_args,
        labels,
        network: opts.network.as_deref(),
        no_cache: opts.no_cache,
        verbose: opts.verbose,
    };
    let id = match docker::build(&docker, &request, ctx).await {
        Ok(id) => id,
        Err(e) if !base_is_local => {
            return Err(e.context(format!(
                "the base image {} is not local and could not be used: without a registry, make \
                 the local one with `make base-image` (and drop --base-image), or `docker load` it first",
                opts.base_image
            )))
        }
        Err(e) => return Err(e),
    };
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("Built {tag} ({}) in {seconds:.0} s", short(&id));
    Ok((Built { tag, id, seconds }, plan))
}

pub struct ServeImageOptions {
    pub devel_image: Option<String>,
    pub tag: Option<String>,
    pub embed_model: Option<PathBuf>,
    pub model_name: Option<String>,
    pub engine: Engines,
    /// onnxruntime's library on this host [default: `$ONNX_SERVING_ONNXRUNTIME_LIBRARY`, else
    /// `.cache/onnxruntime/libonnxruntime.so.1` in the workspace].
    pub onnxruntime_library: Option<PathBuf>,
    pub no_cache: bool,
    pub verbose: bool,
}

pub async fn serve_image(opts: &ServeImageOptions) -> Result<Built> {
    let workspace = find_workspace()?;
    let model = match &opts.embed_model {
        Some(path) => Some(check_model_file(path, opts.model_name.as_deref())?),
        None => None,
    };
    let docker = docker::connect().await?;
    let devel = opts
        .devel_image
        .clone()
        .unwrap_or_else(|| default_devel_tag(&TargetCpu::Native));
    if !docker::image_exists(&docker, &devel).await? {
        bail!("the devel image {devel} does not exist: build it first with `builder devel` (or name another with --devel-image)");
    }
    // An image with a model baked in does not replace the generic one of the same devel image;
    // nor does a tract-only one.
    let tag = opts.tag.clone().unwrap_or_else(|| {
        let base = match opts.engine {
            Engines::Tract => with_model_suffix(&serving_tag_for(&devel), "tract"),
            _ => serving_tag_for(&devel),
        };
        match &model {
            Some((name, _, _)) => with_model_suffix(&base, name),
            None => base,
        }
    });
    let ort = if opts.engine.carries_onnxruntime() {
        let pin = OrtPin::read(&workspace)?;
        let lib = onnxruntime_library(&workspace, opts.onnxruntime_library.as_deref(), &pin)?;
        Some((pin, lib))
    } else {
        None
    };

    let mut labels = common_labels(&workspace, "serving", "onnx-serving");
    for (k, v) in docker::image_labels(&docker, &devel).await? {
        let inherited = [
            "target-cpu",
            "x86-64-level",
            "rustflags",
            "instruction-sets",
            "base-image",
        ];
        if inherited
            .iter()
            .any(|name| k == format!("{LABEL_PREFIX}{name}"))
        {
            labels.insert(k, v);
        }
    }
    labels.insert(format!("{LABEL_PREFIX}devel-image"), devel.clone());
    if let Ok((0, version)) = docker::run_once(&docker, &devel, &["rustc", "--version"]).await {
        labels.insert(format!("{LABEL_PREFIX}rustc"), version.trim().to_string());
    }
    let engines = if ort.is_some() {
        "tract,onnxruntime"
    } else {
        "tract"
    };
    labels.insert(format!("{LABEL_PREFIX}engines"), engines.to_string());
    labels.insert(
        format!("{LABEL_PREFIX}engine"),
        opts.engine.runtime_engine().to_string(),
    );
    if let Some((pin, _)) = &ort {
        labels.insert(
            format!("{LABEL_PREFIX}onnxruntime-version"),
            pin.version.clone(),
        );
        labels.insert(
            format!("{LABEL_PREFIX}onnxruntime-sha256"),
            pin.lib_sha256.clone(),
        );
    }
    let mut build_args = HashMap::from([
        ("DEVEL_IMAGE".to_string(), devel.clone()),
        (
            "ENGINE".to_string(),
            opts.engine.runtime_engine().to_string(),
        ),
    ]);
    if let Some((name, _, digest)) = &model {
        labels.insert(format!("{LABEL_PREFIX}model-name"), name.clone());
        labels.insert(format!("{LABEL_PREFIX}model-sha256"), digest.clone());
        build_args.insert("EMBED_MODEL_NAME".to_string(), name.clone());
    }
    let ctx = context::serving_context(
        &workspace,
        model.as_ref().map(|(n, p, _)| (n.as_str(), p.as_path())),
        ort.as_ref()
            .map(|(pin, lib)| (lib.as_path(), pin.version.as_str())),
    )?;
    eprintln!(
        "Building {tag} ({engines}) from {devel}{}",
        model
            .as_ref()
            .map(|(n, p, _)| format!(" with model '{n}' ({})", p.display()))
            .unwrap_or_default()
    );
    let started = Instant::now();
    let request = BuildRequest {
        dockerfile: "dockerfiles/Dockerfile.serving",
        tag: &tag,
        target: Some(if model.is_some() {
            "serving-model"
        } else {
            "serving"
        }),
        build_args,
        labels,
        network: None,
        no_cache: opts.no_cache,
        verbose: opts.verbose,
    };
    let id = docker::build(&docker, &request, ctx).await.map_err(|e| {
        if model.is_some() {
            e.context("the model was rejected or the image could not be built (the runtime's own check-model output is above)")
        } else {
            e
        }
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let size = docker
        .inspect_image(&id)
        .await
        .ok()
        .and_then(|i| i.size)
        .unwrap_or(0);
    eprintln!(
        "Built {tag} ({}, {:.1} MB) in {seconds:.0} s",
        short(&id),
        size as f64 / 1e6
    );
    Ok(Built { tag, id, seconds })
}

/// The model file must exist and be a file; returns (model name, path, sha256).
fn check_model_file(path: &Path, name: Option<&str>) -> Result<(String, PathBuf, String)> {
    if !path.exists() {
        bail!("--embed-model {}: no such file", path.display());
    }
    if !path.is_file() {
        bail!(
            "--embed-model {}: not a file; give the .onnx file itself",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        bail!("--embed-model {}: the file is empty", path.display());
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => default_model_name(path),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("model name '{name}' must be letters, digits, '_', '-' or '.' (it is a URL path segment); set --model-name");
    }
    Ok((name, path.to_owned(), sha256_hex(&bytes)))
}

/// `…/resnet/1/model.onnx` → `resnet`; `squeezenet.onnx` → `squeezenet`.
fn default_model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let parent = path.parent();
    let version_dir = parent
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().parse::<u64>().is_ok());
    if stem == "model" && version_dir {
        if let Some(name) = parent.and_then(Path::parent).and_then(Path::file_name) {
            return name.to_string_lossy().to_string();
        }
    }
    if stem.is_empty() {
        "model".into()
    } else {
        stem
    }
}

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

fn cpu_labels(plan: &BuildPlan) -> HashMap<String, String> {
    HashMap::from([
        (format!("{LABEL_PREFIX}target-cpu"), plan.target.name()),
        (
            format!("{LABEL_PREFIX}x86-64-level"),
            plan.level.to_string(),
        ),
        (format!("{LABEL_PREFIX}rustflags"), plan.rustflags.clone()),
        (
            format!("{LABEL_PREFIX}instruction-sets"),
            plan.required.join(" "),
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

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// `builder images`: what we made, with the labels that matter.
pub async fn images(json: bool) -> Result<String> {
    let docker = docker::connect().await?;
    let images = docker::list_ours(&docker).await?;
    if json {
        let rows: Vec<serde_json::Value> = images
            .iter()
            .map(|i| serde_json::json!({"id": i.id, "tags": i.repo_tags, "size": i.size, "labels": i.labels}))
            .collect();
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    let mut out = format!(
        "{:<44} {:<8} {:<12} {:<6} {:<14} {:>9}\n",
        "IMAGE", "ROLE", "TARGET CPU", "LEVEL", "MODEL", "SIZE"
    );
    for image in &images {
        let label = |k: &str| {
            image
                .labels
                .get(&format!("{LABEL_PREFIX}{k}"))
                .cloned()
                .unwrap_or_else(|| "-".into())
        };
        let name = image
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| short(&image.id).to_string());
        out.push_str(&format!(
            "{:<44} {:<8} {:<12} {:<6} {:<14} {:>7.1}MB\n",
            name,
            label("role"),
            label("target-cpu"),
            label("x86-64-level"),
            label("model-name"),
            image.size as f64 / 1e6
        ));
    }
    if images.is_empty() {
        out.push_str("(none: `builder devel` makes the first)\n");
    }
    Ok(out)
}

/// `builder clean`: removes serving images, then devel images (and the base with `all`).
pub async fn clean(all: bool, dry_run: bool) -> Result<Vec<String>> {
    let docker = docker::connect().await?;
    remove_ours(&docker, all, dry_run).await
}

async fn remove_ours(docker: &Docker, all: bool, dry_run: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for role in ["temporary", "serving", "devel", "base"] {
        if role == "base" && !all {
            continue;
        }
        for image in docker::list_ours(docker).await? {
            if image.labels.get(ROLE_LABEL).map(String::as_str) != Some(role) {
                continue;
            }
            let name = image
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| short(&image.id).to_string());
            if !dry_run {
                docker::remove_image(docker, &image.id).await?;
            }
            removed.push(name);
        }
    }
    Ok(removed)
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
    fn model_names_and_checks() {
        assert_eq!(
            default_model_name(Path::new("/tmp/resnet/1/model.onnx")),
            "resnet"
        );
        assert_eq!(
            default_model_name(Path::new("/tmp/squeezenet.onnx")),
            "squeezenet"
        );
        assert_eq!(default_model_name(Path::new("model.onnx")), "model");
        let err = check_model_file(Path::new("/nonexistent/m.onnx"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        let err = check_model_file(Path::new("/tmp"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a file"), "{err}");
        let file = std::env::temp_dir().join(format!("onnx-serving-m-{}.onnx", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = check_model_file(&file, Some("a/b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--model-name"), "{err}");
        let (name, _, digest) = check_model_file(&file, Some("ok")).unwrap();
        assert_eq!((name.as_str(), digest.len()), ("ok", 64));
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
