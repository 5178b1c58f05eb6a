//! Operator key pairs (X25519) and the keyring that holds them.
//!
//! The keyring is stored as JSON in one Secret in the operator's namespace. Exactly one key is
//! active: new credentials are sealed to it. Older keys stay until nothing is sealed to them,
//! so rotation never makes a stored credential unreadable.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SecretString;

/// The HPKE suite every key is used with, recorded beside each published public key.
pub const SUITE: &str = "HPKE-Base-X25519-HKDF-SHA256-HKDF-SHA256-AES-256-GCM";

type PrivateKeyBytes = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
pub(crate) type HpkePublicKey = <X25519HkdfSha256 as hpke::Kem>::PublicKey;

/// Keyring problems. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The stored keyring or public key is not valid JSON of the expected shape.
    #[error("failed to parse {what}: not a valid {what} document")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
    },
    /// A key's bytes are not a valid X25519 key, or do not match its id.
    #[error("failed to load key {id}: {why}")]
    InvalidKey {
        /// The key id.
        id: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The keyring names an active key it does not hold, or holds none.
    #[error("failed to load keyring: {0}")]
    Inconsistent(String),
}

/// One X25519 key pair. The private key zeroizes on drop and never prints.
#[derive(Clone)]
pub struct KeyPair {
    id: String,
    created_at: Timestamp,
    private: PrivateKeyBytes,
    public: HpkePublicKey,
}

impl KeyPair {
    /// A fresh key pair from the operating system's random generator.
    pub fn generate(now: Timestamp) -> Self {
        let (private, public) = X25519HkdfSha256::gen_keypair();
        Self {
            id: key_id(&public),
            created_at: now,
            private,
            public,
        }
    }

    /// The key id: `x25519-` and the first 8 bytes of SHA-256 over the public key, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the key was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The public half, for sealing.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            id: self.id.clone(),
            key: self.public.clone(),
        }
    }

    pub(crate) fn private(&self) -> &PrivateKeyBytes {
        &self.private
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("private", &"<redacted>")
            .finish()
    }
}

