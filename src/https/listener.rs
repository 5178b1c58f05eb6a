//! The HTTPS listener: rustls (ring) and HTTP/1.1 on hyper, serving
//! `POST /validate`, `POST /mutate`, `GET /healthz` and `GET /readyz`, and, when enabled, the
//! runtime credential endpoint `GET /v1/namespaces/{namespace}/connections/{name}/token`
//! ([`super::credential`]).
//!
//! Bounded in every dimension a client controls: TLS handshakes and request headers must
//! arrive within seconds, bodies are capped, each review has a deadline, and connections are
//! capped. On shutdown it stops accepting, lets in-flight reviews finish (bounded), and
//! returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::HttpsError;
use super::admission::{Reviewer, Webhook};
use super::credential::{self, CredentialEndpoint};
use super::tls::{self, CertStore};

/// Where the webhook listens unless `--webhook-addr` says otherwise.
pub const DEFAULT_WEBHOOK_ADDR: &str = "0.0.0.0:8443";

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    /// The longest one review may take (body read included) before the answer is 503; keep
    /// it below the configurations' `timeoutSeconds`.
    pub request_timeout: Duration,
    /// The largest review body accepted (413 above). An AdmissionReview carries the object
    /// and the old object, each up to the API server's 1.5 MiB limit.
    pub max_body_bytes: usize,
    /// How long a client may take for the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (also the idle keep-alive
    /// limit between requests).
    pub header_read_timeout: Duration,
    /// Open connections beyond this are closed at once.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight reviews.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(8),
            max_body_bytes: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
struct ServerState {
    admission: Arc<Reviewer>,
    certs: Arc<CertStore>,
    credentials: Option<Arc<CredentialEndpoint>>,
}

/// The routes, for tests that drive them without TLS.
pub fn router(admission: Arc<Reviewer>, certs: Arc<CertStore>, settings: ServerSettings) -> Router {
    router_with(admission, certs, settings, None)
}

/// The routes, with the runtime credential endpoint when `credentials` is given.
pub fn router_with(
    admission: Arc<Reviewer>,
    certs: Arc<CertStore>,
    settings: ServerSettings,
    credentials: Option<Arc<CredentialEndpoint>>,
) -> Router {
    let mut routes = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if credentials.is_some() {
        routes = routes.route(credential::ROUTE, get(token));
    }
    routes
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            deadline,
        ))
        .with_state(ServerState {
            admission,
            certs,
            credentials,
        })
}

async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        // The API server treats this as a webhook failure: with failurePolicy Fail the request
        // is refused.
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "admission review timed out\n",
        )
            .into_response(),
    }
}

async fn validate(State(state): State<ServerState>, body: Bytes) -> Response {
    answer(&state, Webhook::Validate, &body).await
}

async fn mutate(State(state): State<ServerState>, body: Bytes) -> Response {
    answer(&state, Webhook::Mutate, &body).await
}

async fn answer(state: &ServerState, webhook: Webhook, body: &[u8]) -> Response {
    let json = state.admission.review_json(webhook, body).await;
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

async fn token(
    State(state): State<ServerState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match &state.credentials {
        Some(endpoint) => endpoint.serve(&namespace, &name, &headers).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Liveness: the process answers HTTPS.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: a serving certificate is loaded and the cluster view is synced.
async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if !state.certs.is_loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "no serving certificate\n")
    } else if !state.admission.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "cluster view not synced\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// A bound webhook server, not yet serving: bind first to learn the port (tests bind
/// `127.0.0.1:0`), then [`HttpsServer::run`].
pub struct HttpsServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    settings: ServerSettings,
}

impl std::fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl HttpsServer {
    /// Binds `addr`, serving the certificate `certs` holds (whatever it holds at each
    /// handshake).
    pub async fn bind(
        addr: SocketAddr,
        admission: Arc<Reviewer>,
        certs: Arc<CertStore>,
        settings: ServerSettings,
    ) -> Result<Self, HttpsError> {
        Self::bind_with(addr, admission, certs, settings, None).await
    }

    /// [`HttpsServer::bind`], also serving the runtime credential endpoint when
    /// `credentials` is given.
    pub async fn bind_with(
        addr: SocketAddr,
        admission: Arc<Reviewer>,
        certs: Arc<CertStore>,
        settings: ServerSettings,
        credentials: Option<Arc<CredentialEndpoint>>,
    ) -> Result<Self, HttpsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpsError::Bind { addr, source })?;
        let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
        Ok(Self {
            listener,
            acceptor,
            router: router_with(admission, certs, settings, credentials),
            settings,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, HttpsError> {
        self.listener.local_addr().map_err(HttpsError::Serve)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), HttpsError> {
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        tokio::pin!(shutdown);
        loop {
            let (tcp, _peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("webhook accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Answers are small and latency-bound: do not hold them back for coalescing.
            let _ = tcp.set_nodelay(true);
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!("webhook connection limit reached; closing a new connection");
                continue;
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(self.router.clone());
            let watcher = graceful.watcher();
            let settings = self.settings;
            tokio::spawn(async move {
                let _slot = slot;
                let tls =
                    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        // A client that does not trust the certificate, or no certificate loaded yet.
                        Ok(Err(err)) => {
                            tracing::debug!("webhook TLS handshake failed: {err}");
                            return;
                        }
                        Err(_) => return,
                    };
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(settings.header_read_timeout)
                    .keep_alive(true);
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(err) = watcher.watch(connection).await {
                    tracing::debug!("webhook connection ended: {err}");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(self.settings.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("webhook shutdown: in-flight requests did not finish in time");
        }
        Ok(())
    }
}
