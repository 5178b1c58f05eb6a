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
