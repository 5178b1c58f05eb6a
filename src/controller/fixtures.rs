//! Test builders for the controller's two test tiers below the real API server: the plan's
//! scenario tests (pure, `plan/tests.rs`) and the mocked-API tests (`mocked_api.rs`, exact request
//! sequences).
//!
//! - [`Connection::test()`]: a valid connection (`team-acme/acme-us`, US, `delivery: Secret`)
//!   with the finalizer already present, changed with `with_…` methods.
//! - [`ScriptedLwa`]: an in-process stand-in for LWA behind the engine's [`TokenSource`], which
//!   answers with scripted rejections and otherwise issues numbered tokens.
//! - [`ApiServerVerifier`]: the other end of a mocked API server (the kube-rs controller-rs
//!   pattern, hand-rolled over `tower::service_fn` instead of `tower-test`): the test receives
//!   each request the reconcile makes, in order, checks its method, path and body, and answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{Method, Request, Response};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::Context;
use crate::api::{
    AmazonSellerConnection, AmazonSellerConnectionSpec, AmazonSellerConnectionStatus,
};
use crate::crypto::{self, Credentials, Keyring, SealContext, SecretString};
use crate::domain::Delivery;
use crate::lwa::{
    EngineConfig, LwaError, ManualClock, OAuthErrorCode, RefreshEngine, TokenGrant, TokenSource,
};
use crate::observability::audit::AuditLog;
use crate::observability::metrics::Metrics;

/// The namespace of [`Connection::test()`].
pub const NAMESPACE: &str = "team-acme";
/// The name of [`Connection::test()`].
pub const NAME: &str = "acme-us";
/// Its credentials Secret.
pub const CREDENTIALS: &str = "acme-us-lwa";
/// Its uid (the owner of the Secrets it gets).
pub const UID: &str = "6f1c6a86-54c1-4d57-9c0a-1b2d3e4f5a6b";
/// The client secret and refresh token sealed in [`sealed_credentials`]: no output may hold
/// either.
pub const CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.client-secret-value";
/// See [`CLIENT_SECRET`].
pub const REFRESH_TOKEN: &str = "Atzr|refresh-token-value";
/// Every access token [`ScriptedLwa`] issues starts with this.
pub const TOKEN_PREFIX: &str = "Atza|stand-in-";

/// An instant to start the clock at (2027-01-15T08:00:00Z).
pub fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A connection under construction for a test.
#[derive(Clone, Debug)]
pub struct Connection(AmazonSellerConnection);

impl Connection {
    /// `team-acme/acme-us`: team `acme`, seller `A3FHEXAMPLEYWS`, marketplace US, credentials
    /// `acme-us-lwa`, gateway `gw-main`, `renewBefore: 20m`, `delivery: Secret`; generation 1,
    /// resourceVersion 100, the finalizer present, no status yet.
    pub fn test() -> Self {
        let mut connection = AmazonSellerConnection::new(
            NAME,
            AmazonSellerConnectionSpec {
                team_id: "acme".into(),
                seller_id: "A3FHEXAMPLEYWS".into(),
                marketplace: "US".into(),
                environment: Default::default(),
                credentials_secret_name: CREDENTIALS.into(),
                gateways: vec!["gw-main".into()],
                renew_before: "20m".into(),
                suspended: false,
                delivery: Delivery::Secret,
                on_unauthorized_mount: Default::default(),
            },
        );
        connection.metadata.namespace = Some(NAMESPACE.into());
        connection.metadata.uid = Some(UID.into());
        connection.metadata.generation = Some(1);
        connection.metadata.resource_version = Some("100".into());
        connection.metadata.finalizers = Some(vec![super::FINALIZER.into()]);
        Self(connection)
    }

