//! Tier 2: the operator's own `run` code end to end, against the real control plane and the
//! LWA emulator over HTTPS on loopback. Each test runs its own operator instance, scoped to
//! its own namespaces, so tests run in parallel without seeing each other.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::crypto;
use amazon_seller_operator::keystore;
use amazon_seller_operator::observability::metrics::Metrics;

use support::eventually::eventually;
use support::lwa_emulator::{LwaEmulator, Reply, Seller};
use support::operator::{RunFlags, RunningOperator as Operator, captured_logs};
use support::scenario::{Connection, Scenario, condition, has_condition};
use support::{cluster, unique_name};

/// `run` as these tests start it: the scenario's namespaces and the emulator, without the
/// webhook (parallel instances on one machine cannot share its port; the webhook has its own
/// tiers, tests/webhook.rs and tests/webhook_cluster.rs).
fn run_flags(s: &Scenario, lwa: &LwaEmulator) -> RunFlags {
    s.run_flags().lwa(lwa).without_webhook()
}

/// Starts `run` as `identity`, reconciling at once (no leader election).
fn start(s: &Scenario, lwa: &LwaEmulator, identity: &str) -> Operator {
    let flags = run_flags(s, lwa).without_leader_election();
    Operator::start(&s.client, identity, flags.args())
}

/// Where most tests start: a fresh seller's credentials sealed as `acme-lwa`, the operator
/// running as `aso-1`, and connection `acme-de` on those credentials (refreshing 20 minutes
/// before the token expires), Ready.
struct ReadyConnection {
    s: Scenario,
    lwa: LwaEmulator,
    seller: Seller,
    operator: Operator,
    /// The connection as it first became Ready.
    ready: AmazonSellerConnection,
}

