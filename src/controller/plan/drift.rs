//! The drift half of a plan: the pods of the connection's namespace judged against today's
//! rules ([`crate::domain::drift`]), and what the plan does about those outside them: the
//! `UnauthorizedMounts` condition and `status.unauthorizedPods`, one Warning Event and one audit
//! record per pod when it is first listed, the gauge, the evictions `spec.onUnauthorizedMount:
//! Evict` asks for, and whether the runtime Secret must be withheld.

use std::sync::Arc;

use kube::ResourceExt;

use super::outputs::{EventKind, EventNote, Eviction, PodReport, Report};
use crate::api::{AmazonSellerConnection, AmazonSellerConnectionStatus, UnauthorizedPod};
use crate::controller::pods::PodFacts;
use crate::domain::conditions::{Desired, Status, UNAUTHORIZED_MOUNTS};
use crate::domain::drift::{self, Breach, ConnectionRule, OnUnauthorizedMount, Violation};
use crate::secrets::runtime_secret;

/// At most this many pods are named in the status (the condition gives the number of all).
pub const LISTED_PODS: usize = 16;

/// A pod that references the connection's Secrets outside the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundPod {
    /// Its name.
    pub name: String,
    /// Its uid, for the eviction's precondition.
    pub uid: String,
    /// Its controller owner (`Kind/name`), for messages.
    pub owner: Option<String>,
    /// Its gateway label.
    pub gateway: Option<String>,
    /// Whether it is going away already.
    pub terminating: bool,
    /// The rules it breaks, most important first (never empty).
    pub breaches: Vec<Breach>,
}

impl FoundPod {
    /// The first rule it breaks.
    pub fn violation(&self) -> Violation {
        self.breaches
            .first()
            .map_or(Violation::SealedSecretReference, |b| b.violation)
    }

    /// Whether it names the runtime Secret (and not only sealed Secrets).
    fn names_runtime_secret(&self) -> bool {
        self.breaches
            .iter()
            .any(|b| b.violation != Violation::SealedSecretReference)
    }
}

