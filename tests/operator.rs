//! Tier 2: the operator's own `run` code end to end, against the real control plane and the
//! LWA emulator over HTTPS on loopback. Each test runs its own operator instance, scoped to
//! its own namespaces, so tests run in parallel without seeing each other.

mod support;

use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::config::{Cli, Command, RunArgs};
use amazon_seller_operator::crypto::{self, SealContext};
use amazon_seller_operator::keystore::{self, KeyStore};
use amazon_seller_operator::observability::metrics::Metrics;

use support::lwa_emulator::{LwaEmulator, Reply, Seller};
use support::operator::{RunningOperator as Operator, captured_logs};
use support::{cluster, create_namespace, install_crds, unique_name};

fn run_args(flags: &[&str]) -> RunArgs {
    let mut argv = vec![
        "amazon-seller-operator",
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        // Parallel instances on one machine cannot share the webhook port; the webhook has its
        // own tiers (tests/webhook.rs, tests/webhook_cluster.rs).
        "--webhook-enabled=false",
    ];
    argv.extend_from_slice(flags);
    match Cli::parse_from(argv).command {
        Command::Run(args) => *args,
        _ => unreachable!(),
    }
}

fn start(client: &Client, identity: &str, flags: &[&str]) -> Operator {
    Operator::start(client, identity, run_args(flags))
}

/// A Team namespace, an operator namespace with bootstrapped keys, and the emulator.
struct Scenario {
    client: Client,
    team: String,
    namespace: String,
    operator_namespace: String,
    lwa: LwaEmulator,
    flags: Vec<String>,
}

impl Scenario {
    async fn new(test: &str) -> Option<Self> {
        let client = cluster(test).await?;
        install_crds(&client).await;
        let team = unique_name("team");
        let namespace = create_namespace(&client, "team", Some(&team)).await;
        let operator_namespace = create_namespace(&client, "aso", None).await;
        let lwa = LwaEmulator::start().await;
        let flags = vec![
            "--watch-namespace".to_owned(),
            namespace.clone(),
            "--operator-namespace".to_owned(),
            operator_namespace.clone(),
            "--lwa-endpoint".to_owned(),
            lwa.https_url(),
            "--lwa-ca-file".to_owned(),
            lwa.ca_file().display().to_string(),
            "--leader-election=false".to_owned(),
        ];
        Some(Self {
            client,
            team,
            namespace,
            operator_namespace,
            lwa,
            flags,
        })
    }

    fn start(&self, identity: &str) -> Operator {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        start(&self.client, identity, &flags)
    }

    fn connections(&self) -> Api<AmazonSellerConnection> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Seals `seller`'s credentials to the operator key (bootstrapping it if needed) as
    /// Secret `name`.
    async fn seal(&self, seller: &Seller, name: &str) {
        support::seal_credentials(
            &self.client,
            &self.operator_namespace,
            &self.team,
            &self.namespace,
            seller,
            name,
        )
        .await;
    }

    /// Seals `seller`'s credentials for namespace "elsewhere" and stores them here as Secret
    /// `name`: a copy that must never open (the namespace is part of the associated data).
    async fn seal_moved(&self, seller: &Seller, name: &str) {
        let store = KeyStore::new(
            self.client.clone(),
            &self.operator_namespace,
            "amazon-seller-operator-keys",
        );
        let keyring = store.bootstrap(jiff::Timestamp::now()).await.unwrap();
        let moved = crypto::seal(
            &keyring.active().public_key(),
            &SealContext {
                team_id: &self.team,
                namespace: "elsewhere",
                secret_name: name,
            },
            &seller.credentials(),
        )
        .unwrap();
        self.secrets()
            .create(
                &PostParams::default(),
                &keystore::sealed_secret(&self.namespace, name, None, moved),
            )
            .await
            .unwrap();
    }

    async fn create_connection(&self, name: &str, credentials: &str, suspended: bool) {
        let connection: AmazonSellerConnection = serde_json::from_value(json!({
            "apiVersion": "connectors.openteam.io/v1alpha1",
            "kind": "AmazonSellerConnection",
            "metadata": { "name": name, "namespace": self.namespace },
            "spec": {
                "teamId": self.team,
                "sellerId": "A3FHEXAMPLEYWS",
                "marketplace": "DE",
                "credentialsSecretName": credentials,
                "gateways": ["gw-main"],
                "renewBefore": "20m",
                "suspended": suspended,
            }
        }))
        .unwrap();
        self.connections()
            .create(&PostParams::default(), &connection)
            .await
            .unwrap();
    }

