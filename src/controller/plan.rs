//! The pure half of a reconcile: from what was observed to what to do about it. No API calls,
//! no clock, no refresh engine, no randomness: everything comes in as plain values, so every
//! rule is tested as a scenario (`plan/tests.rs`) without a server.
//!
//! A reconcile ([`super::reconcile::apply`]) alternates I/O and the pure steps here:
//!
//! 1. observe: the runtime Secret, and the token store when [`looks_for_token_store`] says so;
//!    the pods of the namespace from the controller's trimmed pod cache, judged by
//!    [`drift::judge`];
//! 2. [`gate`]: an invalid spec or a suspended connection stops before the credentials, and so
//!    does a runtime Secret that [`drift::withholds`] (a pod outside the rules names it);
//! 3. observe: the credentials Secret, checked by [`sealed_envelope`];
//! 4. the engine's [`RefreshDecision`], turned by [`refresh_step`] into keep, wait, blocked, or
//!    ask LWA;
//! 5. open the credentials (unless a kept token makes that needless) and, if the step says so,
//!    ask LWA through the engine;
//! 6. [`plan`]: conditions and status, which Secrets to write or delete, Events, audit records,
//!    metric updates, pods to evict, when to look again ([`ReconcilePlan`]);
//! 7. apply the plan.
//!
//! The LWA call sits between two pure steps: [`refresh_step`] decides whether to make it, and
//! [`plan`] takes its outcome ([`TokenOutcome`]) as input.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::api::AmazonSellerConnection;
use crate::crypto::OpenError;
use crate::domain::credential_access::Delivery;
use crate::domain::{marketplace, validation};
use crate::keystore;
use crate::lwa::{RefreshDecision, RefreshError, Refreshed, TerminalCause, WaitReason};
use crate::names::LWA_CREDENTIALS_SECRET_TYPE;
use crate::secrets::runtime_secret::{self, Metadata, Published};
use crate::secrets::token_store;

mod conditions;
pub mod drift;
mod intent;
mod outputs;
mod status;

use intent::intend;
use status::{status_of, transitions};

pub use conditions::{CredentialsRejection, LwaVerdict};
pub use drift::FoundPod;
pub use outputs::{
    AuditNote, EventKind, EventNote, Eviction, MetricUpdates, PodReport, ReconcilePlan, Report,
    SecretChange, TokenExpiry,
};

/// How often a connection that cannot work until someone fixes something is looked at again:
/// a credentials Secret without its label is not watched, and each look counts a failed
/// reconcile, so a connection broken for 15 minutes raises `AmazonSellerReconcileErrors`
/// (more than 5 in 15 minutes).
pub const RECHECK: Duration = Duration::from_secs(120);

/// Whether the token store is looked for. In Secret delivery a token store exists only as a
/// leftover of an earlier delivery mode, and the reconcile that saw the change deleted it
/// before its status recorded the new generation: once the status is current there is nothing
/// to look for.
pub fn looks_for_token_store(connection: &AmazonSellerConnection) -> bool {
    let status_current = connection
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) == connection.metadata.generation);
    connection.spec.delivery.serves_endpoint() || !status_current
}

/// The runtime Secret and the token store as observed.
#[derive(Clone, Debug, Default)]
pub struct ObservedSecrets {
    /// The runtime Secret, if it exists.
    pub runtime: Option<Secret>,
    /// The token store, if it was looked for and exists.
    pub store: Option<Secret>,
    /// The token store's token and the key it is sealed to, if it opened.
    pub opened_store: Option<(Published, String)>,
    /// The id of the operator's active key: a store sealed to another is sealed again.
    pub active_key: String,
}

impl ObservedSecrets {
    /// The token in use at `now`: the later of the runtime Secret's and the token store's (after
    /// a restart, or a change of `spec.delivery`), if it has not expired.
    pub fn token_in_use(&self, now: Timestamp) -> Option<Published> {
        [
            self.runtime.as_ref().and_then(runtime_secret::read),
            self.opened_store.as_ref().map(|(token, _)| token.clone()),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|t| t.expires_at)
        .filter(|t| t.expires_at > now)
    }
}

