//! The world a cluster test starts from, built in one place: a Team and its namespace, the
//! operator's namespace, sealed credentials, connections and gateway pods. A test states what
//! it needs ([`Scenario::builder`] and the builder's methods) and gets back handles to what
//! was made ([`Scenario`]); the objects come from builders ([`Connection`], [`GatewayPod`])
//! that start valid and change only what the test is about.
//!
//! Every name is unique, so tests share one cluster and run in parallel.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::crypto::{self, Credentials, PublicKey, SealContext};
use amazon_seller_operator::keystore::{self, KeyStore};
use amazon_seller_operator::names::{DEFAULT_KEY_SECRET, GATEWAY_LABEL, TEAM_LABEL};

use super::eventually::eventually;
use super::lwa_emulator::Seller;
use super::operator::RunFlags;
use super::{create_labelled_namespace, install_crds, unique_name};

/// The namespace credentials are sealed for when a test needs a copy that must never open
/// (the namespace is part of the sealed context).
pub const ELSEWHERE: &str = "elsewhere";

/// A Team: its id and the namespace labelled for it.
#[derive(Clone, Debug)]
pub struct Team {
    pub id: String,
    pub namespace: String,
}

/// What a test asks for; awaiting it creates everything and returns the [`Scenario`].
#[must_use = "a scenario is made only when awaited"]
pub struct ScenarioBuilder {
    client: Client,
    team: String,
    outsider: Option<String>,
    labels: BTreeMap<String, String>,
    credentials: Vec<(String, Credentials, Option<String>)>,
    connections: Vec<Connection>,
    pods: Vec<(GatewayPod, bool)>,
}

impl ScenarioBuilder {
    /// The Team's id and namespace start with `prefix` (default `team`).
    pub fn team(mut self, prefix: &str) -> Self {
        self.team = prefix.to_owned();
        self
    }

    /// Another Team, with a namespace of its own, whose ids start with `prefix`.
    pub fn outsider(mut self, prefix: &str) -> Self {
        self.outsider = Some(prefix.to_owned());
        self
    }

    /// Every namespace the scenario makes carries `key: value`.
    pub fn labelled(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// `seller`'s credentials sealed to the operator's key as Secret `name` of the Team.
    pub fn credentials(mut self, name: &str, seller: &Seller) -> Self {
        self.credentials
            .push((name.to_owned(), seller.credentials(), None));
        self
    }

    /// `seller`'s credentials sealed for namespace [`ELSEWHERE`], then stored as Secret `name`
    /// of the Team: a moved copy that must never open.
    pub fn credentials_from_elsewhere(mut self, name: &str, seller: &Seller) -> Self {
        self.credentials.push((
            name.to_owned(),
            seller.credentials(),
            Some(ELSEWHERE.to_owned()),
        ));
        self
    }

    /// A connection in the Team's namespace.
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connections.push(connection);
        self
    }

    /// A gateway pod in the Team's namespace; [`Scenario::pod`] returns it.
    pub fn gateway_pod(mut self, pod: GatewayPod) -> Self {
        self.pods.push((pod, false));
        self
    }

    /// A gateway pod in the outsider's namespace; [`Scenario::outsider_pod`] returns it.
    pub fn outsider_gateway_pod(mut self, pod: GatewayPod) -> Self {
        self.pods.push((pod, true));
        self
    }

    async fn build(self) -> Scenario {
        // Once per test binary: every scenario needs the CRDs, none changes them.
        static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        CRDS.get_or_init(async || {
            install_crds(&self.client).await;
        })
        .await;
        let make_team = async |prefix: &str| {
            let id = unique_name(prefix);
            let mut labels = self.labels.clone();
            labels.insert(TEAM_LABEL.to_owned(), id.clone());
            let namespace = namespace(&self.client, prefix, labels).await;
            Team { id, namespace }
        };
        let team = make_team(&self.team).await;
        let outsider = match &self.outsider {
            Some(prefix) => Some(make_team(prefix).await),
            None => None,
        };
        let operator_namespace = namespace(&self.client, "aso", self.labels.clone()).await;
        let mut scenario = Scenario {
            client: self.client.clone(),
            team: team.id,
            namespace: team.namespace,
            operator_namespace,
            outsider,
            labels: self.labels,
            pods: Vec::new(),
        };
        for (name, credentials, sealed_for) in &self.credentials {
            scenario
                .seal_credentials(name, credentials, sealed_for.as_deref())
                .await;
        }
        for connection in self.connections {
            scenario.connect(connection).await;
        }
        for (pod, in_outsider) in self.pods {
            let namespace = if in_outsider {
                scenario.outsider().namespace.clone()
            } else {
                scenario.namespace.clone()
            };
            let made = pod.create(&scenario.client, &namespace).await;
            scenario.pods.push(made);
        }
        scenario
    }
}

