//! Logs (tracing, human-readable or JSON on stderr) and metrics (`metrics`, served by
//! `server`). Fields carry ids, steps and fingerprints,
//! never secret values: secrets live in `secrecy` types whose `Debug` prints no value.

pub mod metrics;
pub mod server;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init_logs(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
