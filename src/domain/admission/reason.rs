//! Why an admission request was decided as it was: one bounded word per rule.
//!
//! The words are a contract. [`Reason::as_str`] is the `reason` label of
//! `amazon_seller_admission_requests_total`, the `reason` of the audit record, the API server's
//! audit annotation `<webhook>/reason`, and the name docs/webhook.md, the runbooks and the alert
//! rules use; renaming one breaks dashboards, alerts and audit queries. The tests below list
//! every word, so that a rename is a visible decision.

use std::fmt;

/// Declares [`Reason`] from one `Variant => "wire_name"` line per reason, so that the enum,
/// [`Reason::as_str`] and [`Reason::ALL`] cannot disagree.
macro_rules! reasons {
    ($($(#[$doc:meta])+ $variant:ident => $wire:literal,)+) => {
        /// Why an admission request was allowed or denied (see the module documentation).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[$doc])+ $variant,)+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),+];

            /// The reason as metrics, the audit log and the API server's audit annotation spell
            /// it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $wire,)+
                }
            }
        }
    };
}

reasons! {
    // Any object kind.
    /// Allowed as is: no rule had anything to say.
    None => "none",
    /// Allowed: the object is not the operator's concern (metered, not audited).
    Unrelated => "unrelated",
    /// Allowed: a delete by one of Kubernetes' cleanup identities.
    Cleanup => "cleanup",
    /// Denied: the requester is not a member of the namespace's Team, an admin or the operator.
    NotTeamMember => "not_team_member",
    /// Denied: the namespace carries no Team label.
    NamespaceNotBound => "namespace_not_bound",

    // Connections.
    /// Denied: `spec.teamId` is not the namespace's Team.
    TeamMismatch => "team_mismatch",
    /// Denied: the spec fails the domain validation.
    InvalidSpec => "invalid_spec",
    /// Denied: an update changes `teamId` or `sellerId`.
    ImmutableField => "immutable_field",
    /// Denied: `spec.credentialsSecretName` names a runtime Secret.
    CredentialsSecretConflict => "credentials_secret_conflict",

    // Runtime Secrets, token stores and credentials Secrets.
    /// Denied: only the operator writes runtime Secrets and token stores.
    NotOperator => "not_operator",
    /// Denied: plaintext credentials reached the validating webhook.
    PlaintextCredentials => "plaintext_credentials",
    /// Denied: a credentials Secret without the credentials Secret type.
    WrongSecretType => "wrong_secret_type",
    /// Denied: a credentials Secret or intake without the `lwa-credentials` role label.
    MissingRoleLabel => "missing_role_label",
    /// Denied: a credentials Secret without its `sealed` key.
    MissingEnvelope => "missing_envelope",
    /// Denied: the `sealed` value is not a well-formed envelope.
    MalformedEnvelope => "malformed_envelope",

    // Intake sealing.
    /// Allowed and patched: a plaintext intake was sealed.
    SealedIntake => "sealed_intake",
    /// Denied: an intake lacks a required key.
    IncompleteIntake => "incomplete_intake",
    /// Denied: an intake key is unknown or its value is not valid.
    InvalidIntake => "invalid_intake",
    /// Denied: an intake uses `generateName` instead of a name.
    NameRequired => "name_required",
    /// Denied: an existing Secret of another type cannot become a credentials Secret.
    TypeImmutable => "type_immutable",
    /// Denied: sealing failed; nothing was stored.
    SealFailed => "seal_failed",
    /// Denied: an annotation or label holds one of the intake's credential values.
    CredentialsInMetadata => "credentials_in_metadata",

    // Pods.
    /// Denied: a pod references sealed credentials or a token store.
    SealedSecretReference => "sealed_secret_reference",
    /// Denied: a pod reads a runtime Secret through `env` or `envFrom`.
    EnvReference => "env_reference",
    /// Denied: a pod uses a runtime Secret other than as a volume.
    UnsupportedReference => "unsupported_reference",
    /// Denied: a pod mounts a runtime Secret with `subPath`.
    SubPathMount => "sub_path_mount",
    /// Denied: a runtime Secret of a connection that does not exist.
    UnknownConnection => "unknown_connection",
    /// Denied: a pod without the gateway label references a runtime Secret.
    MissingGatewayLabel => "missing_gateway_label",
    /// Denied: the pod's gateway is not in the connection's `spec.gateways`.
    GatewayNotListed => "gateway_not_listed",

    // Namespaces.
    /// Denied: only admins set, change or remove a namespace's Team label.
    NotAdmin => "not_admin",
    /// Denied: the Team label is not a valid team id.
    InvalidTeamLabel => "invalid_team_label",

    // Security log reviews.
    /// Denied: only reviewers record reviews (reviewers or admins change or delete them).
    NotReviewer => "not_reviewer",

    // Decided by the webhook's HTTP layer, before any rule.
    /// Denied: the webhook has not synced its view of the cluster yet.
    NotReady => "not_ready",
    /// Answered invalid: the body is not an `AdmissionReview` v1.
    MalformedRequest => "malformed_request",
    /// Answered invalid: the review's object is not a valid object of its kind.
    MalformedObject => "malformed_object",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Reason;

    /// Every reason with the word it is known by outside the process. Changing a word here
    /// changes metric labels, audit records and alert queries: update docs/webhook.md, the
    /// runbooks and deploy/prometheus/ with it.
    const WIRE_NAMES: [(Reason, &str); 35] = [
        (Reason::None, "none"),
        (Reason::Unrelated, "unrelated"),
        (Reason::Cleanup, "cleanup"),
        (Reason::NotTeamMember, "not_team_member"),
        (Reason::NamespaceNotBound, "namespace_not_bound"),
        (Reason::TeamMismatch, "team_mismatch"),
        (Reason::InvalidSpec, "invalid_spec"),
        (Reason::ImmutableField, "immutable_field"),
        (
            Reason::CredentialsSecretConflict,
            "credentials_secret_conflict",
        ),
        (Reason::NotOperator, "not_operator"),
        (Reason::PlaintextCredentials, "plaintext_credentials"),
        (Reason::WrongSecretType, "wrong_secret_type"),
        (Reason::MissingRoleLabel, "missing_role_label"),
        (Reason::MissingEnvelope, "missing_envelope"),
        (Reason::MalformedEnvelope, "malformed_envelope"),
        (Reason::SealedIntake, "sealed_intake"),
        (Reason::IncompleteIntake, "incomplete_intake"),
        (Reason::InvalidIntake, "invalid_intake"),
        (Reason::NameRequired, "name_required"),
        (Reason::TypeImmutable, "type_immutable"),
        (Reason::SealFailed, "seal_failed"),
        (Reason::CredentialsInMetadata, "credentials_in_metadata"),
        (Reason::SealedSecretReference, "sealed_secret_reference"),
        (Reason::EnvReference, "env_reference"),
        (Reason::UnsupportedReference, "unsupported_reference"),
        (Reason::SubPathMount, "sub_path_mount"),
        (Reason::UnknownConnection, "unknown_connection"),
        (Reason::MissingGatewayLabel, "missing_gateway_label"),
        (Reason::GatewayNotListed, "gateway_not_listed"),
        (Reason::NotAdmin, "not_admin"),
        (Reason::InvalidTeamLabel, "invalid_team_label"),
        (Reason::NotReviewer, "not_reviewer"),
        (Reason::NotReady, "not_ready"),
        (Reason::MalformedRequest, "malformed_request"),
        (Reason::MalformedObject, "malformed_object"),
    ];

    #[test]
    fn every_reason_keeps_its_wire_name() {
        let declared: Vec<(Reason, &str)> = Reason::ALL.iter().map(|r| (*r, r.as_str())).collect();
        assert_eq!(
            declared, WIRE_NAMES,
            "a reason was added, removed or renamed"
        );
        for (reason, wire) in WIRE_NAMES {
            assert_eq!(reason.to_string(), wire);
        }
    }

    #[test]
    fn reason_names_are_unique_snake_case_words() {
        let unique: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(unique.len(), Reason::ALL.len(), "two reasons share a name");
        for name in unique {
            // A metric label category: at most 48 characters, starting with a letter.
            let snake_case = name.len() <= 48
                && name.split('_').all(|word| {
                    !word.is_empty()
                        && word
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                && name.starts_with(|c: char| c.is_ascii_lowercase());
            assert!(snake_case, "{name:?} is not a snake_case word");
        }
    }

    #[test]
    fn every_reason_is_named_in_the_webhook_guide() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhook.md");
        let guide = std::fs::read_to_string(path).unwrap();
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|name| !guide.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/webhook.md does not name the reasons {missing:?}"
        );
    }
}
