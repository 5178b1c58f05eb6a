//! Least privilege, proven both ways.
//!
//! 1. The chart's rendered ClusterRole and Roles grant exactly what the code declares beside its
//!    API calls (`amazon_seller_operator::operator::permissions::required`), with no wildcards, for a cluster-wide
//!    and for a namespace-scoped install.
//! 2. Against the real API server, the rendered ServiceAccount, roles and bindings are applied
//!    and the operator's own `run` code runs its whole scenario as that ServiceAccount (the admin
//!    kubeconfig impersonating it): start-up, the admission webhook with self-managed
//!    certificates becoming ready (cluster view synced, CA in both configurations), a
//!    connection becoming Ready (delivery `Both`), a gateway pod fetching its token from the
//!    credential endpoint, Events, a pod outside the rules found and evicted, suspend, two key
//!    rotations with online re-sealing, and deletion through the finalizer, with no forbidden
//!    error.
//! 3. The same scenario runs once without each rendered rule, and must then fail at the step
//!    that rule serves: so no rule is superfluous.
//!
//! Needs the chart tools (the test venv) and a cluster; without them it says so loudly and,
//! under `CI=true`, fails.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::config::RunArgs;
use amazon_seller_operator::crypto::{self, SealContext};
use amazon_seller_operator::https::admission::configuration::{self, ClientTarget, Options};
use amazon_seller_operator::keystore::{self, KeyStore};
use amazon_seller_operator::names::{
    CREDENTIAL_ENDPOINT_AUDIENCE, DEFAULT_KEY_SECRET, PUBLIC_KEY_CONFIGMAP,
};
use amazon_seller_operator::operator::permissions::{self, Features};
use amazon_seller_operator::rbac::{Names, Scope};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};

use support::chart::{Rendered, Tools, tools};
use support::eventually::eventually;
use support::lwa_emulator::{LwaEmulator, Seller};
use support::operator::{RunFlags, RunningOperator, Unclean};
use support::scenario::{
    Connection, ELSEWHERE, GatewayPod, Scenario, has_condition, sealed_secret,
};
use support::{bound_token, cluster, install_crds, unique_name};

// ---------------------------------------------------------------------------------------------
// 1. The rendered rules equal the declared ones.

/// One granted verb, where it applies: `None` is cluster-wide, `Some(ns)` a Role in `ns`.
type Atom = (Option<String>, String, String, String, BTreeSet<String>);

/// The names an install gives the objects the operator may touch only by name.
#[derive(Clone, Copy)]
struct InstallNames<'a> {
    service_account: &'a str,
    operator_ns: &'a str,
    watched: &'a [&'a str],
    key_secret: &'a str,
    lease: &'a str,
    /// The self-managed webhook certificate Secret.
    cert_secret: &'a str,
    /// Both webhook configurations' name.
    configurations: &'a str,
}

/// What `permissions::required(features)` means for an install with these names.
fn declared_atoms(features: Features, install: &InstallNames) -> BTreeSet<Atom> {
    let InstallNames {
        service_account: _,
        operator_ns,
        watched,
        key_secret,
        lease,
        cert_secret,
        configurations,
    } = *install;
    let mut atoms = BTreeSet::new();
    for grant in permissions::required_grants(features) {
        let wheres: Vec<Option<String>> = match grant.scope {
            Scope::Cluster => vec![None],
            Scope::OperatorNamespace => vec![Some(operator_ns.to_owned())],
            Scope::Watched if watched.is_empty() => vec![None],
            Scope::Watched => watched.iter().map(|ns| Some((*ns).to_owned())).collect(),
        };
        let names: BTreeSet<String> = match grant.names {
            Names::Any => BTreeSet::new(),
            Names::KeySecret => [key_secret.to_owned()].into(),
            Names::PublicKeyConfigMap => [PUBLIC_KEY_CONFIGMAP.to_owned()].into(),
            Names::Lease => [lease.to_owned()].into(),
            Names::WatchedNamespaces => watched.iter().map(|ns| (*ns).to_owned()).collect(),
            Names::WebhookCertSecret => [cert_secret.to_owned()].into(),
            Names::WebhookConfigurations => [configurations.to_owned()].into(),
        };
        for place in wheres {
            atoms.insert((
                place,
                grant.group.clone(),
                grant.resource.clone(),
                grant.verb.clone(),
                names.clone(),
            ));
        }
    }
    atoms
}

