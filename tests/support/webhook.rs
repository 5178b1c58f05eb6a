//! Helpers for the webhook tiers: a test CA and serving certificate (rcgen on ring), an HTTPS
//! client that trusts it, a fake cluster view, `AdmissionReview` v1 builders, and a running
//! webhook server on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use amazon_seller_operator::crypto::Keyring;
use amazon_seller_operator::domain::admission::{ConnectionFacts, Lookup, Policy, SecretFacts};
use amazon_seller_operator::https::{CertStore, Cluster, HttpsServer, Reviewer, ServerSettings};
use amazon_seller_operator::observability::audit::AuditLog;
use amazon_seller_operator::observability::metrics::Metrics;

/// A CA and a serving certificate for loopback, written to files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A fresh CA and a leaf for `names`, as (CA PEM, leaf PEM, leaf key PEM).
pub fn issue(names: &[&str]) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "aso webhook test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

impl TestPki {
    /// A CA and a leaf for `127.0.0.1` and `localhost`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("tls.crt");
        let key_file = dir.path().join("tls.key");
        let pki = Self {
            dir,
            ca_pem: String::new(),
            cert_file,
            key_file,
        };
        pki.rotate()
    }

    /// Replaces the files with a leaf from a new CA; returns the new PKI description.
    pub fn rotate(mut self) -> Self {
        let (ca, cert, key) = issue(&["127.0.0.1", "localhost"]);
        std::fs::write(&self.cert_file, cert).unwrap();
        std::fs::write(&self.key_file, key).unwrap();
        self.ca_pem = ca;
        self
    }

    /// A store holding the current files.
    pub fn store(&self) -> Arc<CertStore> {
        let store = CertStore::new();
        store
            .load_pem(
                &std::fs::read(&self.cert_file).unwrap(),
                &std::fs::read(&self.key_file).unwrap(),
            )
            .unwrap();
        store
    }
}

/// An HTTPS client (rustls on ring, HTTP/1.1 keep-alive) that trusts only `ca_pem`.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .http1_only()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A cluster view the test writes directly.
#[derive(Default)]
pub struct FakeCluster {
    pub teams: Mutex<HashMap<String, String>>,
    pub connections: Mutex<Vec<(String, ConnectionFacts)>>,
    pub secrets: Mutex<HashMap<(String, String), SecretFacts>>,
    pub not_ready: AtomicBool,
}

impl FakeCluster {
    /// Namespace `namespace` belongs to `team`; connection `connection` there lists
    /// `gateways` and names credentials `<connection>-lwa`, which exists, as does its runtime
    /// Secret `<connection>-sp-api`.
    pub fn with_team(namespace: &str, team: &str, connection: &str, gateways: &[&str]) -> Self {
        let fake = Self::default();
        fake.add_team(namespace, team, connection, gateways);
        fake
    }

    pub fn add_team(&self, namespace: &str, team: &str, connection: &str, gateways: &[&str]) {
        self.teams
            .lock()
            .unwrap()
            .insert(namespace.to_owned(), team.to_owned());
        self.connections.lock().unwrap().push((
            namespace.to_owned(),
            ConnectionFacts {
                name: connection.to_owned(),
                team_id: team.to_owned(),
                gateways: gateways.iter().map(|g| g.to_string()).collect(),
                credentials_secret_name: format!("{connection}-lwa"),
            },
        ));
        let mut secrets = self.secrets.lock().unwrap();
        secrets.insert(
            (namespace.to_owned(), format!("{connection}-lwa")),
            SecretFacts {
                role: "lwa-credentials".into(),
                connection: Some(connection.to_owned()),
            },
        );
        secrets.insert(
            (namespace.to_owned(), format!("{connection}-sp-api")),
            SecretFacts {
                role: "runtime-token".into(),
                connection: Some(connection.to_owned()),
            },
        );
    }
}

impl Lookup for FakeCluster {
    fn namespace_team(&self, namespace: &str) -> Option<String> {
        self.teams.lock().unwrap().get(namespace).cloned()
    }
    fn connections(&self, namespace: &str) -> Vec<ConnectionFacts> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, c)| c.clone())
            .collect()
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<SecretFacts> {
        self.secrets
            .lock()
            .unwrap()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

impl Cluster for FakeCluster {
    fn is_ready(&self) -> bool {
        !self.not_ready.load(Ordering::SeqCst)
    }
}

/// The policy the HTTPS tier uses.
pub fn test_policy() -> Policy {
    Policy {
        team_group_prefix: "openteam:team:".into(),
        admin_groups: vec!["platform-admins".into()],
        reviewer_groups: vec!["security-reviewers".into()],
        operator_username: "system:serviceaccount:aso:amazon-seller-operator".into(),
        workload_controllers:
            amazon_seller_operator::domain::admission::DEFAULT_WORKLOAD_CONTROLLERS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
    }
}

/// A running webhook server on 127.0.0.1.
pub struct RunningWebhook {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningWebhook {
    /// Binds 127.0.0.1:0 and serves `admission` with the certificate `certs` holds.
    pub async fn start(admission: Arc<Reviewer>, certs: Arc<CertStore>) -> Self {
        Self::start_with(admission, certs, ServerSettings::default()).await
    }

    pub async fn start_with(
        admission: Arc<Reviewer>,
        certs: Arc<CertStore>,
        settings: ServerSettings,
    ) -> Self {
        let server = HttpsServer::bind("127.0.0.1:0".parse().unwrap(), admission, certs, settings)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(15), task)
                .await
                .expect("webhook stops within 15 s")
                .unwrap();
        }
    }
}

