//! The status a plan stores: conditions merged with the stored ones (keeping
//! `lastTransitionTime` when a status did not change), the derived fields, what LWA's answers
//! are called, and the transitions (connected, suspended, resumed) that are reported.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::ResourceExt;

use super::intent::{Intent, audit, credentials_valid, event};
use super::{EventKind, Report};
use crate::api::{AmazonSellerConnection, AmazonSellerConnectionStatus};
use crate::domain::conditions::{
    self, CREDENTIALS_VALID, Desired, Observed, READY, SUSPENDED, Status,
};
use crate::domain::credential_access::Delivery;
use crate::domain::marketplace;
use crate::lwa::{OAuthErrorCode, TerminalCause};
use crate::observability::audit::{Category, Outcome};
use crate::secrets::runtime_secret::{self, whole_seconds};

/// How LWA's rejection of a connection's credentials is reported: the `Ready` and
/// `CredentialsValid` reason, and what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsRejection {
    /// `invalid_grant`: the refresh token is revoked or expired.
    RefreshTokenRevoked,
    /// `invalid_client`: the client id or secret is wrong or expired.
    ClientAuthenticationFailed,
    /// `unauthorized_client`: the application may not use this grant.
    ClientUnauthorized,
    /// Any other terminal answer, or a request that could not be made.
    CredentialsRejected,
}

impl CredentialsRejection {
    /// The rejection a terminal refresh failure is reported as.
    pub fn of(cause: TerminalCause) -> Self {
        match cause {
            TerminalCause::Rejected(OAuthErrorCode::InvalidGrant) => Self::RefreshTokenRevoked,
            TerminalCause::Rejected(OAuthErrorCode::InvalidClient) => {
                Self::ClientAuthenticationFailed
            }
            TerminalCause::Rejected(OAuthErrorCode::UnauthorizedClient) => Self::ClientUnauthorized,
            TerminalCause::Rejected(
                OAuthErrorCode::InvalidRequest
                | OAuthErrorCode::InvalidScope
                | OAuthErrorCode::UnsupportedGrantType
                | OAuthErrorCode::ServerError
                | OAuthErrorCode::TemporarilyUnavailable
                | OAuthErrorCode::Other,
            )
            | TerminalCause::IncompleteCredentials
            | TerminalCause::ClientConfig => Self::CredentialsRejected,
        }
    }

    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::RefreshTokenRevoked => "RefreshTokenRevoked",
            Self::ClientAuthenticationFailed => "ClientAuthenticationFailed",
            Self::ClientUnauthorized => "ClientUnauthorized",
            Self::CredentialsRejected => "CredentialsRejected",
        }
    }

    /// What the Team should do, for the condition message and the Event.
    pub fn advice(self) -> &'static str {
        match self {
            Self::RefreshTokenRevoked => {
                "the seller must re-authorize the application and the credentials be sealed again"
            }
            Self::ClientAuthenticationFailed => {
                "the LWA client id or secret is wrong or expired: seal the current client secret"
            }
            Self::ClientUnauthorized => "the LWA application is not authorized for this grant",
            Self::CredentialsRejected => "LWA rejected the request: check the sealed credentials",
        }
    }
}

/// What LWA last said about the credentials, as the `CredentialsValid` condition records it:
/// read back from the stored status while a reconcile learns nothing new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LwaVerdict {
    /// LWA issued a token for them.
    Accepted,
    /// LWA rejected them.
    Rejected(CredentialsRejection),
}

impl LwaVerdict {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Rejected(rejection) => rejection.reason(),
        }
    }

    /// The verdict a stored condition reason records; `None` for reasons that are not an
    /// answer from LWA (`NotYetChecked`, `CredentialsMissing`, …).
    pub fn parse(reason: &str) -> Option<Self> {
        [
            Self::Accepted,
            Self::Rejected(CredentialsRejection::RefreshTokenRevoked),
            Self::Rejected(CredentialsRejection::ClientAuthenticationFailed),
            Self::Rejected(CredentialsRejection::ClientUnauthorized),
            Self::Rejected(CredentialsRejection::CredentialsRejected),
        ]
        .into_iter()
        .find(|verdict| verdict.reason() == reason)
    }
}

/// The stored CredentialsValid condition, or Unknown: used while nothing new was learned.
pub(super) fn observed_credentials_condition(connection: &AmazonSellerConnection) -> Desired {
    connection
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CREDENTIALS_VALID))
        .and_then(|c| {
            let verdict = LwaVerdict::parse(&c.reason)?;
            Some(credentials_valid(
                Status::parse(&c.status),
                verdict.reason(),
                c.message.clone(),
            ))
        })
        .unwrap_or_else(|| {
            credentials_valid(Status::Unknown, "NotYetChecked", "no answer from LWA yet")
        })
}

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
