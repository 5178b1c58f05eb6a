//! The `AmazonSellerConnection` controller: turns connections into runtime Secrets and status.
//!
//! Watches, all narrowed by label selectors so memory does not grow with unrelated Secrets:
//! connections; runtime Secrets and token stores it owns (`secret-role` `runtime-token` or
//! `token-store`), so a deleted or edited one is repaired at once; and sealed credentials Secrets
//! (`secret-role=lwa-credentials`), mapped to the connections that name them through an index
//! kept from the connection watch ([`credential_users`]), not a scan of the cache. For drift
//! ([`drift`]): pods of the watched namespaces, trimmed on arrival to their Secret references
//! ([`pods`]), and the watched namespaces' Team labels (metadata only), each change mapped to
//! the connections it concerns.
//!
//! One reconcile is [`reconcile`](mod@reconcile), the I/O (reads, the LWA call, writes), around [`plan`], the
//! pure rules that decide what to write and report from what was read.

pub mod applied;
pub mod credential_users;
pub mod drift;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod mocked_api;
pub mod opened;
pub mod plan;
pub mod pods;
pub mod reconcile;
pub mod relisted;
pub mod tally;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;

use crate::api::review::{SecurityLogReview, latest_review_time};
use crate::api::{AmazonSellerConnection, GROUP};
use crate::crypto::Keyring;
use crate::error::Categorized;
use crate::lwa::{Clock, LwaClient, RefreshEngine, TokenSource};
use crate::names::{ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN, ROLE_TOKEN_STORE, SECRET_ROLE_LABEL};
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::Metrics;
use crate::rbac::{Permission, Scope};

use credential_users::CredentialUsers;

/// kubectl's copy of the last applied object, dropped from the cache.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The finalizer that makes deletion remove the runtime Secret first.
pub const FINALIZER: &str = "connectors.openteam.io/runtime-secret";

/// The permissions of the calls in this module and in [`reconcile`](mod@reconcile) (see [`crate::rbac`]).
pub const RBAC: &[Permission] = &[
    // `run`: the controller's watcher over connections (list, watch); `finalizer()` adds and
    // removes the finalizer with a JSON patch (patch).
    Permission::new(
        GROUP,
        "amazonsellerconnections",
        &["list", "watch", "patch"],
        Scope::Watched,
    ),
    // `reconcile::apply`: the status by server-side apply.
    Permission::new(
        GROUP,
        "amazonsellerconnections/status",
        &["patch"],
        Scope::Watched,
    ),
    // Not `amazonsellerconnections/finalizers`: that is needed only to set blockOwnerDeletion on
    // an owner reference (OwnerReferencesPermissionEnforcement), which the runtime Secret's
    // owner reference does not set.
    // Runtime, token store and credentials Secrets: the controller's label-selected watches
    // (list, watch), `get_opt` of all three (get), the runtime Secret and the token store by
    // server-side apply (patch, and create when the apply creates them), and their removal on
    // suspend, a change of `spec.delivery` and disconnect (delete).
    Permission::new(
        "",
        "secrets",
        &["get", "list", "watch", "create", "patch", "delete"],
        Scope::Watched,
    ),
    // `Context::publish`: Events on connections (create; the Recorder patches an Event it
    // publishes again for the same object version, to count the repeat).
    Permission::new(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        Scope::Watched,
    ),
    // `follow_reviews`: a reflector over the cluster-scoped SecurityLogReviews.
    Permission::new(
        GROUP,
        "securitylogreviews",
        &["list", "watch"],
        Scope::Cluster,
    ),
    // `drift::pod_triggers`: the pods of the watched namespaces, trimmed to their Secret
    // references as they arrive.
    Permission::new("", "pods", &["list", "watch"], Scope::Watched),
    // `drift::team_triggers`: the Team label of the watched namespaces, metadata only (a
    // namespace-scoped install selects each by `metadata.name`).
    Permission::new("", "namespaces", &["list", "watch"], Scope::Cluster),
    // `reconcile::evict`: `spec.onUnauthorizedMount: Evict` evicts a pod outside the rules
    // through the Eviction API.
    Permission::new("", "pods/eviction", &["create"], Scope::Watched),
];

