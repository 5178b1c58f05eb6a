//! One admission review: parse the `AdmissionReview` v1, convert the object into the domain's
//! views, decide with [`crate::domain::admission`], meter and audit the decision, and answer.
//!
//! Nothing here logs a request or a response: a review can carry plaintext intake credentials
//! or a runtime token. Malformed reviews get an `invalid` answer whose message is one of a few
//! fixed phrases (serde's messages can quote the input), never a panic.

mod answer;
pub mod configuration;
mod parse;
pub mod views;
mod workload;

use std::sync::{Arc, RwLock};

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::response::{Status, StatusSummary};

use super::cluster::Cluster;
use crate::api::GROUP;
use crate::crypto::Keyring;
use crate::domain::admission::{
    self, Concern, ConnectionRequest, Decision, Lookup, NamespaceRequest, Operation, Phase,
    PodRequest, Policy, Reason, Requester, ReviewRequest, SecretRequest, Subject,
};
use crate::error::Categorized;
use crate::names::TEAM_LABEL;
use crate::observability::audit::{AuditEvent, AuditLog, Category, Outcome};
use crate::observability::metrics::{AccessOutcome, AdmissionDecision, Metrics};
use answer::Verdict;
use parse::{Objects, Request, parse};
use views::gateway_label;
use workload::template_changed;

pub use views::{json_patch, pod_view, secret_view, template_view};
pub use workload::Workload;

/// Which webhook a review came in on (its path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    /// `POST /validate`: the final decision on what will be stored.
    Validate,
    /// `POST /mutate`: seals intake Secrets.
    Mutate,
}

/// Everything a review needs; shared by all requests.
pub struct Reviewer {
    policy: Policy,
    cluster: Arc<dyn Cluster>,
    keyring: Arc<RwLock<Keyring>>,
    metrics: Metrics,
    audit: AuditLog,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The resource a review is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connection,
    Review,
    Secret,
    Pod,
    PodEphemeralContainers,
    /// A workload with a pod template.
    Workload(Workload),
    Namespace,
    Other,
}

impl Kind {
    fn of(group: &str, resource: &str, sub_resource: Option<&str>) -> Self {
        let sub = sub_resource.filter(|s| !s.is_empty());
        match (group, resource, sub) {
            (GROUP, "amazonsellerconnections", None) => Kind::Connection,
            (GROUP, "securitylogreviews", None) => Kind::Review,
            ("", "secrets", None) => Kind::Secret,
            ("", "pods", None) => Kind::Pod,
            ("", "pods", Some("ephemeralcontainers")) => Kind::PodEphemeralContainers,
            ("", "namespaces", None) => Kind::Namespace,
            (group, resource, None) => {
                Workload::of(group, resource).map_or(Kind::Other, Kind::Workload)
            }
            _ => Kind::Other,
        }
    }

    /// The `resource` metric label.
    fn label(self) -> &'static str {
        match self {
            Kind::Connection => "amazonsellerconnections",
            Kind::Review => "securitylogreviews",
            Kind::Secret => "secrets",
            Kind::Pod => "pods",
            Kind::PodEphemeralContainers => "pods_ephemeralcontainers",
            Kind::Workload(workload) => workload.resource(),
            Kind::Namespace => "namespaces",
            Kind::Other => "other",
        }
    }

    /// The audit action.
    fn action(self, operation: Operation) -> &'static str {
        use Operation::{Connect, Create, Delete, Update};
        match (self, operation) {
            (Kind::Connection, Create) => "connection_create",
            (Kind::Connection, Update) => "connection_update",
            (Kind::Connection, Delete) => "connection_delete",
            (Kind::Secret, Create) => "secret_create",
            (Kind::Secret, Update) => "secret_update",
            (Kind::Secret, Delete) => "secret_delete",
            (Kind::Pod, Create) => "pod_create",
            (Kind::Pod, Update) => "pod_update",
            (Kind::PodEphemeralContainers, _) => "pod_ephemeral_containers",
            (Kind::Workload(workload), _) => workload.action(operation),
            (Kind::Namespace, Create) => "namespace_create",
            (Kind::Namespace, Update) => "namespace_update",
            (Kind::Review, Create) => "review_create",
            (Kind::Review, Update) => "review_update",
            (Kind::Review, Delete) => "review_delete",
            (_, Connect) | (Kind::Other, _) | (Kind::Pod | Kind::Namespace, Delete) => {
                "admission_review"
            }
        }
    }

    /// Whether the rules read the cluster view.
    fn needs_cluster(self) -> bool {
        matches!(
            self,
            Kind::Connection
                | Kind::Secret
                | Kind::Pod
                | Kind::PodEphemeralContainers
                | Kind::Workload(_)
        )
    }
}

