//! Who a pod caller is: the bearer token of the request, reviewed by the API server
//! (TokenReview with the operator's audience), the pod the token is bound to (read back, its
//! uid checked), that pod's gateway label and its namespace's Team.
//!
//! Every pod-facing route of the HTTPS server authenticates its callers here, so they all take
//! the same token the same way and refuse with the same reasons. The bearer token is never
//! logged, audited, metered or put in an error.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::names::{CREDENTIAL_ENDPOINT_AUDIENCE, GATEWAY_LABEL, POD_NAME_EXTRA, POD_UID_EXTRA};
use crate::rbac::{Permission, Scope};

/// The permissions of the calls in this module (see [`crate::rbac`]).
pub const RBAC: &[Permission] = &[
    // `authenticate`: a TokenReview of the caller's bearer token (cluster-scoped, create only).
    Permission::new(
        "authentication.k8s.io",
        "tokenreviews",
        &["create"],
        Scope::Cluster,
    ),
    // `gateway`: the pod the token is bound to, read to check its uid and gateway label.
    Permission::new("", "pods", &["get"], Scope::Watched),
];

/// How long one API call may take before the caller is told to come back.
pub const API_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest bearer token accepted (ServiceAccount JWTs are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a caller is not (yet) known. Each variant maps to one HTTP status and one bounded
/// reason; the messages say what to fix and never quote the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No usable `Authorization: Bearer` header.
    #[error(
        "send \"Authorization: Bearer <token>\" with the gateway pod's projected ServiceAccount token (audience connectors.openteam.io)"
    )]
    MissingToken,
    /// The API server did not accept the token for the operator's audience.
    #[error(
        "the bearer token was not accepted (expired, revoked, or not for audience connectors.openteam.io): mount a projected serviceAccountToken with audience connectors.openteam.io and send the current file content"
    )]
    InvalidToken,
    /// The token is not a ServiceAccount's.
    #[error(
        "the token does not belong to a ServiceAccount: use the gateway pod's projected ServiceAccount token"
    )]
    NotServiceAccount,
    /// The ServiceAccount token is not bound to a pod.
    #[error(
        "the ServiceAccount token is not bound to a pod: use a projected serviceAccountToken volume in the gateway pod, not a token Secret or a TokenRequest without a pod"
    )]
    NotBoundToPod,
    /// The bound pod is gone (or was replaced by one with another uid).
    #[error(
        "the pod the token is bound to no longer exists: tokens of deleted pods are not accepted"
    )]
    PodNotFound,
    /// The TokenReview failed or timed out.
    #[error("the operator could not check the token with the API server: retry after Retry-After")]
    ReviewUnavailable,
    /// The TokenReview took too long.
    #[error("the API server did not answer the TokenReview in time: retry after Retry-After")]
    ReviewTimedOut,
    /// The bound pod could not be read.
    #[error("the operator could not read the calling pod: retry after Retry-After")]
    PodUnavailable,
    /// Reading the bound pod took too long.
    #[error("the API server did not answer in time: retry after Retry-After")]
    PodTimedOut,
}

impl CallerError {
    /// Whether the caller must fix its credentials (401) rather than retry later (503).
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            Self::MissingToken
                | Self::InvalidToken
                | Self::NotServiceAccount
                | Self::NotBoundToPod
                | Self::PodNotFound
        )
    }
}

impl crate::error::Categorized for CallerError {
    fn category(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::NotServiceAccount => "not_service_account",
            Self::NotBoundToPod => "not_bound_to_pod",
            Self::PodNotFound => "pod_not_found",
            Self::ReviewUnavailable | Self::ReviewTimedOut => "authentication_unavailable",
            Self::PodUnavailable | Self::PodTimedOut => "api_unavailable",
        }
    }
}

/// A caller the API server vouched for: a ServiceAccount token bound to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub username: String,
    /// The ServiceAccount's (and the bound pod's) namespace.
    pub namespace: String,
    /// The bound pod's name.
    pub pod_name: String,
    /// The bound pod's uid, as the token names it.
    pub pod_uid: String,
}