impl IntoFuture for ScenarioBuilder {
    type Output = Scenario;
    type IntoFuture = Pin<Box<dyn Future<Output = Scenario> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.build())
    }
}

/// A namespace with `labels` and its `default` ServiceAccount (the test plane's
/// controller-manager runs no serviceaccount controller to make it, and the ServiceAccount
/// admission plugin wants it for pods).
async fn namespace(client: &Client, prefix: &str, labels: BTreeMap<String, String>) -> String {
    let name = create_labelled_namespace(client, prefix, labels).await;
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    name
}

/// What a [`ScenarioBuilder`] made, acting as the cluster admin.
pub struct Scenario {
    pub client: Client,
    /// The Team's id.
    pub team: String,
    /// The Team's namespace.
    pub namespace: String,
    /// The operator's namespace, where its keys live.
    pub operator_namespace: String,
    outsider: Option<Team>,
    labels: BTreeMap<String, String>,
    pods: Vec<Pod>,
}

impl Scenario {
    /// A scenario on `client`'s cluster: the CRDs installed, a Team with its namespace and
    /// the operator's namespace, plus whatever the builder methods add.
    pub fn builder(client: &Client) -> ScenarioBuilder {
        ScenarioBuilder {
            client: client.clone(),
            team: "team".to_owned(),
            outsider: None,
            labels: BTreeMap::new(),
            credentials: Vec::new(),
            connections: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// The other Team ([`ScenarioBuilder::outsider`]).
    pub fn outsider(&self) -> &Team {
        self.outsider
            .as_ref()
            .expect("the scenario has no outsider: add .outsider(…)")
    }

    /// The connections in the Team's namespace.
    pub fn connections(&self) -> Api<AmazonSellerConnection> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Secrets in the Team's namespace.
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The operator's keyring Secret (default name) in its namespace.
    pub fn key_store(&self) -> KeyStore {
        KeyStore::new(
            self.client.clone(),
            &self.operator_namespace,
            DEFAULT_KEY_SECRET,
        )
    }

    /// The `run` flags for this scenario: its operator namespace, watching every Team namespace
    /// it made.
    pub fn run_flags(&self) -> RunFlags {
        let mut watched = vec![self.namespace.as_str()];
        if let Some(outsider) = &self.outsider {
            watched.push(&outsider.namespace);
        }
        RunFlags::new()
            .operator_namespace(&self.operator_namespace)
            .watching(&watched)
    }

    /// Seals `seller`'s credentials to the operator key (bootstrapping the keyring if needed)
    /// as Secret `name` of the Team, as a Team would with `seal`.
    pub async fn seal(&self, name: &str, seller: &Seller) {
        self.seal_credentials(name, &seller.credentials(), None)
            .await;
    }

    /// Seals `seller`'s credentials for namespace [`ELSEWHERE`] and stores them here as Secret
    /// `name`: a copy that must never open.
    pub async fn seal_from_elsewhere(&self, name: &str, seller: &Seller) {
        self.seal_credentials(name, &seller.credentials(), Some(ELSEWHERE))
            .await;
    }

    async fn seal_credentials(
        &self,
        name: &str,
        credentials: &Credentials,
        sealed_for: Option<&str>,
    ) {
        let keyring = self
            .key_store()
            .bootstrap(jiff::Timestamp::now())
            .await
            .unwrap();
        let context = SealContext {
            team_id: &self.team,
            namespace: sealed_for.unwrap_or(&self.namespace),
            secret_name: name,
        };
        let secret = sealed_secret(
            &keyring.active().public_key(),
            &context,
            &self.namespace,
            credentials,
        );
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// `connection` as an object of the Team's namespace, not yet created.
    pub fn connection(&self, connection: &Connection) -> AmazonSellerConnection {
        connection.object(&self.team, &self.namespace)
    }

    /// Creates `connection` in the Team's namespace.
    pub async fn connect(&self, connection: Connection) -> AmazonSellerConnection {
        self.connections()
            .create(&PostParams::default(), &self.connection(&connection))
            .await
            .unwrap()
    }

    /// Secret `name` of the Team, if it exists.
    pub async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.unwrap()
    }

    /// Merges `changes` into the spec of connection `name`, as a Team member editing it would.
    pub async fn change_spec(&self, name: &str, changes: Value) {
        self.connections()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": changes })),
            )
            .await
            .unwrap();
    }

    /// Suspends connection `name` (or, with `false`, lifts the suspension).
    pub async fn set_suspended(&self, name: &str, suspended: bool) {
        self.change_spec(name, json!({ "suspended": suspended }))
            .await;
    }

    /// Creates a gateway pod in the Team's namespace.
    pub async fn gateway_pod(&self, pod: GatewayPod) -> Pod {
        pod.create(&self.client, &self.namespace).await
    }

    /// The gateway pod `name` the builder made in the Team's namespace.
    pub fn pod(&self, name: &str) -> &Pod {
        self.find_pod(&self.namespace, name)
    }

    /// The gateway pod `name` the builder made in the outsider's namespace.
    pub fn outsider_pod(&self, name: &str) -> &Pod {
        self.find_pod(&self.outsider().namespace, name)
    }

    fn find_pod(&self, namespace: &str, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .unwrap_or_else(|| panic!("the scenario made no pod {namespace}/{name}"))
    }

    /// Another namespace of the same Team, with the scenario's labels.
    pub async fn another_team_namespace(&self) -> String {
        let mut labels = self.labels.clone();
        labels.insert(TEAM_LABEL.to_owned(), self.team.clone());
        namespace(&self.client, "team", labels).await
    }

    /// Waits (up to 30 s) until connection `name` exists and `check` holds for it; the timeout
    /// names `what` and shows the last status.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AmazonSellerConnection) -> bool,
    ) -> AmazonSellerConnection {
        let connections = self.connections();
        eventually(
            format!("{what} on connection {name}"),
            Duration::from_secs(30),
        )
        .poll(async || match connections.get_opt(name).await.unwrap() {
            Some(c) if check(&c) => Ok(c),
            seen => Err(seen.map(|c| c.status)),
        })
        .await
    }