/// Everything a reconcile needs, shared by all of them. `S` is how tokens are obtained: the LWA
/// client in the operator, a stand-in in the mocked-API tests.
pub struct Context<S: TokenSource = LwaClient> {
    /// The API client.
    pub client: Client,
    /// The LWA refresh engine (single flight, rate limit, backoff, breaker).
    pub engine: Arc<RefreshEngine<S>>,
    /// The operator's keys; replaced when the key Secret changes.
    pub keyring: Arc<RwLock<Keyring>>,
    /// Metrics.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Wall clock (virtual in tests).
    pub clock: Arc<dyn Clock>,
    /// This instance's name, the actor of its audit records.
    pub identity: String,
    /// The status last written for each connection, so a stale cached copy does not cause
    /// the same write (and its Events) again.
    pub applied: applied::AppliedStatus,
    /// Which version of each credentials Secret was opened, so a reconcile that keeps the token
    /// in use does not open it again.
    pub opened: opened::OpenedCredentials,
    /// Reconciles run at once per controller (`--reconcile-concurrency`; 0: unbounded).
    pub concurrency: u16,
    /// The connection gauges, added up over the controllers.
    pub tally: Arc<tally::Tally>,
    /// The configured LWA rate limit (`--lwa-qps`), exported beside the demand.
    pub lwa_qps: f64,
    /// The pods and namespace Teams the drift rule reads, kept by the controllers' watches.
    pub drift: Arc<drift::DriftView>,
}

impl<S: TokenSource> Context<S> {
    /// Publishes an Event, logging (never failing the reconcile) when that fails.
    pub async fn publish(&self, event: &Event, reference: &ObjectReference) {
        if let Err(err) = self.recorder.publish(event, reference).await {
            tracing::warn!(reason = %event.reason, "failed to publish event: {err}");
        }
    }
}

impl Context {
    /// The Event recorder for this operator.
    pub fn recorder(client: Client, identity: &str) -> Recorder {
        Recorder::new(
            client,
            Reporter {
                controller: crate::names::FIELD_MANAGER.to_owned(),
                instance: Some(identity.to_owned()),
            },
        )
    }
}

/// Reconcile failures. Messages never carry secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The finalizer machinery failed.
    #[error("failed to run the finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The access token could not be sealed for the token store.
    #[error("failed to seal the access token for the token store")]
    Seal,
}

impl Error {
    fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Error::Kube { action, source }
    }
}

impl crate::error::Categorized for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::Finalizer(_) => "finalizer",
            Error::Seal => "seal",
        }
    }
}

