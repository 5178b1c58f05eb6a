//! One reconcile of one connection: observe (the connection, its credentials Secret, its
//! runtime Secret) → compute (pure: conditions, the token decision) → apply (runtime Secret and
//! status by server-side apply, each only when it would change).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::api::{AmazonSellerConnection, AmazonSellerConnectionStatus};
use crate::crypto::{self, Credentials, SealContext};
use crate::domain::conditions::{
    self, CREDENTIALS_VALID, Desired, Observed, READY, SUSPENDED, Status,
};
use crate::domain::credential_access::Delivery;
use crate::domain::{marketplace, validation};
use crate::error::Categorized;
use crate::keystore;
use crate::lwa::{
    ClientCredentials, ConnectionKey, OAuthErrorCode, RefreshDecision, RefreshError, TerminalCause,
    TokenSource,
};
use crate::names::{FIELD_MANAGER, LWA_CREDENTIALS_SECRET_TYPE};
use crate::observability::audit::{AuditEvent, Category, Outcome};
use crate::observability::metrics::RefreshOutcome;
use crate::secrets::runtime_secret::{self, Metadata, Published, whole_seconds};
use crate::secrets::token_store;

/// How often a connection that waits on something the operator cannot watch (a credentials
/// Secret without its label, say) is looked at again.
const RECHECK: Duration = Duration::from_secs(300);

/// The result of computing a connection's state: what to write and when to look again.
struct Plan {
    conditions: Vec<Desired>,
    /// `Some(token)` publishes it; `None` removes the runtime Secret.
    publish: Option<Published>,
    next_refresh_at: Option<Timestamp>,
    last_refresh_at: Option<Timestamp>,
    key_id: Option<String>,
    failed_attempts: u32,
    requeue: Option<Duration>,
    events: Vec<Event>,
}

impl Plan {
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
        }
    }
}

fn ready(status: Status, reason: &'static str, message: impl Into<String>) -> Desired {
    Desired::new(READY, status, reason, message)
}

fn credentials_valid(status: Status, reason: &'static str, message: impl Into<String>) -> Desired {
    Desired::new(CREDENTIALS_VALID, status, reason, message)
}

fn not_suspended() -> Desired {
    Desired::new(
        SUSPENDED,
        Status::False,
        "Active",
        "the connection is active",
    )
}

fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// How LWA's rejection of a connection's credentials is reported: the `Ready` and
/// `CredentialsValid` reason, and what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsRejection {
    /// `invalid_grant`: the refresh token is revoked or expired.
    RefreshTokenRevoked,
    /// `invalid_client`: the client id or secret is wrong or expired.
    ClientAuthenticationFailed,
    /// `unauthorized_client`: the application may not use this grant.
    ClientUnauthorized,
    /// Any other terminal answer, or a request that could not be made.
    CredentialsRejected,
}

impl CredentialsRejection {
    /// The rejection a terminal refresh failure is reported as.
    pub fn of(cause: TerminalCause) -> Self {
        match cause {
            TerminalCause::Rejected(OAuthErrorCode::InvalidGrant) => Self::RefreshTokenRevoked,
            TerminalCause::Rejected(OAuthErrorCode::InvalidClient) => {
                Self::ClientAuthenticationFailed
            }
            TerminalCause::Rejected(OAuthErrorCode::UnauthorizedClient) => Self::ClientUnauthorized,
            TerminalCause::Rejected(
                OAuthErrorCode::InvalidRequest
                | OAuthErrorCode::InvalidScope
                | OAuthErrorCode::UnsupportedGrantType
                | OAuthErrorCode::ServerError
                | OAuthErrorCode::TemporarilyUnavailable
                | OAuthErrorCode::Other,
            )
            | TerminalCause::IncompleteCredentials
            | TerminalCause::ClientConfig => Self::CredentialsRejected,
        }
    }

    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::RefreshTokenRevoked => "RefreshTokenRevoked",
            Self::ClientAuthenticationFailed => "ClientAuthenticationFailed",
            Self::ClientUnauthorized => "ClientUnauthorized",
            Self::CredentialsRejected => "CredentialsRejected",
        }
    }

    /// What the Team should do, for the condition message and the Event.
    pub fn advice(self) -> &'static str {
        match self {
            Self::RefreshTokenRevoked => {
                "the seller must re-authorize the application and the credentials be sealed again"
            }
            Self::ClientAuthenticationFailed => {
                "the LWA client id or secret is wrong or expired: seal the current client secret"
            }
            Self::ClientUnauthorized => "the LWA application is not authorized for this grant",
            Self::CredentialsRejected => "LWA rejected the request: check the sealed credentials",
        }
    }
}

