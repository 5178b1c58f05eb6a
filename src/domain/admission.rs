//! Admission rules: who may create, change or delete connections, credentials, runtime Secrets,
//! Team bindings and review records, and which pods may use a connection's runtime Secret.
//!
//! Plain types in, a [`Decision`] out. The webhook converts `AdmissionReview` objects into the
//! views below and reads cluster state (namespace Team labels, connections, labelled Secrets)
//! through the [`Lookup`] trait, so every rule is tested here with a fake cluster.
//!
//! Messages name the field and the rule and never contain a secret value: plaintext intake
//! values are only ever passed to [`crypto::seal`], never formatted.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::validation::{self, RUNTIME_SECRET_SUFFIX, SpecView, TOKEN_STORE_SUFFIX};
use crate::crypto::{self, Credentials, PublicKey, SealContext, SecretString};
use crate::names::{
    CONNECTION_LABEL, GATEWAY_LABEL, LWA_CREDENTIALS_SECRET_TYPE, ROLE_LWA_CREDENTIALS,
    ROLE_RUNTIME_TOKEN, ROLE_TOKEN_STORE, RUNTIME_SECRET_TYPE, SEALED_KEY, SECRET_ROLE_LABEL,
    TEAM_LABEL, TOKEN_STORE_SECRET_TYPE,
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

/// Kubernetes identities that delete dependants when their owner or namespace goes away. They
/// may delete (never create or change) protected objects, or namespaces could not be removed.
pub const CLEANUP_IDENTITIES: [&str; 3] = [
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:kube-controller-manager",
];

/// Who may do what: the groups and identities the rules recognise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Members of Team `t` are in group `<team_group_prefix><t>`.
    pub team_group_prefix: String,
    /// Groups that may act for any Team and set namespace Team labels.
    pub admin_groups: Vec<String>,
    /// Groups that may record security log reviews.
    pub reviewer_groups: Vec<String>,
    /// The operator's user name, `system:serviceaccount:<namespace>:<name>`.
    pub operator_username: String,
}

impl Policy {
    /// The user name Kubernetes gives a ServiceAccount.
    pub fn service_account_username(namespace: &str, name: &str) -> String {
        format!("system:serviceaccount:{namespace}:{name}")
    }

    fn is_admin(&self, requester: &Requester<'_>) -> bool {
        requester
            .groups
            .iter()
            .any(|g| self.admin_groups.iter().any(|a| a == g))
    }

    fn is_operator(&self, requester: &Requester<'_>) -> bool {
        requester.username == self.operator_username
    }

    fn is_reviewer(&self, requester: &Requester<'_>) -> bool {
        requester
            .groups
            .iter()
            .any(|g| self.reviewer_groups.iter().any(|r| r == g))
    }

    fn is_member(&self, requester: &Requester<'_>, team: &str) -> bool {
        requester.groups.iter().any(|g| {
            g.strip_prefix(self.team_group_prefix.as_str())
                .is_some_and(|t| t == team)
        })
    }

    /// Team member, admin or the operator.
    fn may_act_for(&self, requester: &Requester<'_>, team: Option<&str>) -> bool {
        self.is_admin(requester)
            || self.is_operator(requester)
            || team.is_some_and(|t| self.is_member(requester, t))
    }
}

fn is_cleanup(requester: &Requester<'_>, operation: Operation) -> bool {
    operation == Operation::Delete && CLEANUP_IDENTITIES.contains(&requester.username)
}

/// Who is asking, as the API server authenticated them.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// The user name (`alice@example.com`, `system:serviceaccount:ns:name`).
    pub username: &'a str,
    /// Every group the user is in.
    pub groups: &'a [String],
}

/// The admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// The object is being created.
    Create,
    /// The object (or a subresource) is being changed.
    Update,
    /// The object is being deleted.
    Delete,
    /// A connect request (exec, port-forward); no rule concerns it.
    Connect,
}

impl Operation {
    /// The operation as the API server spells it, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// An `AmazonSellerConnection` as the rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// `metadata.name`.
    pub name: String,
    /// `spec.teamId`.
    pub team_id: String,
    /// `spec.gateways`.
    pub gateways: Vec<String>,
    /// `spec.credentialsSecretName`.
    pub credentials_secret_name: String,
}

impl ConnectionFacts {
    /// The name of this connection's runtime Secret.
    pub fn runtime_secret_name(&self) -> String {
        format!("{}{RUNTIME_SECRET_SUFFIX}", self.name)
    }

    /// The name of this connection's sealed token store.
    pub fn token_store_name(&self) -> String {
        format!("{}{TOKEN_STORE_SUFFIX}", self.name)
    }
}

/// The labels of an existing operator-managed Secret (one carrying the secret-role label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFacts {
    /// The `connectors.openteam.io/secret-role` label.
    pub role: String,
    /// The `connectors.openteam.io/connection` label, if any.
    pub connection: Option<String>,
}

/// Read access to the cluster state the rules need.
pub trait Lookup {
    /// The `connectors.openteam.io/team` label of a namespace; `None` when unlabelled or unknown.
    fn namespace_team(&self, namespace: &str) -> Option<String>;
    /// Every connection in a namespace.
    fn connections(&self, namespace: &str) -> Vec<ConnectionFacts>;
    /// An existing Secret that carries the secret-role label.
    fn secret(&self, namespace: &str, name: &str) -> Option<SecretFacts>;
}

/// What the decision is about, which decides its audit category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concern {
    /// Decided on who asked (team membership, operator, admin, reviewer).
    Identity,
    /// A pod's use of a connection's runtime Secret, or a gateway pod.
    Gateway,
    /// Connections, sealed credentials, runtime Secrets and Team bindings.
    Setup,
    /// An object outside the operator's concern; metered, not audited.
    Unrelated,
}

/// The objects a decision concerns, for the audit record. Identifiers only, never values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The namespace's Team.
    pub team: Option<String>,
    /// The connection concerned.
    pub connection: Option<String>,
    /// The pod's gateway label.
    pub gateway: Option<String>,
    /// Whether a pod referenced a connection's runtime Secret.
    pub runtime_access: bool,
}

/// A change the mutating webhook makes.
#[derive(Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Replace the Secret's data with `{sealed: envelope}`, set its type to
    /// `connectors.openteam.io/lwa-credentials` and drop `stringData`.
    SealCredentials {
        /// The sealed envelope (ciphertext, not secret).
        envelope: Vec<u8>,
        /// Whether the object has a `stringData` field to remove.
        remove_string_data: bool,
    },
}

impl fmt::Debug for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::SealCredentials {
                envelope,
                remove_string_data,
            } => f
                .debug_struct("SealCredentials")
                .field("envelope_bytes", &envelope.len())
                .field("remove_string_data", remove_string_data)
                .finish(),
        }
    }
}

/// The answer to one admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// A bounded rule name, for metrics and the audit log (`"none"` when allowed as is).
    pub reason: &'static str,
    /// For a denial: every violated rule, each naming its field. Empty when allowed.
    pub message: String,
    /// Soft issues the requester should know about.
    pub warnings: Vec<String>,
    /// A change to make to the object (mutating webhook only).
    pub patch: Option<Mutation>,
    /// What the decision is about.
    pub concern: Concern,
    /// The Team, connection and gateway concerned.
    pub subject: Subject,
}

impl Decision {
    fn allow(reason: &'static str, concern: Concern) -> Self {
        Self {
            allowed: true,
            reason,
            message: String::new(),
            warnings: Vec::new(),
            patch: None,
            concern,
            subject: Subject::default(),
        }
    }

    fn deny(reason: &'static str, message: impl Into<String>, concern: Concern) -> Self {
        Self {
            allowed: false,
            reason,
            message: message.into(),
            ..Self::allow(reason, concern)
        }
    }

