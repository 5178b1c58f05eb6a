//! The token-and-credentials half of a plan: from how far the reconcile got (and LWA's answer)
//! to the conditions, the token to publish, and what to count, audit and announce.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::conditions::{
    CredentialsRejection, accepted, credentials_valid, not_suspended,
    observed_credentials_condition, ready, serving,
};
use super::drift::withheld_message;
use super::outputs::{audit, event};
use super::{
    AuditNote, CredentialsState, EventKind, EventNote, Progress, RECHECK, ReconcileInputs,
    RefreshAttempt, Stop, TokenOutcome, renew_before,
};
use crate::api::AmazonSellerConnection;
use crate::domain::conditions::{Desired, SUSPENDED, Status};
use crate::error::Categorized;
use crate::lwa::{ConnectionKey, RefreshError, WaitReason, clock, schedule};
use crate::names::LWA_CREDENTIALS_SECRET_TYPE;
use crate::observability::audit::{Category, Outcome};
use crate::observability::metrics::RefreshOutcome;
use crate::secrets::runtime_secret::{Published, whole_seconds};

/// What the token-and-credentials half of the plan wants, before it becomes Secrets and status.
pub(super) struct Intent {
    pub(super) conditions: Vec<Desired>,
    /// `Some(token)` publishes it; `None` removes the runtime Secret and the token store.
    pub(super) publish: Option<Published>,
    pub(super) next_refresh_at: Option<Timestamp>,
    pub(super) last_refresh_at: Option<Timestamp>,
    pub(super) key_id: Option<String>,
    pub(super) failed_attempts: u32,
    pub(super) requeue: Option<Duration>,
    pub(super) events: Vec<EventNote>,
    pub(super) audit: Vec<AuditNote>,
    pub(super) refresh_metric: Option<(RefreshOutcome, &'static str)>,
    pub(super) lwa_latency: Option<Duration>,
    pub(super) client_secret_expiry: Option<i64>,
    /// What keeps the connection from working that someone must fix (a bounded name): the
    /// reconcile counts as failed with it.
    pub(super) problem: Option<&'static str>,
}

impl Intent {
    fn without_token(conditions: Vec<Desired>, requeue: Option<Duration>) -> Self {
        Self {
            conditions,
            publish: None,
            next_refresh_at: None,
            last_refresh_at: None,
            key_id: None,
            failed_attempts: 0,
            requeue,
            events: Vec::new(),
            audit: Vec::new(),
            refresh_metric: None,
            lwa_latency: None,
            client_secret_expiry: None,
            problem: None,
        }
    }

    /// A connection that cannot work until someone fixes `problem`: Ready and CredentialsValid
    /// say why, a Warning Event says it too, and it is looked at again after [`RECHECK`].
    fn broken(
        problem: &'static str,
        reason: &'static str,
        ready_message: String,
        credentials_message: String,
        credentials_status: Status,
    ) -> Self {
        let mut intent = Self::without_token(
            vec![
                ready(Status::False, reason, ready_message.clone()),
                credentials_valid(credentials_status, reason, credentials_message),
                not_suspended(),
            ],
            Some(RECHECK),
        );
        intent.problem = Some(problem);
        intent
            .events
            .push(event(EventKind::Warning, reason, ready_message));
        intent
    }
}

/// Why a due refresh waits.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Its turn at the LWA rate limit.
    RateLimit,
    /// The circuit breaker pauses everyone while LWA fails.
    CircuitOpen,
    /// Its own refreshes fail (the category): backoff.
    Backoff(&'static str),
}

/// How long from `now` until `at` (to the millisecond, so a turn at the rate limit is not
/// missed by rounding), at least a second, so a requeue never spins.
fn wait_until(now: Timestamp, at: Timestamp) -> Duration {
    let millis = clock::since(at, now).as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)).max(Duration::from_secs(1))
}

