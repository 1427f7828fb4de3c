use std::process::ExitCode;

use anyhow::Result;
use builder::commands;
use clap::{Parser, Subcommand};

/// Build CPU-optimized onnx-serving Docker images.
///
/// The flow of the TensorFlow Serving article, as one tool: `builder cpu` shows what this host's
/// CPU offers; `builder devel` builds the devel image that compiles the model server for it;
/// `builder optimize` makes the model itself faster on this CPU where an accuracy gate passes;
/// `builder serve-image` packs that server (and optionally a model) into a slim serving image;
/// `builder push` and `builder k8s` take it to a registry and a Kubernetes/KServe cluster.
/// Then: docker run -p 8501:8501 -e MODEL_NAME=… -t $USER/onnx-serving
#[derive(Parser)]
#[command(name = "builder", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Each subcommand's help is the doc comment of its `Args` (a doc comment here would replace it).
#[derive(Subcommand)]
enum Cmd {
    Cpu(commands::cpu::Args),
    Devel(commands::devel::Args),
    Optimize(commands::optimize::Args),
    ServeImage(commands::serve_image::Args),
    Bench(commands::bench::Args),
    Push(commands::push::Args),
    K8s(commands::k8s::Args),
    Images(commands::images::Args),
    Clean(commands::clean::Args),
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
        Cmd::Cpu(args) => args.run(),
        Cmd::Devel(args) => rt.block_on(args.run()),
        Cmd::Optimize(args) => rt.block_on(args.run()),
        Cmd::ServeImage(args) => rt.block_on(args.run()),
        Cmd::Bench(args) => rt.block_on(args.run()),
        Cmd::Push(args) => rt.block_on(args.run()),
        Cmd::K8s(args) => rt.block_on(args.run()),
        Cmd::Images(args) => rt.block_on(args.run()),
        Cmd::Clean(args) => rt.block_on(args.run()),
    }
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
