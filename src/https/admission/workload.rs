//! Workloads with a pod template: Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs and
//! CronJobs. Their template is judged by the pod rules when the workload is created or
//! changed, so that a controller only ever stamps out pods from a template a Team member (or
//! another identity the rules accept) wrote; the pods are judged again when they are made.
//!
//! Only the template is read (a CronJob's is `spec.jobTemplate.spec.template`): the API server
//! has already decoded and validated the rest of the object before it asks.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::core::DynamicObject;
use serde::Deserialize as _;

use super::views::{gateway_label, template_view};
use crate::domain::admission::{Operation, PodView};

/// A resource whose objects carry a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `apps/v1` `deployments`.
    Deployment,
    /// `apps/v1` `replicasets`.
    ReplicaSet,
    /// `apps/v1` `statefulsets`.
    StatefulSet,
    /// `apps/v1` `daemonsets`.
    DaemonSet,
    /// `batch/v1` `jobs`.
    Job,
    /// `batch/v1` `cronjobs`.
    CronJob,
}

impl Workload {
    /// Every workload resource, in the order the webhook configuration lists them.
    pub const ALL: [Workload; 6] = [
        Workload::Deployment,
        Workload::ReplicaSet,
        Workload::StatefulSet,
        Workload::DaemonSet,
        Workload::Job,
        Workload::CronJob,
    ];

    /// The workload a review's `resource` names.
    pub fn of(group: &str, resource: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.group() == group && w.resource() == resource)
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Workload::Deployment
            | Workload::ReplicaSet
            | Workload::StatefulSet
            | Workload::DaemonSet => "apps",
            Workload::Job | Workload::CronJob => "batch",
        }
    }

    /// The resource (plural) name: also the `resource` metric label.
    pub fn resource(self) -> &'static str {
        match self {
            Workload::Deployment => "deployments",
            Workload::ReplicaSet => "replicasets",
            Workload::StatefulSet => "statefulsets",
            Workload::DaemonSet => "daemonsets",
            Workload::Job => "jobs",
            Workload::CronJob => "cronjobs",
        }
    }

    /// The audit action for a create or an update (the only operations registered).
    pub fn action(self, operation: Operation) -> &'static str {
        use Operation::{Create, Update};
        match (self, operation) {
            (Workload::Deployment, Create) => "deployment_create",
            (Workload::Deployment, Update) => "deployment_update",
            (Workload::ReplicaSet, Create) => "replicaset_create",
            (Workload::ReplicaSet, Update) => "replicaset_update",
            (Workload::StatefulSet, Create) => "statefulset_create",
            (Workload::StatefulSet, Update) => "statefulset_update",
            (Workload::DaemonSet, Create) => "daemonset_create",
            (Workload::DaemonSet, Update) => "daemonset_update",
            (Workload::Job, Create) => "job_create",
            (Workload::Job, Update) => "job_update",
            (Workload::CronJob, Create) => "cronjob_create",
            (Workload::CronJob, Update) => "cronjob_update",
            (_, Operation::Delete | Operation::Connect) => "admission_review",
        }
    }

    /// Where the pod template is: its field path and its labels' field path.
    fn template_fields(self) -> (&'static [&'static str], &'static str, &'static str) {
        match self {
            Workload::CronJob => (
                &["spec", "jobTemplate", "spec", "template"],
                "spec.jobTemplate.spec.template",
                "spec.jobTemplate.spec.template.metadata.labels",
            ),
            _ => (
                &["spec", "template"],
                "spec.template",
                "spec.template.metadata.labels",
            ),
        }
    }

    /// The pod template of `object`; `None` when it has none that reads as a pod template.
    pub fn template(self, object: &DynamicObject) -> Option<PodTemplateSpec> {
        let (path, _, _) = self.template_fields();
        let value = path
            .iter()
            .try_fold(&object.data, |value, key| value.get(key))?;
        PodTemplateSpec::deserialize(value).ok()
    }

    /// The rules' view of `object`'s template.
    pub fn view(self, object: &DynamicObject, template: &PodTemplateSpec) -> PodView {
        let (_, field, labels) = self.template_fields();
        template_view(&object.metadata, template, field, labels)
    }
}