/// What the rendered roles grant the operator's ServiceAccount, checking on the way that every
/// role is bound to it and nothing uses a wildcard.
fn rendered_atoms(objects: &[Rendered], service_account: &str, namespace: &str) -> BTreeSet<Atom> {
    let bound: BTreeSet<(String, String, String)> = objects
        .iter()
        .filter(|o| matches!(o.kind(), "ClusterRoleBinding" | "RoleBinding"))
        .map(|binding| {
            let subjects = binding.object["subjects"].as_array().unwrap();
            assert_eq!(
                subjects,
                &vec![json!({ "kind": "ServiceAccount", "name": service_account, "namespace": namespace })],
                "{} {} binds someone else",
                binding.kind(),
                binding.name()
            );
            let role = &binding.object["roleRef"];
            (
                role["kind"].as_str().unwrap().to_owned(),
                role["name"].as_str().unwrap().to_owned(),
                binding.namespace().to_owned(),
            )
        })
        .collect();
    let mut atoms = BTreeSet::new();
    for role in objects
        .iter()
        .filter(|o| matches!(o.kind(), "ClusterRole" | "Role"))
    {
        let place = (role.kind() == "Role").then(|| role.namespace().to_owned());
        assert!(
            bound.contains(&(
                role.kind().to_owned(),
                role.name().to_owned(),
                role.namespace().to_owned()
            )),
            "{} {}/{} is not bound",
            role.kind(),
            role.namespace(),
            role.name()
        );
        for rule in role.object["rules"].as_array().unwrap() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default()
            };
            let names: BTreeSet<String> = list("resourceNames").into_iter().collect();
            assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        for part in [&group, &resource, &verb] {
                            assert!(
                                !part.contains('*'),
                                "wildcard in {} {}: {rule}",
                                role.kind(),
                                role.name()
                            );
                        }
                        atoms.insert((
                            place.clone(),
                            group.clone(),
                            resource.clone(),
                            verb,
                            names.clone(),
                        ));
                    }
                }
            }
        }
    }
    atoms
}

