//! An LWA token endpoint on loopback, over HTTP and HTTPS, that speaks the documented protocol:
//! `POST /auth/o2/token` with a form-encoded body, `grant_type=refresh_token` (with
//! `refresh_token`, `client_id`, `client_secret`) or `grant_type=client_credentials` (with
//! `scope`), answering `Atza|…` tokens with `expires_in`, or OAuth errors as LWA does.
//!
//! Apps and refresh tokens are registered by the test; an unknown client or a wrong secret
//! gets `invalid_client` (401), an unknown or revoked refresh token `invalid_grant` (400). Any
//! client id or refresh token can be scripted to answer differently (throttling, outages, slow
//! or malformed answers), once per queued reply or always. Every call is counted and recorded.
//!
//! HTTPS uses a self-signed certificate for `127.0.0.1` made at start with rcgen (ring), which
//! the client trusts through [`LwaEmulator::ca_file`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The token path, as on `api.amazon.com`.
pub const TOKEN_PATH: &str = "/auth/o2/token";

/// How the emulator answers one call.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Validate the request and issue a token, as LWA does.
    Token,
    /// An OAuth error: `{"error": code, "error_description": …}` with `status`.
    OAuthError {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code.
        code: &'static str,
    },
    /// 429 Too Many Requests, with `Retry-After` when given.
    RateLimited {
        /// The `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// A bare failure status with an HTML body (a load balancer's 502/503).
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<String>,
    },
    /// Wait, then answer as [`Reply::Token`].
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a JSON body whose `expires_in` is missing.
    MissingExpiry,
    /// 200 with a body of a mebibyte.
    Oversized,
}

impl Reply {
    /// `invalid_grant` (400): a revoked refresh token.
    pub fn invalid_grant() -> Self {
        Reply::OAuthError {
            status: 400,
            code: "invalid_grant",
        }
    }

    /// `invalid_client` (401): a wrong or expired client secret.
    pub fn invalid_client() -> Self {
        Reply::OAuthError {
            status: 401,
            code: "invalid_client",
        }
    }
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// `grant_type`.
    pub grant_type: String,
    /// `client_id`.
    pub client_id: String,
    /// `refresh_token`, for the refresh grant.
    pub refresh_token: Option<String>,
    /// `scope`, for the client-credentials grant.
    pub scope: Option<String>,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// When it arrived (wall clock).
    pub at: jiff::Timestamp,
    /// When it arrived (monotonic).
    pub instant: Instant,
}

/// A registered seller connection's credentials, as plain test strings.
#[derive(Clone, Debug)]
pub struct Seller {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The refresh token.
    pub refresh_token: String,
}

impl Seller {
    /// The credentials to seal for this seller.
    pub fn credentials(&self) -> amazon_seller_operator::crypto::Credentials {
        amazon_seller_operator::crypto::Credentials {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.as_str().into(),
            refresh_token: self.refresh_token.as_str().into(),
            next_client_secret: None,
            client_secret_expires_at: None,
        }
    }
}

#[derive(Default)]
struct EmulatorState {
    /// client id → accepted secrets.
    clients: Mutex<HashMap<String, Vec<String>>>,
    /// refresh token → client id.
    refresh_tokens: Mutex<HashMap<String, String>>,
    queued: Mutex<HashMap<String, VecDeque<Reply>>>,
    always: Mutex<HashMap<String, Reply>>,
    calls: Mutex<Vec<Call>>,
    issued: Mutex<Vec<String>>,
    expires_in: AtomicU64,
    counter: AtomicU64,
}