/// An admission handler over `cluster` with a fresh keyring, metrics and an audit log written
/// to `audit` (a shared buffer).
pub fn admission(
    cluster: Arc<dyn Cluster>,
    keyring: Arc<RwLock<Keyring>>,
    metrics: Metrics,
    audit: Captured,
) -> Arc<Reviewer> {
    let log = AuditLog::to_writer(audit, metrics.clone(), "webhook-test").unwrap();
    Arc::new(Reviewer::new(test_policy(), cluster, keyring, metrics, log))
}

pub use super::Captured;

/// An `AdmissionReview` v1 as the API server sends it.
#[derive(Clone, Debug)]
pub struct Review(pub Value);

impl Review {
    fn new(operation: &str, group: &str, version: &str, resource: &str, kind: &str) -> Self {
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": resource});
        Review(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uuid_like(),
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "name": "",
                "operation": operation,
                "userInfo": {"username": "nobody", "groups": ["system:authenticated"]},
                "object": null,
                "oldObject": null,
                "dryRun": false,
                "options": null
            }
        }))
    }

    pub fn pod(operation: &str) -> Self {
        Self::new(operation, "", "v1", "pods", "Pod")
    }
    pub fn ephemeral_containers(pod: Value) -> Self {
        let mut review = Self::new("UPDATE", "", "v1", "pods", "Pod");
        review.0["request"]["subResource"] = "ephemeralcontainers".into();
        review.0["request"]["requestSubResource"] = "ephemeralcontainers".into();
        review.clone().old(pod.clone()).object(pod)
    }
    /// A review of a workload `kind` (`Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet`,
    /// `Job`, `CronJob`).
    pub fn workload(operation: &str, kind: &str) -> Self {
        let (group, resource) = workload_resource(kind);
        Self::new(operation, group, "v1", resource, kind)
    }
    pub fn secret(operation: &str) -> Self {
        Self::new(operation, "", "v1", "secrets", "Secret")
    }
    pub fn connection(operation: &str) -> Self {
        Self::new(
            operation,
            "connectors.openteam.io",
            "v1alpha1",
            "amazonsellerconnections",
            "AmazonSellerConnection",
        )
    }
    pub fn namespace(operation: &str) -> Self {
        Self::new(operation, "", "v1", "namespaces", "Namespace")
    }
    pub fn security_log_review(operation: &str) -> Self {
        Self::new(
            operation,
            "connectors.openteam.io",
            "v1alpha1",
            "securitylogreviews",
            "SecurityLogReview",
        )
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.0["request"]["namespace"] = namespace.into();
        self
    }
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        self.0["request"]["userInfo"] = json!({"username": name, "groups": groups});
        self
    }
    pub fn object(mut self, object: Value) -> Self {
        if let Some(name) = object["metadata"]["name"].as_str() {
            self.0["request"]["name"] = name.into();
        }
        if let Some(namespace) = object["metadata"]["namespace"].as_str() {
            self.0["request"]["namespace"] = namespace.into();
        }
        self.0["request"]["object"] = object;
        self
    }
    pub fn old(mut self, object: Value) -> Self {
        if let Some(name) = object["metadata"]["name"].as_str() {
            self.0["request"]["name"] = name.into();
        }
        self.0["request"]["oldObject"] = object;
        self
    }
    pub fn uid(&self) -> String {
        self.0["request"]["uid"].as_str().unwrap().to_owned()
    }
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pod manifest with `labels` and `spec` merged over a minimal valid pod.
pub fn pod(name: &str, namespace: &str, gateway: Option<&str>, spec: Value) -> Value {
    let mut labels = json!({"app": "gateway"});
    if let Some(gateway) = gateway {
        labels["connectors.openteam.io/gateway"] = gateway.into();
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "registry.example/gateway:1"}]
        }
    });
    merge(&mut pod["spec"], spec);
    pod
}

/// The API group and resource of a workload kind.
pub fn workload_resource(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Deployment" => ("apps", "deployments"),
        "ReplicaSet" => ("apps", "replicasets"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        other => panic!("not a workload kind: {other}"),
    }
}

/// A workload of `kind` named `name` whose pod template is `pod`'s labels and spec (a
/// CronJob's under `spec.jobTemplate.spec.template`), with the selector a controller needs.
pub fn workload(kind: &str, name: &str, namespace: &str, pod: &Value) -> Value {
    let labels = pod["metadata"]["labels"].clone();
    let template = json!({"metadata": {"labels": labels}, "spec": pod["spec"]});
    let (group, _) = workload_resource(kind);
    let selector = json!({"matchLabels": {"app": labels["app"]}});
    let spec = match kind {
        "CronJob" => {
            json!({"schedule": "@hourly", "jobTemplate": {"spec": {"template": template}}})
        }
        "Job" => json!({"template": template}),
        "StatefulSet" => json!({"selector": selector, "serviceName": name, "template": template}),
        _ => json!({"selector": selector, "template": template}),
    };
    json!({
        "apiVersion": format!("{group}/v1"),
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec
    })
}

/// `object` with a controller `ownerReference` to `kind` `name`, as a controller sets it.
pub fn owned_by(mut object: Value, api_version: &str, kind: &str, name: &str) -> Value {
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": api_version, "kind": kind, "name": name,
        "uid": "6a0e7c3e-0000-4000-8000-000000000001",
        "controller": true, "blockOwnerDeletion": true
    }]);
    object
}

/// JSON merge (objects merged key by key, anything else replaced).
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}
