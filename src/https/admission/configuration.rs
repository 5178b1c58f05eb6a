//! The Validating- and MutatingWebhookConfiguration the rules need, generated here so that the
//! chart, the docs (`docs/webhook.md`) and the tests register the same thing.
//!
//! - `failurePolicy: Fail` everywhere: no webhook, no write (credentials are never stored
//!   unsealed, runtime Secrets never reach an unlisted pod).
//! - Pods, workloads, Secrets and connections: only in Team-labelled namespaces
//!   (`namespaceSelector`). Pods, workloads and Secrets deliberately have no `objectSelector`:
//!   a pod without the gateway label or a forged runtime Secret without labels must still be
//!   judged.
//! - Workloads with a pod template (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
//!   CronJobs), created or changed: their template is judged by the pod rules.
//! - Namespaces: only those carrying the Team label before or after (`objectSelector` on the
//!   label key), so unrelated namespace updates never wait on the webhook.
//! - The intake mutation: only Secrets labelled `secret-role=lwa-credentials`.
//! - `sideEffects: None`, `admissionReviewVersions: [v1]`, `matchPolicy: Equivalent`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::workload::Workload;
use crate::api::GROUP;
use crate::names::{ROLE_LWA_CREDENTIALS, SECRET_ROLE_LABEL, TEAM_LABEL};

/// Name of the validating webhook for `AmazonSellerConnection`s.
pub const CONNECTIONS_WEBHOOK: &str = "connections.connectors.openteam.io";
/// Name of the validating webhook for Secrets.
pub const SECRETS_WEBHOOK: &str = "secrets.connectors.openteam.io";
/// Name of the validating webhook for pods and their ephemeral containers.
pub const PODS_WEBHOOK: &str = "pods.connectors.openteam.io";
/// Name of the validating webhook for workloads with a pod template.
pub const WORKLOADS_WEBHOOK: &str = "workloads.connectors.openteam.io";
/// Name of the validating webhook for namespaces' Team label.
pub const NAMESPACES_WEBHOOK: &str = "namespaces.connectors.openteam.io";
/// Name of the validating webhook for `SecurityLogReview`s.
pub const REVIEWS_WEBHOOK: &str = "securitylogreviews.connectors.openteam.io";
/// The label the API server sets on every namespace to its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Name of the mutating webhook that seals intake Secrets.
pub const INTAKE_WEBHOOK: &str = "intake.secrets.connectors.openteam.io";

/// Path of the validating endpoint.
pub const VALIDATE_PATH: &str = "/validate";
/// Path of the mutating endpoint.
pub const MUTATE_PATH: &str = "/mutate";

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTarget {
    /// Through a Service (the usual in-cluster case).
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The Service port.
        port: i32,
    },
    /// Directly at `https://host:port` (a webhook outside the cluster, or tests on loopback).
    /// The endpoint paths are appended.
    Url(String),
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The ValidatingWebhookConfiguration's name.
    pub validating_name: String,
    /// The MutatingWebhookConfiguration's name.
    pub mutating_name: String,
    /// Where the webhook is.
    pub target: ClientTarget,
    /// The CA bundle (PEM) that signs the serving certificate; `None` when something else
    /// fills it in (cert-manager's CA injector, the self-managed mode).
    pub ca_bundle: Option<Vec<u8>>,
    /// How long the API server waits for an answer (1-30 s).
    pub timeout_seconds: i32,
    /// Extra labels that selected namespaces (namespaced rules) or objects (cluster-scoped
    /// rules) must carry, to narrow the webhooks to part of a cluster (shared test clusters).
    pub scope_labels: BTreeMap<String, String>,
    /// The namespaces a namespace-scoped install watches (`--watch-namespace`); empty for the
    /// whole cluster. Non-empty narrows every namespaced webhook, and the namespace webhook, to
    /// them by their `kubernetes.io/metadata.name` label.
    pub namespaces: Vec<String>,
}

