//! Access that no longer holds: the rule by which running pods are judged again, after the
//! admission webhook let them in, against today's connections and Team labels.
//!
//! The webhook judges a pod once, when it is created or changed, against the cluster as it was
//! then. Facts change afterwards without the pod changing: a connection is created after a pod
//! that already names its runtime Secret `<connection>-sp-api` (nothing judged that name when
//! the pod was admitted), a gateway is removed from `spec.gateways`, a pod's gateway label is
//! changed by a path the webhook does not see, or the namespace is given to another Team. This
//! rule says, for one connection and one pod as they are now, whether the pod's references to
//! the connection's Secrets are still allowed. It is the webhook's pod rule restated for one
//! connection, plus the Team check the connection rule makes at admission:
//!
//! - a pod that references the runtime Secret needs the namespace's Team to be the
//!   connection's `spec.teamId`, and its gateway label listed in `spec.gateways`;
//! - the runtime Secret may only be mounted as a whole secret or projected volume (`env`,
//!   `envFrom` and `subPath` never see a refreshed token; image pull Secrets and volume drivers
//!   are not a way to read it);
//! - no pod may reference the connection's sealed credentials or its sealed token store.
//!
//! Plain values in, plain values out: the controller turns its trimmed pod cache into
//! [`PodView`]s. The bounded words of [`Violation`] are the admission webhook's reasons for the
//! same rules, so one vocabulary names them in metrics, audit records and runbooks.

use schemars::JsonSchema;

use super::admission::{PodView, ReferenceKind, SecretReference};
use super::validation::{RUNTIME_SECRET_SUFFIX, TOKEN_STORE_SUFFIX};
use crate::names::GATEWAY_LABEL;

/// What the operator does about a pod found outside the rules (`spec.onUnauthorizedMount`; the
/// CRD field's own type, which is why it derives the schema).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, JsonSchema,
)]
pub enum OnUnauthorizedMount {
    /// Report it: condition, Warning Event, audit record, metric and alert.
    #[default]
    Report,
    /// Report it and evict the pod through the Eviction API (PodDisruptionBudgets apply).
    Evict,
}

impl OnUnauthorizedMount {
    /// The value as `spec.onUnauthorizedMount` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "Report",
            Self::Evict => "Evict",
        }
    }
}

/// Which rule a pod breaks. [`Violation::as_str`] is the bounded word of metrics, audit records
/// and the status, the same as the admission webhook's reason for that rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Violation {
    /// The namespace's Team (its `connectors.openteam.io/team` label) is not the connection's
    /// `spec.teamId`, or the namespace has no Team any more.
    TeamMismatch,
    /// The pod has no gateway label.
    MissingGatewayLabel,
    /// The pod's gateway is not listed in `spec.gateways`.
    GatewayNotListed,
    /// The runtime Secret is used through `env` or `envFrom`.
    EnvReference,
    /// The runtime Secret's volume is mounted with `subPath`.
    SubPathMount,
    /// The runtime Secret is an image pull Secret or a volume driver's credentials.
    UnsupportedReference,
    /// The pod references the sealed credentials or the sealed token store.
    SealedSecretReference,
}

impl Violation {
    /// Every violation, most important first (the order [`judge`] reports them in).
    pub const ALL: &'static [Violation] = &[
        Violation::TeamMismatch,
        Violation::MissingGatewayLabel,
        Violation::GatewayNotListed,
        Violation::EnvReference,
        Violation::SubPathMount,
        Violation::UnsupportedReference,
        Violation::SealedSecretReference,
    ];

    /// The bounded word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Violation::TeamMismatch => "team_mismatch",
            Violation::MissingGatewayLabel => "missing_gateway_label",
            Violation::GatewayNotListed => "gateway_not_listed",
            Violation::EnvReference => "env_reference",
            Violation::SubPathMount => "sub_path_mount",
            Violation::UnsupportedReference => "unsupported_reference",
            Violation::SealedSecretReference => "sealed_secret_reference",
        }
    }
}

/// One broken rule, with a sentence for people that names the field (never a secret value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    /// Which rule.
    pub violation: Violation,
    /// Which field, and why.
    pub message: String,
}

/// A connection as the rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionRule<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `spec.teamId`.
    pub team_id: &'a str,
    /// `spec.gateways`.
    pub gateways: &'a [String],
    /// `spec.credentialsSecretName`.
    pub credentials_secret_name: &'a str,
}

