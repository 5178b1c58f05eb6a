//! One reconcile of one connection: the I/O around the pure steps of [`super::plan`].
//!
//! Observe (the runtime Secret, the token store, the credentials Secret; the refresh engine's
//! decision) → [`plan::refresh_step`] → open the credentials and ask LWA if needed →
//! [`plan::plan`] → apply: the metrics and audit records of what was learned, the runtime
//! Secret and the token store (server-side apply or delete), the status (server-side apply, only
//! when it changes), the transitions' audit records and Events, then this reconcile's Events.
//! Disconnect ([`cleanup`]) removes both Secrets and never calls LWA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::plan::{
    self, AuditNote, CredentialsState, EventKind, EventNote, Eviction, Gate, ObservedSecrets,
    PodReport, Progress, ReconcileInputs, ReconcilePlan, RefreshAttempt, RefreshStep, SecretChange,
    Stop, TokenExpiry, TokenOutcome,
};
use super::{Context, Error};
use crate::api::AmazonSellerConnection;
use crate::crypto::{self, Credentials, OpenError, SealContext};
use crate::error::Categorized;
use crate::lwa::{ClientCredentials, ConnectionKey, TokenSource};
use crate::names::FIELD_MANAGER;
use crate::observability::audit::{AuditEvent, Category, Outcome};
use crate::secrets::runtime_secret::{self, Published};
use crate::secrets::token_store;

/// How long a reconcile waits for the first pod and namespace lists before it looks again.
const LIST_WAIT: Duration = Duration::from_secs(10);

/// When a failed eviction (a PodDisruptionBudget, an API error) is tried again.
const EVICTION_RETRY: Duration = Duration::from_secs(30);

/// What a reconcile of a live connection did: when to look again, and what keeps the
/// connection from working, if anything (the reconcile is counted as failed with it).
#[derive(Debug)]
pub struct Applied {
    /// When to look again.
    pub action: Action,
    /// A bounded name for what someone must fix (`credentials_missing`, …).
    pub problem: Option<&'static str>,
}

/// Reconciles a connection that is not being deleted.
pub async fn apply<S: TokenSource>(
    connection: Arc<AmazonSellerConnection>,
    ctx: Arc<Context<S>>,
) -> Result<Applied, Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let key = ConnectionKey::new(&namespace, &connection.name_any());
    // The pods must be known before anything is published: a runtime Secret created now could
    // go to a pod outside the rules.
    if !ctx.drift.wait_listed(&namespace, LIST_WAIT).await {
        tracing::warn!(connection = %key, "the pods or the namespace of the connection are not listed yet; looking again shortly");
        return Ok(Applied {
            action: Action::requeue(LIST_WAIT),
            problem: Some("pods_not_listed"),
        });
    }
    let found = plan::drift::judge(
        &connection,
        ctx.drift.team_of(&namespace).as_deref(),
        &ctx.drift.pods_in(&namespace),
    );
    let now = ctx.clock.now();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let observed = observe_secrets(&connection, &ctx, &secrets, &key).await?;
    let progress = match plan::gate(&connection) {
        Gate::Stop(stop) => Progress::Stopped(stop),
        Gate::Proceed { .. }
            if plan::drift::withholds(&connection, observed.runtime.is_some(), &found) =>
        {
            Progress::Stopped(Stop::Withheld)
        }
        Gate::Proceed { renew_before } => {
            let current = observed.token_in_use(now);
            let found = Found {
                connection: &connection,
                ctx: &ctx,
                key: &key,
                now,
                current: current.as_ref(),
                renew_before,
            };
            Progress::Credentials(found.credentials(&secrets).await?)
        }
    };
    let plan = plan::plan(&ReconcileInputs {
        connection: &connection,
        now,
        secrets: &observed,
        progress,
        pods: &found,
    });
    execute(&connection, &ctx, &secrets, &key, plan).await
}