/// The running emulator; stops when dropped.
pub struct LwaEmulator {
    state: Arc<EmulatorState>,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    ca_pem: String,
    ca_dir: tempfile::TempDir,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LwaEmulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LwaEmulator {
    /// Starts HTTP and HTTPS listeners on 127.0.0.1 with fresh ports.
    pub async fn start() -> Self {
        let state = Arc::new(EmulatorState::default());
        state.expires_in.store(3600, Ordering::SeqCst);
        let app = Router::new()
            .route(TOKEN_PATH, post(token))
            .with_state(state.clone());

        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let http_addr = http.local_addr().expect("HTTP address");
        let http_app = app.clone();
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, http_app).await;
        });

        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let ca_pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTPS");
        let https_addr = tcp.local_addr().expect("HTTPS address");
        let (sender, receiver) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_tls(tcp, acceptor, sender));
        let https_task = tokio::spawn(async move {
            let listener = TlsListener {
                receiver,
                local: https_addr,
            };
            let _ = axum::serve(listener, app).await;
        });

        let ca_dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(ca_dir.path().join("lwa-ca.pem"), &ca_pem).expect("CA file written");
        Self {
            state,
            http_addr,
            https_addr,
            ca_pem,
            ca_dir,
            tasks: vec![http_task, accept_task, https_task],
        }
    }

    /// The token endpoint over HTTPS.
    pub fn https_url(&self) -> String {
        format!("https://{}{TOKEN_PATH}", self.https_addr)
    }

    /// The token endpoint over plain HTTP.
    pub fn http_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.http_addr)
    }

    /// The HTTPS certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`ca_pem`](Self::ca_pem), for `--lwa-ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_dir.path().join("lwa-ca.pem")
    }

    /// A directory removed with the emulator, for the tests' own files.
    pub fn scratch_dir(&self) -> &Path {
        self.ca_dir.path()
    }

    /// Registers an app accepting any of `secrets`.
    pub fn register_app(&self, client_id: &str, secrets: &[&str]) {
        lock(&self.state.clients).insert(
            client_id.to_owned(),
            secrets.iter().map(|s| (*s).to_owned()).collect(),
        );
    }

    /// Registers a refresh token issued to `client_id`.
    pub fn register_refresh_token(&self, client_id: &str, refresh_token: &str) {
        lock(&self.state.refresh_tokens).insert(refresh_token.to_owned(), client_id.to_owned());
    }

    /// Revokes a refresh token: it now gets `invalid_grant`.
    pub fn revoke(&self, refresh_token: &str) {
        lock(&self.state.refresh_tokens).remove(refresh_token);
    }

    /// Registers a new app and a refresh token for it. The values contain `|`, `+`, `/`, `=`
    /// and `&`, as real LWA values can, so a client that does not URL-encode its form gets
    /// `invalid_client` or `invalid_grant`.
    pub fn new_seller(&self) -> Seller {
        let n = self.state.counter.fetch_add(1, Ordering::SeqCst);
        let seller = Seller {
            client_id: format!("amzn1.application-oa2-client.emu{n}"),
            client_secret: format!("amzn1.oa2-cs.v1.s3cr3t+{n}/x=y&z"),
            refresh_token: format!("Atzr|IwEBI+refresh/{n}=&grant_type=x|end"),
        };
        self.register_app(&seller.client_id, &[&seller.client_secret]);
        self.register_refresh_token(&seller.client_id, &seller.refresh_token);
        seller
    }

    /// Answers the next calls for `key` (a client id or a refresh token) with `replies`, in
    /// order; after them the usual behaviour resumes.
    pub fn queue(&self, key: &str, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.queued)
            .entry(key.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Answers every call for `key` with `reply` (after any queued replies).
    pub fn always(&self, key: &str, reply: Reply) {
        lock(&self.state.always).insert(key.to_owned(), reply);
    }

    /// Stops answering `key` specially.
    pub fn clear(&self, key: &str) {
        lock(&self.state.always).remove(key);
        lock(&self.state.queued).remove(key);
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// How many calls so far.
    pub fn total_calls(&self) -> usize {
        lock(&self.state.calls).len()
    }

    /// How many calls named `key` as client id or refresh token.
    pub fn calls_for(&self, key: &str) -> usize {
        lock(&self.state.calls)
            .iter()
            .filter(|c| c.client_id == key || c.refresh_token.as_deref() == Some(key))
            .count()
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let Ok((stream, peer)) = tcp.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        // Handshakes run on their own tasks: a client that never finishes one (a client
        // that does not trust the certificate) does not hold up the others.
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            if let Ok(Ok(tls)) = handshake {
                let _ = sender.send((tls, peer)).await;
            }
        });
    }
}