    fn team(mut self, team: Option<&str>) -> Self {
        self.subject.team = team.map(str::to_owned);
        self
    }

    fn connection(mut self, connection: Option<&str>) -> Self {
        self.subject.connection = connection.map(str::to_owned);
        self
    }
}

/// One rule violation: its bounded reason and its message (field first).
struct Violation {
    reason: &'static str,
    message: String,
}

/// Denies with every violation (the first one's reason), or `None` when there is none.
fn deny_all(violations: Vec<Violation>, concern: Concern) -> Option<Decision> {
    let reason = violations.first()?.reason;
    let message = violations
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Some(Decision::deny(reason, message, concern))
}

fn team_label_field() -> String {
    format!("metadata.labels[{TEAM_LABEL:?}]")
}

// ---------------------------------------------------------------------------------------------
// AmazonSellerConnection
// ---------------------------------------------------------------------------------------------

/// A request about an `AmazonSellerConnection`.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionRequest<'a> {
    /// The connection's namespace.
    pub namespace: &'a str,
    /// The connection's name.
    pub name: &'a str,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The new spec (create, update).
    pub object: Option<SpecView<'a>>,
    /// The stored spec (update, delete).
    pub old: Option<SpecView<'a>>,
    /// Whether an update changes the spec (a metadata-only update such as removing a finalizer
    /// is not re-validated, so old objects can always be cleaned up).
    pub spec_changed: bool,
}

/// The connection rules: the requester acts for the namespace's Team; `spec.teamId` is that
/// Team; the spec passes [`validation::validate_spec`] and [`validation::validate_update`];
/// `spec.credentialsSecretName` names no runtime Secret (a missing Secret is only a warning).
pub fn admit_connection(
    policy: &Policy,
    lookup: &dyn Lookup,
    request: &ConnectionRequest<'_>,
) -> Decision {
    let team = lookup.namespace_team(request.namespace);
    let subject = |d: Decision| d.team(team.as_deref()).connection(Some(request.name));
    let requester = &request.requester;

    if is_cleanup(requester, request.operation) {
        return subject(Decision::allow("cleanup", Concern::Setup));
    }
    let metadata_only = request.operation == Operation::Update && !request.spec_changed;
    let Some(team_id) = team.as_deref() else {
        // The operator must still be able to remove its finalizer (and an admin to clean up)
        // after a namespace lost its Team label.
        if (request.operation == Operation::Delete || metadata_only)
            && (policy.is_admin(requester) || policy.is_operator(requester))
        {
            return subject(Decision::allow("none", Concern::Setup));
        }
        return subject(Decision::deny(
            "namespace_not_bound",
            format!(
                "metadata.namespace: namespace {:?} has no {TEAM_LABEL} label: connections live \
                 only in a Team's namespace (an admin sets the label)",
                request.namespace
            ),
            Concern::Setup,
        ));
    };
    if !policy.may_act_for(requester, Some(team_id)) {
        return subject(Decision::deny(
            "not_team_member",
            format!(
                "{:?} is not a member of team {team_id:?} (group \"{}{team_id}\"): only the \
                 namespace's Team, admins or the operator may {} AmazonSellerConnections",
                requester.username,
                policy.team_group_prefix,
                verb(request.operation)
            ),
            Concern::Identity,
        ));
    }
    let Some(spec) = request.object else {
        return subject(Decision::allow("none", Concern::Setup));
    };
    if metadata_only {
        return subject(Decision::allow("none", Concern::Setup));
    }

    let mut violations = Vec::new();
    if let Some(old) = &request.old {
        for error in validation::validate_update(old, &spec) {
            violations.push(Violation {
                reason: "immutable_field",
                message: error.to_string(),
            });
        }
    }
    if spec.team_id != team_id {
        violations.push(Violation {
            reason: "team_mismatch",
            message: format!(
                "spec.teamId: {:?} must equal the namespace's team {team_id:?} (label {TEAM_LABEL})",
                spec.team_id
            ),
        });
    }
    for error in validation::validate_spec(&spec) {
        violations.push(Violation {
            reason: "invalid_spec",
            message: error.to_string(),
        });
    }
    let credentials = lookup.secret(request.namespace, spec.credentials_secret_name);
    let mut warnings = Vec::new();
    match credentials.as_ref().map(|s| s.role.as_str()) {
        Some(ROLE_LWA_CREDENTIALS) => {}
        Some(ROLE_RUNTIME_TOKEN) => violations.push(Violation {
            reason: "credentials_secret_conflict",
            message: format!(
                "spec.credentialsSecretName: {:?} is a runtime Secret, not sealed credentials",
                spec.credentials_secret_name
            ),
        }),
        _ => warnings.push(format!(
            "spec.credentialsSecretName: Secret {:?} does not exist yet (or is not labelled \
             {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}); the connection is not Ready until it does",
            spec.credentials_secret_name
        )),
    }
    if let Some(denied) = deny_all(violations, Concern::Setup) {
        return subject(denied);
    }
    let mut decision = Decision::allow("none", Concern::Setup);
    decision.warnings = warnings;
    subject(decision)
}

