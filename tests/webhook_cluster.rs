//! Tier 2 for the webhook: a real kube-apiserver calls the running webhook. Each test registers
//! the generated Validating/MutatingWebhookConfiguration (unique names, `clientConfig.url` on
//! loopback, the test CA in `caBundle`), narrowed by a per-test label to its own namespaces and
//! objects, and removes them at the end (also on failure). Requests are made as a Team member,
//! a member of another Team, a ServiceAccount, the operator's ServiceAccount and an admin, by
//! impersonation from the admin kubeconfig; RBAC lets each through, so the webhook decides.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use amazon_seller_operator::api::{AmazonSellerConnection, SecurityLogReview};
use amazon_seller_operator::crypto::{self, Keyring, SealContext};
use amazon_seller_operator::domain::admission::{Lookup, Policy};
use amazon_seller_operator::https::admission::configuration::{self, ClientTarget, Options};
use amazon_seller_operator::https::certs::{self, SelfManaged};
use amazon_seller_operator::https::{CertStore, Cluster, ClusterLookup, Reviewer};
use amazon_seller_operator::observability::audit::AuditLog;
use amazon_seller_operator::observability::metrics::Metrics;

use support::eventually::eventually;
use support::operator::{RunFlags, RunningOperator};
use support::scenario::{Connection, Scenario};
use support::webhook::{Captured, RunningWebhook, TestPki, merge, pod};
use support::{cluster, unique_name};

const SCOPE_LABEL: &str = "aso-webhook-test";
const TEAM_LABEL: &str = "connectors.openteam.io/team";
const CLIENT_ID: &str = "amzn1.application-oa2-client.0a1b2c3d4e";
const CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.ClusterClientSecretPlain";
const REFRESH_TOKEN: &str = "Atzr|IwEBIClusterRefreshTokenPlain";

fn kubeconfig_path() -> String {
    std::env::var("ASO_TEST_KUBECONFIG").expect("ASO_TEST_KUBECONFIG")
}

/// A client acting as `user` in `groups` (impersonation from the admin kubeconfig).
async fn client_as(user: &str, groups: &[String]) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.to_vec());
    Client::try_from(config).unwrap()
}

/// Deletes what a test registered cluster-wide, even when the test panics.
struct Cleanup {
    configurations: Vec<String>,
    rbac: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let configurations = self.configurations.clone();
        let rbac = self.rbac.clone();
        // Drop cannot await, and the test's runtime may be unwinding: use a runtime of our own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).unwrap();
                let config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .unwrap();
                let client = Client::try_from(config).unwrap();
                let dp = DeleteParams::default();
                for name in &configurations {
                    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
                        .delete(name, &dp)
                        .await;
                    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
                        .delete(name, &dp)
                        .await;
                }
                let _ = Api::<ClusterRoleBinding>::all(client.clone())
                    .delete(&rbac, &dp)
                    .await;
                let _ = Api::<ClusterRole>::all(client).delete(&rbac, &dp).await;
            });
        });
        let _ = done.join();
    }
}

/// Who acts.
struct Actor {
    name: String,
    groups: Vec<String>,
}

impl Actor {
    fn user(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
    fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: Policy::service_account_username(namespace, name),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        }
    }
    async fn client(&self) -> Client {
        client_as(&self.name, &self.groups).await
    }
}

/// One test's namespaces, identities, RBAC and webhook configurations.
struct Env {
    admin: Client,
    scope: String,
    team: String,
    ns: String,
    other_ns: String,
    spare_ns: String,
    operator_ns: String,
    member: Actor,
    outsider: Actor,
    builder: Actor,
    operator: Actor,
    platform_admin: Actor,
    reviewer: Actor,
    cleanup: Cleanup,
}