struct TlsListener {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn json(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn oauth_error(status: u16, code: &str) -> Response {
    json(
        status,
        serde_json::json!({
            "error": code,
            "error_description": format!("The request has an invalid parameter ({code})"),
        })
        .to_string(),
    )
}

fn with_retry_after(mut response: Response, retry_after: &Option<String>) -> Response {
    if let Some(value) = retry_after
        && let Ok(value) = HeaderValue::from_str(value)
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn token(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut repeated = false;
    for (name, value) in form_urlencoded::parse(&body) {
        repeated |= fields
            .insert(name.into_owned(), value.into_owned())
            .is_some();
    }
    let field = |name: &str| fields.get(name).cloned().filter(|v| !v.is_empty());
    let call = Call {
        grant_type: field("grant_type").unwrap_or_default(),
        client_id: field("client_id").unwrap_or_default(),
        refresh_token: field("refresh_token"),
        scope: field("scope"),
        content_type: content_type.clone(),
        at: jiff::Timestamp::now(),
        instant: Instant::now(),
    };
    lock(&state.calls).push(call.clone());

    let scripted = {
        let keys: Vec<&str> = call
            .refresh_token
            .iter()
            .map(String::as_str)
            .chain([call.client_id.as_str()])
            .collect();
        let mut queued = lock(&state.queued);
        let from_queue = keys
            .iter()
            .find_map(|k| queued.get_mut(*k).and_then(VecDeque::pop_front));
        from_queue.or_else(|| {
            let always = lock(&state.always);
            keys.iter().find_map(|k| always.get(*k).cloned())
        })
    };
    match scripted.unwrap_or(Reply::Token) {
        Reply::Token => {}
        Reply::OAuthError { status, code } => return oauth_error(status, code),
        Reply::RateLimited { retry_after } => {
            return with_retry_after(oauth_error(429, "rate_limited"), &retry_after);
        }
        Reply::Status {
            status,
            retry_after,
        } => {
            let response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Service Unavailable</body></html>",
            )
                .into_response();
            return with_retry_after(response, &retry_after);
        }
        Reply::Slow(delay) => tokio::time::sleep(delay).await,
        Reply::Malformed => return json(200, r#"{"access_token": "Atza|trunc"#.to_owned()),
        Reply::MissingExpiry => {
            return json(
                200,
                r#"{"access_token":"Atza|no-expiry","token_type":"bearer"}"#.to_owned(),
            );
        }
        Reply::Oversized => return json(200, format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20))),
    }

    // The documented protocol.
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
        || repeated
    {
        return oauth_error(400, "invalid_request");
    }
    let (Some(client_id), Some(client_secret)) = (field("client_id"), field("client_secret"))
    else {
        return oauth_error(400, "invalid_request");
    };
    match field("grant_type").as_deref() {
        Some("refresh_token") => {
            let Some(refresh_token) = field("refresh_token") else {
                return oauth_error(400, "invalid_request");
            };
            if !client_accepts(&state, &client_id, &client_secret) {
                return oauth_error(401, "invalid_client");
            }
            let owner = lock(&state.refresh_tokens).get(&refresh_token).cloned();
            if owner.as_deref() != Some(client_id.as_str()) {
                return oauth_error(400, "invalid_grant");
            }
            issue(&state, Some(&refresh_token))
        }
        Some("client_credentials") => {
            if field("scope").is_none() {
                return oauth_error(400, "invalid_scope");
            }
            if !client_accepts(&state, &client_id, &client_secret) {
                return oauth_error(401, "invalid_client");
            }
            issue(&state, None)
        }
        Some(_) => oauth_error(400, "unsupported_grant_type"),
        None => oauth_error(400, "invalid_request"),
    }
}

fn client_accepts(state: &EmulatorState, client_id: &str, secret: &str) -> bool {
    lock(&state.clients)
        .get(client_id)
        .is_some_and(|secrets| secrets.iter().any(|s| s == secret))
}

fn issue(state: &EmulatorState, refresh_token: Option<&str>) -> Response {
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let nanos = jiff::Timestamp::now().subsec_nanosecond();
    let access_token = format!("Atza|IwEBIAccess{n}x{nanos:09}");
    lock(&state.issued).push(access_token.clone());
    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": state.expires_in.load(Ordering::SeqCst),
    });
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = refresh_token.into();
    }
    json(200, body.to_string())
}