/// Authenticates pod callers against the API server.
#[derive(Clone)]
pub struct Authenticator {
    client: Client,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Authenticates with `client`'s identity (which needs [`RBAC`]).
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The caller of a request with these headers: its bearer token reviewed with the
    /// operator's audience; the token must be a ServiceAccount token bound to a pod.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Authenticated, CallerError> {
        let bearer = bearer(headers)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(bearer.to_owned()),
                audiences: Some(vec![CREDENTIAL_ENDPOINT_AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed =
            match tokio::time::timeout(API_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
            {
                Ok(Ok(reviewed)) => reviewed,
                Ok(Err(err)) => {
                    // The API error is not logged: nothing in it is needed, and it concerns a
                    // request that carried the bearer token.
                    tracing::warn!(code = api_code(&err), "TokenReview of a caller failed");
                    return Err(CallerError::ReviewUnavailable);
                }
                Err(_) => return Err(CallerError::ReviewTimedOut),
            };
        let status = reviewed.status.unwrap_or_default();
        let audience_ok = status
            .audiences
            .as_ref()
            .is_none_or(|a| a.iter().any(|a| a == CREDENTIAL_ENDPOINT_AUDIENCE));
        if status.authenticated != Some(true) || !audience_ok {
            return Err(CallerError::InvalidToken);
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some(namespace) = service_account_namespace(&username) else {
            return Err(CallerError::NotServiceAccount);
        };
        let extra = user.extra.unwrap_or_default();
        let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
            Some([value]) if !value.is_empty() => Some(value.clone()),
            _ => None,
        };
        let (Some(pod_name), Some(pod_uid)) = (single(POD_NAME_EXTRA), single(POD_UID_EXTRA))
        else {
            return Err(CallerError::NotBoundToPod);
        };
        Ok(Authenticated {
            namespace: namespace.to_owned(),
            username,
            pod_name,
            pod_uid,
        })
    }

    /// The gateway label of the pod `caller`'s token is bound to. The pod must still exist with
    /// the uid the token names.
    pub async fn gateway(&self, caller: &Authenticated) -> Result<Option<String>, CallerError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &caller.namespace);
        match tokio::time::timeout(API_TIMEOUT, api.get_opt(&caller.pod_name)).await {
            Ok(Ok(Some(pod))) if pod.metadata.uid.as_deref() == Some(caller.pod_uid.as_str()) => {
                Ok(pod.labels().get(GATEWAY_LABEL).cloned())
            }
            Ok(Ok(_)) => Err(CallerError::PodNotFound),
            Ok(Err(err)) => {
                tracing::warn!(code = api_code(&err), "cannot read the calling pod: {err}");
                Err(CallerError::PodUnavailable)
            }
            Err(_) => Err(CallerError::PodTimedOut),
        }
    }
}

/// The bearer token of the `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<&str, CallerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(CallerError::MissingToken)?
        .to_str()
        .map_err(|_| CallerError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(CallerError::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_BYTES
        || token.contains(char::is_whitespace)
    {
        return Err(CallerError::MissingToken);
    }
    Ok(token)
}

/// `system:serviceaccount:<namespace>:<name>` → the namespace.
fn service_account_namespace(username: &str) -> Option<&str> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some(namespace)
}

/// The HTTP status of an API error, 0 when there was none.
pub fn api_code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Categorized;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_a_well_formed_bearer_header_is_accepted() {
        assert_eq!(bearer(&headers("Bearer abc.def")).ok(), Some("abc.def"));
        assert_eq!(bearer(&headers("bearer abc")).ok(), Some("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc"] {
            let failure = bearer(&headers(bad)).err().unwrap();
            assert!(failure.is_unauthenticated());
            assert_eq!(failure.category(), "missing_token");
        }
        assert!(bearer(&HeaderMap::new()).is_err());
    }

    #[test]
    fn service_account_names_are_parsed_strictly() {
        assert_eq!(
            service_account_namespace("system:serviceaccount:team-acme:gw"),
            Some("team-acme")
        );
        for other in [
            "alice",
            "system:serviceaccount:team-acme",
            "system:serviceaccount::gw",
            "system:serviceaccount:ns:a:b",
            "system:node:x",
        ] {
            assert_eq!(service_account_namespace(other), None, "{other}");
        }
    }

    #[test]
    fn messages_name_the_audience_the_code_checks() {
        // The messages spell the audience out (a `&'static str` error); they must not drift
        // from the constant the TokenReview uses.
        for err in [CallerError::MissingToken, CallerError::InvalidToken] {
            assert!(
                err.to_string().contains(CREDENTIAL_ENDPOINT_AUDIENCE),
                "{err}"
            );
        }
    }
}
