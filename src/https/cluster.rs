//! The cluster view the admission rules read, kept by kube reflectors so a review costs no API
//! call: Team-labelled namespaces (metadata only), connections, and Secrets that carry the
//! secret-role label (metadata only: no Secret value is ever held by the webhook).
//!
//! Connections and Secrets are watched in the operator's watched namespaces only (every
//! namespace when it watches all), so a namespace-scoped install needs no cluster-wide Secret
//! rights; its webhook configurations then select only those namespaces.
//!
//! A namespace the view has not seen yet (labelled a moment ago) is read once from the API and
//! remembered briefly, so the first request in a new Team namespace is not refused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::api::{AmazonSellerConnection, GROUP};
use crate::domain::admission::{ConnectionFacts, Lookup, SecretFacts};
use crate::names::{CONNECTION_LABEL, SECRET_ROLE_LABEL, TEAM_LABEL};
use crate::rbac::{Names, Permission, Scope};

/// The permissions of the cluster view's watches and reads (see [`crate::rbac`]).
pub const RBAC: &[Permission] = &[
    // Team-labelled namespaces (metadata only), cluster-wide: the webhook judges the Team
    // label of every namespace, and namespaces hold no secrets.
    Permission::new("", "namespaces", &["list", "watch"], Scope::Cluster),
    // A namespace labelled a moment ago, not yet in the view, is read once.
    Permission::new("", "namespaces", &["get"], Scope::Cluster).named(Names::WatchedNamespaces),
    // Connections and role-labelled Secrets (metadata only) of the watched namespaces.
    Permission::new(
        GROUP,
        "amazonsellerconnections",
        &["list", "watch"],
        Scope::Watched,
    ),
    Permission::new("", "secrets", &["list", "watch"], Scope::Watched),
];

/// The cluster view a review reads. [`ClusterLookup`] in production; tests and the
/// benchmark use fakes.
pub trait Cluster: Lookup + Send + Sync {
    /// Whether the view is complete enough to decide (caches synced). Reviews that need it are
    /// denied until then.
    fn is_ready(&self) -> bool {
        true
    }

    /// Called before a decision about `namespace`: lets a cached view fetch what it has not
    /// seen yet (a namespace labelled a moment ago).
    fn prepare<'a>(&'a self, namespace: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = namespace;
        Box::pin(async {})
    }
}

/// How long a namespace read from the API (not yet in the watch cache) is remembered.
const FETCHED_TTL: Duration = Duration::from_secs(30);
/// How long such a read may take before the review goes on without it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The reflector-backed cluster view.
pub struct ClusterLookup {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// One pair of stores per watched namespace (`None`: every namespace).
    scopes: Vec<WatchedScope>,
    ready: Arc<AtomicBool>,
    client: Client,
    fetched: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// Connections and labelled Secrets of one watched namespace, or of all.
struct WatchedScope {
    namespace: Option<String>,
    connections: Store<AmazonSellerConnection>,
    secrets: Store<PartialObjectMeta<Secret>>,
}

impl WatchedScope {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

impl std::fmt::Debug for ClusterLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLookup")
            .field("ready", &self.ready.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl ClusterLookup {
    /// Starts the watches: Team-labelled namespaces cluster-wide, connections and labelled
    /// Secrets in each of `watched` (`None`: every namespace), the same list the controller
    /// uses. They stop when `shutdown` resolves.
    pub fn start(
        client: Client,
        watched: &[Option<String>],
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Arc<Self> {
        let (namespaces, ns_writer) = reflector::store();
        let mut watches: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        watches.push(Box::pin(
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default().labels(TEAM_LABEL),
            )
            .default_backoff()
            .modify(|ns| {
                ns.metadata.managed_fields = None;
                ns.metadata.annotations = None;
            })
            .reflect(ns_writer)
            .for_each(drain("namespaces")),
        ));

        let mut scopes = Vec::with_capacity(watched.len());
        for namespace in watched {
            let (connections, conn_writer) = reflector::store();
            let (secrets, secret_writer) = reflector::store();
            let conn_api: Api<AmazonSellerConnection> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let secret_api: Api<PartialObjectMeta<Secret>> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            watches.push(Box::pin(
                watcher(conn_api, watcher::Config::default())
                    .default_backoff()
                    .modify(|c| {
                        c.metadata.managed_fields = None;
                        c.metadata.annotations = None;
                        c.status = None;
                    })
                    .reflect(conn_writer)
                    .for_each(drain("amazonsellerconnections")),
            ));
            watches.push(Box::pin(
                watcher(
                    secret_api,
                    watcher::Config::default().labels(SECRET_ROLE_LABEL),
                )
                .default_backoff()
                .modify(|s| {
                    s.metadata.managed_fields = None;
                    s.metadata.annotations = None;
                })
                .reflect(secret_writer)
                .for_each(drain("secrets")),
            ));
            scopes.push(WatchedScope {
                namespace: namespace.clone(),
                connections,
                secrets,
            });
        }

        let ready = Arc::new(AtomicBool::new(false));
        let stores: Vec<_> = scopes
            .iter()
            .map(|s| (s.connections.clone(), s.secrets.clone()))
            .collect();
        let lookup = Arc::new(Self {
            namespaces: namespaces.clone(),
            scopes,
            ready: ready.clone(),
            client,
            fetched: Mutex::new(HashMap::new()),
        });

        let synced = async move {
            let _ = namespaces.wait_until_ready().await;
            for (connections, secrets) in stores {
                let _ = connections.wait_until_ready().await;
                let _ = secrets.wait_until_ready().await;
            }
            ready.store(true, Ordering::Release);
            tracing::info!("webhook cluster view synced");
            std::future::pending::<()>().await;
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = futures::future::join_all(watches) => {}
                () = synced => {}
                () = shutdown => {}
            }
        });
        lookup
    }