impl Options {
    /// Defaults for a webhook behind `target`: both configurations named
    /// `amazon-seller-operator`, 10 s timeout, no CA bundle, whole cluster.
    pub fn new(target: ClientTarget) -> Self {
        Self {
            validating_name: "amazon-seller-operator".to_owned(),
            mutating_name: "amazon-seller-operator".to_owned(),
            target,
            ca_bundle: None,
            timeout_seconds: 10,
            scope_labels: BTreeMap::new(),
            namespaces: Vec::new(),
        }
    }

    fn client_config(&self, path: &str) -> WebhookClientConfig {
        let (service, url) = match &self.target {
            ClientTarget::Service {
                namespace,
                name,
                port,
            } => (
                Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.to_owned()),
                    port: Some(*port),
                }),
                None,
            ),
            ClientTarget::Url(base) => {
                (None, Some(format!("{}{path}", base.trim_end_matches('/'))))
            }
        };
        WebhookClientConfig {
            ca_bundle: self.ca_bundle.clone().map(ByteString),
            service,
            url,
        }
    }

    fn selector(&self, exists: &[&str], label_in: Option<(&str, &str)>) -> LabelSelector {
        let mut expressions: Vec<LabelSelectorRequirement> = exists
            .iter()
            .map(|key| LabelSelectorRequirement {
                key: (*key).to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            })
            .collect();
        if let Some((key, value)) = label_in {
            expressions.push(LabelSelectorRequirement {
                key: key.to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![value.to_owned()]),
            });
        }
        if !self.namespaces.is_empty() {
            expressions.push(LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_owned(),
                operator: "In".to_owned(),
                values: Some(self.namespaces.clone()),
            });
        }
        LabelSelector {
            match_expressions: Some(expressions),
            match_labels: (!self.scope_labels.is_empty()).then(|| self.scope_labels.clone()),
        }
    }

    /// A selector that only carries the scope labels (or matches everything without them).
    fn scope_only(&self) -> Option<LabelSelector> {
        (!self.scope_labels.is_empty()).then(|| LabelSelector {
            match_expressions: None,
            match_labels: Some(self.scope_labels.clone()),
        })
    }
}

fn rule(group: &str, version: &str, resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    let strings = |items: &[&str]| Some(items.iter().map(|s| (*s).to_owned()).collect());
    RuleWithOperations {
        api_groups: strings(&[group]),
        api_versions: strings(&[version]),
        operations: strings(operations),
        resources: strings(resources),
        scope: None,
    }
}

/// One rule per API group of [`Workload::ALL`], its resources in that order; create and
/// update (a template cannot be put to use any other way).
fn workload_rules() -> Vec<RuleWithOperations> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for workload in Workload::ALL {
        match groups.iter_mut().find(|(g, _)| *g == workload.group()) {
            Some((_, resources)) => resources.push(workload.resource()),
            None => groups.push((workload.group(), vec![workload.resource()])),
        }
    }
    groups
        .into_iter()
        .map(|(group, resources)| rule(group, "v1", &resources, &["CREATE", "UPDATE"]))
        .collect()
}

/// The common fields of one validating webhook.
struct Hook {
    name: &'static str,
    rules: Vec<RuleWithOperations>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
}

fn hooks(options: &Options) -> Vec<Hook> {
    let team_namespaces = Some(options.selector(&[TEAM_LABEL], None));
    let write = ["CREATE", "UPDATE", "DELETE"];
    vec![
        Hook {
            name: CONNECTIONS_WEBHOOK,
            rules: vec![rule(
                GROUP,
                "v1alpha1",
                &["amazonsellerconnections"],
                &write,
            )],
            namespace_selector: team_namespaces.clone(),
            object_selector: None,
        },
        Hook {
            name: SECRETS_WEBHOOK,
            rules: vec![rule("", "v1", &["secrets"], &write)],
            namespace_selector: team_namespaces.clone(),
            object_selector: None,
        },
        Hook {
            name: PODS_WEBHOOK,
            rules: vec![rule(
                "",
                "v1",
                &["pods", "pods/ephemeralcontainers"],
                &["CREATE", "UPDATE"],
            )],
            namespace_selector: team_namespaces.clone(),
            object_selector: None,
        },
        Hook {
            name: WORKLOADS_WEBHOOK,
            rules: workload_rules(),
            namespace_selector: team_namespaces,
            object_selector: None,
        },
        Hook {
            name: NAMESPACES_WEBHOOK,
            rules: vec![rule("", "v1", &["namespaces"], &["CREATE", "UPDATE"])],
            namespace_selector: None,
            // Matches when the old or the new object carries the label: set, change, remove.
            object_selector: Some(options.selector(&[TEAM_LABEL], None)),
        },
        Hook {
            name: REVIEWS_WEBHOOK,
            rules: vec![rule(GROUP, "v1alpha1", &["securitylogreviews"], &write)],
            namespace_selector: None,
            object_selector: options.scope_only(),
        },
    ]
}