/// What LWA last said about the credentials, as the `CredentialsValid` condition records it:
/// read back from the stored status while a reconcile learns nothing new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LwaVerdict {
    /// LWA issued a token for them.
    Accepted,
    /// LWA rejected them.
    Rejected(CredentialsRejection),
}

impl LwaVerdict {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Rejected(rejection) => rejection.reason(),
        }
    }

    /// The verdict a stored condition reason records; `None` for reasons that are not an
    /// answer from LWA (`NotYetChecked`, `CredentialsMissing`, …).
    pub fn parse(reason: &str) -> Option<Self> {
        [
            Self::Accepted,
            Self::Rejected(CredentialsRejection::RefreshTokenRevoked),
            Self::Rejected(CredentialsRejection::ClientAuthenticationFailed),
            Self::Rejected(CredentialsRejection::ClientUnauthorized),
            Self::Rejected(CredentialsRejection::CredentialsRejected),
        ]
        .into_iter()
        .find(|verdict| verdict.reason() == reason)
    }
}

/// Reconciles a connection that is not being deleted.
pub async fn apply<S: TokenSource>(
    connection: Arc<AmazonSellerConnection>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let name = connection.name_any();
    let key = ConnectionKey::new(&namespace, &name);
    let now = ctx.clock.now();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let delivery: Delivery = connection.spec.delivery;
    let runtime_name = runtime_secret::name(&name);
    let store_name = token_store::name(&name);
    let store_context = token_store::context(&connection.spec.team_id, &namespace, &name);
    let observed_runtime = secrets
        .get_opt(&runtime_name)
        .await
        .map_err(Error::kube("read the runtime Secret"))?;
    // In Secret delivery a token store exists only as a leftover of an earlier delivery mode,
    // and the reconcile that saw the change deleted it before its status recorded the new
    // generation: once the status is current there is nothing to look for.
    let status_current = connection
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) == connection.metadata.generation);
    let observed_store = if delivery.serves_endpoint() || !status_current {
        secrets
            .get_opt(&store_name)
            .await
            .map_err(Error::kube("read the token store"))?
    } else {
        None
    };
    // The store's token and the key it is sealed to, opened once for both uses below.
    let opened_store = observed_store.as_ref().and_then(|store| {
        let keyring = ctx
            .keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match token_store::open(store, &keyring, &store_context) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(
                    connection = %key,
                    reason = err.category(),
                    "cannot open the token store; it is replaced with the next token"
                );
                None
            }
        }
    });
    // The token in use, read back after a restart (or a change of spec.delivery) from whichever
    // of the two holds the later one.
    let observed_token = [
        observed_runtime.as_ref().and_then(runtime_secret::read),
        opened_store.as_ref().map(|(token, _)| token.clone()),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|t| t.expires_at);

    let plan = compute(&connection, &ctx, &secrets, &key, now, observed_token).await?;

    // Apply: runtime Secret first (so Ready never claims a token that is not there), then status.
    let market = marketplace::lookup(&connection.spec.marketplace).ok();
    match (&plan.publish, market) {
        (Some(token), Some(market)) => {
            let metadata = Metadata {
                marketplace_id: market.marketplace_id,
                region: market.region.code(),
                endpoint: market.endpoint(connection.spec.environment),
                seller_id: connection.spec.seller_id.clone(),
            };
            if delivery.writes_runtime_secret() {
                let desired = runtime_secret::build(&connection, token, &metadata);
                if !observed_runtime
                    .as_ref()
                    .is_some_and(|o| runtime_secret::up_to_date(o, &desired))
                {
                    apply_secret(
                        &secrets,
                        &runtime_name,
                        &desired,
                        "write the runtime Secret",
                    )
                    .await?;
                }
            } else if observed_runtime.is_some() {
                delete_secret(&secrets, &runtime_name, "delete the runtime Secret").await?;
            }
            if delivery.serves_endpoint() {
                let desired = {
                    let keyring = ctx
                        .keyring
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let current = observed_store.as_ref().is_some_and(|o| {
                        token_store::up_to_date(
                            o,
                            opened_store.as_ref(),
                            token,
                            keyring.active().id(),
                        )
                    });
                    if current {
                        None
                    } else {
                        Some(
                            token_store::build(&connection, token, &keyring, &store_context)
                                .map_err(|_| Error::Seal)?,
                        )
                    }
                };
                if let Some(desired) = desired {
                    apply_secret(&secrets, &store_name, &desired, "write the token store").await?;
                }
            } else if observed_store.is_some() {
                delete_secret(&secrets, &store_name, "delete the token store").await?;
            }
            ctx.metrics.set_token_expiry(
                &namespace,
                &name,
                &connection.spec.team_id,
                token.expires_at.as_second(),
            );
        }
        _ => {
            if observed_runtime.is_some() {
                delete_secret(&secrets, &runtime_name, "delete the runtime Secret").await?;
            }
            if observed_store.is_some() {
                delete_secret(&secrets, &store_name, "delete the token store").await?;
            }
            ctx.metrics
                .clear_token_expiry(&namespace, &name, &connection.spec.team_id);
        }
    }

    let status = status_of(&connection, &plan, market, now);
    let version = connection.resource_version();
    if ctx
        .applied
        .already_written(key.as_str(), version.as_deref(), &status)
    {
        // A cached copy from before this very write: done, transitions reported.
    } else {
        if connection.status.as_ref() != Some(&status) {
            let patch = json!({
                "apiVersion": "connectors.openteam.io/v1alpha1",
                "kind": "AmazonSellerConnection",
                "status": status,
            });
            Api::<AmazonSellerConnection>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
                .map_err(Error::kube("write the connection status"))?;
            ctx.applied
                .record(key.as_str(), version.as_deref(), status.clone());
        }
        transitions(&connection, &status, &ctx).await;
    }
    for event in &plan.events {
        ctx.publish(event, &connection.object_ref(&())).await;
    }
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// Writes a Secret the operator owns with server-side apply, taking over its fields.
async fn apply_secret(
    secrets: &Api<Secret>,
    name: &str,
    desired: &Secret,
    action: &'static str,
) -> Result<(), Error> {
    secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(Error::kube(action))?;
    Ok(())
}

