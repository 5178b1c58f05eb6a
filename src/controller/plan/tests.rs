//! Scenario tests of the plan: one reconcile's inputs, built the way the reconcile observes
//! them (the gate, the engine's decision, LWA's answer), and what it must write and report.
//! Every plan a scenario produces is also checked for secret values in its status, Events,
//! audit records and metric labels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use super::*;
use crate::api::AmazonSellerConnectionStatus;
use crate::controller::fixtures::{CLIENT_SECRET, Connection, REFRESH_TOKEN, start};
use crate::controller::pods::PodFacts;
use crate::crypto::SecretString;
use crate::domain::Delivery;
use crate::error::Categorized;
use crate::lwa::{AccessToken, ConnectionKey, OAuthErrorCode, clock, schedule};
use crate::names::{ROLE_TOKEN_STORE, SECRET_ROLE_LABEL, TOKEN_STORE_SECRET_TYPE};
use crate::observability::audit::{Category, Outcome};
use crate::observability::metrics::RefreshOutcome;
use crate::secrets::runtime_secret::whole_seconds;

/// The key the credentials and the token store are sealed to.
const KEY: &str = "key-1";
/// Every access token in these scenarios starts with this: no output but the runtime Secret may
/// hold it.
const TOKEN: &str = "Atza|scenario-";

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn after(by: Duration) -> Timestamp {
    clock::add(start(), by)
}

/// A one-hour token issued at `issued_at`, as the runtime Secret holds it.
fn token(issued_at: Timestamp) -> Published {
    Published {
        access_token: SecretString::from(format!("{TOKEN}{}", issued_at.as_second())),
        token_type: "bearer".into(),
        expires_at: clock::add(issued_at, minutes(60)),
        issued_at,
    }
}

/// LWA's answer: a one-hour token requested at `at`.
fn issued(at: Timestamp) -> Result<Refreshed, RefreshError> {
    Ok(Refreshed {
        token: AccessToken {
            access_token: SecretString::from(format!("{TOKEN}{}", at.as_second())),
            token_type: "bearer".into(),
            expires_at: clock::add(at, minutes(60)),
            issued_at: at,
        },
        used_next_secret: false,
    })
}

fn rejected(code: OAuthErrorCode) -> Result<Refreshed, RefreshError> {
    Err(RefreshError::Terminal {
        cause: TerminalCause::Rejected(code),
    })
}

/// When [`Connection::test()`]'s `token` becomes due (`renewBefore` 20m, its jitter).
fn due_at(token: &Published) -> Timestamp {
    let key = ConnectionKey::new(crate::controller::fixtures::NAMESPACE, "acme-us");
    schedule::refresh_at(
        token.state(),
        minutes(20),
        schedule::jitter_seed(key.as_str()),
    )
}

/// One reconcile's inputs, built up the way the reconcile observes them.
struct Scenario {
    connection: AmazonSellerConnection,
    now: Timestamp,
    secrets: ObservedSecrets,
    /// What reading the credentials Secret found, when not the usable default.
    found: Option<CredentialsState>,
    decision: RefreshDecision,
    answer: Option<Result<Refreshed, RefreshError>>,
    client_secret_expires_at: Option<Timestamp>,
    failed_attempts: u32,
    /// The pods of the namespace that reference a Secret.
    pods: Vec<Arc<PodFacts>>,
    /// The namespace's Team label.
    namespace_team: Option<String>,
}

impl Scenario {
    /// `connection` at [`start()`], nothing observed yet, credentials that open, and an engine
    /// that wants a refresh now.
    fn new(connection: Connection) -> Self {
        Self {
            connection: connection.build(),
            now: start(),
            secrets: ObservedSecrets {
                active_key: KEY.into(),
                ..ObservedSecrets::default()
            },
            found: None,
            decision: RefreshDecision::RefreshNow,
            answer: None,
            client_secret_expires_at: None,
            failed_attempts: 0,
            pods: Vec::new(),
            namespace_team: Some("acme".into()),
        }
    }

    /// A pod of the namespace, as the pod cache keeps it.
    fn with_pod(mut self, pod: PodFacts) -> Self {
        self.pods.push(Arc::new(pod));
        self
    }

    /// The namespace's Team label is now `team`.
    fn in_namespace_of(mut self, team: Option<&str>) -> Self {
        self.namespace_team = team.map(str::to_owned);
        self
    }

    /// The pods outside the rules, as the reconcile judges them.
    fn found(&self) -> Vec<FoundPod> {
        drift::judge(&self.connection, self.namespace_team.as_deref(), &self.pods)
    }

    /// How far the gate lets the reconcile go.
    fn gate(&self) -> Gate {
        match gate(&self.connection) {
            Gate::Proceed { .. }
                if drift::withholds(
                    &self.connection,
                    self.secrets.runtime.is_some(),
                    &self.found(),
                ) =>
            {
                Gate::Stop(Stop::Withheld)
            }
            gate => gate,
        }
    }

    fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// The runtime Secret exists and holds `token` (as this connection would have written it).
    fn with_runtime_secret(mut self, token: &Published) -> Self {
        let metadata = Metadata {
            marketplace_id: "ATVPDKIKX0DER",
            region: "NA",
            endpoint: "https://sellingpartnerapi-na.amazon.com",
            seller_id: "A3FHEXAMPLEYWS".into(),
        };
        self.secrets.runtime = Some(runtime_secret::build(&self.connection, token, &metadata));
        self
    }

    /// The token store exists and opens to `token`, sealed to `key`.
    fn with_token_store(mut self, token: &Published, key: &str) -> Self {
        let mut store = Secret {
            type_: Some(TOKEN_STORE_SECRET_TYPE.into()),
            ..Secret::default()
        };
        store.metadata.labels = Some(BTreeMap::from([(
            SECRET_ROLE_LABEL.to_owned(),
            ROLE_TOKEN_STORE.to_owned(),
        )]));
        self.secrets.store = Some(store);
        self.secrets.opened_store = Some((token.clone(), key.into()));
        self
    }

    fn credentials(mut self, found: CredentialsState) -> Self {
        self.found = Some(found);
        self
    }

    /// The engine decides `decision`.
    fn engine_decides(mut self, decision: RefreshDecision) -> Self {
        self.decision = decision;
        self
    }

    /// When asked, LWA (through the engine) answers `answer`.
    fn lwa_answers(mut self, answer: Result<Refreshed, RefreshError>) -> Self {
        self.answer = Some(answer);
        self
    }