/// The conditions, token and reports from how far the reconcile got.
pub(super) fn intend(inputs: &ReconcileInputs<'_>) -> Intent {
    let connection = inputs.connection;
    let spec = &connection.spec;
    let credentials = match &inputs.progress {
        Progress::Stopped(Stop::InvalidSpec { summary, details }) => {
            return Intent::broken(
                "invalid_spec",
                "InvalidSpec",
                summary.clone(),
                details.clone(),
                Status::Unknown,
            );
        }
        Progress::Stopped(Stop::Suspended) => {
            let mut intent = Intent::without_token(
                vec![
                    ready(
                        Status::False,
                        "Suspended",
                        "suspended: the runtime Secret is removed and no token is refreshed",
                    ),
                    credentials_valid(Status::Unknown, "Suspended", "not checked while suspended"),
                    Desired::new(
                        SUSPENDED,
                        Status::True,
                        "SuspendedBySpec",
                        "spec.suspended is true",
                    ),
                ],
                None,
            );
            intent.key_id = connection.status.as_ref().and_then(|s| s.key_id.clone());
            return intent;
        }
        Progress::Stopped(Stop::Withheld) => {
            let reason = "UnauthorizedMounts";
            let mut intent = Intent::without_token(
                vec![
                    ready(Status::False, reason, withheld_message(connection)),
                    credentials_valid(
                        Status::Unknown,
                        reason,
                        "not checked while the runtime Secret is withheld",
                    ),
                    not_suspended(),
                ],
                None,
            );
            intent.key_id = connection.status.as_ref().and_then(|s| s.key_id.clone());
            return intent;
        }
        Progress::Credentials(credentials) => credentials,
    };
    let unreadable = |message: String| {
        Intent::broken(
            "credentials_unreadable",
            "CredentialsUnreadable",
            message.clone(),
            message,
            Status::False,
        )
    };
    let (key_id, client_secret_expires_at, outcome, failed_attempts) = match credentials {
        CredentialsState::Missing => {
            let message = format!(
                "credentials Secret {:?} not found in namespace {}: create it with `amazon-seller-operator seal`",
                spec.credentials_secret_name,
                connection.namespace().unwrap_or_default()
            );
            let mut intent = Intent::broken(
                "credentials_missing",
                "CredentialsMissing",
                message.clone(),
                message,
                Status::False,
            );
            intent.audit.push(audit(
                Category::ConnectorSetup,
                "open_credentials",
                Outcome::Failure,
                "credentials_missing",
            ));
            return intent;
        }
        CredentialsState::NotSealed => {
            let mut intent = unreadable(format!(
                "Secret {:?} is not a sealed credentials Secret (type {LWA_CREDENTIALS_SECRET_TYPE} with data key \"sealed\")",
                spec.credentials_secret_name
            ));
            intent.audit.push(audit(
                Category::ConnectorSetup,
                "open_credentials",
                Outcome::Failure,
                "not_sealed",
            ));
            return intent;
        }
        CredentialsState::Unopenable(err) => {
            let mut intent =
                unreadable(format!("Secret {:?}: {err}", spec.credentials_secret_name));
            intent.audit.push(audit(
                Category::ConnectorSetup,
                "open_credentials",
                Outcome::Failure,
                err.category(),
            ));
            return intent;
        }
        CredentialsState::Usable {
            key_id,
            client_secret_expires_at,
            outcome,
            failed_attempts,
        } => (key_id, client_secret_expires_at, outcome, failed_attempts),
    };

    let now = inputs.now;
    let current = inputs.secrets.token_in_use(now);
    let mut intent = Intent::without_token(Vec::new(), None);
    intent.key_id = Some(key_id.clone());
    intent.client_secret_expiry = client_secret_expires_at.map(Timestamp::as_second);
    intent.last_refresh_at = current.as_ref().map(|t| t.issued_at);
    match outcome {
        TokenOutcome::Kept { refresh_at: at } => {
            intent.requeue = Some(wait_until(now, *at));
            intent.next_refresh_at = Some(*at);
            intent.conditions = match &current {
                Some(token) => vec![serving(token), accepted(), not_suspended()],
                // Not reached: a token is kept only while it is valid.
                None => vec![
                    ready(Status::False, "RefreshPending", "no valid token yet"),
                    observed_credentials_condition(connection),
                    not_suspended(),
                ],
            };
            intent.publish = current;
        }
        TokenOutcome::Waiting { at, reason } => {
            let why = match reason {
                WaitReason::RateLimit => Wait::RateLimit,
                WaitReason::CircuitOpen => Wait::CircuitOpen,
                WaitReason::Backoff { category, .. } => Wait::Backoff(category),
            };
            wait(connection, &mut intent, current, why, *at, now);
        }
        TokenOutcome::Asked(RefreshAttempt {
            result: Ok(refreshed),
            took,
        }) => {
            intent.lwa_latency = Some(*took);
            intent.refresh_metric = Some((RefreshOutcome::Success, "refreshed"));
            intent.audit.push(audit(
                Category::CredentialAccess,
                "token_refresh",
                Outcome::Success,
                "refreshed",
            ));
            let token = Published {
                access_token: refreshed.token.access_token.clone(),
                token_type: refreshed.token.token_type.clone(),
                expires_at: whole_seconds(refreshed.token.expires_at),
                issued_at: whole_seconds(refreshed.token.issued_at),
            };
            // From the whole-second values the Secret keeps, so a later reconcile reading them
            // back computes the same instant.
            let key = ConnectionKey::new(
                &connection.namespace().unwrap_or_default(),
                &connection.name_any(),
            );
            let refresh_at = schedule::refresh_at(
                token.state(),
                renew_before(connection),
                schedule::jitter_seed(key.as_str()),
            );
            if refreshed.used_next_secret {
                intent.events.push(event(
                    EventKind::Warning,
                    "NextClientSecretUsed",
                    "LWA rejected the client secret and accepted nextClientSecret: seal it as the client secret".into(),
                ));
            }
            intent.conditions = vec![serving(&token), accepted(), not_suspended()];
            intent.next_refresh_at = Some(refresh_at);
            intent.last_refresh_at = Some(token.issued_at);
            intent.requeue = Some(wait_until(now, refresh_at));
            intent.publish = Some(token);
        }
        TokenOutcome::Asked(RefreshAttempt {
            result: Err(err), ..
        }) => failed(connection, &mut intent, err, current, now, true),
        TokenOutcome::Blocked { cause } => {
            // Reported (metric, audit record, Event) when LWA answered; this is the memory of it.
            let err = RefreshError::Terminal { cause: *cause };
            failed(connection, &mut intent, &err, current, now, false);
        }
    }
    intent.failed_attempts = *failed_attempts;
    intent
}

