//! The HTTPS listener: rustls (ring) and HTTP/1.1 on hyper, serving
//! `POST /validate`, `POST /mutate`, `GET /healthz` and `GET /readyz`, and, when enabled, the
//! runtime credential endpoint `GET /v1/namespaces/{namespace}/connections/{name}/token`
//! ([`super::credential`]).
//!
//! Bounded in every dimension a client controls: TLS handshakes and request headers must
//! arrive within seconds, bodies are capped, each review has a deadline, and connections are
//! capped. On shutdown it stops accepting, lets in-flight reviews finish (bounded), and
//! returns.
//!
//! The routes are an axum [`Router`]. The API server's reviews (`POST /validate` and
//! `POST /mutate` with a `Content-Length` within the body limit) are answered by
//! [`Connection`] directly, with the same deadline, limit and answer, since axum's layers
//! cost as much as the TLS record they arrive in; every other request goes to the router.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
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
        Err(_) => timed_out(),
    }
}

/// The answer when a review misses its deadline. The API server treats it as a webhook
/// failure: with failurePolicy Fail the request is refused.
fn timed_out() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "admission review timed out\n",
    )
        .into_response()
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

/// One connection's requests: reviews answered directly, the rest by the router.
#[derive(Clone)]
struct Connection {
    admission: Arc<Reviewer>,
    settings: ServerSettings,
    routed: TowerToHyperService<Router>,
}

/// The response body of either path.
enum AnswerBody {
    /// A review's answer, whole.
    Answer(Option<Bytes>),
    /// Whatever the router answered.
    Routed(Body),
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.get_mut() {
            AnswerBody::Answer(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            AnswerBody::Routed(body) => HttpBody::poll_frame(Pin::new(body), cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AnswerBody::Answer(data) => data.is_none(),
            AnswerBody::Routed(body) => HttpBody::is_end_stream(body),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::Answer(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            AnswerBody::Routed(body) => HttpBody::size_hint(body),
        }
    }
}

type Answered = Result<hyper::Response<AnswerBody>, Infallible>;

/// Generic over the request body so that tests can drive it without a socket; the server
/// passes hyper's `Incoming`.
impl<B> hyper::service::Service<hyper::Request<B>> for Connection
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = hyper::Response<AnswerBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answered> + Send>>;

    fn call(&self, request: hyper::Request<B>) -> Self::Future {
        match self.review_route(&request) {
            Some((webhook, length)) => {
                let admission = self.admission.clone();
                let limit = self.settings.request_timeout;
                Box::pin(async move {
                    let answer =
                        tokio::time::timeout(limit, review(&admission, webhook, request, length))
                            .await
                            .unwrap_or_else(|_| as_routed(timed_out()));
                    Ok(answer)
                })
            }
            None => {
                let routed = hyper::service::Service::call(&self.routed, request);
                Box::pin(async move {
                    let response = routed.await?;
                    Ok(response.map(AnswerBody::Routed))
                })
            }
        }
    }
}

impl Connection {
    /// Which webhook `request` is a review for, with its body length, when it can be answered
    /// without the router: `POST /validate` or `POST /mutate` whose `Content-Length` is within
    /// the body limit. Anything else (another method or path, a chunked or oversized body)
    /// gets the router's answer: 404, 405, 413 and the rest stay the router's.
    fn review_route<B>(&self, request: &hyper::Request<B>) -> Option<(Webhook, usize)> {
        if request.method() != Method::POST {
            return None;
        }
        let webhook = match request.uri().path() {
            "/validate" => Webhook::Validate,
            "/mutate" => Webhook::Mutate,
            _ => return None,
        };
        let length: usize = request
            .headers()
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        (length <= self.settings.max_body_bytes).then_some((webhook, length))
    }
}

/// Reads a review's body (`length` bytes, within the limit) and answers it, as the router's
/// `validate` and `mutate` routes do.
async fn review<B>(
    admission: &Reviewer,
    webhook: Webhook,
    request: hyper::Request<B>,
    length: usize,
) -> hyper::Response<AnswerBody>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let body = match read_body(request.into_body(), length).await {
        Ok(body) => body,
        // As axum's `Bytes` extractor answers a body that fails to arrive.
        Err(err) => {
            let err: axum::BoxError = err.into();
            let response = (
                StatusCode::BAD_REQUEST,
                format!("Failed to buffer the request body: {err}"),
            )
                .into_response();
            return as_routed(response);
        }
    };
    let json = admission.review_json(webhook, &body).await;
    let length = HeaderValue::from(json.len());
    let mut response = hyper::Response::new(AnswerBody::Answer(Some(Bytes::from(json))));
    let headers = response.headers_mut();
    // The router's answer carries these two headers, in this order.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, length);
    response
}