async fn delete_secret(
    secrets: &Api<Secret>,
    name: &str,
    action: &'static str,
) -> Result<(), Error> {
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { action, source }),
    }
}

async fn compute<S: TokenSource>(
    connection: &AmazonSellerConnection,
    ctx: &Context<S>,
    secrets: &Api<Secret>,
    key: &ConnectionKey,
    now: Timestamp,
    observed_token: Option<Published>,
) -> Result<Plan, Error> {
    let spec = &connection.spec;
    let name = connection.name_any();
    let namespace = connection.namespace().unwrap_or_default();

    // Rules the schema cannot express, or an object stored before a rule existed: stop here
    // and publish nothing (fail closed).
    let problems = validation::validate_spec(&spec.view(&name));
    if let Some(first) = problems.first() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Ok(Plan::without_token(
            vec![
                ready(
                    Status::False,
                    "InvalidSpec",
                    format!(
                        "invalid spec: {first}{}",
                        if problems.len() > 1 {
                            " (and more)"
                        } else {
                            ""
                        }
                    ),
                ),
                credentials_valid(Status::Unknown, "InvalidSpec", message),
                not_suspended(),
            ],
            None,
        ));
    }
    let renew_before =
        validation::parse_renew_before(&spec.renew_before).unwrap_or(validation::MIN_RENEW_BEFORE);

    if spec.suspended {
        let mut plan = Plan::without_token(
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
        plan.key_id = connection.status.as_ref().and_then(|s| s.key_id.clone());
        return Ok(plan);
    }

    // Credentials: present, a sealed credentials Secret, and opening with the operator's keys.
    let Some(sealed) = secrets
        .get_opt(&spec.credentials_secret_name)
        .await
        .map_err(Error::kube("read the credentials Secret"))?
    else {
        let message = format!(
            "credentials Secret {:?} not found in namespace {namespace}: create it with `amazon-seller-operator seal`",
            spec.credentials_secret_name
        );
        return Ok(Plan::without_token(
            vec![
                ready(Status::False, "CredentialsMissing", message.clone()),
                credentials_valid(Status::False, "CredentialsMissing", message),
                not_suspended(),
            ],
            Some(RECHECK),
        ));
    };
    let unreadable = |message: String| {
        Plan::without_token(
            vec![
                ready(Status::False, "CredentialsUnreadable", message.clone()),
                credentials_valid(Status::False, "CredentialsUnreadable", message),
                not_suspended(),
            ],
            Some(RECHECK),
        )
    };
    let envelope = match (sealed.type_.as_deref(), keystore::envelope_of(&sealed)) {
        (Some(LWA_CREDENTIALS_SECRET_TYPE), Some(envelope)) => envelope,
        _ => {
            return Ok(unreadable(format!(
                "Secret {:?} is not a sealed credentials Secret (type {LWA_CREDENTIALS_SECRET_TYPE} with data key \"sealed\")",
                spec.credentials_secret_name
            )));
        }
    };
    let context = SealContext {
        team_id: &spec.team_id,
        namespace: &namespace,
        secret_name: &spec.credentials_secret_name,
    };
    let version = sealed.metadata.resource_version.clone().unwrap_or_default();
    // Opens the envelope; on failure (audited here), the message to report.
    let open = || -> Result<(Credentials, String), String> {
        let opened = {
            let keyring = ctx
                .keyring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crypto::open(&keyring, &context, envelope)
        };
        match opened {
            Ok((credentials, key_id)) => {
                if let Some(expires) = credentials.client_secret_expires_at {
                    ctx.metrics
                        .set_client_secret_expiry(&namespace, &name, expires.as_second());
                }
                ctx.opened.record(key.as_str(), &version, &key_id);
                Ok((credentials, key_id))
            }
            Err(err) => {
                ctx.opened.forget(key.as_str());
                audit(
                    ctx,
                    connection,
                    Category::ConnectorSetup,
                    "open_credentials",
                    Outcome::Failure,
                    err.category(),
                );
                Err(format!("Secret {:?}: {err}", spec.credentials_secret_name))
            }
        }
    };

    // The token in use, read back from the runtime Secret or the token store (after a restart,
    // say).
    let current = observed_token.filter(|t| t.expires_at > now);
    let current_state = current.as_ref().map(Published::state);
    let fingerprint = format!(
        "{}:{version}",
        connection.metadata.generation.unwrap_or_default()
    );
    let decision = ctx
        .engine
        .decide(now, key, &fingerprint, current_state, renew_before);
    // Keeping the token in use needs no plaintext: a version of the Secret already opened with
    // a key still held is not opened again (see `opened`).
    let known_key = match (&decision, &current) {
        (RefreshDecision::UseExisting { .. }, Some(_)) => {
            let keyring = ctx
                .keyring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ctx.opened.key_id(key.as_str(), &version, &keyring)
        }
        _ => None,
    };
    let (mut credentials, key_id) = match known_key {
        Some(key_id) => (None, key_id),
        None => match open() {
            Ok((credentials, key_id)) => (Some(credentials), key_id),
            Err(message) => return Ok(unreadable(message)),
        },
    };
    let until = |at: Timestamp| wait_until(now, at);
    let serving = |token: &Published| {
        ready(
            Status::True,
            "TokenPublished",
            format!(
                "access token published, valid until {}",
                whole_seconds(token.expires_at)
            ),
        )
    };
    let valid = || credentials_valid(Status::True, "Accepted", "LWA accepted the credentials");

    let mut plan = Plan::without_token(Vec::new(), None);
    plan.key_id = Some(key_id);
    plan.last_refresh_at = current.as_ref().map(|t| t.issued_at);
    // Read after the decision below too: a refresh changes it.
    let attempts = |ctx: &Context<S>| ctx.engine.failed_attempts(key);

    match (decision, current) {
        (RefreshDecision::UseExisting { refresh_at }, Some(token)) => {
            plan.conditions = vec![serving(&token), valid(), not_suspended()];
            plan.next_refresh_at = Some(refresh_at);
            plan.requeue = Some(until(refresh_at));
            plan.publish = Some(token);
        }
        (RefreshDecision::UseExisting { .. } | RefreshDecision::RefreshNow, current) => {
            let credentials = match credentials.take() {
                Some(credentials) => credentials,
                None => match open() {
                    Ok((credentials, _)) => credentials,
                    Err(message) => return Ok(unreadable(message)),
                },
            };
            let lwa = ClientCredentials {
                client_id: credentials.client_id.clone(),
                client_secret: credentials.client_secret.clone(),
                refresh_token: credentials.refresh_token.clone(),
                next_client_secret: credentials.next_client_secret.clone(),
            };
            let started = std::time::Instant::now();
            let result = ctx.engine.refresh(key, &fingerprint, &lwa).await;
            let team = &spec.team_id;
            match result {
                Ok(outcome) => {
                    ctx.metrics.observe_lwa_request(started.elapsed());
                    ctx.metrics
                        .record_refresh(team, RefreshOutcome::Success, "refreshed");
                    audit(
                        ctx,
                        connection,
                        Category::CredentialAccess,
                        "token_refresh",
                        Outcome::Success,
                        "refreshed",
                    );
                    let token = Published {
                        access_token: outcome.token.access_token.clone(),
                        token_type: outcome.token.token_type.clone(),
                        expires_at: whole_seconds(outcome.token.expires_at),
                        issued_at: whole_seconds(outcome.token.issued_at),
                    };
                    // From the whole-second values the Secret keeps, so a later reconcile
                    // reading them back computes the same instant.
                    let refresh_at = crate::lwa::schedule::refresh_at(
                        token.state(),
                        renew_before,
                        crate::lwa::schedule::jitter_seed(key.as_str()),
                    );
                    if outcome.used_next_secret {
                        plan.events.push(event(
                            EventType::Warning,
                            "NextClientSecretUsed",
                            "LWA rejected the client secret and accepted nextClientSecret: seal it as the client secret".into(),
                        ));
                    }
                    plan.conditions = vec![serving(&token), valid(), not_suspended()];
                    plan.next_refresh_at = Some(refresh_at);
                    plan.last_refresh_at = Some(token.issued_at);
                    plan.requeue = Some(until(refresh_at));
                    plan.publish = Some(token);
                }
                Err(err) => failed(ctx, connection, &mut plan, &err, current, now, true),
            }
        }
        (RefreshDecision::RefreshAt { at, .. }, current) => {
            plan.requeue = Some(until(at));
            plan.next_refresh_at = Some(at);
            plan.conditions = match &current {
                Some(token) => vec![serving(token), valid(), not_suspended()],
                None => vec![
                    ready(
                        Status::False,
                        "RefreshPending",
                        format!("no valid token yet; next attempt at {}", whole_seconds(at)),
                    ),
                    observed_credentials_condition(connection),
                    not_suspended(),
                ],
            };
            plan.publish = current;
        }
        (RefreshDecision::Blocked { cause }, current) => {
            // Reported (metric, audit record, Event) when LWA answered; this is the memory of it.
            let err = RefreshError::Terminal { cause };
            failed(ctx, connection, &mut plan, &err, current, now, false);
        }
    }
    plan.failed_attempts = attempts(ctx);
    Ok(plan)
}