    /// Waits (up to 30 s) until `check` holds for the connection.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AmazonSellerConnection) -> bool,
    ) -> AmazonSellerConnection {
        support::wait_for_connection(&self.connections(), name, what, check).await
    }

    async fn wait_for_secret(&self, name: &str, present: bool) -> Option<Secret> {
        support::wait_for_secret(&self.secrets(), name, present).await
    }
}

fn condition<'a>(
    c: &'a AmazonSellerConnection,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
}

fn is(c: &AmazonSellerConnection, type_: &str, status: &str) -> bool {
    condition(c, type_).is_some_and(|x| x.status == status)
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn sealed_credentials_and_a_connection_become_a_ready_runtime_secret() {
    let Some(s) =
        Scenario::new("sealed_credentials_and_a_connection_become_a_ready_runtime_secret").await
    else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;

    let ready = s
        .wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.marketplace_id.as_deref(), Some("A1PA6795UKMFR9"));
    assert_eq!(status.region.as_deref(), Some("EU"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("https://sellingpartnerapi-eu.amazon.com")
    );
    assert_eq!(
        status.runtime_secret_name.as_deref(),
        Some("acme-de-sp-api")
    );
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert!(status.key_id.as_deref().unwrap().starts_with("x25519-"));
    let expires = status.token_expires_at.clone().unwrap().0;
    let next = status.next_refresh_at.clone().unwrap().0;
    assert!(
        next <= expires - jiff::SignedDuration::from_mins(20),
        "next refresh {next} not 20m before {expires}"
    );
    assert!(is(&ready, "CredentialsValid", "True") && is(&ready, "Suspended", "False"));

    let secret = s.secrets().get("acme-de-sp-api").await.unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("connectors.openteam.io/sp-api-token")
    );
    let mut keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "endpoint",
            "expires_at",
            "marketplace_id",
            "region",
            "seller_id",
            "token_type"
        ]
    );
    assert_eq!(data(&secret, "marketplace_id"), "A1PA6795UKMFR9");
    assert_eq!(data(&secret, "seller_id"), "A3FHEXAMPLEYWS");
    assert_eq!(data(&secret, "expires_at"), expires.to_string());
    assert_eq!(s.lwa.issued_tokens(), vec![data(&secret, "access_token")]);
    assert!(data(&secret, "access_token").starts_with("Atza|"));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["connectors.openteam.io/connection"], "acme-de");
    assert_eq!(
        labels["connectors.openteam.io/secret-role"],
        "runtime-token"
    );
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(owner.uid, ready.metadata.uid.clone().unwrap());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(s.lwa.calls_for(&seller.refresh_token), 1);

    // The printer columns show the derived values (server-side table rendering).
    let request = http::Request::get(format!(
        "/apis/connectors.openteam.io/v1alpha1/namespaces/{}/amazonsellerconnections/acme-de",
        s.namespace
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = s.client.request(request).await.unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    let cell = |name: &str| cells[columns.iter().position(|c| *c == name).unwrap()].clone();
    assert_eq!(cell("Marketplace ID"), "A1PA6795UKMFR9");
    assert_eq!(cell("Region"), "EU");
    assert_eq!(cell("Ready"), "True");
    assert_eq!(cell("Team"), json!(s.team));

    let (audit, _) = operator.stop().await;
    let text = audit.text();
    assert!(text.contains("\"action\":\"connect\""), "{text}");
    assert!(text.contains("\"action\":\"token_refresh\""), "{text}");
    for secret_value in [
        &seller.client_secret,
        &seller.refresh_token,
        &data(&secret, "access_token"),
    ] {
        assert!(
            !text.contains(secret_value.as_str()),
            "audit log leaks a secret"
        );
    }
}

#[tokio::test]
async fn a_restart_with_a_valid_token_makes_no_lwa_call_and_no_write() {
    let Some(s) =
        Scenario::new("a_restart_with_a_valid_token_makes_no_lwa_call_and_no_write").await
    else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let first = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;
    s.wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    // Let the reconcile triggered by its own writes settle, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await;
    let before = s.connections().get("acme-de").await.unwrap();
    let secret_before = s.secrets().get("acme-de-sp-api").await.unwrap();
    let calls_before = s.lwa.total_calls();

    let second = s.start("aso-2");
    // Wait until the new instance has reconciled the connection at least once.
    for _ in 0..300 {
        if second
            .metrics
            .encode()
            .unwrap()
            .contains("amazon_seller_reconcile_total{result=\"success\"}")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, metrics) = second.stop().await;
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("amazon_seller_reconcile_total{result=\"success\"}")
    );
    assert_eq!(
        s.lwa.total_calls(),
        calls_before,
        "a restart with a valid token called LWA"
    );
    let after = s.connections().get("acme-de").await.unwrap();
    let secret_after = s.secrets().get("acme-de-sp-api").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the connection was written"
    );
    assert_eq!(
        secret_after.metadata.resource_version, secret_before.metadata.resource_version,
        "the runtime Secret was written"
    );
}

