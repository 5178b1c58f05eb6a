//! Shared helpers for the integration tiers. A cluster test states its world with
//! [`scenario::Scenario`], starts the operator with [`operator::RunFlags`] and
//! [`operator::RunningOperator`], and waits with [`eventually::eventually`].
//!
//! The real-API-server tier talks to the cluster named by `ASO_TEST_KUBECONFIG`: the local
//! control plane the test command starts (`hack/control-plane/`), or any real cluster. Without
//! one the tier says so loudly; under `CI=true` it fails instead of passing silently.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod chart;
pub mod eventually;
pub mod lwa_emulator;
pub mod objects;
pub mod operator;
pub mod scenario;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use amazon_seller_operator::names::TEAM_LABEL;

/// The repository root, for reading committed artefacts (`crds/`, `examples/`).
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A client for the test cluster, or `None` (after a loud message) when none is configured
/// outside CI. Panics under `CI=true` when the cluster is missing or unreachable.
pub async fn cluster(test: &str) -> Option<Client> {
    let on_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = |why: String| {
        let message = format!(
            "REAL API SERVER TIER NOT RUN ({test}): {why}. Run the README test command (make test), \
             or set ASO_TEST_KUBECONFIG to a cluster's kubeconfig."
        );
        if on_ci {
            panic!("{message}");
        }
        eprintln!("\n!!!! {message}\n");
        None
    };
    let Ok(path) = std::env::var("ASO_TEST_KUBECONFIG") else {
        return skip("ASO_TEST_KUBECONFIG is not set".into());
    };
    let kubeconfig = match Kubeconfig::read_from(&path) {
        Ok(k) => k,
        Err(e) => return skip(format!("cannot read kubeconfig {path}: {e}")),
    };
    let config =
        match Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await {
            Ok(c) => c,
            Err(e) => return skip(format!("invalid kubeconfig {path}: {e}")),
        };
    let client = match Client::try_from(config) {
        Ok(c) => c,
        Err(e) => return skip(format!("cannot build a client from {path}: {e}")),
    };
    match client.apiserver_version().await {
        Ok(version) => {
            eprintln!(
                "real API server tier ({test}): Kubernetes {}",
                version.git_version
            );
            Some(client)
        }
        Err(e) => skip(format!("API server in {path} is unreachable: {e}")),
    }
}

/// A name no other test (or earlier run against the same cluster) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}{:x}-{}",
        std::process::id(),
        nanos & 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Server-side applies every committed CRD under `crds/` and waits until each is Established.
pub async fn install_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut installed = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("crds"))
        .expect("crds/ exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable CRD file");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("CRD YAML parses");
        let name = crd.metadata.name.clone().expect("CRD has a name");
        let applied = api
            .patch(
                &name,
                &PatchParams::apply("aso-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("CRD applies");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established within 30 s")
        .expect("watch for CRD condition");
        installed.push(applied);
    }
    installed
}

/// Creates a fresh namespace, optionally bound to a team, and returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, team: Option<&str>) -> String {
    let labels = team
        .map(|team| (TEAM_LABEL.to_owned(), team.to_owned()))
        .into_iter()
        .collect();
    create_labelled_namespace(client, prefix, labels).await
}

/// Creates a fresh namespace with `labels` and returns its name.
pub async fn create_labelled_namespace(
    client: &Client,
    prefix: &str,
    labels: BTreeMap<String, String>,
) -> String {
    let name = unique_name(prefix);
    let mut ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name }
    }))
    .expect("namespace literal");
    if !labels.is_empty() {
        ns.metadata.labels = Some(labels);
    }
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

/// A shared in-memory writer (audit log, captured tracing output).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A ServiceAccount token for `pod`'s ServiceAccount, bound to the pod (what a projected
/// `serviceAccountToken` volume holds), from the API server's TokenRequest. `audience: None`
/// asks for the API server's default audience.
pub async fn bound_token(
    client: &Client,
    pod: &k8s_openapi::api::core::v1::Pod,
    audience: Option<&str>,
) -> String {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    let namespace = pod.metadata.namespace.clone().unwrap();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(600),
        },
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}
