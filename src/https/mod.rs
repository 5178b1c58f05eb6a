//! The operator's HTTPS server (rustls on ring) and what it serves on its one port:
//!
//! - [`admission`]: the admission webhook, `POST /validate` and `POST /mutate`, answering
//!   `AdmissionReview` v1 requests with the pure rules of [`crate::domain::admission`]; and
//!   the Validating/MutatingWebhookConfiguration objects those rules need
//!   ([`admission::configuration`]).
//! - [`credential`]: the runtime credential endpoint (`--credential-endpoint-enabled`), over the
//!   rule in [`crate::domain::credential_access`].
//! - [`caller`]: who a pod caller is (TokenReview, the bound pod, its gateway label, its Team),
//!   for the credential endpoint and every pod-facing route to come.
//! - [`cluster`]: the cluster view the rules read (namespace Team labels, connections, labelled
//!   Secrets), kept by kube reflectors.
//! - [`listener`]: the HTTPS listener and routes, `/healthz`, `/readyz`, body limit,
//!   per-request and header-read timeouts, graceful shutdown.
//! - [`tls`]: the serving certificate, swapped without a restart when its files change;
//!   [`certs`]: the self-managed CA and serving certificate, and `caBundle` upkeep.
//!
//! The flags keep the `--webhook-` prefix: the port was the admission webhook's first.
//!
//! Fail closed: every configuration uses `failurePolicy: Fail`, and a webhook that has not yet
//! seen the cluster denies what it cannot judge. Request and response bodies are never logged.

pub mod admission;
pub mod caller;
pub mod certs;
pub mod cluster;
pub mod credential;
pub mod listener;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{CertMode, WebhookArgs};
use crate::crypto::Keyring;
use crate::domain::admission::Policy;
use crate::error::Categorized;
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::Metrics;

pub use admission::{Reviewer, Webhook};
pub use certs::SelfManaged;
pub use cluster::{Cluster, ClusterLookup};
pub use credential::{CredentialEndpoint, EndpointSettings};
pub use listener::{HttpsServer, ServerSettings};
pub use tls::CertStore;

/// Failures of the HTTPS server. Messages name files, objects and addresses, never certificate
/// keys, request bodies or secret values.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The listen address could not be bound.
    #[error("failed to bind the webhook server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("failed to set up TLS for the webhook: {0}")]
    Tls(#[source] rustls::Error),
    /// A certificate or key file could not be read.
    #[error("failed to read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is not usable PEM, or they do not belong together.
    #[error("failed to load the serving certificate: {0}")]
    Certificate(&'static str),
    /// A certificate could not be generated (self-managed mode).
    #[error("failed to generate a certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// A Kubernetes API call failed (self-managed mode, cluster view).
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The stored self-managed certificate Secret is not usable.
    #[error("the webhook certificate Secret {0} is malformed; delete it to have it recreated")]
    MalformedSecret(String),
    /// Accepting connections failed.
    #[error("failed to serve webhook requests: {0}")]
    Serve(#[source] std::io::Error),
    /// A setting of the server is not usable.
    #[error("{0}")]
    Settings(&'static str),
}

impl crate::error::Categorized for HttpsError {
    fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "webhook_bind",
            Self::Tls(_) => "webhook_tls",
            Self::ReadFile { .. } => "webhook_cert_file",
            Self::Certificate(_) => "webhook_certificate",
            Self::Generate(_) => "webhook_cert_generate",
            Self::Kube { .. } => "kube_api",
            Self::MalformedSecret(_) => "webhook_cert_secret",
            Self::Serve(_) => "webhook_serve",
            Self::Settings(_) => "webhook_settings",
        }
    }
}

impl HttpsError {
    pub(crate) fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source }
    }
}

/// What the HTTPS server shares with the rest of `run`.
pub struct Shared {
    /// The API client (the cluster view, self-managed certificates).
    pub client: Client,
    /// The operator's keyring, the same one the controller uses: intake Secrets are sealed to
    /// its active key, and a key rotation reaches the webhook at once.
    pub keyring: Arc<RwLock<Keyring>>,
    /// Metrics.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
    /// The namespaces the operator manages (`--watch-namespace`); `None`: all. The cluster
    /// view watches connections and Secrets there only, and the runtime credential endpoint
    /// serves connections there only.
    pub watched: Option<Vec<String>>,
}

