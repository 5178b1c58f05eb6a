//! What the admission rules' tests share: a fake cluster view with Team `acme`'s namespace, the
//! policy, the people who ask, and builders for Secrets and Secret requests (the Secret and the
//! intake tests both use them).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use super::{
    CLEANUP_IDENTITIES, ConnectionFacts, Decision, Lookup, Operation, Phase, Policy, Requester,
    SecretFacts, SecretRequest, SecretView, admit_secret,
};
use crate::crypto::PublicKey;
use crate::names::{ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN, ROLE_TOKEN_STORE, SECRET_ROLE_LABEL};

/// Sample intake values: an LWA client id, client secret and refresh token.
pub(super) const CLIENT_ID: &[u8] = b"amzn1.application-oa2-client.0123abcd";
pub(super) const CLIENT_SECRET: &[u8] = b"amzn1.oa2-cs.v1.topsecretvalue";
pub(super) const REFRESH_TOKEN: &[u8] = b"Atzr|IwEBIPlaintextRefresh";

/// Asserts that no part of the sample intake values appears anywhere in `decision`.
pub(super) fn assert_no_plaintext(decision: &Decision) {
    let text = format!("{decision:?}");
    for needle in ["topsecretvalue", "PlaintextRefresh", "0123abcd"] {
        assert!(!text.contains(needle), "{needle} leaked: {text}");
    }
}

/// The Team namespace the tests work in.
pub(super) const NS: &str = "team-acme";

/// The operator's user name under [`policy`].
pub(super) const OPERATOR: &str = "system:serviceaccount:aso:amazon-seller-operator";

/// A cluster view: namespaces' Team labels, connections and labelled Secrets.
#[derive(Default)]
pub(super) struct FakeCluster {
    teams: HashMap<String, String>,
    connections: Vec<(String, ConnectionFacts)>,
    secrets: HashMap<(String, String), SecretFacts>,
}

impl FakeCluster {
    /// `team-acme` bound to Team `acme`, holding connection `acme-us` (gateway `gw-main`,
    /// credentials Secret `acme-us-lwa`) with its labelled credentials and runtime Secrets.
    pub(super) fn acme() -> Self {
        let mut cluster = Self::default();
        cluster.teams.insert(NS.into(), "acme".into());
        cluster.connections.push((
            NS.into(),
            ConnectionFacts {
                name: "acme-us".into(),
                team_id: "acme".into(),
                gateways: vec!["gw-main".into()],
                credentials_secret_name: "acme-us-lwa".into(),
            },
        ));
        cluster
            .with_secret("acme-us-lwa", ROLE_LWA_CREDENTIALS, "acme-us")
            .with_secret("acme-us-sp-api", ROLE_RUNTIME_TOKEN, "acme-us")
    }

    /// A cluster in which `team-acme` carries no Team label and holds nothing.
    pub(super) fn unbound() -> Self {
        Self::default()
    }

    /// Adds a Secret in `team-acme` labelled with `role` and the connection `connection`.
    pub(super) fn with_secret(mut self, name: &str, role: &str, connection: &str) -> Self {
        self.secrets.insert(
            (NS.into(), name.into()),
            SecretFacts {
                role: role.into(),
                connection: Some(connection.into()),
            },
        );
        self
    }
}

impl Lookup for FakeCluster {
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

/// Team groups `openteam:team:<team>`, admins `platform-admins`, reviewers
/// `security-reviewers`, the operator [`OPERATOR`].
pub(super) fn policy() -> Policy {
    Policy {
        team_group_prefix: "openteam:team:".into(),
        admin_groups: vec!["platform-admins".into()],
        reviewer_groups: vec!["security-reviewers".into()],
        operator_username: Policy::service_account_username("aso", "amazon-seller-operator"),
        workload_controllers: super::DEFAULT_WORKLOAD_CONTROLLERS
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
    }
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

static ACME_MEMBER: LazyLock<Vec<String>> =
    LazyLock::new(|| groups(&["system:authenticated", "openteam:team:acme"]));
static GLOBEX_MEMBER: LazyLock<Vec<String>> = LazyLock::new(|| groups(&["openteam:team:globex"]));
static NEAR_ACME: LazyLock<Vec<String>> =
    LazyLock::new(|| groups(&["openteam:team:acme-evil", "openteam:team:acm"]));
static ADMIN: LazyLock<Vec<String>> = LazyLock::new(|| groups(&["platform-admins"]));
static REVIEWER: LazyLock<Vec<String>> = LazyLock::new(|| groups(&["security-reviewers"]));

/// Alice, a member of Team acme.
pub(super) fn alice() -> Requester<'static> {
    Requester {
        username: "alice",
        groups: &ACME_MEMBER,
    }
}

/// Mallory, a member of Team globex.
pub(super) fn mallory() -> Requester<'static> {
    Requester {
        username: "mallory",
        groups: &GLOBEX_MEMBER,
    }
}