    /// With `spec.delivery`.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.0.spec.delivery = delivery;
        self.next_generation()
    }

    /// With `spec.gateways`.
    pub fn with_gateways(mut self, gateways: &[&str]) -> Self {
        self.0.spec.gateways = gateways.iter().map(|g| (*g).to_owned()).collect();
        self.next_generation()
    }

    /// With `spec.onUnauthorizedMount: Evict`.
    pub fn evicting(mut self) -> Self {
        self.0.spec.on_unauthorized_mount = crate::domain::OnUnauthorizedMount::Evict;
        self.next_generation()
    }

    /// With `spec.marketplace`.
    pub fn with_marketplace(mut self, marketplace: &str) -> Self {
        self.0.spec.marketplace = marketplace.into();
        self.next_generation()
    }

    /// With `spec.suspended: true`.
    pub fn suspended(mut self) -> Self {
        self.0.spec.suspended = true;
        self.next_generation()
    }

    /// With `spec.suspended: false`.
    pub fn resumed(mut self) -> Self {
        self.0.spec.suspended = false;
        self.next_generation()
    }

    /// With a stored status (what an earlier reconcile wrote) and a new resourceVersion.
    pub fn with_status(mut self, status: AmazonSellerConnectionStatus) -> Self {
        self.0.status = Some(status);
        let version: u64 = self
            .0
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        self.0.metadata.resource_version = Some((version + 1).to_string());
        self
    }

    /// Being deleted: a deletion timestamp, the finalizer still present.
    pub fn deleted(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(start()));
        self
    }

    /// A spec change is a new generation.
    fn next_generation(mut self) -> Self {
        self.0.metadata.generation = self.0.metadata.generation.map(|g| g + 1);
        self
    }

    /// The connection.
    pub fn build(self) -> AmazonSellerConnection {
        self.0
    }
}

/// The credentials sealed to `keyring` for [`Connection::test()`], as the credentials Secret
/// (resourceVersion 7).
pub fn sealed_credentials(keyring: &Keyring) -> Secret {
    let credentials = Credentials {
        client_id: "amzn1.application-oa2-client.acme".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        refresh_token: SecretString::from(REFRESH_TOKEN),
        next_client_secret: None,
        client_secret_expires_at: None,
    };
    let context = SealContext {
        team_id: "acme",
        namespace: NAMESPACE,
        secret_name: CREDENTIALS,
    };
    let envelope =
        crypto::seal(&keyring.active().public_key(), &context, &credentials).unwrap_or_default();
    let mut secret = crate::keystore::sealed_secret(NAMESPACE, CREDENTIALS, None, envelope);
    secret.metadata.resource_version = Some("7".into());
    secret
}

/// One scripted LWA answer.
#[derive(Clone, Copy, Debug)]
pub enum LwaAnswer {
    /// A new one-hour token.
    Token,
    /// HTTP 400 with this OAuth error code.
    Reject(OAuthErrorCode),
    /// HTTP 503: LWA is down.
    Unavailable,
}

/// An in-process LWA: answers with the scripted answers in order, then with tokens
/// `Atza|stand-in-1`, `-2`, … (numbered over all calls).
#[derive(Debug, Default)]
pub struct ScriptedLwa {
    script: Mutex<VecDeque<LwaAnswer>>,
    calls: Mutex<u32>,
}