/// Why a reconcile stops before looking at the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Rules the schema cannot express, or an object stored before a rule existed: publish
    /// nothing (fail closed).
    InvalidSpec {
        /// The first problem, for `Ready`.
        summary: String,
        /// Every problem, for `CredentialsValid`.
        details: String,
    },
    /// `spec.suspended`: containment.
    Suspended,
    /// The runtime Secret does not exist and a pod outside the rules already names it: it is
    /// not created, and nothing is refreshed, until that pod is gone or allowed.
    Withheld,
}

/// Step 2: whether the reconcile goes on to the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// It stops here.
    Stop(Stop),
    /// It goes on; the token is renewed this long before it expires.
    Proceed {
        /// `spec.renewBefore`.
        renew_before: Duration,
    },
}

/// Step 2: stops at an invalid spec, then at a suspended connection.
pub fn gate(connection: &AmazonSellerConnection) -> Gate {
    let name = connection.name_any();
    let problems = validation::validate_spec(&connection.spec.view(&name));
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            " (and more)"
        } else {
            ""
        };
        return Gate::Stop(Stop::InvalidSpec {
            summary: format!("invalid spec: {first}{more}"),
            details: problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if connection.spec.suspended {
        return Gate::Stop(Stop::Suspended);
    }
    Gate::Proceed {
        renew_before: renew_before(connection),
    }
}

fn renew_before(connection: &AmazonSellerConnection) -> Duration {
    validation::parse_renew_before(&connection.spec.renew_before)
        .unwrap_or(validation::MIN_RENEW_BEFORE)
}

/// Step 3: the sealed envelope of a credentials Secret; `None` when it is not one (wrong type,
/// or no `sealed` key).
pub fn sealed_envelope(secret: &Secret) -> Option<&[u8]> {
    match (secret.type_.as_deref(), keystore::envelope_of(secret)) {
        (Some(LWA_CREDENTIALS_SECRET_TYPE), Some(envelope)) => Some(envelope),
        _ => None,
    }
}

/// A call to LWA through the engine, and how long it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshAttempt {
    /// The engine's answer: a token, or why not (LWA's error, or the engine's own refusal).
    pub result: Result<Refreshed, RefreshError>,
    /// How long the call took (the LWA latency metric).
    pub took: Duration,
}

/// What became of the connection's token this reconcile: the input [`plan`] needs from the
/// engine and LWA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// The token in use is valid and not due: kept, looked at again at `refresh_at`.
    Kept {
        /// When it becomes due.
        refresh_at: Timestamp,
    },
    /// A refresh is due but must wait until `at` (backoff, circuit breaker).
    Waiting {
        /// When to try.
        at: Timestamp,
        /// Why not now.
        reason: WaitReason,
    },
    /// LWA rejected these credentials earlier: nothing to do until they change.
    Blocked {
        /// Why.
        cause: TerminalCause,
    },
    /// LWA was asked.
    Asked(RefreshAttempt),
}

/// Step 4: what to do about the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshStep {
    /// Nothing to ask LWA: the outcome is known.
    Settled(TokenOutcome),
    /// Ask LWA (through the engine) for a new token.
    Ask,
}

/// Step 4: the engine's decision, given whether a valid token is in use.
pub fn refresh_step(decision: RefreshDecision, token_in_use: bool) -> RefreshStep {
    match decision {
        RefreshDecision::UseExisting { refresh_at } if token_in_use => {
            RefreshStep::Settled(TokenOutcome::Kept { refresh_at })
        }
        RefreshDecision::UseExisting { .. } | RefreshDecision::RefreshNow => RefreshStep::Ask,
        RefreshDecision::RefreshAt { at, reason } => {
            RefreshStep::Settled(TokenOutcome::Waiting { at, reason })
        }
        RefreshDecision::Blocked { cause } => RefreshStep::Settled(TokenOutcome::Blocked { cause }),
    }
}

/// What the credentials Secret turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum CredentialsState {
    /// No Secret of that name.
    Missing,
    /// A Secret that is not a sealed credentials Secret.
    NotSealed,
    /// The envelope does not open with the operator's keys.
    Unopenable(OpenError),
    /// The credentials open (now, or this version was opened before with a key still held).
    Usable {
        /// The key they are sealed to.
        key_id: String,
        /// The client secret's expiry, when they were opened by this reconcile.
        client_secret_expires_at: Option<Timestamp>,
        /// What became of the token.
        outcome: TokenOutcome,
        /// Failed refresh attempts in a row, after this reconcile's.
        failed_attempts: u32,
    },
}

