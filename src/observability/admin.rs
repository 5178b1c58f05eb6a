//! The admin HTTP server: `/metrics` for Prometheus, `/healthz` for liveness, `/readyz` for
//! readiness and `/public-key`, the operator's active public key for sealing (the document the
//! `amazon-seller-operator-public-key` ConfigMap holds, for `seal --public-key FILE`). Plain
//! HTTP on its own port: it serves nothing secret, and keeping it apart from the webhook's TLS
//! port lets probes and scrapes work without certificates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::{self, Metrics};
use crate::crypto::Keyring;

/// Where the admin server listens unless `--metrics-addr` says otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:8080";

/// What the admin endpoints read: the metrics registry, the readiness flag and the keyring
/// (its public half only).
#[derive(Clone)]
pub struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    keyring: Option<Arc<RwLock<Keyring>>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// State serving `metrics`; not ready until [`AdminState::set_ready`] says so.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            keyring: None,
        }
    }

    /// Serves the active public key of `keyring` (shared, so a rotation shows at once).
    pub fn with_keyring(mut self, keyring: Arc<RwLock<Keyring>>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Marks the process ready (caches synced, webhook serving) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The registry `/metrics` serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Failures of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address could not be bound.
    #[error("failed to bind the admin server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("failed to serve admin requests: {0}")]
    Serve(#[source] std::io::Error),
}

impl crate::error::Categorized for AdminError {
    fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "admin_bind",
            Self::Serve(_) => "admin_serve",
        }
    }
}

/// The admin routes over `state`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/public-key", get(public_key))
        .with_state(state)
}

/// The active public key as JSON; 404 where this process holds no keyring.
async fn public_key(State(state): State<AdminState>) -> Response {
    let Some(keyring) = &state.keyring else {
        return (StatusCode::NOT_FOUND, "no keyring in this process\n").into_response();
    };
    let document = keyring
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .active()
        .public_key()
        .to_json();
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "failed to encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to encode metrics\n",
            )
                .into_response()
        }
    }
}

/// Liveness: the process answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// A bound admin server, not yet serving: bind first to learn the port (tests bind
/// `127.0.0.1:0`), then [`AdminServer::run`].
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    state: AdminState,
}

impl AdminServer {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, state: AdminState) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener, state })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, AdminError> {
        self.listener.local_addr().map_err(AdminError::Serve)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AdminError> {
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(AdminError::Serve)
    }
}

/// Binds `addr` and serves the admin endpoints until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdminError> {
    AdminServer::bind(addr, state).await?.run(shutdown).await
}