/// The stored CredentialsValid condition, or Unknown: used while nothing new was learned.
fn observed_credentials_condition(connection: &AmazonSellerConnection) -> Desired {
    connection
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CREDENTIALS_VALID))
        .and_then(|c| {
            let verdict = LwaVerdict::parse(&c.reason)?;
            Some(credentials_valid(
                Status::parse(&c.status),
                verdict.reason(),
                c.message.clone(),
            ))
        })
        .unwrap_or_else(|| {
            credentials_valid(Status::Unknown, "NotYetChecked", "no answer from LWA yet")
        })
}

/// How long from `now` until `at`, at least a second, so a requeue never spins.
fn wait_until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_secs(at.as_second().saturating_sub(now.as_second()).max(1) as u64)
}

/// Counts and audits a refresh that LWA refused or that failed on the way.
fn record_failed_refresh<S: TokenSource>(
    ctx: &Context<S>,
    connection: &AmazonSellerConnection,
    category: &'static str,
) {
    ctx.metrics
        .record_refresh(&connection.spec.team_id, RefreshOutcome::Failure, category);
    audit(
        ctx,
        connection,
        Category::ApiError,
        "token_refresh",
        Outcome::Failure,
        category,
    );
}

/// Fills `plan` for a refresh that produced no token.
fn failed<S: TokenSource>(
    ctx: &Context<S>,
    connection: &AmazonSellerConnection,
    plan: &mut Plan,
    err: &RefreshError,
    current: Option<Published>,
    now: Timestamp,
    report: bool,
) {
    let team = &connection.spec.team_id;
    let category = err.category();
    let until = |at: Timestamp| wait_until(now, at);
    match err {
        RefreshError::Terminal { cause } => {
            let rejection = CredentialsRejection::of(*cause);
            let reason = rejection.reason();
            let message = format!(
                "LWA rejected the credentials ({cause}): {}",
                rejection.advice()
            );
            if report {
                record_failed_refresh(ctx, connection, category);
                plan.events.push(event(
                    EventType::Warning,
                    "CredentialsRevoked",
                    message.clone(),
                ));
            }
            plan.conditions = vec![
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
            plan.requeue = current.as_ref().map(|t| until(t.expires_at));
            plan.next_refresh_at = None;
            plan.publish = current;
        }
        RefreshError::Retriable {
            retry_at, attempts, ..
        } => {
            record_failed_refresh(ctx, connection, category);
            if *attempts == 1 {
                plan.events.push(event(
                    EventType::Warning,
                    "RefreshFailed",
                    format!("LWA token refresh failed ({category}); retrying with backoff, next attempt at {}", whole_seconds(*retry_at)),
                ));
            }
            retry_later(
                connection,
                plan,
                current,
                *retry_at,
                until(*retry_at),
                category,
            );
        }
        RefreshError::CircuitOpen { until: at } | RefreshError::Throttled { retry_at: at } => {
            ctx.metrics
                .record_refresh(team, RefreshOutcome::Skipped, category);
            retry_later(connection, plan, current, *at, until(*at), category);
        }
    }
}

fn retry_later(
    connection: &AmazonSellerConnection,
    plan: &mut Plan,
    current: Option<Published>,
    at: Timestamp,
    after: Duration,
    category: &str,
) {
    plan.conditions = vec![
        match &current {
            Some(token) => ready(
                Status::True,
                "TokenPublished",
                format!(
                    "access token valid until {}; refresh failing ({category}), next attempt at {}",
                    whole_seconds(token.expires_at),
                    whole_seconds(at)
                ),
            ),
            None => ready(
                Status::False,
                "RefreshFailed",
                format!(
                    "no valid token: refresh failing ({category}), next attempt at {}",
                    whole_seconds(at)
                ),
            ),
        },
        observed_credentials_condition(connection),
        not_suspended(),
    ];
    plan.next_refresh_at = Some(at);
    plan.requeue = Some(after);
    plan.publish = current;
}

fn status_of(
    connection: &AmazonSellerConnection,
    plan: &Plan,
    market: Option<&marketplace::Marketplace>,
    now: Timestamp,
) -> AmazonSellerConnectionStatus {
    let observed: Vec<Observed> = connection
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .map(|c| Observed {
            type_: c.type_.clone(),
            status: Status::parse(&c.status),
            last_transition_time: c.last_transition_time.0,
        })
        .collect();
    let generation = connection.metadata.generation;
    let merged = conditions::merge(
        &observed,
        plan.conditions.clone(),
        generation,
        whole_seconds(now),
    );
    let time = |t: Timestamp| Time(whole_seconds(t));
    let environment = connection.spec.environment;
    AmazonSellerConnectionStatus {
        marketplace_id: market.map(|m| m.marketplace_id.to_owned()),
        region: market.map(|m| m.region.code().to_owned()),
        endpoint: market.map(|m| m.endpoint(environment).to_owned()),
        runtime_secret_name: plan
            .publish
            .as_ref()
            .filter(|_| connection.spec.delivery.writes_runtime_secret())
            .map(|_| runtime_secret::name(&connection.name_any())),
        token_expires_at: plan.publish.as_ref().map(|t| time(t.expires_at)),
        next_refresh_at: plan.next_refresh_at.map(time),
        last_refresh_at: plan.last_refresh_at.map(time),
        failed_refresh_attempts: Some(i32::try_from(plan.failed_attempts).unwrap_or(i32::MAX)),
        key_id: plan.key_id.clone(),
        observed_generation: generation,
        conditions: merged
            .into_iter()
            .map(|c| K8sCondition {
                type_: c.type_.to_owned(),
                status: c.status.as_str().to_owned(),
                reason: c.reason.to_owned(),
                message: c.message,
                observed_generation: c.observed_generation,
                last_transition_time: Time(c.last_transition_time),
            })
            .collect(),
    }
}

fn condition<'a>(
    status: Option<&'a AmazonSellerConnectionStatus>,
    type_: &str,
) -> Option<&'a K8sCondition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// Events and audit records for condition transitions: connected, suspended, resumed.
async fn transitions<S: TokenSource>(
    connection: &AmazonSellerConnection,
    new: &AmazonSellerConnectionStatus,
    ctx: &Context<S>,
) {
    let old = connection.status.as_ref();
    let was = |t: &str| condition(old, t).map(|c| c.status.as_str()) == Some("True");
    let is = |t: &str| condition(Some(new), t).map(|c| c.status.as_str()) == Some("True");
    let reference = connection.object_ref(&());
    if !was(SUSPENDED) && is(SUSPENDED) {
        audit(
            ctx,
            connection,
            Category::ConnectorSetup,
            "suspend",
            Outcome::Success,
            "spec_suspended",
        );
        ctx.publish(
            &event(
                EventType::Normal,
                "Suspended",
                "runtime Secret removed; no token is refreshed while suspended".into(),
            ),
            &reference,
        )
        .await;
    }
    if was(SUSPENDED) && !is(SUSPENDED) {
        audit(
            ctx,
            connection,
            Category::ConnectorSetup,
            "resume",
            Outcome::Success,
            "spec_resumed",
        );
    }
    if !was(READY) && is(READY) {
        audit(
            ctx,
            connection,
            Category::ConnectorSetup,
            "connect",
            Outcome::Success,
            "token_published",
        );
        let gateways = connection.spec.gateways.join(", ");
        let note = match (&new.runtime_secret_name, connection.spec.delivery) {
            (Some(secret), Delivery::Both) => format!(
                "access token published in Secret {secret} and at the runtime credential endpoint for gateways {gateways}"
            ),
            (Some(secret), _) => {
                format!("access token published in Secret {secret} for gateways {gateways}")
            }
            (None, _) => format!(
                "access token available at the runtime credential endpoint for gateways {gateways}"
            ),
        };
        ctx.publish(&event(EventType::Normal, "Connected", note), &reference)
            .await;
    }
}