/// How far a reconcile got before planning.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Stopped at the [`gate`].
    Stopped(Stop),
    /// Went on to the credentials.
    Credentials(CredentialsState),
}

/// Everything [`plan`] reads.
#[derive(Debug)]
pub struct ReconcileInputs<'a> {
    /// The connection as cached.
    pub connection: &'a AmazonSellerConnection,
    /// The instant the reconcile started.
    pub now: Timestamp,
    /// The runtime Secret and the token store.
    pub secrets: &'a ObservedSecrets,
    /// How far it got.
    pub progress: Progress,
    /// The pods of the namespace outside the rules ([`drift::judge`]).
    pub pods: &'a [FoundPod],
}

/// Step 6: the plan.
pub fn plan(inputs: &ReconcileInputs<'_>) -> ReconcilePlan {
    let connection = inputs.connection;
    let secrets = inputs.secrets;
    let mut intent = intend(inputs);
    let delivery: Delivery = connection.spec.delivery;
    let market = marketplace::lookup(&connection.spec.marketplace).ok();
    let (runtime_secret, token_store, token_expiry) = match (&intent.publish, market) {
        (Some(token), Some(market)) => {
            let metadata = Metadata {
                marketplace_id: market.marketplace_id,
                region: market.region.code(),
                endpoint: market.endpoint(connection.spec.environment),
                seller_id: connection.spec.seller_id.clone(),
            };
            let runtime = if delivery.writes_runtime_secret() {
                let desired = runtime_secret::build(connection, token, &metadata);
                if secrets
                    .runtime
                    .as_ref()
                    .is_some_and(|o| runtime_secret::up_to_date(o, &desired))
                {
                    SecretChange::Keep
                } else {
                    SecretChange::Apply(desired)
                }
            } else {
                delete_if(secrets.runtime.is_some())
            };
            let store = if delivery.serves_endpoint() {
                // Sealing is randomised: the store is compared on its opened content.
                if secrets.store.as_ref().is_some_and(|o| {
                    token_store::up_to_date(
                        o,
                        secrets.opened_store.as_ref(),
                        token,
                        &secrets.active_key,
                    )
                }) {
                    SecretChange::Keep
                } else {
                    SecretChange::Apply(token.clone())
                }
            } else {
                delete_if(secrets.store.is_some())
            };
            (
                runtime,
                store,
                TokenExpiry::Set(token.expires_at.as_second()),
            )
        }
        // Withheld: the runtime Secret does not exist, and a token store (delivery `Both`) is
        // left as it is.
        _ if matches!(inputs.progress, Progress::Stopped(Stop::Withheld)) => {
            (SecretChange::Keep, SecretChange::Keep, TokenExpiry::Clear)
        }
        _ => (
            delete_if(secrets.runtime.is_some()),
            delete_if(secrets.store.is_some()),
            TokenExpiry::Clear,
        ),
    };
    let drift = drift::plan(connection, inputs.pods);
    intent.conditions.extend(drift.condition);
    let mut status = status_of(connection, &intent, market, inputs.now);
    status.unauthorized_pods = drift.listed;
    let mut reports = transitions(connection, &status);
    reports.extend(drift::newly_listed(
        connection,
        connection.status.as_ref(),
        inputs.pods,
    ));
    ReconcilePlan {
        metrics: MetricUpdates {
            client_secret_expiry: intent.client_secret_expiry,
            refresh: intent.refresh_metric,
            lwa_latency: intent.lwa_latency,
            token_expiry,
            unauthorized_mounts: inputs.pods.len(),
        },
        audit: intent.audit,
        runtime_secret,
        token_store,
        problem: intent.problem,
        status_changed: connection.status.as_ref() != Some(&status),
        transitions: reports,
        evictions: drift.evictions,
        status,
        events: intent.events,
        requeue: intent.requeue,
    }
}

fn delete_if<T>(present: bool) -> SecretChange<T> {
    if present {
        SecretChange::Delete
    } else {
        SecretChange::Keep
    }
}

#[cfg(test)]
mod tests;
