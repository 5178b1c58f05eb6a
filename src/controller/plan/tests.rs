//! Tests of the plan's pure rules.

use super::*;
use crate::error::Categorized;
use crate::lwa::OAuthErrorCode;

#[test]
fn each_terminal_cause_has_the_reason_and_category_it_always_had() {
    let cases = [
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidGrant),
            "RefreshTokenRevoked",
            "invalid_grant",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidClient),
            "ClientAuthenticationFailed",
            "invalid_client",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::UnauthorizedClient),
            "ClientUnauthorized",
            "unauthorized_client",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidRequest),
            "CredentialsRejected",
            "invalid_request",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::InvalidScope),
            "CredentialsRejected",
            "invalid_scope",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::UnsupportedGrantType),
            "CredentialsRejected",
            "unsupported_grant_type",
        ),
        (
            TerminalCause::Rejected(OAuthErrorCode::Other),
            "CredentialsRejected",
            "client_error",
        ),
        (
            TerminalCause::IncompleteCredentials,
            "CredentialsRejected",
            "incomplete_credentials",
        ),
        (TerminalCause::ClientConfig, "CredentialsRejected", "config"),
    ];
    for (cause, reason, category) in cases {
        assert_eq!(CredentialsRejection::of(cause).reason(), reason, "{cause}");
        assert_eq!(RefreshError::Terminal { cause }.category(), category);
    }
}

#[test]
fn a_stored_verdict_reads_back_and_other_reasons_do_not() {
    for reason in [
        "Accepted",
        "RefreshTokenRevoked",
        "ClientAuthenticationFailed",
        "ClientUnauthorized",
        "CredentialsRejected",
    ] {
        assert_eq!(
            LwaVerdict::parse(reason).map(LwaVerdict::reason),
            Some(reason)
        );
    }
    for reason in [
        "NotYetChecked",
        "CredentialsMissing",
        "Suspended",
        "accepted",
        "",
    ] {
        assert_eq!(LwaVerdict::parse(reason), None, "{reason}");
    }
}