    /// Waits (up to 30 s) until connection `name` is Ready.
    pub async fn wait_ready(&self, name: &str) -> AmazonSellerConnection {
        self.wait_for(name, "Ready=True", |c| has_condition(c, "Ready", "True"))
            .await
    }

    /// Waits (up to 30 s) until Secret `name` of the Team is present or absent; returns it when
    /// present.
    pub async fn wait_for_secret(&self, name: &str, present: bool) -> Option<Secret> {
        let secrets = self.secrets();
        let state = if present { "present" } else { "absent" };
        eventually(
            format!("Secret {name} to be {state}"),
            Duration::from_secs(30),
        )
        .until(
            async || secrets.get_opt(name).await.unwrap(),
            |secret| secret.is_some() == present,
        )
        .await
    }
}

/// `credentials` sealed to `key` under `context`, as the Secret `seal` writes, stored in
/// `namespace`: a namespace other than the context's makes a copy that never opens there.
pub fn sealed_secret(
    key: &PublicKey,
    context: &SealContext,
    namespace: &str,
    credentials: &Credentials,
) -> Secret {
    let envelope = crypto::seal(key, context, credentials).unwrap();
    keystore::sealed_secret(namespace, context.secret_name, None, envelope)
}

/// An `AmazonSellerConnection` for a test: valid as it stands, each method changes one thing.
#[derive(Clone, Debug)]
pub struct Connection {
    name: String,
    team: Option<String>,
    credentials: Option<String>,
    gateways: Vec<String>,
    delivery: Option<String>,
    renew_before: Option<String>,
}

impl Connection {
    /// Connection `acme-de`: seller `A3FHEXAMPLEYWS` in marketplace DE, credentials
    /// `<name>-lwa`, gateway `gw-main`, the Team of its namespace, and the schema's defaults
    /// (delivery `Secret`, `renewBefore` 20m, not suspended).
    pub fn test() -> Self {
        Self {
            name: "acme-de".to_owned(),
            team: None,
            credentials: None,
            gateways: vec!["gw-main".to_owned()],
            delivery: None,
            renew_before: None,
        }
    }

    /// Named `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Opening the credentials in Secret `secret`.
    pub fn with_credentials(mut self, secret: &str) -> Self {
        self.credentials = Some(secret.to_owned());
        self
    }

