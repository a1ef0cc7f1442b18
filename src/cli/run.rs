//! `rotor run`: the daemon (see `app::run`), stopped by SIGTERM or SIGINT, reloaded by SIGHUP.

use std::time::Duration;

use super::{CliError, CliResult, Context, Exit};
use crate::app::run::{self, RunError, RunOptions};
use crate::scheduler::daemon::Signal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do all due work, then exit.
    #[arg(long)]
    pub once: bool,
    /// Runs driven at once by this process.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Lease of a claimed run; another replica takes it over this long after a crash.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub lease: Duration,
    /// How often to look for due work.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<crate::config::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    for w in &config.warnings {
        tracing::warn!(file = %w.path.display(), line = w.line, column = w.column, "{}", w.message);
    }
    let store = ctx.open_store(&config).await?;
    let (tx, signals) = tokio::sync::mpsc::channel(4);
    spawn_signal_handlers(tx);
    let options = RunOptions {
        once: args.once,
        concurrency: args.concurrency,
        lease: args.lease,
        poll: args.poll,
        listen: args.listen,
        config_paths: ctx.config_paths.clone(),
    };
    let summary = run::run(&store, config, options, signals)
        .await
        .map_err(|e| match e {
            RunError::Listen { .. } => CliError::usage(e),
            RunError::Store(e) => CliError::Store(e),
            RunError::Engine(e) => CliError::Engine(e),
        })?;
    store.close().await;
    if args.once && (summary.rolled_back > 0 || summary.stuck > 0 || summary.errors > 0) {
        return Ok(Exit::RotationFailed);
    }
    Ok(Exit::Ok)
}

fn spawn_signal_handlers(tx: tokio::sync::mpsc::Sender<Signal>) {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::terminate(), Signal::Stop),
        (SignalKind::interrupt(), Signal::Stop),
        (SignalKind::hangup(), Signal::Reload),
    ];
    for (kind, meaning) in kinds {
        let tx = tx.clone();
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(meaning).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for a signal"),
        }
    }
}