#[test]
fn the_chart_grants_exactly_what_the_code_declares() {
    let Some(tools) = tools("the_chart_grants_exactly_what_the_code_declares") else {
        return;
    };
    let defaults = InstallNames {
        service_account: "amazon-seller-operator",
        operator_ns: "aso-system",
        watched: &[],
        key_secret: DEFAULT_KEY_SECRET,
        lease: "amazon-seller-operator",
        cert_secret: "amazon-seller-operator-webhook-tls",
        configurations: "aso-system-amazon-seller-operator",
    };
    // The chart's defaults: the webhook with self-managed certificates, no credential endpoint.
    let chart = Features {
        credential_endpoint: false,
        ..Features::ALL
    };
    let files = Features {
        self_managed_certificates: false,
        ..chart
    };
    let endpoint = json!({ "enabled": true });
    let cases: Vec<(Value, Features, InstallNames)> = vec![
        (json!({}), chart, defaults),
        (
            json!({ "watchNamespaces": ["team-acme", "team-globex"] }),
            chart,
            InstallNames {
                watched: &["team-acme", "team-globex"],
                ..defaults
            },
        ),
        // The operator's own namespace among the watched ones, other key and Lease names.
        (
            json!({ "watchNamespaces": ["aso-system", "team-acme"],
                    "keys": { "secretName": "aso-keys" }, "leaderElection": { "leaseName": "aso-leader" } }),
            chart,
            InstallNames {
                watched: &["aso-system", "team-acme"],
                key_secret: "aso-keys",
                lease: "aso-leader",
                ..defaults
            },
        ),
        // Another release name renames the certificate Secret and the configurations.
        (
            json!({ "fullnameOverride": "sellers" }),
            chart,
            InstallNames {
                service_account: "sellers",
                cert_secret: "sellers-webhook-tls",
                configurations: "aso-system-sellers",
                ..defaults
            },
        ),
        // Certificates from cert-manager or a provided Secret: no certificate rights.
        (
            json!({ "webhook": { "certificates": { "mode": "cert-manager" } } }),
            files,
            defaults,
        ),
        (
            json!({ "watchNamespaces": ["team-acme"], "webhook": { "certificates": { "mode": "secret",
                    "secret": { "name": "provided-tls", "caBundle": "Q0E=" } } } }),
            files,
            InstallNames {
                watched: &["team-acme"],
                ..defaults
            },
        ),
        // The credential endpoint: TokenReviews, and the callers' pods.
        (
            json!({ "credentialEndpoint": endpoint }),
            Features::ALL,
            defaults,
        ),
        (
            json!({ "watchNamespaces": ["team-acme"], "credentialEndpoint": endpoint }),
            Features::ALL,
            InstallNames {
                watched: &["team-acme"],
                ..defaults
            },
        ),
        // The controller alone.
        (
            json!({ "webhook": { "enabled": false } }),
            Features::default(),
            defaults,
        ),
    ];
    for (values, features, names) in cases {
        let (objects, _) = tools.render(&values, "amazon-seller-operator", "aso-system");
        let rendered = rendered_atoms(&objects, names.service_account, "aso-system");
        let declared = declared_atoms(features, &names);
        let extra: Vec<_> = rendered.difference(&declared).collect();
        let missing: Vec<_> = declared.difference(&rendered).collect();
        assert!(
            extra.is_empty(),
            "{values}: the chart grants what no code declares: {extra:#?}"
        );
        assert!(
            missing.is_empty(),
            "{values}: the chart lacks declared permissions: {missing:#?}"
        );
        eprintln!("{values}: {} granted verbs, all declared", rendered.len());
    }
    // No RBAC at all when a platform team brings its own.
    let (objects, _) = tools.render(
        &json!({ "rbac": { "create": false } }),
        "amazon-seller-operator",
        "aso-system",
    );
    assert!(!objects.iter().any(|o| o.kind().contains("Role")));
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. The operator's scenario as the chart's ServiceAccount.

/// One isolated install: an operator namespace (release namespace), a Team namespace, the
/// chart's RBAC for them, and an impersonating client.
struct Install {
    admin: Client,
    as_operator: Client,
    team: String,
    team_ns: String,
    operator_ns: String,
    objects: Vec<Rendered>,
    /// The loopback port of the operator's webhook.
    webhook_port: u16,
    /// The chart's name for both webhook configurations.
    configurations: String,
}

/// The chart's default name for the self-managed certificate Secret.
const CERT_SECRET: &str = "amazon-seller-operator-webhook-tls";

/// A client that acts as `system:serviceaccount:<ns>:<name>` through impersonation.
async fn impersonating(namespace: &str, name: &str) -> Client {
    let path = std::env::var("ASO_TEST_KUBECONFIG").expect("cluster() checked it");
    let mut kubeconfig = Kubeconfig::read_from(&path).unwrap();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

impl Install {
    /// A namespace-scoped install (`watchNamespaces: [<team namespace>]`), or with `scoped`
    /// false the default cluster-wide one (the operator itself still watches only the Team
    /// namespace, so it leaves other tests' objects alone).
    async fn new(admin: &Client, tools: &Tools, scoped: bool) -> Self {
        let scenario = Scenario::builder(admin).team("rbac-team").await;
        let Scenario {
            team,
            namespace: team_ns,
            operator_namespace: operator_ns,
            ..
        } = scenario;
        let values = if scoped {
            json!({ "watchNamespaces": [team_ns], "credentialEndpoint": { "enabled": true } })
        } else {
            json!({ "credentialEndpoint": { "enabled": true } })
        };
        // Cluster-scoped names carry the release namespace, unique per install.
        let (objects, _) = tools.render(&values, "amazon-seller-operator", &operator_ns);
        let as_operator = impersonating(&operator_ns, "amazon-seller-operator").await;
        // The chart's webhook configurations, pointed at a loopback port and narrowed to a label
        // no namespace carries: the operator keeps their caBundle, and they never judge other
        // tests' requests.
        let webhook_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let configurations = format!("{operator_ns}-amazon-seller-operator");
        let mut options = Options::new(ClientTarget::Url(format!(
            "https://127.0.0.1:{webhook_port}"
        )));
        options.validating_name = configurations.clone();
        options.mutating_name = configurations.clone();
        options
            .scope_labels
            .insert("rbac-test-scope".into(), operator_ns.clone());
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .create(&PostParams::default(), &configuration::validating(&options))
            .await
            .unwrap();
        Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .create(&PostParams::default(), &configuration::mutating(&options))
            .await
            .unwrap();
        Self {
            admin: admin.clone(),
            as_operator,
            team,
            team_ns,
            operator_ns,
            objects,
            webhook_port,
            configurations,
        }
    }

    /// The rendered rules: the object's index, the rule's index, where it applies with its
    /// resources and verbs, and that plus its resourceNames.
    fn rules(&self) -> Vec<(usize, usize, String, String)> {
        let mut rules = Vec::new();
        for (i, object) in self.objects.iter().enumerate() {
            if !matches!(object.kind(), "ClusterRole" | "Role") {
                continue;
            }
            for (j, rule) in object.object["rules"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                let place = match object.kind() {
                    "ClusterRole" => "cluster".to_owned(),
                    _ if object.namespace() == self.operator_ns => "operator namespace".to_owned(),
                    _ => "watched namespace".to_owned(),
                };
                let key = format!("{place}: {} {}", rule["resources"], rule["verbs"]);
                let names = rule
                    .get("resourceNames")
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default();
                rules.push((i, j, key.clone(), format!("{key}{names}")));
            }
        }
        rules
    }

    /// Applies the rendered ServiceAccount, roles and bindings, without rule `skip`.
    async fn apply_rbac(&self, skip: Option<(usize, usize)>) {
        let post = PostParams::default();
        for (i, rendered) in self.objects.iter().enumerate() {
            let mut object = rendered.object.clone();
            if let Some((si, sj)) = skip
                && si == i
            {
                object["rules"].as_array_mut().unwrap().remove(sj);
            }
            let ns = rendered.namespace();
            match rendered.kind() {
                "ServiceAccount" => {
                    Api::<ServiceAccount>::namespaced(self.admin.clone(), ns)
                        .create(&post, &serde_json::from_value(object).unwrap())
                        .await
                        .unwrap();
                }
                "ClusterRole" => {
                    Api::<ClusterRole>::all(self.admin.clone())
                        .create(&post, &serde_json::from_value(object).unwrap())
                        .await
                        .unwrap();
                }
                "ClusterRoleBinding" => {
                    Api::<ClusterRoleBinding>::all(self.admin.clone())
                        .create(&post, &serde_json::from_value(object).unwrap())
                        .await
                        .unwrap();
                }
                "Role" => {
                    Api::<Role>::namespaced(self.admin.clone(), ns)
                        .create(&post, &serde_json::from_value(object).unwrap())
                        .await
                        .unwrap();
                }
                "RoleBinding" => {
                    Api::<RoleBinding>::namespaced(self.admin.clone(), ns)
                        .create(&post, &serde_json::from_value(object).unwrap())
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
    }

    /// Removes the cluster-scoped objects (namespaces stay: the test plane has no namespace
    /// controller to finish deleting them).
    async fn cleanup(&self) {
        let _ = Api::<ValidatingWebhookConfiguration>::all(self.admin.clone())
            .delete(&self.configurations, &DeleteParams::default())
            .await;
        let _ = Api::<MutatingWebhookConfiguration>::all(self.admin.clone())
            .delete(&self.configurations, &DeleteParams::default())
            .await;
        for rendered in &self.objects {
            let _ = match rendered.kind() {
                "ClusterRole" => Api::<ClusterRole>::all(self.admin.clone())
                    .delete(rendered.name(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(self.admin.clone())
                    .delete(rendered.name(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            };
        }
    }
}

/// Why a scenario run stopped.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    detail: String,
}

/// Polls `check` (every 150 ms) until it holds, the operator stops, or `timeout` passes.
async fn until<F, Fut>(
    step: &'static str,
    timeout: Duration,
    operator: &RunningOperator,
    mut check: F,
) -> Result<(), Failed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    // The last error `check` reported, kept while it then merely does not hold yet. A probe
    // ends the wait with `true` when the check holds and `false` when the operator stopped.
    let last = std::sync::Mutex::new(String::new());
    let waited = eventually(step, timeout)
        .every(Duration::from_millis(150))
        .try_poll(|| {
            let checked = check();
            let last = &last;
            async move {
                match checked.await {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(e) => *last.lock().unwrap() = e,
                }
                if operator.has_stopped() {
                    Ok(false)
                } else {
                    Err(last.lock().unwrap().clone())
                }
            }
        })
        .await;
    match waited {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failed {
            step,
            detail: "the operator stopped".into(),
        }),
        Err(timed_out) => Err(Failed {
            step,
            detail: format!("not within {timeout:?} {}", timed_out.last),
        }),
    }
}

fn run_args(install: &Install, lwa: &LwaEmulator) -> RunArgs {
    RunFlags::new()
        .operator_namespace(&install.operator_ns)
        .watching(&[&install.team_ns])
        .lwa(lwa)
        .flag("--lease-duration-seconds", "5")
        .flag("--reseal-qps", "100")
        // The webhook as the chart runs it by default: self-managed certificates.
        .self_managed_webhook(install.webhook_port, CERT_SECRET, &install.configurations)
        .switch("--credential-endpoint-enabled")
        .args()
}

async fn events(admin: &Client, ns: &str, reason: &str, name: &str) -> Result<Vec<Event>, String> {
    let list = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect())
}

/// The operator's whole scenario as the install's ServiceAccount.
async fn scenario(
    install: &Install,
    lwa: &LwaEmulator,
    seller: &Seller,
    timeout: Duration,
) -> Result<(), Failed> {
    let identity = unique_name("aso-rbac");
    let operator = RunningOperator::start(&install.as_operator, &identity, run_args(install, lwa));
    let result = steps(install, seller, &identity, &operator, timeout).await;
    match (result, operator.try_stop().await) {
        (Err(mut failed), Err(Unclean::Failed(err))) => {
            failed.detail = format!("{}; the operator said: {err}", failed.detail);
            Err(failed)
        }
        (Err(failed), _) => Err(failed),
        (Ok(()), Ok(_)) => Ok(()),
        (Ok(()), Err(unclean)) => Err(Failed {
            step: "delete",
            detail: format!("the operator did not stop cleanly: {unclean:?}"),
        }),
    }
}

async fn steps(
    install: &Install,
    seller: &Seller,
    identity: &str,
    operator: &RunningOperator,
    timeout: Duration,
) -> Result<(), Failed> {
    let admin = &install.admin;
    let connections: Api<AmazonSellerConnection> = Api::namespaced(admin.clone(), &install.team_ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &install.team_ns);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(admin.clone(), &install.operator_ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &install.operator_ns);
    let store = KeyStore::new(admin.clone(), &install.operator_ns, DEFAULT_KEY_SECRET);

    // start: keys bootstrapped and published, the Lease held.
    until("start", timeout, operator, || async {
        let published = configmaps
            .get_opt(PUBLIC_KEY_CONFIGMAP)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        let holder = leases
            .get_opt("amazon-seller-operator")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        Ok(published && holder.as_deref() == Some(identity))
    })
    .await?;

    // webhook: its certificate issued and stored, the CA in both configurations, and /readyz
    // answering over TLS that CA verifies (a synced cluster view).
    until("webhook", timeout, operator, || async {
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get(&install.configurations)
            .await
            .map_err(|e| e.to_string())?;
        let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone())
            .get(&install.configurations)
            .await
            .map_err(|e| e.to_string())?;
        let bundle = |hooks: Option<Vec<_>>| -> Option<Vec<u8>> {
            hooks?.into_iter().next().and_then(
                |h: k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
                    h.client_config.ca_bundle.map(|b| b.0)
                },
            )
        };
        let Some(ca) = bundle(validating.webhooks) else {
            return Err("no caBundle in the ValidatingWebhookConfiguration".into());
        };
        if mutating
            .webhooks
            .and_then(|h| h.into_iter().next())
            .and_then(|h| h.client_config.ca_bundle)
            .is_none()
        {
            return Err("no caBundle in the MutatingWebhookConfiguration".into());
        }
        let client = support::webhook::https_client(&String::from_utf8_lossy(&ca));
        let answer = client
            .get(format!("https://127.0.0.1:{}/readyz", install.webhook_port))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if status == 200 {
            Ok(true)
        } else {
            Err(format!("/readyz {status}: {}", body.trim()))
        }
    })
    .await?;

    // seal (as the Team would, with the published key): good credentials, and a Secret sealed
    // for another namespace that never opens, for the re-seal failure Events.
    let keyring = store
        .load()
        .await
        .ok()
        .flatten()
        .ok_or(Failed {
            step: "seal",
            detail: "no keyring".into(),
        })?
        .keyring;
    let public = keyring.active().public_key();
    let credentials = seller.credentials();
    for (name, sealed_for_ns) in [
        ("acme-lwa", install.team_ns.as_str()),
        ("broken-lwa", ELSEWHERE),
    ] {
        let context = SealContext {
            team_id: &install.team,
            namespace: sealed_for_ns,
            secret_name: name,
        };
        let sealed = sealed_secret(&public, &context, &install.team_ns, &credentials);
        secrets
            .create(&PostParams::default(), &sealed)
            .await
            .map_err(|e| Failed {
                step: "seal",
                detail: e.to_string(),
            })?;
    }
    let connection = Connection::test()
        .with_credentials("acme-lwa")
        .with_renew_before("20m")
        .with_delivery("Both")
        .object(&install.team, &install.team_ns);
    connections
        .create(&PostParams::default(), &connection)
        .await
        .map_err(|e| Failed {
            step: "seal",
            detail: e.to_string(),
        })?;

    // The connection and its runtime Secret, as the ready and suspend steps see them.
    let connection_and_runtime = || async {
        let c = connections
            .get("acme-de")
            .await
            .map_err(|e| e.to_string())?;
        let runtime = secrets
            .get_opt("acme-de-sp-api")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((c, runtime))
    };

    // ready: the runtime Secret exists and the connection says Ready.
    until("ready", timeout, operator, || async {
        let (c, runtime) = connection_and_runtime().await?;
        Ok(has_condition(&c, "Ready", "True") && runtime.is_some())
    })
    .await?;

    // endpoint: a gateway pod fetches the token over the credential endpoint with a
    // ServiceAccount token bound to it (TokenReview, then the pod is read).
    let gateway = gateway_token(admin, &install.team_ns).await;
    until("endpoint", timeout, operator, || async {
        let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get(&install.configurations)
            .await
            .map_err(|e| e.to_string())?;
        let ca = validating
            .webhooks
            .and_then(|h| h.into_iter().next())
            .and_then(|h| h.client_config.ca_bundle)
            .ok_or("no caBundle")?;
        let answer = support::webhook::https_client(&String::from_utf8_lossy(&ca.0))
            .get(format!(
                "https://127.0.0.1:{}/v1/namespaces/{}/connections/acme-de/token",
                install.webhook_port, install.team_ns
            ))
            .bearer_auth(&gateway)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if status == 200 && body["access_token"].as_str().is_some_and(|t| !t.is_empty()) {
            Ok(true)
        } else {
            Err(format!("{status} {}", body["reason"]))
        }
    })
    .await?;

    // event: the Connected Event was published.
    until("event", timeout, operator, || async {
        Ok(!events(admin, &install.team_ns, "Connected", "acme-de")
            .await?
            .is_empty())
    })
    .await?;

    // drift: a pod that mounts the runtime Secret as a gateway the connection does not list
    // (the webhook here judges no namespace, as if it had been down) is found by the pod watch
    // and named in the condition.
    let intruder = GatewayPod::new("intruder")
        .for_gateway("gw-intruder")
        .mounting("acme-de-sp-api")
        .create(admin, &install.team_ns)
        .await;
    until("drift", timeout, operator, || async {
        let (c, _) = connection_and_runtime().await?;
        let named = c
            .status
            .as_ref()
            .is_some_and(|s| s.unauthorized_pods.iter().any(|p| p.name == "intruder"));
        Ok(has_condition(&c, "UnauthorizedMounts", "True") && named)
    })
    .await?;

    // evict: with `onUnauthorizedMount: Evict` the pod is evicted (Eviction API).
    connections
        .patch(
            "acme-de",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "onUnauthorizedMount": "Evict" } })),
        )
        .await
        .map_err(|e| Failed {
            step: "evict",
            detail: e.to_string(),
        })?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &install.team_ns);
    until("evict", timeout, operator, || async {
        let pod = pods.get_opt("intruder").await.map_err(|e| e.to_string())?;
        Ok(pod.is_none_or(|p| p.metadata.uid != intruder.metadata.uid))
    })
    .await?;

    // suspend: containment removes the runtime Secret.
    connections
        .patch(
            "acme-de",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspended": true } })),
        )
        .await
        .map_err(|e| Failed {
            step: "suspend",
            detail: e.to_string(),
        })?;
    until("suspend", timeout, operator, || async {
        let (c, runtime) = connection_and_runtime().await?;
        Ok(has_condition(&c, "Suspended", "True") && runtime.is_none())
    })
    .await?;

    // reseal: a key rotation re-seals the credentials online; the broken one is reported.
    for (step, events_at_least) in [("reseal", 1), ("repeat-event", 2)] {
        let (_, new_id) = store
            .rotate(jiff::Timestamp::now())
            .await
            .map_err(|e| Failed {
                step,
                detail: e.to_string(),
            })?;
        until(step, timeout, operator, || async {
            let sealed = secrets.get("acme-lwa").await.map_err(|e| e.to_string())?;
            let id = keystore::envelope_of(&sealed).and_then(|e| crypto::sealed_key_id(e).ok());
            let reported = events(admin, &install.team_ns, "ResealFailed", "broken-lwa").await?;
            // The second report of the same unchanged Secret is a patch counting the repeat.
            let count = reported
                .iter()
                .map(|e| e.series.as_ref().map_or(1, |s| s.count))
                .max()
                .unwrap_or(0);
            Ok(id.as_deref() == Some(new_id.as_str()) && count >= events_at_least)
        })
        .await?;
    }

    // delete: the finalizer runs and lets the connection go.
    connections
        .delete("acme-de", &DeleteParams::default())
        .await
        .map_err(|e| Failed {
            step: "delete",
            detail: e.to_string(),
        })?;
    until("delete", timeout, operator, || async {
        Ok(connections
            .get_opt("acme-de")
            .await
            .map_err(|e| e.to_string())?
            .is_none())
    })
    .await?;
    Ok(())
}