    fn failed_attempts(mut self, attempts: u32) -> Self {
        self.failed_attempts = attempts;
        self
    }

    fn opened_with_client_secret_expiry(mut self, at: Timestamp) -> Self {
        self.client_secret_expires_at = Some(at);
        self
    }

    /// Whether the reconcile would call LWA.
    fn asks_lwa(&self) -> bool {
        matches!(self.gate(), Gate::Proceed { .. })
            && self.found.is_none()
            && refresh_step(self.decision, self.secrets.token_in_use(self.now).is_some())
                == RefreshStep::Ask
    }

    /// The plan, checked for secret values in everything but the Secrets it writes.
    fn plan(self) -> ReconcilePlan {
        let found = self.found();
        let progress = match self.gate() {
            Gate::Stop(stop) => Progress::Stopped(stop),
            Gate::Proceed { .. } => Progress::Credentials(match self.found {
                Some(found) => found,
                None => {
                    let current = self.secrets.token_in_use(self.now);
                    let outcome = match refresh_step(self.decision, current.is_some()) {
                        RefreshStep::Settled(outcome) => outcome,
                        RefreshStep::Ask => TokenOutcome::Asked(RefreshAttempt {
                            result: self
                                .answer
                                .unwrap_or_else(|| panic!("the step asks LWA: script its answer")),
                            took: Duration::from_millis(250),
                        }),
                    };
                    CredentialsState::Usable {
                        key_id: KEY.into(),
                        client_secret_expires_at: self.client_secret_expires_at,
                        outcome,
                        failed_attempts: self.failed_attempts,
                    }
                }
            }),
        };
        let plan = plan(&ReconcileInputs {
            connection: &self.connection,
            now: self.now,
            secrets: &self.secrets,
            progress,
            pods: &found,
        });
        assert_holds_no_secret(&plan);
        plan
    }
}

/// Status, Events, audit records, metric labels and the plan's Debug hold no token, client
/// secret or refresh token.
fn assert_holds_no_secret(plan: &ReconcilePlan) {
    let mut outputs = vec![
        serde_json::to_string(&plan.status).unwrap_or_default(),
        format!("{plan:?}"),
    ];
    outputs.extend(plan.events.iter().map(|e| e.note.clone()));
    outputs.extend(plan.transitions.iter().map(|r| format!("{r:?}")));
    outputs.extend(plan.audit.iter().map(|a| a.reason.to_owned()));
    outputs.extend(
        plan.metrics
            .refresh
            .iter()
            .map(|(_, reason)| (*reason).to_owned()),
    );
    for output in outputs {
        for secret in ["Atza|", CLIENT_SECRET, REFRESH_TOKEN] {
            assert!(!output.contains(secret), "{secret} in {output}");
        }
    }
}

fn conditions(plan: &ReconcilePlan) -> Vec<(&str, &str, &str)> {
    plan.status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

fn message<'a>(plan: &'a ReconcilePlan, type_: &str) -> &'a str {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.message.as_str())
}