impl Env {
    async fn new(test: &str) -> Option<Self> {
        let admin = cluster(test).await?;
        let scope = unique_name("whk");
        // Every namespace carries the test's scope label, which narrows its configurations.
        let scenario = Scenario::builder(&admin)
            .labelled(SCOPE_LABEL, &scope)
            .outsider("team")
            .await;
        let (team, ns) = (scenario.team.clone(), scenario.namespace.clone());
        let other_team = scenario.outsider().id.clone();
        let other_ns = scenario.outsider().namespace.clone();
        let spare_ns = scenario.another_team_namespace().await;
        let operator_ns = scenario.operator_namespace.clone();

        let member = Actor::user(
            &format!("alice-{scope}"),
            &[&format!("openteam:team:{team}")],
        );
        let outsider = Actor::user(
            &format!("mallory-{scope}"),
            &[&format!("openteam:team:{other_team}")],
        );
        let builder = Actor::service_account(&ns, "builder");
        let operator = Actor::service_account(&operator_ns, "amazon-seller-operator");
        let platform_admin = Actor::user(&format!("root-{scope}"), &[&format!("{scope}-admins")]);
        let reviewer = Actor::user(&format!("rita-{scope}"), &[&format!("{scope}-reviewers")]);

        // RBAC: everyone here may do what the tests try, so the webhook is what decides.
        let rbac = format!("aso-webhook-test-{scope}");
        let cleanup = Cleanup {
            configurations: Vec::new(),
            rbac: rbac.clone(),
        };
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": rbac},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/ephemeralcontainers", "secrets", "namespaces"], "verbs": ["*"]},
                {"apiGroups": ["connectors.openteam.io"], "resources": ["amazonsellerconnections", "securitylogreviews"], "verbs": ["*"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["*"]}
            ]
        }))
        .unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": rbac},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac},
            "subjects": [
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("openteam:team:{team}")},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("openteam:team:{other_team}")},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("{scope}-admins")},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("{scope}-reviewers")},
                {"kind": "ServiceAccount", "name": "builder", "namespace": ns},
                {"kind": "ServiceAccount", "name": "amazon-seller-operator", "namespace": operator_ns}
            ]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();

        Some(Self {
            admin,
            scope,
            team,
            ns,
            other_ns,
            spare_ns,
            operator_ns,
            member,
            outsider,
            builder,
            operator,
            platform_admin,
            reviewer,
            cleanup,
        })
    }

    /// `connection` in the Team's namespace.
    fn connection(&self, connection: Connection) -> AmazonSellerConnection {
        connection.object(&self.team, &self.ns)
    }

    fn policy(&self) -> Policy {
        Policy {
            team_group_prefix: "openteam:team:".into(),
            admin_groups: vec![format!("{}-admins", self.scope)],
            reviewer_groups: vec![format!("{}-reviewers", self.scope)],
            operator_username: self.operator.name.clone(),
            workload_controllers:
                amazon_seller_operator::domain::admission::DEFAULT_WORKLOAD_CONTROLLERS
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
        }
    }

    fn options(&self, url: String, ca_bundle: Option<Vec<u8>>) -> Options {
        let mut options = Options::new(ClientTarget::Url(url));
        options.validating_name = format!("aso-webhook-test-{}", self.scope);
        options.mutating_name = format!("aso-webhook-test-{}", self.scope);
        options.ca_bundle = ca_bundle;
        options
            .scope_labels
            .insert(SCOPE_LABEL.into(), self.scope.clone());
        options
    }

    /// Registers the generated configurations; they are deleted when the test ends.
    async fn register(&mut self, options: &Options) {
        Api::<ValidatingWebhookConfiguration>::all(self.admin.clone())
            .create(&PostParams::default(), &configuration::validating(options))
            .await
            .unwrap();
        Api::<MutatingWebhookConfiguration>::all(self.admin.clone())
            .create(&PostParams::default(), &configuration::mutating(options))
            .await
            .unwrap();
        self.cleanup
            .configurations
            .push(options.validating_name.clone());
    }

    /// Waits until the API server calls both webhooks for this test's namespaces.
    async fn wait_until_active(&self) {
        let secrets: Api<Secret> = Api::namespaced(self.member.client().await, &self.ns);
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let probe_runtime = secret_json(
            "probe-sp-api",
            json!({"connectors.openteam.io/secret-role": "runtime-token"}),
            json!({}),
        );
        let probe_intake = secret_json(
            "probe-lwa",
            json!({"connectors.openteam.io/secret-role": "lwa-credentials"}),
            json!({"clientId": CLIENT_ID}),
        );
        let denied_by = |r: &Result<Secret, kube::Error>, hook: &str| matches!(r, Err(kube::Error::Api(s)) if s.message.contains(hook));
        eventually(
            "the API server to call both webhooks",
            Duration::from_secs(20),
        )
        .poll(async || {
            let validating = secrets.create(&dry_run, &probe_runtime).await;
            let mutating = secrets.create(&dry_run, &probe_intake).await;
            if denied_by(&validating, "secrets.connectors.openteam.io")
                && denied_by(&mutating, "intake.secrets.connectors.openteam.io")
            {
                Ok(())
            } else {
                Err((validating, mutating))
            }
        })
        .await;
    }
}

fn secret_json(name: &str, labels: Value, string_data: Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": string_data
    }))
    .unwrap()
}

/// The webhook of one test: real cluster view, test CA, loopback server.
struct Served {
    webhook: RunningWebhook,
    lookup: Arc<ClusterLookup>,
    keyring: Arc<RwLock<Keyring>>,
    audit: Captured,
    _pki: TestPki,
    _stop_lookup: oneshot::Sender<()>,
}

async fn serve(env: &mut Env) -> Served {
    let pki = TestPki::new();
    let (stop_lookup, stopped) = oneshot::channel::<()>();
    let lookup = ClusterLookup::start(env.admin.clone(), &[None], async move {
        let _ = stopped.await;
    });
    let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
    let metrics = Metrics::new().unwrap();
    let audit = Captured::default();
    let log = AuditLog::to_writer(audit.clone(), metrics.clone(), "webhook-cluster-test").unwrap();
    let admission = Arc::new(Reviewer::new(
        env.policy(),
        lookup.clone(),
        keyring.clone(),
        metrics,
        log,
    ));
    let webhook = RunningWebhook::start(admission, pki.store()).await;
    eventually("the cluster view to sync", Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(async || lookup.is_ready(), |ready| *ready)
        .await;
    assert!(lookup.is_ready(), "cluster view synced");
    let options = env.options(webhook.url(), Some(pki.ca_pem.clone().into_bytes()));
    env.register(&options).await;
    env.wait_until_active().await;
    Served {
        webhook,
        lookup,
        keyring,
        audit,
        _pki: pki,
        _stop_lookup: stop_lookup,
    }
}

/// Asserts that the API server refused `result` because the webhook denied it with `text`.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, kube::Error>, hook: &str, text: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!(
                status
                    .message
                    .contains(&format!("admission webhook \"{hook}\" denied the request")),
                "not denied by {hook}: {}",
                status.message
            );
            assert!(
                status.message.contains(text),
                "{:?} lacks {text:?}",
                status.message
            );
        }
        other => panic!("expected a denial by {hook} ({text}), got {other:?}"),
    }
}

fn pod_object(name: &str, namespace: &str, gateway: Option<&str>, spec: Value) -> Pod {
    serde_json::from_value(pod(name, namespace, gateway, spec)).unwrap()
}

fn runtime_volume(secret: &str) -> Value {
    json!({"volumes": [{"name": "token", "secret": {"secretName": secret}}],
           "containers": [{"name": "main", "image": "registry.example/gateway:1",
                           "volumeMounts": [{"name": "token", "mountPath": "/var/run/sp-api"}]}]})
}