/// A response made with axum's types, as the router would send it: the router adds a
/// `Content-Length` to every body of known size.
fn as_routed(mut response: Response) -> hyper::Response<AnswerBody> {
    if let Some(length) = HttpBody::size_hint(response.body()).exact()
        && !response.headers().contains_key(header::CONTENT_LENGTH)
    {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response.map(AnswerBody::Routed)
}

/// The whole body. Usually one frame, kept as it arrived; more are joined.
async fn read_body<B: HttpBody<Data = Bytes>>(body: B, length: usize) -> Result<Bytes, B::Error> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.reserve_exact(length);
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(data) => data,
        None => Bytes::from(joined),
    })
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
    admission: Arc<Reviewer>,
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
            admission: admission.clone(),
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
            let service = Connection {
                admission: self.admission.clone(),
                settings: self.settings,
                routed: TowerToHyperService::new(self.router.clone()),
            };
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

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use hyper::service::Service as _;
    use serde_json::json;

    use super::*;
    use crate::crypto::Keyring;
    use crate::domain::admission::{ConnectionFacts, Lookup, Policy, SecretFacts};
    use crate::https::Cluster;
    use crate::observability::audit::AuditLog;
    use crate::observability::metrics::Metrics;

    /// Namespace `team-acme` of Team `acme`, with connection `acme-us` listing `gw-main`.
    struct Fake;

    impl Lookup for Fake {
        fn namespace_team(&self, namespace: &str) -> Option<String> {
            (namespace == "team-acme").then(|| "acme".to_owned())
        }
        fn connections(&self, namespace: &str) -> Vec<ConnectionFacts> {
            if namespace != "team-acme" {
                return Vec::new();
            }
            vec![ConnectionFacts {
                name: "acme-us".into(),
                team_id: "acme".into(),
                gateways: vec!["gw-main".into()],
                credentials_secret_name: "acme-us-lwa".into(),
            }]
        }
        fn secret(&self, _: &str, _: &str) -> Option<SecretFacts> {
            None
        }
    }

    impl Cluster for Fake {}

    fn connection(request_timeout: Duration) -> Connection {
        let metrics = Metrics::new().unwrap();
        let audit = AuditLog::to_writer(std::io::sink(), metrics.clone(), "test").unwrap();
        let policy = Policy {
            team_group_prefix: "openteam:team:".into(),
            admin_groups: vec!["platform-admins".into()],
            reviewer_groups: Vec::new(),
            operator_username: "system:serviceaccount:aso:amazon-seller-operator".into(),
            workload_controllers: Vec::new(),
        };
        let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
        let admission = Arc::new(Reviewer::new(
            policy,
            Arc::new(Fake),
            keyring,
            metrics,
            audit,
        ));
        let settings = ServerSettings {
            request_timeout,
            ..ServerSettings::default()
        };
        Connection {
            admission: admission.clone(),
            settings,
            routed: TowerToHyperService::new(router(admission, CertStore::new(), settings)),
        }
    }

    fn review(resource: &str, kind: &str, user: &str, object: serde_json::Value) -> Vec<u8> {
        let gvk = json!({"group": "", "version": "v1", "kind": kind});
        let gvr = json!({"group": "", "version": "v1", "resource": resource});
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "00000000-0000-4000-8000-000000000001", "kind": gvk,
                        "resource": gvr, "name": "gw", "namespace": "team-acme",
                        "operation": "CREATE",
                        "userInfo": {"username": user, "groups": ["openteam:team:acme"]},
                        "object": object, "oldObject": null}
        }))
        .unwrap()
    }

    fn pod(gateway: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "gw", "namespace": "team-acme",
                            "labels": {"connectors.openteam.io/gateway": gateway}},
               "spec": {"volumes": [{"name": "t", "secret": {"secretName": "acme-us-sp-api"}}],
                        "containers": [{"name": "main", "image": "gw:1",
                                        "volumeMounts": [{"name": "t", "mountPath": "/t"}]}]}})
    }

    fn request(method: Method, path: &str, body: Body, length: Option<usize>) -> Request {
        let mut request = hyper::Request::builder().method(method).uri(path);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        request.body(body).unwrap()
    }

    type Parts = (StatusCode, Vec<(String, Vec<u8>)>, Vec<u8>);

    async fn parts(response: hyper::Response<AnswerBody>) -> Parts {
        let (head, body) = response.into_parts();
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        (head.status, headers, bytes)
    }

    /// The answer given directly and the router's answer to the same request.
    async fn both(
        connection: &Connection,
        make: impl Fn() -> Request,
        direct: bool,
    ) -> (Parts, Parts) {
        let request = make();
        assert_eq!(connection.review_route(&request).is_some(), direct);
        let answered = parts(connection.call(request).await.unwrap()).await;
        let routed = connection.routed.call(make()).await.unwrap();
        (answered, parts(routed.map(AnswerBody::Routed)).await)
    }

    #[tokio::test]
    async fn reviews_answered_directly_get_the_routers_answer_byte_for_byte() {
        let connection = connection(Duration::from_secs(8));
        let bodies = [
            ("/validate", review("pods", "Pod", "alice", pod("gw-main"))),
            ("/validate", review("pods", "Pod", "alice", pod("gw-other"))),
            ("/mutate", review("pods", "Pod", "alice", pod("gw-main"))),
            ("/validate", b"{\"not\": \"a review\"}".to_vec()),
            ("/validate", b"\x00\xff".to_vec()),
            ("/mutate", Vec::new()),
            (
                "/validate?timeout=10s",
                review("pods", "Pod", "bob", pod("gw-main")),
            ),
        ];
        for (path, body) in bodies {
            let make = || {
                request(
                    Method::POST,
                    path,
                    Body::from(body.clone()),
                    Some(body.len()),
                )
            };
            let (answered, routed) = both(&connection, make, true).await;
            assert_eq!(
                answered,
                routed,
                "{path} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[tokio::test]
    async fn other_requests_are_left_to_the_router() {
        let connection = connection(Duration::from_secs(8));
        let review = review("pods", "Pod", "alice", pod("gw-main"));
        let huge = vec![b' '; ServerSettings::default().max_body_bytes + 1];
        // (method, path, body, whether it has a Content-Length, the router's status)
        let cases: [(Method, &str, &Vec<u8>, bool, StatusCode); 6] = [
            (
                Method::GET,
                "/validate",
                &review,
                true,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::POST,
                "/validate/",
                &review,
                true,
                StatusCode::NOT_FOUND,
            ),
            (
                Method::POST,
                "/elsewhere",
                &review,
                true,
                StatusCode::NOT_FOUND,
            ),
            (Method::POST, "/validate", &review, false, StatusCode::OK),
            (
                Method::POST,
                "/validate",
                &huge,
                true,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (Method::GET, "/healthz", &review, false, StatusCode::OK),
        ];
        for (method, path, body, with_length, status) in cases {
            let length = with_length.then_some(body.len());
            let make = || request(method.clone(), path, Body::from(body.clone()), length);
            let (answered, routed) = both(&connection, make, false).await;
            assert_eq!(answered, routed, "{method} {path}");
            assert_eq!(answered.0, status, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn a_review_past_its_deadline_gets_the_routers_503() {
        let connection = connection(Duration::from_millis(50));
        let make = || {
            let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
            request(
                Method::POST,
                "/validate",
                Body::from_stream(stalled),
                Some(100),
            )
        };
        let (answered, routed) = both(&connection, make, true).await;
        assert_eq!(answered, routed);
        assert_eq!(answered.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_body_that_fails_to_arrive_gets_the_routers_400() {
        let connection = connection(Duration::from_secs(8));
        let make = || {
            let failing = futures::stream::iter([
                Ok(Bytes::from_static(b"{\"apiVersion\"")),
                Err(std::io::Error::other("connection reset")),
            ]);
            request(
                Method::POST,
                "/validate",
                Body::from_stream(failing),
                Some(100),
            )
        };
        let (answered, routed) = both(&connection, make, true).await;
        assert_eq!(answered, routed);
        assert_eq!(answered.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_body_in_several_frames_is_read_whole() {
        let connection = connection(Duration::from_secs(8));
        let body = review("pods", "Pod", "alice", pod("gw-main"));
        let make = || {
            let frames: Vec<Result<Bytes, std::io::Error>> = body
                .chunks(100)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let stream = futures::stream::iter(frames);
            request(
                Method::POST,
                "/validate",
                Body::from_stream(stream),
                Some(body.len()),
            )
        };
        let (answered, routed) = both(&connection, make, true).await;
        assert_eq!(answered, routed);
        assert!(String::from_utf8_lossy(&answered.2).contains("\"allowed\":true"));
    }
}
