//! The namespace rule: only admins bind a namespace to a Team.

use super::{Concern, Decision, Operation, Policy, Reason, Requester};
use crate::domain::validation;
use crate::names::TEAM_LABEL;

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
        return Decision::allow(Reason::Unrelated, Concern::Unrelated).team(subject_team);
    }
    if !policy.is_admin(&request.requester) {
        let what = match (request.old_team, request.team) {
            (_, None) => "remove",
            (None, Some(_)) => "set",
            (Some(_), Some(_)) => "change",
        };
        return Decision::deny(
            Reason::NotAdmin,
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
            Reason::InvalidTeamLabel,
            format!("{}: {why}", team_label_field()),
            Concern::Setup,
        )
        .team(subject_team);
    }
    Decision::allow(Reason::None, Concern::Setup).team(subject_team)
}

fn team_label_field() -> String {
    format!("metadata.labels[{TEAM_LABEL:?}]")
}