/// Writes one audit record about `connection`, logging (not failing) when the log is broken.
pub fn audit<S: TokenSource>(
    ctx: &Context<S>,
    connection: &AmazonSellerConnection,
    category: Category,
    action: &'static str,
    outcome: Outcome,
    reason: &'static str,
) {
    let event = AuditEvent::new(category, action, outcome)
        .actor(&ctx.identity)
        .team(&connection.spec.team_id)
        .namespace(&connection.namespace().unwrap_or_default())
        .connection(&connection.name_any())
        .reason(reason);
    if let Err(err) = ctx.audit.record(event) {
        tracing::error!(error = %err, "failed to write an audit record");
    }
}

/// Disconnect: the runtime Secret and the token store go first, then the audit record, then
/// the finalizer is removed by the caller. Never calls LWA, so it completes when LWA is unreachable.
pub async fn cleanup<S: TokenSource>(
    connection: Arc<AmazonSellerConnection>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let name = connection.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    delete_secret(
        &secrets,
        &runtime_secret::name(&name),
        "delete the runtime Secret",
    )
    .await?;
    delete_secret(
        &secrets,
        &token_store::name(&name),
        "delete the token store",
    )
    .await?;
    let key = ConnectionKey::new(&namespace, &name);
    ctx.engine.forget(&key);
    ctx.applied.forget(key.as_str());
    ctx.opened.forget(key.as_str());
    ctx.metrics
        .forget_connection(&namespace, &name, &connection.spec.team_id);
    audit(
        &ctx,
        &connection,
        Category::ConnectorSetup,
        "disconnect",
        Outcome::Success,
        "connection_deleted",
    );
    ctx.publish(
        &event(
            EventType::Normal,
            "Disconnected",
            "connection deleted: runtime Secret removed".into(),
        ),
        &connection.object_ref(&()),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(cause.category(), category);
            assert_eq!(RefreshError::Terminal { cause }.category(), category);
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
}
