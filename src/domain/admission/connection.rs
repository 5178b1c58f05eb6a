//! The `AmazonSellerConnection` rule: who may create, change or delete a connection, and what
//! its spec must say in the namespace it lives in.

use super::{Concern, Decision, Findings, Lookup, Operation, Policy, Reason, Requester};
use super::{is_cleanup, verb};
use crate::domain::validation::{self, SpecView};
use crate::names::{ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN, SECRET_ROLE_LABEL, TEAM_LABEL};

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
        return subject(Decision::allow(Reason::Cleanup, Concern::Setup));
    }
    let metadata_only = request.operation == Operation::Update && !request.spec_changed;
    let Some(team_id) = team.as_deref() else {
        // The operator must still be able to remove its finalizer (and an admin to clean up)
        // after a namespace lost its Team label.
        if (request.operation == Operation::Delete || metadata_only)
            && (policy.is_admin(requester) || policy.is_operator(requester))
        {
            return subject(Decision::allow(Reason::None, Concern::Setup));
        }
        return subject(Decision::deny(
            Reason::NamespaceNotBound,
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
            Reason::NotTeamMember,
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
        return subject(Decision::allow(Reason::None, Concern::Setup));
    };
    if metadata_only {
        return subject(Decision::allow(Reason::None, Concern::Setup));
    }

    let mut findings = Findings::default();
    if let Some(old) = &request.old {
        for error in validation::validate_update(old, &spec) {
            findings.violation(Reason::ImmutableField, error.to_string());
        }
    }
    if spec.team_id != team_id {
        findings.violation(
            Reason::TeamMismatch,
            format!(
                "spec.teamId: {:?} must equal the namespace's team {team_id:?} (label {TEAM_LABEL})",
                spec.team_id
            ),
        );
    }
    for error in validation::validate_spec(&spec) {
        findings.violation(Reason::InvalidSpec, error.to_string());
    }
    let credentials = lookup.secret(request.namespace, spec.credentials_secret_name);
    match credentials.as_ref().map(|s| s.role.as_str()) {
        Some(ROLE_LWA_CREDENTIALS) => {}
        Some(ROLE_RUNTIME_TOKEN) => findings.violation(
            Reason::CredentialsSecretConflict,
            format!(
                "spec.credentialsSecretName: {:?} is a runtime Secret, not sealed credentials",
                spec.credentials_secret_name
            ),
        ),
        _ => findings.warning(format!(
            "spec.credentialsSecretName: Secret {:?} does not exist yet (or is not labelled \
             {SECRET_ROLE_LABEL}={ROLE_LWA_CREDENTIALS}); the connection is not Ready until it does",
            spec.credentials_secret_name
        )),
    }
    subject(findings.decide(Concern::Setup))
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::super::fixtures::{
        FakeCluster, NS, alice, eve, garbage_collector, mallory, operator, policy, root,
    };
    use super::*;

    static GATEWAYS: LazyLock<Vec<String>> = LazyLock::new(|| vec!["gw-main".into()]);

    /// Connection `acme-us` of Team acme, valid, with credentials Secret `acme-us-lwa`.
    fn spec() -> SpecView<'static> {
        SpecView {
            name: "acme-us",
            team_id: "acme",
            seller_id: "A3FHEXAMPLEYWS",
            marketplace: "US",
            credentials_secret_name: "acme-us-lwa",
            gateways: &GATEWAYS,
            renew_before: "20m",
        }
    }

    impl ConnectionRequest<'static> {
        /// `by` creates `spec` as `acme-us` in `team-acme`.
        fn create(by: Requester<'static>, spec: SpecView<'static>) -> Self {
            Self {
                namespace: NS,
                name: "acme-us",
                operation: Operation::Create,
                requester: by,
                object: Some(spec),
                old: None,
                spec_changed: true,
            }
        }

        /// `by` changes the spec from `old` to `new`.
        fn update(by: Requester<'static>, old: SpecView<'static>, new: SpecView<'static>) -> Self {
            Self {
                operation: Operation::Update,
                old: Some(old),
                ..Self::create(by, new)
            }
        }

        /// `by` changes only metadata (a finalizer, say) of a connection whose spec is `spec`.
        fn metadata_only(by: Requester<'static>, spec: SpecView<'static>) -> Self {
            Self {
                spec_changed: false,
                ..Self::update(by, spec, spec)
            }
        }

        /// `by` deletes a connection whose spec is `old`.
        fn delete(by: Requester<'static>, old: SpecView<'static>) -> Self {
            Self {
                operation: Operation::Delete,
                object: None,
                old: Some(old),
                ..Self::create(by, old)
            }
        }
    }

    fn admit_in(cluster: &FakeCluster, request: ConnectionRequest<'_>) -> Decision {
        admit_connection(&policy(), cluster, &request)
    }

    fn admit(request: ConnectionRequest<'_>) -> Decision {
        admit_in(&FakeCluster::acme(), request)
    }

    #[test]
    fn a_team_member_may_create_a_valid_connection() {
        let d = admit(ConnectionRequest::create(alice(), spec()));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, Reason::None);
        assert_eq!(d.subject.team.as_deref(), Some("acme"));
        assert_eq!(d.subject.connection.as_deref(), Some("acme-us"));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn a_member_of_another_team_may_not_create_update_or_delete_a_connection() {
        for request in [
            ConnectionRequest::create(mallory(), spec()),
            ConnectionRequest::update(mallory(), spec(), spec()),
            ConnectionRequest::delete(mallory(), spec()),
        ] {
            let d = admit(request);
            assert!(!d.allowed);
            assert_eq!(d.reason, Reason::NotTeamMember);
            assert_eq!(d.concern, Concern::Identity);
            assert!(d.message.contains("openteam:team:acme"), "{}", d.message);
        }
    }

    #[test]
    fn a_group_that_only_starts_like_the_team_group_is_not_a_member() {
        let d = admit(ConnectionRequest::create(eve(), spec()));
        assert_eq!(d.reason, Reason::NotTeamMember);
    }

    #[test]
    fn admins_and_the_operator_may_act_for_any_team() {
        for requester in [root(), operator()] {
            let d = admit(ConnectionRequest::create(requester, spec()));
            assert!(d.allowed, "{d:?}");
        }
    }

    #[test]
    fn team_id_must_equal_the_namespace_label() {
        let d = admit(ConnectionRequest::create(
            alice(),
            SpecView {
                team_id: "globex",
                ..spec()
            },
        ));
        assert_eq!(d.reason, Reason::TeamMismatch);
        assert!(d.message.starts_with("spec.teamId: \"globex\" must equal"));
    }

    #[test]
    fn a_connection_in_an_unbound_namespace_is_denied() {
        let d = admit_in(
            &FakeCluster::unbound(),
            ConnectionRequest::create(root(), spec()),
        );
        assert_eq!(d.reason, Reason::NamespaceNotBound);
    }

    #[test]
    fn unknown_marketplace_is_denied_naming_the_field() {
        let d = admit(ConnectionRequest::create(
            alice(),
            SpecView {
                marketplace: "XX",
                ..spec()
            },
        ));
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
        let d = admit(ConnectionRequest::update(
            alice(),
            spec(),
            SpecView {
                seller_id: "B3FHEXAMPLEYWS",
                ..spec()
            },
        ));
        assert_eq!(d.reason, Reason::ImmutableField);
        assert!(d.message.starts_with("spec.sellerId: is immutable"));
    }

    #[test]
    fn every_violation_is_reported_under_the_first_ones_reason() {
        let d = admit(ConnectionRequest::update(
            alice(),
            spec(),
            SpecView {
                team_id: "globex",
                marketplace: "XX",
                ..spec()
            },
        ));
        assert!(!d.allowed);
        assert_eq!(d.reason, Reason::ImmutableField);
        let messages: Vec<&str> = d.message.split("; ").collect();
        assert!(
            messages[0].starts_with("spec.teamId: is immutable"),
            "{}",
            d.message
        );
        assert!(
            messages[1].starts_with("spec.teamId: \"globex\" must equal"),
            "{}",
            d.message
        );
        assert!(
            messages[2].starts_with("spec.marketplace: unknown marketplace"),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_missing_credentials_secret_is_a_warning() {
        let d = admit(ConnectionRequest::create(
            alice(),
            SpecView {
                credentials_secret_name: "not-there",
                ..spec()
            },
        ));
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].starts_with("spec.credentialsSecretName: Secret \"not-there\""));
    }

    #[test]
    fn credentials_secret_name_may_not_name_a_runtime_secret() {
        let d = admit(ConnectionRequest::create(
            alice(),
            SpecView {
                name: "acme-de",
                credentials_secret_name: "acme-us-sp-api",
                ..spec()
            },
        ));
        assert_eq!(d.reason, Reason::CredentialsSecretConflict);
    }

    #[test]
    fn a_metadata_only_update_by_the_operator_is_not_revalidated() {
        let bad = SpecView {
            marketplace: "XX",
            ..spec()
        };
        let d = admit(ConnectionRequest::metadata_only(operator(), bad));
        assert!(d.allowed, "{d:?}");
    }

    #[test]
    fn the_operator_may_remove_its_finalizer_after_the_team_label_is_gone() {
        let unbound = FakeCluster::unbound();
        let finalizer = ConnectionRequest::metadata_only(operator(), spec());
        assert!(admit_in(&unbound, finalizer).allowed);
        let spec_change = ConnectionRequest::update(operator(), spec(), spec());
        assert_eq!(
            admit_in(&unbound, spec_change).reason,
            Reason::NamespaceNotBound
        );
    }

    #[test]
    fn the_garbage_collector_may_delete_but_not_create() {
        let delete = admit(ConnectionRequest::delete(garbage_collector(), spec()));
        assert!(delete.allowed);
        assert_eq!(delete.reason, Reason::Cleanup);
        let create = admit(ConnectionRequest::create(garbage_collector(), spec()));
        assert_eq!(create.reason, Reason::NotTeamMember);
    }
}
