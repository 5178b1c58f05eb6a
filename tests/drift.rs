//! Access that no longer holds, found and contained: the operator's own `run` against the real
//! control plane, judging stored pods again (the test plane has no kubelet: pods are stored,
//! never run, which is all the pod watch needs). The webhook is off, as if it had not been
//! asked: the pods here are exactly what it would have admitted then, or never saw.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use amazon_seller_operator::api::AmazonSellerConnection;
use amazon_seller_operator::names::{GATEWAY_LABEL, TEAM_LABEL};

use support::cluster;
use support::eventually::eventually;
use support::lwa_emulator::LwaEmulator;
use support::operator::RunningOperator as Operator;
use support::scenario::{Connection, GatewayPod, Scenario, condition, has_condition};

/// `run` over the scenario's namespaces, without the webhook and leader election.
fn start(s: &Scenario, lwa: &LwaEmulator, identity: &str) -> Operator {
    let flags = s
        .run_flags()
        .lwa(lwa)
        .without_webhook()
        .without_leader_election();
    Operator::start(&s.client, identity, flags.args())
}

/// The notes of the Events with `reason` about connection `name`.
async fn events(s: &Scenario, reason: &str, name: &str) -> Vec<String> {
    Api::<Event>::namespaced(s.client.clone(), &s.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// Waits (up to 30 s) for an Event `reason` about connection `name` whose note names `pod`.
async fn event_naming(s: &Scenario, reason: &str, name: &str, pod: &str) -> String {
    let notes = eventually(
        format!("a {reason} Event naming pod {pod}"),
        Duration::from_secs(30),
    )
    .until(
        async || events(s, reason, name).await,
        |notes| notes.iter().any(|n| n.contains(&format!("pod {pod} "))),
    )
    .await;
    notes
        .into_iter()
        .find(|n| n.contains(&format!("pod {pod} ")))
        .unwrap()
}

/// The pods `status.unauthorizedPods` names, with their rule.
fn named(c: &AmazonSellerConnection) -> Vec<(String, String)> {
    c.status
        .iter()
        .flat_map(|s| s.unauthorized_pods.iter())
        .map(|p| (p.name.clone(), p.reason.clone()))
        .collect()
}

/// The audit records of `action`, parsed.
fn audit_records(audit: &str, action: &str) -> Vec<Value> {
    audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == action)
        .collect()
}

/// The value of `amazon_seller_unauthorized_mounts` for the connection, if exported.
fn unauthorized_mounts(operator: &Operator, namespace: &str, name: &str) -> Option<String> {
    let text = operator.metrics.encode().unwrap();
    let series = format!(
        "amazon_seller_unauthorized_mounts{{connection=\"{name}\",namespace=\"{namespace}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_pod_that_names_the_runtime_secret_before_its_connection_exists_gets_no_secret() {
    let Some(client) =
        cluster("a_pod_that_names_the_runtime_secret_before_its_connection_exists_gets_no_secret")
            .await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    // First the pod: it names acme-de-sp-api, which nothing knew as a runtime Secret then.
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .gateway_pod(
            GatewayPod::new("early")
                .for_gateway("gw-early")
                .mounting("acme-de-sp-api"),
        )
        .await;
    let operator = start(&s, &lwa, "aso-drift-1");
    // Then the connection, which lists another gateway.
    s.connect(Connection::test().with_credentials("acme-lwa"))
        .await;
    let withheld = s
        .wait_for("acme-de", "UnauthorizedMounts=True naming pod early", |c| {
            has_condition(c, "UnauthorizedMounts", "True")
                && named(c) == [("early".to_owned(), "gateway_not_listed".to_owned())]
        })
        .await;
    let ready = condition(&withheld, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "UnauthorizedMounts")
    );
    assert!(
        condition(&withheld, "UnauthorizedMounts")
            .unwrap()
            .message
            .contains("early (gateway_not_listed)")
    );
    let note = event_naming(&s, "UnauthorizedMount", "acme-de", "early").await;
    assert!(
        note.contains("gateway \"gw-early\" is not listed"),
        "{note}"
    );
    assert!(
        s.secret("acme-de-sp-api").await.is_none(),
        "no runtime Secret"
    );
    assert_eq!(lwa.total_calls(), 0, "nothing is refreshed while withheld");
    assert_eq!(
        unauthorized_mounts(&operator, &s.namespace, "acme-de").as_deref(),
        Some("1")
    );

    // The pod goes: the runtime Secret is created and the condition turns False.
    Api::<Pod>::namespaced(s.client.clone(), &s.namespace)
        .delete("early", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let ready = s.wait_ready("acme-de").await;
    assert!(has_condition(&ready, "UnauthorizedMounts", "False"));
    assert!(named(&ready).is_empty());
    s.wait_for_secret("acme-de-sp-api", true).await;
    let (audit, _) = operator.stop().await;
    let records = audit_records(&audit.text(), "unauthorized_mount");
    assert_eq!(records.len(), 1, "{}", audit.text());
    assert_eq!(records[0]["category"], "gateway_activity");
    assert_eq!(records[0]["outcome"], "failure");
    assert_eq!(records[0]["pod"], "early");
    assert_eq!(records[0]["gateway"], "gw-early");
    assert_eq!(records[0]["reason"], "gateway_not_listed");
}

#[tokio::test]
async fn a_gateway_removed_while_its_pod_runs_is_reported_audited_and_counted() {
    let Some(client) =
        cluster("a_gateway_removed_while_its_pod_runs_is_reported_audited_and_counted").await
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
                .with_gateways(&["gw-main", "gw-old"]),
        )
        .gateway_pod(
            GatewayPod::new("main")
                .for_gateway("gw-main")
                .mounting("acme-de-sp-api"),
        )
        .gateway_pod(
            GatewayPod::new("old")
                .for_gateway("gw-old")
                .mounting("acme-de-sp-api"),
        )
        .await;
    let operator = start(&s, &lwa, "aso-drift-2");
    let ready = s.wait_ready("acme-de").await;
    assert!(
        condition(&ready, "UnauthorizedMounts").is_none(),
        "no condition while every pod follows the rules"
    );
    assert_eq!(
        unauthorized_mounts(&operator, &s.namespace, "acme-de").as_deref(),
        Some("0")
    );

    s.change_spec("acme-de", json!({ "gateways": ["gw-main"] }))
        .await;
    let found = s
        .wait_for("acme-de", "UnauthorizedMounts=True naming pod old", |c| {
            has_condition(c, "UnauthorizedMounts", "True")
                && named(c) == [("old".to_owned(), "gateway_not_listed".to_owned())]
        })
        .await;
    assert!(
        has_condition(&found, "Ready", "True"),
        "listed gateways keep their token"
    );
    assert!(s.secret("acme-de-sp-api").await.is_some());
    let note = event_naming(&s, "UnauthorizedMount", "acme-de", "old").await;
    assert!(note.contains("gateway \"gw-old\" is not listed"), "{note}");
    eventually("the gauge at 1", Duration::from_secs(10))
        .until(
            async || unauthorized_mounts(&operator, &s.namespace, "acme-de"),
            |v| v.as_deref() == Some("1"),
        )
        .await;
    let records = eventually(
        "the unauthorized_mount audit record",
        Duration::from_secs(10),
    )
    .until(
        async || audit_records(&operator.audit.text(), "unauthorized_mount"),
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["category"], "gateway_activity");
    assert_eq!(records[0]["namespace"], s.namespace.as_str());
    assert_eq!(records[0]["connection"], "acme-de");
    assert_eq!(records[0]["pod"], "old");
    assert_eq!(records[0]["gateway"], "gw-old");
    assert_eq!(records[0]["reason"], "gateway_not_listed");
    assert_eq!(records[0]["team"], s.team.as_str());
    let (audit, _) = operator.stop().await;
    // No token anywhere in what was reported.
    let token = String::from_utf8(
        s.secret("acme-de-sp-api").await.unwrap().data.unwrap()["access_token"]
            .0
            .clone(),
    )
    .unwrap();
    assert!(!audit.text().contains(&token));
    assert!(!note.contains(&token));
}

#[tokio::test]
async fn a_relabelled_pod_is_evicted_when_the_connection_asks_for_it() {
    let Some(client) = cluster("a_relabelled_pod_is_evicted_when_the_connection_asks_for_it").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .connection(Connection::test().with_credentials("acme-lwa"))
        .gateway_pod(
            GatewayPod::new("main")
                .for_gateway("gw-main")
                .mounting("acme-de-sp-api"),
        )
        .await;
    let operator = start(&s, &lwa, "aso-drift-3");
    s.wait_ready("acme-de").await;
    s.change_spec("acme-de", json!({ "onUnauthorizedMount": "Evict" }))
        .await;
    // The gateway label changed by a path the webhook does not see.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.namespace);
    pods.patch(
        "main",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { GATEWAY_LABEL: "gw-rogue" } } })),
    )
    .await
    .unwrap();
    eventually("pod main evicted", Duration::from_secs(30))
        .until(
            async || pods.get_opt("main").await.unwrap(),
            Option::is_none,
        )
        .await;
    event_naming(&s, "PodEvicted", "acme-de", "main").await;
    let cleared = s
        .wait_for(
            "acme-de",
            "UnauthorizedMounts=False once the pod is gone",
            |c| has_condition(c, "UnauthorizedMounts", "False"),
        )
        .await;
    assert!(has_condition(&cleared, "Ready", "True"));
    let (audit, _) = operator.stop().await;
    let evicted = audit_records(&audit.text(), "evict_pod");
    assert_eq!(evicted.len(), 1, "{}", audit.text());
    assert_eq!(evicted[0]["outcome"], "success");
    assert_eq!(evicted[0]["pod"], "main");
    assert_eq!(evicted[0]["gateway"], "gw-rogue");
    assert_eq!(evicted[0]["reason"], "gateway_not_listed");
}

#[tokio::test]
async fn a_namespace_given_to_another_team_takes_access_from_its_gateways() {
    let Some(client) =
        cluster("a_namespace_given_to_another_team_takes_access_from_its_gateways").await
    else {
        return;
    };
    let lwa = LwaEmulator::start().await;
    let seller = lwa.new_seller();
    let s = Scenario::builder(&client)
        .credentials("acme-lwa", &seller)
        .connection(Connection::test().with_credentials("acme-lwa"))
        .gateway_pod(
            GatewayPod::new("main")
                .for_gateway("gw-main")
                .mounting("acme-de-sp-api"),
        )
        .await;
    let operator = start(&s, &lwa, "aso-drift-4");
    s.wait_ready("acme-de").await;
    Api::<Namespace>::all(s.client.clone())
        .patch(
            &s.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { TEAM_LABEL: "globex" } } })),
        )
        .await
        .unwrap();
    s.wait_for("acme-de", "pod main named for team_mismatch", |c| {
        named(c) == [("main".to_owned(), "team_mismatch".to_owned())]
    })
    .await;
    let note = event_naming(&s, "UnauthorizedMount", "acme-de", "main").await;
    assert!(note.contains("belongs to Team \"globex\""), "{note}");
    operator.stop().await;
}
