//! `amazon-seller-operator run`: starts the admin server, bootstraps the keys, elects a leader
//! and runs the controller on the leader until SIGTERM.
//!
//! Start-up problems that an operator cannot fix by retrying (no CRD, missing RBAC, an API
//! server that does not answer) end the process with one line naming the problem and the fix.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use kube_lease_manager::{DurationSeconds, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::api::names::{ROLE_RUNTIME_TOKEN, SECRET_ROLE_LABEL};
use crate::api::review::SecurityLogReview;
use crate::api::{AmazonSellerConnection, GROUP};
use crate::config::RunArgs;
use crate::controller::{self, Context};
use crate::crypto::Keyring;
use crate::keystore::{self, KeyStore};
use crate::lwa::{EngineConfig, LwaClient, RateLimit, RefreshEngine, SystemClock};
use crate::observability::admin::{AdminServer, AdminState};
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::{KeyStats, Metrics};
use crate::rbac::{Names, Permission, Scope};
use crate::webhook;

/// The permissions of the calls in this module (see [`crate::rbac`]).
pub const RBAC: &[Permission] = &[
    // `preflight`: one-item lists of connections and runtime Secrets in each watched
    // namespace, and of SecurityLogReviews.
    Permission::new(GROUP, "amazonsellerconnections", &["list"], Scope::Watched),
    Permission::new("", "secrets", &["list"], Scope::Watched),
    Permission::new(GROUP, "securitylogreviews", &["list"], Scope::Cluster),
    // `watch_keys`: a watcher on the key Secret alone (field selector `metadata.name`, which
    // RBAC matches against resourceNames for list and watch).
    Permission::new("", "secrets", &["list", "watch"], Scope::OperatorNamespace)
        .named(Names::KeySecret),
    // Leader election (kube-lease-manager): reads the Lease, creates it when absent, and
    // acquires, renews and releases it with patches.
    Permission::new(
        "coordination.k8s.io",
        "leases",
        &["get", "patch"],
        Scope::OperatorNamespace,
    )
    .named(Names::Lease),
    Permission::new(
        "coordination.k8s.io",
        "leases",
        &["create"],
        Scope::OperatorNamespace,
    ),
];

/// Why the operator could not start or stopped with an error. One line each.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig and not in a cluster.
    #[error("failed to load a kubeconfig or in-cluster configuration: {0}")]
    Config(String),
    /// The API server does not answer.
    #[error("cannot reach the Kubernetes API server at {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CRD is not installed.
    #[error(
        "the operator's CRDs (AmazonSellerConnection, SecurityLogReview) are not installed: run `amazon-seller-operator crd | kubectl apply -f -` or install the Helm chart"
    )]
    CrdMissing,
    /// RBAC does not allow something the operator needs.
    #[error(
        "missing RBAC permission: the operator's identity cannot {what} ({reason}); apply the chart's ClusterRole and Role"
    )]
    Forbidden {
        /// What it tried.
        what: String,
        /// The API server's message.
        reason: String,
    },
    /// Any other start-up API failure.
    #[error("failed to {what}: {reason}")]
    Api {
        /// What it tried.
        what: String,
        /// Why.
        reason: String,
    },
    /// The flags do not make sense.
    #[error("{0}")]
    Flags(String),
    /// A component could not start.
    #[error("{0}")]
    Component(String),
}

fn classify(what: &str, err: kube::Error) -> RunError {
    match &err {
        kube::Error::Api(status) if status.code == 403 => RunError::Forbidden {
            what: what.to_owned(),
            reason: status.message.clone(),
        },
        kube::Error::Api(status) => RunError::Api {
            what: what.to_owned(),
            reason: status.message.clone(),
        },
        _ => RunError::Api {
            what: what.to_owned(),
            reason: err.to_string(),
        },
    }
}

