//! The log filter both binaries read from their environment variable.

use tracing_subscriber::filter::Targets;

/// The log filter from the environment variable `var` ("info", "warn,runtime=debug"), or
/// `default` when unset or empty. A value that does not parse is reported and the default used.
/// `Targets` rather than EnvFilter: no regex engine in the binary.
pub fn log_filter(var: &str, default: tracing::Level) -> Targets {
    let fallback = Targets::new().with_default(default);
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => value.parse().unwrap_or_else(|e| {
            eprintln!("{var}={value:?} is not a log filter ({e}); using {default}");
            fallback
        }),
        _ => fallback,
    }
}
