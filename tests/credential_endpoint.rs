//! The runtime credential endpoint end to end: the operator's own `run` with
//! `--credential-endpoint-enabled`, serving real HTTPS on loopback with a test CA, against the
//! real control plane (ServiceAccounts, pods, TokenRequest bound to the pod, TokenReview) and
//! the LWA emulator.
//!
//! Pods are stored objects only (no kubelet); each caller's token is requested for its pod with
//! `boundObjectRef`, exactly what a projected `serviceAccountToken` volume would hold.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use amazon_seller_operator::crypto::{self, StoredToken, TokenContext};
use amazon_seller_operator::observability::metrics::Metrics;

use support::eventually::eventually;
use support::lwa_emulator::LwaEmulator;
use support::operator::{RunningOperator, captured_logs};
use support::scenario::{Connection, GatewayPod, Scenario, has_condition};
use support::webhook::{TestPki, https_client};
use support::{Captured, bound_token, cluster};

const AUDIENCE: &str = "connectors.openteam.io";

/// One running operator with the endpoint on its own loopback port, serving a certificate of
/// its own test CA, and a client that trusts that CA.
struct Operator {
    running: RunningOperator,
    base: String,
    https: reqwest::Client,
    _pki: TestPki,
}

impl Operator {
    /// Starts `run` for the scenario with the endpoint enabled (plus `extra` flags) and waits
    /// until its server is ready.
    async fn start(
        s: &Scenario,
        lwa: &LwaEmulator,
        identity: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pki = TestPki::new();
        let mut flags = s
            .run_flags()
            .lwa(lwa)
            .without_leader_election()
            .flag("--webhook-addr", format!("127.0.0.1:{port}"))
            .flag("--webhook-cert-mode", "files")
            .flag("--webhook-cert-file", pki.cert_file.display().to_string())
            .flag("--webhook-key-file", pki.key_file.display().to_string())
            .switch("--credential-endpoint-enabled");
        for (name, value) in extra {
            flags = flags.flag(name, value);
        }
        let running = RunningOperator::start(&s.client, identity, flags.args());
        let base = format!("https://127.0.0.1:{port}");
        let https = https_client(&pki.ca_pem);
        eventually(
            "the operator's HTTPS server to be ready",
            Duration::from_secs(30),
        )
        .poll(
            async || match https.get(format!("{base}/readyz")).send().await {
                Ok(answer) if answer.status() == 200 => Ok(()),
                other => Err(other.map(|answer| answer.status())),
            },
        )
        .await;
        Operator {
            running,
            base,
            https,
            _pki: pki,
        }
    }

    async fn stop(self) -> (Captured, Metrics) {
        self.running.stop().await
    }
}

/// A token with no pod binding (what a legacy or TokenRequest-without-pod token is).
async fn unbound_token(client: &Client, namespace: &str, account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.to_owned()],
            bound_object_ref: None,
            expiration_seconds: Some(600),
        },
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// One answer of the endpoint.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

async fn call(operator: &Operator, namespace: &str, name: &str, token: Option<&str>) -> Answer {
    let mut request = operator.https.get(format!(
        "{}/v1/namespaces/{namespace}/connections/{name}/token",
        operator.base
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "every answer is no-store"
    );
    Answer {
        status,
        headers,
        body,
    }
}

/// The endpoint as one test calls it, noting every answer's status: the audit log and the
/// metrics must count exactly these calls.
struct Calls<'a> {
    operator: &'a Operator,
    statuses: Mutex<Vec<u16>>,
}

impl<'a> Calls<'a> {
    fn to(operator: &'a Operator) -> Self {
        Self {
            operator,
            statuses: Mutex::default(),
        }
    }

    async fn call(&self, namespace: &str, name: &str, token: Option<&str>) -> Answer {
        let answer = call(self.operator, namespace, name, token).await;
        self.statuses.lock().unwrap().push(answer.status);
        answer
    }

    /// Calls until the answer's reason is `reason` (the endpoint's view follows the API by
    /// watch).
    async fn until(&self, namespace: &str, name: &str, token: &str, reason: &str) -> Answer {
        eventually(
            format!("an answer with reason {reason} for {namespace}/{name}"),
            Duration::from_secs(10),
        )
        .poll(async || {
            let answer = self.call(namespace, name, Some(token)).await;
            if answer.reason() == reason {
                Ok(answer)
            } else {
                Err((answer.status, answer.body))
            }
        })
        .await
    }