#[tokio::test]
async fn invalid_grant_sets_a_condition_and_is_not_retried() {
    let Some(s) = Scenario::new("invalid_grant_sets_a_condition_and_is_not_retried").await else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.lwa.revoke(&seller.refresh_token);
    s.seal(&seller, "acme-lwa").await;
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;
    let c = s
        .wait_for("acme-de", "CredentialsValid=False", |c| {
            is(c, "CredentialsValid", "False")
        })
        .await;
    let cond = condition(&c, "CredentialsValid").unwrap();
    assert_eq!(cond.reason, "RefreshTokenRevoked");
    assert!(cond.message.contains("re-authorize"), "{}", cond.message);
    assert!(is(&c, "Ready", "False"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.lwa.calls_for(&seller.refresh_token),
        1,
        "invalid_grant must not be retried"
    );
    assert!(
        s.secrets()
            .get_opt("acme-de-sp-api")
            .await
            .unwrap()
            .is_none()
    );
    let (audit, _) = operator.stop().await;
    assert!(audit.text().contains("\"category\":\"api_error\""));
}

#[tokio::test]
async fn suspend_removes_the_runtime_secret_and_unsuspend_restores_it() {
    let Some(s) =
        Scenario::new("suspend_removes_the_runtime_secret_and_unsuspend_restores_it").await
    else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;
    s.wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    s.wait_for_secret("acme-de-sp-api", true).await;
    let calls = s.lwa.total_calls();

    let suspend = |on: bool| json!({ "spec": { "suspended": on } });
    s.connections()
        .patch(
            "acme-de",
            &PatchParams::default(),
            &Patch::Merge(suspend(true)),
        )
        .await
        .unwrap();
    s.wait_for_secret("acme-de-sp-api", false).await;
    let c = s
        .wait_for("acme-de", "Suspended=True", |c| is(c, "Suspended", "True"))
        .await;
    assert!(is(&c, "Ready", "False"));
    assert_eq!(condition(&c, "Ready").unwrap().reason, "Suspended");
    assert_eq!(s.lwa.total_calls(), calls, "no refresh while suspended");

    s.connections()
        .patch(
            "acme-de",
            &PatchParams::default(),
            &Patch::Merge(suspend(false)),
        )
        .await
        .unwrap();
    s.wait_for_secret("acme-de-sp-api", true).await;
    s.wait_for("acme-de", "Ready=True again", |c| {
        is(c, "Ready", "True") && is(c, "Suspended", "False")
    })
    .await;
    let (audit, _) = operator.stop().await;
    let text = audit.text();
    assert!(
        text.contains("\"action\":\"suspend\"") && text.contains("\"action\":\"resume\""),
        "{text}"
    );
}

#[tokio::test]
async fn deleting_a_connection_removes_runtime_access_even_when_lwa_is_down() {
    let Some(s) =
        Scenario::new("deleting_a_connection_removes_runtime_access_even_when_lwa_is_down").await
    else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;
    s.wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    let c = s.connections().get("acme-de").await.unwrap();
    assert!(
        c.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&"connectors.openteam.io/runtime-secret".to_owned())
    );

    s.lwa.always(
        &seller.refresh_token,
        Reply::Status {
            status: 503,
            retry_after: None,
        },
    );
    s.connections()
        .delete("acme-de", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..300 {
        if s.connections().get_opt("acme-de").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        s.connections().get_opt("acme-de").await.unwrap().is_none(),
        "finalizer did not finish"
    );
    // No garbage collector runs in the test plane: the finalizer itself removed the Secret.
    assert!(
        s.secrets()
            .get_opt("acme-de-sp-api")
            .await
            .unwrap()
            .is_none()
    );
    let (audit, _) = operator.stop().await;
    assert!(audit.text().contains("\"action\":\"disconnect\""));
}

#[tokio::test]
async fn missing_credentials_set_a_condition_and_publish_nothing() {
    let Some(s) = Scenario::new("missing_credentials_set_a_condition_and_publish_nothing").await
    else {
        return;
    };
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "does-not-exist", false)
        .await;
    let c = s
        .wait_for("acme-de", "CredentialsValid=False", |c| {
            is(c, "CredentialsValid", "False")
        })
        .await;
    assert_eq!(
        condition(&c, "CredentialsValid").unwrap().reason,
        "CredentialsMissing"
    );
    assert!(
        condition(&c, "Ready")
            .unwrap()
            .message
            .contains("does-not-exist")
    );
    assert!(
        s.secrets()
            .get_opt("acme-de-sp-api")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.lwa.total_calls(), 0);

    // Creating the credentials afterwards connects it.
    let seller = s.lwa.new_seller();
    s.seal(&seller, "does-not-exist").await;
    s.wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    operator.stop().await;
}

