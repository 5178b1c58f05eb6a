//! Admission rules: who may create, change or delete connections, credentials, runtime Secrets,
//! Team bindings and review records, and which pods may use a connection's runtime Secret.
//!
//! Plain types in, a [`Decision`] out. The webhook converts `AdmissionReview` objects into the
//! views of each object kind and reads cluster state (namespace Team labels, connections,
//! labelled Secrets) through the [`Lookup`] trait, so every rule is tested beside it with a fake
//! cluster. This module holds what every rule shares: the [`Policy`], the [`Requester`], the
//! [`Decision`] and its parts, and the violation helper. Each object kind's rule lives in its
//! own module with its tests: `connection`, `secret` (runtime Secrets, token stores and
//! credentials Secrets), `intake` (sealing plaintext intakes), `pod`, `namespace` and `review`;
//! `reason` holds the one [`Reason`] enum, `fixtures` the tests' fake cluster and builders.
//!
//! Messages name the field and the rule and never contain a secret value: plaintext intake
//! values are only ever passed to [`crypto::seal`](crate::crypto::seal), never formatted.

mod applied;
mod connection;
#[cfg(test)]
mod fixtures;
mod intake;
mod namespace;
mod pod;
mod reason;
mod review;
mod secret;

use std::collections::BTreeMap;
use std::fmt;

use super::validation::{RUNTIME_SECRET_SUFFIX, TOKEN_STORE_SUFFIX};
use crate::names::SECRET_ROLE_LABEL;

pub use applied::LAST_APPLIED_ANNOTATION;
pub use connection::{ConnectionRequest, admit_connection};
pub use intake::{
    INTAKE_CLIENT_ID, INTAKE_CLIENT_SECRET, INTAKE_CLIENT_SECRET_EXPIRES_AT, INTAKE_KEYS,
    INTAKE_NEXT_CLIENT_SECRET, INTAKE_REFRESH_TOKEN, REQUIRED_INTAKE_KEYS, envelope_key_id,
};
pub use namespace::{NamespaceRequest, admit_namespace};
pub use pod::{PodRequest, PodView, ReferenceKind, SecretReference, VolumeMount, admit_pod};
pub use reason::Reason;
pub use review::{ReviewRequest, admit_review};
pub use secret::{Phase, admit_secret};

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
    /// Identities that create pods (and pod-owning workloads) for an owner object: the
    /// kube-controller-manager, as one identity or one ServiceAccount per controller. They may
    /// use a connection's runtime Secret only in an object with a controller `ownerReference`,
    /// that is, one stamped out from a template a Team member wrote.
    pub workload_controllers: Vec<String>,
}

/// [`Policy::workload_controllers`] by default: the kube-controller-manager with and without
/// per-controller ServiceAccounts (`--use-service-account-credentials`), for every controller
/// that creates pods, ReplicaSets or Jobs from a template.
pub const DEFAULT_WORKLOAD_CONTROLLERS: [&str; 7] = [
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:daemon-set-controller",
    "system:serviceaccount:kube-system:job-controller",
    "system:serviceaccount:kube-system:cronjob-controller",
];

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

    /// Whether `requester` is a ServiceAccount of `namespace`.
    fn is_service_account_of(requester: &Requester<'_>, namespace: &str) -> bool {
        requester
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(ns, name)| ns == namespace && !name.is_empty())
    }

    /// Whether `requester` may put a connection of `team` in `namespace` to use in an object:
    /// a member of the Team, an admin, a ServiceAccount of the namespace, or a workload
    /// controller creating the object for its owner (`owned`: it has a controller
    /// ownerReference).
    fn may_use(&self, requester: &Requester<'_>, team: &str, namespace: &str, owned: bool) -> bool {
        self.is_member(requester, team)
            || self.is_admin(requester)
            || Self::is_service_account_of(requester, namespace)
            || (owned
                && self
                    .workload_controllers
                    .iter()
                    .any(|c| c == requester.username))
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
    /// `connectors.openteam.io/lwa-credentials` and drop `stringData`; replace kubectl's
    /// last-applied configuration with `last_applied` when there is one.
    SealCredentials {
        /// The sealed envelope (ciphertext, not secret).
        envelope: Vec<u8>,
        /// Whether the object has a `stringData` field to remove.
        remove_string_data: bool,
        /// The [`LAST_APPLIED_ANNOTATION`] without the credential keys, when the object
        /// carries one that held them.
        last_applied: Option<String>,
    },
}

impl fmt::Debug for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::SealCredentials {
                envelope,
                remove_string_data,
                last_applied,
            } => f
                .debug_struct("SealCredentials")
                .field("envelope_bytes", &envelope.len())
                .field("remove_string_data", remove_string_data)
                .field(
                    "last_applied_bytes",
                    &last_applied.as_ref().map(String::len),
                )
                .finish(),
        }
    }
}

/// The answer to one admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why, as one bounded rule name for metrics and the audit log ([`Reason::None`] when
    /// allowed as is).
    pub reason: Reason,
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
    fn allow(reason: Reason, concern: Concern) -> Self {
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

    fn deny(reason: Reason, message: impl Into<String>, concern: Concern) -> Self {
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

/// What the rules that check every part of an object found: each violated rule with its
/// reason and message (field first), and the soft issues, in the order found.
#[derive(Debug, Default)]
struct Findings {
    violations: Vec<(Reason, String)>,
    warnings: Vec<String>,
}

impl Findings {
    /// Records a violated rule.
    fn violation(&mut self, reason: Reason, message: impl Into<String>) {
        self.violations.push((reason, message.into()));
    }

    /// Records a soft issue, returned as a warning if nothing is violated.
    fn warning(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Denies with every violation (under the first one's reason, messages joined by `; `) or,
    /// when there is none, allows as is with the warnings. A denial carries no warnings.
    fn decide(self, concern: Concern) -> Decision {
        let Some(&(reason, _)) = self.violations.first() else {
            let mut decision = Decision::allow(Reason::None, concern);
            decision.warnings = self.warnings;
            return decision;
        };
        let message = self
            .violations
            .iter()
            .map(|(_, message)| message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Decision::deny(reason, message, concern)
    }
}

/// How messages say what the requester tried to do.
fn verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Update => "change",
        Operation::Delete => "delete",
        Operation::Connect => "connect to",
    }
}

/// A Secret as the rules see it. `data` holds `data` and `stringData` merged (the API server
/// merges them the same way), so its values may be plaintext credentials, as may annotations:
/// `Debug` prints the keys only.
#[derive(Clone)]
pub struct SecretView<'a> {
    /// `metadata.name` (empty when only `generateName` is set).
    pub name: &'a str,
    /// `type`.
    pub type_: Option<&'a str>,
    /// `metadata.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `metadata.annotations`: kubectl's last-applied configuration among them may hold the
    /// plaintext the Secret was applied with.
    pub annotations: &'a BTreeMap<String, String>,
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
            .field(
                "annotation_keys",
                &self.annotations.keys().collect::<Vec<_>>(),
            )
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
