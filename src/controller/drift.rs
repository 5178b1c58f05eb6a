//! Access that no longer holds, found while pods run: what the controller watches to judge
//! pods again ([`crate::domain::drift`]), and when.
//!
//! Two light watches per controller scope feed [`DriftView`]:
//!
//! - pods of the watched namespaces, each turned into its [`PodFacts`] on arrival (the
//!   `Pod` object is dropped; pods that reference no Secret are not kept), so the cache holds
//!   Secret references, not pod specs. Pods cannot be selected by what they reference (no
//!   label or field selector says "mounts a Secret"), and a pod without the gateway label is
//!   exactly one that may break the rules, so every pod is watched and trimmed;
//! - namespaces, metadata only (their Team label), narrowed to the watched ones by name.
//!
//! A reconcile reads both from memory: no per-pod request, ever. Every event that can change a
//! judgement triggers the connections it concerns: a pod added, changed or deleted (the
//! connections whose Secrets it references by name, or whose credentials Secret it names); a
//! namespace's Team label changed (every connection of that namespace). A connection's own
//! changes (`spec.gateways`) and its runtime Secret's creation trigger it anyway. A re-list
//! after a watch gap reports what changed meanwhile, deletions included.
//!
//! Until both watches of a scope have listed once, a reconcile waits for them (a runtime
//! Secret created before the pods are known could go to a pod outside the rules).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::credential_users::CredentialUsers;
use super::pods::{self, PodFacts};
use super::relisted::Relisted;
use crate::api::AmazonSellerConnection;
use crate::domain::drift::connection_named_by;
use crate::names::TEAM_LABEL;

/// Pods by (namespace, name).
type PodKey = (String, String);

#[derive(Debug, Default)]
struct State {
    /// Per controller scope (a namespace, or `""` for all).
    pods: HashMap<String, Relisted<PodKey, Arc<PodFacts>>>,
    /// Namespace → its Team label (`None`: none), per controller scope.
    teams: HashMap<String, Relisted<String, Option<String>>>,
}

/// The pods and namespace Teams every controller scope has seen, for the reconciles.
#[derive(Debug)]
pub struct DriftView {
    state: Mutex<State>,
    /// Signals a completed list, for reconciles waiting for one.
    listed: watch::Sender<()>,
}

impl Default for DriftView {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            listed: watch::Sender::new(()),
        }
    }
}

/// The value kept for `namespace` in per-scope `maps`: the namespace's own scope, or the
/// cluster-wide one.
fn scope_of<'a, V>(maps: &'a HashMap<String, V>, namespace: &str) -> Option<&'a V> {
    maps.get(namespace).or_else(|| maps.get(""))
}

impl DriftView {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the pods and the Team of `namespace` are known (both watches listed once).
    pub fn listed(&self, namespace: &str) -> bool {
        let state = self.state();
        scope_of(&state.pods, namespace).is_some_and(Relisted::listed)
            && scope_of(&state.teams, namespace).is_some_and(Relisted::listed)
    }

    /// Waits up to `timeout` until [`DriftView::listed`] holds for `namespace`.
    pub async fn wait_listed(&self, namespace: &str, timeout: Duration) -> bool {
        let mut listed = self.listed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            while !self.listed(namespace) {
                if listed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.is_ok()
    }

    /// The kept pods of `namespace` (those that reference a Secret).
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<PodFacts>> {
        let state = self.state();
        let Some(pods) = scope_of(&state.pods, namespace) else {
            return Vec::new();
        };
        let from = (namespace.to_owned(), String::new());
        pods.range(from..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, facts)| facts.clone())
            .collect()
    }

    /// The Team label of `namespace`.
    pub fn team_of(&self, namespace: &str) -> Option<String> {
        let state = self.state();
        scope_of(&state.teams, namespace)
            .and_then(|teams| teams.get(&namespace.to_owned()).cloned())
            .flatten()
    }

