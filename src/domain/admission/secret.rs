//! The Secret rules: runtime Secrets and token stores are the operator's alone; credentials
//! Secrets belong to the namespace's Team and hold exactly one sealed envelope. Sealing a
//! plaintext intake is [`super::intake`]'s.

use std::collections::BTreeMap;
use std::fmt;

use super::intake::{INTAKE_KEYS, envelope_key_id, seal_intake};
use super::{
    Concern, ConnectionFacts, Decision, Findings, Lookup, Operation, Policy, Reason, Requester,
};
use super::{is_cleanup, verb};
use crate::crypto::PublicKey;
use crate::names::{
    CONNECTION_LABEL, LWA_CREDENTIALS_SECRET_TYPE, ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN,
    ROLE_TOKEN_STORE, RUNTIME_SECRET_TYPE, SEALED_KEY, SECRET_ROLE_LABEL, TOKEN_STORE_SECRET_TYPE,
};

/// A Secret as the rules see it. `data` holds `data` and `stringData` merged (the API server
/// merges them the same way), so its values may be plaintext credentials: `Debug` prints the
/// keys only.
#[derive(Clone)]
pub struct SecretView<'a> {
    /// `metadata.name` (empty when only `generateName` is set).
    pub name: &'a str,
    /// `type`.
    pub type_: Option<&'a str>,
    /// `metadata.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// Every data key with its value.
    pub data: BTreeMap<&'a str, &'a [u8]>,
    /// Whether the object carries a `stringData` field.
    pub has_string_data: bool,
}

impl fmt::Debug for SecretView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretView")
            .field("name", &self.name)
            .field("type", &self.type_)
            .field("labels", &self.labels)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretView<'_> {
    pub(super) fn role(&self) -> Option<&str> {
        self.labels.get(SECRET_ROLE_LABEL).map(String::as_str)
    }
}

/// A request about a Secret.
#[derive(Clone, Debug)]
pub struct SecretRequest<'a> {
    /// The Secret's namespace.
    pub namespace: &'a str,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The new object (create, update).
    pub object: Option<SecretView<'a>>,
    /// The stored object (update, delete).
    pub old: Option<SecretView<'a>>,
}

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