fn applied_token(plan: &ReconcilePlan) -> Option<String> {
    match &plan.runtime_secret {
        SecretChange::Apply(secret) => secret
            .data
            .as_ref()
            .and_then(|d| d.get("access_token"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
        _ => None,
    }
}

/// The requeue from `from` to `to`: to the millisecond, rounded up, at least a second.
fn wait(from: Timestamp, to: Timestamp) -> Option<Duration> {
    let millis = clock::since(to, from).as_nanos().div_ceil(1_000_000) as u64;
    Some(Duration::from_millis(millis).max(Duration::from_secs(1)))
}

fn connect_event(note: &str) -> Vec<Report> {
    vec![
        Report::Audit(AuditNote {
            category: Category::ConnectorSetup,
            action: "connect",
            outcome: Outcome::Success,
            reason: "token_published",
        }),
        Report::Event(EventNote {
            kind: EventKind::Normal,
            reason: "Connected",
            note: note.into(),
        }),
    ]
}

fn refresh_audit(outcome: Outcome, reason: &'static str) -> AuditNote {
    AuditNote {
        category: if outcome == Outcome::Success {
            Category::CredentialAccess
        } else {
            Category::ApiError
        },
        action: "token_refresh",
        outcome,
        reason,
    }
}

const SERVING: [(&str, &str, &str); 3] = [
    ("Ready", "True", "TokenPublished"),
    ("CredentialsValid", "True", "Accepted"),
    ("Suspended", "False", "Active"),
];

/// The status after a first connect at [`start()`], and the token it published.
fn connected() -> (AmazonSellerConnectionStatus, Published) {
    let plan = Scenario::new(Connection::test())
        .lwa_answers(issued(start()))
        .plan();
    (plan.status, token(start()))
}

#[test]
fn first_connect_asks_lwa_and_publishes_the_token_in_the_runtime_secret() {
    let scenario = Scenario::new(Connection::test()).lwa_answers(issued(start()));
    assert!(scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(
        applied_token(&plan),
        Some(format!("{TOKEN}{}", start().as_second()))
    );
    assert_eq!(plan.token_store, SecretChange::Keep);
    assert_eq!(conditions(&plan), SERVING);
    let expires = after(minutes(60));
    assert_eq!(
        message(&plan, "Ready"),
        format!("access token published, valid until {expires}")
    );
    let due = due_at(&token(start()));
    assert_eq!(
        plan.status.next_refresh_at.as_ref().map(|t| t.0),
        Some(whole_seconds(due)),
        "the API keeps whole seconds"
    );
    assert_eq!(
        plan.status.last_refresh_at.as_ref().map(|t| t.0),
        Some(start())
    );
    assert_eq!(
        plan.status.token_expires_at.as_ref().map(|t| t.0),
        Some(expires)
    );
    assert_eq!(
        plan.status.runtime_secret_name.as_deref(),
        Some("acme-us-sp-api")
    );
    assert_eq!(plan.status.marketplace_id.as_deref(), Some("ATVPDKIKX0DER"));
    assert_eq!(plan.status.key_id.as_deref(), Some(KEY));
    assert!(plan.status_changed);
    assert_eq!(plan.requeue, wait(start(), due));
    assert_eq!(
        plan.metrics,
        MetricUpdates {
            client_secret_expiry: None,
            refresh: Some((RefreshOutcome::Success, "refreshed")),
            lwa_latency: Some(Duration::from_millis(250)),
            token_expiry: TokenExpiry::Set(expires.as_second()),
            unauthorized_mounts: 0,
        }
    );
    assert_eq!(plan.audit, [refresh_audit(Outcome::Success, "refreshed")]);
    assert_eq!(
        plan.transitions,
        connect_event("access token published in Secret acme-us-sp-api for gateways gw-main")
    );
    assert_eq!(plan.events, []);
}

#[test]
fn a_restart_with_a_valid_token_asks_lwa_nothing_and_writes_nothing() {
    let (status, token) = connected();
    let scenario = Scenario::new(Connection::test().with_status(status))
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .engine_decides(RefreshDecision::UseExisting {
            refresh_at: due_at(&token),
        });
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(plan.runtime_secret, SecretChange::Keep);
    assert_eq!(plan.token_store, SecretChange::Keep);
    assert!(!plan.status_changed, "{:#?}", plan.status);
    assert_eq!(plan.transitions, []);
    assert_eq!(plan.events, []);
    assert_eq!(plan.audit, []);
    assert_eq!(plan.metrics.refresh, None);
    assert_eq!(plan.requeue, wait(after(minutes(1)), due_at(&token)));
}

#[test]
fn a_due_token_is_refreshed_and_the_status_changes_without_a_transition() {
    let (status, token) = connected();
    let now = due_at(&token);
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(now)
        .with_runtime_secret(&token)
        .lwa_answers(issued(now))
        .plan();
    assert_eq!(
        applied_token(&plan),
        Some(format!("{TOKEN}{}", now.as_second()))
    );
    assert_eq!(conditions(&plan), SERVING);
    assert!(plan.status_changed);
    assert_eq!(
        plan.status.last_refresh_at.as_ref().map(|t| t.0),
        Some(whole_seconds(now))
    );
    assert_eq!(
        plan.transitions,
        [],
        "Ready stays True: nothing to announce"
    );
    assert_eq!(plan.audit, [refresh_audit(Outcome::Success, "refreshed")]);
}

#[test]
fn invalid_grant_without_a_valid_token_reports_a_revoked_refresh_token_and_waits_for_a_change() {
    let plan = Scenario::new(Connection::test())
        .lwa_answers(rejected(OAuthErrorCode::InvalidGrant))
        .plan();
    let advice = "LWA rejected the credentials (invalid_grant): the seller must re-authorize the application and the credentials be sealed again";
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "RefreshTokenRevoked"),
            ("CredentialsValid", "False", "RefreshTokenRevoked"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(message(&plan, "CredentialsValid"), advice);
    assert_eq!(
        plan.runtime_secret,
        SecretChange::Keep,
        "there is none to delete"
    );
    assert_eq!(plan.metrics.token_expiry, TokenExpiry::Clear);
    assert_eq!(
        plan.metrics.refresh,
        Some((RefreshOutcome::Failure, "invalid_grant"))
    );
    assert_eq!(
        plan.audit,
        [refresh_audit(Outcome::Failure, "invalid_grant")]
    );
    assert_eq!(
        plan.events,
        [EventNote {
            kind: EventKind::Warning,
            reason: "CredentialsRevoked",
            note: advice.into(),
        }]
    );
    assert_eq!(plan.status.next_refresh_at, None);
    assert_eq!(
        plan.requeue, None,
        "no retry until the spec or credentials change"
    );
}

#[test]
fn invalid_grant_with_a_valid_token_keeps_it_until_it_expires() {
    let (status, token) = connected();
    let now = due_at(&token);
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(now)
        .with_runtime_secret(&token)
        .lwa_answers(rejected(OAuthErrorCode::InvalidGrant))
        .plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "True", "TokenValidUntilExpiry"),
            ("CredentialsValid", "False", "RefreshTokenRevoked"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(plan.runtime_secret, SecretChange::Keep);
    assert_eq!(
        plan.metrics.token_expiry,
        TokenExpiry::Set(token.expires_at.as_second())
    );
    assert_eq!(
        plan.requeue,
        wait(now, token.expires_at),
        "back to remove it"
    );
    assert_eq!(plan.events.len(), 1);
}

#[test]
fn each_terminal_cause_has_the_reason_and_category_it_always_had() {
    let cases = [
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidGrant),
            "RefreshTokenRevoked",
            "invalid_grant",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidClient),
            "ClientAuthenticationFailed",
            "invalid_client",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::UnauthorizedClient),
            "ClientUnauthorized",
            "unauthorized_client",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidRequest),
            "CredentialsRejected",
            "invalid_request",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidScope),
            "CredentialsRejected",
            "invalid_scope",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::UnsupportedGrantType),
            "CredentialsRejected",
            "unsupported_grant_type",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::Other),
            "CredentialsRejected",
            "client_error",
        ),
        (
            TerminalCause::IncompleteCredentials,
            "CredentialsRejected",
            "incomplete_credentials",
        ),
        (TerminalCause::ClientConfig, "CredentialsRejected", "config"),
    ];
    for (cause, reason, category) in cases {
        assert_eq!(CredentialsRejection::of(cause).reason(), reason, "{cause}");
        assert_eq!(RefreshError::Terminal { cause }.category(), category);
        let plan = Scenario::new(Connection::test())
            .lwa_answers(Err(RefreshError::Terminal { cause }))
            .plan();
        assert_eq!(conditions(&plan)[1], ("CredentialsValid", "False", reason));
        assert_eq!(
            plan.metrics.refresh,
            Some((RefreshOutcome::Failure, category))
        );
        assert_eq!(plan.audit[0].reason, category);
        assert!(
            message(&plan, "Ready")
                .starts_with(&format!("LWA rejected the credentials ({category}): ")),
            "{cause}"
        );
    }
}

#[test]
fn invalid_client_and_unauthorized_client_have_their_own_advice() {
    let plan = Scenario::new(Connection::test())
        .lwa_answers(rejected(OAuthErrorCode::InvalidClient))
        .plan();
    assert_eq!(
        plan.events[0].note,
        "LWA rejected the credentials (invalid_client): the LWA client id or secret is wrong or expired: seal the current client secret"
    );
    let plan = Scenario::new(Connection::test())
        .lwa_answers(rejected(OAuthErrorCode::UnauthorizedClient))
        .plan();
    assert_eq!(
        message(&plan, "CredentialsValid"),
        "LWA rejected the credentials (unauthorized_client): the LWA application is not authorized for this grant"
    );
}