impl ConnectionRule<'_> {
    /// `<name>-sp-api`.
    pub fn runtime_secret_name(&self) -> String {
        format!("{}{RUNTIME_SECRET_SUFFIX}", self.name)
    }

    /// `<name>-sp-api-sealed`.
    pub fn token_store_name(&self) -> String {
        format!("{}{TOKEN_STORE_SUFFIX}", self.name)
    }
}

/// The connection whose Secret `secret` might be, by name alone: `c` for `c-sp-api` and
/// `c-sp-api-sealed`. A pod's reference to such a name is judged when connection `c` exists,
/// whenever that is.
pub fn connection_named_by(secret: &str) -> Option<&str> {
    secret
        .strip_suffix(TOKEN_STORE_SUFFIX)
        .or_else(|| secret.strip_suffix(RUNTIME_SECRET_SUFFIX))
        .filter(|c| !c.is_empty())
}

/// Judges one pod's references to `connection`'s Secrets, in a namespace whose Team is
/// `namespace_team` (`None`: unlabelled). Empty when the pod references none of them, or only
/// as the rules allow; otherwise every broken rule, most important first.
pub fn judge(
    connection: &ConnectionRule<'_>,
    namespace_team: Option<&str>,
    pod: &PodView,
) -> Vec<Breach> {
    let runtime = connection.runtime_secret_name();
    let store = connection.token_store_name();
    let mut breaches = Vec::new();
    let mut uses_runtime = false;
    for reference in &pod.references {
        let secret = reference.secret.as_str();
        if secret == store || secret == connection.credentials_secret_name {
            breaches.push(sealed(reference, secret == store));
        } else if secret == runtime {
            uses_runtime = true;
            breaches.extend(how_used(reference, pod));
        }
    }
    if uses_runtime {
        if let Some(breach) = gateway(connection, &runtime, pod) {
            breaches.push(breach);
        }
        if namespace_team != Some(connection.team_id) {
            let now = namespace_team.map_or_else(
                || "carries no Team label".to_owned(),
                |team| format!("belongs to Team {team:?}"),
            );
            breaches.push(Breach {
                violation: Violation::TeamMismatch,
                message: format!(
                    "the namespace {now}, but connection {:?} is Team {:?}'s: no pod here may \
                     use runtime Secret {runtime:?}",
                    connection.name, connection.team_id
                ),
            });
        }
    }
    // Most important first; references in the order the pod lists them.
    breaches.sort_by_key(|b| b.violation);
    breaches
}

/// The gateway rule: the pod's gateway label is listed in `spec.gateways`.
fn gateway(connection: &ConnectionRule<'_>, runtime: &str, pod: &PodView) -> Option<Breach> {
    let listed = connection.gateways.join(", ");
    let name = connection.name;
    match pod.gateway.as_deref() {
        None => Some(Breach {
            violation: Violation::MissingGatewayLabel,
            message: format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: missing: only pods of a gateway listed in \
                 connection {name:?} spec.gateways ({listed}) may use runtime Secret {runtime:?}"
            ),
        }),
        Some(gateway) if !connection.gateways.iter().any(|g| g == gateway) => Some(Breach {
            violation: Violation::GatewayNotListed,
            message: format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: gateway {gateway:?} is not listed in \
                 connection {name:?} spec.gateways ({listed}), so it may not use runtime Secret \
                 {runtime:?}"
            ),
        }),
        Some(_) => None,
    }
}

/// How a reference to the runtime Secret uses it: only whole secret or projected volumes.
fn how_used(reference: &SecretReference, pod: &PodView) -> Vec<Breach> {
    let (field, secret) = (&reference.field, &reference.secret);
    match reference.kind {
        ReferenceKind::EnvValueFrom | ReferenceKind::EnvFrom => vec![Breach {
            violation: Violation::EnvReference,
            message: format!(
                "{field}: runtime Secret {secret:?} is used through the environment, which never \
                 sees a refreshed token"
            ),
        }],
        ReferenceKind::ImagePullSecret | ReferenceKind::VolumeDriver => vec![Breach {
            violation: Violation::UnsupportedReference,
            message: format!(
                "{field}: runtime Secret {secret:?} may only be mounted as a secret or projected \
                 volume"
            ),
        }],
        ReferenceKind::Volume | ReferenceKind::ProjectedVolume => pod
            .mounts
            .iter()
            .filter(|m| m.sub_path && Some(m.volume.as_str()) == reference.volume.as_deref())
            .map(|mount| Breach {
                violation: Violation::SubPathMount,
                message: format!(
                    "{}.subPath: volume {:?} holds runtime Secret {secret:?}: a subPath mount \
                     never sees a refreshed token",
                    mount.field, mount.volume
                ),
            })
            .collect(),
    }
}

