//! The operator's Prometheus metrics: one registry, typed recording methods, text encoding.
//!
//! Every label value is bounded. Identifier labels (team, namespace, connection, gateway, key
//! id) are Kubernetes object names, and a value that does not have that shape is exported as
//! [`INVALID_LABEL`]. Category labels (outcome, reason, result, resource, operation) are
//! `&'static str` constants chosen by the caller (an error enum's `category()`, say), never
//! free text; a value that is not a short `snake_case`-like word is exported as
//! [`OTHER_LABEL`]. So neither an unbounded string nor a secret can become a label value.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Exported in place of an identifier label value that is not a Kubernetes-style name.
pub const INVALID_LABEL: &str = "invalid";

/// Exported in place of a category label value that is not a short bounded word.
pub const OTHER_LABEL: &str = "other";

/// The content type of [`Metrics::encode`]'s output, for the `/metrics` response.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How a token refresh attempt ended (`outcome` label of `amazon_seller_token_refresh_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// LWA issued a new access token.
    Success,
    /// LWA or the network failed; the reason says whether it is retried or terminal.
    Failure,
    /// No request was sent (rate limit or open circuit breaker); retried later.
    Skipped,
}

impl RefreshOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Skipped => "skipped",
        }
    }
}

/// An admission webhook decision (`decision` label of `amazon_seller_admission_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionDecision {
    /// The request was allowed (possibly mutated, possibly with warnings).
    Allowed,
    /// A rule was violated.
    Denied,
    /// The request itself was malformed.
    Invalid,
}

impl AdmissionDecision {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// Whether a pod was let near a runtime credential (`outcome` label of
/// `amazon_seller_credential_access_total`): a runtime Secret mount, or a call to the runtime
/// credential endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessOutcome {
    /// A listed gateway mounts the runtime Secret, or receives the token from the endpoint.
    Allowed,
    /// Anything else that tried (unauthenticated, another namespace, an unlisted gateway, …).
    Denied,
    /// An authenticated caller over its rate limit at the endpoint (429).
    RateLimited,
    /// The endpoint had no valid token to give, or could not check the caller (503).
    Unavailable,
}

impl AccessOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One operator key as the key-age and key-usage gauges see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStats {
    /// The key id.
    pub key_id: String,
    /// When the key was created, Unix seconds.
    pub created_at: i64,
    /// How many sealed credential Secrets are sealed to it.
    pub sealed_secrets: i64,
}

/// Failures of the metrics registry.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a programming error caught by tests).
    #[error("failed to register metric {name}: {source}")]
    Register {
        /// The metric name.
        name: &'static str,
        /// The registry's error.
        #[source]
        source: prometheus::Error,
    },
    /// The registry could not be rendered in the text format.
    #[error("failed to encode metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

impl crate::error::Categorized for MetricsError {
    fn category(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Encode(_) => "encode",
        }
    }
}

/// Every metric the operator exports. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: IntGaugeVec,
    token_expiry: GaugeVec,
    token_refresh: IntCounterVec,
    lwa_request_duration: Histogram,
    reconcile: IntCounterVec,
    reconcile_duration: Histogram,
    admission: IntCounterVec,
    credential_access: IntCounterVec,
    audit_events: IntCounterVec,
    sealed_secrets: IntGaugeVec,
    key_created: GaugeVec,
    client_secret_expiry: GaugeVec,
    unauthorized_mounts: IntGaugeVec,
    review_last: Gauge,
    lwa_demand: Gauge,
    lwa_rate_limit: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets for LWA token requests: a healthy call takes well under a second, the client's
/// timeout is tens of seconds.
const LWA_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets for one reconcile: mostly API-server round trips, sometimes an LWA call.
const RECONCILE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    made: prometheus::Result<C>,
) -> Result<C, MetricsError> {
    let collector = made.map_err(|source| MetricsError::Register { name, source })?;
    registry
        .register(Box::new(collector.clone()))
        .map_err(|source| MetricsError::Register { name, source })?;
    Ok(collector)
}