fn not_ready() -> Decision {
    Decision {
        allowed: false,
        reason: Reason::NotReady,
        message: "the webhook has not synced its view of the cluster yet: retry in a few seconds"
            .to_owned(),
        warnings: Vec::new(),
        patch: None,
        concern: Concern::Unrelated,
        subject: Subject::default(),
    }
}

fn unrelated() -> Decision {
    Decision {
        allowed: true,
        reason: Reason::Unrelated,
        message: String::new(),
        warnings: Vec::new(),
        patch: None,
        concern: Concern::Unrelated,
        subject: Subject::default(),
    }
}

impl Reviewer {
    /// Reviews with `policy`, reading `cluster`, sealing to the active key of `keyring`.
    pub fn new(
        policy: Policy,
        cluster: Arc<dyn Cluster>,
        keyring: Arc<RwLock<Keyring>>,
        metrics: Metrics,
        audit: AuditLog,
    ) -> Self {
        Self {
            policy,
            cluster,
            keyring,
            metrics,
            audit,
        }
    }

    /// Whether reviews that read the cluster view can be decided.
    pub fn is_ready(&self) -> bool {
        self.cluster.is_ready()
    }

    /// Answers one `AdmissionReview` body, serialized. Never fails: a malformed review gets an
    /// `invalid` answer.
    pub async fn review_json(&self, webhook: Webhook, body: &[u8]) -> Vec<u8> {
        match self.reviewed(webhook, body).await {
            // The same bytes as `respond`'s review serialized, without building it.
            Reviewed::Decided(request, decision) => answer::write(&Verdict::of(&request, &decision)),
            Reviewed::Invalid(response) => serde_json::to_vec(&response.into_review())
                .unwrap_or_else(|_| {
                    // Not expected: the answer is plain data. Still answer, and fail closed.
                    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false,"status":{"code":500,"message":"internal error"}}}"#.to_vec()
                }),
        }
    }

    /// Answers one `AdmissionReview` body.
    pub async fn review(&self, webhook: Webhook, body: &[u8]) -> AdmissionReview<DynamicObject> {
        match self.reviewed(webhook, body).await {
            Reviewed::Decided(request, decision) => respond(&Verdict::of(&request, &decision)),
            Reviewed::Invalid(response) => response.into_review(),
        }
    }

    /// Reads, decides, meters and audits one review.
    async fn reviewed<'a>(&self, webhook: Webhook, body: &'a [u8]) -> Reviewed<'a> {
        let request = match parse(body) {
            Ok(request) => request,
            Err(malformed) => {
                self.metrics.record_admission(
                    "unknown",
                    "unknown",
                    AdmissionDecision::Invalid,
                    Reason::MalformedRequest.as_str(),
                );
                tracing::warn!(problem = malformed.why, "malformed admission review");
                let mut response = AdmissionResponse::invalid(format!(
                    "malformed AdmissionReview: {}",
                    malformed.why
                ));
                response.result.code = 400;
                if let Some(uid) = malformed.uid {
                    response.uid = uid;
                }
                return Reviewed::Invalid(response);
            }
        };
        let (request, objects) = request;
        let kind = request.kind;
        let op = request.operation;
        let decision = match self.decide(webhook, kind, op, &request, objects).await {
            Ok(decision) => decision,
            Err(why) => {
                self.metrics.record_admission(
                    kind.label(),
                    op.as_str(),
                    AdmissionDecision::Invalid,
                    Reason::MalformedObject.as_str(),
                );
                tracing::warn!(uid = %request.uid, resource = kind.label(), problem = why, "malformed object in admission review");
                let mut response = AdmissionResponse::invalid(why);
                response.result.code = 400;
                response.uid = request.uid.into_owned();
                return Reviewed::Invalid(response);
            }
        };
        self.record(kind, op, &request, &decision);
        Reviewed::Decided(request, decision)
    }

    async fn decide(
        &self,
        webhook: Webhook,
        kind: Kind,
        op: Operation,
        request: &Request<'_>,
        objects: Objects,
    ) -> Result<Decision, &'static str> {
        let groups = request.user_info.groups.as_deref().unwrap_or_default();
        let requester = Requester {
            username: request.user_info.username.as_deref().unwrap_or_default(),
            groups,
        };
        // Only intake Secrets are ever mutated.
        if webhook == Webhook::Mutate && kind != Kind::Secret {
            return Ok(unrelated());
        }
        let namespace = request.namespace.as_deref().unwrap_or_default();
        if kind.needs_cluster() && namespace.is_empty() {
            // Namespaced kinds always come with one; judging without it could only guess.
            return Err("the request has no namespace");
        }
        if kind.needs_cluster() {
            if !self.cluster.is_ready() {
                return Ok(not_ready());
            }
            self.cluster.prepare(namespace).await;
        }
        let lookup: &dyn Lookup = &*self.cluster;
        match kind {
            Kind::Connection => {
                let (object, old) = objects.connections()?;
                let name = object
                    .as_ref()
                    .or(old.as_ref())
                    .and_then(|c| c.metadata.name.as_deref())
                    .unwrap_or(&request.name);
                let spec_changed = match (&object, &old) {
                    (Some(new), Some(old)) => new.spec != old.spec,
                    _ => true,
                };
                Ok(admission::admit_connection(
                    &self.policy,
                    lookup,
                    &ConnectionRequest {
                        namespace,
                        name,
                        operation: op,
                        requester,
                        object: object.as_ref().map(|c| c.spec.view(name)),
                        old: old.as_ref().map(|c| c.spec.view(name)),
                        spec_changed,
                    },
                ))
            }
            Kind::Secret => {
                let (object, old) = objects.secrets()?;
                let secret_request = SecretRequest {
                    namespace,
                    operation: op,
                    requester,
                    object: object.as_ref().map(secret_view),
                    old: old.as_ref().map(secret_view),
                };
                let keyring = self
                    .keyring
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(match webhook {
                    Webhook::Mutate => {
                        let key = keyring.active().public_key();
                        drop(keyring);
                        admission::admit_secret(
                            &self.policy,
                            lookup,
                            &secret_request,
                            Phase::Mutate(&key),
                        )
                    }
                    Webhook::Validate => {
                        let key_ids: Vec<String> =
                            keyring.keys().iter().map(|k| k.id().to_owned()).collect();
                        drop(keyring);
                        admission::admit_secret(
                            &self.policy,
                            lookup,
                            &secret_request,
                            Phase::Validate { key_ids: &key_ids },
                        )
                    }
                })
            }
            Kind::Pod | Kind::PodEphemeralContainers => {
                let (pod, old) = objects.pods()?;
                let Some(pod) = pod else {
                    return Ok(unrelated());
                };
                let spec_changed = old.as_ref().is_none_or(|old| {
                    old.spec != pod.spec
                        || gateway_label(&old.metadata) != gateway_label(&pod.metadata)
                });
                let view = pod_view(&pod);
                Ok(admission::admit_pod(
                    &self.policy,
                    lookup,
                    &PodRequest {
                        namespace,
                        operation: op,
                        requester,
                        pod: &view,
                        spec_changed,
                    },
                ))
            }
            Kind::Workload(workload) => {
                // Only the general reader reads workloads: their objects are untyped.
                let (object, old) = objects.dynamic();
                let Some(object) = object else {
                    return Ok(unrelated());
                };
                let template = workload
                    .template(object)
                    .ok_or("the object has no valid pod template")?;
                let old_template = match old {
                    Some(old) => Some(
                        workload
                            .template(old)
                            .ok_or("the old object has no valid pod template")?,
                    ),
                    None => None,
                };
                let view = workload.view(object, &template);
                Ok(admission::admit_pod(
                    &self.policy,
                    lookup,
                    &PodRequest {
                        namespace,
                        operation: op,
                        requester,
                        pod: &view,
                        spec_changed: template_changed(old_template.as_ref(), &template),
                    },
                ))
            }
            Kind::Namespace => {
                let team = |o: Option<&DynamicObject>| {
                    o.and_then(|o| o.metadata.labels.as_ref())
                        .and_then(|l| l.get(TEAM_LABEL).cloned())
                };
                let (object, old) = objects.dynamic();
                let (new_team, old_team) = (team(object), team(old));
                Ok(admission::admit_namespace(
                    &self.policy,
                    &NamespaceRequest {
                        name: &request.name,
                        operation: op,
                        requester,
                        team: new_team.as_deref(),
                        old_team: old_team.as_deref(),
                    },
                ))
            }
            Kind::Review => {
                let reviewer = objects
                    .dynamic()
                    .0
                    .and_then(|o| o.data.get("spec")?.get("reviewer")?.as_str());
                Ok(admission::admit_review(
                    &self.policy,
                    &ReviewRequest {
                        operation: op,
                        requester,
                        reviewer,
                    },
                ))
            }
            Kind::Other => Ok(unrelated()),
        }
    }

    /// Meters every decision; audits those about the operator's concerns. Identifiers only.
    fn record(&self, kind: Kind, op: Operation, request: &Request<'_>, decision: &Decision) {
        let (metric, outcome, access) = if decision.allowed {
            (
                AdmissionDecision::Allowed,
                Outcome::Allowed,
                AccessOutcome::Allowed,
            )
        } else {
            (
                AdmissionDecision::Denied,
                Outcome::Denied,
                AccessOutcome::Denied,
            )
        };
        self.metrics
            .record_admission(kind.label(), op.as_str(), metric, decision.reason.as_str());
        let subject = &decision.subject;
        if subject.runtime_access {
            self.metrics.record_credential_access(
                subject.team.as_deref().unwrap_or("none"),
                subject.gateway.as_deref().unwrap_or("none"),
                access,
            );
        }
        tracing::debug!(
            uid = %request.uid,
            resource = kind.label(),
            operation = op.as_str(),
            allowed = decision.allowed,
            reason = decision.reason.as_str(),
            "admission decision"
        );
        let category = match decision.concern {
            Concern::Identity => Category::Authentication,
            Concern::Gateway => Category::GatewayActivity,
            Concern::Setup => Category::ConnectorSetup,
            Concern::Unrelated => return,
        };
        let mut event = AuditEvent::new(category, kind.action(op), outcome)
            .actor(request.user_info.username.as_deref().unwrap_or("unknown"))
            .reason(decision.reason.as_str());
        if let Some(namespace) = request.namespace.as_deref() {
            event = event.namespace(namespace);
        }
        if let Some(team) = subject.team.as_deref() {
            event = event.team(team);
        }
        if let Some(connection) = subject.connection.as_deref() {
            event = event.connection(connection);
        }
        if let Some(gateway) = subject.gateway.as_deref() {
            event = event.gateway(gateway);
        }
        if let Err(err) = self.audit.record(event) {
            tracing::error!(
                reason = err.category(),
                "failed to write an audit record: {err}"
            );
        }
    }
}

