//! What the controller keeps of a pod: only what the drift rule ([`crate::domain::drift`])
//! reads. Each pod of the watch is turned into [`PodFacts`] as it arrives and the `Pod` object
//! is dropped, so memory grows with the Secret references of pods, not with their specs: a pod
//! that references no Secret is not kept at all.
//!
//! Kept: name, uid, the gateway label, the controller owner (for messages), whether the pod is
//! terminating, and every Secret reference (the names and kinds of the Secrets its volumes,
//! projected sources, volume drivers, image pull Secrets, `env` and `envFrom` name, in
//! containers, init containers and ephemeral containers) with the `subPath` mounts of the
//! volumes that hold a Secret.

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, EphemeralContainer, Pod};
use k8s_openapi::api::core::v1::{Volume, VolumeMount as K8sVolumeMount};

use crate::domain::admission::{PodView, ReferenceKind, SecretReference, VolumeMount};
use crate::names::GATEWAY_LABEL;

/// A pod as the drift rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: an eviction names it, so a new pod of the same name is never evicted
    /// in its place.
    pub uid: String,
    /// The controller owner, as `Kind/name` (`ReplicaSet/web-7d9c`), for messages.
    pub owner: Option<String>,
    /// `metadata.deletionTimestamp` is set: it is going away already.
    pub terminating: bool,
    /// The gateway label and the Secret references.
    pub view: PodView,
}

impl PodFacts {
    /// The names of the Secrets it references (with repeats).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.view.references.iter().map(|r| r.secret.as_str())
    }
}

/// The pod's facts, or `None` when it references no Secret (nothing for the rule to judge).
pub fn facts(pod: &Pod) -> Option<PodFacts> {
    let spec = pod.spec.as_ref()?;
    let mut references = Vec::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        volume_references(i, volume, &mut references);
    }
    for (i, reference) in spec.image_pull_secrets.iter().flatten().enumerate() {
        references.push(reference_to(
            format!("spec.imagePullSecrets[{i}]"),
            &reference.name,
            ReferenceKind::ImagePullSecret,
            None,
        ));
    }
    // Only the subPath mounts of volumes that hold a Secret matter to the rule.
    let secret_volumes: Vec<String> = references.iter().filter_map(|r| r.volume.clone()).collect();
    let mut mounts = Vec::new();
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.containers[{i}]"), parts(c)));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), parts(c)));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.ephemeralContainers[{i}]"), ephemeral_parts(c)));
    for (prefix, (env, env_from, volume_mounts)) in containers.chain(init).chain(ephemeral) {
        for (j, var) in env.iter().enumerate() {
            if let Some(selector) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                references.push(reference_to(
                    format!("{prefix}.env[{j}].valueFrom.secretKeyRef"),
                    &selector.name,
                    ReferenceKind::EnvValueFrom,
                    None,
                ));
            }
        }
        for (j, source) in env_from.iter().enumerate() {
            if let Some(secret) = &source.secret_ref {
                references.push(reference_to(
                    format!("{prefix}.envFrom[{j}].secretRef"),
                    &secret.name,
                    ReferenceKind::EnvFrom,
                    None,
                ));
            }
        }
        for (j, mount) in volume_mounts.iter().enumerate() {
            let sub_path = mount.sub_path.as_deref().is_some_and(|p| !p.is_empty())
                || mount
                    .sub_path_expr
                    .as_deref()
                    .is_some_and(|p| !p.is_empty());
            if sub_path && secret_volumes.contains(&mount.name) {
                mounts.push(VolumeMount {
                    field: format!("{prefix}.volumeMounts[{j}]"),
                    volume: mount.name.clone(),
                    sub_path,
                });
            }
        }
    }
    if references.is_empty() {
        return None;
    }
    let metadata = &pod.metadata;
    Some(PodFacts {
        name: metadata.name.clone().unwrap_or_default(),
        uid: metadata.uid.clone().unwrap_or_default(),
        owner: metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name)),
        terminating: metadata.deletion_timestamp.is_some(),
        view: PodView {
            gateway: metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GATEWAY_LABEL))
                .cloned(),
            labels_field: "metadata.labels",
            owned_by_controller: metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true)),
            references,
            mounts,
        },
    })
}

fn reference_to(
    field: String,
    secret: &str,
    kind: ReferenceKind,
    volume: Option<&str>,
) -> SecretReference {
    SecretReference {
        field,
        secret: secret.to_owned(),
        kind,
        volume: volume.map(str::to_owned),
    }
}

type Parts<'a> = (&'a [EnvVar], &'a [EnvFromSource], &'a [K8sVolumeMount]);

fn parts(c: &Container) -> Parts<'_> {
    (
        c.env.as_deref().unwrap_or_default(),
        c.env_from.as_deref().unwrap_or_default(),
        c.volume_mounts.as_deref().unwrap_or_default(),
    )
}

fn ephemeral_parts(c: &EphemeralContainer) -> Parts<'_> {
    (
        c.env.as_deref().unwrap_or_default(),
        c.env_from.as_deref().unwrap_or_default(),
        c.volume_mounts.as_deref().unwrap_or_default(),
    )
}