#[tokio::test]
async fn team_scoping_of_connections_namespaces_and_reviews_through_the_api_server() {
    let Some(mut env) =
        Env::new("team_scoping_of_connections_namespaces_and_reviews_through_the_api_server").await
    else {
        return;
    };
    let served = serve(&mut env).await;
    let pp = PostParams::default();

    // A Team member connects; a member of another Team, a ServiceAccount of the namespace and
    // a connection claiming another Team are refused.
    let as_member: Api<AmazonSellerConnection> =
        Api::namespaced(env.member.client().await, &env.ns);
    let created = as_member
        .create(&pp, &env.connection(Connection::test()))
        .await
        .unwrap();
    assert_eq!(created.spec.team_id, env.team);
    let as_outsider: Api<AmazonSellerConnection> =
        Api::namespaced(env.outsider.client().await, &env.ns);
    assert_denied(
        as_outsider
            .create(&pp, &env.connection(Connection::test().named("evil")))
            .await,
        "connections.connectors.openteam.io",
        &format!("is not a member of team {:?}", env.team),
    );
    assert_denied(
        as_outsider
            .delete("acme-de", &DeleteParams::default())
            .await,
        "connections.connectors.openteam.io",
        "may delete AmazonSellerConnections",
    );
    let as_builder: Api<AmazonSellerConnection> =
        Api::namespaced(env.builder.client().await, &env.ns);
    assert_denied(
        as_builder
            .create(&pp, &env.connection(Connection::test().named("sa-made")))
            .await,
        "connections.connectors.openteam.io",
        "is not a member of team",
    );
    assert_denied(
        as_member
            .create(
                &pp,
                &env.connection(
                    Connection::test()
                        .named("wrong-team")
                        .for_team("someone-else"),
                ),
            )
            .await,
        "connections.connectors.openteam.io",
        "spec.teamId: \"someone-else\" must equal the namespace's team",
    );
    // A Team member cannot create a connection in another Team's namespace.
    let in_other: Api<AmazonSellerConnection> =
        Api::namespaced(env.member.client().await, &env.other_ns);
    assert_denied(
        in_other
            .create(
                &pp,
                &Connection::test()
                    .named("crossing")
                    .object(&env.team, &env.other_ns),
            )
            .await,
        "connections.connectors.openteam.io",
        "is not a member of team",
    );
    // An admin may act for any Team.
    let as_admin: Api<AmazonSellerConnection> =
        Api::namespaced(env.platform_admin.client().await, &env.ns);
    as_admin
        .create(&pp, &env.connection(Connection::test().named("by-admin")))
        .await
        .unwrap();

    // Only admins set, change or remove a namespace's Team label.
    let remove = Patch::Merge(json!({"metadata": {"labels": {TEAM_LABEL: null}}}));
    let change = Patch::Merge(json!({"metadata": {"labels": {TEAM_LABEL: "someone-else"}}}));
    for actor in [&env.member, &env.builder] {
        let namespaces: Api<Namespace> = Api::all(actor.client().await);
        for patch in [&remove, &change] {
            assert_denied(
                namespaces
                    .patch(&env.spare_ns, &PatchParams::default(), patch)
                    .await,
                "namespaces.connectors.openteam.io",
                "metadata.labels[\"connectors.openteam.io/team\"]",
            );
        }
    }
    let namespaces: Api<Namespace> = Api::all(env.platform_admin.client().await);
    let removed = namespaces
        .patch(&env.spare_ns, &PatchParams::default(), &remove)
        .await
        .unwrap();
    assert!(!removed.metadata.labels.unwrap().contains_key(TEAM_LABEL));

    // Only reviewers record security log reviews (dry run: nothing is stored cluster-wide).
    let review: SecurityLogReview = serde_json::from_value(json!({
        "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "SecurityLogReview",
        "metadata": {"name": unique_name("review"), "labels": {SCOPE_LABEL: env.scope}},
        "spec": {"reviewer": env.reviewer.name, "periodStart": "2026-05-01T00:00:00Z",
                 "periodEnd": "2026-05-14T00:00:00Z", "summary": "alerts reviewed", "findingsCount": 0}
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<SecurityLogReview>::all(env.reviewer.client().await)
        .create(&dry_run, &review)
        .await
        .unwrap();
    assert_denied(
        Api::<SecurityLogReview>::all(env.member.client().await)
            .create(&dry_run, &review)
            .await,
        "securitylogreviews.connectors.openteam.io",
        "only members of the reviewer groups",
    );

    let audit = served.audit.text();
    assert!(audit.contains("\"category\":\"authentication\""), "{audit}");
    assert!(
        audit.contains(&format!("\"actor\":\"mallory-{}\"", env.scope)),
        "{audit}"
    );
    served.webhook.stop().await;
}

#[tokio::test]
async fn credentials_are_sealed_on_write_and_protected_through_the_api_server() {
    let Some(mut env) =
        Env::new("credentials_are_sealed_on_write_and_protected_through_the_api_server").await
    else {
        return;
    };
    let served = serve(&mut env).await;
    let pp = PostParams::default();
    let admin_secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    let member_secrets: Api<Secret> = Api::namespaced(env.member.client().await, &env.ns);

    // A connection exists, so its runtime Secret name is taken.
    Api::<AmazonSellerConnection>::namespaced(env.member.client().await, &env.ns)
        .create(&pp, &env.connection(Connection::test()))
        .await
        .unwrap();

    // An intake Secret with plaintext in stringData is stored sealed.
    let intake = secret_json(
        "acme-de-lwa",
        json!({"connectors.openteam.io/secret-role": "lwa-credentials",
               "connectors.openteam.io/connection": "acme-de"}),
        json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "refreshToken": REFRESH_TOKEN}),
    );
    let returned = member_secrets.create(&pp, &intake).await.unwrap();
    let stored = admin_secrets.get("acme-de-lwa").await.unwrap();
    for secret in [&returned, &stored] {
        assert_eq!(
            secret.type_.as_deref(),
            Some("connectors.openteam.io/lwa-credentials")
        );
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["sealed"]);
        assert!(secret.string_data.is_none());
        let text = serde_json::to_string(secret).unwrap();
        for plaintext in [CLIENT_SECRET, REFRESH_TOKEN] {
            assert!(!text.contains(plaintext));
            let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
            assert!(!text.contains(&b64), "a plaintext value was stored");
        }
    }
    let envelope = &stored.data.as_ref().unwrap()["sealed"].0;
    let context = SealContext {
        team_id: &env.team,
        namespace: &env.ns,
        secret_name: "acme-de-lwa",
    };
    let (opened, _) = crypto::open(&served.keyring.read().unwrap(), &context, envelope).unwrap();
    assert_eq!(opened.client_id, CLIENT_ID);
    assert_eq!(opened.client_secret.expose(), CLIENT_SECRET);
    assert_eq!(opened.refresh_token.expose(), REFRESH_TOKEN);

    // Writing plaintext keys into the existing sealed Secret is refused.
    assert_denied(
        member_secrets
            .patch(
                "acme-de-lwa",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"clientSecret": "amzn1.oa2-cs.v1.replaced"}})),
            )
            .await,
        "intake.secrets.connectors.openteam.io",
        "data.clientId: missing",
    );
    // Dropping the label while writing plaintext does not escape the intake webhook (it matches
    // the old object's label too).
    assert_denied(
        member_secrets
            .patch(
                "acme-de-lwa",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"connectors.openteam.io/secret-role": null}},
                                     "stringData": {"refreshToken": "Atzr|replaced"}}),
                ),
            )
            .await,
        "intake.secrets.connectors.openteam.io",
        "metadata.labels[\"connectors.openteam.io/secret-role\"]",
    );
    // A credentials-typed Secret without the label never reaches the intake webhook; the
    // validating webhook refuses its plaintext.
    let unlabelled: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sneaky-lwa"},
        "type": "connectors.openteam.io/lwa-credentials",
        "stringData": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "refreshToken": REFRESH_TOKEN}
    }))
    .unwrap();
    assert_denied(
        member_secrets.create(&pp, &unlabelled).await,
        "secrets.connectors.openteam.io",
        "plaintext LWA credentials are never stored",
    );
    // A member of another Team replacing the sealed Secret is refused.
    let outsider_secrets: Api<Secret> = Api::namespaced(env.outsider.client().await, &env.ns);
    let mut replacement = stored.clone();
    replacement.metadata.managed_fields = None;
    replacement.data = Some(BTreeMap::from([(
        "sealed".to_owned(),
        k8s_openapi::ByteString(b"{\"version\":1}".to_vec()),
    )]));
    assert_denied(
        outsider_secrets
            .replace("acme-de-lwa", &pp, &replacement)
            .await,
        "intake.secrets.connectors.openteam.io",
        "may not change credentials Secret \"acme-de-lwa\"",
    );
    assert_denied(
        outsider_secrets
            .delete("acme-de-lwa", &DeleteParams::default())
            .await,
        "secrets.connectors.openteam.io",
        "may not delete credentials Secret",
    );
    let unchanged = admin_secrets.get("acme-de-lwa").await.unwrap();
    assert_eq!(
        unchanged.data, stored.data,
        "the sealed Secret was not changed"
    );

    // Forged runtime Secrets: by name of the connection, by label; a member, a ServiceAccount.
    let forged_by_name: Secret = serde_json::from_value(json!({
        "metadata": {"name": "acme-de-sp-api"}, "stringData": {"access_token": "Atza|forged"}
    }))
    .unwrap();
    let forged_by_label = secret_json(
        "token-copy",
        json!({"connectors.openteam.io/secret-role": "runtime-token"}),
        json!({"access_token": "Atza|forged"}),
    );
    for actor in [&env.member, &env.builder, &env.platform_admin] {
        let secrets: Api<Secret> = Api::namespaced(actor.client().await, &env.ns);
        for forged in [&forged_by_name, &forged_by_label] {
            assert_denied(
                secrets.create(&pp, forged).await,
                "secrets.connectors.openteam.io",
                "runtime Secrets are written only by the operator",
            );
        }
    }
    // The operator's ServiceAccount may write it.
    let runtime: Secret = serde_json::from_value(json!({
        "metadata": {"name": "acme-de-sp-api", "labels": {
            "connectors.openteam.io/secret-role": "runtime-token",
            "connectors.openteam.io/connection": "acme-de"}},
        "type": "connectors.openteam.io/sp-api-token",
        "stringData": {"access_token": "Atza|operator-issued", "token_type": "bearer"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.operator.client().await, &env.ns)
        .create(&pp, &runtime)
        .await
        .unwrap();
    assert_denied(
        member_secrets
            .patch(
                "acme-de-sp-api",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"access_token": "Atza|swapped"}})),
            )
            .await,
        "secrets.connectors.openteam.io",
        "may not change runtime Secret \"acme-de-sp-api\"",
    );

    let audit = served.audit.text();
    for plaintext in [CLIENT_SECRET, REFRESH_TOKEN, "Atza|operator-issued"] {
        assert!(!audit.contains(plaintext), "the audit log leaks a value");
    }
    assert!(audit.contains("\"reason\":\"sealed_intake\""), "{audit}");
    served.webhook.stop().await;
}