#[test]
fn a_remembered_rejection_is_not_counted_audited_or_announced_again() {
    let scenario = Scenario::new(Connection::test()).engine_decides(RefreshDecision::Blocked {
        cause: TerminalCause::Rejected(OAuthErrorCode::InvalidGrant),
    });
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(
        conditions(&plan)[1],
        ("CredentialsValid", "False", "RefreshTokenRevoked")
    );
    assert_eq!(plan.metrics.refresh, None);
    assert_eq!(plan.audit, []);
    assert_eq!(plan.events, []);
    assert_eq!(plan.requeue, None);
}

fn unavailable(attempts: u32, retry_at: Timestamp) -> Result<Refreshed, RefreshError> {
    Err(RefreshError::Retriable {
        category: "server_error",
        retry_at,
        attempts,
    })
}

#[test]
fn the_first_retriable_failure_warns_and_the_next_ones_do_not() {
    let retry_at = after(Duration::from_secs(5));
    let plan = Scenario::new(Connection::test())
        .lwa_answers(unavailable(1, retry_at))
        .failed_attempts(1)
        .plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "RefreshFailed"),
            ("CredentialsValid", "Unknown", "NotYetChecked"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(
        message(&plan, "Ready"),
        "no valid token: refresh failing (server_error), retrying with backoff"
    );
    assert_eq!(plan.status.failed_refresh_attempts, Some(1));
    assert_eq!(
        plan.status.next_refresh_at.as_ref().map(|t| t.0),
        Some(retry_at)
    );
    assert_eq!(plan.requeue, Some(Duration::from_secs(5)));
    assert_eq!(
        plan.metrics.refresh,
        Some((RefreshOutcome::Failure, "server_error"))
    );
    assert_eq!(
        plan.audit,
        [refresh_audit(Outcome::Failure, "server_error")]
    );
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].reason, "RefreshFailed");
    assert_eq!(
        plan.events[0].note,
        format!(
            "LWA token refresh failed (server_error); retrying with backoff, next attempt at {retry_at}"
        )
    );

    let plan = Scenario::new(Connection::test())
        .lwa_answers(unavailable(2, retry_at))
        .failed_attempts(2)
        .plan();
    assert_eq!(plan.events, []);
    assert_eq!(plan.audit.len(), 1, "every failure is still audited");
}

#[test]
fn a_retriable_failure_with_a_valid_token_keeps_serving_it_and_the_last_verdict() {
    let (status, token) = connected();
    let now = due_at(&token);
    let retry_at = clock::add(now, Duration::from_secs(30));
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(now)
        .with_runtime_secret(&token)
        .lwa_answers(unavailable(1, retry_at))
        .plan();
    assert_eq!(conditions(&plan), SERVING);
    assert_eq!(
        message(&plan, "Ready"),
        format!(
            "access token valid until {}; refresh failing (server_error), retrying with backoff",
            token.expires_at
        )
    );
    assert_eq!(plan.runtime_secret, SecretChange::Keep);
    assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
}

#[test]
fn a_throttled_refresh_waits_for_its_turn_counted_as_skipped_without_audit_or_event() {
    let retry_at = after(Duration::from_millis(1500));
    let plan = Scenario::new(Connection::test())
        .lwa_answers(Err(RefreshError::Throttled { retry_at }))
        .plan();
    assert_eq!(
        plan.metrics.refresh,
        Some((RefreshOutcome::Skipped, "throttled"))
    );
    assert_eq!(plan.audit, []);
    assert_eq!(plan.events, []);
    assert_eq!(conditions(&plan)[0], ("Ready", "False", "RefreshPending"));
    assert_eq!(
        message(&plan, "Ready"),
        "no valid token yet: waiting for a turn at the LWA rate limit"
    );
    assert_eq!(
        plan.status.next_refresh_at.as_ref().map(|t| t.0),
        Some(whole_seconds(retry_at))
    );
    assert_eq!(
        plan.requeue,
        Some(Duration::from_millis(1500)),
        "back at the turn itself"
    );
    assert_eq!(plan.problem, None, "waiting is not a failed reconcile");
}

#[test]
fn an_open_circuit_waits_without_asking_lwa() {
    let until = after(minutes(2));
    let scenario = Scenario::new(Connection::test()).engine_decides(RefreshDecision::RefreshAt {
        at: until,
        reason: WaitReason::CircuitOpen,
    });
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "RefreshPending"),
            ("CredentialsValid", "Unknown", "NotYetChecked"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(
        message(&plan, "Ready"),
        "no valid token yet: refreshes are paused while LWA is failing"
    );
    assert_eq!(plan.metrics.refresh, None);
    assert_eq!(plan.requeue, Some(minutes(2)));
}

#[test]
fn a_refresh_that_must_wait_for_a_circuit_refused_by_the_engine_counts_as_skipped() {
    let until = after(minutes(2));
    let plan = Scenario::new(Connection::test())
        .lwa_answers(Err(RefreshError::CircuitOpen { until }))
        .plan();
    assert_eq!(
        plan.metrics.refresh,
        Some((RefreshOutcome::Skipped, "circuit_open"))
    );
    assert_eq!(plan.audit, []);
    assert_eq!(plan.requeue, Some(minutes(2)));
}

#[test]
fn while_waiting_the_stored_verdict_of_lwa_is_kept() {
    let rejected_status = Scenario::new(Connection::test())
        .lwa_answers(rejected(OAuthErrorCode::InvalidClient))
        .plan()
        .status;
    let plan = Scenario::new(Connection::test().with_status(rejected_status))
        .engine_decides(RefreshDecision::RefreshAt {
            at: after(minutes(1)),
            reason: WaitReason::CircuitOpen,
        })
        .plan();
    assert_eq!(
        conditions(&plan)[1],
        ("CredentialsValid", "False", "ClientAuthenticationFailed")
    );
}

