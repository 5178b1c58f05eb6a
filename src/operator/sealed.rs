//! `amazon_seller_sealed_secrets{key_id}`: how many credentials Secrets of the watched
//! namespaces are sealed to each operator key, kept current from a watch of those Secrets
//! (label `secret-role=lwa-credentials`), so it moves the moment a Secret is sealed (created,
//! or sealed again to another key), re-sealed by a rotation, or deleted, not only when the
//! keyring changes. Of each Secret only the key id its envelope records is kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::controller::relisted::Relisted;
use crate::crypto::{self, Keyring};
use crate::keystore;
use crate::observability::metrics::KeyStats;

/// Credentials Secrets of one scope by (namespace, name) → the key id they are sealed to
/// (`None`: no readable envelope).
type Sealed = Relisted<(String, String), Option<String>>;

/// [`Sealed`] per watched scope (a namespace, or `""` for all).
#[derive(Debug)]
pub struct SealedCount {
    scopes: Mutex<HashMap<String, Sealed>>,
}

/// The key id a credentials Secret's envelope records.
fn key_id(secret: &Secret) -> Option<String> {
    keystore::envelope_of(secret).and_then(|e| crypto::sealed_key_id(e).ok())
}

impl SealedCount {
    /// A count over `scopes` (each a namespace, or `None` for all), none listed yet.
    pub fn new(scopes: &[Option<String>]) -> Self {
        let scopes = scopes
            .iter()
            .map(|s| (s.clone().unwrap_or_default(), Relisted::default()))
            .collect();
        Self {
            scopes: Mutex::new(scopes),
        }
    }

    /// Takes one event of `scope`'s watch; whether the counts may have changed.
    pub fn observe(&self, scope: &str, event: &watcher::Event<Secret>) -> bool {
        let key = |s: &Secret| (s.namespace().unwrap_or_default(), s.name_any());
        let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = scopes.entry(scope.to_owned()).or_default();
        match event {
            watcher::Event::Apply(secret) => {
                let new = key_id(secret);
                kept.apply(key(secret), Some(new.clone())) != Some(new)
            }
            watcher::Event::Delete(secret) => kept.apply(key(secret), None).is_some(),
            watcher::Event::Init => {
                kept.init();
                false
            }
            watcher::Event::InitApply(secret) => {
                kept.init_apply(key(secret), Some(key_id(secret)));
                false
            }
            watcher::Event::InitDone => {
                kept.init_done();
                true
            }
        }
    }

    /// Secrets per key id, once every scope has listed.
    pub fn counts(&self) -> Option<BTreeMap<String, i64>> {
        let scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        if !scopes.values().all(Relisted::listed) {
            return None;
        }
        let mut counts = BTreeMap::new();
        for id in scopes.values().flat_map(Relisted::values).flatten() {
            *counts.entry(id.clone()).or_insert(0) += 1;
        }
        Some(counts)
    }
}

/// The per-key gauges: each key's creation time and how many Secrets are sealed to it.
pub fn key_stats(keyring: &Keyring, counts: &BTreeMap<String, i64>) -> Vec<KeyStats> {
    keyring
        .keys()
        .iter()
        .map(|key| KeyStats {
            key_id: key.id().to_owned(),
            created_at: key.created_at().as_second(),
            sealed_secrets: counts.get(key.id()).copied().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Credentials, SealContext, SecretString};
    use jiff::Timestamp;

    fn sealed(keyring: &Keyring, namespace: &str, name: &str) -> Secret {
        let context = SealContext {
            team_id: "acme",
            namespace,
            secret_name: name,
        };
        let credentials = Credentials {
            client_id: "amzn1.application-oa2-client.x".into(),
            client_secret: SecretString::from("cs".to_owned()),
            refresh_token: SecretString::from("Atzr|rt".to_owned()),
            next_client_secret: None,
            client_secret_expires_at: None,
        };
        let envelope =
            crypto::seal(&keyring.active().public_key(), &context, &credentials).expect("seal");
        keystore::sealed_secret(namespace, name, None, envelope)
    }

    fn count_of(count: &SealedCount, keyring: &Keyring) -> Vec<i64> {
        let counts = count.counts().expect("listed");
        key_stats(keyring, &counts)
            .iter()
            .map(|k| k.sealed_secrets)
            .collect()
    }

    #[test]
    fn sealing_resealing_adding_and_deleting_each_move_the_count() {
        let mut keyring = Keyring::generate(Timestamp::now());
        let count = SealedCount::new(&[Some("a".into()), Some("b".into())]);
        count.observe("a", &watcher::Event::Init);
        count.observe(
            "a",
            &watcher::Event::InitApply(sealed(&keyring, "a", "one")),
        );
        assert!(count.observe("a", &watcher::Event::InitDone));
        assert_eq!(count.counts(), None, "scope b has not listed yet");
        count.observe("b", &watcher::Event::InitDone);
        assert_eq!(count_of(&count, &keyring), [1]);
        // Added.
        assert!(count.observe("b", &watcher::Event::Apply(sealed(&keyring, "b", "two"))));
        assert_eq!(count_of(&count, &keyring), [2]);
        // Re-sealed to a new key by a rotation, one Secret after the other.
        keyring.rotate(Timestamp::now());
        let one = sealed(&keyring, "a", "one");
        assert!(count.observe("a", &watcher::Event::Apply(one.clone())));
        assert_eq!(count_of(&count, &keyring), [1, 1]);
        // The same envelope again (another label, say) moves nothing.
        assert!(!count.observe("a", &watcher::Event::Apply(one)));
        let two = sealed(&keyring, "b", "two");
        count.observe("b", &watcher::Event::Apply(two.clone()));
        assert_eq!(count_of(&count, &keyring), [0, 2]);
        // Deleted.
        assert!(count.observe("b", &watcher::Event::Delete(two)));
        assert_eq!(count_of(&count, &keyring), [0, 1]);
        // A Secret without an envelope counts for no key.
        let mut empty = sealed(&keyring, "a", "empty");
        empty.data = None;
        count.observe("a", &watcher::Event::Apply(empty));
        assert_eq!(count_of(&count, &keyring), [0, 1]);
    }
}
