//! The pod rules: which pods may use a connection's runtime Secret, how, and who may put one
//! to use. A workload's pod template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
//! CronJob) is judged by the same rules as a pod, so a controller only ever stamps out pods
//! from templates the rules allowed.

use super::{
    Concern, ConnectionFacts, Decision, Findings, Lookup, Operation, Policy, Reason, Requester,
    Subject,
};
use crate::domain::validation::RUNTIME_SECRET_SUFFIX;
use crate::names::{GATEWAY_LABEL, ROLE_LWA_CREDENTIALS, ROLE_RUNTIME_TOKEN, ROLE_TOKEN_STORE};

/// How a pod refers to a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A `secret` volume.
    Volume,
    /// A `projected` volume source.
    ProjectedVolume,
    /// `env[].valueFrom.secretKeyRef`.
    EnvValueFrom,
    /// `envFrom[].secretRef`.
    EnvFrom,
    /// `imagePullSecrets[]`.
    ImagePullSecret,
    /// A volume driver's credentials (`csi.nodePublishSecretRef`, `rbd.secretRef`, …).
    VolumeDriver,
}

/// One reference from a pod to a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// The field path, e.g. `spec.initContainers[0].env[1].valueFrom.secretKeyRef`.
    pub field: String,
    /// The Secret's name.
    pub secret: String,
    /// How it is referenced.
    pub kind: ReferenceKind,
    /// For volume references: the volume's name.
    pub volume: Option<String>,
}

/// One volume mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The field path, e.g. `spec.containers[0].volumeMounts[1]`.
    pub field: String,
    /// The mounted volume.
    pub volume: String,
    /// Whether the mount uses `subPath` or `subPathExpr`.
    pub sub_path: bool,
}

/// A pod (or a workload's pod template) as the rules see it: its gateway label, whether a
/// controller owns it, and every Secret reference in containers, init containers, ephemeral
/// containers and volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// The `connectors.openteam.io/gateway` label (of the pod, or of the template).
    pub gateway: Option<String>,
    /// Where the labels are, for messages: `metadata.labels` for a pod,
    /// `spec.template.metadata.labels` for a workload's template.
    pub labels_field: &'static str,
    /// The object (the pod, or the workload) has a controller `ownerReference`: a workload
    /// controller made it from its owner's template.
    pub owned_by_controller: bool,
    /// Every reference to a Secret.
    pub references: Vec<SecretReference>,
    /// Every volume mount.
    pub mounts: Vec<VolumeMount>,
}

