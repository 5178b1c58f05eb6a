//! Which version of each connection's credentials Secret this process has opened, and the key
//! it was sealed to; never anything from inside the envelope.
//!
//! A reconcile that keeps the token in use needs no plaintext: it only reports the key id and
//! that the credentials open. When this very version of the Secret (its `resourceVersion`)
//! was opened before and its key is still in the keyring, that is already known, and opening
//! it again (an X25519 operation, about a sixth of a no-op reconcile's CPU) is skipped. Any
//! other version, a key no longer in the keyring, a restart, or a token that must be refreshed
//! opens the envelope as before.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::crypto::Keyring;

/// One connection's last successful open.
struct Opened {
    /// The credentials Secret's `resourceVersion` then.
    version: String,
    /// The key it was sealed to.
    key_id: String,
}

/// Last successful opens by connection key (`namespace/name`).
#[derive(Default)]
pub struct OpenedCredentials {
    opened: Mutex<HashMap<String, Opened>>,
}

impl std::fmt::Debug for OpenedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedCredentials").finish_non_exhaustive()
    }
}

impl OpenedCredentials {
    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<String, Opened>> {
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key id `version` of `key`'s credentials Secret was opened with, if it was and that
    /// key is still in `keyring`.
    pub fn key_id(&self, key: &str, version: &str, keyring: &Keyring) -> Option<String> {
        self.opened()
            .get(key)
            .filter(|o| o.version == version && keyring.get(&o.key_id).is_some())
            .map(|o| o.key_id.clone())
    }

    /// Remembers that `version` of `key`'s credentials Secret opened with `key_id`.
    pub fn record(&self, key: &str, version: &str, key_id: &str) {
        self.opened().insert(
            key.to_owned(),
            Opened {
                version: version.to_owned(),
                key_id: key_id.to_owned(),
            },
        );
    }

    /// Forgets `key`: a deleted connection, or a version that failed to open.
    pub fn forget(&self, key: &str) {
        self.opened().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn only_the_same_version_with_a_key_still_held_is_known() {
        let mut keyring = Keyring::generate(Timestamp::now());
        let first = keyring.active().id().to_owned();
        let opened = OpenedCredentials::default();
        assert_eq!(opened.key_id("ns/c", "7", &keyring), None);
        opened.record("ns/c", "7", &first);
        assert_eq!(opened.key_id("ns/c", "7", &keyring), Some(first.clone()));
        // Another version of the Secret, or another connection: open again.
        assert_eq!(opened.key_id("ns/c", "8", &keyring), None);
        assert_eq!(opened.key_id("ns/other", "7", &keyring), None);
        // A rotation keeps the old key in the keyring: still known.
        keyring.rotate(Timestamp::now());
        assert_eq!(opened.key_id("ns/c", "7", &keyring), Some(first.clone()));
        // A keyring without that key: open again (and fail, reporting it).
        let other = Keyring::generate(Timestamp::now());
        assert_eq!(opened.key_id("ns/c", "7", &other), None);
        opened.forget("ns/c");
        assert_eq!(opened.key_id("ns/c", "7", &keyring), None);
    }
}