    /// Listing `gateways`.
    pub fn with_gateways(mut self, gateways: &[&str]) -> Self {
        self.gateways = gateways.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    /// Delivering its token as `delivery` (`Secret`, `Endpoint` or `Both`).
    pub fn with_delivery(mut self, delivery: &str) -> Self {
        self.delivery = Some(delivery.to_owned());
        self
    }

    /// Refreshing `renew_before` (a duration such as `20m`) before the token expires.
    pub fn with_renew_before(mut self, renew_before: &str) -> Self {
        self.renew_before = Some(renew_before.to_owned());
        self
    }

    /// Claiming Team `team` instead of its namespace's.
    pub fn for_team(mut self, team: &str) -> Self {
        self.team = Some(team.to_owned());
        self
    }

    /// The object, in `namespace` of Team `team` (unless [`Connection::for_team`] said another).
    pub fn object(&self, team: &str, namespace: &str) -> AmazonSellerConnection {
        let mut spec = json!({
            "teamId": self.team.as_deref().unwrap_or(team),
            "sellerId": "A3FHEXAMPLEYWS",
            "marketplace": "DE",
            "credentialsSecretName": self
                .credentials
                .clone()
                .unwrap_or_else(|| format!("{}-lwa", self.name)),
            "gateways": self.gateways,
        });
        if let Some(delivery) = &self.delivery {
            spec["delivery"] = delivery.as_str().into();
        }
        if let Some(renew_before) = &self.renew_before {
            spec["renewBefore"] = renew_before.as_str().into();
        }
        serde_json::from_value(json!({
            "apiVersion": "connectors.openteam.io/v1alpha1",
            "kind": "AmazonSellerConnection",
            "metadata": { "name": self.name, "namespace": namespace },
            "spec": spec,
        }))
        .unwrap()
    }
}

/// A gateway's pod, stored only (the test plane runs no kubelet), with a ServiceAccount of its
/// own so that tokens bound to it name it.
#[derive(Clone, Debug)]
pub struct GatewayPod {
    name: String,
    gateway: Option<String>,
    mounts: Option<String>,
}

impl GatewayPod {
    /// Pod and ServiceAccount `name`, labelled as gateway `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            gateway: Some(name.to_owned()),
            mounts: None,
        }
    }

    /// Labelled as gateway `gateway` instead.
    pub fn for_gateway(mut self, gateway: &str) -> Self {
        self.gateway = Some(gateway.to_owned());
        self
    }

    /// Without the gateway label.
    pub fn without_gateway_label(mut self) -> Self {
        self.gateway = None;
        self
    }

    /// Mounting Secret `secret` (a runtime Secret, say) as a whole volume at `/var/run/token`.
    pub fn mounting(mut self, secret: &str) -> Self {
        self.mounts = Some(secret.to_owned());
        self
    }

    /// The pod object (not created).
    pub fn object(&self) -> Pod {
        let mut pod = json!({
            "metadata": { "name": self.name },
            "spec": {
                "serviceAccountName": self.name,
                "automountServiceAccountToken": false,
                "containers": [{ "name": "gateway", "image": "registry.example.com/gateway:1" }],
            }
        });
        if let Some(gateway) = &self.gateway {
            pod["metadata"]["labels"] = json!({ GATEWAY_LABEL: gateway });
        }
        if let Some(secret) = &self.mounts {
            pod["spec"]["volumes"] =
                json!([{ "name": "token", "secret": { "secretName": secret } }]);
            pod["spec"]["containers"][0]["volumeMounts"] =
                json!([{ "name": "token", "mountPath": "/var/run/token", "readOnly": true }]);
        }
        serde_json::from_value(pod).unwrap()
    }

    /// Creates the ServiceAccount and the pod in `namespace`.
    pub async fn create(&self, client: &Client, namespace: &str) -> Pod {
        let account: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": self.name } })).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        Api::<Pod>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &self.object())
            .await
            .unwrap()
    }
}

/// Condition `type_` of the connection's status.
pub fn condition<'a>(c: &'a AmazonSellerConnection, type_: &str) -> Option<&'a Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
}

/// Whether the connection's condition `type_` has `status` (`True`, `False`).
pub fn has_condition(c: &AmazonSellerConnection, type_: &str, status: &str) -> bool {
    condition(c, type_).is_some_and(|x| x.status == status)
}