#[test]
fn suspending_removes_both_secrets_and_reports_the_suspension() {
    let (status, token) = connected();
    let scenario = Scenario::new(Connection::test().with_status(status).suspended())
        .at(after(minutes(5)))
        .with_runtime_secret(&token)
        .with_token_store(&token, KEY);
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(plan.runtime_secret, SecretChange::Delete);
    assert_eq!(plan.token_store, SecretChange::Delete);
    assert_eq!(plan.metrics.token_expiry, TokenExpiry::Clear);
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "Suspended"),
            ("CredentialsValid", "Unknown", "Suspended"),
            ("Suspended", "True", "SuspendedBySpec"),
        ]
    );
    assert_eq!(
        plan.status.key_id.as_deref(),
        Some(KEY),
        "the key stays known"
    );
    assert_eq!(plan.status.runtime_secret_name, None);
    assert_eq!(
        plan.transitions,
        [
            Report::Audit(AuditNote {
                category: Category::ConnectorSetup,
                action: "suspend",
                outcome: Outcome::Success,
                reason: "spec_suspended",
            }),
            Report::Event(EventNote {
                kind: EventKind::Normal,
                reason: "Suspended",
                note: "runtime Secret removed; no token is refreshed while suspended".into(),
            }),
        ]
    );
    assert_eq!(plan.requeue, None);
}

#[test]
fn resuming_asks_lwa_and_reports_the_resumption_and_the_connection() {
    let suspended = Scenario::new(Connection::test().suspended()).plan().status;
    let now = after(minutes(10));
    let plan = Scenario::new(
        Connection::test()
            .suspended()
            .with_status(suspended)
            .resumed(),
    )
    .at(now)
    .lwa_answers(issued(now))
    .plan();
    assert_eq!(conditions(&plan), SERVING);
    let mut expected = vec![Report::Audit(AuditNote {
        category: Category::ConnectorSetup,
        action: "resume",
        outcome: Outcome::Success,
        reason: "spec_resumed",
    })];
    expected.extend(connect_event(
        "access token published in Secret acme-us-sp-api for gateways gw-main",
    ));
    assert_eq!(plan.transitions, expected);
}

#[test]
fn an_invalid_spec_stops_before_the_credentials_and_publishes_nothing() {
    let connection = Connection::test().with_marketplace("XX");
    assert!(matches!(
        gate(&connection.clone().build()),
        Gate::Stop(Stop::InvalidSpec { .. })
    ));
    let (_, token) = connected();
    let scenario = Scenario::new(connection).with_runtime_secret(&token);
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "InvalidSpec"),
            ("CredentialsValid", "Unknown", "InvalidSpec"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert!(message(&plan, "Ready").starts_with("invalid spec: spec.marketplace: "));
    assert_eq!(plan.runtime_secret, SecretChange::Delete, "fail closed");
    assert_eq!(plan.status.marketplace_id, None);
    assert_eq!(plan.status.key_id, None);
    assert_eq!(plan.requeue, Some(RECHECK));
    assert_eq!(plan.problem, Some("invalid_spec"));
    assert_eq!(plan.events.len(), 1);
    assert_eq!(
        (plan.events[0].kind, plan.events[0].reason),
        (EventKind::Warning, "InvalidSpec")
    );
    assert_eq!(plan.events[0].note, message(&plan, "Ready"));
}

#[test]
fn missing_credentials_are_reported_counted_audited_and_looked_for_again() {
    let plan = Scenario::new(Connection::test())
        .credentials(CredentialsState::Missing)
        .plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "CredentialsMissing"),
            ("CredentialsValid", "False", "CredentialsMissing"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(
        message(&plan, "Ready"),
        "credentials Secret \"acme-us-lwa\" not found in namespace team-acme: create it with `amazon-seller-operator seal`"
    );
    assert_eq!(plan.requeue, Some(RECHECK));
    assert_eq!(plan.status.failed_refresh_attempts, Some(0));
    assert_eq!(plan.problem, Some("credentials_missing"));
    assert_eq!(
        plan.audit,
        [AuditNote {
            category: Category::ConnectorSetup,
            action: "open_credentials",
            outcome: Outcome::Failure,
            reason: "credentials_missing",
        }]
    );
    assert_eq!(plan.events.len(), 1);
    assert_eq!(
        (plan.events[0].kind, plan.events[0].reason),
        (EventKind::Warning, "CredentialsMissing")
    );
}

#[test]
fn a_secret_that_is_not_sealed_credentials_is_unreadable() {
    let plan = Scenario::new(Connection::test())
        .credentials(CredentialsState::NotSealed)
        .plan();
    assert_eq!(
        conditions(&plan)[0],
        ("Ready", "False", "CredentialsUnreadable")
    );
    assert_eq!(
        message(&plan, "CredentialsValid"),
        "Secret \"acme-us-lwa\" is not a sealed credentials Secret (type connectors.openteam.io/lwa-credentials with data key \"sealed\")"
    );
    assert_eq!(plan.requeue, Some(RECHECK));
    assert_eq!(plan.problem, Some("credentials_unreadable"));
    assert_eq!(
        plan.audit,
        [AuditNote {
            category: Category::ConnectorSetup,
            action: "open_credentials",
            outcome: Outcome::Failure,
            reason: "not_sealed",
        }]
    );
    assert_eq!(plan.events.len(), 1);
    assert_eq!(
        (plan.events[0].kind, plan.events[0].reason),
        (EventKind::Warning, "CredentialsUnreadable")
    );
}

#[test]
fn credentials_that_do_not_open_are_audited_and_unreadable() {
    let (status, token) = connected();
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .credentials(CredentialsState::Unopenable(OpenError::Authentication))
        .plan();
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "CredentialsUnreadable"),
            ("CredentialsValid", "False", "CredentialsUnreadable"),
            ("Suspended", "False", "Active"),
        ]
    );
    assert_eq!(
        plan.audit,
        [AuditNote {
            category: Category::ConnectorSetup,
            action: "open_credentials",
            outcome: Outcome::Failure,
            reason: "authentication_failed",
        }]
    );
    assert_eq!(plan.runtime_secret, SecretChange::Delete, "fail closed");
    assert_eq!(plan.metrics.token_expiry, TokenExpiry::Clear);
}

#[test]
fn endpoint_delivery_seals_the_token_into_the_store_and_writes_no_runtime_secret() {
    let plan = Scenario::new(Connection::test().with_delivery(Delivery::Endpoint))
        .lwa_answers(issued(start()))
        .plan();
    assert_eq!(plan.runtime_secret, SecretChange::Keep);
    assert_eq!(plan.token_store, SecretChange::Apply(token(start())));
    assert_eq!(plan.status.runtime_secret_name, None);
    assert_eq!(
        plan.transitions,
        connect_event(
            "access token available at the runtime credential endpoint for gateways gw-main"
        )
    );
}