/// Checks, before anything starts, that the API server answers, the CRD is installed and the
/// operator may list what it watches.
pub async fn preflight(
    client: &Client,
    url: &str,
    namespaces: &[Option<String>],
) -> Result<(), RunError> {
    client
        .apiserver_version()
        .await
        .map_err(|e| RunError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    for namespace in namespaces {
        let (connections, secrets): (Api<AmazonSellerConnection>, Api<Secret>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let scope = namespace
            .as_deref()
            .map_or("in all namespaces".to_owned(), |ns| {
                format!("in namespace {ns}")
            });
        match connections
            .list_metadata(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RunError::CrdMissing);
            }
            Err(err) => {
                return Err(classify(
                    &format!("list amazonsellerconnections {scope}"),
                    err,
                ));
            }
        }
        secrets
            .list_metadata(
                &ListParams::default()
                    .labels(&format!("{SECRET_ROLE_LABEL}={ROLE_RUNTIME_TOKEN}"))
                    .limit(1),
            )
            .await
            .map_err(|err| classify(&format!("list secrets {scope}"), err))?;
    }
    Api::<SecurityLogReview>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|err| match err {
            kube::Error::Api(status) if status.code == 404 => RunError::CrdMissing,
            err => classify("list securitylogreviews", err),
        })?;
    Ok(())
}

fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "amazon-seller-operator".to_owned())
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What `run` needs besides its flags; tests build their own.
pub struct Deps {
    /// The API client.
    pub client: Client,
    /// The API server URL, for messages.
    pub url: String,
    /// This replica's name.
    pub identity: String,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
}

/// Runs the operator until `shutdown` resolves.
pub async fn run(
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let metrics = Metrics::new().map_err(|e| RunError::Component(e.to_string()))?;
    let audit = AuditLog::stdout(metrics.clone(), &identity)
        .map_err(|e| RunError::Component(e.to_string()))?;
    let result = async {
        // The variable's old name: ignoring it would widen a namespace-scoped install to every
        // namespace without a word.
        if std::env::var_os("ASO_WATCH_NAMESPACES").is_some() {
            return Err(RunError::Flags(
                "ASO_WATCH_NAMESPACES is no longer read: rename it to ASO_WATCH_NAMESPACE (the variable of --watch-namespace)".into(),
            ));
        }
        let config = Config::infer()
            .await
            .map_err(|e| RunError::Config(e.to_string()))?;
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| RunError::Config(e.to_string()))?;
        let deps = Deps {
            client,
            url,
            identity: identity.clone(),
            metrics,
            audit: audit.clone(),
        };
        run_with(args, deps, shutdown).await
    }
    .await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let _ = audit.record(AuditEvent::new(Category::Service, "stop", outcome).actor(&identity));
    result
}

