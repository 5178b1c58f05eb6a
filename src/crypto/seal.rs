//! Sealing credentials to an operator key, and opening them again.
//!
//! HPKE (RFC 9180) base mode: KEM X25519-HKDF-SHA256, KDF HKDF-SHA256, AEAD AES-256-GCM. The
//! associated data binds the ciphertext to its Team, namespace and Secret name, so a sealed
//! value copied to another Secret, namespace or Team does not open. The HPKE `info` binds the
//! envelope version and key id, so neither can be altered either.
//!
//! The envelope is compact JSON `{"version":1,"keyId":…,"enc":…,"ciphertext":…}` (binary
//! fields base64), stored as the value of data key `sealed` in the credentials Secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use jiff::Timestamp;

use super::SecretString;
use super::keys::{Keyring, PublicKey};
use super::payload::Credentials;

/// The only envelope version this code writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// Where a sealed value lives: it opens only there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    /// The Team that owns the credentials.
    pub team_id: &'a str,
    /// The namespace of the credentials Secret.
    pub namespace: &'a str,
    /// The name of the credentials Secret.
    pub secret_name: &'a str,
}

impl SealContext<'_> {
    /// `connectors.openteam.io/v1|<teamId>|<namespace>|<secretName>`. None of the three can
    /// contain `|` (they are DNS names), so the encoding is unambiguous.
    pub fn associated_data(&self) -> Vec<u8> {
        format!(
            "connectors.openteam.io/v1|{}|{}|{}",
            self.team_id, self.namespace, self.secret_name
        )
        .into_bytes()
    }
}

/// The HPKE `info` purpose of sealed credentials.
const CREDENTIALS_PURPOSE: &str = "connectors.openteam.io/lwa-credentials";
/// The HPKE `info` purpose of a sealed access token (token store).
const TOKEN_PURPOSE: &str = "connectors.openteam.io/token-store";

fn info(purpose: &str, version: u32, key_id: &str) -> Vec<u8> {
    format!("{purpose}|v{version}|{key_id}").into_bytes()
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    version: u32,
    key_id: String,
    enc: String,
    ciphertext: String,
}

/// A sealing failure.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// HPKE refused (cannot happen with valid keys; reported rather than unwrapped).
    #[error("failed to seal credentials")]
    Hpke,
}

/// An opening failure. Messages carry no plaintext and no ciphertext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not an envelope: bad JSON, bad base64, missing or unknown fields.
    #[error("failed to open credentials: the sealed value is malformed")]
    Malformed,
    /// An envelope version this operator does not understand.
    #[error("failed to open credentials: unsupported envelope version {0}")]
    UnsupportedVersion(u32),
    /// Sealed to a key the keyring does not hold.
    #[error("failed to open credentials: sealed to unknown key {0}")]
    UnknownKey(String),
    /// Authentication failed: tampered, moved to another Team, namespace or name, or sealed to
    /// another key pair with the same id.
    #[error(
        "failed to open credentials: authentication failed (tampered, or sealed for another team, namespace or Secret name)"
    )]
    Authentication,
    /// Decrypted, but not a credentials payload.
    #[error("failed to open credentials: the payload is not valid LWA credentials")]
    Payload,
}

impl crate::error::Categorized for OpenError {
    fn category(&self) -> &'static str {
        match self {
            OpenError::Malformed => "malformed",
            OpenError::UnsupportedVersion(_) => "unsupported_version",
            OpenError::UnknownKey(_) => "unknown_key",
            OpenError::Authentication => "authentication_failed",
            OpenError::Payload => "invalid_payload",
        }
    }
}

/// Seals `credentials` to `public_key` for `context`; returns the envelope bytes.
pub fn seal(
    public_key: &PublicKey,
    context: &SealContext<'_>,
    credentials: &Credentials,
) -> Result<Vec<u8>, SealError> {
    let plaintext = Zeroizing::new(serde_json::to_vec(credentials).map_err(|_| SealError::Hpke)?);
    seal_bytes(
        public_key,
        CREDENTIALS_PURPOSE,
        &context.associated_data(),
        &plaintext,
    )
}