/// Judges the pods of the connection's namespace, whose Team is `namespace_team`: the pods
/// outside the rules, by name.
pub fn judge(
    connection: &AmazonSellerConnection,
    namespace_team: Option<&str>,
    pods: &[Arc<PodFacts>],
) -> Vec<FoundPod> {
    let name = connection.name_any();
    let spec = &connection.spec;
    let rule = ConnectionRule {
        name: &name,
        team_id: &spec.team_id,
        gateways: &spec.gateways,
        credentials_secret_name: &spec.credentials_secret_name,
    };
    let mut found: Vec<FoundPod> = pods
        .iter()
        .filter_map(|pod| {
            let breaches = drift::judge(&rule, namespace_team, &pod.view);
            (!breaches.is_empty()).then(|| FoundPod {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                owner: pod.owner.clone(),
                gateway: pod.view.gateway.clone(),
                terminating: pod.terminating,
                breaches,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Whether the runtime Secret is withheld: it does not exist, would be written, and a pod
/// outside the rules already names it (creating it would hand that pod the token).
pub fn withholds(
    connection: &AmazonSellerConnection,
    runtime_exists: bool,
    found: &[FoundPod],
) -> bool {
    connection.spec.delivery.writes_runtime_secret()
        && !runtime_exists
        && found.iter().any(FoundPod::names_runtime_secret)
}

/// `Ready` while the runtime Secret is withheld.
pub(super) fn withheld_message(connection: &AmazonSellerConnection) -> String {
    format!(
        "runtime Secret {} withheld: pods outside the rules already reference it (see condition \
         {UNAUTHORIZED_MOUNTS}); fix or remove them",
        runtime_secret::name(&connection.name_any())
    )
}

/// What the drift half of a plan decides.
pub(super) struct DriftPlan {
    pub(super) condition: Option<Desired>,
    pub(super) listed: Vec<UnauthorizedPod>,
    pub(super) evictions: Vec<Eviction>,
}

pub(super) fn plan(connection: &AmazonSellerConnection, found: &[FoundPod]) -> DriftPlan {
    let policy = connection.spec.on_unauthorized_mount;
    let had_condition = connection
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.type_ == UNAUTHORIZED_MOUNTS);
    let condition = if found.is_empty() {
        had_condition.then(|| {
            Desired::new(
                UNAUTHORIZED_MOUNTS,
                Status::False,
                "AllPodsAuthorized",
                "no pod references this connection's Secrets outside the rules",
            )
        })
    } else {
        Some(Desired::new(
            UNAUTHORIZED_MOUNTS,
            Status::True,
            "PodsOutsideRules",
            summary(found, policy),
        ))
    };
    let listed = found
        .iter()
        .take(LISTED_PODS)
        .map(|pod| UnauthorizedPod {
            name: pod.name.clone(),
            reason: pod.violation().as_str().to_owned(),
        })
        .collect();
    let evictions = match policy {
        OnUnauthorizedMount::Report => Vec::new(),
        OnUnauthorizedMount::Evict => found
            .iter()
            .filter(|pod| !pod.terminating)
            .map(|pod| Eviction {
                pod: pod.name.clone(),
                uid: pod.uid.clone(),
                gateway: pod.gateway.clone(),
                reason: pod.violation().as_str(),
            })
            .collect(),
    };
    DriftPlan {
        condition,
        listed,
        evictions,
    }
}

/// The condition's message: how many, what is done, and the first pods by name and rule.
fn summary(found: &[FoundPod], policy: OnUnauthorizedMount) -> String {
    let count = match found.len() {
        1 => "1 pod references".to_owned(),
        n => format!("{n} pods reference"),
    };
    let done = match policy {
        OnUnauthorizedMount::Report => "reported",
        OnUnauthorizedMount::Evict => "evicting",
    };
    let mut names: Vec<String> = found
        .iter()
        .take(LISTED_PODS)
        .map(|pod| format!("{} ({})", pod.name, pod.violation().as_str()))
        .collect();
    if found.len() > LISTED_PODS {
        names.push(format!("and {} more", found.len() - LISTED_PODS));
    }
    format!(
        "{count} this connection's Secrets outside the rules ({done}, \
         spec.onUnauthorizedMount: {}): {}",
        policy.as_str(),
        names.join(", ")
    )
}

/// The reports of pods listed in `new` that `old` did not list with the same rule.
pub(super) fn newly_listed(
    connection: &AmazonSellerConnection,
    old: Option<&AmazonSellerConnectionStatus>,
    found: &[FoundPod],
) -> Vec<Report> {
    let before: &[UnauthorizedPod] = old.map_or(&[], |s| s.unauthorized_pods.as_slice());
    let evicting = connection.spec.on_unauthorized_mount == OnUnauthorizedMount::Evict;
    found
        .iter()
        .take(LISTED_PODS)
        .filter(|pod| {
            !before
                .iter()
                .any(|b| b.name == pod.name && b.reason == pod.violation().as_str())
        })
        .map(|pod| {
            let owner = pod
                .owner
                .as_ref()
                .map(|o| format!(" (owned by {o})"))
                .unwrap_or_default();
            let breaches = pod
                .breaches
                .iter()
                .map(|b| b.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let then = if evicting { " (evicting it)" } else { "" };
            Report::UnauthorizedMount(PodReport {
                pod: pod.name.clone(),
                gateway: pod.gateway.clone(),
                reason: pod.violation().as_str(),
                event: EventNote {
                    kind: EventKind::Warning,
                    reason: "UnauthorizedMount",
                    note: shortened(format!(
                        "pod {}{owner} uses this connection's Secrets outside the rules{then}: \
                         {breaches}",
                        pod.name
                    )),
                },
            })
        })
        .collect()
}

/// The API server refuses Event notes over 1 KiB: a long list of broken rules is cut there.
fn shortened(mut note: String) -> String {
    const MAX: usize = 1024;
    if note.len() > MAX {
        let mut end = MAX - "…".len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}