/// A review read and judged.
enum Reviewed<'a> {
    /// Malformed: kube's `invalid` answer.
    Invalid(AdmissionResponse),
    /// Decided (and already metered and audited).
    Decided(Request<'a>, Decision),
}

impl<'a> Verdict<'a> {
    fn of(request: &'a Request<'_>, decision: &'a Decision) -> Self {
        Verdict {
            uid: &request.uid,
            allowed: decision.allowed,
            reason: decision.reason.as_str(),
            message: &decision.message,
            warnings: &decision.warnings,
            patch: decision.patch.as_ref(),
        }
    }
}

/// An answer that allows the request `uid`, as kube's `AdmissionResponse::from` a request
/// builds it (the request's types are always the v1 AdmissionReview's here).
fn response_for(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::default();
    response
}

fn respond(verdict: &Verdict<'_>) -> AdmissionReview<DynamicObject> {
    let mut response = response_for(verdict.uid);
    // The API server records this in its own audit log as `<webhook name>/reason`.
    response
        .audit_annotations
        .insert("reason".to_owned(), verdict.reason.to_owned());
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.to_vec());
    }
    if !verdict.allowed {
        response = response.deny(verdict.message);
        response.result.status = Some(StatusSummary::Failure);
        response.result.code = 403;
        response.result.reason = "Forbidden".to_owned();
        return response.into_review();
    }
    if let Some(mutation) = verdict.patch {
        response = match response.with_patch(json_patch(mutation)) {
            Ok(patched) => patched,
            Err(_) => {
                let mut denied = response_for(verdict.uid)
                    .deny("the webhook could not encode its patch; nothing was stored");
                denied.result.code = 500;
                denied
            }
        };
    }
    response.into_review()
}