/// Reads the runtime Secret and, when it may matter, the token store, and opens the store.
async fn observe_secrets<S: TokenSource>(
    connection: &AmazonSellerConnection,
    ctx: &Context<S>,
    secrets: &Api<Secret>,
    key: &ConnectionKey,
) -> Result<ObservedSecrets, Error> {
    let name = connection.name_any();
    let runtime = secrets
        .get_opt(&runtime_secret::name(&name))
        .await
        .map_err(Error::kube("read the runtime Secret"))?;
    let store = if plan::looks_for_token_store(connection) {
        secrets
            .get_opt(&token_store::name(&name))
            .await
            .map_err(Error::kube("read the token store"))?
    } else {
        None
    };
    let keyring = ctx
        .keyring
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Opened once, both to read the token back and to tell whether it needs writing.
    let namespace = connection.namespace().unwrap_or_default();
    let context = token_store::context(&connection.spec.team_id, &namespace, &name);
    let opened_store =
        store
            .as_ref()
            .and_then(|store| match token_store::open(store, &keyring, &context) {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(
                        connection = %key,
                        reason = err.category(),
                        "cannot open the token store; it is replaced with the next token"
                    );
                    None
                }
            });
    Ok(ObservedSecrets {
        runtime,
        store,
        opened_store,
        active_key: keyring.active().id().to_owned(),
    })
}

/// A connection that passed the gate, on its way to the credentials and the engine.
struct Found<'a, S: TokenSource> {
    connection: &'a AmazonSellerConnection,
    ctx: &'a Context<S>,
    key: &'a ConnectionKey,
    now: Timestamp,
    /// The valid token in use, if any.
    current: Option<&'a Published>,
    renew_before: Duration,
}

impl<S: TokenSource> Found<'_, S> {
    /// Reads the credentials Secret, asks the engine what to do, opens the credentials when
    /// needed and asks LWA when the step says so.
    async fn credentials(&self, secrets: &Api<Secret>) -> Result<CredentialsState, Error> {
        let spec = &self.connection.spec;
        let Some(sealed) = secrets
            .get_opt(&spec.credentials_secret_name)
            .await
            .map_err(Error::kube("read the credentials Secret"))?
        else {
            return Ok(CredentialsState::Missing);
        };
        let Some(envelope) = plan::sealed_envelope(&sealed) else {
            return Ok(CredentialsState::NotSealed);
        };
        let version = sealed.metadata.resource_version.clone().unwrap_or_default();
        // The engine's memory (terminal rejections, backoff) belongs to this spec and this
        // version of the credentials.
        let fingerprint = format!(
            "{}:{version}",
            self.connection.metadata.generation.unwrap_or_default()
        );
        let decision = self.ctx.engine.decide(
            self.now,
            self.key,
            &fingerprint,
            self.current.map(Published::state),
            self.renew_before,
        );
        let (key_id, credentials, outcome) =
            match plan::refresh_step(decision, self.current.is_some()) {
                RefreshStep::Settled(outcome) => {
                    // Keeping the token in use needs no plaintext: a version of the Secret already
                    // opened with a key still held is not opened again (see `opened`).
                    let known = match outcome {
                        TokenOutcome::Kept { .. } => self.known_key(&version),
                        _ => None,
                    };
                    match known {
                        Some(key_id) => (key_id, None, outcome),
                        None => match self.open(&version, envelope) {
                            Ok((credentials, key_id)) => (key_id, Some(credentials), outcome),
                            Err(err) => return Ok(CredentialsState::Unopenable(err)),
                        },
                    }
                }
                RefreshStep::Ask => match self.open(&version, envelope) {
                    Ok((credentials, key_id)) => {
                        let attempt = self.ask(&fingerprint, &credentials).await;
                        (key_id, Some(credentials), TokenOutcome::Asked(attempt))
                    }
                    Err(err) => return Ok(CredentialsState::Unopenable(err)),
                },
            };
        Ok(CredentialsState::Usable {
            key_id,
            client_secret_expires_at: credentials.and_then(|c| c.client_secret_expires_at),
            outcome,
            // Read after the refresh: it changes the count.
            failed_attempts: self.ctx.engine.failed_attempts(self.key),
        })
    }

    /// The key this version of the credentials Secret was opened with, if it was and the key
    /// is still held.
    fn known_key(&self, version: &str) -> Option<String> {
        let keyring = self
            .ctx
            .keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.ctx.opened.key_id(self.key.as_str(), version, &keyring)
    }

    /// Opens the envelope, remembering which version opened with which key.
    fn open(&self, version: &str, envelope: &[u8]) -> Result<(Credentials, String), OpenError> {
        let spec = &self.connection.spec;
        let namespace = self.connection.namespace().unwrap_or_default();
        let context = SealContext {
            team_id: &spec.team_id,
            namespace: &namespace,
            secret_name: &spec.credentials_secret_name,
        };
        let opened = {
            let keyring = self
                .ctx
                .keyring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crypto::open(&keyring, &context, envelope)
        };
        match &opened {
            Ok((_, key_id)) => self.ctx.opened.record(self.key.as_str(), version, key_id),
            Err(_) => self.ctx.opened.forget(self.key.as_str()),
        }
        opened
    }

    /// One refresh through the engine (which may refuse without calling LWA).
    async fn ask(&self, fingerprint: &str, credentials: &Credentials) -> RefreshAttempt {
        let lwa = ClientCredentials {
            client_id: credentials.client_id.clone(),
            client_secret: credentials.client_secret.clone(),
            refresh_token: credentials.refresh_token.clone(),
            next_client_secret: credentials.next_client_secret.clone(),
        };
        let started = Instant::now();
        let deadline = self.current.map(|token| token.expires_at);
        let result = self
            .ctx
            .engine
            .refresh(self.key, fingerprint, &lwa, deadline)
            .await;
        RefreshAttempt {
            result,
            took: started.elapsed(),
        }
    }
}

