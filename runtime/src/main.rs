use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use runtime::cli::{env, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Before any work: an optimized binary on a CPU lacking its instructions must say so, not
    // die of SIGILL halfway through loading a model.
    let cpu = hostcpu::detect();
    match hostcpu::startup_check(&cpu, &hostcpu::compiled_features()) {
        Err(message) => {
            report_error(&message);
            return ExitCode::FAILURE;
        }
        Ok(Some(note)) if matches!(cli.command, None | Some(Command::Serve(_))) => {
            tracing::info!("{note}")
        }
        Ok(_) => {}
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The error as one write: `eprintln!` writes a formatted message piece by piece, and Docker's
/// classic builder may report a failed step before the later pieces reach the build output,
/// where `builder serve-image` shows them.
fn report_error(message: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("error: {message}\n").as_bytes());
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::CheckModel(args)) => runtime::cli::check_model::check_model(&args),
        Some(Command::Healthcheck(args)) => runtime::cli::healthcheck::healthcheck(&args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn serve(args: runtime::cli::ServeArgs) -> Result<()> {
    let threads = match args.rest_api_num_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(runtime::cli::serve::serve(args))
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = hostcpu::logging::log_filter(env::LOG, tracing::Level::INFO);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .with(filter)
        .init();
}