#[tokio::test]
async fn only_listed_gateways_mount_runtime_secrets_through_the_api_server() {
    let Some(mut env) =
        Env::new("only_listed_gateways_mount_runtime_secrets_through_the_api_server").await
    else {
        return;
    };
    let served = serve(&mut env).await;
    let pp = PostParams::default();
    Api::<AmazonSellerConnection>::namespaced(env.platform_admin.client().await, &env.ns)
        .create(&pp, &env.connection(Connection::test()))
        .await
        .unwrap();
    Api::<AmazonSellerConnection>::namespaced(env.platform_admin.client().await, &env.ns)
        .create(
            &pp,
            &env.connection(
                Connection::test()
                    .named("acme-fr")
                    .with_gateways(&["gw-fr"]),
            ),
        )
        .await
        .unwrap();
    eventually(
        "both connections in the cluster view",
        Duration::from_secs(5),
    )
    .every(Duration::from_millis(50))
    .until(
        async || served.lookup.connections(&env.ns).len(),
        |n| *n == 2,
    )
    .await;
    assert_eq!(served.lookup.connections(&env.ns).len(), 2);

    let pods: Api<Pod> = Api::namespaced(env.member.client().await, &env.ns);
    let hook = "pods.connectors.openteam.io";

    // A listed gateway mounts the runtime Secret as a volume.
    pods.create(
        &pp,
        &pod_object(
            "gw-1",
            &env.ns,
            Some("gw-main"),
            runtime_volume("acme-de-sp-api"),
        ),
    )
    .await
    .unwrap();

    // Without the gateway label.
    assert_denied(
        pods.create(
            &pp,
            &pod_object("p1", &env.ns, None, runtime_volume("acme-de-sp-api")),
        )
        .await,
        hook,
        "metadata.labels[\"connectors.openteam.io/gateway\"]: missing",
    );
    // A gateway of another connection.
    assert_denied(
        pods.create(
            &pp,
            &pod_object(
                "p2",
                &env.ns,
                Some("gw-fr"),
                runtime_volume("acme-de-sp-api"),
            ),
        )
        .await,
        hook,
        "gateway \"gw-fr\" is not listed in connection \"acme-de\"",
    );
    // An init container's env.valueFrom.
    let mut init_env = runtime_volume("acme-de-sp-api");
    merge(
        &mut init_env,
        json!({"initContainers": [{"name": "init", "image": "busybox", "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "acme-de-sp-api", "key": "access_token"}}}]}]}),
    );
    assert_denied(
        pods.create(&pp, &pod_object("p3", &env.ns, Some("gw-main"), init_env))
            .await,
        hook,
        "spec.initContainers[0].env[0].valueFrom.secretKeyRef: runtime Secret",
    );
    // A projected volume.
    assert_denied(
        pods.create(
            &pp,
            &pod_object(
                "p4",
                &env.ns,
                None,
                json!({"volumes": [{"name": "token", "projected": {"sources": [{"secret": {"name": "acme-de-sp-api"}}]}}]}),
            ),
        )
        .await,
        hook,
        "spec.volumes[0].projected.sources[0].secret",
    );
    // subPath.
    let mut sub_path = runtime_volume("acme-de-sp-api");
    sub_path["containers"][0]["volumeMounts"][0]["subPath"] = "access_token".into();
    assert_denied(
        pods.create(&pp, &pod_object("p5", &env.ns, Some("gw-main"), sub_path))
            .await,
        hook,
        "spec.containers[0].volumeMounts[0].subPath",
    );
    // Sealed credentials.
    assert_denied(
        pods.create(
            &pp,
            &pod_object(
                "p6",
                &env.ns,
                Some("gw-main"),
                runtime_volume("acme-de-lwa"),
            ),
        )
        .await,
        hook,
        "holds sealed LWA credentials",
    );
    // An ephemeral container's envFrom, through the pods/ephemeralcontainers subresource.
    let debug = json!({"spec": {"ephemeralContainers": [{"name": "debug", "image": "busybox",
        "envFrom": [{"secretRef": {"name": "acme-de-sp-api"}}]}]}});
    assert_denied(
        pods.patch_subresource(
            "ephemeralcontainers",
            "gw-1",
            &PatchParams::default(),
            &Patch::Strategic(debug),
        )
        .await,
        hook,
        "spec.ephemeralContainers[0].envFrom[0].secretRef",
    );
    // Relabelling the admitted gateway pod to another gateway.
    assert_denied(
        pods.patch(
            "gw-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"connectors.openteam.io/gateway": "gw-fr"}}}),
            ),
        )
        .await,
        hook,
        "gateway \"gw-fr\"",
    );
    // An ordinary pod is admitted.
    pods.create(&pp, &pod_object("web", &env.ns, None, json!({})))
        .await
        .unwrap();

    let audit = served.audit.text();
    assert!(
        audit.contains("\"category\":\"gateway_activity\""),
        "{audit}"
    );
    assert!(audit.contains("\"gateway\":\"gw-main\""), "{audit}");
    served.webhook.stop().await;
}

/// A Deployment `name` of gateway `gw-main` whose pods mount `secret` as a volume.
fn gateway_deployment(name: &str, secret: &str) -> Deployment {
    let template = pod(name, "", Some("gw-main"), runtime_volume(secret));
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "gateway"}},
            "template": {"metadata": {"labels": template["metadata"]["labels"]},
                         "spec": template["spec"]}
        }
    }))
    .unwrap()
}

