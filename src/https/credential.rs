//! The runtime credential endpoint, `GET /v1/namespaces/{namespace}/connections/{name}/token`
//! on the webhook's HTTPS server (`--credential-endpoint-enabled`).
//!
//! A thin HTTP layer over [`crate::domain::credential_access`]: authenticate the caller
//! ([`super::caller`]: its projected ServiceAccount token, the pod the token is bound to and
//! that pod's gateway label), rate-limit per ServiceAccount, decide, and answer with the token
//! from the connection's sealed token store. Runs on every replica: it reads the
//! store, not the leader's memory.
//!
//! Every call, whatever its outcome, makes exactly one `credential_access` audit record and one
//! `amazon_seller_credential_access_total` increment. The bearer token and the access token are
//! never logged, audited, metered or put in an error; error bodies are
//! `{"error": "...", "reason": "..."}`, saying what failed and how to fix it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::caller::{API_TIMEOUT, Authenticated, Authenticator, CallerError, api_code};
use super::cluster::{Cluster, ClusterLookup};
use crate::api::AmazonSellerConnection;
use crate::crypto::Keyring;
use crate::domain::admission::Lookup;
use crate::domain::credential_access::{self, Access, Caller, ConnectionView};
use crate::domain::marketplace;
use crate::error::Categorized;
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::{AccessOutcome, Metrics};
use crate::rbac::{Permission, Scope};
use crate::secrets::token_store;

/// The route, in axum's path syntax.
pub const ROUTE: &str = "/v1/namespaces/{namespace}/connections/{name}/token";

/// The permissions of the endpoint's own API calls (see [`crate::rbac`]); with those of
/// [`super::caller`], the chart must grant them when it enables `--credential-endpoint-enabled`.
pub const RBAC: &[Permission] = &[
    // `token_body`: the connection's token store `<connection>-sp-api-sealed`.
    Permission::new("", "secrets", &["get"], Scope::Watched),
];

// A request makes at most three API calls of `API_TIMEOUT` each, which stays within the
// server's request deadline (8 s by default).
/// `Retry-After` (seconds) while the connection has no valid token or the view is not ready.
pub const RETRY_AFTER_NO_TOKEN: u64 = 10;
/// A token this close to expiry is not handed out: the caller could not use it.
const MIN_REMAINING: Duration = Duration::from_secs(30);
/// The limiter forgets idle callers after this many checks.
const RETAIN_EVERY: u64 = 1024;

/// The endpoint's settings, from the flags.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSettings {
    /// Sustained requests per second per ServiceAccount.
    pub qps: f64,
    /// Requests per ServiceAccount allowed in a burst.
    pub burst: u32,
    /// The namespaces the operator manages (`--watch-namespace`); `None`: all.
    pub watched: Option<Vec<String>>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            qps: 5.0,
            burst: 20,
            watched: None,
        }
    }
}

type CallerLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The endpoint: shared by every request.
pub struct CredentialEndpoint {
    client: Client,
    callers: Authenticator,
    cluster: Arc<ClusterLookup>,
    keyring: Arc<RwLock<Keyring>>,
    metrics: Metrics,
    audit: AuditLog,
    limiter: CallerLimiter,
    clock: DefaultClock,
    checks: AtomicU64,
    watched: Option<Vec<String>>,
}

impl std::fmt::Debug for CredentialEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEndpoint")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

/// What the audit record and the metric say about the caller, as far as it is known.
#[derive(Default)]
struct Known {
    actor: Option<String>,
    pod: Option<String>,
    gateway: Option<String>,
    team: Option<String>,
}

/// A refusal or failure, as the caller sees it.
struct Failure {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
            .retry_after(RETRY_AFTER_NO_TOKEN)
    }
}

impl From<CallerError> for Failure {
    fn from(err: CallerError) -> Self {
        if err.is_unauthenticated() {
            Self::new(StatusCode::UNAUTHORIZED, err.category(), err.to_string())
        } else {
            Self::unavailable(err.category(), err.to_string())
        }
    }
}