/// Applies a plan: what was learned (metrics, audit), the Secrets, the status and its
/// transitions, then this reconcile's Events.
async fn execute<S: TokenSource>(
    connection: &AmazonSellerConnection,
    ctx: &Context<S>,
    secrets: &Api<Secret>,
    key: &ConnectionKey,
    plan: ReconcilePlan,
) -> Result<Applied, Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let name = connection.name_any();
    let team = &connection.spec.team_id;
    let metrics = &plan.metrics;
    if let Some(expires) = metrics.client_secret_expiry {
        ctx.metrics
            .set_client_secret_expiry(&namespace, &name, expires);
    }
    if let Some(took) = metrics.lwa_latency {
        ctx.metrics.observe_lwa_request(took);
    }
    if let Some((outcome, reason)) = metrics.refresh {
        ctx.metrics.record_refresh(team, outcome, reason);
    }
    for note in &plan.audit {
        audit(ctx, connection, note);
    }

    let runtime_name = runtime_secret::name(&name);
    match &plan.runtime_secret {
        SecretChange::Apply(desired) => {
            apply_secret(secrets, &runtime_name, desired, "write the runtime Secret").await?;
        }
        SecretChange::Delete => {
            delete_secret(secrets, &runtime_name, "delete the runtime Secret").await?;
        }
        SecretChange::Keep => {}
    }
    let store_name = token_store::name(&name);
    match &plan.token_store {
        SecretChange::Apply(token) => {
            let desired = {
                let keyring = ctx
                    .keyring
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let context = token_store::context(team, &namespace, &name);
                token_store::build(connection, token, &keyring, &context)
                    .map_err(|_| Error::Seal)?
            };
            apply_secret(secrets, &store_name, &desired, "write the token store").await?;
        }
        SecretChange::Delete => {
            delete_secret(secrets, &store_name, "delete the token store").await?;
        }
        SecretChange::Keep => {}
    }
    match metrics.token_expiry {
        TokenExpiry::Set(expires) => ctx
            .metrics
            .set_token_expiry(&namespace, &name, team, expires),
        TokenExpiry::Clear => ctx.metrics.clear_token_expiry(&namespace, &name, team),
    }
    ctx.metrics
        .set_unauthorized_mounts(&namespace, &name, metrics.unauthorized_mounts);

    let version = connection.resource_version();
    if ctx
        .applied
        .already_written(key.as_str(), version.as_deref(), &plan.status)
    {
        // A cached copy from before this very write: done, transitions reported.
    } else {
        if plan.status_changed {
            let patch = json!({
                "apiVersion": "connectors.openteam.io/v1alpha1",
                "kind": "AmazonSellerConnection",
                "status": plan.status,
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
                .record(key.as_str(), version.as_deref(), plan.status.clone());
        }
        let reference = connection.object_ref(&());
        for report in &plan.transitions {
            match report {
                plan::Report::Audit(note) => audit(ctx, connection, note),
                plan::Report::Event(note) => ctx.publish(&event(note), &reference).await,
                plan::Report::UnauthorizedMount(found) => {
                    audit_pod(
                        ctx,
                        connection,
                        "unauthorized_mount",
                        Outcome::Failure,
                        found,
                    );
                    ctx.publish(&event(&found.event), &reference).await;
                }
            }
        }
    }
    for note in &plan.events {
        ctx.publish(&event(note), &connection.object_ref(&())).await;
    }
    let mut requeue = plan.requeue;
    for eviction in &plan.evictions {
        if !evict(ctx, connection, eviction).await {
            requeue = Some(requeue.map_or(EVICTION_RETRY, |r| r.min(EVICTION_RETRY)));
        }
    }
    Ok(Applied {
        action: requeue.map_or_else(Action::await_change, Action::requeue),
        problem: plan.problem,
    })
}

/// Evicts a pod outside the rules through the Eviction API, on condition that it is still the
/// pod judged (its uid), auditing and announcing the outcome. Returns whether the pod is gone or
/// going (false: try again later).
async fn evict<S: TokenSource>(
    ctx: &Context<S>,
    connection: &AmazonSellerConnection,
    eviction: &Eviction,
) -> bool {
    let namespace = connection.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // Built by hand: kube's `EvictParams` serializes its options as `delete_options`, which the
    // API server ignores, and the uid precondition must apply.
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": eviction.pod, "namespace": namespace },
        "deleteOptions": { "preconditions": { "uid": eviction.uid } },
    });
    let sent = pods
        .create_subresource::<_, serde_json::Value>(
            "eviction",
            &eviction.pod,
            &PostParams::default(),
            &body,
        )
        .await;
    let report = PodReport {
        pod: eviction.pod.clone(),
        gateway: eviction.gateway.clone(),
        reason: eviction.reason,
        event: EventNote {
            kind: EventKind::Normal,
            reason: "PodEvicted",
            note: format!(
                "evicted pod {} ({}): it used this connection's Secrets outside the rules",
                eviction.pod, eviction.reason
            ),
        },
    };
    let (outcome, report, done) = match sent {
        Ok(_) => (Outcome::Success, report, true),
        // Gone already, or replaced by another pod of that name (judged on its own).
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            return true;
        }
        Err(err) => {
            let why = match &err {
                kube::Error::Api(status) if status.code == 429 => {
                    "a PodDisruptionBudget does not allow it now".to_owned()
                }
                other => other.to_string(),
            };
            tracing::warn!(connection = %format!("{namespace}/{}", connection.name_any()), pod = %eviction.pod, "failed to evict a pod outside the rules: {why}");
            let note = format!(
                "failed to evict pod {} ({}): {why}; trying again in {}s",
                eviction.pod,
                eviction.reason,
                EVICTION_RETRY.as_secs()
            );
            let event = EventNote {
                kind: EventKind::Warning,
                reason: "EvictionFailed",
                note,
            };
            (Outcome::Failure, PodReport { event, ..report }, false)
        }
    };
    audit_pod(ctx, connection, "evict_pod", outcome, &report);
    ctx.publish(&event(&report.event), &connection.object_ref(&()))
        .await;
    done
}