    /// The status of every answer.
    fn into_statuses(self) -> Vec<u16> {
        self.statuses.into_inner().unwrap()
    }
}

fn audit_records(audit: &Captured) -> Vec<Value> {
    audit
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == "token_request")
        .collect()
}

fn counter(metrics: &Metrics, team: &str, gateway: &str, outcome: &str) -> u64 {
    let text = metrics.encode().unwrap();
    let series = format!(
        "amazon_seller_credential_access_total{{gateway=\"{gateway}\",outcome=\"{outcome}\",team=\"{team}\"}}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_endpoint_serves_listed_gateways_and_refuses_everyone_else() {
    let logs = captured_logs();
    let Some(client) =
        cluster("the_endpoint_serves_listed_gateways_and_refuses_everyone_else").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let revoked = lwa.new_seller();
    lwa.revoke(&revoked.refresh_token);
    let connection = |name: &str, credentials: &str, delivery: &str| {
        Connection::test()
            .named(name)
            .with_credentials(credentials)
            .with_delivery(delivery)
    };
    let s = Scenario::builder(&client)
        .outsider("other")
        .credentials("acme-lwa", &seller)
        .credentials("revoked-lwa", &revoked)
        .connection(connection("acme-de", "acme-lwa", "Endpoint"))
        .connection(connection("acme-secret", "acme-lwa", "Secret"))
        .connection(connection("acme-revoked", "revoked-lwa", "Both"))
        .connection(connection("acme-gone", "acme-lwa", "Endpoint"))
        .gateway_pod(GatewayPod::new("gw-main"))
        .gateway_pod(GatewayPod::new("gw-other"))
        // Another Team's pod, labelled as a gateway the connection lists.
        .outsider_gateway_pod(GatewayPod::new("gw-main"))
        .await;
    let operator = Operator::start(&s, &lwa, "aso-endpoint", &[]).await;
    s.wait_ready("acme-de").await;
    s.wait_ready("acme-secret").await;
    s.wait_ready("acme-gone").await;
    s.wait_for("acme-revoked", "credentials rejected", |c| {
        has_condition(c, "CredentialsValid", "False")
    })
    .await;

    let gateway = s.pod("gw-main");
    let token = bound_token(&s.client, gateway, Some(AUDIENCE)).await;
    let ns = s.namespace.as_str();
    let calls = Calls::to(&operator);

    // A listed gateway in the connection's namespace gets the token and the metadata.
    let ok = calls.call(ns, "acme-de", Some(&token)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let issued = lwa.issued_tokens();
    let access_token = ok.body["access_token"].as_str().unwrap().to_owned();
    assert!(issued.contains(&access_token), "the token LWA issued");
    assert_eq!(ok.body["token_type"], "bearer");
    assert_eq!(ok.body["marketplace_id"], "A1PA6795UKMFR9");
    assert_eq!(ok.body["region"], "EU");
    assert_eq!(
        ok.body["endpoint"],
        "https://sellingpartnerapi-eu.amazon.com"
    );
    assert_eq!(ok.body["seller_id"], "A3FHEXAMPLEYWS");
    let expires: jiff::Timestamp = ok.body["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > jiff::Timestamp::now());
    // Endpoint mode: no runtime Secret, only the sealed store, which holds no plaintext.
    assert!(s.secret("acme-de-sp-api").await.is_none());
    let store = s.secrets().get("acme-de-sp-api-sealed").await.unwrap();
    assert_eq!(
        store.type_.as_deref(),
        Some("connectors.openteam.io/sp-api-token-sealed")
    );
    assert_eq!(
        store.metadata.labels.as_ref().unwrap()["connectors.openteam.io/secret-role"],
        "token-store"
    );
    let data = store.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["sealed"]);
    assert!(!String::from_utf8_lossy(&data["sealed"].0).contains(&access_token));

    // No token, a malformed header: 401.
    let missing = calls.call(ns, "acme-de", None).await;
    assert_eq!((missing.status, missing.reason()), (401, "missing_token"));
    assert!(missing.headers.contains_key("www-authenticate"));
    let garbage = calls.call(ns, "acme-de", Some("not-a-jwt")).await;
    assert_eq!((garbage.status, garbage.reason()), (401, "invalid_token"));

    // The same pod's token for the API server's audience: 401.
    let wrong_audience = bound_token(&s.client, gateway, None).await;
    let answer = calls.call(ns, "acme-de", Some(&wrong_audience)).await;
    assert_eq!((answer.status, answer.reason()), (401, "invalid_token"));
    assert!(answer.body["error"].as_str().unwrap().contains(AUDIENCE));

    // A token of the right audience not bound to a pod: 401.
    let unbound = unbound_token(&s.client, ns, "gw-main").await;
    let answer = calls.call(ns, "acme-de", Some(&unbound)).await;
    assert_eq!((answer.status, answer.reason()), (401, "not_bound_to_pod"));

    // Another Team's pod, with a listed gateway label: 403, for existing and unknown names.
    let outsider_token = bound_token(&s.client, s.outsider_pod("gw-main"), Some(AUDIENCE)).await;
    let answer = calls.call(ns, "acme-de", Some(&outsider_token)).await;
    assert_eq!((answer.status, answer.reason()), (403, "namespace"));
    let answer = calls.call(ns, "no-such", Some(&outsider_token)).await;
    assert_eq!((answer.status, answer.reason()), (403, "namespace"));

    // A pod of a gateway the connection does not list: 403 naming the rule.
    let other_token = bound_token(&s.client, s.pod("gw-other"), Some(AUDIENCE)).await;
    let answer = calls.call(ns, "acme-de", Some(&other_token)).await;
    assert_eq!(
        (answer.status, answer.reason()),
        (403, "gateway_not_listed")
    );
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("spec.gateways")
    );

    // Unknown connection, caller in the namespace: 404.
    let answer = calls.call(ns, "no-such", Some(&token)).await;
    assert_eq!(
        (answer.status, answer.reason()),
        (404, "unknown_connection")
    );

    // Secret delivery: the endpoint does not serve it.
    let answer = calls.call(ns, "acme-secret", Some(&token)).await;
    assert_eq!((answer.status, answer.reason()), (403, "delivery"));

    // No valid token (LWA rejected the credentials): 503 with Retry-After.
    let answer = calls.call(ns, "acme-revoked", Some(&token)).await;
    assert_eq!((answer.status, answer.reason()), (503, "no_valid_token"));
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);

    // Suspended: 403, and the store is removed.
    s.set_suspended("acme-de", true).await;
    let answer = calls.until(ns, "acme-de", &token, "suspended").await;
    assert_eq!(answer.status, 403);
    s.wait_for("acme-de", "Suspended=True", |c| {
        has_condition(c, "Suspended", "True")
    })
    .await;
    eventually("the token store to be removed", Duration::from_secs(10))
        .until(
            async || s.secret("acme-de-sp-api-sealed").await,
            Option::is_none,
        )
        .await;
    assert!(s.secret("acme-de-sp-api-sealed").await.is_none());

    // Deleted: 404 for the caller in the namespace, 403 for the outsider.
    s.connections()
        .delete("acme-gone", &DeleteParams::default())
        .await
        .unwrap();
    let answer = calls
        .until(ns, "acme-gone", &token, "unknown_connection")
        .await;
    assert_eq!(answer.status, 404);
    let answer = calls.call(ns, "acme-gone", Some(&outsider_token)).await;
    assert_eq!((answer.status, answer.reason()), (403, "namespace"));

    let statuses = calls.into_statuses();
    let (audit, metrics) = operator.stop().await;
    // Exactly one audit record per call, naming who called from which pod.
    let records = audit_records(&audit);
    assert_eq!(records.len(), statuses.len(), "{}", audit.text());
    let served = statuses.iter().filter(|s| **s == 200).count();
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), served);
    let record = allowed[0];
    assert_eq!(record["category"], "credential_access");
    assert_eq!(
        record["actor"],
        format!("system:serviceaccount:{ns}:gw-main")
    );
    assert_eq!(record["pod"], "gw-main");
    assert_eq!(record["gateway"], "gw-main");
    assert_eq!(record["team"], s.team.as_str());
    assert_eq!(record["connection"], "acme-de");
    assert_eq!(record["reason"], "token_served");
    for reason in [
        "missing_token",
        "invalid_token",
        "not_bound_to_pod",
        "namespace",
        "gateway_not_listed",
        "unknown_connection",
        "delivery",
        "suspended",
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["reason"] == reason && r["outcome"] == "denied"),
            "no denied record with reason {reason}"
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "no_valid_token" && r["outcome"] == "failure")
    );
    let outsider_record = records.iter().find(|r| r["reason"] == "namespace").unwrap();
    assert_eq!(
        outsider_record["actor"],
        format!("system:serviceaccount:{}:gw-main", s.outsider().namespace)
    );
    let verify = amazon_seller_operator::observability::audit::verify(
        audit.text().as_bytes(),
        Default::default(),
    )
    .unwrap();
    assert!(verify.is_intact());

    // One metric increment per call.
    let team = s.team.as_str();
    assert_eq!(
        counter(&metrics, team, "gw-main", "allowed") as usize,
        served
    );
    assert_eq!(counter(&metrics, team, "gw-main", "unavailable"), 1);
    assert_eq!(counter(&metrics, team, "gw-other", "denied"), 1);
    assert_eq!(counter(&metrics, "none", "none", "denied"), 4);
    let total: u64 = metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("amazon_seller_credential_access_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total as usize, statuses.len());

    // Neither the access token nor any bearer token reaches logs, audit or metrics.
    let metrics_text = metrics.encode().unwrap();
    for (what, text) in [
        ("logs", logs.text()),
        ("audit", audit.text()),
        ("metrics", metrics_text),
    ] {
        for secret in [
            access_token.as_str(),
            token.as_str(),
            wrong_audience.as_str(),
            outsider_token.as_str(),
            other_token.as_str(),
            unbound.as_str(),
            seller.refresh_token.as_str(),
        ] {
            assert!(!text.contains(secret), "{what} leak a secret");
        }
        assert!(!text.contains("Atza|"), "{what} hold LWA token material");
    }
}