/// Fills `intent` for a refresh that produced no token; `report` counts, audits and announces
/// an answer LWA gave just now.
fn failed(
    connection: &AmazonSellerConnection,
    intent: &mut Intent,
    err: &RefreshError,
    current: Option<Published>,
    now: Timestamp,
    report: bool,
) {
    let category = err.category();
    match err {
        RefreshError::Terminal { cause } => {
            let rejection = CredentialsRejection::of(*cause);
            let reason = rejection.reason();
            let message = format!(
                "LWA rejected the credentials ({cause}): {}",
                rejection.advice()
            );
            if report {
                record_failure(intent, category);
                intent.events.push(event(
                    EventKind::Warning,
                    "CredentialsRevoked",
                    message.clone(),
                ));
            }
            intent.conditions = vec![
                match &current {
                    // The token LWA issued earlier still works until it expires; then it goes.
                    Some(token) => ready(
                        Status::True,
                        "TokenValidUntilExpiry",
                        format!(
                            "credentials rejected; the published token stays until it expires at {}",
                            whole_seconds(token.expires_at)
                        ),
                    ),
                    None => ready(Status::False, reason, message.clone()),
                },
                credentials_valid(Status::False, reason, message),
                not_suspended(),
            ];
            // Come back when the published token expires, to remove it; otherwise wait for a
            // change of spec or credentials (both trigger a reconcile).
            intent.requeue = current.as_ref().map(|t| wait_until(now, t.expires_at));
            intent.next_refresh_at = None;
            intent.publish = current;
        }
        RefreshError::Retriable {
            retry_at, attempts, ..
        } => {
            record_failure(intent, category);
            if *attempts == 1 {
                intent.events.push(event(
                    EventKind::Warning,
                    "RefreshFailed",
                    format!("LWA token refresh failed ({category}); retrying with backoff, next attempt at {}", whole_seconds(*retry_at)),
                ));
            }
            wait(
                connection,
                intent,
                current,
                Wait::Backoff(category),
                *retry_at,
                now,
            );
        }
        RefreshError::CircuitOpen { until: at } => {
            intent.refresh_metric = Some((RefreshOutcome::Skipped, category));
            wait(connection, intent, current, Wait::CircuitOpen, *at, now);
        }
        RefreshError::Throttled { retry_at: at } => {
            intent.refresh_metric = Some((RefreshOutcome::Skipped, category));
            wait(connection, intent, current, Wait::RateLimit, *at, now);
        }
    }
}

/// Counts and audits a refresh that LWA refused or that failed on the way.
fn record_failure(intent: &mut Intent, category: &'static str) {
    intent.refresh_metric = Some((RefreshOutcome::Failure, category));
    intent.audit.push(audit(
        Category::ApiError,
        "token_refresh",
        Outcome::Failure,
        category,
    ));
}

/// A due refresh that waits until `at`. The conditions name why, never when: the time is in
/// `status.nextRefreshAt`. So whether the engine told the reconcile to wait or refused its
/// refresh, and however often it asks again before `at`, the status reads the same and is not
/// written again.
fn wait(
    connection: &AmazonSellerConnection,
    intent: &mut Intent,
    current: Option<Published>,
    why: Wait,
    at: Timestamp,
    now: Timestamp,
) {
    let ready = match (&current, why) {
        // Waiting for a turn with a valid token is routine.
        (Some(token), Wait::RateLimit) => serving(token),
        (Some(token), Wait::CircuitOpen) => ready(
            Status::True,
            "TokenPublished",
            format!(
                "access token valid until {}; refreshes are paused while LWA is failing",
                whole_seconds(token.expires_at)
            ),
        ),
        (Some(token), Wait::Backoff(category)) => ready(
            Status::True,
            "TokenPublished",
            format!(
                "access token valid until {}; refresh failing ({category}), retrying with backoff",
                whole_seconds(token.expires_at)
            ),
        ),
        (None, Wait::RateLimit) => ready(
            Status::False,
            "RefreshPending",
            "no valid token yet: waiting for a turn at the LWA rate limit",
        ),
        (None, Wait::CircuitOpen) => ready(
            Status::False,
            "RefreshPending",
            "no valid token yet: refreshes are paused while LWA is failing",
        ),
        (None, Wait::Backoff(category)) => ready(
            Status::False,
            "RefreshFailed",
            format!("no valid token: refresh failing ({category}), retrying with backoff"),
        ),
    };
    intent.conditions = vec![
        ready,
        observed_credentials_condition(connection),
        not_suspended(),
    ];
    intent.next_refresh_at = Some(at);
    intent.requeue = Some(wait_until(now, at));
    intent.publish = current;
}