/// A [`ReadyConnection`], or `None` when the cluster tier does not run.
async fn a_ready_connection(test: &str) -> Option<ReadyConnection> {
    let client = cluster(test).await?;
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .await;
    let operator = start(&s, &lwa, "aso-1");
    s.connect(
        Connection::test()
            .with_credentials("acme-lwa")
            .with_renew_before("20m"),
    )
    .await;
    let ready = s.wait_ready("acme-de").await;
    Some(ReadyConnection {
        s,
        lwa,
        seller,
        operator,
        ready,
    })
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn sealed_credentials_and_a_connection_become_a_ready_runtime_secret() {
    let Some(ReadyConnection {
        s,
        lwa,
        seller,
        operator,
        ready,
    }) = a_ready_connection("sealed_credentials_and_a_connection_become_a_ready_runtime_secret")
        .await
    else {
        return;
    };
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
    assert!(
        has_condition(&ready, "CredentialsValid", "True")
            && has_condition(&ready, "Suspended", "False")
    );

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
    assert_eq!(lwa.issued_tokens(), vec![data(&secret, "access_token")]);
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
    assert_eq!(lwa.calls_for(&seller.refresh_token), 1);

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
    let Some(ReadyConnection {
        s,
        lwa,
        operator: first,
        ..
    }) = a_ready_connection("a_restart_with_a_valid_token_makes_no_lwa_call_and_no_write").await
    else {
        return;
    };
    // Let the reconcile triggered by its own writes settle, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await;
    let before = s.connections().get("acme-de").await.unwrap();
    let secret_before = s.secrets().get("acme-de-sp-api").await.unwrap();
    let calls_before = lwa.total_calls();

    let second = start(&s, &lwa, "aso-2");
    eventually(
        "the new instance to reconcile the connection once",
        Duration::from_secs(30),
    )
    .until(
        async || second.metrics.encode().unwrap(),
        |metrics| metrics.contains("amazon_seller_reconcile_total{result=\"success\"}"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, metrics) = second.stop().await;
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("amazon_seller_reconcile_total{result=\"success\"}")
    );
    assert_eq!(
        lwa.total_calls(),
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
    let Some(client) = cluster("invalid_grant_sets_a_condition_and_is_not_retried").await else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    lwa.revoke(&seller.refresh_token);
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .await;
    let operator = start(&s, &lwa, "aso-1");
    s.connect(Connection::test().with_credentials("acme-lwa"))
        .await;
    let c = s
        .wait_for("acme-de", "CredentialsValid=False", |c| {
            has_condition(c, "CredentialsValid", "False")
        })
        .await;
    let cond = condition(&c, "CredentialsValid").unwrap();
    assert_eq!(cond.reason, "RefreshTokenRevoked");
    assert!(cond.message.contains("re-authorize"), "{}", cond.message);
    assert!(has_condition(&c, "Ready", "False"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        lwa.calls_for(&seller.refresh_token),
        1,
        "invalid_grant must not be retried"
    );
    assert!(s.secret("acme-de-sp-api").await.is_none());
    let (audit, _) = operator.stop().await;
    assert!(audit.text().contains("\"category\":\"api_error\""));
}

#[tokio::test]
async fn suspend_removes_the_runtime_secret_and_unsuspend_restores_it() {
    let Some(ReadyConnection {
        s, lwa, operator, ..
    }) = a_ready_connection("suspend_removes_the_runtime_secret_and_unsuspend_restores_it").await
    else {
        return;
    };
    s.wait_for_secret("acme-de-sp-api", true).await;
    let calls = lwa.total_calls();

    s.set_suspended("acme-de", true).await;
    s.wait_for_secret("acme-de-sp-api", false).await;
    let c = s
        .wait_for("acme-de", "Suspended=True", |c| {
            has_condition(c, "Suspended", "True")
        })
        .await;
    assert!(has_condition(&c, "Ready", "False"));
    assert_eq!(condition(&c, "Ready").unwrap().reason, "Suspended");
    assert_eq!(lwa.total_calls(), calls, "no refresh while suspended");

    s.set_suspended("acme-de", false).await;
    s.wait_for_secret("acme-de-sp-api", true).await;
    s.wait_for("acme-de", "Ready=True again", |c| {
        has_condition(c, "Ready", "True") && has_condition(c, "Suspended", "False")
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
    let Some(ReadyConnection {
        s,
        lwa,
        seller,
        operator,
        ..
    }) = a_ready_connection("deleting_a_connection_removes_runtime_access_even_when_lwa_is_down")
        .await
    else {
        return;
    };
    let c = s.connections().get("acme-de").await.unwrap();
    assert!(
        c.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&"connectors.openteam.io/runtime-secret".to_owned())
    );

    lwa.always(
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
    eventually("the finalizer to let acme-de go", Duration::from_secs(30))
        .until(
            async || {
                let c = s.connections().get_opt("acme-de").await.unwrap();
                c.map(|c| c.metadata.finalizers)
            },
            Option::is_none,
        )
        .await;
    assert!(
        s.connections().get_opt("acme-de").await.unwrap().is_none(),
        "finalizer did not finish"
    );
    // No garbage collector runs in the test plane: the finalizer itself removed the Secret.
    assert!(s.secret("acme-de-sp-api").await.is_none());
    let (audit, _) = operator.stop().await;
    assert!(audit.text().contains("\"action\":\"disconnect\""));
}

#[tokio::test]
async fn missing_credentials_set_a_condition_publish_nothing_and_are_reported() {
    let Some(client) =
        cluster("missing_credentials_set_a_condition_publish_nothing_and_are_reported").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let s = Scenario::builder(&client).await;
    let operator = start(&s, &lwa, "aso-1");
    s.connect(Connection::test().with_credentials("does-not-exist"))
        .await;
    let c = s
        .wait_for("acme-de", "CredentialsValid=False", |c| {
            has_condition(c, "CredentialsValid", "False")
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
    assert!(s.secret("acme-de-sp-api").await.is_none());
    assert_eq!(lwa.total_calls(), 0);
    // Someone must act: a Warning Event says so, the reconcile counts as failed with a bounded
    // result (what AmazonSellerReconcileErrors counts), and the audit log has it.
    eventually(
        "a CredentialsMissing Warning Event",
        Duration::from_secs(20),
    )
    .until(
        async || {
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.namespace)
                .list(&Default::default())
                .await
                .unwrap()
                .items
        },
        |events| {
            events.iter().any(|e| {
                e.reason.as_deref() == Some("CredentialsMissing")
                    && e.type_.as_deref() == Some("Warning")
            })
        },
    )
    .await;
    let metrics = operator.metrics.encode().unwrap();
    assert!(
        metrics.contains("amazon_seller_reconcile_total{result=\"credentials_missing\"}"),
        "{metrics}"
    );
    let audit = operator.audit.text();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"category\":\"connector_setup\"")
                && l.contains("\"action\":\"open_credentials\"")
                && l.contains("\"outcome\":\"failure\"")
                && l.contains("\"reason\":\"credentials_missing\"")),
        "{audit}"
    );

    // Creating the credentials afterwards connects it.
    let seller = lwa.new_seller();
    s.seal("does-not-exist", &seller).await;
    s.wait_ready("acme-de").await;
    operator.stop().await;
}

#[tokio::test]
async fn an_unchanged_condition_keeps_its_transition_time() {
    let Some(ReadyConnection {
        s,
        operator,
        ready: c,
        ..
    }) = a_ready_connection("an_unchanged_condition_keeps_its_transition_time").await
    else {
        return;
    };
    let since = condition(&c, "Ready").unwrap().last_transition_time.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.change_spec("acme-de", json!({ "renewBefore": "30m" }))
        .await;
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
    assert!(has_condition(&c, "Ready", "True"));
    assert_eq!(condition(&c, "Ready").unwrap().last_transition_time, since);
    operator.stop().await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_stops() {
    let Some(client) =
        cluster("only_the_leader_reconciles_and_a_standby_takes_over_when_it_stops").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .await;
    // Leader election on, with a short Lease.
    let flags = run_flags(&s, &lwa).flag("--lease-duration-seconds", "4");
    let first = Operator::start(&s.client, "aso-a", flags.args());
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), &s.operator_namespace);
    let holder = async || {
        leases
            .get_opt("amazon-seller-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|spec| spec.holder_identity)
    };
    eventually("aso-a to hold the Lease", Duration::from_secs(10))
        .until(holder, |h| h.as_deref() == Some("aso-a"))
        .await;
    assert_eq!(holder().await.as_deref(), Some("aso-a"));
    let second = Operator::start(&s.client, "aso-b", flags.args());
    s.connect(Connection::test().with_credentials("acme-lwa"))
        .await;
    s.wait_ready("acme-de").await;
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
    eventually(
        "the standby aso-b to take the Lease",
        Duration::from_secs(20),
    )
    .until(holder, |h| h.as_deref() == Some("aso-b"))
    .await;
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
    let seller2 = lwa.new_seller();
    s.seal("acme2-lwa", &seller2).await;
    s.connect(
        Connection::test()
            .named("acme-de2")
            .with_credentials("acme2-lwa"),
    )
    .await;
    s.wait_for("acme-de2", "Ready=True under the new leader", |c| {
        has_condition(c, "Ready", "True")
    })
    .await;
    let (audit, _) = second.stop().await;
    assert!(audit.text().contains("\"action\":\"leader_acquired\""));
}

#[tokio::test]
async fn a_security_log_review_is_audited_and_exported() {
    let Some(client) = cluster("a_security_log_review_is_audited_and_exported").await else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let s = Scenario::builder(&client).await;
    let operator = start(&s, &lwa, "aso-1");
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
    eventually("the review gauge", Duration::from_secs(10))
        .until(async || gauge(&operator.metrics), Option::is_some)
        .await;
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
    eventually("the review's audit record", Duration::from_secs(10))
        .until(
            async || operator.audit.text(),
            |audit| audit.contains("\"action\":\"security_log_review\""),
        )
        .await;
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
    let Some(client) = cluster("no_secret_reaches_logs_audit_metrics_events_or_status").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let good = lwa.new_seller();
    let revoked = lwa.new_seller();
    lwa.revoke(&revoked.refresh_token);
    let s = Scenario::builder(&client)
        .credentials("good-lwa", &good)
        .credentials("revoked-lwa", &revoked)
        // Sealed for another namespace, then copied here: it must not open.
        .credentials_from_elsewhere("moved-lwa", &good)
        .await;

    let operator = start(&s, &lwa, "aso-redaction");
    s.connect(
        Connection::test()
            .named("good")
            .with_credentials("good-lwa"),
    )
    .await;
    s.connect(
        Connection::test()
            .named("revoked")
            .with_credentials("revoked-lwa"),
    )
    .await;
    s.connect(
        Connection::test()
            .named("moved")
            .with_credentials("moved-lwa"),
    )
    .await;
    s.wait_for("good", "Ready", |c| has_condition(c, "Ready", "True"))
        .await;
    s.wait_for("revoked", "rejected", |c| {
        has_condition(c, "CredentialsValid", "False")
    })
    .await;
    s.wait_for("moved", "unreadable", |c| {
        has_condition(c, "CredentialsValid", "False")
    })
    .await;
    let token = data(
        &s.secrets().get("good-sp-api").await.unwrap(),
        "access_token",
    );
    s.set_suspended("good", true).await;
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
    let Some(client) = cluster("key_creation_rotation_and_resealing_are_audited").await else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let s = Scenario::builder(&client).await;
    let logs = captured_logs();
    // The operator starts in a namespace without keys: it creates them.
    let operator = start(&s, &lwa, "aso-keys");
    let store = s.key_store();
    // Sealing waits for the operator's keyring rather than creating one itself.
    let created = eventually(
        "the operator to create its keyring",
        Duration::from_secs(10),
    )
    .until(
        async || store.load().await.unwrap().is_some(),
        |created| *created,
    )
    .await;
    assert!(created, "the operator created its keyring");
    let seller = lwa.new_seller();
    s.seal("good-lwa", &seller).await;
    // Sealed for another namespace, then copied here: re-sealing it must fail.
    s.seal_from_elsewhere("moved-lwa", &seller).await;
    // A connection on the good credentials: its status names the key they are sealed to.
    s.connect(Connection::test().with_credentials("good-lwa"))
        .await;
    let ready = s.wait_ready("acme-de").await;
    let first_key = ready.status.and_then(|st| st.key_id).unwrap();

    let (_, new_id) = store.rotate(jiff::Timestamp::now()).await.unwrap();
    eventually("both credentials' re-seal records", Duration::from_secs(30))
        .until(
            async || audit_records(&operator.audit.text(), "reseal_credentials"),
            |records| records.len() >= 2,
        )
        .await;
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
    assert_eq!(lwa.total_calls(), 1, "the rotation made no LWA call");
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

/// `amazon_seller_sealed_secrets{key_id}` for `key`, as the operator exports it now.
fn sealed_to(metrics: &Metrics, key: &str) -> Option<i64> {
    let series = format!("amazon_seller_sealed_secrets{{key_id=\"{key}\"}} ");
    metrics
        .encode()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()).and_then(|v| v.parse().ok()))
}

/// Waits (up to 15 s) until the gauge reads `expected` for each key.
async fn gauge_reads(operator: &Operator, expected: &[(&str, i64)], after: &str) {
    eventually(
        format!("amazon_seller_sealed_secrets {expected:?} after {after}"),
        Duration::from_secs(15),
    )
    .until(
        async || {
            expected
                .iter()
                .map(|(key, _)| sealed_to(&operator.metrics, key))
                .collect::<Vec<_>>()
        },
        |seen| {
            seen.iter()
                .zip(expected)
                .all(|(seen, (_, want))| *seen == Some(*want))
        },
    )
    .await;
}

#[tokio::test]
async fn the_sealed_secrets_gauge_moves_when_a_secret_is_added_resealed_sealed_or_deleted() {
    let Some(client) =
        cluster("the_sealed_secrets_gauge_moves_when_a_secret_is_added_resealed_sealed_or_deleted")
            .await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client).await;
    let store = s.key_store();
    let first = store.bootstrap(jiff::Timestamp::now()).await.unwrap();
    let k1 = first.active().id().to_owned();
    let operator = start(&s, &lwa, "aso-sealed-count");
    gauge_reads(&operator, &[(&k1, 0)], "the start").await;

    // Added: a credentials Secret sealed to the active key.
    s.seal("acme-lwa", &seller).await;
    gauge_reads(&operator, &[(&k1, 1)], "adding a Secret").await;

    // Re-sealed: a rotation, and the operator seals the Secret again to the new key.
    let (_, k2) = store.rotate(jiff::Timestamp::now()).await.unwrap();
    gauge_reads(&operator, &[(&k1, 0), (&k2, 1)], "the re-seal").await;

    // Sealed: the Team applies credentials sealed to the old public key (a stale manifest).
    let context = amazon_seller_operator::crypto::SealContext {
        team_id: &s.team,
        namespace: &s.namespace,
        secret_name: "acme-lwa",
    };
    let stale = support::scenario::sealed_secret(
        &first.active().public_key(),
        &context,
        &s.namespace,
        &seller.credentials(),
    );
    s.secrets()
        .patch(
            "acme-lwa",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "data": stale.data })),
        )
        .await
        .unwrap();
    gauge_reads(&operator, &[(&k1, 1), (&k2, 0)], "sealing to the old key").await;

    // Deleted.
    s.secrets()
        .delete("acme-lwa", &DeleteParams::default())
        .await
        .unwrap();
    gauge_reads(&operator, &[(&k1, 0), (&k2, 0)], "deleting the Secret").await;
    operator.stop().await;
}