    /// The watched scopes that hold `namespace`'s objects (none when it is not watched).
    fn scopes_for<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a WatchedScope> {
        self.scopes
            .iter()
            .filter(move |scope| scope.covers(namespace))
    }

    /// A connection as the view holds it (spec and metadata; status is not kept).
    pub fn connection(&self, namespace: &str, name: &str) -> Option<Arc<AmazonSellerConnection>> {
        self.scopes_for(namespace).find_map(|scope| {
            scope
                .connections
                .get(&ObjectRef::new(name).within(namespace))
        })
    }

    fn fetched(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Instant)>> {
        self.fetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Logs a watch error (the stream backs off and retries by itself).
fn drain<T>(
    name: &'static str,
) -> impl FnMut(Result<T, watcher::Error>) -> futures::future::Ready<()> {
    move |event| {
        if let Err(err) = event {
            tracing::warn!(watch = name, "webhook cluster view: {err}");
        }
        futures::future::ready(())
    }
}

impl Lookup for ClusterLookup {
    fn namespace_team(&self, namespace: &str) -> Option<String> {
        if let Some(ns) = self.namespaces.get(&ObjectRef::new(namespace)) {
            return ns.labels().get(TEAM_LABEL).cloned();
        }
        self.fetched()
            .get(namespace)
            .filter(|(_, at)| at.elapsed() < FETCHED_TTL)
            .and_then(|(team, _)| team.clone())
    }

    fn connections(&self, namespace: &str) -> Vec<ConnectionFacts> {
        self.scopes_for(namespace)
            .flat_map(|scope| scope.connections.state())
            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
            .map(|c| ConnectionFacts {
                name: c.name_any(),
                team_id: c.spec.team_id.clone(),
                gateways: c.spec.gateways.clone(),
                credentials_secret_name: c.spec.credentials_secret_name.clone(),
            })
            .collect()
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<SecretFacts> {
        let secret = self
            .scopes_for(namespace)
            .find_map(|scope| scope.secrets.get(&ObjectRef::new(name).within(namespace)))?;
        let labels = secret.labels();
        Some(SecretFacts {
            role: labels.get(SECRET_ROLE_LABEL)?.clone(),
            connection: labels.get(CONNECTION_LABEL).cloned(),
        })
    }
}

impl Cluster for ClusterLookup {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn prepare<'a>(&'a self, namespace: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if namespace.is_empty()
                || self.namespaces.get(&ObjectRef::new(namespace)).is_some()
                || self
                    .fetched()
                    .get(namespace)
                    .is_some_and(|(_, at)| at.elapsed() < FETCHED_TTL)
            {
                return;
            }
            let api: Api<Namespace> = Api::all(self.client.clone());
            match tokio::time::timeout(FETCH_TIMEOUT, api.get_metadata_opt(namespace)).await {
                Ok(Ok(found)) => {
                    let team = found.and_then(|ns| ns.labels().get(TEAM_LABEL).cloned());
                    let mut fetched = self.fetched();
                    fetched.retain(|_, (_, at)| at.elapsed() < FETCHED_TTL);
                    fetched.insert(namespace.to_owned(), (team, Instant::now()));
                }
                Ok(Err(err)) => tracing::warn!("webhook cannot read namespace {namespace}: {err}"),
                Err(_) => tracing::warn!("webhook timed out reading namespace {namespace}"),
            }
        })
    }
}