#[tokio::test]
async fn a_caller_over_its_rate_limit_gets_429_with_retry_after() {
    let Some(client) = cluster("a_caller_over_its_rate_limit_gets_429_with_retry_after").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .connection(
            Connection::test()
                .with_credentials("acme-lwa")
                .with_delivery("Both"),
        )
        .gateway_pod(GatewayPod::new("gw-main"))
        // A second pod of the same gateway, with a ServiceAccount of its own.
        .gateway_pod(GatewayPod::new("gw-second").for_gateway("gw-main"))
        .await;
    let rate = [
        ("--credential-endpoint-qps", "0.05"),
        ("--credential-endpoint-burst", "2"),
    ];
    let operator = Operator::start(&s, &lwa, "aso-rate", &rate).await;
    s.wait_ready("acme-de").await;
    let token = bound_token(&s.client, s.pod("gw-main"), Some(AUDIENCE)).await;
    // Both mode: the runtime Secret and the endpoint serve the same token.
    let runtime = s.secrets().get("acme-de-sp-api").await.unwrap();
    for _ in 0..2 {
        let ok = call(&operator, &s.namespace, "acme-de", Some(&token)).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(
            ok.body["access_token"].as_str().unwrap().as_bytes(),
            runtime.data.as_ref().unwrap()["access_token"].0.as_slice()
        );
    }
    let limited = call(&operator, &s.namespace, "acme-de", Some(&token)).await;
    assert_eq!((limited.status, limited.reason()), (429, "rate_limited"));
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    // Another ServiceAccount has its own budget.
    let second_token = bound_token(&s.client, s.pod("gw-second"), Some(AUDIENCE)).await;
    let ok = call(&operator, &s.namespace, "acme-de", Some(&second_token)).await;
    assert_eq!(ok.status, 200);

    let (audit, metrics) = operator.stop().await;
    let records = audit_records(&audit);
    assert_eq!(records.len(), 4);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "rate_limited")
            .count(),
        1
    );
    // Throttled before the pod is read: the caller's Team, no gateway.
    assert_eq!(counter(&metrics, &s.team, "none", "rate_limited"), 1);
    let limited_record = records
        .iter()
        .find(|r| r["reason"] == "rate_limited")
        .unwrap();
    assert_eq!(limited_record["pod"], "gw-main");
    assert_eq!(
        limited_record["actor"],
        format!("system:serviceaccount:{}:gw-main", s.namespace)
    );
    assert_eq!(counter(&metrics, &s.team, "gw-main", "allowed"), 3);
}

