//! The operator's keys while it runs: bootstrapped at start, then followed. Every replica reloads
//! the keyring when the key Secret changes (so all can open credentials sealed to a new key);
//! the leader publishes the public key and re-seals the credentials in the watched namespaces
//! to the active key. Every replica exports the keys' ages and how many credentials Secrets are
//! sealed to each, recounted from a watch of those Secrets ([`sealed`](super::sealed)) at every
//! change of a Secret or of the keyring.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::RunError;
use super::preflight::classify;
use super::sealed::{self, SealedCount};
use crate::controller::Context;
use crate::crypto::Keyring;
use crate::keystore::{self, KeyStore, KeyStoreError};
use crate::names::{ROLE_LWA_CREDENTIALS, SECRET_ROLE_LABEL};
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::rbac::{Names, Permission, Scope};

/// The permissions of [`follow`] (see [`crate::rbac`]): a watcher on the key Secret alone (field
/// selector `metadata.name`, which RBAC matches against resourceNames for list and watch), and
/// one on the credentials Secrets of the watched namespaces (label-selected) for the count of
/// Secrets per key.
pub const RBAC: &[Permission] = &[
    Permission::new("", "secrets", &["list", "watch"], Scope::OperatorNamespace)
        .named(Names::KeySecret),
    Permission::new("", "secrets", &["list", "watch"], Scope::Watched),
];

/// Loads the keyring, creating it (and auditing that) on the first start.
pub async fn bootstrap(
    store: &KeyStore,
    audit: &AuditLog,
    identity: &str,
) -> Result<Keyring, RunError> {
    let (keyring, created) = store
        .bootstrap_reporting(Timestamp::now())
        .await
        .map_err(|err| match err {
            KeyStoreError::Api { source, action } => classify(action, source),
            other => RunError::Keys(other),
        })?;
    if created {
        let _ = audit.record(
            AuditEvent::new(Category::Service, "key_created", Outcome::Success)
                .actor(identity)
                .reason("no_keyring"),
        );
    }
    Ok(keyring)
}

/// Exports every key's creation time and how many credentials Secrets in the watched
/// namespaces are sealed to it, once the count has listed them all.
fn export_key_metrics(ctx: &Context, count: &SealedCount) {
    let Some(counts) = count.counts() else {
        return;
    };
    let stats = {
        let keyring = ctx
            .keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sealed::key_stats(&keyring, &counts)
    };
    ctx.metrics.set_encryption_keys(&stats);
}

/// Keeps `count` from the credentials Secrets of `namespace` (or all), exporting the per-key
/// gauges at every change.
async fn count_sealed(ctx: Arc<Context>, count: Arc<SealedCount>, namespace: Option<String>) {
    let api: Api<Secret> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let scope = namespace.unwrap_or_default();
    let config =
        watcher::Config::default().labels(&format!("{SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"));
    watcher::watcher(api, config)
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => {
                    if count.observe(&scope, &event) {
                        export_key_metrics(&ctx, &count);
                    }
                }
                Err(err) => tracing::debug!("credentials Secret watch: {err}"),
            }
            futures::future::ready(())
        })
        .await;
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
pub async fn follow(
    ctx: Arc<Context>,
    store: KeyStore,
    namespaces: Vec<Option<String>>,
    reseal_qps: f64,
    leader: watch::Receiver<bool>,
    stop: impl Future<Output = ()>,
) {
    let pace = Duration::from_secs_f64(1.0 / reseal_qps);
    let count = Arc::new(SealedCount::new(&namespaces));
    let counting = futures::future::join_all(
        namespaces
            .iter()
            .map(|ns| count_sealed(ctx.clone(), count.clone(), ns.clone())),
    );
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
        let count = count.clone();
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
            export_key_metrics(&ctx, &count);
        }
    });
    tokio::select! {
        _ = work => {}
        _ = counting => {}
        _ = stop => {}
    }
}
