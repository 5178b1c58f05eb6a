//! The `SecurityLogReview` rule: only reviewers record reviews.

use super::verb;
use super::{Concern, Decision, Operation, Policy, Reason, Requester};

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
            Reason::NotReviewer,
            format!(
                "{:?} may not {} SecurityLogReviews: only members of the reviewer groups ({}) may",
                requester.username,
                verb(request.operation),
                policy.reviewer_groups.join(", ")
            ),
            Concern::Identity,
        );
    }
    let mut decision = Decision::allow(Reason::None, Concern::Identity);
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
    use super::super::fixtures::{alice, policy, rita, root};
    use super::*;

    fn create<'a>(by: Requester<'a>, reviewer: Option<&'a str>) -> ReviewRequest<'a> {
        ReviewRequest {
            operation: Operation::Create,
            requester: by,
            reviewer,
        }
    }

    #[test]
    fn only_reviewers_record_reviews() {
        let d = admit_review(&policy(), &create(rita(), Some("rita")));
        assert!(d.allowed && d.warnings.is_empty(), "{d:?}");
        let d = admit_review(&policy(), &create(alice(), Some("alice")));
        assert_eq!(d.reason, Reason::NotReviewer);
        let d = admit_review(&policy(), &create(root(), None));
        assert_eq!(d.reason, Reason::NotReviewer);
    }

    #[test]
    fn a_review_in_another_reviewers_name_is_a_warning() {
        let d = admit_review(&policy(), &create(rita(), Some("someone")));
        assert!(d.allowed && d.warnings.len() == 1, "{d:?}");
    }

    #[test]
    fn reviewers_and_admins_may_change_or_remove_a_review() {
        for operation in [Operation::Update, Operation::Delete] {
            for requester in [rita(), root()] {
                let request = ReviewRequest {
                    operation,
                    requester,
                    reviewer: None,
                };
                assert!(admit_review(&policy(), &request).allowed);
            }
            let request = ReviewRequest {
                operation,
                requester: alice(),
                reviewer: None,
            };
            assert_eq!(
                admit_review(&policy(), &request).reason,
                Reason::NotReviewer
            );
        }
    }
}
