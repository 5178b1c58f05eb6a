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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NS, alice, policy, root};
    use super::*;

    /// `by` writes namespace `team-acme` with Team label `team` (and `old_team` before).
    fn relabel<'a>(
        by: Requester<'a>,
        operation: Operation,
        old_team: Option<&'a str>,
        team: Option<&'a str>,
    ) -> NamespaceRequest<'a> {
        NamespaceRequest {
            name: NS,
            operation,
            requester: by,
            team,
            old_team,
        }
    }

    #[test]
    fn only_admins_set_change_or_remove_the_team_label() {
        for (operation, old, new) in [
            (Operation::Create, None, Some("acme")),
            (Operation::Update, Some("acme"), Some("globex")),
            (Operation::Update, Some("acme"), None),
        ] {
            let d = admit_namespace(&policy(), &relabel(alice(), operation, old, new));
            assert_eq!(d.reason, Reason::NotAdmin);
            assert_eq!(d.concern, Concern::Identity);
            assert!(
                d.message
                    .starts_with("metadata.labels[\"connectors.openteam.io/team\"]")
            );
            let d = admit_namespace(&policy(), &relabel(root(), operation, old, new));
            assert!(d.allowed, "{d:?}");
        }
    }

    #[test]
    fn anyone_may_update_a_namespace_that_keeps_its_team_label() {
        let request = relabel(alice(), Operation::Update, Some("acme"), Some("acme"));
        let d = admit_namespace(&policy(), &request);
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::Unrelated);
        assert_eq!(d.subject.team.as_deref(), Some("acme"));
    }

    #[test]
    fn the_team_label_must_be_a_team_id() {
        let request = relabel(root(), Operation::Create, None, Some("Not_A_Label"));
        let d = admit_namespace(&policy(), &request);
        assert_eq!(d.reason, Reason::InvalidTeamLabel);
    }
}