/// [`run`] with its dependencies supplied.
pub async fn run_with(
    args: RunArgs,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Deps {
        client,
        url,
        identity,
        metrics,
        audit,
    } = deps;
    let namespaces: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().cloned().map(Some).collect()
    };
    preflight(&client, &url, &namespaces).await?;

    let store = KeyStore::new(
        client.clone(),
        &args.keys.operator_namespace,
        &args.keys.key_secret,
    );
    let (keyring, created) =
        store
            .bootstrap_reporting(Timestamp::now())
            .await
            .map_err(|e| match e {
                keystore::KeyStoreError::Api { source, action } => classify(action, source),
                other => RunError::Component(other.to_string()),
            })?;
    if created {
        let _ = audit.record(
            AuditEvent::new(Category::Service, "key_created", Outcome::Success)
                .actor(&identity)
                .reason("no_keyring"),
        );
    }

    let lwa = LwaClient::new(&args.lwa.client_config())
        .map_err(|e| RunError::Flags(format!("--lwa-endpoint/--lwa-ca-file: {e}")))?;
    if !args.reseal_qps.is_finite() || args.reseal_qps <= 0.0 {
        return Err(RunError::Flags(
            "--reseal-qps must be a positive number".into(),
        ));
    }
    let rate = RateLimit::new(args.lwa_qps, args.lwa_burst)
        .ok_or_else(|| RunError::Flags("--lwa-qps and --lwa-burst must be positive".into()))?;
    let engine = RefreshEngine::new(
        lwa,
        EngineConfig {
            rate,
            ..EngineConfig::default()
        },
        Arc::new(SystemClock),
    );
    let ctx = Arc::new(Context {
        recorder: Context::recorder(client.clone(), &identity),
        client: client.clone(),
        engine: Arc::new(engine),
        keyring: Arc::new(RwLock::new(keyring)),
        metrics: metrics.clone(),
        audit: audit.clone(),
        clock: Arc::new(SystemClock),
        identity: identity.clone(),
        applied: Default::default(),
        opened: Default::default(),
        concurrency: args.reconcile_concurrency,
        tally: Default::default(),
        lwa_qps: args.lwa_qps,
    });

    // Shutdown fan-out: one signal, many listeners.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let admin_state = AdminState::new(metrics.clone()).with_keyring(ctx.keyring.clone());
    let admin = AdminServer::bind(args.metrics_addr, admin_state.clone())
        .await
        .map_err(|e| RunError::Component(e.to_string()))?;
    let admin_task = tokio::spawn(admin.run(stopped(stop_rx.clone())));

    // The webhook runs on every replica, leader or not, and shares the controller's keyring.
    let webhook_task = if args.webhook.webhook_enabled {
        let shared = webhook::Shared {
            client: client.clone(),
            keyring: ctx.keyring.clone(),
            metrics: metrics.clone(),
            audit: audit.clone(),
            watched: (!args.watch_namespaces.is_empty()).then(|| args.watch_namespaces.clone()),
        };
        let task = webhook::start(
            &args.webhook,
            &args.keys.operator_namespace,
            shared,
            stopped(stop_rx.clone()),
        )
        .await
        .map_err(|e| RunError::Component(e.to_string()))?;
        Some(task)
    } else {
        None
    };
    admin_state.set_ready(true);
    tracing::info!(identity = %identity, "operator started");

    // Leadership: `true` while this replica may reconcile.
    let (leader_tx, leader_rx) = watch::channel(!args.leader_election);
    let mut lease_task = None;
    if args.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.keys.operator_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration_seconds as DurationSeconds)
            .with_grace((args.lease_duration_seconds / 3).max(1) as DurationSeconds)
            .with_field_manager(crate::api::names::FIELD_MANAGER)
            .build()
            .await
            .map_err(|e| RunError::Component(format!("failed to set up leader election: {e}")))?;
        let (mut changes, handle) = manager.watch().await;
        let mut stop = stop_rx.clone();
        lease_task = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() { break; }
                        let leading = *changes.borrow_and_update();
                        let _ = leader_tx.send(leading);
                    }
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            let _ = leader_tx.send(false);
            // Dropping the receiver makes the manager release the Lease for a fast handover.
            drop(changes);
            let _ = handle.await;
        }));
    }

    let key_task = tokio::spawn(watch_keys(
        ctx.clone(),
        store,
        namespaces.clone(),
        args.reseal_qps,
        leader_rx.clone(),
        stopped(stop_rx.clone()),
    ));

    // Run the controller whenever this replica leads; stop it when leadership is lost.
    let mut leader = leader_rx.clone();
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = leader.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let _ = audit.record(
            AuditEvent::new(Category::Service, "leader_acquired", Outcome::Success)
                .actor(&identity),
        );
        tracing::info!("leading: starting the controller");
        let mut lost = leader_rx.clone();
        let mut stopping = stop_rx.clone();
        let until = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        };
        let controllers = namespaces
            .iter()
            .map(|ns| {
                let (tx, rx) = watch::channel(false);
                (tx, controller::run(ctx.clone(), ns.as_deref(), stopped(rx)))
            })
            .collect::<Vec<_>>();
        let (senders, runs): (Vec<_>, Vec<_>) = controllers.into_iter().unzip();
        let reviews = tokio::spawn(controller::follow_reviews(ctx.clone()));
        let all = futures::future::join_all(runs);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            _ = until => {
                for tx in &senders { let _ = tx.send(true); }
                all.await;
            }
        }
        reviews.abort();
        let _ = audit.record(
            AuditEvent::new(Category::Service, "leader_released", Outcome::Success)
                .actor(&identity),
        );
        tracing::info!("controller stopped");
        if *stop_rx.borrow() {
            break;
        }
    }

    admin_state.set_ready(false);
    if let Some(task) = lease_task {
        let _ = task.await;
    }
    let _ = key_task.await;
    if let Some(task) = webhook_task {
        let _ = task.await;
    }
    let _ = admin_task.await;
    Ok(())
}

