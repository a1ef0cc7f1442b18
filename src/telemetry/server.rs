//! The daemon's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (config loaded and store reachable).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::{Format, render};
use crate::clock::Clock;
use crate::engine::Runtime;
use crate::scheduler::lag::Lag;
use crate::store::Store;

#[derive(Clone)]
struct Shared {
    store: Store,
    runtime: tokio::sync::watch::Receiver<Arc<Runtime>>,
    lag: Arc<Lag>,
    clock: Arc<dyn Clock>,
}

/// Binds `addr` and serves until the process ends. Fails only if the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    runtime: tokio::sync::watch::Receiver<Arc<Runtime>>,
    lag: Arc<Lag>,
    clock: Arc<dyn Clock>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared {
            store,
            runtime,
            lag,
            clock,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

async fn metrics(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let format = Format::accepted(headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()));
    let runtime = shared.runtime.borrow().clone();
    match render(
        &shared.store,
        &runtime.config,
        &shared.lag,
        shared.clock.now_ms(),
        format,
    )
    .await
    {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is unavailable: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store is unavailable: {e}\n"),
        ),
    }
}