/// The ValidatingWebhookConfiguration: connections, Secrets, pods (and ephemeral containers),
/// workloads' pod templates, namespaces' Team label, security log reviews.
pub fn validating(options: &Options) -> ValidatingWebhookConfiguration {
    let webhooks = hooks(options)
        .into_iter()
        .map(|hook| ValidatingWebhook {
            admission_review_versions: vec!["v1".to_owned()],
            client_config: options.client_config(VALIDATE_PATH),
            failure_policy: Some("Fail".to_owned()),
            match_conditions: None,
            match_policy: Some("Equivalent".to_owned()),
            name: hook.name.to_owned(),
            namespace_selector: hook.namespace_selector,
            object_selector: hook.object_selector,
            rules: Some(hook.rules),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(options.timeout_seconds),
        })
        .collect();
    let mut configuration = ValidatingWebhookConfiguration {
        webhooks: Some(webhooks),
        ..ValidatingWebhookConfiguration::default()
    };
    configuration.metadata.name = Some(options.validating_name.clone());
    configuration
}

/// The MutatingWebhookConfiguration: seals intake Secrets before they are stored.
pub fn mutating(options: &Options) -> MutatingWebhookConfiguration {
    let webhook = MutatingWebhook {
        admission_review_versions: vec!["v1".to_owned()],
        client_config: options.client_config(MUTATE_PATH),
        failure_policy: Some("Fail".to_owned()),
        match_conditions: None,
        match_policy: Some("Equivalent".to_owned()),
        name: INTAKE_WEBHOOK.to_owned(),
        namespace_selector: Some(options.selector(&[TEAM_LABEL], None)),
        // The scope labels narrow namespaces; the object selector only needs the role label.
        object_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: SECRET_ROLE_LABEL.to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![ROLE_LWA_CREDENTIALS.to_owned()]),
            }]),
            match_labels: None,
        }),
        // Sealing is idempotent and nothing after it adds plaintext; no second call needed.
        reinvocation_policy: Some("Never".to_owned()),
        rules: Some(vec![rule("", "v1", &["secrets"], &["CREATE", "UPDATE"])]),
        side_effects: "None".to_owned(),
        timeout_seconds: Some(options.timeout_seconds),
    };
    let mut configuration = MutatingWebhookConfiguration {
        webhooks: Some(vec![webhook]),
        ..MutatingWebhookConfiguration::default()
    };
    configuration.metadata.name = Some(options.mutating_name.clone());
    configuration
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Options {
        Options::new(ClientTarget::Service {
            namespace: "amazon-seller-operator".into(),
            name: "amazon-seller-operator-webhook".into(),
            port: 443,
        })
    }

    #[test]
    fn every_webhook_fails_closed_without_side_effects() {
        let validating = validating(&service());
        let hooks = validating.webhooks.unwrap();
        assert_eq!(hooks.len(), 6);
        for hook in &hooks {
            assert_eq!(
                hook.failure_policy.as_deref(),
                Some("Fail"),
                "{}",
                hook.name
            );
            assert_eq!(hook.side_effects, "None");
            assert_eq!(hook.admission_review_versions, ["v1"]);
            assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"));
            let service = hook.client_config.service.as_ref().unwrap();
            assert_eq!(service.path.as_deref(), Some("/validate"));
        }
        let mutating = mutating(&service()).webhooks.unwrap();
        assert_eq!(mutating[0].failure_policy.as_deref(), Some("Fail"));
        assert_eq!(
            mutating[0]
                .client_config
                .service
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/mutate")
        );
    }

    /// The YAML `docs/webhook.md` shows between its `generated` markers.
    fn documented(options: &Options) -> String {
        let validating = serde_saphyr::to_string(&validating(options)).unwrap();
        let mutating = serde_saphyr::to_string(&mutating(options)).unwrap();
        format!("{}\n---\n{}", validating.trim_end(), mutating.trim_end())
    }

    #[test]
    fn docs_show_the_generated_configurations() {
        let expected = documented(&service());
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/webhook.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = "<!-- generated: webhook configurations (src/https/admission/configuration.rs) -->\n```yaml\n";
        let block = doc
            .split_once(start)
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .map(|(block, _)| block)
            .unwrap_or_default();
        assert!(
            block == expected,
            "docs/webhook.md does not show the generated configurations; replace its block with:\n{expected}"
        );
    }

    #[test]
    fn pods_include_the_ephemeral_containers_subresource() {
        let hooks = validating(&service()).webhooks.unwrap();
        let pods = hooks.iter().find(|h| h.name == PODS_WEBHOOK).unwrap();
        let resources = pods.rules.as_ref().unwrap()[0].resources.clone().unwrap();
        assert_eq!(resources, ["pods", "pods/ephemeralcontainers"]);
        assert!(
            pods.object_selector.is_none(),
            "pods must not be skippable by label"
        );
    }

    #[test]
    fn workloads_with_a_pod_template_are_judged_on_create_and_update_in_team_namespaces() {
        let hooks = validating(&service()).webhooks.unwrap();
        let workloads = hooks.iter().find(|h| h.name == WORKLOADS_WEBHOOK).unwrap();
        assert_eq!(
            serde_json::to_value(&workloads.rules).unwrap(),
            serde_json::json!([
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"]},
                {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["jobs", "cronjobs"]}
            ])
        );
        assert!(
            workloads.object_selector.is_none(),
            "workloads must not be skippable by label"
        );
        let pods = hooks.iter().find(|h| h.name == PODS_WEBHOOK).unwrap();
        assert_eq!(workloads.namespace_selector, pods.namespace_selector);
    }

    #[test]
    fn scope_labels_narrow_every_webhook() {
        let mut options = Options::new(ClientTarget::Url("https://127.0.0.1:9443/".into()));
        options.scope_labels.insert("test".into(), "t1".into());
        options.ca_bundle = Some(b"PEM".to_vec());
        let hooks = validating(&options).webhooks.unwrap();
        for hook in &hooks {
            let selector = hook
                .namespace_selector
                .as_ref()
                .or(hook.object_selector.as_ref())
                .unwrap();
            assert_eq!(
                selector.match_labels.as_ref().unwrap()["test"],
                "t1",
                "{}",
                hook.name
            );
            assert_eq!(
                hook.client_config.url.as_deref(),
                Some("https://127.0.0.1:9443/validate")
            );
            assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
        }
        let mutating = mutating(&options).webhooks.unwrap();
        assert_eq!(
            mutating[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["test"],
            "t1"
        );
    }

    #[test]
    fn watched_namespaces_narrow_every_namespaced_webhook() {
        let mut options = service();
        options.namespaces = vec!["team-acme".into(), "team-globex".into()];
        let name_in = LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(vec!["team-acme".into(), "team-globex".into()]),
        };
        let has = |selector: Option<&LabelSelector>| {
            selector
                .and_then(|s| s.match_expressions.as_ref())
                .is_some_and(|e| e.contains(&name_in))
        };
        for hook in validating(&options).webhooks.unwrap() {
            let narrowed =
                has(hook.namespace_selector.as_ref()) || has(hook.object_selector.as_ref());
            // SecurityLogReviews are cluster-scoped: no namespace to narrow by.
            assert_eq!(narrowed, hook.name != REVIEWS_WEBHOOK, "{}", hook.name);
        }
        let intake = &mutating(&options).webhooks.unwrap()[0];
        assert!(has(intake.namespace_selector.as_ref()));
        // The whole cluster without watched namespaces.
        assert!(
            validating(&service())
                .webhooks
                .unwrap()
                .iter()
                .all(|h| !has(h.namespace_selector.as_ref()) && !has(h.object_selector.as_ref()))
        );
    }
}