fn key_id(public: &HpkePublicKey) -> String {
    let digest = Sha256::digest(public.to_bytes().as_slice());
    let mut id = String::from("x25519-");
    for byte in &digest[..8] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// A public key with its id: what `seal` needs. Serialized as the published document
/// (`public-key.json` in the ConfigMap `amazon-seller-operator-public-key`).
#[derive(Clone)]
pub struct PublicKey {
    id: String,
    key: HpkePublicKey,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublicKeyDocument {
    key_id: String,
    suite: String,
    public_key: String,
}

impl PublicKey {
    /// The key id sealed envelopes record.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn hpke(&self) -> &HpkePublicKey {
        &self.key
    }

    /// The published JSON document.
    pub fn to_json(&self) -> String {
        let doc = PublicKeyDocument {
            key_id: self.id.clone(),
            suite: SUITE.to_owned(),
            public_key: B64.encode(self.key.to_bytes().as_slice()),
        };
        // A struct of three strings always serializes.
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// Parses a published public key document and checks that the id matches the key.
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed { what: "public key" };
        let doc: PublicKeyDocument = serde_json::from_str(text).map_err(|_| malformed())?;
        if doc.suite != SUITE {
            return Err(KeyError::InvalidKey {
                id: doc.key_id,
                why: "unsupported suite",
            });
        }
        let bytes = B64
            .decode(doc.public_key.as_bytes())
            .map_err(|_| malformed())?;
        let key = HpkePublicKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidKey {
            id: doc.key_id.clone(),
            why: "not an X25519 public key",
        })?;
        if key_id(&key) != doc.key_id {
            return Err(KeyError::InvalidKey {
                id: doc.key_id,
                why: "key id does not match the public key",
            });
        }
        Ok(Self {
            id: doc.key_id,
            key,
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

/// Every operator key, and which one is active.
#[derive(Clone, Debug)]
pub struct Keyring {
    active: String,
    keys: Vec<KeyPair>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyringDocument {
    version: u32,
    active: String,
    keys: Vec<KeyDocument>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyDocument {
    id: String,
    created_at: Timestamp,
    public_key: String,
    private_key: SecretString,
}

const KEYRING_VERSION: u32 = 1;

impl Keyring {
    /// A keyring with one new active key.
    pub fn generate(now: Timestamp) -> Self {
        let key = KeyPair::generate(now);
        Self {
            active: key.id.clone(),
            keys: vec![key],
        }
    }

    /// The key new credentials are sealed to.
    pub fn active(&self) -> &KeyPair {
        // Constructors and `from_json` guarantee the active id is present.
        self.get(&self.active).unwrap_or(&self.keys[0])
    }

    /// The key with this id, if the keyring holds it.
    pub fn get(&self, id: &str) -> Option<&KeyPair> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[KeyPair] {
        &self.keys
    }

    /// Adds a new key and makes it active; older keys stay for opening. Returns the new id.
    pub fn rotate(&mut self, now: Timestamp) -> String {
        let key = KeyPair::generate(now);
        self.active = key.id.clone();
        let id = key.id.clone();
        self.keys.push(key);
        id
    }

    /// Removes every inactive key not in `in_use`; returns the removed ids.
    pub fn prune(&mut self, in_use: &[&str]) -> Vec<String> {
        let (keep, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.keys)
            .into_iter()
            .partition(|k| k.id == self.active || in_use.contains(&k.id.as_str()));
        self.keys = keep;
        removed.into_iter().map(|k| k.id.clone()).collect()
    }

    /// The stored JSON form (holds private keys: only ever written into the key Secret).
    pub fn to_json(&self) -> Zeroizing<String> {
        let doc = KeyringDocument {
            version: KEYRING_VERSION,
            active: self.active.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyDocument {
                    id: k.id.clone(),
                    created_at: k.created_at,
                    public_key: B64.encode(k.public.to_bytes().as_slice()),
                    private_key: SecretString::new(B64.encode(k.private.to_bytes().as_slice())),
                })
                .collect(),
        };
        Zeroizing::new(serde_json::to_string(&doc).unwrap_or_default())
    }

    /// Parses the stored form, checking every key pair and the active id.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        let doc: KeyringDocument =
            serde_json::from_slice(bytes).map_err(|_| KeyError::Malformed { what: "keyring" })?;
        if doc.version != KEYRING_VERSION {
            return Err(KeyError::Inconsistent(format!(
                "unsupported keyring version {}",
                doc.version
            )));
        }
        let mut keys = Vec::with_capacity(doc.keys.len());
        for k in doc.keys {
            let invalid = |why| KeyError::InvalidKey {
                id: k.id.clone(),
                why,
            };
            let private_bytes = Zeroizing::new(
                B64.decode(k.private_key.expose().as_bytes())
                    .map_err(|_| invalid("private key is not base64"))?,
            );
            let private = PrivateKeyBytes::from_bytes(&private_bytes)
                .map_err(|_| invalid("not an X25519 private key"))?;
            let public = X25519HkdfSha256::sk_to_pk(&private);
            if B64.encode(public.to_bytes().as_slice()) != k.public_key || key_id(&public) != k.id {
                return Err(invalid("public key or id does not match the private key"));
            }
            keys.push(KeyPair {
                id: k.id,
                created_at: k.created_at,
                private,
                public,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Inconsistent("it holds no key".into()));
        }
        if !keys.iter().any(|k| k.id == doc.active) {
            return Err(KeyError::Inconsistent(format!(
                "active key {} is not in the keyring",
                doc.active
            )));
        }
        Ok(Self {
            active: doc.active,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn keyring_round_trips_through_json() {
        let mut ring = Keyring::generate(now());
        ring.rotate(now());
        let json = ring.to_json();
        let back = Keyring::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.active().id(), ring.active().id());
        assert_eq!(back.keys().len(), 2);
        assert_eq!(back.keys()[0].id(), ring.keys()[0].id());
    }

    #[test]
    fn key_id_is_derived_from_the_public_key() {
        let key = KeyPair::generate(now());
        assert!(key.id().starts_with("x25519-") && key.id().len() == 7 + 16);
        let public = PublicKey::from_json(&key.public_key().to_json()).unwrap();
        assert_eq!(public.id(), key.id());
    }

    #[test]
    fn public_key_with_a_forged_id_is_refused() {
        let key = KeyPair::generate(now());
        let other = KeyPair::generate(now());
        let forged = key.public_key().to_json().replace(key.id(), other.id());
        assert!(matches!(
            PublicKey::from_json(&forged),
            Err(KeyError::InvalidKey { .. })
        ));
    }

    #[test]
    fn keyring_whose_private_key_does_not_match_is_refused() {
        let a = Keyring::generate(now());
        let b = Keyring::generate(now());
        let mut doc: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        let b_doc: serde_json::Value = serde_json::from_str(&b.to_json()).unwrap();
        doc["keys"][0]["privateKey"] = b_doc["keys"][0]["privateKey"].clone();
        let err = Keyring::from_json(doc.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn prune_keeps_the_active_key_and_keys_in_use() {
        let mut ring = Keyring::generate(now());
        let first = ring.active().id().to_owned();
        let second = ring.rotate(now());
        let third = ring.rotate(now());
        assert_eq!(ring.prune(&[second.as_str()]), vec![first]);
        let ids: Vec<_> = ring.keys().iter().map(|k| k.id().to_owned()).collect();
        assert_eq!(ids, vec![second, third]);
    }

    #[test]
    fn debug_never_prints_private_keys() {
        let ring = Keyring::generate(now());
        let json = ring.to_json();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        let private = doc["keys"][0]["privateKey"].as_str().unwrap().to_owned();
        let debug = format!("{ring:?}");
        assert!(!debug.contains(&private), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn malformed_keyring_is_an_error_without_content() {
        let err = Keyring::from_json(b"{\"version\":1,\"active\":\"secret-looking\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to parse keyring: not a valid keyring document"
        );
    }
}
