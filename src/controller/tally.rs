//! The connection gauges, added up over every controller: one controller runs per watched
//! namespace (or one for the whole cluster), and each reports what its own cache holds.
//!
//! - `amazon_seller_connections{team,ready}`: connections by Team and readiness.
//! - `amazon_seller_lwa_demand_calls_per_second`: the LWA calls per second the connections
//!   need in steady state, next to `amazon_seller_lwa_rate_limit_calls_per_second`. When the
//!   demand passes half the limit a warning is logged (and an alert fires): a limit below the
//!   demand lets tokens expire unrefreshed, and one below twice the demand cannot work off the
//!   backlog of an LWA outage (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::runtime::reflector::Store;

use crate::api::AmazonSellerConnection;
use crate::domain::conditions::READY;
use crate::domain::validation;
use crate::lwa::schedule::steady_calls_per_second;
use crate::lwa::token::DEFAULT_TOKEN_LIFETIME;
use crate::observability::metrics::Metrics;

/// How often each controller recounts its cache.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(15);

/// Demand above this share of the rate limit is reported.
pub const DEMAND_WARNING_SHARE: f64 = 0.5;

/// One controller's count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Count {
    /// Connections by (team, ready).
    pub connections: BTreeMap<(String, bool), i64>,
    /// LWA calls per second they need.
    pub demand: f64,
}

impl Count {
    /// Counts the connections of one cache.
    pub fn of<'a>(connections: impl IntoIterator<Item = &'a AmazonSellerConnection>) -> Self {
        let mut count = Self::default();
        for connection in connections {
            let ready = connection
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                .is_some_and(|c| c.status == "True");
            *count
                .connections
                .entry((connection.spec.team_id.clone(), ready))
                .or_insert(0) += 1;
            if !connection.spec.suspended && connection.metadata.deletion_timestamp.is_none() {
                let renew_before = validation::parse_renew_before(&connection.spec.renew_before)
                    .unwrap_or(validation::MIN_RENEW_BEFORE);
                count.demand += steady_calls_per_second(DEFAULT_TOKEN_LIFETIME, renew_before);
            }
        }
        count
    }
}

/// The latest count of every controller, keyed by its scope (a namespace, or `""` for all).
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<String, Count>>,
    warned: AtomicBool,
}

impl Tally {
    /// Replaces `scope`'s count and returns the sum over all scopes.
    pub fn update(&self, scope: &str, count: Count) -> Count {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.insert(scope.to_owned(), count);
        let mut total = Count::default();
        for count in counts.values() {
            for (key, n) in &count.connections {
                *total.connections.entry(key.clone()).or_insert(0) += n;
            }
            total.demand += count.demand;
        }
        total
    }

    /// Publishes `total` and warns once each time the demand passes the warning share of
    /// `rate_limit` (calls per second).
    pub fn publish(&self, total: &Count, rate_limit: f64, metrics: &Metrics) {
        metrics.set_connection_counts(
            total
                .connections
                .iter()
                .map(|((team, ready), n)| (team.as_str(), *ready, *n)),
        );
        metrics.set_lwa_demand(total.demand, rate_limit);
        let high = total.demand > rate_limit * DEMAND_WARNING_SHARE;
        if high && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                demand = total.demand,
                rate_limit,
                "the connections need {:.1} LWA calls/s in steady state, more than half of \
                 --lwa-qps {rate_limit}: raise --lwa-qps to at least twice the demand (tokens \
                 expire unrefreshed once the demand exceeds it)",
                total.demand
            );
        } else if !high {
            self.warned.store(false, Ordering::Relaxed);
        }
    }
}

/// Keeps the gauges current from one controller's cache until aborted.
pub async fn count(
    store: Store<AmazonSellerConnection>,
    scope: String,
    tally: std::sync::Arc<Tally>,
    rate_limit: f64,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(COUNT_INTERVAL);
    loop {
        tick.tick().await;
        let state = store.state();
        let total = tally.update(&scope, Count::of(state.iter().map(AsRef::as_ref)));
        tally.publish(&total, rate_limit, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AmazonSellerConnectionSpec;

    fn connection(team: &str, renew_before: &str, suspended: bool) -> AmazonSellerConnection {
        let spec: AmazonSellerConnectionSpec = serde_json::from_value(serde_json::json!({
            "teamId": team, "sellerId": "A3FHEXAMPLEYWS", "marketplace": "US",
            "credentialsSecretName": "c", "gateways": ["gw"], "renewBefore": renew_before,
            "suspended": suspended,
        }))
        .unwrap();
        AmazonSellerConnection::new("c", spec)
    }

    #[test]
    fn counts_of_every_scope_add_up() {
        let tally = Tally::default();
        let a = [
            connection("acme", "20m", false),
            connection("acme", "5m", false),
        ];
        let b = [
            connection("globex", "20m", false),
            connection("acme", "20m", true),
        ];
        tally.update("team-a", Count::of(&a));
        let total = tally.update("team-b", Count::of(&b));
        assert_eq!(total.connections[&("acme".to_owned(), false)], 3);
        assert_eq!(total.connections[&("globex".to_owned(), false)], 1);
        // Suspended connections need no calls; 20m is 1.62 calls an hour, 5m 1.15.
        let per_hour = total.demand * 3600.0;
        assert!((per_hour - (1.62 + 1.15 + 1.62)).abs() < 0.02, "{per_hour}");
        // A scope's new count replaces its old one.
        let total = tally.update("team-a", Count::default());
        assert_eq!(total.connections.get(&("acme".to_owned(), false)), Some(&1));
    }

    #[test]
    fn demand_and_limit_are_exported() {
        let metrics = Metrics::new().unwrap();
        let tally = Tally::default();
        let total = tally.update("", Count::of(&[connection("acme", "20m", false)]));
        tally.publish(&total, 10.0, &metrics);
        let text = metrics.encode().unwrap();
        assert!(text.contains("amazon_seller_lwa_rate_limit_calls_per_second 10"));
        assert!(text.contains("amazon_seller_lwa_demand_calls_per_second 0.00045"));
        assert!(text.contains("amazon_seller_connections{ready=\"false\",team=\"acme\"} 1"));
    }
}