/// The rules' view of who is who, from the flags.
pub fn policy(args: &WebhookArgs, operator_namespace: &str) -> Policy {
    Policy {
        team_group_prefix: args.team_group_prefix.clone(),
        admin_groups: args.admin_groups.clone(),
        reviewer_groups: args.reviewer_groups.clone(),
        workload_controllers: args.workload_controllers.clone(),
        operator_username: Policy::service_account_username(
            operator_namespace,
            &args.operator_service_account,
        ),
    }
}

/// Starts the webhook as `run` configures it: the cluster view, the certificate source and the
/// HTTPS server. Returns once the server is bound; the returned task ends after `shutdown`,
/// when in-flight reviews have been answered.
pub async fn start(
    args: &WebhookArgs,
    operator_namespace: &str,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, HttpsError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let scopes: Vec<Option<String>> = match &shared.watched {
        Some(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    let cluster = ClusterLookup::start(shared.client.clone(), &scopes, stopped());
    let certs = CertStore::new();
    let cert_task = match args.webhook_cert_mode {
        CertMode::Files => tokio::spawn(tls::watch_files(
            certs.clone(),
            args.webhook_cert_file.clone(),
            args.webhook_key_file.clone(),
            args.webhook_cert_reload_interval,
            stopped(),
        )),
        CertMode::SelfManaged => {
            let service_namespace = args
                .webhook_service_namespace
                .clone()
                .unwrap_or_else(|| operator_namespace.to_owned());
            let manager = SelfManaged {
                client: shared.client.clone(),
                namespace: operator_namespace.to_owned(),
                secret: args.webhook_cert_secret.clone(),
                dns_names: certs::dns_names(
                    &args.webhook_service_name,
                    &service_namespace,
                    &args.webhook_extra_sans,
                ),
                validating_configuration: args.validating_webhook_configuration.clone(),
                mutating_configuration: args.mutating_webhook_configuration.clone(),
            };
            tokio::spawn(manager.run(certs.clone(), args.webhook_cert_reload_interval, stopped()))
        }
    };

    let credentials = if args.credential_endpoint_enabled() {
        let settings = EndpointSettings {
            qps: args.credential_endpoint_qps,
            burst: args.credential_endpoint_burst,
            watched: shared.watched.clone(),
        };
        let endpoint = CredentialEndpoint::new(
            shared.client.clone(),
            cluster.clone(),
            shared.keyring.clone(),
            shared.metrics.clone(),
            shared.audit.clone(),
            &settings,
        )
        .map_err(HttpsError::Settings)?;
        Some(Arc::new(endpoint))
    } else {
        None
    };
    let admission = Arc::new(Reviewer::new(
        policy(args, operator_namespace),
        cluster,
        shared.keyring,
        shared.metrics,
        shared.audit.clone(),
    ));
    let settings = ServerSettings {
        request_timeout: args.webhook_request_timeout,
        ..ServerSettings::default()
    };
    let endpoint_enabled = credentials.is_some();
    let server =
        HttpsServer::bind_with(args.webhook_addr, admission, certs, settings, credentials).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, mode = ?args.webhook_cert_mode, credential_endpoint = endpoint_enabled, "admission webhook listening");
    let _ = shared.audit.record(
        AuditEvent::new(Category::Service, "webhook_started", Outcome::Success)
            .reason(cert_mode_reason(args.webhook_cert_mode)),
    );

    let server_task = tokio::spawn(server.run(stopped()));
    Ok(tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        match server_task.await {
            Ok(Err(err)) => tracing::warn!(reason = err.category(), "webhook server: {err}"),
            Err(err) => tracing::warn!("webhook server task: {err}"),
            Ok(Ok(())) => {}
        }
        let _ = cert_task.await;
        tracing::info!("admission webhook stopped");
    }))
}

fn cert_mode_reason(mode: CertMode) -> &'static str {
    match mode {
        CertMode::Files => "cert_files",
        CertMode::SelfManaged => "cert_self_managed",
    }
}
