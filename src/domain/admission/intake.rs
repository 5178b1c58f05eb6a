//! Sealing a plaintext intake Secret: the intake keys, the checks on their values, the envelope
//! the mutating webhook writes instead, and the shape check of a stored envelope.
//!
//! Plaintext values are only ever passed to [`crypto::seal`], never formatted: every message
//! names the key, not its value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::secret::{SecretRequest, SecretView};
use super::{Concern, Decision, Mutation, Reason};
use crate::crypto::{self, Credentials, PublicKey, SealContext, SecretString};
use crate::names::{
    LWA_CREDENTIALS_SECRET_TYPE, ROLE_LWA_CREDENTIALS, SECRET_ROLE_LABEL, TEAM_LABEL,
};

/// Intake data key: the LWA client id.
pub const INTAKE_CLIENT_ID: &str = "clientId";
/// Intake data key: the LWA client secret.
pub const INTAKE_CLIENT_SECRET: &str = "clientSecret";
/// Intake data key: the seller's refresh token.
pub const INTAKE_REFRESH_TOKEN: &str = "refreshToken";
/// Optional intake data key: the next client secret during Amazon's rotation overlap.
pub const INTAKE_NEXT_CLIENT_SECRET: &str = "nextClientSecret";
/// Optional intake data key: when the client secret expires (RFC 3339).
pub const INTAKE_CLIENT_SECRET_EXPIRES_AT: &str = "clientSecretExpiresAt";

/// Every key an intake Secret may carry.
pub const INTAKE_KEYS: [&str; 5] = [
    INTAKE_CLIENT_ID,
    INTAKE_CLIENT_SECRET,
    INTAKE_REFRESH_TOKEN,
    INTAKE_NEXT_CLIENT_SECRET,
    INTAKE_CLIENT_SECRET_EXPIRES_AT,
];

/// The intake keys that must be present.
pub const REQUIRED_INTAKE_KEYS: [&str; 3] =
    [INTAKE_CLIENT_ID, INTAKE_CLIENT_SECRET, INTAKE_REFRESH_TOKEN];

pub(super) fn seal_intake(
    request: &SecretRequest<'_>,
    secret: &SecretView<'_>,
    team: Option<&str>,
    key: &PublicKey,
) -> Decision {
    let deny = |reason, message: String| Decision::deny(reason, message, Concern::Setup);
    if secret.role() != Some(ROLE_LWA_CREDENTIALS) {
        return deny(
            Reason::MissingRoleLabel,
            format!(
                "metadata.labels[{SECRET_ROLE_LABEL:?}]: plaintext credentials are sealed only in a \
                 Secret labelled {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"
            ),
        );
    }
    if secret.name.is_empty() {
        return deny(
            Reason::NameRequired,
            "metadata.name: required for a credentials intake (generateName cannot be used): the \
             sealed value is bound to the Secret's name"
                .to_owned(),
        );
    }
    if let Some(old) = &request.old
        && old.type_ != Some(LWA_CREDENTIALS_SECRET_TYPE)
    {
        return deny(
            Reason::TypeImmutable,
            format!(
                "type: an existing Secret of type {:?} cannot become a credentials Secret (a \
                 Secret's type never changes): delete it and create the intake again",
                old.type_.unwrap_or("Opaque")
            ),
        );
    }
    let missing: Vec<&str> = REQUIRED_INTAKE_KEYS
        .iter()
        .copied()
        .filter(|k| !secret.data.contains_key(k))
        .collect();
    if let Some(first) = missing.first() {
        return deny(
            Reason::IncompleteIntake,
            format!(
                "data.{first}: missing: a credentials intake needs {} (missing: {})",
                REQUIRED_INTAKE_KEYS.join(", "),
                missing.join(", ")
            ),
        );
    }
    let Some(team) = team else {
        return deny(
            Reason::NamespaceNotBound,
            format!(
                "metadata.namespace: namespace {:?} has no {TEAM_LABEL} label: credentials are \
                 sealed for the namespace's Team",
                request.namespace
            ),
        );
    };
    // Each problem is the message of an `invalid_intake` denial; it names the key only.
    let text = |key: &'static str| -> Result<Option<SecretString>, String> {
        match secret.data.get(key) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(|value| Some(SecretString::from(value.trim())))
                .map_err(|_| format!("data.{key}: must be UTF-8 text")),
        }
    };
    let credentials = (|| {
        let client_id = text(INTAKE_CLIENT_ID)?.unwrap_or_default();
        let client_secret = text(INTAKE_CLIENT_SECRET)?.unwrap_or_default();
        let refresh_token = text(INTAKE_REFRESH_TOKEN)?.unwrap_or_default();
        let next_client_secret = text(INTAKE_NEXT_CLIENT_SECRET)?;
        let client_secret_expires_at = match text(INTAKE_CLIENT_SECRET_EXPIRES_AT)? {
            None => None,
            Some(value) => Some(value.expose().parse::<jiff::Timestamp>().map_err(|_| {
                format!(
                    "data.{INTAKE_CLIENT_SECRET_EXPIRES_AT}: must be an RFC 3339 time such as \
                     2026-11-12T00:00:00Z"
                )
            })?),
        };
        Ok::<_, String>(Credentials {
            client_id: client_id.expose().to_owned(),
            client_secret,
            refresh_token,
            next_client_secret,
            client_secret_expires_at,
        })
    })();
    let credentials = match credentials {
        Ok(c) => c,
        Err(message) => return deny(Reason::InvalidIntake, message),
    };
    // `check` names the input and never echoes its value.
    if let Err(err) = credentials.check([
        "data.clientId",
        "data.clientSecret",
        "data.refreshToken",
        "data.nextClientSecret",
    ]) {
        return deny(Reason::InvalidIntake, err.to_string());
    }
    let context = SealContext {
        team_id: team,
        namespace: request.namespace,
        secret_name: secret.name,
    };
    match crypto::seal(key, &context, &credentials) {
        Ok(envelope) => {
            let mut decision = Decision::allow(Reason::SealedIntake, Concern::Setup);
            decision.patch = Some(Mutation::SealCredentials {
                envelope,
                remove_string_data: secret.has_string_data,
            });
            decision
        }
        Err(_) => deny(
            Reason::SealFailed,
            "data: the credentials could not be sealed; nothing was stored".to_owned(),
        ),
    }
}

/// Checks the shape of a sealed envelope without opening it: `{version: 1, keyId, enc,
/// ciphertext}` with a 32-byte X25519 `enc` and a ciphertext at least one AES-GCM tag long.
/// Returns the key id.
pub fn envelope_key_id(envelope: &[u8]) -> Result<String, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(envelope).map_err(|_| "not JSON")?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["ciphertext", "enc", "keyId", "version"] {
        return Err("fields must be exactly version, keyId, enc and ciphertext");
    }
    if object.get("version").and_then(serde_json::Value::as_u64)
        != Some(u64::from(crypto::ENVELOPE_VERSION))
    {
        return Err("unsupported version");
    }
    let key_id = object
        .get("keyId")
        .and_then(serde_json::Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .ok_or("keyId must be a short string")?;
    let decode = |field: &str| {
        object
            .get(field)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| B64.decode(s).ok())
    };
    if decode("enc").is_none_or(|enc| enc.len() != 32) {
        return Err("enc must be a base64 X25519 public key");
    }
    if decode("ciphertext").is_none_or(|c| c.len() < 16) {
        return Err("ciphertext must be base64 AES-256-GCM output");
    }
    Ok(key_id.to_owned())
}
