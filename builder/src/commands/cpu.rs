//! `builder cpu`: what this host's CPU offers an optimized build.

use anyhow::Result;

use crate::cpu::host_report;

/// Show the CPU, the instruction sets the OS enables, the x86-64 level, and the rustc flags
/// an optimized build uses that a portable one does not.
#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Prints the host report (JSON with `--json`).
    pub fn run(self) -> Result<()> {
        let report = host_report();
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            print!("{}", report.render());
        }
        Ok(())
    }
}