/// Whether `new` differs from `old` in what the identity rule guards: its spec or its gateway
/// label.
pub fn template_changed(old: Option<&PodTemplateSpec>, new: &PodTemplateSpec) -> bool {
    let gateway = |t: &PodTemplateSpec| t.metadata.as_ref().and_then(gateway_label).cloned();
    old.is_none_or(|old| old.spec != new.spec || gateway(old) != gateway(new))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::admission::ReferenceKind;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn template(labels: serde_json::Value, secret: &str) -> serde_json::Value {
        json!({"metadata": {"labels": labels}, "spec": {
            "volumes": [{"name": "token", "secret": {"secretName": secret}}],
            "containers": [{"name": "main", "image": "gw:1",
                            "volumeMounts": [{"name": "token", "mountPath": "/t", "subPath": "x"}]}]}})
    }

    #[test]
    fn every_workload_is_found_by_its_group_and_resource() {
        for workload in Workload::ALL {
            assert_eq!(
                Workload::of(workload.group(), workload.resource()),
                Some(workload)
            );
        }
        assert_eq!(Workload::of("", "deployments"), None);
        assert_eq!(Workload::of("apps", "controllerrevisions"), None);
    }

    #[test]
    fn a_cronjobs_template_is_read_from_its_job_template_and_named_by_its_path() {
        let cronjob = object(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "sync", "namespace": "team-acme"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template":
                template(json!({"connectors.openteam.io/gateway": "gw-main"}), "acme-us-sp-api")}}}
        }));
        let spec = Workload::CronJob.template(&cronjob).unwrap();
        let view = Workload::CronJob.view(&cronjob, &spec);
        assert_eq!(view.gateway.as_deref(), Some("gw-main"));
        assert_eq!(
            view.labels_field,
            "spec.jobTemplate.spec.template.metadata.labels"
        );
        assert!(!view.owned_by_controller);
        assert_eq!(
            view.references[0].field,
            "spec.jobTemplate.spec.template.spec.volumes[0].secret"
        );
        assert_eq!(view.references[0].kind, ReferenceKind::Volume);
        assert_eq!(
            view.mounts[0].field,
            "spec.jobTemplate.spec.template.spec.containers[0].volumeMounts[0]"
        );
        // Read as a Deployment, the same object has no template.
        assert!(Workload::Deployment.template(&cronjob).is_none());
    }

    #[test]
    fn a_replicaset_owned_by_its_deployment_says_so() {
        let replicaset = object(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "gw-5d8f", "namespace": "team-acme", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw", "uid": "u1",
                 "controller": true}]},
            "spec": {"selector": {}, "template": template(json!({}), "acme-us-sp-api")}
        }));
        let spec = Workload::ReplicaSet.template(&replicaset).unwrap();
        let view = Workload::ReplicaSet.view(&replicaset, &spec);
        assert!(view.owned_by_controller);
        assert_eq!(view.labels_field, "spec.template.metadata.labels");
        assert_eq!(
            view.references[0].field,
            "spec.template.spec.volumes[0].secret"
        );
    }

    #[test]
    fn only_the_spec_and_the_gateway_label_count_as_a_change() {
        let read = |labels, secret| -> PodTemplateSpec {
            serde_json::from_value(template(labels, secret)).unwrap()
        };
        let gateway = json!({"connectors.openteam.io/gateway": "gw-main", "app": "gw"});
        let base = read(gateway.clone(), "acme-us-sp-api");
        assert!(template_changed(None, &base));
        assert!(!template_changed(Some(&base), &base));
        let relabelled = read(
            json!({"connectors.openteam.io/gateway": "gw-main", "app": "other"}),
            "acme-us-sp-api",
        );
        assert!(!template_changed(Some(&base), &relabelled));
        let regated = read(
            json!({"connectors.openteam.io/gateway": "gw-x"}),
            "acme-us-sp-api",
        );
        assert!(template_changed(Some(&base), &regated));
        assert!(template_changed(Some(&base), &read(gateway, "other")));
    }
}