#[test]
fn both_delivery_writes_both_and_says_so() {
    let plan = Scenario::new(Connection::test().with_delivery(Delivery::Both))
        .lwa_answers(issued(start()))
        .plan();
    assert!(applied_token(&plan).is_some());
    assert_eq!(plan.token_store, SecretChange::Apply(token(start())));
    assert_eq!(
        plan.transitions,
        connect_event(
            "access token published in Secret acme-us-sp-api and at the runtime credential endpoint for gateways gw-main"
        )
    );
}

#[test]
fn a_delivery_change_to_endpoint_moves_the_token_without_asking_lwa() {
    let (status, token) = connected();
    let connection = Connection::test()
        .with_status(status)
        .with_delivery(Delivery::Endpoint);
    assert!(looks_for_token_store(&connection.clone().build()));
    let scenario = Scenario::new(connection)
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .engine_decides(RefreshDecision::UseExisting {
            refresh_at: due_at(&token),
        });
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(plan.runtime_secret, SecretChange::Delete);
    assert_eq!(plan.token_store, SecretChange::Apply(token));
    assert_eq!(conditions(&plan), SERVING);
    assert!(
        plan.status_changed,
        "new generation, no runtime Secret name"
    );
    assert_eq!(plan.transitions, [], "Ready stays True");
}

#[test]
fn a_delivery_change_back_to_secret_restores_the_runtime_secret_from_the_store() {
    let (status, token) = connected();
    let scenario = Scenario::new(
        Connection::test()
            .with_status(status)
            .with_delivery(Delivery::Secret),
    )
    .at(after(minutes(1)))
    .with_token_store(&token, KEY)
    .engine_decides(RefreshDecision::UseExisting {
        refresh_at: due_at(&token),
    });
    assert!(!scenario.asks_lwa(), "the store's token is still valid");
    let plan = scenario.plan();
    assert!(applied_token(&plan).is_some());
    assert_eq!(plan.token_store, SecretChange::Delete);
}

#[test]
fn an_up_to_date_token_store_is_kept_and_one_sealed_to_an_older_key_is_sealed_again() {
    let (status, token) = connected();
    let endpoint = || {
        Connection::test()
            .with_delivery(Delivery::Endpoint)
            .with_status(status.clone())
    };
    let keep = |key: &str| {
        Scenario::new(endpoint())
            .at(after(minutes(1)))
            .with_token_store(&token, key)
            .engine_decides(RefreshDecision::UseExisting {
                refresh_at: due_at(&token),
            })
            .plan()
    };
    assert_eq!(keep(KEY).token_store, SecretChange::Keep);
    assert_eq!(
        keep("key-0").token_store,
        SecretChange::Apply(token.clone())
    );
}

#[test]
fn a_leftover_token_store_is_looked_for_only_until_the_status_is_current() {
    let (status, _) = connected();
    assert!(
        looks_for_token_store(&Connection::test().build()),
        "no status yet"
    );
    assert!(!looks_for_token_store(
        &Connection::test().with_status(status.clone()).build()
    ));
    assert!(looks_for_token_store(
        &Connection::test()
            .with_status(status)
            .with_delivery(Delivery::Both)
            .build()
    ));
}

#[test]
fn a_next_client_secret_in_use_is_announced() {
    let mut answer = issued(start());
    if let Ok(refreshed) = &mut answer {
        refreshed.used_next_secret = true;
    }
    let plan = Scenario::new(Connection::test()).lwa_answers(answer).plan();
    assert_eq!(
        plan.events,
        [EventNote {
            kind: EventKind::Warning,
            reason: "NextClientSecretUsed",
            note: "LWA rejected the client secret and accepted nextClientSecret: seal it as the client secret".into(),
        }]
    );
}

#[test]
fn the_client_secret_expiry_is_exported_when_the_credentials_are_opened() {
    let expiry = after(Duration::from_secs(90 * 86_400));
    let plan = Scenario::new(Connection::test())
        .lwa_answers(issued(start()))
        .opened_with_client_secret_expiry(expiry)
        .plan();
    assert_eq!(plan.metrics.client_secret_expiry, Some(expiry.as_second()));
}

#[test]
fn an_unchanged_condition_keeps_its_transition_time() {
    let (status, token) = connected();
    let now = due_at(&token);
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(now)
        .with_runtime_secret(&token)
        .lwa_answers(issued(now))
        .plan();
    for condition in &plan.status.conditions {
        assert_eq!(
            condition.last_transition_time.0,
            start(),
            "{}",
            condition.type_
        );
    }
}

#[test]
fn a_stored_verdict_reads_back_and_other_reasons_do_not() {
    for reason in [
        "Accepted",
        "RefreshTokenRevoked",
        "ClientAuthenticationFailed",
        "ClientUnauthorized",
        "CredentialsRejected",
    ] {
        assert_eq!(
            LwaVerdict::parse(reason).map(LwaVerdict::reason),
            Some(reason)
        );
    }
    for reason in [
        "NotYetChecked",
        "CredentialsMissing",
        "Suspended",
        "accepted",
        "",
    ] {
        assert_eq!(LwaVerdict::parse(reason), None, "{reason}");
    }
}

#[test]
fn the_engine_decision_becomes_a_step() {
    let at = after(minutes(30));
    assert_eq!(
        refresh_step(RefreshDecision::UseExisting { refresh_at: at }, true),
        RefreshStep::Settled(TokenOutcome::Kept { refresh_at: at })
    );
    assert_eq!(
        refresh_step(RefreshDecision::UseExisting { refresh_at: at }, false),
        RefreshStep::Ask,
        "nothing to keep"
    );
    assert_eq!(
        refresh_step(RefreshDecision::RefreshNow, true),
        RefreshStep::Ask
    );
    let blocked = TerminalCause::Rejected(OAuthErrorCode::InvalidGrant);
    assert_eq!(
        refresh_step(RefreshDecision::Blocked { cause: blocked }, false),
        RefreshStep::Settled(TokenOutcome::Blocked { cause: blocked })
    );
}

/// The status a plan wrote, as the next reconcile reads it from the cache.
fn stored(plan: ReconcilePlan) -> Connection {
    Connection::test().with_status(plan.status)
}

