//! The conditions a plan writes: their constructors, and what LWA's answers are called in
//! them (the reasons of `Ready` and `CredentialsValid`), read back from a stored status while a
//! reconcile learns nothing new.

use crate::api::AmazonSellerConnection;
use crate::domain::conditions::{CREDENTIALS_VALID, Desired, READY, SUSPENDED, Status};
use crate::lwa::{OAuthErrorCode, TerminalCause};
use crate::secrets::runtime_secret::{Published, whole_seconds};

pub(super) fn ready(status: Status, reason: &'static str, message: impl Into<String>) -> Desired {
    Desired::new(READY, status, reason, message)
}

pub(super) fn credentials_valid(
    status: Status,
    reason: &'static str,
    message: impl Into<String>,
) -> Desired {
    Desired::new(CREDENTIALS_VALID, status, reason, message)
}

pub(super) fn not_suspended() -> Desired {
    Desired::new(
        SUSPENDED,
        Status::False,
        "Active",
        "the connection is active",
    )
}

pub(super) fn serving(token: &Published) -> Desired {
    ready(
        Status::True,
        "TokenPublished",
        format!(
            "access token published, valid until {}",
            whole_seconds(token.expires_at)
        ),
    )
}

pub(super) fn accepted() -> Desired {
    credentials_valid(
        Status::True,
        LwaVerdict::Accepted.reason(),
        "LWA accepted the credentials",
    )
}

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
