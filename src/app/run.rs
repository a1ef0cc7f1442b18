//! Run (`rotor run`): the daemon. Reconcile the store with the config, serve metrics when
//! asked, rotate every credential when it is due until told to stop, reload on request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::Config;
use crate::engine::{Engine, EngineError, Runtime};
use crate::scheduler::daemon::{self, Daemon, DaemonOptions, RunSummary, Signal};
use crate::scheduler::lag::Lag;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How the daemon runs.
pub struct RunOptions {
    /// Do all due work, then exit.
    pub once: bool,
    /// Runs driven at once by this process.
    pub concurrency: usize,
    /// Lease of a claimed run.
    pub lease: Duration,
    /// How often to look for due work.
    pub poll: Duration,
    /// Serve /metrics, /healthz and /readyz here.
    pub listen: Option<SocketAddr>,
    /// Where the config is read again on `Signal::Reload`.
    pub config_paths: Vec<PathBuf>,
}

/// Runs the daemon until `signals` says stop (or, with `once`, until nothing is due).
pub async fn run(
    store: &Store,
    config: Config,
    options: RunOptions,
    signals: tokio::sync::mpsc::Receiver<Signal>,
) -> Result<RunSummary, RunError> {
    let clock = store.clock();
    // The host's clock may be stepped while rotor runs (NTP, a VM resumed): measure it again
    // against the database's every minute.
    let resync = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if let Err(e) = store.sync_clock().await {
                    tracing::debug!(error = %e, "could not read the database's clock; keeping the last offset");
                }
            }
        })
    };
    let _resync = AbortOnDrop(resync);
    // Anchors of the audit chain, kept outside the store (see `store::anchor`).
    let anchoring = {
        let store = store.clone();
        let file = config.store.anchor_file.clone();
        let every = config
            .store
            .anchor_every
            .map_or(Duration::from_secs(3600), |d| d.as_std())
            .max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                crate::store::anchor::take(&store, file.as_deref()).await;
                tokio::time::sleep(every).await;
            }
        })
    };
    let _anchoring = AbortOnDrop(anchoring);
    daemon::reconcile(store, &config, clock.as_ref()).await?;
    let runtime = Runtime::build(config).await?;
    let worker = daemon::worker_id();
    tracing::info!(
        worker = %worker,
        store = %store.url(),
        credentials = runtime.config.credentials.len(),
        once = options.once,
        "rotor started"
    );
    let runtime = Arc::new(runtime);
    let (published, subscribed) = tokio::sync::watch::channel(runtime.clone());
    let lag = Arc::new(Lag::default());
    if let Some(addr) = options.listen {
        crate::telemetry::server::serve(
            addr,
            store.clone(),
            subscribed,
            lag.clone(),
            clock.clone(),
        )
        .await
        .map_err(|source| RunError::Listen { addr, source })?;
    }
    let engine = Arc::new(Engine::new(store.clone(), clock, worker));
    let paths = options.config_paths;
    let reload = move || {
        let paths = paths.clone();
        async move {
            let config = crate::config::load(&paths).map_err(|d| d.to_string())?;
            Runtime::build(config).await.map_err(|e| e.to_string())
        }
    };
    let daemon_options = DaemonOptions {
        concurrency: options.concurrency.max(1),
        lease: options.lease,
        poll: options.poll,
        once: options.once,
    };
    let summary = Daemon {
        engine,
        runtime,
        options: daemon_options,
        published,
        lag,
    }
    .run(signals, reload)
    .await?;
    tracing::info!(
        completed = summary.completed,
        rolled_back = summary.rolled_back,
        stuck = summary.stuck,
        waiting = summary.waiting,
        "rotor stopped"
    );
    Ok(summary)
}

/// Ends a background task when the function that started it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