/// The key id an envelope records, without opening it (for rotation bookkeeping).
pub fn sealed_key_id(envelope: &[u8]) -> Result<String, OpenError> {
    let envelope: Envelope = serde_json::from_slice(envelope).map_err(|_| OpenError::Malformed)?;
    Ok(envelope.key_id)
}

/// Opens an envelope with the key it records. Returns the credentials and that key id.
pub fn open(
    keyring: &Keyring,
    context: &SealContext<'_>,
    envelope: &[u8],
) -> Result<(Credentials, String), OpenError> {
    let (plaintext, key_id) = open_bytes(
        keyring,
        CREDENTIALS_PURPOSE,
        &context.associated_data(),
        envelope,
    )?;
    // serde_json's messages can quote input, so its error is dropped, never shown.
    let credentials: Credentials =
        serde_json::from_slice(&plaintext).map_err(|_| OpenError::Payload)?;
    Ok((credentials, key_id))
}

/// Where a sealed access token lives: a connection's token store. It opens only for that
/// connection, and never as credentials (a distinct purpose in the HPKE info and the
/// associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenContext<'a> {
    /// The connection's Team.
    pub team_id: &'a str,
    /// The connection's namespace.
    pub namespace: &'a str,
    /// The connection's name.
    pub connection: &'a str,
}

impl TokenContext<'_> {
    /// `connectors.openteam.io/v1/token-store|<teamId>|<namespace>|<connection>`.
    pub fn associated_data(&self) -> Vec<u8> {
        format!(
            "connectors.openteam.io/v1/token-store|{}|{}|{}",
            self.team_id, self.namespace, self.connection
        )
        .into_bytes()
    }
}

/// An access token as the token store keeps it. Only ever in memory in plaintext; the token
/// zeroizes on drop and prints `<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredToken {
    /// The LWA access token (`Atza|…`).
    pub access_token: SecretString,
    /// `bearer`.
    pub token_type: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// When it was requested from LWA.
    pub issued_at: Timestamp,
}

/// Seals an access token to `public_key` for a connection's token store.
pub fn seal_token(
    public_key: &PublicKey,
    context: &TokenContext<'_>,
    token: &StoredToken,
) -> Result<Vec<u8>, SealError> {
    let plaintext = Zeroizing::new(serde_json::to_vec(token).map_err(|_| SealError::Hpke)?);
    seal_bytes(
        public_key,
        TOKEN_PURPOSE,
        &context.associated_data(),
        &plaintext,
    )
}

/// Opens a token store's envelope. Returns the token and the key id it was sealed to.
pub fn open_token(
    keyring: &Keyring,
    context: &TokenContext<'_>,
    envelope: &[u8],
) -> Result<(StoredToken, String), OpenError> {
    let (plaintext, key_id) =
        open_bytes(keyring, TOKEN_PURPOSE, &context.associated_data(), envelope)?;
    let token: StoredToken = serde_json::from_slice(&plaintext).map_err(|_| OpenError::Payload)?;
    Ok((token, key_id))
}

fn seal_bytes(
    public_key: &PublicKey,
    purpose: &str,
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        public_key.hpke(),
        &info(purpose, ENVELOPE_VERSION, public_key.id()),
        plaintext,
        associated_data,
    )
    .map_err(|_| SealError::Hpke)?;
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        key_id: public_key.id().to_owned(),
        enc: B64.encode(enc.to_bytes().as_slice()),
        ciphertext: B64.encode(&ciphertext),
    };
    serde_json::to_vec(&envelope).map_err(|_| SealError::Hpke)
}