/// Whether `object` names a controller owner of `kind` called `name`.
fn controlled_by(object: &kube::core::ObjectMeta, kind: &str, name: &str) -> bool {
    object
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == kind && o.name == name)
}

/// Another Team's member may not use a connection, by pod or by Deployment; a Team member's
/// Deployment becomes a ReplicaSet and pods, made by the cluster's real deployment and
/// replicaset controllers (the test control plane runs kube-controller-manager with just those
/// two, each as its own ServiceAccount in kube-system), which the webhook admits because they
/// make them for their owners; a ServiceAccount of the namespace and an admin may too.
#[tokio::test]
async fn using_a_connection_needs_the_teams_identity_through_the_api_server() {
    let Some(mut env) =
        Env::new("using_a_connection_needs_the_teams_identity_through_the_api_server").await
    else {
        return;
    };
    let served = serve(&mut env).await;
    let pp = PostParams::default();
    Api::<AmazonSellerConnection>::namespaced(env.member.client().await, &env.ns)
        .create(&pp, &env.connection(Connection::test()))
        .await
        .unwrap();
    eventually("the connection in the cluster view", Duration::from_secs(5))
        .every(Duration::from_millis(50))
        .until(
            async || served.lookup.connections(&env.ns).len(),
            |n| *n == 1,
        )
        .await;
    let not_member = format!(
        "\"{}\" is not a member of team {:?} (group \"openteam:team:{}\")",
        env.outsider.name, env.team, env.team
    );

    // Another Team's member: a listed gateway's pod, and the same through a Deployment.
    let outsider_pods: Api<Pod> = Api::namespaced(env.outsider.client().await, &env.ns);
    assert_denied(
        outsider_pods
            .create(
                &pp,
                &pod_object(
                    "gw-x",
                    &env.ns,
                    Some("gw-main"),
                    runtime_volume("acme-de-sp-api"),
                ),
            )
            .await,
        "pods.connectors.openteam.io",
        &not_member,
    );
    let outsider_deployments: Api<Deployment> =
        Api::namespaced(env.outsider.client().await, &env.ns);
    assert_denied(
        outsider_deployments
            .create(&pp, &gateway_deployment("gw-x", "acme-de-sp-api"))
            .await,
        "workloads.connectors.openteam.io",
        &not_member,
    );

    // A Team member's Deployment: the controllers make its ReplicaSet and pods, and the webhook
    // admits them, token mount and all.
    let deployments: Api<Deployment> = Api::namespaced(env.member.client().await, &env.ns);
    deployments
        .create(&pp, &gateway_deployment("gw", "acme-de-sp-api"))
        .await
        .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(env.admin.clone(), &env.ns);
    let admin_pods: Api<Pod> = Api::namespaced(env.admin.clone(), &env.ns);
    let (replicaset, made) = eventually(
        "the Deployment's ReplicaSet and its two pods (made by kube-controller-manager's \
         deployment and replicaset controllers; hack/control-plane/start.sh runs them)",
        Duration::from_secs(60),
    )
    .poll(async || {
        let lp = ListParams::default();
        let replicaset = replicasets
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|rs| controlled_by(&rs.metadata, "Deployment", "gw"));
        let Some(replicaset) = replicaset else {
            return Err("no ReplicaSet yet".to_owned());
        };
        let name = replicaset.metadata.name.clone().unwrap_or_default();
        let pods: Vec<Pod> = admin_pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| controlled_by(&p.metadata, "ReplicaSet", &name))
            .collect();
        if pods.len() == 2 {
            Ok((replicaset, pods))
        } else {
            Err(format!("ReplicaSet {name} has {} pods", pods.len()))
        }
    })
    .await;
    for made in &made {
        let spec = serde_json::to_value(made.spec.as_ref().unwrap()).unwrap();
        assert_eq!(spec["volumes"][0]["secret"]["secretName"], "acme-de-sp-api");
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"],
            "/var/run/sp-api"
        );
        assert_eq!(
            made.metadata.labels.as_ref().unwrap()["connectors.openteam.io/gateway"],
            "gw-main"
        );
    }
    // Scaling leaves the template alone: allowed for anyone RBAC lets (the controllers scale
    // the ReplicaSet); changing the template is a use, refused for another Team's member.
    outsider_deployments
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_denied(
        outsider_deployments
            .patch(
                "gw",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "main", "image": "registry.example/evil:1"}]}}}})),
            )
            .await,
        "workloads.connectors.openteam.io",
        &not_member,
    );

    // A ServiceAccount of the namespace and an admin may.
    for (actor, name) in [(&env.builder, "gw-ci"), (&env.platform_admin, "gw-admin")] {
        Api::<Pod>::namespaced(actor.client().await, &env.ns)
            .create(
                &pp,
                &pod_object(
                    name,
                    &env.ns,
                    Some("gw-main"),
                    runtime_volume("acme-de-sp-api"),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", actor.name));
    }

    // The audit log shows who made what: the controllers, for their owners.
    let audit = served.audit.text();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let controllers = amazon_seller_operator::domain::admission::DEFAULT_WORKLOAD_CONTROLLERS;
    for action in ["replicaset_create", "pod_create"] {
        assert!(
            records.iter().any(|r| r["action"] == action
                && r["outcome"] == "allowed"
                && r["gateway"] == "gw-main"
                && controllers.iter().any(|c| r["actor"] == *c)),
            "no {action} by a controller in {audit}"
        );
    }
    assert!(
        records.iter().any(|r| r["action"] == "deployment_create"
            && r["outcome"] == "denied"
            && r["reason"] == "not_team_member"
            && r["actor"] == env.outsider.name.as_str()),
        "{audit}"
    );
    let replicaset_name = replicaset.metadata.name.unwrap_or_default();
    eprintln!("ReplicaSet {replicaset_name} and its pods were admitted");
    served.webhook.stop().await;
}

/// `kubectl` as `actor`, through the admin kubeconfig's impersonation, in `dir`. It runs off the
/// test's runtime thread, which serves the webhook kubectl's requests reach.
async fn kubectl(actor: &Actor, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new("kubectl");
    command
        .current_dir(dir)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .arg("--as")
        .arg(&actor.name);
    for group in &actor.groups {
        command.arg("--as-group").arg(group);
    }
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("kubectl runs"))
        .await
        .unwrap()
}

