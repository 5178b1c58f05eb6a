//! The Secret rules: runtime Secrets and token stores are the operator's alone; credentials
//! Secrets belong to the namespace's Team and hold exactly one sealed envelope. Sealing a
//! plaintext intake is [`super::intake`]'s.

use super::applied::{LAST_APPLIED_ANNOTATION, applied_credential_keys};
use super::intake::{INTAKE_KEYS, envelope_key_id, seal_intake};
use super::{
    Concern, ConnectionFacts, Decision, Findings, Lookup, Policy, Reason, SecretRequest, SecretView,
};
use super::{is_cleanup, verb};
use crate::crypto::PublicKey;
use crate::names::{
    CONNECTION_LABEL, LWA_CREDENTIALS_SECRET_TYPE, ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN,
    ROLE_TOKEN_STORE, RUNTIME_SECRET_TYPE, SEALED_KEY, SECRET_ROLE_LABEL, TOKEN_STORE_SECRET_TYPE,
};

/// Which webhook is asking.
#[derive(Clone, Copy, Debug)]
pub enum Phase<'a> {
    /// The mutating webhook: a complete intake is sealed to this (the active) key.
    Mutate(&'a PublicKey),
    /// The validating webhook, after every mutation: what will be stored is checked. `key_ids`
    /// are the operator's keys, to warn about envelopes sealed to another key.
    Validate {
        /// Every key id in the operator's keyring.
        key_ids: &'a [String],
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SecretClass {
    Unrelated,
    Credentials,
    Runtime,
    TokenStore,
}

/// What kind of Secret this is, and the connection it belongs to: by its role label or type
/// (the connection then comes from its connection label, for credentials also from the
/// connection that names it), else by the name a connection gives it. Token stores first, then
/// runtime Secrets, then credentials.
fn classify_secret(
    secret: &SecretView<'_>,
    connections: &[ConnectionFacts],
) -> (SecretClass, Option<String>) {
    let by_label = secret.labels.get(CONNECTION_LABEL).cloned();
    let marked =
        |role: &str, type_: &str| secret.role() == Some(role) || secret.type_ == Some(type_);
    let named_by = |name_of: fn(&ConnectionFacts) -> String| {
        connections
            .iter()
            .find(|c| name_of(c) == secret.name)
            .map(|c| c.name.clone())
    };
    if marked(ROLE_TOKEN_STORE, TOKEN_STORE_SECRET_TYPE) {
        return (SecretClass::TokenStore, by_label);
    }
    if let Some(connection) = named_by(ConnectionFacts::token_store_name) {
        return (SecretClass::TokenStore, Some(connection));
    }
    if marked(ROLE_RUNTIME_TOKEN, RUNTIME_SECRET_TYPE) {
        return (SecretClass::Runtime, by_label);
    }
    if let Some(connection) = named_by(ConnectionFacts::runtime_secret_name) {
        return (SecretClass::Runtime, Some(connection));
    }
    let credentials_of = named_by(|c| c.credentials_secret_name.clone());
    if marked(ROLE_LWA_CREDENTIALS, LWA_CREDENTIALS_SECRET_TYPE) {
        return (SecretClass::Credentials, by_label.or(credentials_of));
    }
    match credentials_of {
        Some(connection) => (SecretClass::Credentials, Some(connection)),
        None => (SecretClass::Unrelated, None),
    }
}

/// The Secret rules.
///
/// - Runtime Secrets (role `runtime-token`, type `connectors.openteam.io/sp-api-token`, or named
///   `<connection>-sp-api` after an existing connection) are created, changed and deleted only
///   by the operator; so are token stores (role `token-store`, type
///   `connectors.openteam.io/sp-api-token-sealed`, or named `<connection>-sp-api-sealed`).
/// - Credentials Secrets (role `lwa-credentials`, type `connectors.openteam.io/lwa-credentials`,
///   or named by a connection's `spec.credentialsSecretName`) are written only by the
///   namespace's Team, admins or the operator, and only ever hold one well-formed sealed
///   envelope under `sealed`.
/// - An intake (role `lwa-credentials` with plaintext `clientId`, `clientSecret`,
///   `refreshToken`, optionally `nextClientSecret` and `clientSecretExpiresAt`) is sealed by
///   the mutating webhook; the validating webhook refuses any plaintext that is left.
pub fn admit_secret(
    policy: &Policy,
    lookup: &dyn Lookup,
    request: &SecretRequest<'_>,
    phase: Phase<'_>,
) -> Decision {
    let connections = lookup.connections(request.namespace);
    let classify = |view: &Option<SecretView<'_>>| {
        view.as_ref()
            .map(|v| classify_secret(v, &connections))
            .unwrap_or((SecretClass::Unrelated, None))
    };
    let (new_class, new_connection) = classify(&request.object);
    let (old_class, old_connection) = classify(&request.old);
    let class = new_class.max(old_class);
    let connection = new_connection.or(old_connection);
    let team = lookup.namespace_team(request.namespace);
    let requester = &request.requester;
    // The validating pass records an allowed write; the mutating pass stays quiet so that one
    // request makes one audit record.
    let allowed_write = match phase {
        Phase::Mutate(_) => Concern::Unrelated,
        Phase::Validate { .. } => Concern::Setup,
    };
    let subject = |d: Decision| d.team(team.as_deref()).connection(connection.as_deref());

    if class == SecretClass::Unrelated {
        return Decision::allow(Reason::Unrelated, Concern::Unrelated);
    }
    if is_cleanup(requester, request.operation) {
        return subject(Decision::allow(Reason::Cleanup, Concern::Setup));
    }
    if matches!(class, SecretClass::Runtime | SecretClass::TokenStore) {
        let what = if class == SecretClass::Runtime {
            "runtime Secret"
        } else {
            "token store"
        };
        if !policy.is_operator(requester) {
            return subject(Decision::deny(
                Reason::NotOperator,
                format!(
                    "{:?} may not {} {what} {:?}: {what}s are written only by the operator ({})",
                    requester.username,
                    verb(request.operation),
                    secret_name(request),
                    policy.operator_username
                ),
                Concern::Identity,
            ));
        }
        return subject(Decision::allow(Reason::None, allowed_write));
    }

    // Credentials Secrets.
    if !policy.may_act_for(requester, team.as_deref()) {
        let team_text = team
            .as_deref()
            .map_or("no team".to_owned(), |t| format!("team {t:?}"));
        return subject(Decision::deny(
            Reason::NotTeamMember,
            format!(
                "{:?} may not {} credentials Secret {:?}: only members of the namespace's Team \
                 ({team_text}, group prefix {:?}), admins or the operator may",
                requester.username,
                verb(request.operation),
                secret_name(request),
                policy.team_group_prefix
            ),
            Concern::Identity,
        ));
    }
    let Some(secret) = &request.object else {
        return subject(Decision::allow(Reason::None, allowed_write));
    };
    subject(credentials_content(request, secret, team.as_deref(), phase))
}

fn secret_name<'a>(request: &'a SecretRequest<'a>) -> &'a str {
    request
        .object
        .as_ref()
        .or(request.old.as_ref())
        .map_or("", |s| s.name)
}

/// The content rules of a credentials Secret being created or changed.
fn credentials_content(
    request: &SecretRequest<'_>,
    secret: &SecretView<'_>,
    team: Option<&str>,
    phase: Phase<'_>,
) -> Decision {
    let unknown: Vec<&str> = secret
        .data
        .keys()
        .copied()
        .filter(|k| *k != SEALED_KEY && !INTAKE_KEYS.contains(k))
        .collect();
    if let Some(key) = unknown.first() {
        return Decision::deny(
            Reason::InvalidIntake,
            format!(
                "data.{key}: not a credentials key: a credentials Secret holds only {SEALED_KEY:?}, \
                 or as intake {}",
                INTAKE_KEYS.join(", ")
            ),
            Concern::Setup,
        );
    }
    let plaintext: Vec<&str> = INTAKE_KEYS
        .iter()
        .copied()
        .filter(|k| secret.data.contains_key(k))
        .collect();
    if !plaintext.is_empty() {
        return match phase {
            Phase::Mutate(key) => seal_intake(request, secret, team, key),
            Phase::Validate { .. } => Decision::deny(
                Reason::PlaintextCredentials,
                format!(
                    "data.{}: plaintext LWA credentials are never stored: label the Secret \
                     {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS} so the mutating webhook seals it, \
                     or use `amazon-seller-operator seal`",
                    plaintext[0]
                ),
                Concern::Setup,
            ),
        };
    }
    let Phase::Validate { key_ids } = phase else {
        // Nothing to seal: the validating webhook checks the stored form.
        return Decision::allow(Reason::None, Concern::Unrelated);
    };
    let mut findings = Findings::default();
    // The mutating webhook scrubs it while sealing; this catches what it never saw (a Secret
    // without the role label) or could not seal (an annotation written on its own).
    if let Some(applied) = secret.annotations.get(LAST_APPLIED_ANNOTATION)
        && let Some(key) = applied_credential_keys(applied, &INTAKE_KEYS).first()
    {
        findings.violation(
            Reason::PlaintextCredentials,
            format!(
                "metadata.annotations[{LAST_APPLIED_ANNOTATION:?}]: holds plaintext LWA \
                 credentials ({key}): they are removed from kubectl's last-applied \
                 configuration only while the same request's plaintext is sealed; apply the \
                 intake Secret again, or remove the annotation"
            ),
        );
    }
    if secret.type_ != Some(LWA_CREDENTIALS_SECRET_TYPE) {
        findings.violation(
            Reason::WrongSecretType,
            format!(
                "type: a credentials Secret must have type {LWA_CREDENTIALS_SECRET_TYPE:?}, not {:?}",
                secret.type_.unwrap_or("Opaque")
            ),
        );
    }
    if secret.role() != Some(ROLE_LWA_CREDENTIALS) {
        findings.violation(
            Reason::MissingRoleLabel,
            format!(
                "metadata.labels[{SECRET_ROLE_LABEL:?}]: a credentials Secret must be labelled \
                 {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"
            ),
        );
    }
    match secret.data.get(SEALED_KEY) {
        None => findings.violation(
            Reason::MissingEnvelope,
            format!(
                "data.{SEALED_KEY}: missing: a credentials Secret holds exactly one key, \
                 {SEALED_KEY:?}, with the sealed envelope"
            ),
        ),
        Some(envelope) => match envelope_key_id(envelope) {
            Err(why) => findings.violation(
                Reason::MalformedEnvelope,
                format!(
                    "data.{SEALED_KEY}: not a sealed envelope ({why}): seal credentials with \
                     `amazon-seller-operator seal` or through an intake Secret"
                ),
            ),
            Ok(key_id) if !key_ids.contains(&key_id) => findings.warning(format!(
                "data.{SEALED_KEY}: sealed to key {key_id:?}, which the operator does not hold: \
                 the connection cannot use these credentials"
            )),
            Ok(_) => {}
        },
    }
    findings.decide(Concern::Setup)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{
        REFRESH_TOKEN, alice, assert_no_plaintext, garbage_collector, mallory, operator, root,
        validate, validate_with_keys,
    };
    use std::collections::BTreeMap;

    use super::*;
    use crate::crypto::{self, Credentials, Keyring, SealContext};

    /// The credentials Secret of connection `acme-us`, labelled and typed, holding `sealed`.
    fn sealed(envelope: &[u8]) -> SecretView<'_> {
        SecretView::test("acme-us-lwa")
            .of_type(LWA_CREDENTIALS_SECRET_TYPE)
            .with_role(ROLE_LWA_CREDENTIALS)
            .with_data(SEALED_KEY, envelope)
    }

    /// A well-formed envelope sealed for `acme-us-lwa` in `team-acme` of Team acme.
    fn envelope(ring: &Keyring) -> Vec<u8> {
        let context = SealContext {
            team_id: "acme",
            namespace: "team-acme",
            secret_name: "acme-us-lwa",
        };
        let credentials = Credentials {
            client_id: "amzn1.application-oa2-client.abc".into(),
            client_secret: "s".into(),
            refresh_token: "Atzr|r".into(),
            next_client_secret: None,
            client_secret_expires_at: None,
        };
        crypto::seal(&ring.active().public_key(), &context, &credentials).unwrap()
    }

    fn keyring() -> Keyring {
        Keyring::generate(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    /// A runtime Secret by its role label, by its type, and by the name of an existing
    /// connection's runtime Secret.
    fn forged_runtime_secrets() -> [SecretView<'static>; 3] {
        [
            SecretView::test("anything").with_role(ROLE_RUNTIME_TOKEN),
            SecretView::test("anything").of_type(RUNTIME_SECRET_TYPE),
            SecretView::test("acme-us-sp-api").of_type("Opaque"),
        ]
    }

    /// A token store by its role label, by its type, and by the name of an existing
    /// connection's token store.
    fn forged_token_stores() -> [SecretView<'static>; 3] {
        [
            SecretView::test("anything").with_role(ROLE_TOKEN_STORE),
            SecretView::test("anything").of_type(TOKEN_STORE_SECRET_TYPE),
            SecretView::test("acme-us-sp-api-sealed").of_type("Opaque"),
        ]
    }

    /// Every write of `secret` by a Team member or an admin is denied `not_operator` with a
    /// message naming `what`; the operator may create it.
    fn assert_only_the_operator_writes(secret: &SecretView<'static>, what: &str) {
        for requester in [alice(), root()] {
            for request in SecretRequest::every_write(requester, secret) {
                let d = validate(&request);
                assert_eq!(d.reason, Reason::NotOperator, "{request:?}");
                assert_eq!(d.concern, Concern::Identity);
                assert!(d.message.contains(what), "{}", d.message);
            }
        }
        let d = validate(&SecretRequest::create(operator(), secret.clone()));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.concern, Concern::Setup);
    }

    #[test]
    fn only_the_operator_writes_runtime_secrets() {
        for secret in forged_runtime_secrets() {
            assert_only_the_operator_writes(&secret, "runtime Secret");
        }
    }

    #[test]
    fn only_the_operator_writes_token_stores() {
        for secret in forged_token_stores() {
            assert_only_the_operator_writes(&secret, "token store");
        }
    }

    #[test]
    fn relabelling_a_runtime_secret_is_still_an_operator_only_write() {
        let old = SecretView::test("x").with_role(ROLE_RUNTIME_TOKEN);
        let new = SecretView::test("x");
        let d = validate(&SecretRequest::update(alice(), old, new));
        assert_eq!(d.reason, Reason::NotOperator);
    }

    #[test]
    fn the_garbage_collector_may_delete_but_not_write_managed_secrets() {
        let runtime = SecretView::test("acme-us-sp-api").with_role(ROLE_RUNTIME_TOKEN);
        let d = validate(&SecretRequest::delete(garbage_collector(), runtime.clone()));
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::Cleanup);
        let d = validate(&SecretRequest::create(garbage_collector(), runtime));
        assert_eq!(d.reason, Reason::NotOperator);
        let credentials = sealed(b"{}");
        let d = validate(&SecretRequest::create(garbage_collector(), credentials));
        assert_eq!(d.reason, Reason::NotTeamMember);
    }

    #[test]
    fn a_member_of_another_team_may_not_replace_sealed_credentials() {
        let secret = sealed(b"{}");
        let d = validate(&SecretRequest::update(mallory(), secret.clone(), secret));
        assert_eq!(d.reason, Reason::NotTeamMember);
        assert_eq!(d.concern, Concern::Identity);
    }

    #[test]
    fn a_secret_named_by_a_connection_is_credentials_even_without_labels() {
        let secret = SecretView::test("acme-us-lwa").with_data("x", b"y");
        let d = validate(&SecretRequest::create(mallory(), secret));
        assert_eq!(d.reason, Reason::NotTeamMember);
    }

    #[test]
    fn unrelated_secrets_are_left_alone() {
        let secret = SecretView::test("app-config").with_data("clientSecret", b"x");
        let d = validate(&SecretRequest::create(mallory(), secret));
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::Unrelated);
        assert_eq!(d.concern, Concern::Unrelated);
    }

    #[test]
    fn a_sealed_secret_with_a_well_formed_envelope_passes_validation() {
        let ring = keyring();
        let envelope = envelope(&ring);
        let ids = vec![ring.active().id().to_owned()];
        let d = validate_with_keys(&SecretRequest::create(alice(), sealed(&envelope)), &ids);
        assert!(d.allowed && d.warnings.is_empty(), "{d:?}");
        assert_eq!(d.reason, Reason::None);
        assert_eq!(d.concern, Concern::Setup);
    }

    #[test]
    fn credentials_sealed_to_a_key_the_operator_does_not_hold_are_a_warning() {
        let envelope = envelope(&keyring());
        let d = validate(&SecretRequest::create(alice(), sealed(&envelope)));
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].starts_with("data.sealed: sealed to key"),
            "{d:?}"
        );
    }

    #[test]
    fn a_malformed_envelope_is_denied() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"version":1,"keyId":"k","enc":"AAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
            br#"{"version":2,"keyId":"k","enc":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
        ] {
            let d = validate(&SecretRequest::create(alice(), sealed(bad)));
            assert_eq!(d.reason, Reason::MalformedEnvelope, "{bad:?}");
        }
    }

    #[test]
    fn a_credentials_secret_without_an_envelope_is_denied() {
        let secret = SecretView::test("acme-us-lwa")
            .of_type(LWA_CREDENTIALS_SECRET_TYPE)
            .with_role(ROLE_LWA_CREDENTIALS);
        let d = validate(&SecretRequest::create(alice(), secret));
        assert_eq!(d.reason, Reason::MissingEnvelope);
        assert!(
            d.message.starts_with("data.sealed: missing"),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_credentials_secret_needs_its_type_and_role_label() {
        let envelope = envelope(&keyring());
        let secret = SecretView::test("acme-us-lwa").with_data(SEALED_KEY, &envelope);
        let d = validate(&SecretRequest::create(alice(), secret));
        assert_eq!(d.reason, Reason::WrongSecretType);
        let messages: Vec<&str> = d.message.split("; ").collect();
        assert_eq!(messages.len(), 2, "{}", d.message);
        assert!(messages[0].starts_with("type: a credentials Secret must have type"));
        assert!(messages[1].starts_with(
            "metadata.labels[\"connectors.openteam.io/secret-role\"]: a credentials Secret must be \
             labelled"
        ));
    }

    #[test]
    fn a_key_that_is_neither_sealed_nor_an_intake_key_is_denied_naming_it() {
        let secret = sealed(b"{}").with_data("extra", b"x");
        let d = validate(&SecretRequest::create(alice(), secret));
        assert_eq!(d.reason, Reason::InvalidIntake);
        assert!(
            d.message.starts_with("data.extra: not a credentials key"),
            "{}",
            d.message
        );
    }

    #[test]
    fn plaintext_reaching_validation_is_denied() {
        let secret = sealed(b"{}").with_data("refreshToken", REFRESH_TOKEN);
        let d = validate(&SecretRequest::update(alice(), sealed(b"{}"), secret));
        assert_eq!(d.reason, Reason::PlaintextCredentials);
        assert!(d.message.starts_with("data.refreshToken: plaintext"));
        assert_no_plaintext(&d);
    }

    #[test]
    fn plaintext_in_the_last_applied_configuration_reaching_validation_is_denied() {
        // `kubectl apply set-last-applied`, or a credentials-typed Secret without the role
        // label (the mutating webhook never sees it): nothing scrubbed the annotation.
        let applied =
            r#"{"kind":"Secret","stringData":{"refreshToken":"Atzr|IwEBIPlaintextRefresh"}}"#;
        let annotations =
            BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), applied.to_owned())]);
        let secret = SecretView {
            annotations: &annotations,
            ..sealed(b"{}")
        };
        let d = validate(&SecretRequest::create(alice(), secret));
        assert_eq!(d.reason, Reason::PlaintextCredentials, "{d:?}");
        assert!(
            d.message.starts_with(&format!(
                "metadata.annotations[{LAST_APPLIED_ANNOTATION:?}]: holds plaintext LWA \
                 credentials (stringData.refreshToken)"
            )),
            "{}",
            d.message
        );
        assert_no_plaintext(&d);
        // Scrubbed, it passes.
        let scrubbed = BTreeMap::from([(
            LAST_APPLIED_ANNOTATION.to_owned(),
            r#"{"kind":"Secret","type":"Opaque"}"#.to_owned(),
        )]);
        let ring = keyring();
        let envelope = envelope(&ring);
        let secret = SecretView {
            annotations: &scrubbed,
            ..sealed(&envelope)
        };
        let ids = vec![ring.active().id().to_owned()];
        let d = validate_with_keys(&SecretRequest::create(alice(), secret), &ids);
        assert!(d.allowed, "{d:?}");
    }
}