fn open_bytes(
    keyring: &Keyring,
    purpose: &str,
    associated_data: &[u8],
    envelope: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, String), OpenError> {
    let envelope: Envelope = serde_json::from_slice(envelope).map_err(|_| OpenError::Malformed)?;
    if envelope.version != ENVELOPE_VERSION {
        return Err(OpenError::UnsupportedVersion(envelope.version));
    }
    let key = keyring
        .get(&envelope.key_id)
        .ok_or_else(|| OpenError::UnknownKey(envelope.key_id.clone()))?;
    let enc_bytes = B64
        .decode(envelope.enc.as_bytes())
        .map_err(|_| OpenError::Malformed)?;
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc_bytes)
        .map_err(|_| OpenError::Malformed)?;
    let ciphertext = B64
        .decode(envelope.ciphertext.as_bytes())
        .map_err(|_| OpenError::Malformed)?;
    let plaintext = Zeroizing::new(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            key.private(),
            &enc,
            &info(purpose, envelope.version, &envelope.key_id),
            &ciphertext,
            associated_data,
        )
        .map_err(|_| OpenError::Authentication)?,
    );
    Ok((plaintext, envelope.key_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;
    use jiff::Timestamp;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    const CTX: SealContext<'static> = SealContext {
        team_id: "acme",
        namespace: "team-acme",
        secret_name: "acme-us-lwa",
    };

    fn creds() -> Credentials {
        Credentials {
            client_id: "amzn1.application-oa2-client.0123abcd".into(),
            client_secret: "amzn1.oa2-cs.v1.topsecretclientsecret".into(),
            refresh_token: "Atzr|IwEBIRefreshTokenPlaintext".into(),
            next_client_secret: Some("amzn1.oa2-cs.v1.nextsecret".into()),
            client_secret_expires_at: Some(now()),
        }
    }

    fn assert_no_plaintext(text: &str) {
        for needle in [
            "topsecretclientsecret",
            "RefreshTokenPlaintext",
            "nextsecret",
            "0123abcd",
        ] {
            assert!(!text.contains(needle), "{needle} leaked into {text}");
        }
    }

    #[test]
    fn sealed_credentials_open_with_the_same_context() {
        let ring = Keyring::generate(now());
        let sealed = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        assert_no_plaintext(&String::from_utf8_lossy(&sealed));
        let (opened, key_id) = open(&ring, &CTX, &sealed).unwrap();
        assert_eq!(opened, creds());
        assert_eq!(key_id, ring.active().id());
        assert_eq!(sealed_key_id(&sealed).unwrap(), key_id);
    }

    #[test]
    fn every_flipped_bit_of_the_envelope_fails_to_open() {
        let ring = Keyring::generate(now());
        let sealed = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        for i in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            let err =
                open(&ring, &CTX, &tampered).expect_err(&format!("bit {i} flipped still opened"));
            assert_no_plaintext(&err.to_string());
        }
    }

    #[test]
    fn every_flipped_bit_of_the_ciphertext_fails_authentication() {
        let ring = Keyring::generate(now());
        let sealed = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        let mut envelope: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        for field in ["ciphertext", "enc"] {
            let bytes = B64.decode(envelope[field].as_str().unwrap()).unwrap();
            for i in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[i / 8] ^= 1 << (i % 8);
                let mut tampered = envelope.clone();
                tampered[field] = B64.encode(&flipped).into();
                let err = open(&ring, &CTX, tampered.to_string().as_bytes()).unwrap_err();
                assert!(
                    matches!(err, OpenError::Authentication | OpenError::Malformed),
                    "{field} bit {i}: {err:?}"
                );
            }
        }
        envelope["version"] = 2.into();
        assert_eq!(
            open(&ring, &CTX, envelope.to_string().as_bytes()),
            Err(OpenError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn moved_to_another_team_namespace_or_name_does_not_open() {
        let ring = Keyring::generate(now());
        let sealed = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        for other in [
            SealContext {
                team_id: "other",
                ..CTX
            },
            SealContext {
                namespace: "team-other",
                ..CTX
            },
            SealContext {
                secret_name: "renamed",
                ..CTX
            },
        ] {
            assert_eq!(
                open(&ring, &other, &sealed).unwrap_err(),
                OpenError::Authentication
            );
        }
    }

    #[test]
    fn sealed_to_another_key_does_not_open() {
        let ring = Keyring::generate(now());
        let other = Keyring::generate(now());
        let sealed = seal(&other.active().public_key(), &CTX, &creds()).unwrap();
        assert_eq!(
            open(&ring, &CTX, &sealed).unwrap_err(),
            OpenError::UnknownKey(other.active().id().to_owned())
        );
        // Same id, different private key: relabelled envelopes still fail.
        let mut relabelled: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        relabelled["keyId"] = ring.active().id().into();
        assert_eq!(
            open(&ring, &CTX, relabelled.to_string().as_bytes()).unwrap_err(),
            OpenError::Authentication
        );
    }

    fn token() -> StoredToken {
        StoredToken {
            access_token: "Atza|AccessTokenPlaintext".into(),
            token_type: "bearer".into(),
            expires_at: now(),
            issued_at: now(),
        }
    }

    const TOKEN_CTX: TokenContext<'static> = TokenContext {
        team_id: "acme",
        namespace: "team-acme",
        connection: "acme-us",
    };

    #[test]
    fn a_sealed_token_opens_only_for_its_connection_and_never_as_credentials() {
        let ring = Keyring::generate(now());
        let sealed = seal_token(&ring.active().public_key(), &TOKEN_CTX, &token()).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("AccessTokenPlaintext"));
        let (opened, key_id) = open_token(&ring, &TOKEN_CTX, &sealed).unwrap();
        assert_eq!(opened, token());
        assert_eq!(key_id, ring.active().id());
        for other in [
            TokenContext {
                team_id: "other",
                ..TOKEN_CTX
            },
            TokenContext {
                namespace: "team-other",
                ..TOKEN_CTX
            },
            TokenContext {
                connection: "acme-de",
                ..TOKEN_CTX
            },
        ] {
            assert_eq!(
                open_token(&ring, &other, &sealed).unwrap_err(),
                OpenError::Authentication
            );
        }
        // The same names as a credentials context: a different purpose, so it does not open.
        let as_credentials = SealContext {
            team_id: "acme",
            namespace: "team-acme",
            secret_name: "acme-us",
        };
        assert_eq!(
            open(&ring, &as_credentials, &sealed).unwrap_err(),
            OpenError::Authentication
        );
        // And sealed credentials never open as a token.
        let credentials = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        let same_names = TokenContext {
            team_id: "acme",
            namespace: "team-acme",
            connection: "acme-us-lwa",
        };
        assert_eq!(
            open_token(&ring, &same_names, &credentials).unwrap_err(),
            OpenError::Authentication
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let ring = Keyring::generate(now());
        for input in [&b""[..], b"{}", b"null", b"\xff\xfe", b"{\"version\":1}"] {
            assert_eq!(open(&ring, &CTX, input).unwrap_err(), OpenError::Malformed);
        }
    }

    #[test]
    fn rotated_keyring_still_opens_old_envelopes() {
        let mut ring = Keyring::generate(now());
        let sealed = seal(&ring.active().public_key(), &CTX, &creds()).unwrap();
        ring.rotate(now());
        assert!(open(&ring, &CTX, &sealed).is_ok());
    }

    fn secret() -> impl Strategy<Value = SecretString> {
        "[ -~]{1,300}".prop_map(SecretString::from)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_payload_round_trips(
            client_id in "[a-z0-9]{1,40}",
            client_secret in secret(),
            refresh_token in secret(),
            next in proptest::option::of(secret()),
            expires in proptest::option::of(0i64..4_000_000_000),
        ) {
            let ring = Keyring::generate(now());
            let credentials = Credentials {
                client_id: format!("amzn1.application-oa2-client.{client_id}"),
                client_secret,
                refresh_token,
                next_client_secret: next,
                client_secret_expires_at: expires.map(|s| Timestamp::from_second(s).unwrap()),
            };
            let sealed = seal(&ring.active().public_key(), &CTX, &credentials).unwrap();
            let (opened, _) = open(&ring, &CTX, &sealed).unwrap();
            prop_assert_eq!(opened, credentials);
        }
    }
}