impl ScriptedLwa {
    /// An LWA that answers `answers` first.
    pub fn answering(answers: &[LwaAnswer]) -> Self {
        Self {
            script: Mutex::new(answers.iter().copied().collect()),
            calls: Mutex::new(0),
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> u32 {
        *self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl TokenSource for ScriptedLwa {
    async fn refresh_grant(
        &self,
        _client_id: &str,
        _client_secret: &SecretString,
        _refresh_token: &SecretString,
    ) -> Result<TokenGrant, LwaError> {
        let call = {
            let mut calls = self
                .calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *calls += 1;
            *calls
        };
        let answer = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
            .unwrap_or(LwaAnswer::Token);
        match answer {
            LwaAnswer::Token => Ok(TokenGrant {
                access_token: SecretString::from(format!("{TOKEN_PREFIX}{call}")),
                token_type: "bearer".into(),
                expires_in: Duration::from_secs(3600),
            }),
            LwaAnswer::Reject(code) => Err(LwaError::Rejected { status: 400, code }),
            LwaAnswer::Unavailable => Err(LwaError::Unavailable {
                status: 503,
                code: None,
                retry_after: None,
            }),
        }
    }
}

/// An audit log kept in memory, to read back what a reconcile recorded.
#[derive(Clone, Default)]
pub struct AuditBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for AuditBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditBuffer {
    /// `action/outcome/reason` of each record after the segment's first.
    pub fn records(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned();
        text.lines()
            .skip(1)
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|r| {
                let field = |name: &str| r[name].as_str().unwrap_or("-").to_owned();
                format!(
                    "{}/{}/{}",
                    field("action"),
                    field("outcome"),
                    field("reason")
                )
            })
            .collect()
    }

    /// Everything written.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// A controller context over `client`, an engine over `lwa` on `clock`, and `keyring`; the
/// audit log goes to the returned buffer.
pub fn context(
    client: Client,
    lwa: ScriptedLwa,
    clock: Arc<ManualClock>,
    keyring: Keyring,
) -> (Arc<Context<ScriptedLwa>>, AuditBuffer) {
    let metrics = Metrics::new().unwrap_or_else(|err| panic!("metrics: {err}"));
    let buffer = AuditBuffer::default();
    let audit = AuditLog::to_writer(buffer.clone(), metrics.clone(), "test")
        .unwrap_or_else(|err| panic!("audit log: {err}"));
    let engine = RefreshEngine::new(lwa, EngineConfig::default(), clock.clone());
    let ctx = Context {
        recorder: Context::recorder(client.clone(), "amazon-seller-operator-0"),
        client,
        engine: Arc::new(engine),
        keyring: Arc::new(RwLock::new(keyring)),
        metrics,
        audit,
        clock,
        identity: "amazon-seller-operator-0".into(),
        applied: Default::default(),
        opened: Default::default(),
        concurrency: 1,
        tally: Default::default(),
        lwa_qps: 5.0,
        drift: Default::default(),
    };
    // No pod or namespace watch runs here: an empty, listed view.
    ctx.drift.assume_listed("");
    (Arc::new(ctx), buffer)
}

type Exchange = (Request<Body>, oneshot::Sender<Response<Body>>);

/// How long to wait for the reconcile's next request before failing the test: generous, the
/// machine may be busy.
const NEXT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The test's end of a mocked API server: receives every request the client makes, in order.
pub struct ApiServerVerifier {
    requests: mpsc::UnboundedReceiver<Exchange>,
    /// Requests made after the verifier was finished with (see [`ApiServerVerifier::finish`]).
    late: Arc<Mutex<Vec<String>>>,
    transcript: Vec<String>,
}

/// A client whose every request goes to the returned verifier.
pub fn mock_api() -> (Client, ApiServerVerifier) {
    let (sender, requests) = mpsc::unbounded_channel::<Exchange>();
    let late = Arc::new(Mutex::new(Vec::new()));
    let late_requests = late.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let sender = sender.clone();
        let late = late_requests.clone();
        async move {
            let line = format!("{} {}", request.method(), path_and_query(&request));
            let (reply, answer) = oneshot::channel();
            if sender.send((request, reply)).is_err() {
                late.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
                return Err("the mocked API server is closed");
            }
            answer
                .await
                .map_err(|_| "the mocked API server gave no answer")
        }
    });
    let verifier = ApiServerVerifier {
        requests,
        late,
        transcript: Vec::new(),
    };
    (Client::new(service, NAMESPACE), verifier)
}

fn path_and_query<B>(request: &Request<B>) -> String {
    request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// One request received, waiting for its answer.
pub struct Received {
    /// Its JSON body (`Null` when empty).
    pub body: Value,
    reply: oneshot::Sender<Response<Body>>,
}

impl Received {
    /// Answers with `status` and a JSON body.
    pub fn answer(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
            .unwrap_or_else(|err| panic!("response: {err}"));
        // The client may have given up (a timeout); the test then fails on its result.
        let _ = self.reply.send(response);
    }

    /// Answers 200 with the request's own body: what an apply or create returns, near enough.
    pub fn echo(self) -> Value {
        let body = self.body.clone();
        self.answer(200, &body);
        body
    }

    /// Answers 404 Not Found.
    pub fn not_found(self) {
        self.answer(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        );
    }
}

/// The API path of a Secret in the test namespace.
pub fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
}

/// The API path of [`Connection::test()`].
pub fn connection_path() -> String {
    format!(
        "/apis/connectors.openteam.io/v1alpha1/namespaces/{NAMESPACE}/amazonsellerconnections/{NAME}"
    )
}

/// The server-side apply query the operator's writes use.
pub const APPLY: &str = "?&force=true&fieldManager=amazon-seller-operator";

/// Requests received and left unanswered: while it is kept, their callers keep waiting.
pub struct Unanswered(#[allow(dead_code)] Vec<Exchange>);

impl ApiServerVerifier {
    /// Every request that comes within `within`, none of them answered: an API server that
    /// stops answering. Returns their lines and the requests, which stay pending while kept.
    pub async fn hold(&mut self, within: Duration) -> (Vec<String>, Unanswered) {
        let mut lines = Vec::new();
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(exchange)) = tokio::time::timeout_at(deadline, self.requests.recv()).await
        {
            lines.push(format!(
                "{} {}",
                exchange.0.method(),
                path_and_query(&exchange.0)
            ));
            held.push(exchange);
        }
        (lines, Unanswered(held))
    }

    /// The next request, which must be `method path` (path with its query).
    pub async fn expect(&mut self, method: Method, path: &str) -> Received {
        let expected = format!("{method} {path}");
        let Ok(Some((request, reply))) =
            tokio::time::timeout(NEXT_REQUEST_TIMEOUT, self.requests.recv()).await
        else {
            panic!(
                "expected {expected}, but no further request came; so far: {:#?}",
                self.transcript
            );
        };
        let line = format!("{} {}", request.method(), path_and_query(&request));
        self.transcript.push(line.clone());
        assert_eq!(line, expected, "requests so far: {:#?}", self.transcript);
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Received { body, reply }
    }

    /// GET of a Secret, answered with `secret` or 404.
    pub async fn get_secret(&mut self, name: &str, secret: Option<&Secret>) {
        let received = self.expect(Method::GET, &secret_path(name)).await;
        match secret {
            Some(secret) => received.answer(200, &to_json(secret)),
            None => received.not_found(),
        }
    }

    /// A server-side apply of a Secret: its body.
    pub async fn apply_secret(&mut self, name: &str) -> Secret {
        let path = format!("{}{APPLY}", secret_path(name));
        let body = self.expect(Method::PATCH, &path).await.echo();
        serde_json::from_value(body).unwrap_or_else(|err| panic!("applied Secret: {err}"))
    }

    /// A DELETE of a Secret, answered as if it existed (`exists`) or not.
    pub async fn delete_secret(&mut self, name: &str, exists: bool) {
        let path = format!("{}?", secret_path(name));
        let received = self.expect(Method::DELETE, &path).await;
        if exists {
            received.answer(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
            );
        } else {
            received.not_found();
        }
    }

    /// A server-side apply of `connection`'s status: the status written.
    pub async fn apply_status(
        &mut self,
        connection: &AmazonSellerConnection,
    ) -> AmazonSellerConnectionStatus {
        let path = format!("{}/status{APPLY}", connection_path());
        let received = self.expect(Method::PATCH, &path).await;
        // A status-only apply: nothing but the type and the status, so spec is never touched.
        let mut fields: Vec<&str> = received
            .body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        fields.sort_unstable();
        assert_eq!(fields, ["apiVersion", "kind", "status"]);
        assert_eq!(
            received.body["apiVersion"],
            "connectors.openteam.io/v1alpha1"
        );
        let status: AmazonSellerConnectionStatus =
            serde_json::from_value(received.body["status"].clone())
                .unwrap_or_else(|err| panic!("status patch: {err}"));
        let mut stored = connection.clone();
        stored.status = Some(status.clone());
        received.answer(200, &to_json(&stored));
        status
    }

    /// An Event created about the connection: `(type, reason, note)`.
    pub async fn create_event(&mut self) -> (String, String, String) {
        let path = format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events?");
        let body = self.expect(Method::POST, &path).await.echo();
        let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
        (text("type"), text("reason"), text("note"))
    }

    /// The finalizer's removal (a JSON patch on the connection): the patch.
    pub async fn remove_finalizer(&mut self, connection: &AmazonSellerConnection) -> Value {
        let received = self
            .expect(Method::PATCH, &format!("{}?", connection_path()))
            .await;
        let patch = received.body.clone();
        let mut stored = connection.clone();
        stored.metadata.finalizers = None;
        received.answer(200, &to_json(&stored));
        patch
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }

    /// Closes the server: any later request fails and is reported by [`Self::late`].
    pub fn finish(&mut self) {
        self.requests.close();
        while let Ok((request, _)) = self.requests.try_recv() {
            let line = format!("{} {}", request.method(), path_and_query(&request));
            self.late
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    }

    /// Requests that came after [`Self::finish`] (or were still queued then).
    pub fn late(&self) -> Vec<String> {
        self.late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