#[tokio::test]
async fn endpoint_delivery_writes_no_runtime_secret_and_survives_a_restart_without_lwa_calls() {
    let Some(client) = cluster(
        "endpoint_delivery_writes_no_runtime_secret_and_survives_a_restart_without_lwa_calls",
    )
    .await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .await;
    let first = Operator::start(&s, &lwa, "aso-first", &[]).await;
    // Both first: the runtime Secret exists; switching to Endpoint removes it and keeps the
    // same token in the store, without asking LWA again.
    s.connect(
        Connection::test()
            .with_credentials("acme-lwa")
            .with_delivery("Both"),
    )
    .await;
    s.wait_ready("acme-de").await;
    let runtime = s.secrets().get("acme-de-sp-api").await.unwrap();
    let published = String::from_utf8(runtime.data.unwrap()["access_token"].0.clone()).unwrap();
    s.change_spec("acme-de", json!({ "delivery": "Endpoint" }))
        .await;
    eventually("the runtime Secret to be removed", Duration::from_secs(10))
        .until(async || s.secret("acme-de-sp-api").await, Option::is_none)
        .await;
    assert!(s.secret("acme-de-sp-api").await.is_none());
    let ready = s.wait_ready("acme-de").await;
    assert_eq!(ready.status.unwrap().runtime_secret_name, None);

    let gateway = s.gateway_pod(GatewayPod::new("gw-main")).await;
    let token = bound_token(&s.client, &gateway, Some(AUDIENCE)).await;
    let answer = call(&first, &s.namespace, "acme-de", Some(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["access_token"], published.as_str());
    first.stop().await;
    assert_eq!(lwa.calls_for(&seller.refresh_token), 1);
    let store_version = s
        .secrets()
        .get("acme-de-sp-api-sealed")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // A restarted operator reads the token back from the store: no LWA call, no write, and
    // the endpoint serves the same token.
    let second = Operator::start(&s, &lwa, "aso-second", &[]).await;
    let answer = call(&second, &s.namespace, "acme-de", Some(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["access_token"], published.as_str());
    // Give the controller time to reconcile the connection after the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lwa.calls_for(&seller.refresh_token), 1);
    assert_eq!(
        s.secrets()
            .get("acme-de-sp-api-sealed")
            .await
            .unwrap()
            .metadata
            .resource_version,
        store_version
    );
    assert!(s.secret("acme-de-sp-api").await.is_none());

    // Back to Secret: the runtime Secret returns with the same token, the store goes, and the
    // endpoint refuses by delivery mode.
    s.change_spec("acme-de", json!({ "delivery": "Secret" }))
        .await;
    let runtime = s.wait_for_secret("acme-de-sp-api", true).await.unwrap();
    let republished = String::from_utf8(runtime.data.unwrap()["access_token"].0.clone()).unwrap();
    assert_eq!(republished, published);
    s.wait_for_secret("acme-de-sp-api-sealed", false).await;
    let answer = Calls::to(&second)
        .until(&s.namespace, "acme-de", &token, "delivery")
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let (audit, _) = second.stop().await;
    assert_eq!(lwa.calls_for(&seller.refresh_token), 1);
    assert!(!audit.text().contains("\"action\":\"token_refresh\""));
}

#[tokio::test]
async fn prune_keys_keeps_a_key_a_token_store_is_sealed_to() {
    let Some(client) = cluster("prune_keys_keeps_a_key_a_token_store_is_sealed_to").await else {
        return;
    };
    let s = Scenario::builder(&client).await;
    let store = s.key_store();
    let keyring = store.bootstrap(jiff::Timestamp::now()).await.unwrap();
    let old_key = keyring.active().id().to_owned();
    let now = jiff::Timestamp::now();
    let envelope = crypto::seal_token(
        &keyring.active().public_key(),
        &TokenContext {
            team_id: &s.team,
            namespace: &s.namespace,
            connection: "acme-de",
        },
        &StoredToken {
            access_token: "Atza|pinned".into(),
            token_type: "bearer".into(),
            expires_at: now + jiff::SignedDuration::from_hours(1),
            issued_at: now,
        },
    )
    .unwrap();
    let token_store: Secret = serde_json::from_value(json!({
        "metadata": {"name": "acme-de-sp-api-sealed", "labels": {
            "connectors.openteam.io/connection": "acme-de",
            "connectors.openteam.io/secret-role": "token-store",
        }},
        "type": "connectors.openteam.io/sp-api-token-sealed",
        "data": {"sealed": k8s_openapi::ByteString(envelope)},
    }))
    .unwrap();
    s.secrets()
        .create(&PostParams::default(), &token_store)
        .await
        .unwrap();
    store.rotate(jiff::Timestamp::now()).await.unwrap();
    let removed = store.prune(&s.client).await.unwrap();
    assert!(
        !removed.contains(&old_key),
        "a key in use by a token store was pruned"
    );
    s.secrets()
        .delete("acme-de-sp-api-sealed", &DeleteParams::default())
        .await
        .unwrap();
    let removed = store.prune(&s.client).await.unwrap();
    assert_eq!(removed, vec![old_key]);
}
