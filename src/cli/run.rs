//! `rotor run`: the daemon.

use std::sync::Arc;
use std::time::Duration;

use super::{CliError, CliResult, Context, Exit};
use crate::clock::SystemClock;
use crate::engine::{Engine, Runtime};
use crate::scheduler::daemon::{self, Daemon, DaemonOptions, Signal};

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
    let store = ctx.open_store(&config).await?;
    let clock = Arc::new(SystemClock);
    daemon::reconcile(&store, &config, clock.as_ref()).await?;
    let runtime = Runtime::build(config).await?;
    let worker = daemon::worker_id();
    tracing::info!(
        worker = %worker,
        store = %store.url(),
        credentials = runtime.config.credentials.len(),
        once = args.once,
        "rotor started"
    );
    let runtime = Arc::new(runtime);
    let (published, subscribed) = tokio::sync::watch::channel(runtime.clone());
    let lag = Arc::new(crate::scheduler::lag::Lag::default());
    if let Some(addr) = args.listen {
        crate::telemetry::server::serve(
            addr,
            store.clone(),
            subscribed,
            lag.clone(),
            clock.clone(),
        )
        .await
        .map_err(|e| {
            CliError::Usage(anyhow::anyhow!(
                "cannot listen on {addr}: {e} (is another process using it?)"
            ))
        })?;
    }
    let engine = Arc::new(Engine::new(store.clone(), clock, worker));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    spawn_signal_handlers(tx);
    let options = DaemonOptions {
        concurrency: args.concurrency.max(1),
        lease: args.lease,
        poll: args.poll,
        once: args.once,
    };
    let paths = ctx.config_paths.clone();
    let reload = move || {
        let paths = paths.clone();
        async move {
            let config = crate::config::load(&paths).map_err(|d| d.to_string())?;
            Runtime::build(config).await.map_err(|e| e.to_string())
        }
    };
    let summary = Daemon {
        engine,
        runtime,
        options,
        published,
        lag,
    }
    .run(rx, reload)
    .await
    .map_err(|e| CliError::Internal(e.into()))?;
    store.close().await;
    tracing::info!(
        completed = summary.completed,
        rolled_back = summary.rolled_back,
        stuck = summary.stuck,
        waiting = summary.waiting,
        "rotor stopped"
    );
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