async fn reconcile<S: TokenSource>(
    connection: Arc<AmazonSellerConnection>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = connection.namespace().unwrap_or_default();
    let api: Api<AmazonSellerConnection> = Api::namespaced(ctx.client.clone(), &namespace);
    // What keeps a live connection from working, for the reconcile counter.
    let problem: Mutex<Option<&'static str>> = Mutex::new(None);
    let result = finalizer(&api, FINALIZER, connection, |event| async {
        match event {
            FinalizerEvent::Apply(c) => {
                let applied = reconcile::apply(c, ctx.clone()).await?;
                *problem.lock().unwrap_or_else(PoisonError::into_inner) = applied.problem;
                Ok(applied.action)
            }
            FinalizerEvent::Cleanup(c) => reconcile::cleanup(c, ctx.clone()).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    // `success`, or the bounded name of what failed: an error's category, or the problem a
    // reconcile that did all it could reports (missing credentials, say).
    let problem = problem.into_inner().unwrap_or_else(PoisonError::into_inner);
    let label = match &result {
        Ok(_) => problem.unwrap_or("success"),
        Err(err) => err.category(),
    };
    ctx.metrics.record_reconcile(label, started.elapsed());
    result
}

fn error_policy<S: TokenSource>(
    connection: Arc<AmazonSellerConnection>,
    error: &Error,
    ctx: Arc<Context<S>>,
) -> Action {
    tracing::warn!(
        connection = %format!("{}/{}", connection.namespace().unwrap_or_default(), connection.name_any()),
        reason = error.category(),
        "reconcile failed: {error}"
    );
    let _ = ctx;
    Action::requeue(Duration::from_secs(15))
}

/// Follows `SecurityLogReview`s: exports the latest reviewed time for the review-overdue alert
/// and audits each review created since this replica started leading (reviews recorded while
/// no operator ran are still counted by the gauge, and the API server's own audit log has
/// their creation).
pub async fn follow_reviews(ctx: Arc<Context>) {
    let leading_since = ctx.clock.now() - jiff::SignedDuration::from_secs(5);
    let api: Api<SecurityLogReview> = Api::all(ctx.client.clone());
    let (reader, writer) = reflector::store();
    let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    events
        .for_each(|event| {
            let ctx = ctx.clone();
            let reader = reader.clone();
            let listed = listed.clone();
            async move {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    listed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let review = match event {
                    Ok(watcher::Event::Apply(review) | watcher::Event::InitApply(review)) => {
                        Some(review)
                    }
                    Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) => None,
                    Ok(watcher::Event::Init) => return,
                    Err(err) => {
                        tracing::debug!("security log review watch: {err}");
                        return;
                    }
                };
                if let Some(review) = review {
                    let created = review.metadata.creation_timestamp.as_ref().map(|t| t.0);
                    if created.is_some_and(|t| t >= leading_since) {
                        let audit = AuditEvent::new(
                            Category::Service,
                            "security_log_review",
                            Outcome::Success,
                        )
                        .actor(&review.spec.reviewer)
                        .reason("review_recorded");
                        if let Err(err) = ctx.audit.record(audit) {
                            tracing::error!(error = %err, "failed to write an audit record");
                        }
                    }
                    if !listed.load(std::sync::atomic::Ordering::SeqCst) {
                        return; // the gauge is set once the initial list is complete
                    }
                }
                let reviews: Vec<SecurityLogReview> =
                    reader.state().iter().map(|r| r.as_ref().clone()).collect();
                ctx.metrics
                    .set_security_log_review_last(latest_review_time(&reviews));
            }
        })
        .await;
}

/// The connections in `namespace` (or all) that the refresh engine wakes when LWA answers
/// again after an outage. A controller that falls behind misses the oldest wake-ups; those
/// connections come back at the time they were given (see [`RefreshEngine::woken`]).
fn woken<S: TokenSource>(
    engine: &RefreshEngine<S>,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = ObjectRef<AmazonSellerConnection>> + Send + 'static + use<S> {
    let scope = namespace.map(str::to_owned);
    futures::stream::unfold(engine.woken(), |mut wakes| async move {
        loop {
            match wakes.recv().await {
                Ok(key) => return Some((key, wakes)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "missed wake-ups of connections after an LWA outage; they come back at their retry times");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter_map(move |key| {
        let found = key.as_str().split_once('/').and_then(|(ns, name)| {
            scope
                .as_deref()
                .is_none_or(|s| s == ns)
                .then(|| ObjectRef::new(name).within(ns))
        });
        futures::future::ready(found)
    })
}

/// How long a stopping controller may take to finish the reconciles in flight (one may be
/// waiting on LWA, up to its 15 s timeout) before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the controller over `namespace` (or all namespaces) until `shutdown` resolves, then
/// lets the reconciles in flight finish (at most [`SHUTDOWN_GRACE`]).
pub async fn run<S: TokenSource>(
    ctx: Arc<Context<S>>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (connections, secrets): (Api<AmazonSellerConnection>, Api<Secret>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    // Runtime Secrets and token stores it owns: one deleted or edited is repaired at once.
    let runtime_secrets = watcher::Config::default().labels(&format!(
        "{SECRET_ROLE_LABEL} in ({ROLE_RUNTIME_TOKEN},{ROLE_TOKEN_STORE})"
    ));
    let credential_secrets =
        watcher::Config::default().labels(&format!("{SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"));
    // The connection cache without what the reconcile never reads: the field managers and
    // kubectl's copy of the last applied object (together often larger than the rest).
    let (store, writer) = reflector::store();
    let users = Arc::new(CredentialUsers::default());
    let indexed = users.clone();
    // Whether the first list of connections is in: until then kube-runtime reconciles nothing.
    let listed = Arc::new(AtomicBool::new(false));
    let list_done = listed.clone();
    let connection_events = watcher::watcher(connections, watcher::Config::default())
        .default_backoff()
        .modify(|c| {
            c.metadata.managed_fields = None;
            if let Some(annotations) = c.metadata.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
        })
        .reflect(writer)
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                list_done.store(true, Ordering::Release);
            }
            indexed.observe(event);
        })
        .touched_objects();
    let controller = Controller::for_stream(connection_events, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.concurrency));
    let pod_triggers = drift::pod_triggers(
        ctx.drift.clone(),
        ctx.client.clone(),
        namespace,
        users.clone(),
    );
    let team_triggers = drift::team_triggers(
        ctx.drift.clone(),
        ctx.client.clone(),
        namespace,
        store.clone(),
    );
    let counter = tokio::spawn(tally::count(
        store,
        namespace.unwrap_or_default().to_owned(),
        ctx.tally.clone(),
        ctx.lwa_qps,
        ctx.metrics.clone(),
    ));
    let shutdown = shutdown.shared();
    let running = controller
        .reconcile_on(woken(&ctx.engine, namespace))
        .reconcile_on(pod_triggers)
        .reconcile_on(team_triggers)
        .owns(secrets.clone(), runtime_secrets)
        .watches(secrets, credential_secrets, move |secret: Secret| {
            users.users(&secret.namespace().unwrap_or_default(), &secret.name_any())
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!("controller: {err}");
            }
        });
    // kube-runtime holds its runner until the connection cache has its first list, and a
    // graceful shutdown stops the watch that would fill it: stopped during the first list, it
    // would wait forever (a SIGTERM just after start never ended the process). Before the first
    // list nothing was reconciled, so the controller is dropped at once; after it, in-flight
    // reconciles get SHUTDOWN_GRACE.
    let give_up = async {
        shutdown.await;
        if listed.load(Ordering::Acquire) {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!("the controller did not stop within {SHUTDOWN_GRACE:?}; dropping it");
        }
    };
    tokio::select! {
        () = running => {}
        () = give_up => {}
    }
    counter.abort();
}
