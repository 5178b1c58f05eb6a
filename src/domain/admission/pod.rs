//! The pod rules: which pods may use a connection's runtime Secret, and how.

use super::{
    Concern, ConnectionFacts, Decision, Findings, Lookup, Operation, Reason, Requester, Subject,
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

/// A pod as the rules see it: its gateway label and every Secret reference in containers,
/// init containers, ephemeral containers and volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// The `connectors.openteam.io/gateway` label.
    pub gateway: Option<String>,
    /// Every reference to a Secret.
    pub references: Vec<SecretReference>,
    /// Every volume mount.
    pub mounts: Vec<VolumeMount>,
}

/// A request about a pod (create, update, or the `ephemeralcontainers` subresource).
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

/// The pod rules: every reference to a runtime Secret requires the pod's gateway label to be
/// listed in that connection's `spec.gateways`, and must be a whole-volume mount (`env`,
/// `envFrom` and `subPath` never see a refreshed token); no pod may reference sealed
/// credentials or a sealed token store.
pub fn admit_pod(lookup: &dyn Lookup, request: &PodRequest<'_>) -> Decision {
    let pod = request.pod;
    let connections = lookup.connections(request.namespace);
    let team = lookup.namespace_team(request.namespace);
    let mut findings = Findings::default();
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

    let concern = if runtime_connection.is_some() || references_credentials || pod.gateway.is_some()
    {
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
    match pod.gateway.as_deref() {
        None => findings.violation(
            Reason::MissingGatewayLabel,
            format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: missing: only pods of a gateway listed in \
                 connection {name:?} spec.gateways ({listed}) may use runtime Secret {secret:?} \
                 ({field})"
            ),
        ),
        Some(gateway) if !connection.gateways.iter().any(|g| g == gateway) => findings.violation(
            Reason::GatewayNotListed,
            format!(
                "metadata.labels[{GATEWAY_LABEL:?}]: gateway {gateway:?} is not listed in \
                 connection {name:?} spec.gateways ({listed}), so it may not use runtime Secret \
                 {secret:?} ({field})"
            ),
        ),
        Some(_) => {}
    }
}