/// Exports every key's creation time and how many credentials Secrets in the watched
/// namespaces are sealed to it.
async fn export_key_metrics(
    client: &Client,
    namespaces: &[Option<String>],
    metrics: &Metrics,
    keyring: &Keyring,
) {
    let in_use = match keystore::keys_in_use_in(client, namespaces).await {
        Ok(in_use) => in_use,
        Err(err) => {
            tracing::warn!("cannot count sealed Secrets per key: {err}");
            Default::default()
        }
    };
    let stats: Vec<KeyStats> = keyring
        .keys()
        .iter()
        .map(|key| KeyStats {
            key_id: key.id().to_owned(),
            created_at: key.created_at().as_second(),
            sealed_secrets: in_use.get(key.id()).copied().unwrap_or(0) as i64,
        })
        .collect();
    metrics.set_encryption_keys(&stats);
}

/// One `connector_setup` / `reseal_credentials` record per credentials Secret a re-sealing pass
/// rewrote or could not (the Warning Event on the Secret names it).
fn audit_reseal(ctx: &Context, report: &keystore::ResealReport) {
    let outcomes = report
        .resealed
        .iter()
        .map(|object| (object, Outcome::Success, "key_rotated"))
        .chain(
            report
                .failed
                .iter()
                .map(|(object, reason)| (object, Outcome::Failure, *reason)),
        );
    for (object, outcome, reason) in outcomes {
        let namespace = object.split_once('/').map_or("", |(ns, _)| ns);
        let _ = ctx.audit.record(
            AuditEvent::new(Category::ConnectorSetup, "reseal_credentials", outcome)
                .actor(&ctx.identity)
                .namespace(namespace)
                .reason(reason),
        );
    }
}

/// Follows the key Secret: every replica reloads the keyring when it changes (so all can
/// open credentials sealed to a new key), and the leader re-seals the credentials stored in the
/// watched namespaces to the active key.
async fn watch_keys(
    ctx: Arc<Context>,
    store: KeyStore,
    namespaces: Vec<Option<String>>,
    reseal_qps: f64,
    leader: watch::Receiver<bool>,
    stop: impl Future<Output = ()>,
) {
    let pace = Duration::from_secs_f64(1.0 / reseal_qps);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), store.namespace());
    let config = watcher::Config::default().fields(&format!("metadata.name={}", store.name()));
    // Backoff on errors: without it a lost API server turns this watch into a busy loop.
    let changes = watcher::watcher(api, config)
        .default_backoff()
        .applied_objects();
    let work = changes.for_each(|change| {
        let ctx = ctx.clone();
        let store = store.clone();
        let leader = leader.clone();
        let namespaces = namespaces.clone();
        async move {
            if let Err(err) = change {
                tracing::debug!("key Secret watch: {err}");
                return;
            }
            let keyring = match store.load().await {
                Ok(Some(loaded)) => loaded.keyring,
                Ok(None) => return,
                Err(err) => {
                    tracing::error!("cannot reload the keyring: {err}");
                    return;
                }
            };
            // Swap first: credentials re-sealed below must open at once.
            let previous = std::mem::replace(
                &mut *ctx
                    .keyring
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                keyring.clone(),
            );
            if previous.active().id() != keyring.active().id() {
                tracing::info!(
                    key_id = keyring.active().id(),
                    previous = previous.active().id(),
                    "new active operator key"
                );
                let _ = ctx.audit.record(
                    AuditEvent::new(Category::Service, "key_rotated", Outcome::Success)
                        .actor(&ctx.identity)
                        .reason("new_active_key"),
                );
            }
            if *leader.borrow() {
                if let Err(err) = store.publish(&keyring).await {
                    tracing::warn!("cannot publish the public key: {err}");
                }
                match keystore::reseal_in(
                    &ctx.client,
                    &namespaces,
                    &keyring,
                    Some(&ctx.recorder),
                    pace,
                )
                .await
                {
                    Ok(report) if !report.resealed.is_empty() || !report.failed.is_empty() => {
                        audit_reseal(&ctx, &report);
                        tracing::info!(
                            resealed = report.resealed.len(),
                            failed = report.failed.len(),
                            "re-sealed credentials to the active key"
                        );
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!("re-sealing failed: {err}"),
                }
            }
            export_key_metrics(&ctx.client, &namespaces, &ctx.metrics, &keyring).await;
        }
    });
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}
