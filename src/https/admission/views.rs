//! Kubernetes objects as the admission rules see them: a Secret with `data` and `stringData`
//! merged, a pod's every Secret reference and volume mount, and the JSON patch a mutation
//! becomes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EphemeralContainer, Pod, Secret, VolumeMount,
};

use crate::domain::admission::{
    self, Mutation, PodView, ReferenceKind, SecretReference, SecretView,
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
        data,
        has_string_data: secret.string_data.is_some(),
    }
}

/// The rules' view of a pod: its gateway label, every Secret reference (volumes, projected
/// sources, volume drivers' credentials, image pull Secrets, and `env`/`envFrom` of
/// containers, init containers and ephemeral containers) and every volume mount.
pub fn pod_view(pod: &Pod) -> PodView {
    let mut view = PodView {
        gateway: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(GATEWAY_LABEL))
            .cloned(),
        owned_by_controller: pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true)),
        ..PodView::default()
    };
    let Some(spec) = &pod.spec else {
        return view;
    };
    let mut push = |field: String, secret: &str, kind: ReferenceKind, volume: Option<&str>| {
        view.references.push(SecretReference {
            field,
            secret: secret.to_owned(),
            kind,
            volume: volume.map(str::to_owned),
        });
    };
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
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
            format!("spec.imagePullSecrets[{i}]"),
            &reference.name,
            ReferenceKind::ImagePullSecret,
            None,
        );
    }
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
    let all: Vec<_> = containers.chain(init).chain(ephemeral).collect();
    for (prefix, (env, env_from, mounts)) in all {
        for (j, var) in env.iter().enumerate() {
            if let Some(selector) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                push(
                    format!("{prefix}.env[{j}].valueFrom.secretKeyRef"),
                    &selector.name,
                    ReferenceKind::EnvValueFrom,
                    None,
                );
            }
        }
        for (j, source) in env_from.iter().enumerate() {
            if let Some(secret) = &source.secret_ref {
                push(
                    format!("{prefix}.envFrom[{j}].secretRef"),
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
                field: format!("{prefix}.volumeMounts[{j}]"),
                volume: mount.name.clone(),
                sub_path,
            });
        }
    }
    view
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
            json_patch::Patch(ops)
        }
    }
}
