//! Admission rules: who may create, change or delete connections, credentials, runtime Secrets,
//! Team bindings and review records, and which pods may use a connection's runtime Secret.
//!
//! Plain types in, a [`Decision`] out. The webhook converts `AdmissionReview` objects into the
//! views of each object kind and reads cluster state (namespace Team labels, connections,
//! labelled Secrets) through the [`Lookup`] trait, so every rule is tested beside it with a fake
//! cluster. This module holds what every rule shares: the [`Policy`], the [`Requester`], the
//! [`Decision`] and its parts; each object kind's rule lives in its own module.
//!
//! Messages name the field and the rule and never contain a secret value: plaintext intake
//! values are only ever passed to [`crypto::seal`](crate::crypto::seal), never formatted.

mod connection;
mod intake;
mod namespace;
mod pod;
mod reason;
mod review;
mod secret;

use std::fmt;

use super::validation::{RUNTIME_SECRET_SUFFIX, TOKEN_STORE_SUFFIX};

pub use connection::{ConnectionRequest, admit_connection};
pub use intake::{
    INTAKE_CLIENT_ID, INTAKE_CLIENT_SECRET, INTAKE_CLIENT_SECRET_EXPIRES_AT, INTAKE_KEYS,
    INTAKE_NEXT_CLIENT_SECRET, INTAKE_REFRESH_TOKEN, REQUIRED_INTAKE_KEYS, envelope_key_id,
};
pub use namespace::{NamespaceRequest, admit_namespace};
pub use pod::{PodRequest, PodView, ReferenceKind, SecretReference, VolumeMount, admit_pod};
pub use reason::Reason;
pub use review::{ReviewRequest, admit_review};
pub use secret::{Phase, SecretRequest, SecretView, admit_secret};

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

fn verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Update => "change",
        Operation::Delete => "delete",
        Operation::Connect => "connect to",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{self, Credentials, Keyring, SealContext};
    use crate::domain::validation::SpecView;
    use crate::names::{
        LWA_CREDENTIALS_SECRET_TYPE, ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN, ROLE_TOKEN_STORE,
        RUNTIME_SECRET_TYPE, SECRET_ROLE_LABEL, TOKEN_STORE_SECRET_TYPE,
    };
    use std::collections::{BTreeMap, HashMap};

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
            assert_eq!(d.reason, Reason::NotTeamMember);
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
        assert_eq!(d.reason, Reason::NotTeamMember);
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
        assert_eq!(d.reason, Reason::TeamMismatch);
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
        assert_eq!(d.reason, Reason::NamespaceNotBound);
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
        assert_eq!(d.reason, Reason::InvalidSpec);
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
        assert_eq!(d.reason, Reason::ImmutableField);
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
        assert_eq!(d.reason, Reason::CredentialsSecretConflict);
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
            Reason::NamespaceNotBound
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
            Reason::NotTeamMember
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
        assert_eq!(d.reason, Reason::SealedIntake);
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
        assert_eq!(d.reason, Reason::InvalidIntake);
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
        assert_eq!(d.reason, Reason::PlaintextCredentials);
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
        assert_eq!(d.reason, Reason::IncompleteIntake);
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
        assert_eq!(d.reason, Reason::TypeImmutable);
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
            assert_eq!(d.reason, Reason::MalformedEnvelope, "{bad:?}");
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
        assert_eq!(d.reason, Reason::NotTeamMember);
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
        assert_eq!(d.reason, Reason::NotTeamMember);
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
                    assert_eq!(d.reason, Reason::NotOperator, "{secret:?} {op:?}");
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
                assert_eq!(d.reason, Reason::NotOperator, "{secret:?} {op:?}");
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
        assert_eq!(d.reason, Reason::NotOperator);
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
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
        assert!(
            d.message
                .starts_with("metadata.labels[\"connectors.openteam.io/gateway\"]: missing")
        );
    }

    #[test]
    fn a_gateway_of_another_connection_may_not_mount_it() {
        let d = pod_decision(&gateway_pod(Some("gw-other"), vec![volume_ref()]));
        assert_eq!(d.reason, Reason::GatewayNotListed);
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
            assert_eq!(d.reason, Reason::EnvReference);
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
        assert_eq!(d.reason, Reason::SubPathMount);
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
            Reason::MissingGatewayLabel
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
        assert_eq!(by_name.reason, Reason::SealedSecretReference);
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
        assert_eq!(d.reason, Reason::SealedSecretReference);
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
        assert_eq!(d.reason, Reason::SealedSecretReference);
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
        assert_eq!(d.reason, Reason::UnknownConnection);
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
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
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
            assert_eq!(d.reason, Reason::NotAdmin);
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
        assert_eq!(d.reason, Reason::InvalidTeamLabel);
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
            Reason::NotReviewer
        );
        assert_eq!(
            admit_review(&policy(), &create(who("root", &admin), None)).reason,
            Reason::NotReviewer
        );
    }
}