#[tokio::test]
async fn an_unchanged_condition_keeps_its_transition_time() {
    let Some(s) = Scenario::new("an_unchanged_condition_keeps_its_transition_time").await else {
        return;
    };
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let operator = s.start("aso-1");
    s.create_connection("acme-de", "acme-lwa", false).await;
    let c = s
        .wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    let since = condition(&c, "Ready").unwrap().last_transition_time.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.connections()
        .patch(
            "acme-de",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "renewBefore": "30m" } })),
        )
        .await
        .unwrap();
    let generation = s
        .connections()
        .get("acme-de")
        .await
        .unwrap()
        .metadata
        .generation;
    let c = s
        .wait_for("acme-de", "status for the new generation", |c| {
            c.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;
    assert!(is(&c, "Ready", "True"));
    assert_eq!(condition(&c, "Ready").unwrap().last_transition_time, since);
    operator.stop().await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_stops() {
    let Some(mut s) =
        Scenario::new("only_the_leader_reconciles_and_a_standby_takes_over_when_it_stops").await
    else {
        return;
    };
    s.flags.retain(|f| f != "--leader-election=false");
    s.flags
        .extend(["--lease-duration-seconds".to_owned(), "4".to_owned()]);
    let seller = s.lwa.new_seller();
    s.seal(&seller, "acme-lwa").await;
    let first = s.start("aso-a");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(s.client.clone(), &s.operator_namespace);
    let holder = || async {
        leases
            .get_opt("amazon-seller-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|spec| spec.holder_identity)
    };
    for _ in 0..100 {
        if holder().await.as_deref() == Some("aso-a") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holder().await.as_deref(), Some("aso-a"));
    let second = s.start("aso-b");
    s.create_connection("acme-de", "acme-lwa", false).await;
    s.wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !second
            .metrics
            .encode()
            .unwrap()
            .contains("amazon_seller_reconcile_total"),
        "the standby reconciled"
    );

    let stopped_at = std::time::Instant::now();
    first.stop().await;
    for _ in 0..200 {
        if holder().await.as_deref() == Some("aso-b") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        holder().await.as_deref(),
        Some("aso-b"),
        "the standby did not take over"
    );
    let takeover = stopped_at.elapsed();
    assert!(
        takeover < Duration::from_secs(20),
        "takeover took {takeover:?}"
    );
    eprintln!("leader handover took {takeover:?} (lease duration 4 s)");

    // The new leader reconciles: a new connection becomes Ready.
    let seller2 = s.lwa.new_seller();
    s.seal(&seller2, "acme2-lwa").await;
    s.create_connection("acme-de2", "acme2-lwa", false).await;
    s.wait_for("acme-de2", "Ready=True under the new leader", |c| {
        is(c, "Ready", "True")
    })
    .await;
    let (audit, _) = second.stop().await;
    assert!(audit.text().contains("\"action\":\"leader_acquired\""));
}

#[tokio::test]
async fn a_security_log_review_is_audited_and_exported() {
    let Some(s) = Scenario::new("a_security_log_review_is_audited_and_exported").await else {
        return;
    };
    let operator = s.start("aso-1");
    let reviews: Api<amazon_seller_operator::api::review::SecurityLogReview> =
        Api::all(s.client.clone());
    let gauge = |metrics: &Metrics| {
        metrics
            .encode()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("amazon_seller_security_log_review_last_timestamp_seconds "))
            .map(str::to_owned)
    };
    // The gauge appears once the operator has listed the existing reviews.
    for _ in 0..100 {
        if gauge(&operator.metrics).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = gauge(&operator.metrics).expect("the review gauge is exported");

    // A review whose period ends later than any other test's makes the gauge move.
    let name = unique_name("review");
    let review = serde_json::from_value(json!({
        "apiVersion": "connectors.openteam.io/v1alpha1",
        "kind": "SecurityLogReview",
        "metadata": { "name": name },
        "spec": {
            "reviewer": "security-oncall",
            "periodStart": "2026-01-01T00:00:00Z",
            "periodEnd": jiff::Timestamp::now().to_string(),
            "summary": "bi-weekly review of the audit log and alerts",
            "findingsCount": 0
        }
    }))
    .unwrap();
    reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    for _ in 0..100 {
        if operator
            .audit
            .text()
            .contains("\"action\":\"security_log_review\"")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = gauge(&operator.metrics).unwrap();
    assert_ne!(after, before, "the latest review time did not move");
    let (audit, _) = operator.stop().await;
    assert!(
        audit.text().contains("\"action\":\"security_log_review\""),
        "{}",
        audit.text()
    );
}

/// The policy's redaction guarantee: with known secret values driven through connect, a
/// credential rejection, unreadable credentials, suspend and delete, no log line, audit
/// record, metric, Event or status holds a secret or anything shaped like LWA material.
#[tokio::test]
async fn no_secret_reaches_logs_audit_metrics_events_or_status() {
    let logs = captured_logs();
    let Some(s) = Scenario::new("no_secret_reaches_logs_audit_metrics_events_or_status").await
    else {
        return;
    };
    let good = s.lwa.new_seller();
    let revoked = s.lwa.new_seller();
    s.lwa.revoke(&revoked.refresh_token);
    s.seal(&good, "good-lwa").await;
    s.seal(&revoked, "revoked-lwa").await;
    // Sealed for another namespace, then copied here: it must not open.
    s.seal_moved(&good, "moved-lwa").await;

    let operator = s.start("aso-redaction");
    s.create_connection("good", "good-lwa", false).await;
    s.create_connection("revoked", "revoked-lwa", false).await;
    s.create_connection("moved", "moved-lwa", false).await;
    s.wait_for("good", "Ready", |c| is(c, "Ready", "True"))
        .await;
    s.wait_for("revoked", "rejected", |c| {
        is(c, "CredentialsValid", "False")
    })
    .await;
    s.wait_for("moved", "unreadable", |c| {
        is(c, "CredentialsValid", "False")
    })
    .await;
    let token = data(
        &s.secrets().get("good-sp-api").await.unwrap(),
        "access_token",
    );
    s.connections()
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspended": true}})),
        )
        .await
        .unwrap();
    s.wait_for_secret("good-sp-api", false).await;
    s.connections()
        .delete("revoked", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = operator.metrics.encode().unwrap();
    let (audit, _) = operator.stop().await;

    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.namespace)
            .list(&Default::default())
            .await
            .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("CredentialsRevoked"))
    );
    let events = serde_json::to_string(&events.items).unwrap();
    let statuses = serde_json::to_string(
        &s.connections()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| &c.status)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        statuses.contains("authentication failed"),
        "the unreadable credentials are reported: {statuses}"
    );
    let key_secret = s
        .client
        .request::<serde_json::Value>(
            http::Request::get(format!(
                "/api/v1/namespaces/{}/secrets/amazon-seller-operator-keys",
                s.operator_namespace
            ))
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    let keyring_json = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            key_secret["data"]["keyring.json"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let keyring_doc: serde_json::Value = serde_json::from_str(&keyring_json).unwrap();
    let private_key = keyring_doc["keys"][0]["privateKey"]
        .as_str()
        .unwrap()
        .to_owned();

    let surfaces = [
        ("logs", logs.text()),
        ("audit", audit.text()),
        ("metrics", metrics),
        ("events", events),
        ("status", statuses),
    ];
    let secrets = [
        good.client_secret.as_str(),
        good.refresh_token.as_str(),
        revoked.client_secret.as_str(),
        revoked.refresh_token.as_str(),
        token.as_str(),
        private_key.as_str(),
    ];
    for (name, text) in &surfaces {
        assert!(
            !text.is_empty() || *name == "events",
            "{name} captured nothing"
        );
        for secret in secrets {
            assert!(!text.contains(secret), "a secret value reached the {name}");
        }
        for pattern in ["Atza|", "Atzr|", "amzn1.oa2-cs"] {
            assert!(!text.contains(pattern), "{pattern} reached the {name}");
        }
    }
    assert!(
        logs.text().contains("\"level\":\"DEBUG\""),
        "the log capture runs at debug level"
    );
}

/// The audit records of `action` in a captured audit log, parsed.
fn audit_records(audit: &str, action: &str) -> Vec<serde_json::Value> {
    audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["action"] == action)
        .collect()
}