impl Default for PodView {
    /// A pod without labels, owner or references.
    fn default() -> Self {
        PodView {
            gateway: None,
            labels_field: "metadata.labels",
            owned_by_controller: false,
            references: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

/// A request about a pod (create, update, or the `ephemeralcontainers` subresource), or about
/// a workload with a pod template (create, update).
#[derive(Clone, Debug)]
pub struct PodRequest<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The pod as it will be.
    pub pod: &'a PodView,
    /// Whether the pod's spec (a workload's template spec) or its gateway label differs from
    /// the stored object's; always true on create. Only such a request can put a connection to
    /// a new use, so only such a request is judged on who asks: an update that leaves both
    /// alone (labels, finalizers, owner references, a workload's replica count; the garbage
    /// collector orphaning or finishing a foreground delete) needs no Team.
    pub spec_changed: bool,
}

enum Referenced {
    Runtime {
        connection: Option<ConnectionFacts>,
        label: Option<String>,
    },
    Credentials,
    TokenStore,
    Other,
}

fn referenced(
    namespace: &str,
    name: &str,
    connections: &[ConnectionFacts],
    lookup: &dyn Lookup,
) -> Referenced {
    if connections.iter().any(|c| c.token_store_name() == name) {
        return Referenced::TokenStore;
    }
    if let Some(c) = connections.iter().find(|c| c.runtime_secret_name() == name) {
        return Referenced::Runtime {
            connection: Some(c.clone()),
            label: Some(c.name.clone()),
        };
    }
    match lookup.secret(namespace, name) {
        Some(facts) if facts.role == ROLE_RUNTIME_TOKEN => {
            let connection = facts
                .connection
                .as_ref()
                .and_then(|n| connections.iter().find(|c| &c.name == n).cloned());
            return Referenced::Runtime {
                connection,
                label: facts.connection,
            };
        }
        Some(facts) if facts.role == ROLE_LWA_CREDENTIALS => return Referenced::Credentials,
        Some(facts) if facts.role == ROLE_TOKEN_STORE => return Referenced::TokenStore,
        _ => {}
    }
    if connections
        .iter()
        .any(|c| c.credentials_secret_name == name)
    {
        return Referenced::Credentials;
    }
    Referenced::Other
}

/// The pod rules, for pods and workloads' pod templates alike: a pod that references a
/// connection's runtime Secret is made (or its spec or gateway label changed) by a member of
/// the connection's Team, an admin, a ServiceAccount of the namespace, or a workload
/// controller for its owner; every reference to a runtime Secret requires the pod's gateway
/// label to be listed in that connection's `spec.gateways`, and must be a whole-volume mount
/// (`env`, `envFrom` and `subPath` never see a refreshed token); no pod may reference sealed
/// credentials or a sealed token store.
pub fn admit_pod(policy: &Policy, lookup: &dyn Lookup, request: &PodRequest<'_>) -> Decision {
    let pod = request.pod;
    let connections = lookup.connections(request.namespace);
    let team = lookup.namespace_team(request.namespace);
    let mut findings = Findings::default();
    // Who may use a connection comes first: the denial then names the identity rule. Only a
    // new or changed pod (template) can put a connection to a new use.
    let mut used: Vec<&ConnectionFacts> = Vec::new();
    for reference in pod.references.iter().filter(|_| request.spec_changed) {
        if let Referenced::Runtime {
            connection: Some(connection),
            ..
        } = referenced(request.namespace, &reference.secret, &connections, lookup)
            && !used.iter().any(|c| c.name == connection.name)
            && let Some(known) = connections.iter().find(|c| c.name == connection.name)
        {
            used.push(known);
        }
    }
    let mut identity_refused = false;
    for connection in &used {
        if !policy.may_use(
            &request.requester,
            &connection.team_id,
            request.namespace,
            pod.owned_by_controller,
        ) {
            identity_refused = true;
            findings.violation(
                Reason::NotTeamMember,
                format!(
                    "{:?} is not a member of team {:?} (group \"{}{}\"): only the Team's \
                     members, admins, ServiceAccounts of namespace {:?} or a workload controller \
                     making the pod for its owner may use connection {:?}'s runtime Secret",
                    request.requester.username,
                    connection.team_id,
                    policy.team_group_prefix,
                    connection.team_id,
                    request.namespace,
                    connection.name
                ),
            );
        }
    }
    let mut runtime_connection: Option<String> = None;
    let mut checked_gateways: Vec<String> = Vec::new();
    let mut references_credentials = false;

    for reference in &pod.references {
        let (field, secret) = (&reference.field, &reference.secret);
        match referenced(request.namespace, secret, &connections, lookup) {
            Referenced::Other => {}
            Referenced::Credentials => {
                references_credentials = true;
                findings.violation(
                    Reason::SealedSecretReference,
                    format!(
                        "{field}: Secret {secret:?} holds sealed LWA credentials: no pod may use \
                         them (gateways mount the runtime Secret \
                         <connection>{RUNTIME_SECRET_SUFFIX})"
                    ),
                );
            }
            Referenced::TokenStore => {
                references_credentials = true;
                findings.violation(
                    Reason::SealedSecretReference,
                    format!(
                        "{field}: Secret {secret:?} is a connection's sealed token store: no pod \
                         may use it (gateways call the runtime credential endpoint, or mount the \
                         runtime Secret <connection>{RUNTIME_SECRET_SUFFIX})"
                    ),
                );
            }
            Referenced::Runtime { connection, label } => {
                if runtime_connection.is_none() {
                    runtime_connection = label.clone();
                }
                match reference.kind {
                    ReferenceKind::EnvValueFrom | ReferenceKind::EnvFrom => findings.violation(
                        Reason::EnvReference,
                        format!(
                            "{field}: runtime Secret {secret:?} may only be mounted as a volume: \
                             environment variables never see a refreshed token"
                        ),
                    ),
                    ReferenceKind::ImagePullSecret | ReferenceKind::VolumeDriver => findings
                        .violation(
                            Reason::UnsupportedReference,
                            format!(
                                "{field}: runtime Secret {secret:?} may only be mounted as a \
                                 secret or projected volume"
                            ),
                        ),
                    ReferenceKind::Volume | ReferenceKind::ProjectedVolume => {
                        for mount in pod.mounts.iter().filter(|m| {
                            m.sub_path && Some(m.volume.as_str()) == reference.volume.as_deref()
                        }) {
                            findings.violation(
                                Reason::SubPathMount,
                                format!(
                                    "{}.subPath: volume {:?} holds runtime Secret {secret:?}: \
                                     subPath mounts never see a refreshed token; mount the whole \
                                     volume",
                                    mount.field, mount.volume
                                ),
                            );
                        }
                    }
                }
                let key = label.clone().unwrap_or_default();
                if checked_gateways.contains(&key) {
                    continue;
                }
                checked_gateways.push(key);
                check_gateway(&mut findings, pod, reference, connection.as_ref(), label);
            }
        }
    }

    let concern = if identity_refused {
        Concern::Identity
    } else if runtime_connection.is_some() || references_credentials || pod.gateway.is_some() {
        Concern::Gateway
    } else {
        Concern::Unrelated
    };
    let mut decision = findings.decide(concern);
    decision.subject = Subject {
        team,
        connection: runtime_connection,
        gateway: pod.gateway.clone(),
        runtime_access: !checked_gateways.is_empty(),
    };
    decision
}

/// The gateway rule for one connection's runtime Secret: the connection exists and lists the
/// pod's gateway label in `spec.gateways`.
fn check_gateway(
    findings: &mut Findings,
    pod: &PodView,
    reference: &SecretReference,
    connection: Option<&ConnectionFacts>,
    label: Option<String>,
) {
    let (field, secret) = (&reference.field, &reference.secret);
    let Some(connection) = connection else {
        findings.violation(
            Reason::UnknownConnection,
            format!(
                "{field}: Secret {secret:?} is a runtime Secret of connection {:?}, which does not \
                 exist: no gateway may use it",
                label.unwrap_or_default()
            ),
        );
        return;
    };
    let (name, listed) = (&connection.name, connection.gateways.join(", "));
    let labels = pod.labels_field;
    match pod.gateway.as_deref() {
        None => findings.violation(
            Reason::MissingGatewayLabel,
            format!(
                "{labels}[{GATEWAY_LABEL:?}]: missing: only pods of a gateway listed in \
                 connection {name:?} spec.gateways ({listed}) may use runtime Secret {secret:?} \
                 ({field})"
            ),
        ),
        Some(gateway) if !connection.gateways.iter().any(|g| g == gateway) => findings.violation(
            Reason::GatewayNotListed,
            format!(
                "{labels}[{GATEWAY_LABEL:?}]: gateway {gateway:?} is not listed in \
                 connection {name:?} spec.gateways ({listed}), so it may not use runtime Secret \
                 {secret:?} ({field})"
            ),
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{FakeCluster, NS, alice, eve, mallory, operator, policy, root};
    use super::*;

    /// The runtime Secret of connection `acme-us`, which lists gateway `gw-main`.
    const RUNTIME_SECRET: &str = "acme-us-sp-api";

    impl PodView {
        /// A pod whose first container mounts volume `token` whole; no gateway label and no
        /// Secret reference yet.
        fn test() -> Self {
            PodView {
                gateway: None,
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

        /// Labelled `connectors.openteam.io/gateway=<gateway>`.
        fn gateway(self, gateway: &str) -> Self {
            Self {
                gateway: Some(gateway.into()),
                ..self
            }
        }

        /// With a reference at `field` to `secret`; volume references are volume `token`.
        fn referencing(mut self, field: &str, secret: &str, kind: ReferenceKind) -> Self {
            let volume = matches!(kind, ReferenceKind::Volume | ReferenceKind::ProjectedVolume)
                .then(|| "token".to_owned());
            self.references.push(SecretReference {
                field: field.into(),
                secret: secret.into(),
                kind,
                volume,
            });
            self
        }

        /// Mounting `secret` as volume `token` (`spec.volumes[0].secret`).
        fn mounting(self, secret: &str) -> Self {
            self.referencing("spec.volumes[0].secret", secret, ReferenceKind::Volume)
        }

        /// Mounting the runtime Secret of `acme-us` as a whole volume.
        fn mounting_the_runtime_secret(self) -> Self {
            self.mounting(RUNTIME_SECRET)
        }
    }

    /// The decision on Alice creating `pod` in `cluster`.
    fn admit_in(cluster: &FakeCluster, pod: &PodView) -> Decision {
        admit_as(cluster, alice(), pod)
    }

    /// The decision on `requester` creating `pod` in `cluster`.
    fn admit_as(cluster: &FakeCluster, requester: Requester<'_>, pod: &PodView) -> Decision {
        admit_pod(
            &policy(),
            cluster,
            &PodRequest {
                namespace: NS,
                operation: Operation::Create,
                requester,
                pod,
                spec_changed: true,
            },
        )
    }

    /// The decision on `requester` updating `pod` in `cluster`, changing its spec or gateway
    /// label or not.
    fn update_as(requester: Requester<'_>, pod: &PodView, spec_changed: bool) -> Decision {
        admit_pod(
            &policy(),
            &FakeCluster::acme(),
            &PodRequest {
                namespace: NS,
                operation: Operation::Update,
                requester,
                pod,
                spec_changed,
            },
        )
    }

    fn admit(pod: &PodView) -> Decision {
        admit_in(&FakeCluster::acme(), pod)
    }

    #[test]
    fn a_listed_gateway_may_mount_the_runtime_secret() {
        let d = admit(
            &PodView::test()
                .gateway("gw-main")
                .mounting_the_runtime_secret(),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, Reason::None);
        assert_eq!(d.concern, Concern::Gateway);
        assert!(d.subject.runtime_access);
        assert_eq!(d.subject.team.as_deref(), Some("acme"));
        assert_eq!(d.subject.connection.as_deref(), Some("acme-us"));
        assert_eq!(d.subject.gateway.as_deref(), Some("gw-main"));
    }

    #[test]
    fn a_pod_without_the_gateway_label_may_not_mount_it() {
        let d = admit(&PodView::test().mounting_the_runtime_secret());
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
        assert!(
            d.message
                .starts_with("metadata.labels[\"connectors.openteam.io/gateway\"]: missing")
        );
        assert!(d.subject.runtime_access);
    }

    #[test]
    fn a_gateway_of_another_connection_may_not_mount_it() {
        let d = admit(
            &PodView::test()
                .gateway("gw-other")
                .mounting_the_runtime_secret(),
        );
        assert_eq!(d.reason, Reason::GatewayNotListed);
        assert!(d.message.contains("\"gw-other\""), "{}", d.message);
    }

    /// Why a listed gateway's pod that references the runtime Secret at `field` as `kind` is
    /// refused; the message starts with the field.
    fn refusal_for_a_listed_gateway(field: &str, kind: ReferenceKind) -> Reason {
        let pod = PodView::test()
            .gateway("gw-main")
            .referencing(field, RUNTIME_SECRET, kind);
        let d = admit(&pod);
        assert!(!d.allowed);
        assert!(d.message.starts_with(field), "{}", d.message);
        d.reason
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
            assert_eq!(
                refusal_for_a_listed_gateway(field, kind),
                Reason::EnvReference
            );
        }
    }

    #[test]
    fn image_pull_and_volume_driver_use_of_the_runtime_secret_are_denied() {
        for (field, kind) in [
            ("spec.imagePullSecrets[0]", ReferenceKind::ImagePullSecret),
            (
                "spec.volumes[1].csi.nodePublishSecretRef",
                ReferenceKind::VolumeDriver,
            ),
        ] {
            assert_eq!(
                refusal_for_a_listed_gateway(field, kind),
                Reason::UnsupportedReference
            );
        }
    }

    #[test]
    fn a_sub_path_mount_of_the_runtime_secret_is_denied() {
        let mut pod = PodView::test()
            .gateway("gw-main")
            .mounting_the_runtime_secret();
        pod.mounts.push(VolumeMount {
            field: "spec.containers[1].volumeMounts[0]".into(),
            volume: "token".into(),
            sub_path: true,
        });
        let d = admit(&pod);
        assert_eq!(d.reason, Reason::SubPathMount);
        assert!(
            d.message
                .starts_with("spec.containers[1].volumeMounts[0].subPath")
        );
    }

    #[test]
    fn a_projected_volume_is_a_reference_too() {
        let projected = PodView::test().referencing(
            "spec.volumes[0].projected.sources[1].secret",
            RUNTIME_SECRET,
            ReferenceKind::ProjectedVolume,
        );
        assert!(admit(&projected.clone().gateway("gw-main")).allowed);
        assert_eq!(admit(&projected).reason, Reason::MissingGatewayLabel);
    }

    #[test]
    fn no_pod_may_reference_a_sealed_token_store() {
        // By the name of an existing connection's store, even from a listed gateway.
        let by_name = PodView::test()
            .gateway("gw-main")
            .mounting("acme-us-sp-api-sealed");
        let d = admit(&by_name);
        assert!(!d.allowed);
        assert_eq!(d.reason, Reason::SealedSecretReference);
        assert_eq!(d.concern, Concern::Gateway);
        // By the role label of a Secret the view knows.
        let cluster = FakeCluster::acme().with_secret("renamed-store", ROLE_TOKEN_STORE, "acme-us");
        let by_label = PodView::test().gateway("gw-main").referencing(
            "spec.containers[0].envFrom[0].secretRef",
            "renamed-store",
            ReferenceKind::EnvFrom,
        );
        assert_eq!(
            admit_in(&cluster, &by_label).reason,
            Reason::SealedSecretReference
        );
    }

    #[test]
    fn no_pod_may_reference_sealed_credentials() {
        let pod = PodView::test().gateway("gw-main").mounting("acme-us-lwa");
        let d = admit(&pod);
        assert_eq!(d.reason, Reason::SealedSecretReference);
        assert!(
            d.message
                .starts_with("spec.volumes[0].secret: Secret \"acme-us-lwa\"")
        );
    }

    #[test]
    fn a_runtime_secret_of_a_missing_connection_is_refused() {
        let cluster = FakeCluster::acme().with_secret("ghost-token", ROLE_RUNTIME_TOKEN, "ghost");
        let pod = PodView::test().gateway("gw-main").mounting("ghost-token");
        let d = admit_in(&cluster, &pod);
        assert_eq!(d.reason, Reason::UnknownConnection);
        assert_eq!(d.subject.connection.as_deref(), Some("ghost"));
    }

    #[test]
    fn every_violation_is_reported() {
        let pod = PodView::test().mounting_the_runtime_secret().referencing(
            "spec.containers[0].envFrom[0].secretRef",
            RUNTIME_SECRET,
            ReferenceKind::EnvFrom,
        );
        let d = admit(&pod);
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
        assert!(
            d.message
                .contains("spec.containers[0].envFrom[0].secretRef: runtime Secret")
        );
    }

    #[test]
    fn an_ordinary_pod_is_unrelated() {
        let pod = PodView::test().mounting("app-config");
        let d = admit(&pod);
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::None);
        assert_eq!(d.concern, Concern::Unrelated);
        assert!(!d.subject.runtime_access);
    }

    /// Someone whom RBAC lets create pods in the namespace: `username` in no Team group.
    fn someone(username: &'static str) -> Requester<'static> {
        Requester {
            username,
            groups: &[],
        }
    }

    fn listed_gateway_pod() -> PodView {
        PodView::test()
            .gateway("gw-main")
            .mounting_the_runtime_secret()
    }

    #[test]
    fn another_teams_member_may_not_use_the_runtime_secret_even_as_a_listed_gateway() {
        let cluster = FakeCluster::acme();
        for (who, requester) in [("mallory", mallory()), ("eve", eve())] {
            let d = admit_as(&cluster, requester, &listed_gateway_pod());
            assert!(!d.allowed, "{who}: {d:?}");
            assert_eq!(d.reason, Reason::NotTeamMember, "{who}");
            assert_eq!(d.concern, Concern::Identity, "{who}");
            assert!(d.message.contains(&format!("{who:?}")), "{}", d.message);
            assert!(d.message.contains("team \"acme\""), "{}", d.message);
            assert_eq!(d.subject.connection.as_deref(), Some("acme-us"));
        }
    }

    #[test]
    fn the_teams_members_admins_and_the_namespaces_service_accounts_may_use_it() {
        let cluster = FakeCluster::acme();
        let team_ci = someone("system:serviceaccount:team-acme:ci");
        for (who, requester) in [("alice", alice()), ("root", root()), ("ci", team_ci)] {
            let d = admit_as(&cluster, requester, &listed_gateway_pod());
            assert!(d.allowed, "{who}: {d:?}");
        }
    }

    #[test]
    fn a_service_account_of_another_namespace_may_not_use_it() {
        let cluster = FakeCluster::acme();
        for username in [
            "system:serviceaccount:team-globex:ci",
            "system:serviceaccount:team-acme-evil:ci",
            "system:serviceaccount:team-acme:",
            "system:serviceaccount:kube-system:replicaset-controller",
        ] {
            let d = admit_as(&cluster, someone(username), &listed_gateway_pod());
            assert_eq!(d.reason, Reason::NotTeamMember, "{username}: {d:?}");
        }
        // Nor the operator: it never makes pods.
        let d = admit_as(&cluster, operator(), &listed_gateway_pod());
        assert_eq!(d.reason, Reason::NotTeamMember);
    }

    #[test]
    fn a_workload_controller_may_use_it_only_for_an_owned_object() {
        let cluster = FakeCluster::acme();
        let owned = PodView {
            owned_by_controller: true,
            ..listed_gateway_pod()
        };
        for username in [
            "system:kube-controller-manager",
            "system:serviceaccount:kube-system:replicaset-controller",
            "system:serviceaccount:kube-system:job-controller",
        ] {
            assert!(
                admit_as(&cluster, someone(username), &owned).allowed,
                "{username}"
            );
            let d = admit_as(&cluster, someone(username), &listed_gateway_pod());
            assert_eq!(
                d.reason,
                Reason::NotTeamMember,
                "{username} without an owner"
            );
        }
        // An owner reference is no pass for anyone else.
        let d = admit_as(&cluster, mallory(), &owned);
        assert_eq!(d.reason, Reason::NotTeamMember);
    }

    #[test]
    fn the_identity_rule_comes_first_and_the_other_rules_still_report() {
        let d = admit_as(
            &FakeCluster::acme(),
            mallory(),
            &PodView::test()
                .gateway("gw-other")
                .mounting_the_runtime_secret(),
        );
        assert_eq!(d.reason, Reason::NotTeamMember);
        assert!(d.message.contains("gw-other"), "{}", d.message);
    }

    #[test]
    fn a_pod_that_uses_no_connection_needs_no_team() {
        let d = admit_as(
            &FakeCluster::acme(),
            mallory(),
            &PodView::test().mounting("unrelated-secret"),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.concern, Concern::Unrelated);
    }

    #[test]
    fn an_update_that_leaves_spec_and_gateway_alone_needs_no_team() {
        // The garbage collector orphaning a gateway pod, or anyone relabelling it otherwise.
        let pod = listed_gateway_pod();
        let gc = someone("system:serviceaccount:kube-system:generic-garbage-collector");
        for requester in [gc, mallory()] {
            let d = update_as(requester, &pod, false);
            assert!(d.allowed, "{d:?}");
            assert_eq!(d.concern, Concern::Gateway);
            // The same update changing the spec (an image, an ephemeral container) is judged.
            let d = update_as(requester, &pod, true);
            assert_eq!(d.reason, Reason::NotTeamMember, "{d:?}");
        }
        // The gateway rules still apply to every update.
        let d = update_as(
            mallory(),
            &PodView::test().mounting_the_runtime_secret(),
            false,
        );
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
    }

    #[test]
    fn a_workload_template_is_judged_by_the_same_rules_naming_its_fields() {
        let template = PodView {
            labels_field: "spec.template.metadata.labels",
            ..PodView::test().referencing(
                "spec.template.spec.volumes[0].secret",
                RUNTIME_SECRET,
                ReferenceKind::Volume,
            )
        };
        let d = admit(&template);
        assert_eq!(d.reason, Reason::MissingGatewayLabel);
        assert!(
            d.message.starts_with(
                "spec.template.metadata.labels[\"connectors.openteam.io/gateway\"]: missing"
            ),
            "{}",
            d.message
        );
        assert!(
            d.message
                .ends_with("(spec.template.spec.volumes[0].secret)"),
            "{}",
            d.message
        );
        let d = admit_as(
            &FakeCluster::acme(),
            mallory(),
            &template.gateway("gw-main"),
        );
        assert_eq!(d.reason, Reason::NotTeamMember);
    }
}
