//! `amazon-seller-operator run`: checks the cluster, bootstraps the keys, starts the admin and
//! HTTPS servers, elects a leader and runs the controllers on the leader until SIGTERM.
//!
//! [`run_with`] reads as the list of those phases; each is a function or module of its own:
//! [`preflight`](mod@preflight), [`keys`], [`lease`], and [`permissions`] for the RBAC they add up
//! to.
//!
//! Start-up problems that an operator cannot fix by retrying (no cluster configured, an API
//! server that does not answer, no CRD, missing RBAC) end the process with one line naming what
//! was tried, the cause and the fix. Logging and the audit log start only once the API server
//! has answered: a process that never reached a cluster did nothing the audit log covers, and
//! its one error line is all a person at a terminal needs to read.

pub mod connect;
pub mod keys;
pub mod lease;
pub mod permissions;
pub mod preflight;
pub mod sealed;

use std::future::Future;
use std::sync::{Arc, RwLock};

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::RunArgs;
use crate::controller::{self, Context};
use crate::crypto::Keyring;
use crate::https;
use crate::keystore::{KeyStore, KeyStoreError};
use crate::lwa::{EngineConfig, LwaClient, LwaError, RateLimit, RefreshEngine, SystemClock};
use crate::observability::admin::{AdminError, AdminServer, AdminState};
use crate::observability::audit::{AuditError, AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::{Metrics, MetricsError};

use lease::{Leadership, LeaseSettings};

pub use preflight::check as preflight;

/// Why the operator could not start or stopped with an error. One line each.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("{0}")]
    Connect(#[source] connect::ConnectError),
    /// The API server does not answer.
    #[error(
        "cannot reach the Kubernetes API server at {url}{}: {}; is the cluster running? {}",
        via(.source_desc), connect::cause(.source), connect::FIX
    )]
    Unreachable {
        /// The server URL.
        url: String,
        /// Where the URL came from, when known.
        source_desc: Option<Box<connect::Source>>,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The API server answers but does not accept the credentials.
    #[error(
        "the Kubernetes API server at {url}{} does not accept its credentials: {}; renew them, or choose another context with --context",
        via(.source_desc), api_message(.source)
    )]
    Unauthorized {
        /// The server URL.
        url: String,
        /// Where the URL and credentials came from, when known.
        source_desc: Option<Box<connect::Source>>,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// The CRD is not installed.
    #[error(
        "the operator's CRDs (AmazonSellerConnection, SecurityLogReview) are not installed: run `amazon-seller-operator crd | kubectl apply -f -` or install the Helm chart"
    )]
    CrdMissing,
    /// RBAC does not allow something the operator needs.
    #[error(
        "missing RBAC permission: the operator's identity cannot {what} ({}); apply the chart's ClusterRole and Role",
        api_message(.source)
    )]
    Forbidden {
        /// What it tried.
        what: String,
        /// The API server's refusal.
        #[source]
        source: kube::Error,
    },
    /// Any other start-up API failure.
    #[error("failed to {what}: {}", api_message(.source))]
    Api {
        /// What it tried.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The key Secret exists but cannot be used.
    #[error("{0}")]
    Keys(#[source] KeyStoreError),
    /// The flags do not make sense.
    #[error("{0}")]
    Flags(&'static str),
    /// The LWA client could not be built from `--lwa-endpoint` / `--lwa-ca-file`.
    #[error("--lwa-endpoint/--lwa-ca-file: {0}")]
    Lwa(#[source] LwaError),
    /// The metrics registry could not be built.
    #[error("{0}")]
    Metrics(#[source] MetricsError),
    /// The audit log could not be opened or written.
    #[error("{0}")]
    Audit(#[source] AuditError),
    /// The admin server could not start.
    #[error("{0}")]
    Admin(#[source] AdminError),
    /// The HTTPS server (admission webhook, credential endpoint) could not start.
    #[error("{0}")]
    Https(#[source] https::HttpsError),
    /// Leader election could not be set up.
    #[error("failed to set up leader election: {0}")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),
    /// The log subscriber could not be installed.
    #[error("{0}")]
    Logging(#[source] crate::observability::logging::LoggingError),
}

/// ` (kubeconfig … from …)`, when the source is known.
fn via(source: &Option<Box<connect::Source>>) -> String {
    source
        .as_ref()
        .map_or_else(String::new, |s| format!(" ({s})"))
}

/// The API server's own message for an API error, the client's description otherwise.
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

impl crate::error::Categorized for RunError {
    fn category(&self) -> &'static str {
        match self {
            RunError::Connect(_) => "kubeconfig",
            RunError::Unreachable { .. } => "unreachable",
            RunError::Unauthorized { .. } => "unauthorized",
            RunError::CrdMissing => "crd_missing",
            RunError::Forbidden { .. } => "forbidden",
            RunError::Api { .. } => "kube_api",
            RunError::Keys(_) => "keys",
            RunError::Flags(_) => "flags",
            RunError::Lwa(_) => "lwa_client",
            RunError::Metrics(_) => "metrics",
            RunError::Audit(_) => "audit",
            RunError::Admin(_) => "admin_server",
            RunError::Https(_) => "https_server",
            RunError::LeaderElection(_) => "leader_election",
            RunError::Logging(_) => "logging",
        }
    }
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

/// The shutdown signal, fanned out: one signal, many listeners.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Sets the stop once `shutdown` resolves.
    fn after(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Resolves once the stop is set.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static + use<> {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Whether the stop is set.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
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

/// Runs the operator until `shutdown` resolves, logging through `logs` once the cluster
/// answers.
pub async fn run(
    args: RunArgs,
    logs: crate::observability::logging::Stdout,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // The variable's old name: ignoring it would widen a namespace-scoped install to every
    // namespace without a word.
    if std::env::var_os("ASO_WATCH_NAMESPACES").is_some() {
        return Err(RunError::Flags(
            "ASO_WATCH_NAMESPACES is no longer read: rename it to ASO_WATCH_NAMESPACE (the variable of --watch-namespace)",
        ));
    }
    let connection = connect::connect(&args.cluster)
        .await
        .map_err(RunError::Connect)?;
    preflight::reachable(
        &connection.client,
        &connection.url,
        Some(&connection.source),
    )
    .await?;
    crate::observability::logging::install(logs).map_err(RunError::Logging)?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let metrics = Metrics::new().map_err(RunError::Metrics)?;
    let audit =
        AuditLog::stdout(args.log_format, metrics.clone(), &identity).map_err(RunError::Audit)?;
    let deps = Deps {
        client: connection.client,
        url: connection.url,
        identity: identity.clone(),
        metrics,
        audit: audit.clone(),
    };
    let result = run_with(args, deps, shutdown).await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let _ = audit.record(AuditEvent::new(Category::Service, "stop", outcome).actor(&identity));
    result
}

/// [`run`] with its dependencies supplied: the phases of a start, then the leader loop, then an
/// orderly stop.
pub async fn run_with(
    args: RunArgs,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let scopes = watch_scopes(&args);
    preflight::check(&deps.client, &deps.url, &scopes).await?;
    let store = KeyStore::new(
        deps.client.clone(),
        &args.keys.operator_namespace,
        &args.keys.key_secret,
    );
    let keyring = keys::bootstrap(&store, &deps.audit, &deps.identity).await?;
    let ctx = controller_context(&args, &deps, keyring)?;
    let stop = Stop::after(shutdown);
    let servers = Servers::start(&args, &deps, &ctx, &stop).await?;
    let leadership = if args.leader_election() {
        let settings = LeaseSettings {
            namespace: args.keys.operator_namespace.clone(),
            name: args.lease_name.clone(),
            identity: deps.identity.clone(),
            duration_seconds: args.lease_duration_seconds,
        };
        Leadership::elect(deps.client.clone(), &settings, stop.clone()).await?
    } else {
        Leadership::always()
    };
    let key_task = tokio::spawn(keys::follow(
        ctx.clone(),
        store,
        scopes.clone(),
        args.reseal_qps,
        leadership.leading.clone(),
        stop.wait(),
    ));
    lead(&ctx, &scopes, leadership.leading.clone(), &stop).await;

    servers.admin_state.set_ready(false);
    leadership.released().await;
    let _ = key_task.await;
    servers.stopped().await;
    Ok(())
}

/// The namespaces the controllers watch: each of `--watch-namespace`, or all (`None`).
fn watch_scopes(args: &RunArgs) -> Vec<Option<String>> {
    if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().cloned().map(Some).collect()
    }
}

/// The controllers' shared context: the LWA client and refresh engine from the flags, and the
/// keyring the HTTPS server shares.
fn controller_context(
    args: &RunArgs,
    deps: &Deps,
    keyring: Keyring,
) -> Result<Arc<Context>, RunError> {
    let lwa = LwaClient::new(&args.lwa.client_config()).map_err(RunError::Lwa)?;
    if !args.reseal_qps.is_finite() || args.reseal_qps <= 0.0 {
        return Err(RunError::Flags("--reseal-qps must be a positive number"));
    }
    let rate = RateLimit::new(args.lwa_qps, args.lwa_burst).ok_or(RunError::Flags(
        "--lwa-qps and --lwa-burst must be positive",
    ))?;
    let engine = RefreshEngine::new(
        lwa,
        EngineConfig {
            rate,
            ..EngineConfig::default()
        },
        Arc::new(SystemClock),
    );
    Ok(Arc::new(Context {
        recorder: Context::recorder(deps.client.clone(), &deps.identity),
        client: deps.client.clone(),
        engine: Arc::new(engine),
        keyring: Arc::new(RwLock::new(keyring)),
        metrics: deps.metrics.clone(),
        audit: deps.audit.clone(),
        clock: Arc::new(SystemClock),
        identity: deps.identity.clone(),
        applied: Default::default(),
        opened: Default::default(),
        concurrency: args.reconcile_concurrency,
        tally: Default::default(),
        lwa_qps: args.lwa_qps,
        drift: Default::default(),
    }))
}

/// The servers every replica runs, leader or not: the admin server and, when enabled, the HTTPS
/// server (admission webhook, credential endpoint), which shares the controller's keyring.
struct Servers {
    admin_state: AdminState,
    admin: JoinHandle<Result<(), AdminError>>,
    https: Option<JoinHandle<()>>,
}

impl Servers {
    async fn start(
        args: &RunArgs,
        deps: &Deps,
        ctx: &Context,
        stop: &Stop,
    ) -> Result<Self, RunError> {
        let admin_state = AdminState::new(deps.metrics.clone()).with_keyring(ctx.keyring.clone());
        let admin = AdminServer::bind(args.metrics_addr, admin_state.clone())
            .await
            .map_err(RunError::Admin)?;
        let admin = tokio::spawn(admin.run(stop.wait()));
        let https = if args.webhook.webhook_enabled() {
            let shared = https::Shared {
                client: deps.client.clone(),
                keyring: ctx.keyring.clone(),
                metrics: deps.metrics.clone(),
                audit: deps.audit.clone(),
                watched: (!args.watch_namespaces.is_empty()).then(|| args.watch_namespaces.clone()),
            };
            let task = https::start(
                &args.webhook,
                &args.keys.operator_namespace,
                shared,
                stop.wait(),
            )
            .await
            .map_err(RunError::Https)?;
            Some(task)
        } else {
            None
        };
        admin_state.set_ready(true);
        tracing::info!(identity = %deps.identity, "operator started");
        Ok(Self {
            admin_state,
            admin,
            https,
        })
    }

    /// Waits for both servers to finish after the stop.
    async fn stopped(self) {
        if let Some(task) = self.https {
            let _ = task.await;
        }
        let _ = self.admin.await;
    }
}

/// Runs the controllers (one per watched scope) and the review follower whenever this replica
/// leads, and stops them when leadership is lost; returns at the stop.
async fn lead(
    ctx: &Arc<Context>,
    scopes: &[Option<String>],
    leading: watch::Receiver<bool>,
    stop: &Stop,
) {
    let mut leader = leading.clone();
    loop {
        tokio::select! {
            _ = leader.wait_for(|l| *l) => {}
            () = stop.wait() => break,
        }
        record(ctx, "leader_acquired");
        tracing::info!("leading: starting the controller");
        let mut lost = leading.clone();
        let stopping = stop.wait();
        let until = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                () = stopping => {}
            }
        };
        let (senders, runs): (Vec<_>, Vec<_>) = scopes
            .iter()
            .map(|ns| {
                let (tx, rx) = watch::channel(false);
                let stopped = Stop(rx).wait();
                (tx, controller::run(ctx.clone(), ns.as_deref(), stopped))
            })
            .unzip();
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
        record(ctx, "leader_released");
        tracing::info!("controller stopped");
        if stop.is_set() {
            break;
        }
    }
}

/// One `service` audit record about this replica.
fn record(ctx: &Context, action: &'static str) {
    let _ = ctx
        .audit
        .record(AuditEvent::new(Category::Service, action, Outcome::Success).actor(&ctx.identity));
}