#[test]
fn asking_again_while_waiting_for_a_turn_at_the_rate_limit_writes_nothing() {
    // The refresh is refused for the rate limit; the reconcile the status write causes (and
    // every one after it until the turn) hears the same turn from the engine.
    let turn = after(Duration::from_millis(4200));
    let refused = Scenario::new(Connection::test())
        .lwa_answers(Err(RefreshError::Throttled { retry_at: turn }))
        .plan();
    assert!(refused.status_changed);
    for now in [
        after(Duration::from_millis(300)),
        after(Duration::from_secs(3)),
    ] {
        let again = Scenario::new(stored(refused.clone()))
            .at(now)
            .engine_decides(RefreshDecision::RefreshAt {
                at: turn,
                reason: WaitReason::RateLimit,
            })
            .plan();
        assert!(!again.status_changed, "{:#?}", again.status);
        assert_eq!(again.metrics.refresh, None, "nothing new to count");
        assert_eq!(again.requeue, wait(now, turn));
    }
}

#[test]
fn asking_again_while_backing_off_writes_nothing() {
    let retry_at = after(Duration::from_secs(40));
    let failed = Scenario::new(Connection::test())
        .lwa_answers(unavailable(2, retry_at))
        .failed_attempts(2)
        .plan();
    let again = Scenario::new(stored(failed))
        .at(after(Duration::from_secs(1)))
        .engine_decides(RefreshDecision::RefreshAt {
            at: retry_at,
            reason: WaitReason::Backoff {
                attempts: 2,
                category: "server_error",
            },
        })
        .failed_attempts(2)
        .plan();
    assert!(!again.status_changed, "{:#?}", again.status);
    assert_eq!(again.events, []);
}

#[test]
fn asking_again_while_the_circuit_is_open_writes_nothing() {
    let until = after(minutes(1));
    let refused = Scenario::new(Connection::test())
        .lwa_answers(Err(RefreshError::CircuitOpen { until }))
        .plan();
    let again = Scenario::new(stored(refused))
        .at(after(Duration::from_secs(5)))
        .engine_decides(RefreshDecision::RefreshAt {
            at: until,
            reason: WaitReason::CircuitOpen,
        })
        .plan();
    assert!(!again.status_changed, "{:#?}", again.status);
}

#[test]
fn a_valid_token_waiting_for_its_turn_reads_as_published() {
    let (status, token) = connected();
    let now = due_at(&token);
    let turn = clock::add(now, Duration::from_secs(3));
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(now)
        .with_runtime_secret(&token)
        .engine_decides(RefreshDecision::RefreshAt {
            at: turn,
            reason: WaitReason::RateLimit,
        })
        .plan();
    assert_eq!(conditions(&plan), SERVING);
    assert_eq!(
        message(&plan, "Ready"),
        format!("access token published, valid until {}", token.expires_at)
    );
    assert_eq!(plan.runtime_secret, SecretChange::Keep);
    assert_eq!(plan.requeue, wait(now, turn));
}

// ---------------------------------------------------------------------------------------------
// Drift: pods judged again against today's rules.

/// Pod `name` as the pod cache keeps it: labelled as `gateway` (if any), mounting `secret` as
/// its whole volume `token`.
fn pod(name: &str, gateway: Option<&str>, secret: &str) -> PodFacts {
    use crate::domain::admission::{PodView, ReferenceKind, SecretReference};
    PodFacts {
        name: name.into(),
        uid: format!("uid-{name}"),
        owner: Some(format!("ReplicaSet/{name}-rs")),
        terminating: false,
        view: PodView {
            gateway: gateway.map(str::to_owned),
            labels_field: "metadata.labels",
            owned_by_controller: true,
            references: vec![SecretReference {
                field: "spec.volumes[0].secret".into(),
                secret: secret.into(),
                kind: ReferenceKind::Volume,
                volume: Some("token".into()),
            }],
            mounts: Vec::new(),
        },
    }
}

/// The audit reason and Event of each pod first listed by the plan.
fn pod_reports(plan: &ReconcilePlan) -> Vec<(&str, &'static str, &str)> {
    plan.transitions
        .iter()
        .filter_map(|r| match r {
            Report::UnauthorizedMount(p) => Some((p.pod.as_str(), p.reason, p.event.note.as_str())),
            _ => None,
        })
        .collect()
}

fn listed(plan: &ReconcilePlan) -> Vec<(&str, &str)> {
    plan.status
        .unauthorized_pods
        .iter()
        .map(|p| (p.name.as_str(), p.reason.as_str()))
        .collect()
}

#[test]
fn a_pod_admitted_before_its_connection_withholds_the_runtime_secret_and_is_named() {
    // The pod named `acme-us-sp-api` before connection acme-us existed; its gateway is not
    // listed.
    let scenario = Scenario::new(Connection::test()).with_pod(pod(
        "early",
        Some("gw-early"),
        "acme-us-sp-api",
    ));
    assert!(!scenario.asks_lwa(), "nothing is refreshed while withheld");
    let plan = scenario.plan();
    assert_eq!(plan.runtime_secret, SecretChange::Keep, "no runtime Secret");
    assert_eq!(plan.token_store, SecretChange::Keep);
    assert_eq!(
        conditions(&plan),
        [
            ("Ready", "False", "UnauthorizedMounts"),
            ("CredentialsValid", "Unknown", "UnauthorizedMounts"),
            ("Suspended", "False", "Active"),
            ("UnauthorizedMounts", "True", "PodsOutsideRules"),
        ]
    );
    assert!(message(&plan, "Ready").starts_with("runtime Secret acme-us-sp-api withheld"));
    assert_eq!(
        message(&plan, "UnauthorizedMounts"),
        "1 pod references this connection's Secrets outside the rules (reported, \
         spec.onUnauthorizedMount: Report): early (gateway_not_listed)"
    );
    assert_eq!(plan.status.runtime_secret_name, None);
    assert_eq!(listed(&plan), [("early", "gateway_not_listed")]);
    let reports = pod_reports(&plan);
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].0, reports[0].1),
        ("early", "gateway_not_listed")
    );
    assert!(
        reports[0].2.starts_with(
            "pod early (owned by ReplicaSet/early-rs) uses this connection's Secrets outside the \
             rules: metadata.labels[\"connectors.openteam.io/gateway\"]: gateway \"gw-early\" is \
             not listed"
        ),
        "{}",
        reports[0].2
    );
    assert_eq!(plan.metrics.unauthorized_mounts, 1);
    assert_eq!(plan.metrics.token_expiry, TokenExpiry::Clear);
    assert_eq!(plan.evictions, []);
    assert_eq!(
        plan.requeue, None,
        "the pod's changes bring the connection back"
    );
    assert_eq!(plan.problem, None);
}