/// The Secrets volume `i` names: as a secret volume, a projected source, or a volume driver's
/// credentials.
fn volume_references(i: usize, volume: &Volume, references: &mut Vec<SecretReference>) {
    let mut push = |field: String, secret: &str, kind: ReferenceKind, volume: Option<&str>| {
        references.push(reference_to(field, secret, kind, volume));
    };
    let field = format!("spec.volumes[{i}]");
    let name = Some(volume.name.as_str());
    if let Some(secret) = volume
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
    {
        push(
            format!("{field}.secret"),
            secret,
            ReferenceKind::Volume,
            name,
        );
    }
    for (j, source) in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .enumerate()
    {
        if let Some(secret) = &source.secret {
            push(
                format!("{field}.projected.sources[{j}].secret"),
                &secret.name,
                ReferenceKind::ProjectedVolume,
                name,
            );
        }
    }
    let drivers: [(&str, Option<&str>); 9] = [
        (
            "csi.nodePublishSecretRef",
            volume
                .csi
                .as_ref()
                .and_then(|v| v.node_publish_secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "azureFile.secretName",
            volume.azure_file.as_ref().map(|v| v.secret_name.as_str()),
        ),
        (
            "cephfs.secretRef",
            volume
                .cephfs
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "cinder.secretRef",
            volume
                .cinder
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "flexVolume.secretRef",
            volume
                .flex_volume
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "iscsi.secretRef",
            volume
                .iscsi
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "rbd.secretRef",
            volume
                .rbd
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
        (
            "scaleIO.secretRef",
            volume.scale_io.as_ref().map(|v| v.secret_ref.name.as_str()),
        ),
        (
            "storageos.secretRef",
            volume
                .storageos
                .as_ref()
                .and_then(|v| v.secret_ref.as_ref())
                .map(|r| r.name.as_str()),
        ),
    ];
    for (path, secret) in drivers {
        if let Some(secret) = secret {
            push(
                format!("{field}.{path}"),
                secret,
                ReferenceKind::VolumeDriver,
                name,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    #[test]
    fn a_pod_without_secret_references_is_not_kept() {
        let plain = pod(json!({
            "metadata": {"name": "web", "labels": {GATEWAY_LABEL: "gw-main"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/c", "subPath": "x"}]}],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}
        }));
        assert_eq!(facts(&plain), None);
    }

    #[test]
    fn every_secret_reference_is_kept_with_its_field_and_nothing_else() {
        let gateway = pod(json!({
            "metadata": {"name": "gw", "uid": "u-1", "labels": {GATEWAY_LABEL: "gw-main", "app": "x"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "n"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gw-7d9c", "uid": "r", "controller": true}
                ]},
            "spec": {
                "volumes": [
                    {"name": "token", "secret": {"secretName": "acme-us-sp-api"}},
                    {"name": "both", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "t"}},
                        {"secret": {"name": "acme-de-sp-api"}}]}},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "drv", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-creds"}}}
                ],
                "imagePullSecrets": [{"name": "registry"}],
                "containers": [{"name": "c", "image": "i",
                    "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "app-env"}}],
                    "volumeMounts": [
                        {"name": "token", "mountPath": "/t"},
                        {"name": "both", "mountPath": "/b", "subPath": "access_token"},
                        {"name": "cfg", "mountPath": "/c", "subPath": "x"}]}],
                "initContainers": [{"name": "init", "image": "i",
                    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "acme-us-sp-api", "key": "access_token"}}}]}],
                "ephemeralContainers": [{"name": "debug", "image": "i",
                    "volumeMounts": [{"name": "token", "mountPath": "/t", "subPathExpr": "$(X)"}]}]
            }
        }));
        let facts = facts(&gateway).expect("kept");
        assert_eq!(facts.name, "gw");
        assert_eq!(facts.uid, "u-1");
        assert_eq!(facts.owner.as_deref(), Some("ReplicaSet/gw-7d9c"));
        assert!(!facts.terminating);
        assert_eq!(facts.view.gateway.as_deref(), Some("gw-main"));
        let references: Vec<(&str, &str, ReferenceKind)> = facts
            .view
            .references
            .iter()
            .map(|r| (r.field.as_str(), r.secret.as_str(), r.kind))
            .collect();
        assert_eq!(
            references,
            [
                (
                    "spec.volumes[0].secret",
                    "acme-us-sp-api",
                    ReferenceKind::Volume
                ),
                (
                    "spec.volumes[1].projected.sources[1].secret",
                    "acme-de-sp-api",
                    ReferenceKind::ProjectedVolume
                ),
                (
                    "spec.volumes[3].csi.nodePublishSecretRef",
                    "csi-creds",
                    ReferenceKind::VolumeDriver
                ),
                (
                    "spec.imagePullSecrets[0]",
                    "registry",
                    ReferenceKind::ImagePullSecret
                ),
                (
                    "spec.containers[0].envFrom[1].secretRef",
                    "app-env",
                    ReferenceKind::EnvFrom
                ),
                (
                    "spec.initContainers[0].env[0].valueFrom.secretKeyRef",
                    "acme-us-sp-api",
                    ReferenceKind::EnvValueFrom
                ),
            ]
        );
        // Only subPath mounts of volumes holding a Secret: not the whole mount, not the
        // ConfigMap's.
        let mounts: Vec<(&str, &str)> = facts
            .view
            .mounts
            .iter()
            .map(|m| (m.field.as_str(), m.volume.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("spec.containers[0].volumeMounts[1]", "both"),
                ("spec.ephemeralContainers[0].volumeMounts[0]", "token")
            ]
        );
    }

    #[test]
    fn a_pod_that_only_reads_a_secret_through_its_environment_is_kept() {
        let env_only = pod(json!({
            "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "acme-us-sp-api", "key": "k"}}}]}]}
        }));
        let facts = facts(&env_only).expect("kept");
        assert!(facts.terminating);
        assert_eq!(facts.secrets().collect::<Vec<_>>(), ["acme-us-sp-api"]);
    }
}