/// One `gateway_activity` audit record about a pod and `connection`.
fn audit_pod<S: TokenSource>(
    ctx: &Context<S>,
    connection: &AmazonSellerConnection,
    action: &'static str,
    outcome: Outcome,
    report: &PodReport,
) {
    let mut record = AuditEvent::new(Category::GatewayActivity, action, outcome)
        .actor(&ctx.identity)
        .team(&connection.spec.team_id)
        .namespace(&connection.namespace().unwrap_or_default())
        .connection(&connection.name_any())
        .pod(&report.pod)
        .reason(report.reason);
    if let Some(gateway) = &report.gateway {
        record = record.gateway(gateway);
    }
    if let Err(err) = ctx.audit.record(record) {
        tracing::error!(error = %err, "failed to write an audit record");
    }
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

/// Deletes a Secret the operator owns; one already gone is fine.
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

/// The Event for a note.
fn event(note: &EventNote) -> Event {
    Event {
        type_: match note.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: note.reason.to_owned(),
        note: Some(note.note.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// Writes one audit record about `connection`, logging (not failing) when the log is broken.
fn audit<S: TokenSource>(ctx: &Context<S>, connection: &AmazonSellerConnection, note: &AuditNote) {
    let event = AuditEvent::new(note.category, note.action, note.outcome)
        .actor(&ctx.identity)
        .team(&connection.spec.team_id)
        .namespace(&connection.namespace().unwrap_or_default())
        .connection(&connection.name_any())
        .reason(note.reason);
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
        &AuditNote {
            category: Category::ConnectorSetup,
            action: "disconnect",
            outcome: Outcome::Success,
            reason: "connection_deleted",
        },
    );
    ctx.publish(
        &event(&EventNote {
            kind: EventKind::Normal,
            reason: "Disconnected",
            note: "connection deleted: runtime Secret removed".into(),
        }),
        &connection.object_ref(&()),
    )
    .await;
    Ok(Action::await_change())
}