#[test]
fn once_the_pod_is_gone_the_runtime_secret_is_created_and_the_condition_turns_false() {
    let withheld = Scenario::new(Connection::test())
        .with_pod(pod("early", Some("gw-early"), "acme-us-sp-api"))
        .plan();
    let scenario = Scenario::new(stored(withheld)).lwa_answers(issued(start()));
    assert!(scenario.asks_lwa());
    let plan = scenario.plan();
    assert!(applied_token(&plan).is_some());
    assert_eq!(
        conditions(&plan),
        [
            SERVING[0],
            SERVING[1],
            SERVING[2],
            ("UnauthorizedMounts", "False", "AllPodsAuthorized")
        ]
    );
    assert_eq!(listed(&plan), []);
    assert_eq!(plan.metrics.unauthorized_mounts, 0);
    assert_eq!(pod_reports(&plan), []);
}

#[test]
fn a_listed_gateway_changes_nothing() {
    let with_gateway = Scenario::new(Connection::test())
        .with_pod(pod("gw", Some("gw-main"), "acme-us-sp-api"))
        .lwa_answers(issued(start()))
        .plan();
    let alone = Scenario::new(Connection::test())
        .lwa_answers(issued(start()))
        .plan();
    assert_eq!(with_gateway.status, alone.status);
    assert_eq!(conditions(&with_gateway), SERVING);
    assert_eq!(with_gateway.transitions, alone.transitions);
    assert_eq!(with_gateway.metrics.unauthorized_mounts, 0);
}

#[test]
fn a_gateway_removed_while_its_pod_runs_is_reported_once_and_the_runtime_secret_stays() {
    let (status, token) = connected();
    let keeps = RefreshDecision::UseExisting {
        refresh_at: due_at(&token),
    };
    // gw-old was listed when its pod was admitted; the connection now lists gw-main only.
    let scenario = Scenario::new(Connection::test().with_status(status))
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .with_pod(pod("old-gateway", Some("gw-old"), "acme-us-sp-api"))
        .engine_decides(keeps);
    assert!(!scenario.asks_lwa());
    let plan = scenario.plan();
    assert_eq!(
        plan.runtime_secret,
        SecretChange::Keep,
        "listed gateways keep their token"
    );
    assert_eq!(
        conditions(&plan),
        [
            SERVING[0],
            SERVING[1],
            SERVING[2],
            ("UnauthorizedMounts", "True", "PodsOutsideRules")
        ]
    );
    assert!(plan.status_changed);
    assert_eq!(
        pod_reports(&plan)
            .iter()
            .map(|r| (r.0, r.1))
            .collect::<Vec<_>>(),
        [("old-gateway", "gateway_not_listed")]
    );
    assert_eq!(plan.metrics.unauthorized_mounts, 1);
    // The next reconcile finds the same pod: nothing new to write or report.
    let again = Scenario::new(stored(plan.clone()))
        .at(after(minutes(2)))
        .with_runtime_secret(&token)
        .with_pod(pod("old-gateway", Some("gw-old"), "acme-us-sp-api"))
        .engine_decides(keeps)
        .plan();
    assert!(!again.status_changed, "{:#?}", again.status);
    assert_eq!(again.transitions, []);
    assert_eq!(again.metrics.unauthorized_mounts, 1);
}

#[test]
fn a_namespace_given_to_another_team_reports_every_pod_that_uses_the_token() {
    let (status, token) = connected();
    let plan = Scenario::new(Connection::test().with_status(status))
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .with_pod(pod("gw", Some("gw-main"), "acme-us-sp-api"))
        .in_namespace_of(Some("globex"))
        .engine_decides(RefreshDecision::UseExisting {
            refresh_at: due_at(&token),
        })
        .plan();
    assert_eq!(listed(&plan), [("gw", "team_mismatch")]);
    assert!(
        pod_reports(&plan)[0]
            .2
            .contains("belongs to Team \"globex\"")
    );
}

#[test]
fn a_pod_that_names_only_the_sealed_credentials_is_reported_but_withholds_nothing() {
    let plan = Scenario::new(Connection::test())
        .with_pod(pod("reader", Some("gw-main"), "acme-us-lwa"))
        .lwa_answers(issued(start()))
        .plan();
    assert!(applied_token(&plan).is_some());
    assert_eq!(listed(&plan), [("reader", "sealed_secret_reference")]);
}

#[test]
fn evict_asks_to_evict_every_pod_outside_the_rules_except_one_already_going() {
    let (status, token) = connected();
    let mut going = pod("going", None, "acme-us-sp-api");
    going.terminating = true;
    let plan = Scenario::new(Connection::test().evicting().with_status(status))
        .at(after(minutes(1)))
        .with_runtime_secret(&token)
        .with_pod(pod("intruder", None, "acme-us-sp-api"))
        .with_pod(going)
        .with_pod(pod("gw", Some("gw-main"), "acme-us-sp-api"))
        .engine_decides(RefreshDecision::UseExisting {
            refresh_at: due_at(&token),
        })
        .plan();
    assert_eq!(
        plan.evictions,
        [Eviction {
            pod: "intruder".into(),
            uid: "uid-intruder".into(),
            gateway: None,
            reason: "missing_gateway_label",
        }]
    );
    assert!(
        message(&plan, "UnauthorizedMounts")
            .contains("(evicting, spec.onUnauthorizedMount: Evict)")
    );
    assert!(
        pod_reports(&plan)
            .iter()
            .all(|r| r.2.contains("(evicting it)"))
    );
    assert_eq!(plan.metrics.unauthorized_mounts, 2);
}

#[test]
fn many_pods_are_counted_and_the_first_ones_named() {
    let mut scenario = Scenario::new(Connection::test());
    for i in 0..20 {
        scenario = scenario.with_pod(pod(&format!("p{i:02}"), None, "acme-us-sp-api"));
    }
    let plan = scenario.plan();
    assert_eq!(plan.status.unauthorized_pods.len(), drift::LISTED_PODS);
    assert_eq!(pod_reports(&plan).len(), drift::LISTED_PODS);
    assert_eq!(plan.metrics.unauthorized_mounts, 20);
    let summary = message(&plan, "UnauthorizedMounts");
    assert!(summary.starts_with("20 pods reference"), "{summary}");
    assert!(
        summary.ends_with("p15 (missing_gateway_label), and 4 more"),
        "{summary}"
    );
}
