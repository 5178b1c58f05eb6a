//! Sealing a plaintext intake Secret: the intake keys, the checks on their values, the envelope
//! the mutating webhook writes instead, and the shape check of a stored envelope.
//!
//! Plaintext values are only ever passed to [`crypto::seal`], never formatted: every message
//! names the key, not its value.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use zeroize::Zeroizing;

use super::applied::{LAST_APPLIED_ANNOTATION, metadata_holding, needles, scrub_last_applied};
use super::{Concern, Decision, Mutation, Reason, SecretRequest, SecretView};
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

/// The intake keys whose values are credentials (the expiry time is not): none may appear in
/// an annotation or label.
const SEALED_VALUE_KEYS: [&str; 4] = [
    INTAKE_CLIENT_ID,
    INTAKE_CLIENT_SECRET,
    INTAKE_REFRESH_TOKEN,
    INTAKE_NEXT_CLIENT_SECRET,
];

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
    // `kubectl apply` wrote the file, plaintext and all, into its last-applied configuration:
    // it is kept without the credential keys. Anywhere else in the metadata a value is refused.
    let last_applied = secret
        .annotations
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(|applied| scrub_last_applied(applied, &INTAKE_KEYS));
    let values = SEALED_VALUE_KEYS
        .iter()
        .filter_map(|key| secret.data.get(key).copied());
    let needles = Zeroizing::new(needles(values));
    if let Some(field) = metadata_holding(secret, last_applied.as_deref(), &needles) {
        return deny(
            Reason::CredentialsInMetadata,
            format!(
                "{field}: holds a credential value of this intake: annotations and labels are \
                 stored as they are written, never sealed; remove the value and apply again"
            ),
        );
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
                last_applied,
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{
        CLIENT_ID, CLIENT_SECRET, FakeCluster, NS, REFRESH_TOKEN, alice, assert_no_plaintext,
        mutate, mutate_in, root,
    };
    use std::collections::BTreeMap;

    use super::*;
    use crate::crypto::Keyring;

    fn keyring() -> Keyring {
        Keyring::generate(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    /// The mutating webhook's decision on Alice creating `secret`, sealing to a fresh key.
    fn mutate_create(secret: SecretView<'_>) -> Decision {
        let key = keyring().active().public_key();
        mutate(&SecretRequest::create(alice(), secret), &key)
    }

    /// The mutating webhook's decision on Alice replacing `old` with `new`, sealing to a fresh
    /// key.
    fn mutate_update<'a>(old: SecretView<'a>, new: SecretView<'a>) -> Decision {
        let key = keyring().active().public_key();
        mutate(&SecretRequest::update(alice(), old, new), &key)
    }

    /// An intake for `acme-us-lwa`: labelled, no type yet, the three required keys.
    fn intake() -> SecretView<'static> {
        SecretView::test("acme-us-lwa")
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data(INTAKE_CLIENT_ID, CLIENT_ID)
            .with_data(INTAKE_CLIENT_SECRET, CLIENT_SECRET)
            .with_data(INTAKE_REFRESH_TOKEN, REFRESH_TOKEN)
    }

    #[test]
    fn a_complete_intake_is_sealed_for_the_namespace_team() {
        let ring = keyring();
        let secret = intake()
            .of_type("Opaque")
            .with_data(INTAKE_CLIENT_SECRET_EXPIRES_AT, b"2026-11-12T00:00:00Z");
        let d = mutate(
            &SecretRequest::create(alice(), secret),
            &ring.active().public_key(),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, Reason::SealedIntake);
        assert_eq!(d.concern, Concern::Setup);
        assert_no_plaintext(&d);
        let Some(Mutation::SealCredentials {
            envelope,
            remove_string_data,
            last_applied: None,
        }) = d.patch
        else {
            panic!("no patch");
        };
        assert!(!remove_string_data);
        let context = SealContext {
            team_id: "acme",
            namespace: NS,
            secret_name: "acme-us-lwa",
        };
        let (opened, _) = crypto::open(&ring, &context, &envelope).unwrap();
        assert_eq!(opened.refresh_token.expose().as_bytes(), REFRESH_TOKEN);
        assert_eq!(
            opened.client_secret_expires_at,
            Some("2026-11-12T00:00:00Z".parse().unwrap())
        );
        assert_eq!(envelope_key_id(&envelope).unwrap(), ring.active().id());
    }

    #[test]
    fn sealing_an_intake_written_as_string_data_removes_string_data() {
        let secret = SecretView {
            has_string_data: true,
            ..intake()
        };
        let d = mutate_create(secret);
        assert!(matches!(
            d.patch,
            Some(Mutation::SealCredentials {
                remove_string_data: true,
                ..
            })
        ));
    }

    #[test]
    fn an_incomplete_intake_is_denied_naming_the_missing_key() {
        let secret = SecretView::test("acme-us-lwa")
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data(INTAKE_CLIENT_ID, CLIENT_ID)
            .with_data(INTAKE_CLIENT_SECRET, CLIENT_SECRET);
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::IncompleteIntake);
        assert!(
            d.message.starts_with("data.refreshToken: missing"),
            "{}",
            d.message
        );
        assert_no_plaintext(&d);
    }

    #[test]
    fn a_malformed_intake_value_is_named_without_its_value() {
        let secret = intake().with_data(INTAKE_REFRESH_TOKEN, b"Atza|topsecretvalue-wrong-kind");
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::InvalidIntake);
        assert!(d.message.starts_with("data.refreshToken"), "{}", d.message);
        assert_no_plaintext(&d);
    }

    #[test]
    fn a_client_secret_expiry_must_be_an_rfc_3339_time() {
        let secret = intake().with_data(INTAKE_CLIENT_SECRET_EXPIRES_AT, b"next tuesday");
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::InvalidIntake);
        assert!(
            d.message
                .starts_with("data.clientSecretExpiresAt: must be an RFC 3339 time"),
            "{}",
            d.message
        );
        assert!(!d.message.contains("tuesday"), "{}", d.message);
    }

    #[test]
    fn a_partial_plaintext_write_into_a_sealed_secret_is_denied_by_the_mutating_webhook() {
        let old = SecretView::test("acme-us-lwa")
            .of_type(LWA_CREDENTIALS_SECRET_TYPE)
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data("sealed", b"x");
        let new = old.clone().with_data(INTAKE_CLIENT_SECRET, CLIENT_SECRET);
        let d = mutate_update(old, new);
        assert_eq!(d.reason, Reason::IncompleteIntake);
    }

    #[test]
    fn an_opaque_secret_cannot_become_credentials_by_update() {
        let old = SecretView::test("acme-us-lwa")
            .of_type("Opaque")
            .with_role(ROLE_LWA_CREDENTIALS);
        let new = intake().of_type("Opaque");
        let d = mutate_update(old, new);
        assert_eq!(d.reason, Reason::TypeImmutable);
    }

    #[test]
    fn an_intake_needs_a_name_because_the_envelope_is_bound_to_it() {
        let secret = SecretView {
            name: "",
            ..intake()
        };
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::NameRequired);
        assert!(
            d.message.starts_with("metadata.name: required"),
            "{}",
            d.message
        );
    }

    #[test]
    fn plaintext_credentials_are_sealed_only_in_a_labelled_intake() {
        // Named by connection acme-us, so a credentials Secret, but without the role label.
        let secret = SecretView::test("acme-us-lwa")
            .with_data(INTAKE_CLIENT_ID, CLIENT_ID)
            .with_data(INTAKE_CLIENT_SECRET, CLIENT_SECRET)
            .with_data(INTAKE_REFRESH_TOKEN, REFRESH_TOKEN);
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::MissingRoleLabel);
        assert!(d.patch.is_none());
        assert_no_plaintext(&d);
    }

    #[test]
    fn an_intake_in_an_unbound_namespace_is_not_sealed() {
        let d = mutate_in(
            &FakeCluster::unbound(),
            &SecretRequest::create(root(), intake()),
            &keyring().active().public_key(),
        );
        assert_eq!(d.reason, Reason::NamespaceNotBound);
        assert!(d.patch.is_none());
    }

    #[test]
    fn the_mutating_webhook_leaves_sealed_credentials_alone() {
        let secret = SecretView::test("acme-us-lwa")
            .of_type(LWA_CREDENTIALS_SECRET_TYPE)
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data("sealed", b"{}");
        let d = mutate_create(secret);
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::None);
        assert_eq!(d.concern, Concern::Unrelated);
        assert!(d.patch.is_none());
    }

    /// kubectl's last-applied configuration of [`intake`] applied from a file as `stringData`.
    fn applied(refresh_token: &[u8]) -> String {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "acme-us-lwa", "namespace": NS, "annotations": {},
                         "labels": {SECRET_ROLE_LABEL: ROLE_LWA_CREDENTIALS}},
            "stringData": {
                INTAKE_CLIENT_ID: std::str::from_utf8(CLIENT_ID).unwrap(),
                INTAKE_CLIENT_SECRET: std::str::from_utf8(CLIENT_SECRET).unwrap(),
                INTAKE_REFRESH_TOKEN: std::str::from_utf8(refresh_token).unwrap(),
            }
        })
        .to_string()
            + "\n"
    }

    #[test]
    fn a_kubectl_applied_intake_keeps_its_last_applied_configuration_without_the_values() {
        let annotations = BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_owned(), applied(REFRESH_TOKEN)),
            ("team.example/owner".to_owned(), "alice".to_owned()),
        ]);
        let secret = SecretView {
            annotations: &annotations,
            ..intake()
        };
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::SealedIntake, "{d:?}");
        assert_no_plaintext(&d);
        let Some(Mutation::SealCredentials {
            last_applied: Some(last_applied),
            ..
        }) = &d.patch
        else {
            panic!("the last-applied configuration is not rewritten: {d:?}");
        };
        for needle in [
            "topsecretvalue",
            "PlaintextRefresh",
            "0123abcd",
            "stringData",
        ] {
            assert!(!last_applied.contains(needle), "{needle}: {last_applied}");
        }
        // Everything else stays, `type: Opaque` included, so kubectl's next three-way merge
        // neither deletes the envelope nor sees a type it did not apply.
        let kept: serde_json::Value = serde_json::from_str(last_applied).unwrap();
        assert_eq!(kept["type"], "Opaque");
        assert_eq!(kept["metadata"]["name"], "acme-us-lwa");
        assert_eq!(
            kept["metadata"]["labels"][SECRET_ROLE_LABEL],
            ROLE_LWA_CREDENTIALS
        );
        assert!(last_applied.ends_with('\n'));
    }

    #[test]
    fn a_rotated_token_applied_again_is_sealed_and_scrubbed_again() {
        let rotated: &[u8] = b"Atzr|IwEBIRotatedRefreshValue";
        let annotations = BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), applied(rotated))]);
        let old = SecretView::test("acme-us-lwa")
            .of_type(LWA_CREDENTIALS_SECRET_TYPE)
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data("sealed", b"{}");
        // kubectl's patch sends the file's type and stringData; `data` keeps the old envelope.
        let new = SecretView {
            annotations: &annotations,
            ..old
                .clone()
                .of_type("Opaque")
                .with_data(INTAKE_CLIENT_ID, CLIENT_ID)
                .with_data(INTAKE_CLIENT_SECRET, CLIENT_SECRET)
                .with_data(INTAKE_REFRESH_TOKEN, rotated)
        };
        let d = mutate_update(old, new);
        assert_eq!(d.reason, Reason::SealedIntake, "{d:?}");
        let Some(Mutation::SealCredentials {
            last_applied: Some(last_applied),
            ..
        }) = &d.patch
        else {
            panic!("not sealed and scrubbed: {d:?}");
        };
        assert!(!last_applied.contains("RotatedRefresh"), "{last_applied}");
    }

    #[test]
    fn a_credential_value_in_another_annotation_or_a_label_is_refused_naming_it() {
        let copied = format!("backup of {}", std::str::from_utf8(CLIENT_SECRET).unwrap());
        let encoded = B64.encode(REFRESH_TOKEN);
        for (key, value, field) in [
            ("note", copied.as_str(), "metadata.annotations[\"note\"]"),
            ("b64", encoded.as_str(), "metadata.annotations[\"b64\"]"),
        ] {
            let annotations = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            let secret = SecretView {
                annotations: &annotations,
                ..intake()
            };
            let d = mutate_create(secret);
            assert_eq!(d.reason, Reason::CredentialsInMetadata, "{d:?}");
            assert!(d.message.starts_with(field), "{}", d.message);
            assert!(d.patch.is_none());
            assert_no_plaintext(&d);
        }
        // kubectl copies the file's annotations into its last-applied configuration: the
        // denial names the annotation as written, not kubectl's copy.
        let mut applied: serde_json::Value = serde_json::from_str(&applied(REFRESH_TOKEN)).unwrap();
        applied["metadata"]["annotations"]["note"] = copied.clone().into();
        let annotations = BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_owned(), applied.to_string()),
            ("note".to_owned(), copied),
        ]);
        let secret = SecretView {
            annotations: &annotations,
            ..intake()
        };
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::CredentialsInMetadata);
        assert!(
            d.message.starts_with("metadata.annotations[\"note\"]"),
            "{}",
            d.message
        );
        // A value only in the last-applied configuration, outside data and stringData, is
        // found there.
        applied["metadata"]["annotations"]["note"] = "harmless".into();
        applied["comment"] = std::str::from_utf8(CLIENT_SECRET).unwrap().into();
        let annotations =
            BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), applied.to_string())]);
        let secret = SecretView {
            annotations: &annotations,
            ..intake()
        };
        let d = mutate_create(secret);
        assert_eq!(d.reason, Reason::CredentialsInMetadata);
        assert!(
            d.message.starts_with(&format!(
                "metadata.annotations[{LAST_APPLIED_ANNOTATION:?}]"
            )),
            "{}",
            d.message
        );
    }
}