fn verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Update => "change",
        Operation::Delete => "delete",
        Operation::Connect => "connect to",
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

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
    fn role(&self) -> Option<&str> {
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

fn classify_secret(
    secret: &SecretView<'_>,
    connections: &[ConnectionFacts],
) -> (SecretClass, Option<String>) {
    let by_label = secret.labels.get(CONNECTION_LABEL).cloned();
    if secret.role() == Some(ROLE_TOKEN_STORE) || secret.type_ == Some(TOKEN_STORE_SECRET_TYPE) {
        return (SecretClass::TokenStore, by_label);
    }
    if let Some(c) = connections
        .iter()
        .find(|c| c.token_store_name() == secret.name)
    {
        return (SecretClass::TokenStore, Some(c.name.clone()));
    }
    if secret.role() == Some(ROLE_RUNTIME_TOKEN) || secret.type_ == Some(RUNTIME_SECRET_TYPE) {
        return (SecretClass::Runtime, by_label);
    }
    if let Some(c) = connections
        .iter()
        .find(|c| c.runtime_secret_name() == secret.name)
    {
        return (SecretClass::Runtime, Some(c.name.clone()));
    }
    if secret.role() == Some(ROLE_LWA_CREDENTIALS)
        || secret.type_ == Some(LWA_CREDENTIALS_SECRET_TYPE)
    {
        let named_by = connections
            .iter()
            .find(|c| c.credentials_secret_name == secret.name)
            .map(|c| c.name.clone());
        return (SecretClass::Credentials, by_label.or(named_by));
    }
    if let Some(c) = connections
        .iter()
        .find(|c| c.credentials_secret_name == secret.name)
    {
        return (SecretClass::Credentials, Some(c.name.clone()));
    }
    (SecretClass::Unrelated, None)
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
    let mutating = matches!(phase, Phase::Mutate(_));
    let subject = |d: Decision| d.team(team.as_deref()).connection(connection.as_deref());

    if class == SecretClass::Unrelated {
        return Decision::allow("unrelated", Concern::Unrelated);
    }
    if is_cleanup(requester, request.operation) {
        return subject(Decision::allow("cleanup", Concern::Setup));
    }
    if matches!(class, SecretClass::Runtime | SecretClass::TokenStore) {
        let what = if class == SecretClass::Runtime {
            "runtime Secret"
        } else {
            "token store"
        };
        if !policy.is_operator(requester) {
            return subject(Decision::deny(
                "not_operator",
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
        // The validating pass records the operator's write; the mutating pass stays quiet so
        // that one request makes one audit record.
        let concern = if mutating {
            Concern::Unrelated
        } else {
            Concern::Setup
        };
        return subject(Decision::allow("none", concern));
    }

    // Credentials Secrets.
    if !policy.may_act_for(requester, team.as_deref()) {
        let team_text = team
            .as_deref()
            .map_or("no team".to_owned(), |t| format!("team {t:?}"));
        return subject(Decision::deny(
            "not_team_member",
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
        let concern = if mutating {
            Concern::Unrelated
        } else {
            Concern::Setup
        };
        return subject(Decision::allow("none", concern));
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
            "invalid_intake",
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
                "plaintext_credentials",
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
        return Decision::allow("none", Concern::Unrelated);
    };
    let mut violations = Vec::new();
    if secret.type_ != Some(LWA_CREDENTIALS_SECRET_TYPE) {
        violations.push(Violation {
            reason: "wrong_secret_type",
            message: format!(
                "type: a credentials Secret must have type {LWA_CREDENTIALS_SECRET_TYPE:?}, not {:?}",
                secret.type_.unwrap_or("Opaque")
            ),
        });
    }
    if secret.role() != Some(ROLE_LWA_CREDENTIALS) {
        violations.push(Violation {
            reason: "missing_role_label",
            message: format!(
                "metadata.labels[{SECRET_ROLE_LABEL:?}]: a credentials Secret must be labelled \
                 {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"
            ),
        });
    }
    let mut warnings = Vec::new();
    match secret.data.get(SEALED_KEY) {
        None => violations.push(Violation {
            reason: "missing_envelope",
            message: format!(
                "data.{SEALED_KEY}: missing: a credentials Secret holds exactly one key, \
                 {SEALED_KEY:?}, with the sealed envelope"
            ),
        }),
        Some(envelope) => match envelope_key_id(envelope) {
            Err(why) => violations.push(Violation {
                reason: "malformed_envelope",
                message: format!(
                    "data.{SEALED_KEY}: not a sealed envelope ({why}): seal credentials with \
                     `amazon-seller-operator seal` or through an intake Secret"
                ),
            }),
            Ok(key_id) if !key_ids.contains(&key_id) => warnings.push(format!(
                "data.{SEALED_KEY}: sealed to key {key_id:?}, which the operator does not hold: \
                 the connection cannot use these credentials"
            )),
            Ok(_) => {}
        },
    }
    if let Some(denied) = deny_all(violations, Concern::Setup) {
        return denied;
    }
    let mut decision = Decision::allow("none", Concern::Setup);
    decision.warnings = warnings;
    decision
}

fn seal_intake(
    request: &SecretRequest<'_>,
    secret: &SecretView<'_>,
    team: Option<&str>,
    key: &PublicKey,
) -> Decision {
    let deny = |reason, message: String| Decision::deny(reason, message, Concern::Setup);
    if secret.role() != Some(ROLE_LWA_CREDENTIALS) {
        return deny(
            "missing_role_label",
            format!(
                "metadata.labels[{SECRET_ROLE_LABEL:?}]: plaintext credentials are sealed only in a \
                 Secret labelled {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}"
            ),
        );
    }
    if secret.name.is_empty() {
        return deny(
            "name_required",
            "metadata.name: required for a credentials intake (generateName cannot be used): the \
             sealed value is bound to the Secret's name"
                .to_owned(),
        );
    }
    if let Some(old) = &request.old
        && old.type_ != Some(LWA_CREDENTIALS_SECRET_TYPE)
    {
        return deny(
            "type_immutable",
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
            "incomplete_intake",
            format!(
                "data.{first}: missing: a credentials intake needs {} (missing: {})",
                REQUIRED_INTAKE_KEYS.join(", "),
                missing.join(", ")
            ),
        );
    }
    let Some(team) = team else {
        return deny(
            "namespace_not_bound",
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
        Err(message) => return deny("invalid_intake", message),
    };
    // `check` names the input and never echoes its value.
    if let Err(err) = credentials.check([
        "data.clientId",
        "data.clientSecret",
        "data.refreshToken",
        "data.nextClientSecret",
    ]) {
        return deny("invalid_intake", err.to_string());
    }
    let context = SealContext {
        team_id: team,
        namespace: request.namespace,
        secret_name: secret.name,
    };
    match crypto::seal(key, &context, &credentials) {
        Ok(envelope) => {
            let mut decision = Decision::allow("sealed_intake", Concern::Setup);
            decision.patch = Some(Mutation::SealCredentials {
                envelope,
                remove_string_data: secret.has_string_data,
            });
            decision
        }
        Err(_) => deny(
            "seal_failed",
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

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

/// How a pod refers to a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A `secret` volume.
    Volume,
    /// A `projected` volume source.
    ProjectedVolume,
    /// `env[].valueFrom.secretKeyRef`.
    EnvValueFrom,
    /// `envFrom[].secretRef`.
    EnvFrom,
    /// `imagePullSecrets[]`.
    ImagePullSecret,
    /// A volume driver's credentials (`csi.nodePublishSecretRef`, `rbd.secretRef`, …).
    VolumeDriver,
}

/// One reference from a pod to a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// The field path, e.g. `spec.initContainers[0].env[1].valueFrom.secretKeyRef`.
    pub field: String,
    /// The Secret's name.
    pub secret: String,
    /// How it is referenced.
    pub kind: ReferenceKind,
    /// For volume references: the volume's name.
    pub volume: Option<String>,
}

/// One volume mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The field path, e.g. `spec.containers[0].volumeMounts[1]`.
    pub field: String,
    /// The mounted volume.
    pub volume: String,
    /// Whether the mount uses `subPath` or `subPathExpr`.
    pub sub_path: bool,
}

/// A pod as the rules see it: its gateway label and every Secret reference in containers,
/// init containers, ephemeral containers and volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// The `connectors.openteam.io/gateway` label.
    pub gateway: Option<String>,
    /// Every reference to a Secret.
    pub references: Vec<SecretReference>,
    /// Every volume mount.
    pub mounts: Vec<VolumeMount>,
}

/// A request about a pod (create, update, or the `ephemeralcontainers` subresource).
#[derive(Clone, Debug)]
pub struct PodRequest<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The pod as it will be.
    pub pod: &'a PodView,
}

enum Referenced {
    Runtime {
        connection: Option<ConnectionFacts>,
        label: Option<String>,
    },
    Credentials,
    TokenStore,
    Other,
}

fn referenced(
    namespace: &str,
    name: &str,
    connections: &[ConnectionFacts],
    lookup: &dyn Lookup,
) -> Referenced {
    if connections.iter().any(|c| c.token_store_name() == name) {
        return Referenced::TokenStore;
    }
    if let Some(c) = connections.iter().find(|c| c.runtime_secret_name() == name) {
        return Referenced::Runtime {
            connection: Some(c.clone()),
            label: Some(c.name.clone()),
        };
    }
    match lookup.secret(namespace, name) {
        Some(facts) if facts.role == ROLE_RUNTIME_TOKEN => {
            let connection = facts
                .connection
                .as_ref()
                .and_then(|n| connections.iter().find(|c| &c.name == n).cloned());
            return Referenced::Runtime {
                connection,
                label: facts.connection,
            };
        }
        Some(facts) if facts.role == ROLE_LWA_CREDENTIALS => return Referenced::Credentials,
        Some(facts) if facts.role == ROLE_TOKEN_STORE => return Referenced::TokenStore,
        _ => {}
    }
    if connections
        .iter()
        .any(|c| c.credentials_secret_name == name)
    {
        return Referenced::Credentials;
    }
    Referenced::Other
}

/// The pod rules: every reference to a runtime Secret requires the pod's gateway label to be
/// listed in that connection's `spec.gateways`, and must be a whole-volume mount (`env`,
/// `envFrom` and `subPath` never see a refreshed token); no pod may reference sealed
/// credentials or a sealed token store.
pub fn admit_pod(lookup: &dyn Lookup, request: &PodRequest<'_>) -> Decision {
    let pod = request.pod;
    let connections = lookup.connections(request.namespace);
    let team = lookup.namespace_team(request.namespace);
    let mut violations = Vec::new();
    let mut runtime_connection: Option<String> = None;
    let mut checked_gateways: Vec<String> = Vec::new();
    let mut references_credentials = false;

    for reference in &pod.references {
        match referenced(request.namespace, &reference.secret, &connections, lookup) {
            Referenced::Other => {}
            Referenced::Credentials => {
                references_credentials = true;
                violations.push(Violation {
                    reason: "sealed_secret_reference",
                    message: format!(
                        "{}: Secret {:?} holds sealed LWA credentials: no pod may use them (gateways \
                         mount the runtime Secret <connection>{RUNTIME_SECRET_SUFFIX})",
                        reference.field, reference.secret
                    ),
                });
            }
            Referenced::TokenStore => {
                references_credentials = true;
                violations.push(Violation {
                    reason: "sealed_secret_reference",
                    message: format!(
                        "{}: Secret {:?} is a connection's sealed token store: no pod may use it \
                         (gateways call the runtime credential endpoint, or mount the runtime \
                         Secret <connection>{RUNTIME_SECRET_SUFFIX})",
                        reference.field, reference.secret
                    ),
                });
            }
            Referenced::Runtime { connection, label } => {
                if runtime_connection.is_none() {
                    runtime_connection = label.clone();
                }
                match reference.kind {
                    ReferenceKind::EnvValueFrom | ReferenceKind::EnvFrom => {
                        violations.push(Violation {
                            reason: "env_reference",
                            message: format!(
                                "{}: runtime Secret {:?} may only be mounted as a volume: \
                                 environment variables never see a refreshed token",
                                reference.field, reference.secret
                            ),
                        });
                    }
                    ReferenceKind::ImagePullSecret | ReferenceKind::VolumeDriver => {
                        violations.push(Violation {
                            reason: "unsupported_reference",
                            message: format!(
                                "{}: runtime Secret {:?} may only be mounted as a secret or \
                                 projected volume",
                                reference.field, reference.secret
                            ),
                        });
                    }
                    ReferenceKind::Volume | ReferenceKind::ProjectedVolume => {
                        for mount in pod.mounts.iter().filter(|m| {
                            m.sub_path && Some(m.volume.as_str()) == reference.volume.as_deref()
                        }) {
                            violations.push(Violation {
                                reason: "sub_path_mount",
                                message: format!(
                                    "{}.subPath: volume {:?} holds runtime Secret {:?}: subPath \
                                     mounts never see a refreshed token; mount the whole volume",
                                    mount.field, mount.volume, reference.secret
                                ),
                            });
                        }
                    }
                }
                let key = label.clone().unwrap_or_default();
                if checked_gateways.contains(&key) {
                    continue;
                }
                checked_gateways.push(key);
                if let Some(v) = gateway_violation(pod, reference, connection.as_ref(), label) {
                    violations.push(v);
                }
            }
        }
    }

    let concern = if runtime_connection.is_some() || references_credentials || pod.gateway.is_some()
    {
        Concern::Gateway
    } else {
        Concern::Unrelated
    };
    let mut decision = match deny_all(violations, concern) {
        Some(denied) => denied,
        None => Decision::allow("none", concern),
    };
    decision.subject = Subject {
        team,
        connection: runtime_connection.clone(),
        gateway: pod.gateway.clone(),
        runtime_access: !checked_gateways.is_empty(),
    };
    decision
}

fn gateway_violation(
    pod: &PodView,
    reference: &SecretReference,
    connection: Option<&ConnectionFacts>,
    label: Option<String>,
) -> Option<Violation> {
    let Some(connection) = connection else {
        return Some(Violation {
            reason: "unknown_connection",
            message: format!(
                "{}: Secret {:?} is a runtime Secret of connection {:?}, which does not exist: no \
                 gateway may use it",
                reference.field,
                reference.secret,
                label.unwrap_or_default()
            ),
        });
    };
    let listed = connection.gateways.join(", ");
    match pod.gateway.as_deref() {
        None => Some(Violation {
            reason: "missing_gateway_label",
            message: format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: missing: only pods of a gateway listed in \
                 connection {:?} spec.gateways ({listed}) may use runtime Secret {:?} ({})",
                connection.name, reference.secret, reference.field
            ),
        }),
        Some(gateway) if !connection.gateways.iter().any(|g| g == gateway) => Some(Violation {
            reason: "gateway_not_listed",
            message: format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: gateway {gateway:?} is not listed in \
                 connection {:?} spec.gateways ({listed}), so it may not use runtime Secret {:?} \
                 ({})",
                connection.name, reference.secret, reference.field
            ),
        }),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// A request about a namespace: its Team label before and after.
#[derive(Clone, Copy, Debug)]
pub struct NamespaceRequest<'a> {
    /// The namespace's name.
    pub name: &'a str,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The Team label of the new object.
    pub team: Option<&'a str>,
    /// The Team label of the stored object.
    pub old_team: Option<&'a str>,
}

/// The namespace rule: only admins set, change or remove the Team label, and its value is a
/// valid team id.
pub fn admit_namespace(policy: &Policy, request: &NamespaceRequest<'_>) -> Decision {
    let changed = match request.operation {
        Operation::Create => request.team.is_some(),
        Operation::Update => request.team != request.old_team,
        Operation::Delete | Operation::Connect => false,
    };
    let subject_team = request.team.or(request.old_team);
    if !changed {
        return Decision::allow("unrelated", Concern::Unrelated).team(subject_team);
    }
    if !policy.is_admin(&request.requester) {
        let what = match (request.old_team, request.team) {
            (_, None) => "remove",
            (None, Some(_)) => "set",
            (Some(_), Some(_)) => "change",
        };
        return Decision::deny(
            "not_admin",
            format!(
                "{}: {:?} may not {what} the Team label of namespace {:?}: only admins (groups {}) \
                 bind namespaces to Teams",
                team_label_field(),
                request.requester.username,
                request.name,
                policy.admin_groups.join(", ")
            ),
            Concern::Identity,
        )
        .team(subject_team);
    }
    if let Some(team) = request.team
        && let Err(why) = validation::check_dns_label("team id", team)
    {
        return Decision::deny(
            "invalid_team_label",
            format!("{}: {why}", team_label_field()),
            Concern::Setup,
        )
        .team(subject_team);
    }
    Decision::allow("none", Concern::Setup).team(subject_team)
}

// ---------------------------------------------------------------------------------------------
// SecurityLogReview
// ---------------------------------------------------------------------------------------------

/// A request about a `SecurityLogReview`.
#[derive(Clone, Copy, Debug)]
pub struct ReviewRequest<'a> {
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// `spec.reviewer` of the new object.
    pub reviewer: Option<&'a str>,
}

/// The review rule: only reviewers record reviews; reviewers or admins may remove one. A
/// `spec.reviewer` that is not the requester is a warning.
pub fn admit_review(policy: &Policy, request: &ReviewRequest<'_>) -> Decision {
    let requester = &request.requester;
    let allowed = match request.operation {
        Operation::Create => policy.is_reviewer(requester),
        Operation::Update | Operation::Delete => {
            policy.is_reviewer(requester) || policy.is_admin(requester)
        }
        Operation::Connect => true,
    };
    if !allowed {
        return Decision::deny(
            "not_reviewer",
            format!(
                "{:?} may not {} SecurityLogReviews: only members of the reviewer groups ({}) may",
                requester.username,
                verb(request.operation),
                policy.reviewer_groups.join(", ")
            ),
            Concern::Identity,
        );
    }
    let mut decision = Decision::allow("none", Concern::Identity);
    if let Some(reviewer) = request.reviewer
        && request.operation == Operation::Create
        && reviewer != requester.username
    {
        decision.warnings.push(format!(
            "spec.reviewer: {reviewer:?} is not the requester {:?}",
            requester.username
        ));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use std::collections::HashMap;

    const NS: &str = "team-acme";

    #[derive(Default)]
    struct Fake {
        teams: HashMap<String, String>,
        connections: Vec<(String, ConnectionFacts)>,
        secrets: HashMap<(String, String), SecretFacts>,
    }

    impl Fake {
        fn acme() -> Self {
            let mut fake = Fake::default();
            fake.teams.insert(NS.into(), "acme".into());
            fake.connections.push((
                NS.into(),
                ConnectionFacts {
                    name: "acme-us".into(),
                    team_id: "acme".into(),
                    gateways: vec!["gw-main".into()],
                    credentials_secret_name: "acme-us-lwa".into(),
                },
            ));
            fake.secrets.insert(
                (NS.into(), "acme-us-lwa".into()),
                SecretFacts {
                    role: ROLE_LWA_CREDENTIALS.into(),
                    connection: Some("acme-us".into()),
                },
            );
            fake.secrets.insert(
                (NS.into(), "acme-us-sp-api".into()),
                SecretFacts {
                    role: ROLE_RUNTIME_TOKEN.into(),
                    connection: Some("acme-us".into()),
                },
            );
            fake
        }
    }

    impl Lookup for Fake {
        fn namespace_team(&self, namespace: &str) -> Option<String> {
            self.teams.get(namespace).cloned()
        }
        fn connections(&self, namespace: &str) -> Vec<ConnectionFacts> {
            self.connections
                .iter()
                .filter(|(ns, _)| ns == namespace)
                .map(|(_, c)| c.clone())
                .collect()
        }
        fn secret(&self, namespace: &str, name: &str) -> Option<SecretFacts> {
            self.secrets
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }
    }

    fn policy() -> Policy {
        Policy {
            team_group_prefix: "openteam:team:".into(),
            admin_groups: vec!["platform-admins".into()],
            reviewer_groups: vec!["security-reviewers".into()],
            operator_username: Policy::service_account_username("aso", "amazon-seller-operator"),
        }
    }

    fn groups(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn member() -> Vec<String> {
        groups(&["system:authenticated", "openteam:team:acme"])
    }

    fn who<'a>(name: &'a str, groups: &'a [String]) -> Requester<'a> {
        Requester {
            username: name,
            groups,
        }
    }

    const OPERATOR: &str = "system:serviceaccount:aso:amazon-seller-operator";

    // --- connections

    fn spec<'a>(gateways: &'a [String]) -> SpecView<'a> {
        SpecView {
            name: "acme-us",
            team_id: "acme",
            seller_id: "A3FHEXAMPLEYWS",
            marketplace: "US",
            credentials_secret_name: "acme-us-lwa",
            gateways,
            renew_before: "20m",
        }
    }

    fn connection_request<'a>(
        requester: Requester<'a>,
        operation: Operation,
        object: Option<SpecView<'a>>,
        old: Option<SpecView<'a>>,
    ) -> ConnectionRequest<'a> {
        ConnectionRequest {
            namespace: NS,
            name: "acme-us",
            operation,
            requester,
            object,
            old,
            spec_changed: true,
        }
    }

    #[test]
    fn a_team_member_may_create_a_valid_connection() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(who("alice", &m), Operation::Create, Some(spec(&g)), None),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.subject.team.as_deref(), Some("acme"));
        assert_eq!(d.subject.connection.as_deref(), Some("acme-us"));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn a_member_of_another_team_may_not_create_update_or_delete_a_connection() {
        let g = groups(&["gw-main"]);
        let other = groups(&["openteam:team:globex"]);
        for (op, object, old) in [
            (Operation::Create, Some(spec(&g)), None),
            (Operation::Update, Some(spec(&g)), Some(spec(&g))),
            (Operation::Delete, None, Some(spec(&g))),
        ] {
            let d = admit_connection(
                &policy(),
                &Fake::acme(),
                &connection_request(who("mallory", &other), op, object, old),
            );
            assert!(!d.allowed);
            assert_eq!(d.reason, "not_team_member");
            assert_eq!(d.concern, Concern::Identity);
            assert!(d.message.contains("openteam:team:acme"), "{}", d.message);
        }
    }

    #[test]
    fn a_group_that_only_starts_like_the_team_group_is_not_a_member() {
        let g = groups(&["gw-main"]);
        let near = groups(&["openteam:team:acme-evil", "openteam:team:acm"]);
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(who("eve", &near), Operation::Create, Some(spec(&g)), None),
        );
        assert_eq!(d.reason, "not_team_member");
    }

    #[test]
    fn admins_and_the_operator_may_act_for_any_team() {
        let g = groups(&["gw-main"]);
        let admin = groups(&["platform-admins"]);
        let none = groups(&[]);
        for requester in [who("root", &admin), who(OPERATOR, &none)] {
            let d = admit_connection(
                &policy(),
                &Fake::acme(),
                &connection_request(requester, Operation::Create, Some(spec(&g)), None),
            );
            assert!(d.allowed, "{d:?}");
        }
    }

    #[test]
    fn team_id_must_equal_the_namespace_label() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(
                who("alice", &m),
                Operation::Create,
                Some(SpecView {
                    team_id: "globex",
                    ..spec(&g)
                }),
                None,
            ),
        );
        assert_eq!(d.reason, "team_mismatch");
        assert!(d.message.starts_with("spec.teamId: \"globex\" must equal"));
    }

    #[test]
    fn a_connection_in_an_unbound_namespace_is_denied() {
        let g = groups(&["gw-main"]);
        let admin = groups(&["platform-admins"]);
        let d = admit_connection(
            &policy(),
            &Fake::default(),
            &connection_request(who("root", &admin), Operation::Create, Some(spec(&g)), None),
        );
        assert_eq!(d.reason, "namespace_not_bound");
    }

    #[test]
    fn unknown_marketplace_is_denied_naming_the_field() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(
                who("alice", &m),
                Operation::Create,
                Some(SpecView {
                    marketplace: "XX",
                    ..spec(&g)
                }),
                None,
            ),
        );
        assert_eq!(d.reason, "invalid_spec");
        assert!(
            d.message
                .starts_with("spec.marketplace: unknown marketplace \"XX\" (valid: AE,"),
            "{}",
            d.message
        );
    }

    #[test]
    fn seller_id_is_immutable() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(
                who("alice", &m),
                Operation::Update,
                Some(SpecView {
                    seller_id: "B3FHEXAMPLEYWS",
                    ..spec(&g)
                }),
                Some(spec(&g)),
            ),
        );
        assert_eq!(d.reason, "immutable_field");
        assert!(d.message.starts_with("spec.sellerId: is immutable"));
    }

    #[test]
    fn a_missing_credentials_secret_is_a_warning() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(
                who("alice", &m),
                Operation::Create,
                Some(SpecView {
                    credentials_secret_name: "not-there",
                    ..spec(&g)
                }),
                None,
            ),
        );
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].starts_with("spec.credentialsSecretName: Secret \"not-there\""));
    }

    #[test]
    fn credentials_secret_name_may_not_name_a_runtime_secret() {
        let g = groups(&["gw-main"]);
        let m = member();
        let d = admit_connection(
            &policy(),
            &Fake::acme(),
            &connection_request(
                who("alice", &m),
                Operation::Create,
                Some(SpecView {
                    name: "acme-de",
                    credentials_secret_name: "acme-us-sp-api",
                    ..spec(&g)
                }),
                None,
            ),
        );
        assert_eq!(d.reason, "credentials_secret_conflict");
    }

    #[test]
    fn a_metadata_only_update_by_the_operator_is_not_revalidated() {
        let g = groups(&["gw-main"]);
        let none = groups(&[]);
        let bad = SpecView {
            marketplace: "XX",
            ..spec(&g)
        };
        let mut request = connection_request(
            who(OPERATOR, &none),
            Operation::Update,
            Some(bad),
            Some(bad),
        );
        request.spec_changed = false;
        assert!(admit_connection(&policy(), &Fake::acme(), &request).allowed);
    }

    #[test]
    fn the_operator_may_remove_its_finalizer_after_the_team_label_is_gone() {
        let g = groups(&["gw-main"]);
        let none = groups(&[]);
        let mut request = connection_request(
            who(OPERATOR, &none),
            Operation::Update,
            Some(spec(&g)),
            Some(spec(&g)),
        );
        request.spec_changed = false;
        assert!(admit_connection(&policy(), &Fake::default(), &request).allowed);
        request.spec_changed = true;
        assert_eq!(
            admit_connection(&policy(), &Fake::default(), &request).reason,
            "namespace_not_bound"
        );
    }

    #[test]
    fn the_garbage_collector_may_delete_but_not_create() {
        let g = groups(&["gw-main"]);
        let none = groups(&[]);
        let gc = CLEANUP_IDENTITIES[0];
        let delete = connection_request(who(gc, &none), Operation::Delete, None, Some(spec(&g)));
        assert!(admit_connection(&policy(), &Fake::acme(), &delete).allowed);
        let create = connection_request(who(gc, &none), Operation::Create, Some(spec(&g)), None);
        assert_eq!(
            admit_connection(&policy(), &Fake::acme(), &create).reason,
            "not_team_member"
        );
    }

    // --- secrets

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn view<'a>(
        name: &'a str,
        type_: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
        data: &[(&'a str, &'a [u8])],
    ) -> SecretView<'a> {
        SecretView {
            name,
            type_,
            labels,
            data: data.iter().copied().collect(),
            has_string_data: false,
        }
    }

    fn secret_request<'a>(
        requester: Requester<'a>,
        operation: Operation,
        object: Option<SecretView<'a>>,
        old: Option<SecretView<'a>>,
    ) -> SecretRequest<'a> {
        SecretRequest {
            namespace: NS,
            operation,
            requester,
            object,
            old,
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    const CLIENT_ID: &[u8] = b"amzn1.application-oa2-client.0123abcd";
    const CLIENT_SECRET: &[u8] = b"amzn1.oa2-cs.v1.topsecretvalue";
    const REFRESH_TOKEN: &[u8] = b"Atzr|IwEBIPlaintextRefresh";

    fn intake_labels() -> BTreeMap<String, String> {
        labels(&[(SECRET_ROLE_LABEL, ROLE_LWA_CREDENTIALS)])
    }

    fn assert_no_plaintext(decision: &Decision) {
        let text = format!("{decision:?}");
        for needle in ["topsecretvalue", "PlaintextRefresh", "0123abcd"] {
            assert!(!text.contains(needle), "{needle} leaked: {text}");
        }
    }

    #[test]
    fn a_complete_intake_is_sealed_for_the_namespace_team() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let l = intake_labels();
        let m = member();
        let secret = view(
            "acme-us-lwa",
            Some("Opaque"),
            &l,
            &[
                ("clientId", CLIENT_ID),
                ("clientSecret", CLIENT_SECRET),
                ("refreshToken", REFRESH_TOKEN),
                ("clientSecretExpiresAt", b"2026-11-12T00:00:00Z"),
            ],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Create, Some(secret), None),
            Phase::Mutate(&key),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, "sealed_intake");
        assert_no_plaintext(&d);
        let Some(Mutation::SealCredentials { envelope, .. }) = d.patch else {
            panic!("no patch");
        };
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
    fn an_incomplete_intake_is_denied_naming_the_missing_key() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let l = intake_labels();
        let m = member();
        let secret = view(
            "acme-us-lwa",
            None,
            &l,
            &[("clientId", CLIENT_ID), ("clientSecret", CLIENT_SECRET)],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Create, Some(secret), None),
            Phase::Mutate(&key),
        );
        assert_eq!(d.reason, "incomplete_intake");
        assert!(
            d.message.starts_with("data.refreshToken: missing"),
            "{}",
            d.message
        );
        assert_no_plaintext(&d);
    }

    #[test]
    fn a_malformed_intake_value_is_named_without_its_value() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let l = intake_labels();
        let m = member();
        let secret = view(
            "acme-us-lwa",
            None,
            &l,
            &[
                ("clientId", CLIENT_ID),
                ("clientSecret", CLIENT_SECRET),
                ("refreshToken", b"Atza|topsecretvalue-wrong-kind"),
            ],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Create, Some(secret), None),
            Phase::Mutate(&key),
        );
        assert_eq!(d.reason, "invalid_intake");
        assert!(d.message.starts_with("data.refreshToken"), "{}", d.message);
        assert_no_plaintext(&d);
    }

    #[test]
    fn plaintext_reaching_validation_is_denied() {
        let l = intake_labels();
        let m = member();
        let secret = view(
            "acme-us-lwa",
            Some(LWA_CREDENTIALS_SECRET_TYPE),
            &l,
            &[("sealed", b"{}"), ("refreshToken", REFRESH_TOKEN)],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Update, Some(secret), None),
            Phase::Validate { key_ids: &[] },
        );
        assert_eq!(d.reason, "plaintext_credentials");
        assert!(d.message.starts_with("data.refreshToken: plaintext"));
        assert_no_plaintext(&d);
    }

    #[test]
    fn a_partial_plaintext_write_into_a_sealed_secret_is_denied_by_the_mutating_webhook() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let l = intake_labels();
        let m = member();
        let old = view(
            "acme-us-lwa",
            Some(LWA_CREDENTIALS_SECRET_TYPE),
            &l,
            &[("sealed", b"x")],
        );
        let new = view(
            "acme-us-lwa",
            Some(LWA_CREDENTIALS_SECRET_TYPE),
            &l,
            &[("sealed", b"x"), ("clientSecret", CLIENT_SECRET)],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Update, Some(new), Some(old)),
            Phase::Mutate(&key),
        );
        assert_eq!(d.reason, "incomplete_intake");
    }

    #[test]
    fn an_opaque_secret_cannot_become_credentials_by_update() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let l = intake_labels();
        let m = member();
        let old = view("acme-us-lwa", Some("Opaque"), &l, &[]);
        let new = view(
            "acme-us-lwa",
            Some("Opaque"),
            &l,
            &[
                ("clientId", CLIENT_ID),
                ("clientSecret", CLIENT_SECRET),
                ("refreshToken", REFRESH_TOKEN),
            ],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Update, Some(new), Some(old)),
            Phase::Mutate(&key),
        );
        assert_eq!(d.reason, "type_immutable");
    }

    #[test]
    fn a_sealed_secret_with_a_well_formed_envelope_passes_validation() {
        let ring = Keyring::generate(now());
        let key = ring.active().public_key();
        let context = SealContext {
            team_id: "acme",
            namespace: NS,
            secret_name: "acme-us-lwa",
        };
        let credentials = Credentials {
            client_id: "amzn1.application-oa2-client.abc".into(),
            client_secret: "s".into(),
            refresh_token: "Atzr|r".into(),
            next_client_secret: None,
            client_secret_expires_at: None,
        };
        let envelope = crypto::seal(&key, &context, &credentials).unwrap();
        let l = intake_labels();
        let m = member();
        let ids = vec![ring.active().id().to_owned()];
        let secret = view(
            "acme-us-lwa",
            Some(LWA_CREDENTIALS_SECRET_TYPE),
            &l,
            &[("sealed", &envelope)],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(
                who("alice", &m),
                Operation::Create,
                Some(secret.clone()),
                None,
            ),
            Phase::Validate { key_ids: &ids },
        );
        assert!(d.allowed && d.warnings.is_empty(), "{d:?}");
        // Sealed to a key the operator does not hold: allowed, with a warning.
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Create, Some(secret), None),
            Phase::Validate { key_ids: &[] },
        );
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn a_malformed_envelope_is_denied() {
        let l = intake_labels();
        let m = member();
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"version":1,"keyId":"k","enc":"AAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
            br#"{"version":2,"keyId":"k","enc":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
        ] {
            let secret = view(
                "acme-us-lwa",
                Some(LWA_CREDENTIALS_SECRET_TYPE),
                &l,
                &[("sealed", bad)],
            );
            let d = admit_secret(
                &policy(),
                &Fake::acme(),
                &secret_request(who("alice", &m), Operation::Create, Some(secret), None),
                Phase::Validate { key_ids: &[] },
            );
            assert_eq!(d.reason, "malformed_envelope", "{bad:?}");
        }
    }

    #[test]
    fn a_member_of_another_team_may_not_replace_sealed_credentials() {
        let l = intake_labels();
        let other = groups(&["openteam:team:globex"]);
        let secret = view(
            "acme-us-lwa",
            Some(LWA_CREDENTIALS_SECRET_TYPE),
            &l,
            &[("sealed", b"{}")],
        );
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(
                who("mallory", &other),
                Operation::Update,
                Some(secret.clone()),
                Some(secret),
            ),
            Phase::Validate { key_ids: &[] },
        );
        assert_eq!(d.reason, "not_team_member");
        assert_eq!(d.concern, Concern::Identity);
    }

    #[test]
    fn a_secret_named_by_a_connection_is_credentials_even_without_labels() {
        let none = BTreeMap::new();
        let other = groups(&["openteam:team:globex"]);
        let secret = view("acme-us-lwa", None, &none, &[("x", b"y")]);
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(
                who("mallory", &other),
                Operation::Create,
                Some(secret),
                None,
            ),
            Phase::Validate { key_ids: &[] },
        );
        assert_eq!(d.reason, "not_team_member");
    }

    #[test]
    fn only_the_operator_writes_runtime_secrets() {
        let runtime_label = labels(&[(SECRET_ROLE_LABEL, ROLE_RUNTIME_TOKEN)]);
        let none = BTreeMap::new();
        let m = member();
        let admin = groups(&["platform-admins"]);
        let nobody = groups(&[]);
        // By label, by type, and by name of an existing connection.
        let forged = [
            view("anything", None, &runtime_label, &[]),
            view("anything", Some(RUNTIME_SECRET_TYPE), &none, &[]),
            view("acme-us-sp-api", Some("Opaque"), &none, &[]),
        ];
        for secret in forged {
            for requester in [who("alice", &m), who("root", &admin)] {
                for op in [Operation::Create, Operation::Update, Operation::Delete] {
                    let (object, old) = match op {
                        Operation::Delete => (None, Some(secret.clone())),
                        _ => (Some(secret.clone()), Some(secret.clone())),
                    };
                    let d = admit_secret(
                        &policy(),
                        &Fake::acme(),
                        &secret_request(requester, op, object, old),
                        Phase::Validate { key_ids: &[] },
                    );
                    assert_eq!(d.reason, "not_operator", "{secret:?} {op:?}");
                }
            }
            let d = admit_secret(
                &policy(),
                &Fake::acme(),
                &secret_request(
                    who(OPERATOR, &nobody),
                    Operation::Create,
                    Some(secret),
                    None,
                ),
                Phase::Validate { key_ids: &[] },
            );
            assert!(d.allowed);
        }
    }

    #[test]
    fn only_the_operator_writes_token_stores() {
        let store_label = labels(&[(SECRET_ROLE_LABEL, ROLE_TOKEN_STORE)]);
        let none = BTreeMap::new();
        let m = member();
        let nobody = groups(&[]);
        // By label, by type, and by name of an existing connection.
        let forged = [
            view("anything", None, &store_label, &[]),
            view("anything", Some(TOKEN_STORE_SECRET_TYPE), &none, &[]),
            view("acme-us-sp-api-sealed", Some("Opaque"), &none, &[]),
        ];
        for secret in forged {
            for op in [Operation::Create, Operation::Update, Operation::Delete] {
                let (object, old) = match op {
                    Operation::Delete => (None, Some(secret.clone())),
                    _ => (Some(secret.clone()), Some(secret.clone())),
                };
                let d = admit_secret(
                    &policy(),
                    &Fake::acme(),
                    &secret_request(who("alice", &m), op, object, old),
                    Phase::Validate { key_ids: &[] },
                );
                assert_eq!(d.reason, "not_operator", "{secret:?} {op:?}");
                assert!(d.message.contains("token store"), "{}", d.message);
            }
            let d = admit_secret(
                &policy(),
                &Fake::acme(),
                &secret_request(
                    who(OPERATOR, &nobody),
                    Operation::Create,
                    Some(secret),
                    None,
                ),
                Phase::Validate { key_ids: &[] },
            );
            assert!(d.allowed);
        }
    }

    #[test]
    fn relabelling_a_runtime_secret_is_still_an_operator_only_write() {
        let runtime_label = labels(&[(SECRET_ROLE_LABEL, ROLE_RUNTIME_TOKEN)]);
        let none = BTreeMap::new();
        let m = member();
        let old = view("x", None, &runtime_label, &[]);
        let new = view("x", None, &none, &[]);
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("alice", &m), Operation::Update, Some(new), Some(old)),
            Phase::Validate { key_ids: &[] },
        );
        assert_eq!(d.reason, "not_operator");
    }

    #[test]
    fn unrelated_secrets_are_left_alone() {
        let none = BTreeMap::new();
        let other = groups(&["openteam:team:globex"]);
        let secret = view("app-config", None, &none, &[("clientSecret", b"x")]);
        let d = admit_secret(
            &policy(),
            &Fake::acme(),
            &secret_request(who("bob", &other), Operation::Create, Some(secret), None),
            Phase::Validate { key_ids: &[] },
        );
        assert!(d.allowed);
        assert_eq!(d.concern, Concern::Unrelated);
    }

    // --- pods

    fn reference(
        field: &str,
        secret: &str,
        kind: ReferenceKind,
        volume: Option<&str>,
    ) -> SecretReference {
        SecretReference {
            field: field.into(),
            secret: secret.into(),
            kind,
            volume: volume.map(str::to_owned),
        }
    }

    fn gateway_pod(gateway: Option<&str>, references: Vec<SecretReference>) -> PodView {
        PodView {
            gateway: gateway.map(str::to_owned),
            references,
            mounts: vec![VolumeMount {
                field: "spec.containers[0].volumeMounts[0]".into(),
                volume: "token".into(),
                sub_path: false,
            }],
        }
    }

    fn pod_decision(pod: &PodView) -> Decision {
        let m = member();
        admit_pod(
            &Fake::acme(),
            &PodRequest {
                namespace: NS,
                operation: Operation::Create,
                requester: who("alice", &m),
                pod,
            },
        )
    }

    fn volume_ref() -> SecretReference {
        reference(
            "spec.volumes[0].secret",
            "acme-us-sp-api",
            ReferenceKind::Volume,
            Some("token"),
        )
    }

    #[test]
    fn a_listed_gateway_may_mount_the_runtime_secret() {
        let d = pod_decision(&gateway_pod(Some("gw-main"), vec![volume_ref()]));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.concern, Concern::Gateway);
        assert!(d.subject.runtime_access);
        assert_eq!(d.subject.connection.as_deref(), Some("acme-us"));
        assert_eq!(d.subject.gateway.as_deref(), Some("gw-main"));
    }

    #[test]
    fn a_pod_without_the_gateway_label_may_not_mount_it() {
        let d = pod_decision(&gateway_pod(None, vec![volume_ref()]));
        assert_eq!(d.reason, "missing_gateway_label");
        assert!(
            d.message
                .starts_with("metadata.labels[\"connectors.openteam.io/gateway\"]: missing")
        );
    }

    #[test]
    fn a_gateway_of_another_connection_may_not_mount_it() {
        let d = pod_decision(&gateway_pod(Some("gw-other"), vec![volume_ref()]));
        assert_eq!(d.reason, "gateway_not_listed");
        assert!(d.message.contains("\"gw-other\""), "{}", d.message);
    }

    #[test]
    fn env_and_env_from_use_of_the_runtime_secret_are_denied_even_for_a_listed_gateway() {
        for (field, kind) in [
            (
                "spec.initContainers[0].env[0].valueFrom.secretKeyRef",
                ReferenceKind::EnvValueFrom,
            ),
            (
                "spec.ephemeralContainers[0].envFrom[0].secretRef",
                ReferenceKind::EnvFrom,
            ),
        ] {
            let d = pod_decision(&gateway_pod(
                Some("gw-main"),
                vec![reference(field, "acme-us-sp-api", kind, None)],
            ));
            assert_eq!(d.reason, "env_reference");
            assert!(d.message.starts_with(field), "{}", d.message);
        }
    }

    #[test]
    fn a_sub_path_mount_of_the_runtime_secret_is_denied() {
        let mut pod = gateway_pod(Some("gw-main"), vec![volume_ref()]);
        pod.mounts.push(VolumeMount {
            field: "spec.containers[1].volumeMounts[0]".into(),
            volume: "token".into(),
            sub_path: true,
        });
        let d = pod_decision(&pod);
        assert_eq!(d.reason, "sub_path_mount");
        assert!(
            d.message
                .starts_with("spec.containers[1].volumeMounts[0].subPath")
        );
    }

    #[test]
    fn a_projected_volume_is_a_reference_too() {
        let projected = reference(
            "spec.volumes[0].projected.sources[1].secret",
            "acme-us-sp-api",
            ReferenceKind::ProjectedVolume,
            Some("token"),
        );
        assert!(pod_decision(&gateway_pod(Some("gw-main"), vec![projected.clone()])).allowed);
        assert_eq!(
            pod_decision(&gateway_pod(None, vec![projected])).reason,
            "missing_gateway_label"
        );
    }

    #[test]
    fn no_pod_may_reference_a_sealed_token_store() {
        // By the name of an existing connection's store, even from a listed gateway.
        let by_name = pod_decision(&gateway_pod(
            Some("gw-main"),
            vec![reference(
                "spec.volumes[0].secret",
                "acme-us-sp-api-sealed",
                ReferenceKind::Volume,
                Some("token"),
            )],
        ));
        assert!(!by_name.allowed);
        assert_eq!(by_name.reason, "sealed_secret_reference");
        // By the role label of a Secret the view knows.
        let mut fake = Fake::acme();
        fake.secrets.insert(
            (NS.into(), "renamed-store".into()),
            SecretFacts {
                role: ROLE_TOKEN_STORE.into(),
                connection: Some("acme-us".into()),
            },
        );
        let pod = gateway_pod(
            Some("gw-main"),
            vec![reference(
                "spec.containers[0].envFrom[0].secretRef",
                "renamed-store",
                ReferenceKind::EnvFrom,
                None,
            )],
        );
        let d = admit_pod(
            &fake,
            &PodRequest {
                namespace: NS,
                operation: Operation::Create,
                requester: who("alice", &member()),
                pod: &pod,
            },
        );
        assert_eq!(d.reason, "sealed_secret_reference");
    }

    #[test]
    fn no_pod_may_reference_sealed_credentials() {
        let d = pod_decision(&gateway_pod(
            Some("gw-main"),
            vec![reference(
                "spec.volumes[0].secret",
                "acme-us-lwa",
                ReferenceKind::Volume,
                Some("token"),
            )],
        ));
        assert_eq!(d.reason, "sealed_secret_reference");
    }

    #[test]
    fn a_runtime_secret_of_a_missing_connection_is_refused() {
        let mut fake = Fake::acme();
        fake.secrets.insert(
            (NS.into(), "ghost-token".into()),
            SecretFacts {
                role: ROLE_RUNTIME_TOKEN.into(),
                connection: Some("ghost".into()),
            },
        );
        let m = member();
        let pod = gateway_pod(
            Some("gw-main"),
            vec![reference(
                "spec.volumes[0].secret",
                "ghost-token",
                ReferenceKind::Volume,
                Some("token"),
            )],
        );
        let d = admit_pod(
            &fake,
            &PodRequest {
                namespace: NS,
                operation: Operation::Create,
                requester: who("alice", &m),
                pod: &pod,
            },
        );
        assert_eq!(d.reason, "unknown_connection");
    }

    #[test]
    fn every_violation_is_reported() {
        let d = pod_decision(&gateway_pod(
            None,
            vec![
                volume_ref(),
                reference(
                    "spec.containers[0].envFrom[0].secretRef",
                    "acme-us-sp-api",
                    ReferenceKind::EnvFrom,
                    None,
                ),
            ],
        ));
        assert_eq!(d.reason, "missing_gateway_label");
        assert!(
            d.message
                .contains("spec.containers[0].envFrom[0].secretRef: runtime Secret")
        );
    }

    #[test]
    fn an_ordinary_pod_is_unrelated() {
        let d = pod_decision(&PodView {
            references: vec![reference(
                "spec.volumes[0].secret",
                "app-config",
                ReferenceKind::Volume,
                Some("config"),
            )],
            ..PodView::default()
        });
        assert!(d.allowed);
        assert_eq!(d.concern, Concern::Unrelated);
    }

    // --- namespaces and reviews

    #[test]
    fn only_admins_set_change_or_remove_the_team_label() {
        let m = member();
        let admin = groups(&["platform-admins"]);
        for (op, team, old) in [
            (Operation::Create, Some("acme"), None),
            (Operation::Update, Some("globex"), Some("acme")),
            (Operation::Update, None, Some("acme")),
        ] {
            let request = |requester| NamespaceRequest {
                name: NS,
                operation: op,
                requester,
                team,
                old_team: old,
            };
            let d = admit_namespace(&policy(), &request(who("alice", &m)));
            assert_eq!(d.reason, "not_admin");
            assert!(
                d.message
                    .starts_with("metadata.labels[\"connectors.openteam.io/team\"]")
            );
            assert!(admit_namespace(&policy(), &request(who("root", &admin))).allowed);
        }
        let unchanged = NamespaceRequest {
            name: NS,
            operation: Operation::Update,
            requester: who("alice", &m),
            team: Some("acme"),
            old_team: Some("acme"),
        };
        assert!(admit_namespace(&policy(), &unchanged).allowed);
    }

    #[test]
    fn the_team_label_must_be_a_team_id() {
        let admin = groups(&["platform-admins"]);
        let d = admit_namespace(
            &policy(),
            &NamespaceRequest {
                name: NS,
                operation: Operation::Create,
                requester: who("root", &admin),
                team: Some("Not_A_Label"),
                old_team: None,
            },
        );
        assert_eq!(d.reason, "invalid_team_label");
    }

    #[test]
    fn only_reviewers_record_reviews() {
        let reviewer = groups(&["security-reviewers"]);
        let m = member();
        let admin = groups(&["platform-admins"]);
        let create = |requester, reviewer| ReviewRequest {
            operation: Operation::Create,
            requester,
            reviewer,
        };
        assert!(admit_review(&policy(), &create(who("rita", &reviewer), Some("rita"))).allowed);
        let d = admit_review(&policy(), &create(who("rita", &reviewer), Some("someone")));
        assert!(d.allowed && d.warnings.len() == 1);
        assert_eq!(
            admit_review(&policy(), &create(who("alice", &m), Some("alice"))).reason,
            "not_reviewer"
        );
        assert_eq!(
            admit_review(&policy(), &create(who("root", &admin), None)).reason,
            "not_reviewer"
        );
    }
}