#[tokio::test]
async fn key_creation_rotation_and_resealing_are_audited() {
    let Some(s) = Scenario::new("key_creation_rotation_and_resealing_are_audited").await else {
        return;
    };
    let logs = captured_logs();
    // The operator starts in a namespace without keys: it creates them.
    let operator = s.start("aso-keys");
    let store = KeyStore::new(
        s.client.clone(),
        &s.operator_namespace,
        "amazon-seller-operator-keys",
    );
    // Sealing waits for the operator's keyring rather than creating one itself.
    let mut created = false;
    for _ in 0..100 {
        if store.load().await.unwrap().is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the operator created its keyring");
    let seller = s.lwa.new_seller();
    s.seal(&seller, "good-lwa").await;
    // Sealed for another namespace, then copied here: re-sealing it must fail.
    s.seal_moved(&seller, "moved-lwa").await;
    // A connection on the good credentials: its status names the key they are sealed to.
    s.create_connection("acme-de", "good-lwa", false).await;
    let ready = s
        .wait_for("acme-de", "Ready=True", |c| is(c, "Ready", "True"))
        .await;
    let first_key = ready.status.and_then(|st| st.key_id).unwrap();

    let (_, new_id) = store.rotate(jiff::Timestamp::now()).await.unwrap();
    for _ in 0..300 {
        let text = operator.audit.text();
        if audit_records(&text, "reseal_credentials").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sealed = s.secrets().get("good-lwa").await.unwrap();
    let sealed_to = keystore::envelope_of(&sealed).and_then(|e| crypto::sealed_key_id(e).ok());
    assert_eq!(sealed_to.as_deref(), Some(new_id.as_str()));
    // The re-sealed Secret is a new version: the connection opens it again and reports the new
    // key, although its token stays in use (no reconcile keeps an old key id).
    assert_ne!(first_key, new_id);
    s.wait_for("acme-de", "status.keyId = the new key", |c| {
        c.status.as_ref().and_then(|st| st.key_id.as_deref()) == Some(new_id.as_str())
    })
    .await;
    assert_eq!(s.lwa.total_calls(), 1, "the rotation made no LWA call");
    let (audit, _) = operator.stop().await;
    let text = audit.text();

    let created = audit_records(&text, "key_created");
    assert_eq!(created.len(), 1, "{text}");
    assert_eq!(created[0]["category"], "service");
    assert_eq!(created[0]["actor"], "aso-keys");
    let rotated = audit_records(&text, "key_rotated");
    assert_eq!(rotated.len(), 1, "{text}");
    assert_eq!(rotated[0]["category"], "service");
    let resealed = audit_records(&text, "reseal_credentials");
    let outcomes: Vec<(&str, &str, &str)> = resealed
        .iter()
        .map(|r| {
            assert_eq!(r["category"], "connector_setup");
            assert_eq!(r["namespace"], s.namespace.as_str());
            (
                r["outcome"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("success", "key_rotated", "aso-keys"))
            && outcomes.iter().any(|(o, _, _)| *o == "failure"),
        "{outcomes:?}"
    );
    // Neither private key nor any credential reaches the log.
    let keyring: serde_json::Value =
        serde_json::from_str(&store.load().await.unwrap().unwrap().keyring.to_json()).unwrap();
    let private_keys: Vec<&str> = keyring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["privateKey"].as_str().unwrap())
        .collect();
    assert_eq!(private_keys.len(), 2);
    for secret in private_keys
        .into_iter()
        .chain([seller.refresh_token.as_str(), seller.client_secret.as_str()])
    {
        assert!(!text.contains(secret));
    }
    assert!(!logs.text().contains(&seller.refresh_token));
}