/// A pod labelled as gateway `gw-main` with its own ServiceAccount, and a token for it with
/// the endpoint's audience, bound to the pod (what its projected volume would hold).
async fn gateway_token(admin: &Client, namespace: &str) -> String {
    let pod = GatewayPod::new("gateway")
        .for_gateway("gw-main")
        .create(admin, namespace)
        .await;
    bound_token(admin, &pod, Some(CREDENTIAL_ENDPOINT_AUDIENCE)).await
}

async fn setup(test: &str) -> Option<(Client, Tools, Arc<LwaEmulator>)> {
    let tools = tools(test)?;
    let admin = cluster(test).await?;
    install_crds(&admin).await;
    Some((admin, tools, Arc::new(LwaEmulator::start().await)))
}

#[tokio::test]
async fn the_operator_runs_its_whole_scenario_as_the_charts_service_account() {
    let Some((admin, tools, lwa)) =
        setup("the_operator_runs_its_whole_scenario_as_the_charts_service_account").await
    else {
        return;
    };
    let run = |scoped: bool| {
        let (admin, tools, lwa) = (admin.clone(), tools.clone(), lwa.clone());
        async move {
            let install = Install::new(&admin, &tools, scoped).await;
            install.apply_rbac(None).await;
            let started = Instant::now();
            let result = scenario(&install, &lwa, &lwa.new_seller(), Duration::from_secs(60)).await;
            install.cleanup().await;
            let mode = if scoped {
                "namespace-scoped"
            } else {
                "cluster-wide"
            };
            if let Err(failed) = result {
                panic!(
                    "{mode}: with every chart rule the scenario failed at {}: {}",
                    failed.step, failed.detail
                );
            }
            eprintln!(
                "{mode} install: scenario as system:serviceaccount:{}:amazon-seller-operator \
                 with the chart's {} rules passed in {:?}",
                install.operator_ns,
                install.rules().len(),
                started.elapsed()
            );
        }
    };
    futures::future::join(run(true), run(false)).await;
}