/// The bytes etcd holds for `key`, read with `etcdctl` from the test control plane's etcd
/// (its client URL is in `etcd-endpoint` beside the kubeconfig). `None`, said loudly, on a
/// cluster whose etcd the tests cannot reach; a missing `etcdctl` fails under `CI=true`.
fn etcd_value(key: &str) -> Option<Vec<u8>> {
    let path = kubeconfig_path();
    let endpoint = std::path::Path::new(&path)
        .parent()
        .map(|dir| dir.join("etcd-endpoint"))
        .and_then(|file| std::fs::read_to_string(file).ok());
    let Some(endpoint) = endpoint else {
        eprintln!(
            "\n!!!! ETCD CHECK NOT RUN: {path} is not a control plane from \
             hack/control-plane/start.sh (no etcd-endpoint beside it)\n"
        );
        return None;
    };
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint.trim(),
            "get",
            key,
            "--print-value-only",
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => Some(output.stdout),
        Ok(output) => panic!(
            "etcdctl get {key} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => {
            let message = format!(
                "ETCD CHECK NOT RUN: etcdctl is missing ({e}): apt-get install -y etcd-client \
                 (make test installs it)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}");
            }
            eprintln!("\n!!!! {message}\n");
            None
        }
    }
}

/// Whether `haystack` holds `needle` as written or base64-encoded.
fn holds_value(haystack: &[u8], needle: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD.encode(needle);
    [needle.as_bytes(), b64.as_bytes()]
        .iter()
        .any(|n| haystack.windows(n.len()).any(|w| w == *n))
}

