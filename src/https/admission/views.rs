//! Kubernetes objects as the admission rules see them: a Secret with `data` and `stringData`
//! merged, a pod's every Secret reference and volume mount, and the JSON patch a mutation
//! becomes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EphemeralContainer, Pod, PodSpec, PodTemplateSpec, Secret,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::domain::admission::{
    self, LAST_APPLIED_ANNOTATION, Mutation, PodView, ReferenceKind, SecretReference, SecretView,
};
use crate::names::{GATEWAY_LABEL, LWA_CREDENTIALS_SECRET_TYPE, SEALED_KEY};

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The rules' view of a Secret: `data` and `stringData` merged as the API server merges them.
pub fn secret_view(secret: &Secret) -> SecretView<'_> {
    let mut data: BTreeMap<&str, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.as_str(), v.as_bytes());
    }
    SecretView {
        name: secret.metadata.name.as_deref().unwrap_or(""),
        type_: secret.type_.as_deref(),
        labels: secret.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
        annotations: secret.metadata.annotations.as_ref().unwrap_or(&NO_LABELS),
        data,
        has_string_data: secret.string_data.is_some(),
    }
}

/// The `connectors.openteam.io/gateway` label among `metadata`'s labels.
pub fn gateway_label(metadata: &ObjectMeta) -> Option<&String> {
    metadata.labels.as_ref().and_then(|l| l.get(GATEWAY_LABEL))
}

/// Whether `metadata` names a controller owner.
fn owned_by_controller(metadata: &ObjectMeta) -> bool {
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

/// The rules' view of a pod: its gateway label, every Secret reference (volumes, projected
/// sources, volume drivers' credentials, image pull Secrets, and `env`/`envFrom` of
/// containers, init containers and ephemeral containers) and every volume mount.
pub fn pod_view(pod: &Pod) -> PodView {
    let view = PodView {
        gateway: gateway_label(&pod.metadata).cloned(),
        owned_by_controller: owned_by_controller(&pod.metadata),
        ..PodView::default()
    };
    match &pod.spec {
        Some(spec) => spec_view(view, spec, "spec"),
        None => view,
    }
}

/// The rules' view of a workload's pod template at `template_field` (`spec.template`): the
/// template's gateway label and Secret references, named by their paths in the workload, and
/// whether the workload itself has a controller owner (a ReplicaSet of a Deployment, a Job of
/// a CronJob).
pub fn template_view(
    workload: &ObjectMeta,
    template: &PodTemplateSpec,
    template_field: &str,
    labels_field: &'static str,
) -> PodView {
    let view = PodView {
        gateway: template.metadata.as_ref().and_then(gateway_label).cloned(),
        labels_field,
        owned_by_controller: owned_by_controller(workload),
        ..PodView::default()
    };
    match &template.spec {
        Some(spec) => spec_view(view, spec, &join(template_field, ".spec")),
        None => view,
    }
}

/// `view` with every Secret reference and volume mount of `spec`, whose field path is `prefix`.
fn spec_view(mut view: PodView, spec: &PodSpec, prefix: &str) -> PodView {
    // Field paths are put together with `join` rather than `format!`: this runs for every pod
    // the API server admits, and the common paths need one allocation each.
    let mut push = |field: String, secret: &str, kind: ReferenceKind, volume: Option<&str>| {
        view.references.push(SecretReference {
            field,
            secret: secret.to_owned(),
            kind,
            volume: volume.map(str::to_owned),
        });
    };
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = indexed(prefix, ".volumes", i);
        let name = Some(volume.name.as_str());
        if let Some(secret) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            push(join(&field, ".secret"), secret, ReferenceKind::Volume, name);
        }
        if let Some(projected) = &volume.projected {
            for (j, source) in projected.sources.iter().flatten().enumerate() {
                if let Some(secret) = &source.secret {
                    push(
                        format!("{field}.projected.sources[{j}].secret"),
                        &secret.name,
                        ReferenceKind::ProjectedVolume,
                        name,
                    );
                }
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
    for (i, reference) in spec.image_pull_secrets.iter().flatten().enumerate() {
        push(
            indexed(prefix, ".imagePullSecrets", i),
            &reference.name,
            ReferenceKind::ImagePullSecret,
            None,
        );
    }
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (indexed(prefix, ".containers", i), parts(c)));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (indexed(prefix, ".initContainers", i), parts(c)));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            (
                indexed(prefix, ".ephemeralContainers", i),
                ephemeral_parts(c),
            )
        });
    for (container, (env, env_from, mounts)) in containers.chain(init).chain(ephemeral) {
        for (j, var) in env.iter().enumerate() {
            if let Some(selector) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                push(
                    format!("{container}.env[{j}].valueFrom.secretKeyRef"),
                    &selector.name,
                    ReferenceKind::EnvValueFrom,
                    None,
                );
            }
        }
        for (j, source) in env_from.iter().enumerate() {
            if let Some(secret) = &source.secret_ref {
                push(
                    format!("{container}.envFrom[{j}].secretRef"),
                    &secret.name,
                    ReferenceKind::EnvFrom,
                    None,
                );
            }
        }
        for (j, mount) in mounts.iter().enumerate() {
            let sub_path = mount.sub_path.as_deref().is_some_and(|s| !s.is_empty())
                || mount
                    .sub_path_expr
                    .as_deref()
                    .is_some_and(|s| !s.is_empty());
            view.mounts.push(admission::VolumeMount {
                field: indexed(&container, ".volumeMounts", j),
                volume: mount.name.clone(),
                sub_path,
            });
        }
    }
    view
}

