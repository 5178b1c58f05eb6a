//! The status a plan stores: conditions merged with the stored ones (keeping
//! `lastTransitionTime` when a status did not change), the derived fields, and the transitions
//! (connected, suspended, resumed) that are reported.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::ResourceExt;

use super::intent::Intent;
use super::outputs::{audit, event};
use super::{EventKind, Report};
use crate::api::{AmazonSellerConnection, AmazonSellerConnectionStatus};
use crate::domain::conditions::{self, Observed, READY, SUSPENDED, Status};
use crate::domain::credential_access::Delivery;
use crate::domain::marketplace;
use crate::observability::audit::{Category, Outcome};
use crate::secrets::runtime_secret::{self, whole_seconds};

pub(super) fn status_of(
    connection: &AmazonSellerConnection,
    intent: &Intent,
    market: Option<&marketplace::Marketplace>,
    now: Timestamp,
) -> AmazonSellerConnectionStatus {
    let observed: Vec<Observed> = connection
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .map(|c| Observed {
            type_: c.type_.clone(),
            status: Status::parse(&c.status),
            last_transition_time: c.last_transition_time.0,
        })
        .collect();
    let generation = connection.metadata.generation;
    let merged = conditions::merge(
        &observed,
        intent.conditions.clone(),
        generation,
        whole_seconds(now),
    );
    let time = |t: Timestamp| Time(whole_seconds(t));
    let environment = connection.spec.environment;
    AmazonSellerConnectionStatus {
        marketplace_id: market.map(|m| m.marketplace_id.to_owned()),
        region: market.map(|m| m.region.code().to_owned()),
        endpoint: market.map(|m| m.endpoint(environment).to_owned()),
        runtime_secret_name: intent
            .publish
            .as_ref()
            .filter(|_| connection.spec.delivery.writes_runtime_secret())
            .map(|_| runtime_secret::name(&connection.name_any())),
        token_expires_at: intent.publish.as_ref().map(|t| time(t.expires_at)),
        next_refresh_at: intent.next_refresh_at.map(time),
        last_refresh_at: intent.last_refresh_at.map(time),
        failed_refresh_attempts: Some(i32::try_from(intent.failed_attempts).unwrap_or(i32::MAX)),
        key_id: intent.key_id.clone(),
        observed_generation: generation,
        // Set by the drift half of the plan.
        unauthorized_pods: Vec::new(),
        conditions: merged
            .into_iter()
            .map(|c| K8sCondition {
                type_: c.type_.to_owned(),
                status: c.status.as_str().to_owned(),
                reason: c.reason.to_owned(),
                message: c.message,
                observed_generation: c.observed_generation,
                last_transition_time: Time(c.last_transition_time),
            })
            .collect(),
    }
}

fn condition<'a>(
    status: Option<&'a AmazonSellerConnectionStatus>,
    type_: &str,
) -> Option<&'a K8sCondition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// Audit records and Events for condition transitions: suspended, resumed, connected.
pub(super) fn transitions(
    connection: &AmazonSellerConnection,
    new: &AmazonSellerConnectionStatus,
) -> Vec<Report> {
    let old = connection.status.as_ref();
    let was = |t: &str| condition(old, t).map(|c| c.status.as_str()) == Some("True");
    let is = |t: &str| condition(Some(new), t).map(|c| c.status.as_str()) == Some("True");
    let setup = |action, reason| {
        Report::Audit(audit(
            Category::ConnectorSetup,
            action,
            Outcome::Success,
            reason,
        ))
    };
    let mut reports = Vec::new();
    if !was(SUSPENDED) && is(SUSPENDED) {
        reports.push(setup("suspend", "spec_suspended"));
        reports.push(Report::Event(event(
            EventKind::Normal,
            "Suspended",
            "runtime Secret removed; no token is refreshed while suspended".into(),
        )));
    }
    if was(SUSPENDED) && !is(SUSPENDED) {
        reports.push(setup("resume", "spec_resumed"));
    }
    if !was(READY) && is(READY) {
        reports.push(setup("connect", "token_published"));
        let gateways = connection.spec.gateways.join(", ");
        let note = match (&new.runtime_secret_name, connection.spec.delivery) {
            (Some(secret), Delivery::Both) => format!(
                "access token published in Secret {secret} and at the runtime credential endpoint for gateways {gateways}"
            ),
            (Some(secret), _) => {
                format!("access token published in Secret {secret} for gateways {gateways}")
            }
            (None, _) => format!(
                "access token available at the runtime credential endpoint for gateways {gateways}"
            ),
        };
        reports.push(Report::Event(event(EventKind::Normal, "Connected", note)));
    }
    reports
}