fn counter_vec(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    register(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

fn int_gauge_vec(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    register(
        registry,
        name,
        IntGaugeVec::new(Opts::new(name, help), labels),
    )
}

fn gauge_vec(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, MetricsError> {
    register(registry, name, GaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(
    registry: &Registry,
    name: &'static str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, MetricsError> {
    register(
        registry,
        name,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

impl Metrics {
    /// A fresh registry with every metric registered and `amazon_seller_build_info` set.
    ///
    /// Fails only on a programming error (a duplicate or malformed metric), which the unit
    /// tests catch.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        let build_info = int_gauge_vec(
            r,
            "amazon_seller_build_info",
            "Always 1; the version label names the running operator build.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let inner = Inner {
            connections: int_gauge_vec(
                r,
                "amazon_seller_connections",
                "AmazonSellerConnections per team, by whether their Ready condition is True.",
                &["team", "ready"],
            )?,
            token_expiry: gauge_vec(
                r,
                "amazon_seller_token_expiry_timestamp_seconds",
                "When the access token in a connection's runtime Secret expires, Unix seconds.",
                &["namespace", "connection", "team"],
            )?,
            token_refresh: counter_vec(
                r,
                "amazon_seller_token_refresh_total",
                "Access token refresh attempts by outcome and bounded reason.",
                &["team", "outcome", "reason"],
            )?,
            lwa_request_duration: histogram(
                r,
                "amazon_seller_lwa_request_duration_seconds",
                "Duration of requests to the Login with Amazon token endpoint.",
                LWA_BUCKETS,
            )?,
            reconcile: counter_vec(
                r,
                "amazon_seller_reconcile_total",
                "Reconciles of AmazonSellerConnections by result (success or an error category).",
                &["result"],
            )?,
            reconcile_duration: histogram(
                r,
                "amazon_seller_reconcile_duration_seconds",
                "Duration of one reconcile of an AmazonSellerConnection.",
                RECONCILE_BUCKETS,
            )?,
            admission: counter_vec(
                r,
                "amazon_seller_admission_requests_total",
                "Admission requests by resource, operation, decision and bounded reason.",
                &["resource", "operation", "decision", "reason"],
            )?,
            credential_access: counter_vec(
                r,
                "amazon_seller_credential_access_total",
                "Attempts to reference a runtime credential Secret or to fetch a token from the runtime credential endpoint, by team, gateway and outcome.",
                &["team", "gateway", "outcome"],
            )?,
            audit_events: counter_vec(
                r,
                "amazon_seller_audit_events_total",
                "Audit log records written, by category and outcome.",
                &["category", "outcome"],
            )?,
            sealed_secrets: int_gauge_vec(
                r,
                "amazon_seller_sealed_secrets",
                "Sealed credential Secrets per operator encryption key.",
                &["key_id"],
            )?,
            key_created: gauge_vec(
                r,
                "amazon_seller_encryption_key_created_timestamp_seconds",
                "When each operator encryption key was created, Unix seconds.",
                &["key_id"],
            )?,
            client_secret_expiry: gauge_vec(
                r,
                "amazon_seller_client_secret_expiry_timestamp_seconds",
                "When a connection's LWA client secret expires, Unix seconds.",
                &["namespace", "connection"],
            )?,
            unauthorized_mounts: int_gauge_vec(
                r,
                "amazon_seller_unauthorized_mounts",
                "Pods that reference a connection's runtime Secret, sealed credentials or token store outside the rules (a gateway no longer listed, a pod admitted before its connection existed, a changed gateway label or Team).",
                &["namespace", "connection"],
            )?,
            review_last: register(
                r,
                "amazon_seller_security_log_review_last_timestamp_seconds",
                Gauge::new(
                    "amazon_seller_security_log_review_last_timestamp_seconds",
                    "End of the latest recorded SecurityLogReview, Unix seconds; 0 if none.",
                ),
            )?,
            lwa_demand: register(
                r,
                "amazon_seller_lwa_demand_calls_per_second",
                Gauge::new(
                    "amazon_seller_lwa_demand_calls_per_second",
                    "LWA token calls per second the watched connections need in steady state.",
                ),
            )?,
            lwa_rate_limit: register(
                r,
                "amazon_seller_lwa_rate_limit_calls_per_second",
                Gauge::new(
                    "amazon_seller_lwa_rate_limit_calls_per_second",
                    "The configured sustained LWA rate limit (--lwa-qps).",
                ),
            )?,
            registry,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Sets the per-team connection counts, replacing every earlier count so that teams
    /// without connections disappear. Items are `(team, ready, count)`.
    pub fn set_connection_counts<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a str, bool, i64)>,
    ) {
        let gauge = &self.inner.connections;
        gauge.reset();
        for (team, ready, count) in counts {
            let ready = if ready { "true" } else { "false" };
            gauge
                .with_label_values(&[identifier(team), ready])
                .add(count);
        }
    }

    /// Records the LWA calls per second the connections need, and the configured limit.
    pub fn set_lwa_demand(&self, demand: f64, limit: f64) {
        self.inner.lwa_demand.set(demand);
        self.inner.lwa_rate_limit.set(limit);
    }

    /// Records when the access token of `namespace/connection` expires (Unix seconds).
    pub fn set_token_expiry(&self, namespace: &str, connection: &str, team: &str, expires_at: i64) {
        self.inner
            .token_expiry
            .with_label_values(&[
                identifier(namespace),
                identifier(connection),
                identifier(team),
            ])
            // Unix seconds fit an f64 exactly for any realistic date.
            .set(expires_at as f64);
    }

    /// Removes the token-expiry series of a connection whose runtime Secret is gone
    /// (suspended, credentials rejected and the token withdrawn).
    pub fn clear_token_expiry(&self, namespace: &str, connection: &str, team: &str) {
        // An absent series is fine: there is nothing to remove.
        let _ = self.inner.token_expiry.remove_label_values(&[
            identifier(namespace),
            identifier(connection),
            identifier(team),
        ]);
    }

    /// Records when the LWA client secret of `namespace/connection` expires (Unix seconds).
    pub fn set_client_secret_expiry(&self, namespace: &str, connection: &str, expires_at: i64) {
        self.inner
            .client_secret_expiry
            .with_label_values(&[identifier(namespace), identifier(connection)])
            .set(expires_at as f64);
    }

    /// Removes the client-secret-expiry series of a connection (expiry no longer known).
    pub fn clear_client_secret_expiry(&self, namespace: &str, connection: &str) {
        let _ = self
            .inner
            .client_secret_expiry
            .remove_label_values(&[identifier(namespace), identifier(connection)]);
    }

    /// Removes every per-connection series of a deleted connection, so that no alert keeps
    /// firing for an object that no longer exists.
    pub fn forget_connection(&self, namespace: &str, connection: &str, team: &str) {
        self.clear_token_expiry(namespace, connection, team);
        self.clear_client_secret_expiry(namespace, connection);
        let _ = self
            .inner
            .unauthorized_mounts
            .remove_label_values(&[identifier(namespace), identifier(connection)]);
    }

    /// Records how many pods reference the Secrets of `namespace/connection` outside the rules.
    pub fn set_unauthorized_mounts(&self, namespace: &str, connection: &str, pods: usize) {
        self.inner
            .unauthorized_mounts
            .with_label_values(&[identifier(namespace), identifier(connection)])
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
    }

    /// Counts one token refresh attempt. `reason` is a bounded category such as an LWA error
    /// code (`invalid_grant`) or `timeout`; use `"none"` for a success.
    pub fn record_refresh(&self, team: &str, outcome: RefreshOutcome, reason: &'static str) {
        self.inner
            .token_refresh
            .with_label_values(&[identifier(team), outcome.as_str(), category(reason)])
            .inc();
    }

    /// Observes the duration of one request to the LWA token endpoint.
    pub fn observe_lwa_request(&self, duration: Duration) {
        self.inner
            .lwa_request_duration
            .observe(duration.as_secs_f64());
    }

    /// Counts one reconcile and observes its duration. `result` is `"success"` or the error's
    /// bounded `category()`.
    pub fn record_reconcile(&self, result: &'static str, duration: Duration) {
        self.inner
            .reconcile
            .with_label_values(&[category(result)])
            .inc();
        self.inner
            .reconcile_duration
            .observe(duration.as_secs_f64());
    }

    /// Counts one admission decision. `resource` is the plural resource name (`pods`),
    /// `operation` the admission operation (`CREATE`), `reason` a bounded rule name
    /// (`"none"` when allowed without remarks).
    pub fn record_admission(
        &self,
        resource: &'static str,
        operation: &'static str,
        decision: AdmissionDecision,
        reason: &'static str,
    ) {
        self.inner
            .admission
            .with_label_values(&[
                category(resource),
                category(operation),
                decision.as_str(),
                category(reason),
            ])
            .inc();
    }

    /// Counts one attempt to reference a runtime credential Secret or to fetch a token from the
    /// runtime credential endpoint. `gateway` is the pod's gateway label, or `"none"` for a pod
    /// without one (or an unauthenticated caller).
    pub fn record_credential_access(&self, team: &str, gateway: &str, outcome: AccessOutcome) {
        self.inner
            .credential_access
            .with_label_values(&[identifier(team), identifier(gateway), outcome.as_str()])
            .inc();
    }

    /// Counts one audit record; called by the audit log for every record it writes.
    pub(crate) fn record_audit_event(&self, category_label: &'static str, outcome: &'static str) {
        self.inner
            .audit_events
            .with_label_values(&[category(category_label), category(outcome)])
            .inc();
    }

    /// Replaces the per-key gauges (creation time and sealed Secret count) with `keys`, so a
    /// removed key's series disappear.
    pub fn set_encryption_keys<'a>(&self, keys: impl IntoIterator<Item = &'a KeyStats>) {
        self.inner.sealed_secrets.reset();
        self.inner.key_created.reset();
        for key in keys {
            let id = identifier(&key.key_id);
            self.inner
                .sealed_secrets
                .with_label_values(&[id])
                .set(key.sealed_secrets);
            self.inner
                .key_created
                .with_label_values(&[id])
                .set(key.created_at as f64);
        }
    }

    /// Sets the time of the latest security log review (Unix seconds); `None` when no review
    /// was ever recorded, exported as 0 so that the overdue alert fires.
    pub fn set_security_log_review_last(&self, reviewed_until: Option<i64>) {
        self.inner
            .review_last
            .set(reviewed_until.map_or(0.0, |t| t as f64));
    }

    /// The whole registry in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let families = self.inner.registry.gather();
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .map_err(MetricsError::Encode)?;
        Ok(text)
    }
}

/// The label value for a Kubernetes object name (or key id, or gateway id): kept when it is
/// 1-253 characters of ASCII letters, digits, `-`, `.` and `_` starting and ending with a
/// letter or digit, otherwise [`INVALID_LABEL`].
pub fn identifier(value: &str) -> &str {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let ok = (1..=253).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok { value } else { INVALID_LABEL }
}

/// The label value for a bounded category: kept when it is 1-48 ASCII letters, digits and
/// `_`, starting with a letter, otherwise [`OTHER_LABEL`].
pub fn category(value: &'static str) -> &'static str {
    if is_category(value) {
        value
    } else {
        OTHER_LABEL
    }
}

/// Whether `value` has the shape of a bounded category word (see [`category`]).
pub(crate) fn is_category(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=48).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().expect("metrics register")
    }

    /// The sample lines of `name` in the text output, without comments.
    fn samples(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn build_info_carries_the_crate_version() {
        let text = metrics().encode().unwrap();
        assert!(text.contains(&format!(
            "amazon_seller_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn deleted_connection_loses_every_per_connection_series() {
        let m = metrics();
        m.set_token_expiry("team-acme", "acme-us", "acme", 1_800_000_000);
        m.set_client_secret_expiry("team-acme", "acme-us", 1_900_000_000);
        m.set_token_expiry("team-acme", "acme-de", "acme", 1_800_000_100);
        m.set_client_secret_expiry("team-acme", "acme-de", 1_900_000_100);
        m.set_unauthorized_mounts("team-acme", "acme-us", 2);
        m.set_unauthorized_mounts("team-acme", "acme-de", 0);

        m.forget_connection("team-acme", "acme-us", "acme");

        let text = m.encode().unwrap();
        assert!(!text.contains("connection=\"acme-us\""), "{text}");
        assert_eq!(
            samples(&text, "amazon_seller_token_expiry_timestamp_seconds"),
            [
                "amazon_seller_token_expiry_timestamp_seconds{connection=\"acme-de\",namespace=\"team-acme\",team=\"acme\"} 1800000100"
            ]
        );
        assert_eq!(
            samples(
                &text,
                "amazon_seller_client_secret_expiry_timestamp_seconds"
            )
            .len(),
            1
        );
        assert_eq!(
            samples(&text, "amazon_seller_unauthorized_mounts"),
            ["amazon_seller_unauthorized_mounts{connection=\"acme-de\",namespace=\"team-acme\"} 0"]
        );
        // Forgetting twice (or an unknown connection) is harmless.
        m.forget_connection("team-acme", "acme-us", "acme");
        m.forget_connection("nowhere", "nothing", "nobody");
    }

    #[test]
    fn connection_counts_replace_earlier_counts() {
        let m = metrics();
        m.set_connection_counts([("acme", true, 2), ("acme", false, 1), ("globex", true, 1)]);
        m.set_connection_counts([("acme", true, 3)]);
        let text = m.encode().unwrap();
        assert_eq!(
            samples(&text, "amazon_seller_connections"),
            ["amazon_seller_connections{ready=\"true\",team=\"acme\"} 3"]
        );
    }

    #[test]
    fn removed_encryption_key_series_disappear() {
        let m = metrics();
        let old = KeyStats {
            key_id: "k1".into(),
            created_at: 1_700_000_000,
            sealed_secrets: 4,
        };
        let new = KeyStats {
            key_id: "k2".into(),
            created_at: 1_710_000_000,
            sealed_secrets: 0,
        };
        m.set_encryption_keys([&old, &new]);
        m.set_encryption_keys([&new]);
        let text = m.encode().unwrap();
        assert!(!text.contains("key_id=\"k1\""), "{text}");
        assert!(text.contains(
            "amazon_seller_encryption_key_created_timestamp_seconds{key_id=\"k2\"} 1710000000"
        ));
        assert!(text.contains("amazon_seller_sealed_secrets{key_id=\"k2\"} 0"));
    }

    #[test]
    fn free_text_and_secret_looking_values_never_become_label_values() {
        let m = metrics();
        // A leaked &'static str holding a token-like value, as a careless caller might pass.
        let leaked: &'static str = "Atza|IwEBIExampleAccessToken";
        m.record_refresh("acme", RefreshOutcome::Failure, leaked);
        m.record_refresh(
            "acme",
            RefreshOutcome::Failure,
            "failed to call LWA: connection reset",
        );
        m.record_admission(
            "pods",
            "CREATE",
            AdmissionDecision::Denied,
            "x".repeat(49).leak(),
        );
        m.record_credential_access("Atzr|IwEBRefresh", "gw main", AccessOutcome::Denied);
        m.set_token_expiry("team-acme", "amzn1.oa2-cs.v1.|secret", "acme", 1);

        let text = m.encode().unwrap();
        for forbidden in [
            "Atza",
            "Atzr",
            "connection reset",
            "xxxxxxxx",
            "gw main",
            "amzn1",
        ] {
            assert!(
                !text.contains(forbidden),
                "{forbidden} leaked into:\n{text}"
            );
        }
        assert!(text.contains("reason=\"other\""));
        assert!(text.contains("team=\"invalid\""));
    }

    #[test]
    fn every_label_value_in_the_output_is_bounded() {
        let m = metrics();
        m.record_refresh("acme", RefreshOutcome::Success, "none");
        m.record_refresh("acme", RefreshOutcome::Failure, "invalid_grant");
        m.record_admission(
            "pods",
            "CREATE",
            AdmissionDecision::Denied,
            "gateway_not_listed",
        );
        m.record_credential_access("acme", "gw-main", AccessOutcome::Allowed);
        m.record_reconcile("success", Duration::from_millis(20));
        m.record_audit_event("credential_access", "denied");
        m.set_token_expiry("team-acme", "acme-us", "acme", 1_800_000_000);
        let text = m.encode().unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, labels)) = line.split_once('{') else {
                continue;
            };
            let labels = labels.split_once('}').unwrap().0;
            for pair in labels.split(',') {
                let (_, value) = pair.split_once('=').unwrap();
                let value = value.trim_matches('"');
                assert!(
                    identifier(value) == value || value.parse::<f64>().is_ok() || value == "+Inf",
                    "unbounded label value {value:?} in {line}"
                );
                checked += 1;
            }
        }
        assert!(checked > 20);
    }

    #[test]
    fn encoded_output_is_well_formed_text_exposition() {
        let m = metrics();
        m.record_refresh("acme", RefreshOutcome::Success, "none");
        m.observe_lwa_request(Duration::from_millis(180));
        m.record_reconcile("success", Duration::from_millis(20));
        m.set_security_log_review_last(None);
        let text = m.encode().unwrap();
        let mut families = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                families.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            // name{labels} value
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("amazon_seller_"), "{line}");
            let family = families.keys().find(|f| {
                name == f.as_str()
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
            });
            assert!(family.is_some(), "sample before its # TYPE line: {line}");
        }
        assert_eq!(
            families["amazon_seller_lwa_request_duration_seconds"],
            "histogram"
        );
        assert_eq!(families["amazon_seller_token_refresh_total"], "counter");
        assert!(text.contains("amazon_seller_security_log_review_last_timestamp_seconds 0"));
    }

    #[test]
    fn clones_share_one_registry() {
        let m = metrics();
        let clone = m.clone();
        clone.record_reconcile("success", Duration::from_millis(1));
        assert!(
            m.encode()
                .unwrap()
                .contains("amazon_seller_reconcile_total{result=\"success\"} 1")
        );
    }

    #[test]
    fn identifier_and_category_shapes() {
        assert_eq!(identifier("team-acme"), "team-acme");
        assert_eq!(identifier("a.b_c-1"), "a.b_c-1");
        assert_eq!(identifier(""), INVALID_LABEL);
        assert_eq!(identifier("-x"), INVALID_LABEL);
        assert_eq!(identifier(&"a".repeat(254)), INVALID_LABEL);
        assert_eq!(category("invalid_grant"), "invalid_grant");
        assert_eq!(category("CREATE"), "CREATE");
        assert_eq!(category("1abc"), OTHER_LABEL);
        assert_eq!(category("has space"), OTHER_LABEL);
    }
}