    /// The watches of `scope` start (again): until they list, nothing of it counts as known.
    pub fn restart(&self, scope: &str) {
        let mut state = self.state();
        state.pods.entry(scope.to_owned()).or_default().unlist();
        state.teams.entry(scope.to_owned()).or_default().unlist();
    }

    /// Takes one event of `scope`'s pod watch; returns the `(namespace, Secret)` names whose
    /// users must be judged again (what the pod referenced before and after).
    pub fn observe_pod(&self, scope: &str, event: &watcher::Event<Pod>) -> Vec<(String, String)> {
        let key = |pod: &Pod| (pod.namespace().unwrap_or_default(), pod.name_any());
        let mut touched = Vec::new();
        let mut touch = |namespace: &str, facts: Option<&Arc<PodFacts>>| {
            for secret in facts.into_iter().flat_map(|f| f.secrets()) {
                touched.push((namespace.to_owned(), secret.to_owned()));
            }
        };
        let mut state = self.state();
        let pods = state.pods.entry(scope.to_owned()).or_default();
        match event {
            watcher::Event::Apply(pod) => {
                let (namespace, name) = key(pod);
                let new = pods::facts(pod).map(Arc::new);
                let old = pods.apply((namespace.clone(), name), new.clone());
                // Most pod updates are status updates, which change nothing the rule reads:
                // they trigger no reconcile.
                if old != new {
                    touch(&namespace, new.as_ref());
                    touch(&namespace, old.as_ref());
                }
            }
            watcher::Event::Delete(pod) => {
                let (namespace, name) = key(pod);
                let old = pods.apply((namespace.clone(), name), None);
                touch(&namespace, old.as_ref());
            }
            watcher::Event::Init => pods.init(),
            watcher::Event::InitApply(pod) => {
                pods.init_apply(key(pod), pods::facts(pod).map(Arc::new))
            }
            watcher::Event::InitDone => {
                for ((namespace, _), old, new) in pods.init_done() {
                    touch(&namespace, old.as_ref());
                    touch(&namespace, new.as_ref());
                }
                self.listed.send_replace(());
            }
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// Takes one event of `scope`'s namespace watch; returns the namespaces whose Team label
    /// changed (or that appeared or went away).
    pub fn observe_namespace(
        &self,
        scope: &str,
        event: &watcher::Event<PartialObjectMeta<Namespace>>,
    ) -> Vec<String> {
        let team = |ns: &PartialObjectMeta<Namespace>| ns.labels().get(TEAM_LABEL).cloned();
        let mut state = self.state();
        let teams = state.teams.entry(scope.to_owned()).or_default();
        match event {
            watcher::Event::Apply(ns) => {
                let new = team(ns);
                let old = teams.apply(ns.name_any(), Some(new.clone()));
                if old == Some(new) {
                    Vec::new()
                } else {
                    vec![ns.name_any()]
                }
            }
            watcher::Event::Delete(ns) => {
                teams.apply(ns.name_any(), None);
                vec![ns.name_any()]
            }
            watcher::Event::Init => {
                teams.init();
                Vec::new()
            }
            watcher::Event::InitApply(ns) => {
                teams.init_apply(ns.name_any(), Some(team(ns)));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let changed = teams.init_done().into_iter().map(|(ns, _, _)| ns).collect();
                self.listed.send_replace(());
                changed
            }
        }
    }

    /// Marks `scope` listed with nothing in it (tests that run reconciles without watches).
    #[cfg(test)]
    pub(crate) fn assume_listed(&self, scope: &str) {
        let mut state = self.state();
        state.pods.entry(scope.to_owned()).or_default().init_done();
        state.teams.entry(scope.to_owned()).or_default().init_done();
    }

    /// Sets the Team of `namespace` in `scope` (tests).
    #[cfg(test)]
    pub(crate) fn set_team(&self, scope: &str, namespace: &str, team: Option<&str>) {
        let mut state = self.state();
        let teams = state.teams.entry(scope.to_owned()).or_default();
        teams.apply(namespace.to_owned(), Some(team.map(str::to_owned)));
    }
}

/// The connections a change of these `(namespace, Secret)` names concerns: `c` for `c-sp-api`
/// and `c-sp-api-sealed`, and the connections whose credentials Secret it is.
fn concerned(
    touched: Vec<(String, String)>,
    users: &CredentialUsers,
) -> Vec<ObjectRef<AmazonSellerConnection>> {
    let mut refs: BTreeSet<(String, String)> = BTreeSet::new();
    for (namespace, secret) in touched {
        if let Some(connection) = connection_named_by(&secret) {
            refs.insert((namespace.clone(), connection.to_owned()));
        }
        for user in users.users(&namespace, &secret) {
            refs.insert((namespace.clone(), user.name));
        }
    }
    refs.into_iter()
        .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// The pod watch of `namespace` (or all): feeds `view` and yields the connections to judge
/// again.
pub fn pod_triggers(
    view: Arc<DriftView>,
    client: Client,
    namespace: Option<&str>,
    users: Arc<CredentialUsers>,
) -> impl Stream<Item = ObjectRef<AmazonSellerConnection>> + Send + 'static {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let scope = namespace.unwrap_or_default().to_owned();
    view.restart(&scope);
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let touched = match event {
                Ok(event) => view.observe_pod(&scope, &event),
                Err(err) => {
                    tracing::debug!("pod watch: {err}");
                    Vec::new()
                }
            };
            futures::future::ready(Some(stream::iter(concerned(touched, &users))))
        })
        .flatten()
}