/// `kubectl apply` of intake Secrets as a Team member, every apply succeeding, the stored
/// object (annotations and managed fields included) and etcd's bytes for it never holding a
/// plaintext value, and the envelope opening to the refresh token applied last:
///
/// - a file with `type: Opaque`: client-side, again with a rotated token, again unchanged, then
///   `--server-side` (its first server-side apply needs `--force-conflicts`: the client-side
///   applies' field manager owns `type`, and the file asks for a type the object no longer
///   has; after that, server-side applies need nothing), and again rotated;
/// - the same file `--server-side` from the start, twice;
/// - a file without `type` (as examples/intake-secret.yaml): client-side, then server-side with
///   nothing more.
#[tokio::test]
async fn kubectl_apply_of_an_intake_secret_never_stores_plaintext_through_the_api_server() {
    let Some(mut env) =
        Env::new("kubectl_apply_of_an_intake_secret_never_stores_plaintext_through_the_api_server")
            .await
    else {
        return;
    };
    let served = serve(&mut env).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<String> = [REFRESH_TOKEN.to_owned()]
        .into_iter()
        .chain((1..5).map(|i| format!("Atzr|IwEBIRotatedRefreshTokenPlain{i}")))
        .collect();
    // The intake file `name` with refresh token `token`, with or without `type: Opaque`.
    let write = |name: &str, token: &str, opaque: bool| {
        let path = dir.path().join(format!("{name}.yaml"));
        let type_line = if opaque { "type: Opaque\n" } else { "" };
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
                 labels:\n    connectors.openteam.io/secret-role: lwa-credentials\n    \
                 connectors.openteam.io/connection: acme-de\n{type_line}stringData:\n  \
                 clientId: {CLIENT_ID}\n  clientSecret: {CLIENT_SECRET}\n  refreshToken: \
                 \"{token}\"\n",
                ns = env.ns
            ),
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    };
    let file = |name: &str, token: &str| write(name, token, true);
    let apply = async |args: &[&str]| {
        let output = kubectl(&env.member, dir.path(), args).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "kubectl {args:?}: {text}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "kubectl printed a value");
        }
        text
    };
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    let keyring = served.keyring.clone();
    // The stored object and etcd's value hold no plaintext; the envelope opens to `token`.
    let check = async |name: &str, token: &str| -> Vec<u8> {
        let stored = secrets.get(name).await.unwrap();
        assert_eq!(
            stored.type_.as_deref(),
            Some("connectors.openteam.io/lwa-credentials")
        );
        let data = stored.data.as_ref().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["sealed"]);
        let text = serde_json::to_vec(&stored).unwrap();
        let mut stored_values = vec![("the stored object", text)];
        if let Some(bytes) = etcd_value(&format!("/registry/secrets/{}/{name}", env.ns)) {
            assert!(
                bytes.windows(name.len()).any(|w| w == name.as_bytes()),
                "etcd holds no {name}"
            );
            stored_values.push(("etcd's value", bytes));
        }
        for (what, bytes) in &stored_values {
            for plaintext in tokens.iter().map(String::as_str).chain([CLIENT_SECRET]) {
                assert!(
                    !holds_value(bytes, plaintext),
                    "{what} of {name} holds a plaintext value"
                );
            }
        }
        let context = SealContext {
            team_id: &env.team,
            namespace: &env.ns,
            secret_name: name,
        };
        let envelope = &data["sealed"].0;
        let (opened, _) = crypto::open(&keyring.read().unwrap(), &context, envelope).unwrap();
        assert_eq!(opened.client_secret.expose(), CLIENT_SECRET);
        assert_eq!(opened.refresh_token.expose(), token, "{name}");
        envelope.clone()
    };

    // Client-side apply: created sealed, the last-applied configuration kept without values.
    let applied = apply(&["apply", "-f", &file("acme-de-lwa", &tokens[0])]).await;
    assert!(applied.contains("created"), "{applied}");
    let first = check("acme-de-lwa", &tokens[0]).await;
    let stored = secrets.get("acme-de-lwa").await.unwrap();
    let last_applied: Value = serde_json::from_str(
        &stored.metadata.annotations.as_ref().unwrap()
            ["kubectl.kubernetes.io/last-applied-configuration"],
    )
    .unwrap();
    assert_eq!(last_applied["type"], "Opaque");
    assert_eq!(last_applied["metadata"]["name"], "acme-de-lwa");
    assert!(last_applied.get("stringData").is_none(), "{last_applied}");

    // The same file with a rotated refresh token: a three-way-merge update, re-sealed.
    let applied = apply(&["apply", "-f", &file("acme-de-lwa", &tokens[1])]).await;
    assert!(applied.contains("configured"), "{applied}");
    let second = check("acme-de-lwa", &tokens[1]).await;
    assert_ne!(first, second, "the old envelope was replaced");
    // Again, unchanged: still applies (sealed afresh, so kubectl sees a change).
    apply(&["apply", "-f", &file("acme-de-lwa", &tokens[1])]).await;
    check("acme-de-lwa", &tokens[1]).await;

    // Server-side after the client-side applies: once with --force-conflicts, then plainly.
    let forced = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &file("acme-de-lwa", &tokens[2]),
    ];
    apply(&forced).await;
    check("acme-de-lwa", &tokens[2]).await;
    apply(&[
        "apply",
        "--server-side",
        "-f",
        &file("acme-de-lwa", &tokens[3]),
    ])
    .await;
    check("acme-de-lwa", &tokens[3]).await;

    // Server-side from the start, then again rotated.
    apply(&[
        "apply",
        "--server-side",
        "-f",
        &file("acme-fr-lwa", &tokens[0]),
    ])
    .await;
    check("acme-fr-lwa", &tokens[0]).await;
    apply(&[
        "apply",
        "--server-side",
        "-f",
        &file("acme-fr-lwa", &tokens[1]),
    ])
    .await;
    check("acme-fr-lwa", &tokens[1]).await;

    // Without `type`: client-side, then server-side, nothing forced.
    apply(&["apply", "-f", &write("acme-it-lwa", &tokens[0], false)]).await;
    check("acme-it-lwa", &tokens[0]).await;
    apply(&[
        "apply",
        "--server-side",
        "-f",
        &write("acme-it-lwa", &tokens[4], false),
    ])
    .await;
    check("acme-it-lwa", &tokens[4]).await;

    // Another annotation carrying a value is refused, naming it; nothing is stored.
    let copied = dir.path().join("copied.yaml");
    let text = std::fs::read_to_string(file("acme-es-lwa", &tokens[0]))
        .unwrap()
        .replace(
            "  labels:\n",
            &format!(
                "  annotations:\n    team.example/backup: \"{}\"\n  labels:\n",
                tokens[0]
            ),
        );
    std::fs::write(&copied, text).unwrap();
    let output = kubectl(
        &env.member,
        dir.path(),
        &["apply", "-f", &copied.to_string_lossy()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("metadata.annotations[\"team.example/backup\"]: holds a credential value"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(tokens[0].as_str()),
        "the denial echoes the value"
    );
    assert!(secrets.get_opt("acme-es-lwa").await.unwrap().is_none());

    let audit = served.audit.text();
    for plaintext in tokens.iter().map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!audit.contains(plaintext), "the audit log holds a value");
    }
    // The API server's own audit log, written with deploy/audit-policy.yaml, records every
    // apply of the intakes and none of their values.
    let log_path = std::path::Path::new(&kubeconfig_path()).with_file_name("audit.log");
    match std::fs::read(&log_path) {
        Ok(log) => {
            let uri = format!("/namespaces/{}/secrets/acme-de-lwa", env.ns);
            assert!(
                log.windows(uri.len()).any(|w| w == uri.as_bytes()),
                "the API server's audit log records no request for acme-de-lwa"
            );
            for plaintext in tokens.iter().map(String::as_str).chain([CLIENT_SECRET]) {
                assert!(
                    !holds_value(&log, plaintext),
                    "the API server's audit log holds a plaintext value"
                );
            }
        }
        Err(e) => eprintln!(
            "\n!!!! API SERVER AUDIT LOG CHECK NOT RUN: {} ({e}): not a control plane from \
             hack/control-plane/start.sh\n",
            log_path.display()
        ),
    }
    served.webhook.stop().await;
}