fn sealed(reference: &SecretReference, token_store: bool) -> Breach {
    let what = if token_store {
        "the connection's sealed token store"
    } else {
        "the connection's sealed LWA credentials"
    };
    Breach {
        violation: Violation::SealedSecretReference,
        message: format!(
            "{}: Secret {:?} is {what}: no pod may use it",
            reference.field, reference.secret
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::admission::{Reason, VolumeMount};

    const TEAM: &str = "acme";

    fn gateways() -> Vec<String> {
        vec!["gw-main".to_owned()]
    }

    /// Connection `acme-us` of Team acme, listing `gateways`, with credentials `acme-us-lwa`.
    fn connection(gateways: &[String]) -> ConnectionRule<'_> {
        ConnectionRule {
            name: "acme-us",
            team_id: TEAM,
            gateways,
            credentials_secret_name: "acme-us-lwa",
        }
    }

    /// A pod, labelled as `gateway` when given, whose container mounts volume `token`.
    fn pod(gateway: Option<&str>) -> PodView {
        PodView {
            gateway: gateway.map(str::to_owned),
            labels_field: "metadata.labels",
            owned_by_controller: false,
            references: Vec::new(),
            mounts: vec![VolumeMount {
                field: "spec.containers[0].volumeMounts[0]".into(),
                volume: "token".into(),
                sub_path: false,
            }],
        }
    }

    fn referencing(mut pod: PodView, field: &str, secret: &str, kind: ReferenceKind) -> PodView {
        let volume = matches!(kind, ReferenceKind::Volume | ReferenceKind::ProjectedVolume)
            .then(|| "token".to_owned());
        pod.references.push(SecretReference {
            field: field.into(),
            secret: secret.into(),
            kind,
            volume,
        });
        pod
    }

    /// `pod` mounting `secret` as its volume `token`.
    fn mounting(pod: PodView, secret: &str) -> PodView {
        referencing(pod, "spec.volumes[0].secret", secret, ReferenceKind::Volume)
    }

    fn violations(breaches: &[Breach]) -> Vec<Violation> {
        breaches.iter().map(|b| b.violation).collect()
    }

    #[test]
    fn a_listed_gateway_of_the_team_mounting_the_whole_volume_is_allowed() {
        let gateways = gateways();
        let pod = mounting(pod(Some("gw-main")), "acme-us-sp-api");
        assert_eq!(judge(&connection(&gateways), Some(TEAM), &pod), []);
    }

    #[test]
    fn a_pod_that_references_none_of_the_connections_secrets_is_not_judged() {
        let gateways = gateways();
        // Another connection's runtime Secret, an ordinary Secret, no gateway label: not this
        // connection's business.
        let pod = mounting(mounting(pod(None), "acme-de-sp-api"), "app-config");
        assert_eq!(judge(&connection(&gateways), None, &pod), []);
    }

    #[test]
    fn a_pod_admitted_before_its_connection_existed_is_found_once_it_does() {
        // Admitted when no connection `acme-us` existed: nothing judged the name. Now it does
        // and does not list the pod's gateway.
        let gateways = gateways();
        let pod = mounting(pod(Some("gw-early")), "acme-us-sp-api");
        let breaches = judge(&connection(&gateways), Some(TEAM), &pod);
        assert_eq!(violations(&breaches), [Violation::GatewayNotListed]);
        assert!(
            breaches[0]
                .message
                .contains("gateway \"gw-early\" is not listed"),
            "{}",
            breaches[0].message
        );
    }

    #[test]
    fn a_gateway_removed_from_the_list_loses_its_access() {
        let before = vec!["gw-main".to_owned(), "gw-old".to_owned()];
        let after = gateways();
        let pod = mounting(pod(Some("gw-old")), "acme-us-sp-api");
        assert_eq!(judge(&connection(&before), Some(TEAM), &pod), []);
        assert_eq!(
            violations(&judge(&connection(&after), Some(TEAM), &pod)),
            [Violation::GatewayNotListed]
        );
    }

    #[test]
    fn a_pod_whose_gateway_label_was_removed_is_found() {
        let gateways = gateways();
        let pod = mounting(pod(None), "acme-us-sp-api");
        let breaches = judge(&connection(&gateways), Some(TEAM), &pod);
        assert_eq!(violations(&breaches), [Violation::MissingGatewayLabel]);
        assert!(
            breaches[0]
                .message
                .starts_with("metadata.labels[\"connectors.openteam.io/gateway\"]: missing")
        );
    }

    #[test]
    fn a_namespace_given_to_another_team_or_unbound_takes_access_from_every_pod() {
        let gateways = gateways();
        let pod = mounting(pod(Some("gw-main")), "acme-us-sp-api");
        let breaches = judge(&connection(&gateways), Some("globex"), &pod);
        assert_eq!(violations(&breaches), [Violation::TeamMismatch]);
        assert!(breaches[0].message.contains("belongs to Team \"globex\""));
        let breaches = judge(&connection(&gateways), None, &pod);
        assert_eq!(violations(&breaches), [Violation::TeamMismatch]);
        assert!(breaches[0].message.contains("carries no Team label"));
    }

    #[test]
    fn env_sub_path_and_other_uses_are_found_even_for_a_listed_gateway() {
        let gateways = gateways();
        let mut pod = referencing(
            pod(Some("gw-main")),
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            "acme-us-sp-api",
            ReferenceKind::EnvValueFrom,
        );
        pod = referencing(
            pod,
            "spec.imagePullSecrets[0]",
            "acme-us-sp-api",
            ReferenceKind::ImagePullSecret,
        );
        pod = mounting(pod, "acme-us-sp-api");
        pod.mounts[0].sub_path = true;
        let breaches = judge(&connection(&gateways), Some(TEAM), &pod);
        assert_eq!(
            violations(&breaches),
            [
                Violation::EnvReference,
                Violation::SubPathMount,
                Violation::UnsupportedReference
            ]
        );
        assert!(
            breaches[0]
                .message
                .starts_with("spec.containers[0].env[0].valueFrom.secretKeyRef:")
        );
        assert!(
            breaches[1]
                .message
                .starts_with("spec.containers[0].volumeMounts[0].subPath:")
        );
    }

    #[test]
    fn sealed_credentials_and_token_stores_are_never_allowed() {
        let gateways = gateways();
        for secret in ["acme-us-lwa", "acme-us-sp-api-sealed"] {
            let pod = mounting(pod(Some("gw-main")), secret);
            let breaches = judge(&connection(&gateways), Some(TEAM), &pod);
            assert_eq!(
                violations(&breaches),
                [Violation::SealedSecretReference],
                "{secret}"
            );
        }
    }

    #[test]
    fn every_broken_rule_is_reported_most_important_first() {
        let gateways = gateways();
        let mut pod = mounting(pod(None), "acme-us-lwa");
        pod = referencing(
            pod,
            "spec.containers[0].envFrom[0].secretRef",
            "acme-us-sp-api",
            ReferenceKind::EnvFrom,
        );
        let breaches = judge(&connection(&gateways), Some("globex"), &pod);
        assert_eq!(
            violations(&breaches),
            [
                Violation::TeamMismatch,
                Violation::MissingGatewayLabel,
                Violation::EnvReference,
                Violation::SealedSecretReference
            ]
        );
    }

    #[test]
    fn secret_names_point_at_their_connection() {
        assert_eq!(connection_named_by("acme-us-sp-api"), Some("acme-us"));
        assert_eq!(
            connection_named_by("acme-us-sp-api-sealed"),
            Some("acme-us")
        );
        assert_eq!(connection_named_by("app-config"), None);
        assert_eq!(connection_named_by("-sp-api"), None);
    }

    #[test]
    fn violations_are_named_as_the_webhook_names_the_same_rules() {
        for violation in Violation::ALL {
            assert!(
                Reason::ALL.iter().any(|r| r.as_str() == violation.as_str()),
                "{violation:?} has no admission reason {:?}",
                violation.as_str()
            );
        }
    }
}