/// The namespace watch (metadata only) of `namespace` (or all): feeds `view` and yields every
/// connection of a namespace whose Team label changed.
pub fn team_triggers(
    view: Arc<DriftView>,
    client: Client,
    namespace: Option<&str>,
    connections: Store<AmazonSellerConnection>,
) -> impl Stream<Item = ObjectRef<AmazonSellerConnection>> + Send + 'static {
    // Metadata only: `Api<PartialObjectMeta<_>>` asks for metadata.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let config = match namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let scope = namespace.unwrap_or_default().to_owned();
    view.restart(&scope);
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(event) => view.observe_namespace(&scope, &event),
                Err(err) => {
                    tracing::debug!("namespace watch: {err}");
                    Vec::new()
                }
            };
            let refs: Vec<ObjectRef<AmazonSellerConnection>> = if changed.is_empty() {
                Vec::new()
            } else {
                connections
                    .state()
                    .iter()
                    .filter(|c| c.namespace().is_some_and(|ns| changed.contains(&ns)))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect()
            };
            futures::future::ready(Some(stream::iter(refs)))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, secret: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "t", "secret": {"secretName": secret}}]}
        }))
        .expect("pod")
    }

    fn namespace(name: &str, team: Option<&str>) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.to_owned());
        if let Some(team) = team {
            meta.metadata.labels = Some([(TEAM_LABEL.to_owned(), team.to_owned())].into());
        }
        meta
    }

    fn names(pods: &[Arc<PodFacts>]) -> Vec<&str> {
        pods.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn pods_are_kept_by_namespace_and_their_changes_name_the_secrets_concerned() {
        let view = DriftView::default();
        view.observe_pod("", &watcher::Event::Init);
        view.observe_pod(
            "",
            &watcher::Event::InitApply(pod("a", "p1", "acme-sp-api")),
        );
        assert!(view.pods_in("a").is_empty(), "half a list is never shown");
        let listed = view.observe_pod("", &watcher::Event::InitDone);
        assert_eq!(listed, [("a".to_owned(), "acme-sp-api".to_owned())]);
        let touched = view.observe_pod("", &watcher::Event::Apply(pod("b", "p2", "globex-lwa")));
        assert_eq!(touched, [("b".to_owned(), "globex-lwa".to_owned())]);
        // A pod that now references another Secret touches both names.
        let touched = view.observe_pod("", &watcher::Event::Apply(pod("a", "p1", "other-sp-api")));
        assert_eq!(
            touched,
            [
                ("a".to_owned(), "acme-sp-api".to_owned()),
                ("a".to_owned(), "other-sp-api".to_owned())
            ]
        );
        assert_eq!(names(&view.pods_in("a")), ["p1"]);
        assert_eq!(names(&view.pods_in("b")), ["p2"]);
        // A status update changes nothing the rule reads: nothing to judge again.
        let mut updated = pod("a", "p1", "other-sp-api");
        updated.status = Some(Default::default());
        assert!(
            view.observe_pod("", &watcher::Event::Apply(updated))
                .is_empty()
        );
        assert!(view.pods_in("ab").is_empty());
        let touched = view.observe_pod("", &watcher::Event::Delete(pod("b", "p2", "globex-lwa")));
        assert_eq!(touched, [("b".to_owned(), "globex-lwa".to_owned())]);
        assert!(view.pods_in("b").is_empty());
    }

    #[test]
    fn a_changed_pod_triggers_the_connections_named_by_its_secrets_and_their_credentials_users() {
        let users = CredentialUsers::default();
        let connection: AmazonSellerConnection = serde_json::from_value(json!({
            "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "AmazonSellerConnection",
            "metadata": {"name": "globex", "namespace": "b"},
            "spec": {"teamId": "t", "sellerId": "A3FHEXAMPLEYWS", "marketplace": "DE",
                     "credentialsSecretName": "globex-lwa", "gateways": ["gw"]}
        }))
        .expect("connection");
        users.observe(&watcher::Event::Apply(connection));
        let refs = concerned(
            vec![
                ("a".into(), "acme-sp-api".into()),
                ("a".into(), "acme-sp-api-sealed".into()),
                ("a".into(), "app-config".into()),
                ("b".into(), "globex-lwa".into()),
            ],
            &users,
        );
        let refs: Vec<String> = refs.iter().map(ToString::to_string).collect();
        assert_eq!(refs.len(), 2, "{refs:?}");
        assert!(
            refs[0].contains("acme") && refs[1].contains("globex"),
            "{refs:?}"
        );
    }

    #[test]
    fn a_scope_is_known_once_pods_and_namespaces_have_listed() {
        let view = DriftView::default();
        assert!(!view.listed("team-a"));
        view.observe_pod("team-a", &watcher::Event::Init);
        view.observe_pod("team-a", &watcher::Event::InitDone);
        assert!(!view.listed("team-a"));
        view.observe_namespace("team-a", &watcher::Event::Init);
        view.observe_namespace(
            "team-a",
            &watcher::Event::InitApply(namespace("team-a", Some("acme"))),
        );
        let changed = view.observe_namespace("team-a", &watcher::Event::InitDone);
        assert_eq!(changed, ["team-a"]);
        assert!(view.listed("team-a"));
        assert!(!view.listed("team-b"), "another scope is not known");
        assert_eq!(view.team_of("team-a").as_deref(), Some("acme"));
        // Only a changed Team label counts as a change.
        let same = view.observe_namespace(
            "team-a",
            &watcher::Event::Apply(namespace("team-a", Some("acme"))),
        );
        assert!(same.is_empty());
        let moved = view.observe_namespace(
            "team-a",
            &watcher::Event::Apply(namespace("team-a", Some("globex"))),
        );
        assert_eq!(moved, ["team-a"]);
        assert_eq!(view.team_of("team-a").as_deref(), Some("globex"));
        view.restart("team-a");
        assert!(!view.listed("team-a"));
    }

    #[tokio::test]
    async fn a_reconcile_waits_for_the_first_lists() {
        let view = Arc::new(DriftView::default());
        assert!(!view.wait_listed("", Duration::from_millis(20)).await);
        let lister = view.clone();
        let list = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            lister.observe_pod("", &watcher::Event::InitDone);
            lister.observe_namespace("", &watcher::Event::InitDone);
        });
        assert!(view.wait_listed("any", Duration::from_secs(5)).await);
        list.await.expect("lister");
    }
}
