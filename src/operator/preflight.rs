//! Start-up checks: before anything starts, the API server answers, the CRDs are installed and
//! the operator may list what it watches. Each failure is one line naming the fix.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};

use super::RunError;
use super::connect::Source;
use crate::api::review::SecurityLogReview;
use crate::api::{AmazonSellerConnection, GROUP};
use crate::names::{ROLE_RUNTIME_TOKEN, SECRET_ROLE_LABEL};
use crate::rbac::{Permission, Scope};

/// The permissions of [`check`] (see [`crate::rbac`]): one-item lists of connections and
/// runtime Secrets in each watched namespace, and of SecurityLogReviews.
pub const RBAC: &[Permission] = &[
    Permission::new(GROUP, "amazonsellerconnections", &["list"], Scope::Watched),
    Permission::new("", "secrets", &["list"], Scope::Watched),
    Permission::new(GROUP, "securitylogreviews", &["list"], Scope::Cluster),
];

/// A failed start-up API call as the error that names its fix: 403 is missing RBAC.
pub(super) fn classify(what: &str, source: kube::Error) -> RunError {
    match &source {
        kube::Error::Api(status) if status.code == 403 => RunError::Forbidden {
            what: what.to_owned(),
            source,
        },
        _ => RunError::Api {
            what: what.to_owned(),
            source,
        },
    }
}

/// Checks that the API server at `url` (configured by `source`, when known) answers and
/// accepts the client's credentials.
pub async fn reachable(
    client: &Client,
    url: &str,
    source: Option<&Source>,
) -> Result<(), RunError> {
    let source_desc = source.cloned().map(Box::new);
    match client.apiserver_version().await {
        Ok(_) => Ok(()),
        Err(source @ kube::Error::Api(_)) if is_unauthorized(&source) => {
            Err(RunError::Unauthorized {
                url: url.to_owned(),
                source_desc,
                source,
            })
        }
        Err(source) => Err(RunError::Unreachable {
            url: url.to_owned(),
            source_desc,
            source,
        }),
    }
}

fn is_unauthorized(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 401)
}

/// Checks that the API server at `url` answers, the CRDs are installed and the operator may
/// list connections and runtime Secrets in each of `scopes` (`None`: every namespace).
pub async fn check(client: &Client, url: &str, scopes: &[Option<String>]) -> Result<(), RunError> {
    reachable(client, url, None).await?;
    for namespace in scopes {
        let (connections, secrets): (Api<AmazonSellerConnection>, Api<Secret>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let scope = namespace
            .as_deref()
            .map_or("in all namespaces".to_owned(), |ns| {
                format!("in namespace {ns}")
            });
        match connections
            .list_metadata(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RunError::CrdMissing);
            }
            Err(err) => {
                return Err(classify(
                    &format!("list amazonsellerconnections {scope}"),
                    err,
                ));
            }
        }
        secrets
            .list_metadata(
                &ListParams::default()
                    .labels(&format!("{SECRET_ROLE_LABEL}={ROLE_RUNTIME_TOKEN}"))
                    .limit(1),
            )
            .await
            .map_err(|err| classify(&format!("list secrets {scope}"), err))?;
    }
    Api::<SecurityLogReview>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|err| match err {
            kube::Error::Api(status) if status.code == 404 => RunError::CrdMissing,
            err => classify("list securitylogreviews", err),
        })?;
    Ok(())
}
