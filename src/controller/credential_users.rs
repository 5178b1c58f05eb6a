//! Which connections name each credentials Secret, kept from the connection watch itself.
//!
//! A credentials Secret's event must find the connections that use it. Scanning the cache for
//! each event costs one pass over every connection, and when the operator starts it receives
//! one event per credentials Secret: N events × N connections. This index answers in one
//! lookup. It is fed by the same watch events as the controller's cache, in the same order,
//! so it never knows a connection the cache does not (and during a re-list it keeps answering
//! from the previous list until the new one is complete, as the cache does).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::AmazonSellerConnection;

/// (namespace, credentials Secret name) → names of the connections that name it, and the
/// reverse, so a connection that changes `credentialsSecretName` leaves its old entry.
#[derive(Debug, Default)]
struct Index {
    users: HashMap<(String, String), BTreeSet<String>>,
    uses: HashMap<(String, String), String>,
}

impl Index {
    fn insert(&mut self, connection: &AmazonSellerConnection) {
        let namespace = connection.namespace().unwrap_or_default();
        let name = connection.name_any();
        let secret = connection.spec.credentials_secret_name.clone();
        let key = (namespace.clone(), name.clone());
        if self.uses.get(&key) == Some(&secret) {
            return;
        }
        self.remove(&key);
        self.users
            .entry((namespace, secret.clone()))
            .or_default()
            .insert(name);
        self.uses.insert(key, secret);
    }

    fn remove(&mut self, key: &(String, String)) {
        let Some(secret) = self.uses.remove(key) else {
            return;
        };
        let by_secret = (key.0.clone(), secret);
        if let Some(names) = self.users.get_mut(&by_secret) {
            names.remove(&key.1);
            if names.is_empty() {
                self.users.remove(&by_secret);
            }
        }
    }
}

/// The index, plus the one being built while the watch re-lists.
#[derive(Debug, Default)]
pub struct CredentialUsers {
    state: Mutex<(Index, Option<Index>)>,
}

impl CredentialUsers {
    fn state(&self) -> std::sync::MutexGuard<'_, (Index, Option<Index>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one event of the connection watch.
    pub fn observe(&self, event: &watcher::Event<AmazonSellerConnection>) {
        let mut state = self.state();
        let (current, building) = &mut *state;
        match event {
            watcher::Event::Apply(connection) => current.insert(connection),
            watcher::Event::Delete(connection) => current.remove(&(
                connection.namespace().unwrap_or_default(),
                connection.name_any(),
            )),
            watcher::Event::Init => *building = Some(Index::default()),
            watcher::Event::InitApply(connection) => {
                building
                    .get_or_insert_with(Index::default)
                    .insert(connection);
            }
            watcher::Event::InitDone => {
                if let Some(done) = building.take() {
                    *current = done;
                }
            }
        }
    }

    /// The connections in `namespace` whose `credentialsSecretName` is `secret`.
    pub fn users(&self, namespace: &str, secret: &str) -> Vec<ObjectRef<AmazonSellerConnection>> {
        self.state()
            .0
            .users
            .get(&(namespace.to_owned(), secret.to_owned()))
            .map(|names| {
                names
                    .iter()
                    .map(|name| ObjectRef::new(name).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connection(namespace: &str, name: &str, secret: &str) -> AmazonSellerConnection {
        serde_json::from_value(json!({
            "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "AmazonSellerConnection",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"teamId": "t", "sellerId": "A3FHEXAMPLEYWS", "marketplace": "DE",
                     "credentialsSecretName": secret, "gateways": ["gw"]}
        }))
        .expect("connection")
    }

    fn names(users: &CredentialUsers, namespace: &str, secret: &str) -> Vec<String> {
        users
            .users(namespace, secret)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    #[test]
    fn finds_every_user_of_a_secret_in_its_namespace_only() {
        let users = CredentialUsers::default();
        users.observe(&watcher::Event::Apply(connection("a", "c1", "s")));
        users.observe(&watcher::Event::Apply(connection("a", "c2", "s")));
        users.observe(&watcher::Event::Apply(connection("b", "c3", "s")));
        assert_eq!(names(&users, "a", "s"), ["a/c1", "a/c2"]);
        assert_eq!(names(&users, "b", "s"), ["b/c3"]);
        assert!(names(&users, "a", "other").is_empty());
    }

    #[test]
    fn a_renamed_secret_or_a_deleted_connection_leaves_the_old_entry() {
        let users = CredentialUsers::default();
        users.observe(&watcher::Event::Apply(connection("a", "c1", "old")));
        users.observe(&watcher::Event::Apply(connection("a", "c1", "new")));
        assert!(names(&users, "a", "old").is_empty());
        assert_eq!(names(&users, "a", "new"), ["a/c1"]);
        users.observe(&watcher::Event::Delete(connection("a", "c1", "new")));
        assert!(names(&users, "a", "new").is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let users = CredentialUsers::default();
        users.observe(&watcher::Event::Apply(connection("a", "gone", "s")));
        users.observe(&watcher::Event::Init);
        users.observe(&watcher::Event::InitApply(connection("a", "kept", "s")));
        // Mid-list the previous answer stands, as the controller's cache does.
        assert_eq!(names(&users, "a", "s"), ["a/gone"]);
        users.observe(&watcher::Event::InitDone);
        assert_eq!(names(&users, "a", "s"), ["a/kept"]);
    }
}
