//! What a plan asks for: the Secrets to write or delete, the status, metric updates, audit
//! records and Events. Plain values; [`crate::controller::reconcile`](mod@crate::controller::reconcile) turns them into API calls.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;

use crate::api::AmazonSellerConnectionStatus;
use crate::observability::audit::{Category, Outcome};
use crate::observability::metrics::RefreshOutcome;
use crate::secrets::runtime_secret::Published;

/// What to do about one of the connection's Secrets.
#[derive(Clone, PartialEq)]
pub enum SecretChange<T> {
    /// Leave it as it is (up to date, or absent and not wanted).
    Keep,
    /// Write it by server-side apply: the runtime Secret itself, or the token to seal into the
    /// token store (sealing is randomised, so it happens when the plan is applied).
    Apply(T),
    /// Delete it.
    Delete,
}

impl<T> fmt::Debug for SecretChange<T> {
    /// The variant only: what is applied holds the access token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Keep => "Keep",
            Self::Apply(_) => "Apply(..)",
            Self::Delete => "Delete",
        })
    }
}

/// The access-token expiry gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenExpiry {
    /// A token is published: its expiry, Unix seconds.
    Set(i64),
    /// No token is published: remove the series.
    Clear,
}

/// The metric updates a reconcile makes (besides its own result and duration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricUpdates {
    /// The client secret's expiry (Unix seconds), when the credentials were opened.
    pub client_secret_expiry: Option<i64>,
    /// One count of `amazon_seller_token_refresh_total`: outcome and reason.
    pub refresh: Option<(RefreshOutcome, &'static str)>,
    /// One LWA request's latency, when LWA issued a token.
    pub lwa_latency: Option<Duration>,
    /// The token-expiry gauge, once the Secrets are written.
    pub token_expiry: TokenExpiry,
    /// Pods referencing the connection's Secrets outside the rules
    /// (`amazon_seller_unauthorized_mounts`).
    pub unauthorized_mounts: usize,
}

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Something went as it should.
    Normal,
    /// Someone should look.
    Warning,
}

/// An Event about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventKind,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// For people; never a secret.
    pub note: String,
}

/// An audit record about the connection (actor, team, namespace and connection are added
/// when it is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditNote {
    /// The policy's category.
    pub category: Category,
    /// A bounded verb.
    pub action: &'static str,
    /// Success or failure.
    pub outcome: Outcome,
    /// A bounded reason.
    pub reason: &'static str,
}

/// A report of a condition transition, in the order it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// An audit record.
    Audit(AuditNote),
    /// An Event.
    Event(EventNote),
    /// A pod outside the rules, first listed: an audit record naming the pod and its gateway,
    /// and a Warning Event.
    UnauthorizedMount(PodReport),
}

/// An eviction the plan asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The pod's name.
    pub pod: String,
    /// Its uid: a newer pod of the same name is left alone.
    pub uid: String,
    /// Its gateway label, for the audit record.
    pub gateway: Option<String>,
    /// The first rule it breaks.
    pub reason: &'static str,
}

/// A pod outside the rules reported once, when it is first listed in the status: a Warning
/// Event on the connection and a `gateway_activity` / `unauthorized_mount` audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodReport {
    /// The pod's name.
    pub pod: String,
    /// Its gateway label.
    pub gateway: Option<String>,
    /// The first rule it breaks (the audit record's reason).
    pub reason: &'static str,
    /// The Event.
    pub event: EventNote,
}

/// Everything a reconcile writes and reports, in the order [`crate::controller::reconcile`](mod@crate::controller::reconcile) applies it.
#[derive(Clone, Debug)]
pub struct ReconcilePlan {
    /// Counted before anything is written.
    pub metrics: MetricUpdates,
    /// What this reconcile learned about the credentials and the token (an open failure, LWA's
    /// answer), recorded before anything is written.
    pub audit: Vec<AuditNote>,
    /// The runtime Secret, written before the status so `Ready` never claims a token that is
    /// not there.
    pub runtime_secret: SecretChange<Secret>,
    /// The token store: `Apply` carries the token to seal.
    pub token_store: SecretChange<Published>,
    /// What keeps the connection from working that someone must fix (`credentials_missing`,
    /// `credentials_unreadable`, `invalid_spec`): the reconcile is counted as failed with it,
    /// although it did all it could.
    pub problem: Option<&'static str>,
    /// The status to store.
    pub status: AmazonSellerConnectionStatus,
    /// Whether it differs from the stored one (a write is needed).
    pub status_changed: bool,
    /// Condition transitions (connected, suspended, resumed, a pod outside the rules first
    /// listed), reported once with the status write that makes them.
    pub transitions: Vec<Report>,
    /// Pods to evict (`spec.onUnauthorizedMount: Evict`), after the status is written.
    pub evictions: Vec<Eviction>,
    /// Events about this reconcile's refresh, published last.
    pub events: Vec<EventNote>,
    /// When to look again; `None` waits for a change.
    pub requeue: Option<Duration>,
}

pub(super) fn event(kind: EventKind, reason: &'static str, note: String) -> EventNote {
    EventNote { kind, reason, note }
}

pub(super) fn audit(
    category: Category,
    action: &'static str,
    outcome: Outcome,
    reason: &'static str,
) -> AuditNote {
    AuditNote {
        category,
        action,
        outcome,
        reason,
    }
}
