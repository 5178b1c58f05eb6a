//! Any object, by its `apiVersion` and `kind`, on the test cluster: what a chart's render needs
//! (it holds built-in kinds, this project's CRDs and other projects' CRDs). Discovery maps
//! each kind to its resource; objects are server-side applied, for real or as a dry run.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;

/// The field manager of everything these helpers apply.
const MANAGER: &str = "aso-tests";

/// Server-side applies every CRD file (one or more YAML documents each) in `dir`, for real,
/// and waits until each is Established.
pub async fn apply_crds(client: &Client, dir: &Path) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for crd in crds {
            let name = crd.metadata.name.clone().expect("a CRD has a name");
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} from {}: {e}", file.display()));
            tokio::time::timeout(
                Duration::from_secs(60),
                await_condition(api.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("{name} not Established within 60 s"))
            .unwrap();
        }
    }
}

/// The cluster's kinds, as discovery found them.
pub struct Objects {
    client: Client,
    discovery: Discovery,
}

impl Objects {
    /// Discovers every kind the cluster serves now (after any CRD it should know).
    pub async fn discover(client: &Client) -> Self {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        Self {
            client: client.clone(),
            discovery,
        }
    }

    fn resource(&self, object: &Value) -> Result<(ApiResource, ApiCapabilities), String> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
            .ok_or_else(|| format!("the API server does not serve {api_version} {kind}"))
    }

    /// The API for `object`, in its namespace or `default_namespace` when it names none.
    fn api(&self, object: &Value, default_namespace: &str) -> Result<Api<DynamicObject>, String> {
        let (resource, capabilities) = self.resource(object)?;
        Ok(match capabilities.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
            Scope::Namespaced => {
                let namespace = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(default_namespace);
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
        })
    }

    /// Server-side applies `object` as a dry run: the API server admits and validates it
    /// completely (schema, CEL rules, RBAC escalation checks, admission) and stores nothing.
    pub async fn dry_run(&self, object: &Value, default_namespace: &str) -> Result<(), String> {
        let api = self.api(object, default_namespace)?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force().dry_run(),
            &Patch::Apply(object),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    /// The stored object `object` names, if any.
    pub async fn get(&self, object: &Value, default_namespace: &str) -> Option<DynamicObject> {
        let api = self.api(object, default_namespace).ok()?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.get_opt(name).await.expect("get")
    }

    /// `Kind/name` of every object stored in `namespace`, of every kind that can be listed.
    pub async fn everything_in(&self, namespace: &str) -> Vec<String> {
        let mut found = Vec::new();
        for group in self.discovery.groups() {
            for (resource, capabilities) in group.recommended_resources() {
                if capabilities.scope != Scope::Namespaced
                    || !capabilities.supports_operation(verbs::LIST)
                {
                    continue;
                }
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &resource);
                let Ok(list) = api.list_metadata(&ListParams::default()).await else {
                    continue;
                };
                found.extend(list.items.iter().map(|o| {
                    format!(
                        "{}/{}",
                        resource.kind,
                        o.metadata.name.as_deref().unwrap_or_default()
                    )
                }));
            }
        }
        found.sort();
        found
    }

    /// Every object in `namespace` that is neither one of `removed` (by uid) nor a dependent a
    /// garbage collector would delete with them: objects whose owner is removed (transitively)
    /// and Events about any of those. The test control plane runs the deployment and replicaset
    /// controllers but no garbage collector, so a Deployment's ReplicaSets and pods, and the
    /// Events about them, stay there after the Deployment is gone; in a cluster they do not.
    pub async fn left_in(&self, namespace: &str, removed: &[String]) -> Vec<String> {
        let mut all: Vec<(String, String, Vec<String>, Option<String>)> = Vec::new();
        for group in self.discovery.groups() {
            for (resource, capabilities) in group.recommended_resources() {
                if capabilities.scope != Scope::Namespaced
                    || !capabilities.supports_operation(verbs::LIST)
                {
                    continue;
                }
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &resource);
                let Ok(list) = api.list(&ListParams::default()).await else {
                    continue;
                };
                for o in list.items {
                    let name = format!(
                        "{}/{}",
                        resource.kind,
                        o.metadata.name.as_deref().unwrap_or_default()
                    );
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    let owners = o
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .map(|r| r.uid.clone())
                        .collect();
                    // An Event names its object under `regarding` (events.k8s.io) or
                    // `involvedObject` (core).
                    let about = ["regarding", "involvedObject"]
                        .iter()
                        .find_map(|f| o.data.get(*f)?.get("uid")?.as_str().map(str::to_owned));
                    all.push((name, uid, owners, about));
                }
            }
        }
        let mut gone: std::collections::BTreeSet<String> = removed.iter().cloned().collect();
        loop {
            let before = gone.len();
            for (_, uid, owners, _) in &all {
                if owners.iter().any(|o| gone.contains(o)) {
                    gone.insert(uid.clone());
                }
            }
            if gone.len() == before {
                break;
            }
        }
        let mut left: Vec<String> = all
            .into_iter()
            .filter(|(_, uid, _, about)| {
                !gone.contains(uid) && about.as_ref().is_none_or(|a| !gone.contains(a))
            })
            .map(|(name, ..)| name)
            .collect();
        left.sort();
        left
    }
}