/// `prefix` followed by `suffix`.
fn join(prefix: &str, suffix: &str) -> String {
    let mut joined = String::with_capacity(prefix.len() + suffix.len());
    joined.push_str(prefix);
    joined.push_str(suffix);
    joined
}

/// `prefix` followed by `name[index]`.
fn indexed(prefix: &str, name: &str, index: usize) -> String {
    use std::fmt::Write as _;
    let mut field = String::with_capacity(prefix.len() + name.len() + 6);
    field.push_str(prefix);
    field.push_str(name);
    // Writing into a String does not fail.
    let _ = write!(field, "[{index}]");
    field
}

type ContainerParts<'a> = (&'a [EnvVar], &'a [EnvFromSource], &'a [VolumeMount]);

fn parts(c: &Container) -> ContainerParts<'_> {
    (
        c.env.as_deref().unwrap_or_default(),
        c.env_from.as_deref().unwrap_or_default(),
        c.volume_mounts.as_deref().unwrap_or_default(),
    )
}

fn ephemeral_parts(c: &EphemeralContainer) -> ContainerParts<'_> {
    (
        c.env.as_deref().unwrap_or_default(),
        c.env_from.as_deref().unwrap_or_default(),
        c.volume_mounts.as_deref().unwrap_or_default(),
    )
}

/// The JSON patch that applies a mutation to the Secret under review.
pub fn json_patch(mutation: &Mutation) -> json_patch::Patch {
    match mutation {
        Mutation::SealCredentials {
            envelope,
            remove_string_data,
            last_applied,
        } => {
            // `add` replaces a member that exists, so these work whatever the object holds.
            let mut ops = vec![
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["data"]),
                    value: serde_json::json!({ SEALED_KEY: B64.encode(envelope) }),
                }),
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["type"]),
                    value: LWA_CREDENTIALS_SECRET_TYPE.into(),
                }),
            ];
            if *remove_string_data {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: PointerBuf::from_tokens(["stringData"]),
                }));
            }
            // The annotation exists (it is what was scrubbed); `add` replaces its value.
            if let Some(last_applied) = last_applied {
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens([
                        "metadata",
                        "annotations",
                        LAST_APPLIED_ANNOTATION,
                    ]),
                    value: last_applied.as_str().into(),
                }));
            }
            json_patch::Patch(ops)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_view_names_every_reference_and_mount_by_its_field() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {GATEWAY_LABEL: "gw-main"}},
            "spec": {
                "volumes": [
                    {"name": "a", "secret": {"secretName": "s-a"}},
                    {"name": "b", "projected": {"sources": [
                        {"configMap": {"name": "cm"}},
                        {"secret": {"name": "s-b"}}]}},
                    {"name": "c", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s-c"}}},
                    {"name": "d", "emptyDir": {}}
                ],
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [
                    {"name": "one", "env": [
                        {"name": "X", "value": "x"},
                        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}],
                     "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s-from"}}],
                     "volumeMounts": [{"name": "a", "mountPath": "/a"},
                                      {"name": "b", "mountPath": "/b", "subPath": "x"}]},
                    {"name": "two", "volumeMounts": [{"name": "c", "mountPath": "/c",
                                                      "subPathExpr": "$(X)"}]}
                ],
                "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
                "ephemeralContainers": [{"name": "debug",
                                         "volumeMounts": [{"name": "a", "mountPath": "/a"}]}]
            }
        }))
        .unwrap();
        let view = pod_view(&pod);
        assert_eq!(view.gateway.as_deref(), Some("gw-main"));
        let references: Vec<(&str, &str, ReferenceKind, Option<&str>)> = view
            .references
            .iter()
            .map(|r| {
                (
                    r.field.as_str(),
                    r.secret.as_str(),
                    r.kind,
                    r.volume.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            references,
            [
                (
                    "spec.volumes[0].secret",
                    "s-a",
                    ReferenceKind::Volume,
                    Some("a")
                ),
                (
                    "spec.volumes[1].projected.sources[1].secret",
                    "s-b",
                    ReferenceKind::ProjectedVolume,
                    Some("b")
                ),
                (
                    "spec.volumes[2].csi.nodePublishSecretRef",
                    "s-c",
                    ReferenceKind::VolumeDriver,
                    Some("c")
                ),
                (
                    "spec.imagePullSecrets[0]",
                    "pull",
                    ReferenceKind::ImagePullSecret,
                    None
                ),
                (
                    "spec.containers[0].env[1].valueFrom.secretKeyRef",
                    "s-env",
                    ReferenceKind::EnvValueFrom,
                    None
                ),
                (
                    "spec.containers[0].envFrom[1].secretRef",
                    "s-from",
                    ReferenceKind::EnvFrom,
                    None
                ),
                (
                    "spec.initContainers[0].envFrom[0].secretRef",
                    "s-init",
                    ReferenceKind::EnvFrom,
                    None
                ),
            ]
        );
        let mounts: Vec<(&str, &str, bool)> = view
            .mounts
            .iter()
            .map(|m| (m.field.as_str(), m.volume.as_str(), m.sub_path))
            .collect();
        assert_eq!(
            mounts,
            [
                ("spec.containers[0].volumeMounts[0]", "a", false),
                ("spec.containers[0].volumeMounts[1]", "b", true),
                ("spec.containers[1].volumeMounts[0]", "c", true),
                ("spec.ephemeralContainers[0].volumeMounts[0]", "a", false),
            ]
        );
    }
}
