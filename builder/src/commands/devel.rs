//! `builder devel`: the devel image, a toolchain plus `runtime` compiled for the target CPU.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};

use super::{
    common_labels, default_devel_tag, network_mode, short, Built, DEFAULT_BASE_IMAGE, LABEL_PREFIX,
};
use crate::context::{self, find_workspace};
use crate::cpu::{build_plan, BuildPlan, TargetCpu};
use crate::docker::{self, BuildRequest};

/// Build the devel image: a toolchain plus `runtime` compiled for the target CPU, offline,
/// from crates vendored on this host. Rebuilds after a source change reuse the dependency layer.
#[derive(clap::Args)]
pub struct Args {
    /// Image tag [default: $USER/onnx-serving-devel, or …-devel-<target> for other targets].
    #[arg(long)]
    tag: Option<String>,
    /// native (this CPU), portable (any x86-64), x86-64-v2|v3|v4, or a rustc CPU name.
    #[arg(long, default_value = "native", value_parser = TargetCpu::parse)]
    target_cpu: TargetCpu,
    /// Link-time optimization. fat (default; one codegen unit): the whole program optimized
    /// together, the smallest binary (31 MB instead of 39 MB) and as fast as local; a cold
    /// build takes longer (8.4 vs 7.2 min on the host here) and every source change relinks
    /// all of tract (minutes).
    /// local (cargo's `lto = false`): each crate optimized across its codegen units; a source
    /// change rebuilds in under a minute: for editing the runtime. off: none at all, ~1.3x
    /// slower serving (for comparison). thin: cross-crate, relinks all of tract for minutes on
    /// every source change. Figures in BENCHMARKS.md.
    #[arg(long, value_enum, default_value_t = Lto::Fat)]
    lto: Lto,
    /// Image to build on. The default is made locally by `make base-image` (no registry);
    /// with registry access, debian:bookworm works too.
    #[arg(long, default_value = DEFAULT_BASE_IMAGE)]
    base_image: String,
    /// Network for RUN steps (installing the toolchain needs Debian's mirror): `host` works
    /// where bridge networking has no route out; `default` for the daemon's default.
    #[arg(long, default_value = "host")]
    network: String,
    /// Rebuild every layer, the compiled dependencies included (a cold build: ~10 minutes).
    #[arg(long)]
    no_cache: bool,
    /// Print every line of build output, cargo's included (by default only progress and
    /// errors).
    #[arg(long, short)]
    verbose: bool,
}

impl Args {
    /// Builds the devel image and prints its tag.
    pub async fn run(self) -> Result<()> {
        let opts = DevelOptions {
            tag: self.tag,
            target_cpu: self.target_cpu,
            lto: self.lto,
            base_image: self.base_image,
            network: network_mode(self.network),
            no_cache: self.no_cache,
            verbose: self.verbose,
        };
        let (built, _) = devel(&opts).await?;
        println!("{}", built.tag);
        Ok(())
    }
}

/// Link-time optimization of the devel build. `fat` (the default: one codegen unit, the whole
/// program optimized together) makes the smallest runtime and serves as fast as `local`;
/// `local` (cargo's `lto = false`: each crate's codegen units optimized together) rebuilds a
/// source change in seconds; `off` (none at all) serves ~1.3x slower; `thin` and `fat` relink
/// every crate (tract included) after any source change. Figures in BENCHMARKS.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lto {
    // No doc comments on the values: clap would print them in `--help` (the one above is the
    // values' documentation).
    Local,
    Off,
    Thin,
    #[default]
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

/// What `devel` builds and how (the CLI's `builder devel` flags).
pub struct DevelOptions {
    /// Image tag [default: `default_devel_tag` of the target].
    pub tag: Option<String>,
    /// The CPU the runtime is compiled for.
    pub target_cpu: TargetCpu,
    /// Link-time optimization.
    pub lto: Lto,
    /// Image to build on.
    pub base_image: String,
    /// Network for RUN steps (`None`: the daemon's default).
    pub network: Option<String>,
    /// Rebuild every layer.
    pub no_cache: bool,
    /// Print every line of build output.
    pub verbose: bool,
}

/// Vendors the crates, builds the devel image for `opts.target_cpu` and labels it with the
/// build plan; returns the image and the plan (its RUSTFLAGS and instruction sets).
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
    crate::vendor::vendor_crates(&workspace, &vendor)?;
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