impl CredentialEndpoint {
    /// An endpoint reading connections and Team labels from `cluster` (the webhook's view).
    pub fn new(
        client: Client,
        cluster: Arc<ClusterLookup>,
        keyring: Arc<RwLock<Keyring>>,
        metrics: Metrics,
        audit: AuditLog,
        settings: &EndpointSettings,
    ) -> Result<Self, &'static str> {
        let burst = std::num::NonZeroU32::new(settings.burst)
            .ok_or("--credential-endpoint-burst must be at least 1")?;
        let period = (settings.qps.is_finite() && settings.qps > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / settings.qps).ok())
            .flatten()
            .and_then(Quota::with_period)
            .ok_or("--credential-endpoint-qps must be a positive number")?;
        Ok(Self {
            callers: Authenticator::new(client.clone()),
            client,
            cluster,
            keyring,
            metrics,
            audit,
            limiter: RateLimiter::keyed(period.allow_burst(burst)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
            watched: settings.watched.clone(),
        })
    }

    fn watches(&self, namespace: &str) -> bool {
        self.watched
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace))
    }

    /// Answers one request: exactly one audit record and one metric increment, whatever
    /// happens.
    pub async fn serve(&self, namespace: &str, name: &str, headers: &HeaderMap) -> Response {
        let mut known = Known::default();
        let result = self.decide(namespace, name, headers, &mut known).await;
        let (outcome, access, reason) = match &result {
            Ok(_) => (Outcome::Allowed, AccessOutcome::Allowed, "token_served"),
            Err(f) if f.status == StatusCode::TOO_MANY_REQUESTS => {
                (Outcome::Denied, AccessOutcome::RateLimited, f.reason)
            }
            Err(f) if f.status == StatusCode::SERVICE_UNAVAILABLE => {
                (Outcome::Failure, AccessOutcome::Unavailable, f.reason)
            }
            Err(f) => (Outcome::Denied, AccessOutcome::Denied, f.reason),
        };
        let mut event = AuditEvent::new(Category::CredentialAccess, "token_request", outcome)
            .namespace(namespace)
            .connection(name)
            .reason(reason);
        if let Some(actor) = &known.actor {
            event = event.actor(actor);
        }
        if let Some(pod) = &known.pod {
            event = event.pod(pod);
        }
        if let Some(gateway) = &known.gateway {
            event = event.gateway(gateway);
        }
        if let Some(team) = &known.team {
            event = event.team(team);
        }
        if let Err(err) = self.audit.record(event) {
            tracing::error!(error = %err, "failed to write an audit record");
        }
        self.metrics.record_credential_access(
            known.team.as_deref().unwrap_or("none"),
            known.gateway.as_deref().unwrap_or("none"),
            access,
        );
        match result {
            Ok(body) => {
                let mut response = (StatusCode::OK, body).into_response();
                set_headers(response.headers_mut(), None);
                response
            }
            Err(failure) => {
                tracing::debug!(
                    status = failure.status.as_u16(),
                    reason = failure.reason,
                    "runtime credential request refused"
                );
                let body = json!({"error": failure.message, "reason": failure.reason}).to_string();
                let mut response = (failure.status, body).into_response();
                set_headers(response.headers_mut(), failure.retry_after);
                if failure.status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"connectors.openteam.io\""),
                    );
                }
                response
            }
        }
    }

    async fn decide(
        &self,
        namespace: &str,
        name: &str,
        headers: &HeaderMap,
        known: &mut Known,
    ) -> Result<String, Failure> {
        let caller: Authenticated = self.callers.authenticate(headers).await?;
        known.actor = Some(caller.username.clone());
        known.pod = Some(caller.pod_name.clone());

        if let Err(not_until) = self.limiter.check_key(&caller.username) {
            // Throttled before any API call; the caller's Team comes from the cached view.
            known.team = self.cluster.namespace_team(&caller.namespace);
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "ServiceAccount {} is over its rate limit: fetch the token once per batch of \
                     SP-API requests and reuse it until shortly before expires_at",
                    caller.username
                ),
            )
            .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)));
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiter.retain_recent();
        }
        if !self.cluster.is_ready() {
            return Err(Failure::unavailable(
                "not_ready",
                "the operator has not finished reading the cluster yet: retry after Retry-After",
            ));
        }

        // The bound pod, read only where the operator manages connections (its RBAC covers
        // nothing else; a caller elsewhere is refused by the rule anyway).
        let gateway = if self.watches(&caller.namespace) {
            self.callers.gateway(&caller).await?
        } else {
            None
        };
        known.gateway.clone_from(&gateway);

        let watched = self.watches(namespace);
        if watched {
            self.cluster.prepare(namespace).await;
        }
        let namespace_team = watched
            .then(|| self.cluster.namespace_team(namespace))
            .flatten();
        let connection = watched
            .then(|| self.cluster.connection(namespace, name))
            .flatten();
        known.team = connection
            .as_ref()
            .map(|c| c.spec.team_id.clone())
            .or_else(|| namespace_team.clone());
        let view = connection.as_deref().map(|c| ConnectionView {
            team_id: c.spec.team_id.clone(),
            gateways: c.spec.gateways.clone(),
            suspended: c.spec.suspended,
            deleting: c.metadata.deletion_timestamp.is_some(),
            delivery: c.spec.delivery,
        });
        let caller_view = Caller {
            namespace: caller.namespace.clone(),
            gateway,
        };
        let access = credential_access::decide(&credential_access::Request {
            namespace,
            name,
            caller: &caller_view,
            namespace_team: namespace_team.as_deref(),
            connection: view.as_ref(),
            watched,
        });
        if let Access::Refused { refusal, message } = access {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
            return Err(Failure::new(status, refusal.reason(), message));
        }
        let Some(connection) = connection else {
            // The rule allows only existing connections; kept for the type checker.
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                "no such connection",
            ));
        };
        self.token_body(&connection).await
    }

    /// The token from the connection's store and the connection's non-secret facts.
    async fn token_body(&self, connection: &AmazonSellerConnection) -> Result<String, Failure> {
        let namespace = connection.namespace().unwrap_or_default();
        let name = connection.name_any();
        let no_token = || {
            Failure::unavailable(
                "no_valid_token",
                format!(
                    "connection {name:?} has no valid access token right now (see its Ready \
                     condition): retry after Retry-After"
                ),
            )
        };
        let market = marketplace::lookup(&connection.spec.marketplace).map_err(|_| no_token())?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let store =
            match tokio::time::timeout(API_TIMEOUT, api.get_opt(&token_store::name(&name))).await {
                Ok(Ok(Some(store))) => store,
                Ok(Ok(None)) => return Err(no_token()),
                Ok(Err(err)) => {
                    tracing::warn!(
                        code = api_code(&err),
                        "runtime credential endpoint: cannot read the token store: {err}"
                    );
                    return Err(Failure::unavailable(
                        "api_unavailable",
                        "the operator could not read the token store: retry after Retry-After",
                    ));
                }
                Err(_) => {
                    return Err(Failure::unavailable(
                        "api_unavailable",
                        "the API server did not answer in time: retry after Retry-After",
                    ));
                }
            };
        let context = token_store::context(&connection.spec.team_id, &namespace, &name);
        let opened = {
            let keyring = self
                .keyring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            token_store::open(&store, &keyring, &context)
        };
        let token = match opened {
            Ok(Some((token, _))) => token,
            Ok(None) => return Err(no_token()),
            Err(err) => {
                tracing::warn!(
                    connection = %format!("{namespace}/{name}"),
                    reason = err.category(),
                    "runtime credential endpoint: cannot open the token store"
                );
                return Err(no_token());
            }
        };
        let usable_until = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(MIN_REMAINING).unwrap_or_default())
            .unwrap_or(Timestamp::MAX);
        if token.expires_at <= usable_until {
            return Err(no_token());
        }
        Ok(json!({
            "access_token": token.access_token.expose(),
            "token_type": token.token_type,
            "expires_at": token.expires_at.to_string(),
            "marketplace_id": market.marketplace_id,
            "region": market.region.code(),
            "endpoint": market.endpoint(connection.spec.environment),
            "seller_id": connection.spec.seller_id,
        })
        .to_string())
    }
}

/// Every answer is JSON that no cache may keep.
fn set_headers(headers: &mut HeaderMap, retry_after: Option<u64>) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}