/// The step at which the scenario must fail without a rule, and why its removal is seen
/// there. Keyed by where the rule applies, its resources and its verbs as rendered.
///
/// `list` and `watch` share a rule everywhere: a watcher whose watch is refused falls back to
/// listing again, so a missing `watch` alone would only slow the operator down, not stop it;
/// the rule as a whole is what the table proves necessary.
fn expected_failure(rule: &str) -> &'static str {
    let table: [(&str, &str); 24] = [
        // Start-up lists SecurityLogReviews (preflight) before anything else.
        (
            r#"cluster: ["securitylogreviews"] ["list","watch"]"#,
            "start",
        ),
        // Re-sealing reads the Team label; without it the rotation re-seals nothing.
        (r#"cluster: ["namespaces"] ["get"]"#, "reseal"),
        // The webhook's cluster view never syncs, so it never becomes ready.
        (r#"cluster: ["namespaces"] ["list","watch"]"#, "webhook"),
        // The self-managed CA never reaches the configurations' caBundle.
        (
            r#"cluster: ["validatingwebhookconfigurations","mutatingwebhookconfigurations"] ["get","update"]"#,
            "webhook",
        ),
        // The self-managed certificate Secret cannot be read, so nothing is served.
        (
            r#"operator namespace: ["secrets"] ["get","update"]"#,
            "webhook",
        ),
        // The credential endpoint cannot authenticate its caller, or read the caller's pod.
        (r#"cluster: ["tokenreviews"] ["create"]"#, "endpoint"),
        (r#"watched namespace: ["pods"] ["get"]"#, "endpoint"),
        // Leader election cannot create, read or renew its Lease, so `run` fails to start it.
        (r#"operator namespace: ["leases"] ["create"]"#, "start"),
        (r#"operator namespace: ["leases"] ["get","patch"]"#, "start"),
        // Key bootstrap cannot create, or read and watch, the keyring Secret.
        (r#"operator namespace: ["secrets"] ["create"]"#, "start"),
        (
            r#"operator namespace: ["secrets"] ["get","list","watch"]"#,
            "start",
        ),
        // Key bootstrap cannot publish the public key.
        (r#"operator namespace: ["configmaps"] ["create"]"#, "start"),
        (r#"operator namespace: ["configmaps"] ["patch"]"#, "start"),
        // Preflight lists connections and runtime Secrets.
        (
            r#"watched namespace: ["amazonsellerconnections"] ["list","watch"]"#,
            "start",
        ),
        (
            r#"watched namespace: ["secrets"] ["get","list","watch"]"#,
            "start",
        ),
        // The finalizer cannot be added, so the connection is never reconciled further.
        (
            r#"watched namespace: ["amazonsellerconnections"] ["patch"]"#,
            "ready",
        ),
        // Ready is never written.
        (
            r#"watched namespace: ["amazonsellerconnections/status"] ["patch"]"#,
            "ready",
        ),
        // The pods are never listed, so no runtime Secret is created: a pod outside the rules
        // might already name it.
        (r#"watched namespace: ["pods"] ["list","watch"]"#, "ready"),
        // The pod outside the rules is reported but never evicted.
        (
            r#"watched namespace: ["pods/eviction"] ["create"]"#,
            "evict",
        ),
        // The runtime Secret's server-side apply needs both create and patch to create it.
        (r#"watched namespace: ["secrets"] ["create"]"#, "ready"),
        (r#"watched namespace: ["secrets"] ["patch"]"#, "ready"),
        // Suspend cannot delete the runtime Secret.
        (r#"watched namespace: ["secrets"] ["delete"]"#, "suspend"),
        // The Connected Event is never created.
        (r#"watched namespace: ["events"] ["create"]"#, "event"),
        // The second ResealFailed report of the same Secret is a patch that never lands.
        (r#"watched namespace: ["events"] ["patch"]"#, "repeat-event"),
    ];
    let (_, step) = table
        .iter()
        .find(|(k, _)| *k == rule)
        .unwrap_or_else(|| panic!("no expectation for rule {rule}: add it to the table"));
    step
}

#[tokio::test]
async fn removing_any_one_chart_rule_makes_the_scenario_fail_where_that_rule_is_needed() {
    let Some((admin, tools, lwa)) =
        setup("removing_any_one_chart_rule_makes_the_scenario_fail_where_that_rule_is_needed")
            .await
    else {
        return;
    };
    let template = Install::new(&admin, &tools, true).await;
    let rules = template.rules();
    template.cleanup().await;
    assert_eq!(rules.len(), 24, "{rules:#?}");
    // Runs go in parallel, nine at a time. A whole scenario takes about two seconds; a run
    // without a needed rule waits 12 s at the step that needs it.
    let limit = Arc::new(Semaphore::new(9));
    let started = Instant::now();
    let mut runs = Vec::new();
    for (i, j, key, label) in rules {
        let (admin, tools, lwa, limit) = (
            admin.clone(),
            Tools::clone(&tools),
            lwa.clone(),
            limit.clone(),
        );
        runs.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let install = Install::new(&admin, &tools, true).await;
            install.apply_rbac(Some((i, j))).await;
            let result = scenario(&install, &lwa, &lwa.new_seller(), Duration::from_secs(12)).await;
            install.cleanup().await;
            (key, label, result)
        }));
    }
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for run in runs {
        let (key, label, result) = run.await.unwrap();
        let expected = expected_failure(&key);
        match &result {
            Err(failed) if failed.step == expected => {
                report.push(format!(
                    "without {label}: fails at {expected} ({})",
                    failed.detail
                ));
            }
            _ => wrong.push(format!(
                "without {label}: expected a failure at {expected}, got {result:?}"
            )),
        }
    }
    for line in &report {
        eprintln!("{line}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    eprintln!(
        "{} rules, each needed; {:?}",
        report.len(),
        started.elapsed()
    );
}