/// Eve, whose groups only start like Team acme's (`openteam:team:acme-evil`) or are a prefix of
/// it (`openteam:team:acm`).
pub(super) fn eve() -> Requester<'static> {
    Requester {
        username: "eve",
        groups: &NEAR_ACME,
    }
}

/// Root, an admin.
pub(super) fn root() -> Requester<'static> {
    Requester {
        username: "root",
        groups: &ADMIN,
    }
}

/// Rita, a security reviewer.
pub(super) fn rita() -> Requester<'static> {
    Requester {
        username: "rita",
        groups: &REVIEWER,
    }
}

/// The operator's ServiceAccount, in no group the policy names.
pub(super) fn operator() -> Requester<'static> {
    Requester {
        username: OPERATOR,
        groups: &[],
    }
}

/// Kubernetes' garbage collector, one of the cleanup identities.
pub(super) fn garbage_collector() -> Requester<'static> {
    Requester {
        username: CLEANUP_IDENTITIES[0],
        groups: &[],
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
static CREDENTIALS_ROLE: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| role_labels(ROLE_LWA_CREDENTIALS));
static RUNTIME_ROLE: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| role_labels(ROLE_RUNTIME_TOKEN));
static TOKEN_STORE_ROLE: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| role_labels(ROLE_TOKEN_STORE));

fn role_labels(role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SECRET_ROLE_LABEL.to_owned(), role.to_owned())])
}

impl<'a> SecretView<'a> {
    /// A Secret named `name`, without type, labels or data.
    pub(super) fn test(name: &'a str) -> Self {
        SecretView {
            name,
            type_: None,
            labels: &NO_LABELS,
            annotations: &NO_LABELS,
            data: BTreeMap::new(),
            has_string_data: false,
        }
    }

    /// With `type`.
    pub(super) fn of_type(self, type_: &'a str) -> Self {
        Self {
            type_: Some(type_),
            ..self
        }
    }

    /// Labelled `connectors.openteam.io/secret-role=<role>` (one of the three roles).
    pub(super) fn with_role(self, role: &str) -> Self {
        let labels: &'static BTreeMap<String, String> = match role {
            ROLE_LWA_CREDENTIALS => &CREDENTIALS_ROLE,
            ROLE_RUNTIME_TOKEN => &RUNTIME_ROLE,
            ROLE_TOKEN_STORE => &TOKEN_STORE_ROLE,
            other => panic!("no fixture for secret role {other:?}"),
        };
        Self { labels, ..self }
    }

    /// With `key` set to `value` in `data`.
    pub(super) fn with_data(mut self, key: &'a str, value: &'a [u8]) -> Self {
        self.data.insert(key, value);
        self
    }
}

impl<'a> SecretRequest<'a> {
    /// `by` creates `secret` in `team-acme`.
    pub(super) fn create(by: Requester<'a>, secret: SecretView<'a>) -> Self {
        Self {
            namespace: NS,
            operation: Operation::Create,
            requester: by,
            object: Some(secret),
            old: None,
        }
    }

    /// `by` replaces `old` with `new`.
    pub(super) fn update(by: Requester<'a>, old: SecretView<'a>, new: SecretView<'a>) -> Self {
        Self {
            operation: Operation::Update,
            old: Some(old),
            ..Self::create(by, new)
        }
    }

    /// `by` deletes `old`.
    pub(super) fn delete(by: Requester<'a>, old: SecretView<'a>) -> Self {
        Self {
            namespace: NS,
            operation: Operation::Delete,
            requester: by,
            object: None,
            old: Some(old),
        }
    }

    /// Each of create, update (of the Secret into itself) and delete of `secret` by `by`.
    pub(super) fn every_write(by: Requester<'a>, secret: &SecretView<'a>) -> [Self; 3] {
        [
            Self::create(by, secret.clone()),
            Self::update(by, secret.clone(), secret.clone()),
            Self::delete(by, secret.clone()),
        ]
    }
}

/// The validating webhook's decision in [`FakeCluster::acme`], the operator holding `key_ids`.
pub(super) fn validate_with_keys(request: &SecretRequest<'_>, key_ids: &[String]) -> Decision {
    admit_secret(
        &policy(),
        &FakeCluster::acme(),
        request,
        Phase::Validate { key_ids },
    )
}

/// The validating webhook's decision in [`FakeCluster::acme`], the operator holding no key.
pub(super) fn validate(request: &SecretRequest<'_>) -> Decision {
    validate_with_keys(request, &[])
}

/// The mutating webhook's decision in `cluster`, sealing to `key`.
pub(super) fn mutate_in(
    cluster: &FakeCluster,
    request: &SecretRequest<'_>,
    key: &PublicKey,
) -> Decision {
    admit_secret(&policy(), cluster, request, Phase::Mutate(key))
}

/// The mutating webhook's decision in [`FakeCluster::acme`], sealing to `key`.
pub(super) fn mutate(request: &SecretRequest<'_>, key: &PublicKey) -> Decision {
    mutate_in(&FakeCluster::acme(), request, key)
}
