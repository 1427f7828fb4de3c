use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use builder::bench::{bench, BenchOptions};
use builder::commands::{self, DevelOptions, Engines, Lto, ServeImageOptions, DEFAULT_BASE_IMAGE};
use builder::cpu::{host_report, TargetCpu};
use clap::{Parser, Subcommand};

/// Build CPU-optimized onnx-serving Docker images.
///
/// The flow of the TensorFlow Serving article, as one tool: `builder cpu` shows what this host's
/// CPU offers; `builder devel` builds the devel image that compiles the model server for it;
/// `builder serve-image` packs that server (and optionally a model) into a slim serving image.
/// Then: docker run -p 8501:8501 -e MODEL_NAME=… -t $USER/onnx-serving
#[derive(Parser)]
#[command(name = "builder", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the CPU, the instruction sets the OS enables, the x86-64 level, and the rustc flags
    /// an optimized build uses that a portable one does not.
    Cpu {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Build the devel image: a toolchain plus `runtime` compiled for the target CPU, offline,
    /// from crates vendored on this host. Rebuilds after a source change reuse the dependency layer.
    Devel {
        /// Image tag [default: $USER/onnx-serving-devel, or …-devel-<target> for other targets].
        #[arg(long)]
        tag: Option<String>,
        /// native (this CPU), portable (any x86-64), x86-64-v2|v3|v4, or a rustc CPU name.
        #[arg(long, default_value = "native", value_parser = TargetCpu::parse)]
        target_cpu: TargetCpu,
        /// Link-time optimization. local (default; cargo's `lto = false`): each crate optimized
        /// across its codegen units; serves as fast as thin here and a source change rebuilds in
        /// well under a minute. off: none at all, ~1.3x slower serving (for comparison). thin:
        /// cross-crate, relinks all of tract for minutes on every source change. fat (one codegen
        /// unit): the slowest build. Figures in BENCHMARKS.md.
        #[arg(long, value_enum, default_value_t = Lto::Local)]
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
    },
    /// Build the slim serving image (FROM scratch: the runtime, the glibc files it links and, by
    /// default, onnxruntime's library; non-root), with a model baked in when --embed-model is
    /// given (validated by the runtime with every engine during the build).
    ServeImage {
        /// Devel image to take the runtime from [default: $USER/onnx-serving-devel].
        #[arg(long)]
        devel_image: Option<String>,
        /// Image tag [default: the devel tag without "-devel", e.g. $USER/onnx-serving; with
        /// --embed-model, the model name appended: $USER/onnx-serving-resnet].
        #[arg(long)]
        tag: Option<String>,
        /// ONNX file to bake in at /models/<name>/1/model.onnx (its signature.toml and labels.txt too).
        #[arg(long)]
        embed_model: Option<PathBuf>,
        /// Model name for the embedded model [default: from its path, e.g. …/resnet/1/model.onnx → resnet].
        #[arg(long, requires = "embed_model")]
        model_name: Option<String>,
        /// Engines the image carries: all (tract + onnxruntime, the faster serves each model),
        /// onnxruntime (the same, onnxruntime forced), tract (no onnxruntime library; tag
        /// suffix -tract).
        #[arg(long, value_enum, default_value_t = Engines::All)]
        engine: Engines,
        /// onnxruntime's library on this host [default: $ONNX_SERVING_ONNXRUNTIME_LIBRARY, else
        /// .cache/onnxruntime/libonnxruntime.so.1, which `make onnxruntime` fetches]; checked
        /// against the sha256 pinned in scripts/onnxruntime.env.
        #[arg(long)]
        onnxruntime_library: Option<PathBuf>,
        /// Rebuild every layer instead of reusing Docker's cache.
        #[arg(long)]
        no_cache: bool,
        /// Print every line of build output (by default only progress and errors).
        #[arg(long, short)]
        verbose: bool,
    },
    /// The article's experiment: serve the same model from a portable image and from one
    /// compiled for this CPU, send both the same requests (interleaved round by round, so the
    /// machine's noise hits both alike), and compare latency, throughput, size and cold start.
    /// Images are (re)built from the current sources first; Docker's layer cache makes that
    /// quick when nothing changed.
    #[command(
        after_help = "Example: builder bench --model /tmp/models/efficientnet --image /tmp/models/cat.jpg"
    )]
    Bench {
        /// Model folder holding numbered versions (<folder>/1/model.onnx), bind-mounted into both.
        #[arg(long, default_value = "/tmp/models/efficientnet")]
        model: PathBuf,
        /// Photo sent as {"b64": ...} (models with a signature.toml) [default: cat.jpg beside
        /// the model folder, as `make example-model` leaves it].
        #[arg(long, conflicts_with = "request")]
        image: Option<PathBuf>,
        /// A :predict JSON body to send instead of a photo.
        #[arg(long)]
        request: Option<PathBuf>,
        /// Timed requests per image.
        #[arg(long, short = 'n', default_value_t = 50)]
        requests: usize,
        /// Requests in flight at once (each round sends this many to one image, then the other).
        #[arg(long, short = 'c', default_value_t = 1)]
        concurrency: usize,
        /// Untimed requests per image first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Use the existing images as they are instead of building them from the current sources.
        #[arg(long)]
        no_build: bool,
        /// Base image for the devel builds.
        #[arg(long, default_value = DEFAULT_BASE_IMAGE)]
        base_image: String,
        /// Network for the devel builds' RUN steps (see `builder devel --help`).
        #[arg(long, default_value = "host")]
        network: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the images builder made, with their CPU and model labels.
    Images {
        #[arg(long)]
        json: bool,
    },
    /// Remove the images builder made.
    Clean {
        /// Also remove the base image made by `make base-image`.
        #[arg(long)]
        all: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Cpu { json } => {
            let report = host_report();
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.render());
            }
        }
        Cmd::Devel {
            tag,
            target_cpu,
            lto,
            base_image,
            network,
            no_cache,
            verbose,
        } => {
            let network = (network != "default").then_some(network);
            let opts = DevelOptions {
                tag,
                target_cpu,
                lto,
                base_image,
                network,
                no_cache,
                verbose,
            };
            let (built, _) = rt.block_on(commands::devel(&opts))?;
            println!("{}", built.tag);
        }
        Cmd::ServeImage {
            devel_image,
            tag,
            embed_model,
            model_name,
            engine,
            onnxruntime_library,
            no_cache,
            verbose,
        } => {
            let opts = ServeImageOptions {
                devel_image,
                tag,
                embed_model,
                model_name,
                engine,
                onnxruntime_library,
                no_cache,
                verbose,
            };
            let built = rt.block_on(commands::serve_image(&opts))?;
            println!("{}", built.tag);
        }
        Cmd::Bench {
            model,
            image,
            request,
            requests,
            concurrency,
            warmup,
            no_build,
            base_image,
            network,
            json,
        } => {
            if requests == 0 || concurrency == 0 {
                anyhow::bail!("--requests and --concurrency must be at least 1");
            }
            let opts = BenchOptions {
                model,
                image,
                request,
                requests,
                concurrency,
                warmup,
                no_build,
                base_image,
                network: (network != "default").then_some(network),
            };
            let report = rt.block_on(bench(&opts))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.render());
            }
        }
        Cmd::Images { json } => print!("{}", rt.block_on(commands::images(json))?),
        Cmd::Clean { all, dry_run } => {
            for name in rt.block_on(commands::clean(all, dry_run))? {
                println!(
                    "{} {name}",
                    if dry_run { "would remove" } else { "removed" }
                );
            }
        }
    }
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = builder::logging::log_filter("ONNX_SERVING_LOG", tracing::Level::WARN);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}