#[tokio::test]
async fn run_serves_the_webhook_with_a_self_managed_certificate() {
    let Some(mut env) = Env::new("run_serves_the_webhook_with_a_self_managed_certificate").await
    else {
        return;
    };
    // The API server reaches the webhook at a loopback port chosen here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = env.options(format!("https://127.0.0.1:{port}"), None);
    env.register(&options).await;
    let secret_name = format!("webhook-tls-{}", env.scope);
    let flags = RunFlags::new()
        .without_leader_election()
        .watching(&[&env.ns])
        .operator_namespace(&env.operator_ns)
        .self_managed_webhook(port, &secret_name, &options.validating_name)
        .flag("--admin-group", format!("{}-admins", env.scope));
    let operator = RunningOperator::start(&env.admin, "aso-webhook", flags.args());

    // The operator issues its CA, serves it, and puts it in both configurations (one after
    // the other: wait for both).
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(env.admin.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(env.admin.clone());
    let (hooks, mutating_hooks) = eventually("caBundle patched", Duration::from_secs(30))
        .until(
            async || {
                let config = validating.get(&options.validating_name).await.unwrap();
                let mutating = mutating.get(&options.mutating_name).await.unwrap();
                (config.webhooks.unwrap(), mutating.webhooks.unwrap())
            },
            |(hooks, mutating_hooks)| {
                hooks[0].client_config.ca_bundle.is_some()
                    && mutating_hooks[0].client_config.ca_bundle.is_some()
            },
        )
        .await;
    let bundle = hooks[0].client_config.ca_bundle.clone().unwrap();
    assert!(
        hooks
            .iter()
            .all(|h| h.client_config.ca_bundle.as_ref() == Some(&bundle))
    );
    let bundle = bundle.0;
    assert_eq!(
        mutating_hooks[0]
            .client_config
            .ca_bundle
            .as_ref()
            .unwrap()
            .0,
        bundle
    );
    let ca_pem = String::from_utf8(bundle.clone()).unwrap();
    let client = support::webhook::https_client(&ca_pem);
    let answer = eventually("/readyz to become ready", Duration::from_secs(30))
        .until(
            async || {
                let answer = client
                    .get(format!("https://127.0.0.1:{port}/readyz"))
                    .send()
                    .await;
                answer.map(|r| r.status())
            },
            |answer| answer.as_ref().is_ok_and(|status| *status == 200),
        )
        .await;
    assert!(
        answer.is_ok_and(|status| status == 200),
        "/readyz never became ready"
    );

    // The API server trusts it and the rules apply.
    env.wait_until_active().await;
    let stored = Api::<Secret>::namespaced(env.admin.clone(), &env.operator_ns)
        .get(&secret_name)
        .await
        .unwrap();
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    let names = &stored.metadata.annotations.as_ref().unwrap()[certs::DNS_NAMES_ANNOTATION];
    assert!(names.contains(&format!(
        "amazon-seller-operator-webhook.{}.svc",
        env.operator_ns
    )));
    assert!(names.contains("127.0.0.1"));

    // Renewal: later on the serving certificate is renewed by the same CA; near the CA's end
    // a new CA joins the bundle beside the old one.
    let manager = SelfManaged {
        client: env.admin.clone(),
        namespace: env.operator_ns.clone(),
        secret: secret_name.clone(),
        dns_names: certs::dns_names(
            "amazon-seller-operator-webhook",
            &env.operator_ns,
            &["127.0.0.1".to_owned()],
        ),
        validating_configuration: options.validating_name.clone(),
        mutating_configuration: options.mutating_name.clone(),
    };
    let scratch = CertStore::new();
    let in_70_days = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 70);
    let renewed_bundle = manager.reconcile(&scratch, in_70_days).await.unwrap();
    assert_eq!(renewed_bundle, bundle, "same CA");
    let renewed = Api::<Secret>::namespaced(env.admin.clone(), &env.operator_ns)
        .get(&secret_name)
        .await
        .unwrap();
    assert_ne!(
        renewed.data.as_ref().unwrap()["tls.crt"],
        stored.data.as_ref().unwrap()["tls.crt"],
        "serving certificate renewed"
    );
    let in_9_5_years = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 3470);
    let new_bundle = manager.reconcile(&scratch, in_9_5_years).await.unwrap();
    let text = String::from_utf8(new_bundle.clone()).unwrap();
    assert_eq!(
        text.matches("BEGIN CERTIFICATE").count(),
        2,
        "new and previous CA"
    );
    assert!(
        text.ends_with(&ca_pem),
        "the previous CA stays in the bundle"
    );
    // Still served and trusted: the running operator reloads the renewed Secret.
    eventually(
        "the new bundle in the configuration",
        Duration::from_secs(5),
    )
    .until(
        async || {
            let config = validating.get(&options.validating_name).await.unwrap();
            config.webhooks.unwrap()[0].client_config.ca_bundle.clone()
        },
        |bundle| bundle.as_ref().map(|b| &b.0) == Some(&new_bundle),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.wait_until_active().await;

    let (audit, _) = operator.stop().await;
    let audit = audit.text();
    assert!(audit.contains("\"action\":\"webhook_started\""), "{audit}");
    assert!(audit.contains("\"category\":\"authentication\""), "{audit}");
}
