//! Tier 2: refreshes under a tight LWA rate limit, with the operator's own `run` against the real
//! control plane and the LWA emulator. A crowd of connections created at once gets its first
//! tokens at the rate limit, and each connection's status is written once per change of state
//! (waiting for its turn, then published), however often the operator's own writes make it
//! reconcile again.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher;

use amazon_seller_operator::api::{AmazonSellerConnection, AmazonSellerConnectionStatus};

use support::cluster;
use support::eventually::eventually;
use support::lwa_emulator::LwaEmulator;
use support::operator::RunningOperator as Operator;
use support::scenario::{Connection, Scenario, has_condition};

const CONNECTIONS: usize = 12;
const QPS: f64 = 2.0;
const BURST: usize = 2;

/// Every status each connection had, in order, as a watch saw them.
type Seen = Arc<Mutex<BTreeMap<String, Vec<AmazonSellerConnectionStatus>>>>;

/// Records each connection's status every time it changes.
fn watch_statuses(s: &Scenario) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let events = watcher::watcher(s.connections(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let connection: AmazonSellerConnection = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                _ => continue,
            };
            let Some(status) = connection.status else {
                continue;
            };
            let name = connection.metadata.name.unwrap_or_default();
            let mut seen = record.lock().unwrap();
            let history = seen.entry(name).or_default();
            if history.last() != Some(&status) {
                history.push(status);
            }
        }
    });
    (seen, task)
}

fn ready_reason(status: &AmazonSellerConnectionStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_crowd_against_a_tight_rate_limit_is_served_in_turn_with_one_status_write_per_state() {
    let Some(client) = cluster(
        "a_crowd_against_a_tight_rate_limit_is_served_in_turn_with_one_status_write_per_state",
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
    let (seen, watch) = watch_statuses(&s);
    let flags = s
        .run_flags()
        .lwa(&lwa)
        .without_webhook()
        .without_leader_election()
        .flag("--lwa-qps", QPS.to_string())
        .flag("--lwa-burst", BURST.to_string());
    let operator = Operator::start(&s.client, "aso-throttle", flags.args());
    let created = Instant::now();
    let names: Vec<String> = (0..CONNECTIONS).map(|i| format!("crowd-{i}")).collect();
    for name in &names {
        s.connect(Connection::test().named(name).with_credentials("acme-lwa"))
            .await;
    }
    eventually(
        "every connection of the crowd to be Ready",
        Duration::from_secs(90),
    )
    .until(
        async || s.connections().list(&Default::default()).await.unwrap(),
        |list| {
            list.items.len() == CONNECTIONS
                && list.items.iter().all(|c| has_condition(c, "Ready", "True"))
        },
    )
    .await;
    let all_ready = created.elapsed();
    // Let the reconciles the last writes cause settle, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = operator.stop().await;
    watch.abort();

    // At the rate limit: the burst at once, then one every 1/qps (plus the time it took to
    // create them and a margin for this shared machine).
    let bound = Duration::from_secs_f64((CONNECTIONS - BURST) as f64 / QPS + 1.0 / QPS);
    assert!(
        all_ready < bound + Duration::from_secs(20),
        "all Ready after {all_ready:?}; the rate limit alone needs {bound:?}"
    );
    assert_eq!(
        lwa.calls_for(&seller.refresh_token),
        CONNECTIONS,
        "one LWA call per connection"
    );

    let seen = seen.lock().unwrap();
    for name in &names {
        let history = &seen[name];
        let states: Vec<String> = history.iter().map(ready_reason).collect();
        // Published at once (within the burst), or first waiting for a turn: at most one write
        // for each, never a write that only moved a time in a message.
        assert!(
            history.len() <= 2,
            "{name}: {} status writes: {states:?}",
            history.len()
        );
        assert_eq!(
            states.last().map(String::as_str),
            Some("True/TokenPublished")
        );
        if history.len() == 2 {
            assert_eq!(states[0], "False/RefreshPending", "{name}");
            assert!(
                history[0].next_refresh_at.is_some(),
                "{name}: the turn is in status.nextRefreshAt"
            );
        }
        assert!(
            !states.iter().any(|s| s.contains("RefreshFailed")),
            "{name}: waiting for the rate limit is no failure: {states:?}"
        );
    }
    // Each connection beyond the burst was refused once and told its turn; asking again before
    // the turn refuses nothing more.
    let text = metrics.encode().unwrap();
    let throttled: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("amazon_seller_token_refresh_total{")
                && l.contains("reason=\"throttled\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        throttled <= (CONNECTIONS - BURST) as f64,
        "{throttled} throttled refusals for {} connections beyond the burst",
        CONNECTIONS - BURST
    );
}
