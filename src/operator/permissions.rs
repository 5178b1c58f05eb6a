//! Every permission `run` needs, assembled from the declarations beside the calls for the
//! features an install turns on. It lives at the top, in the component that starts the others,
//! so the permission vocabulary ([`crate::rbac`]) stays on the ground floor and no component
//! imports another's declarations.
//!
//! The Helm chart's ClusterRole and Roles must grant exactly [`required`]: `tests/rbac.rs`
//! compares the rendered rules with it and runs the operator's whole scenario against a real API
//! server with only those rules, then once more without each rule in turn.

use std::collections::BTreeSet;

use crate::rbac::{Grant, Permission, grants};

/// What an install turns on beyond the controller, which changes the permissions it needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The admission webhook runs (`--webhook-enabled`).
    pub webhook: bool,
    /// It manages its own serving certificate (`--webhook-cert-mode=self-managed`).
    pub self_managed_certificates: bool,
    /// It serves the runtime credential endpoint (`--credential-endpoint-enabled`).
    pub credential_endpoint: bool,
}

impl Features {
    /// Everything on.
    pub const ALL: Self = Self {
        webhook: true,
        self_managed_certificates: true,
        credential_endpoint: true,
    };
}

/// Every permission the operator needs with `features` on, as declared beside the calls (an
/// object may appear in several declarations; [`required_grants`] merges them).
pub fn required(features: Features) -> Vec<Permission> {
    let mut parts = vec![
        crate::controller::RBAC,
        crate::keystore::RBAC,
        super::preflight::RBAC,
        super::lease::RBAC,
        super::keys::RBAC,
    ];
    if features.webhook {
        parts.push(crate::https::cluster::RBAC);
        if features.self_managed_certificates {
            parts.push(crate::https::certs::RBAC);
        }
        if features.credential_endpoint {
            parts.push(crate::https::caller::RBAC);
            parts.push(crate::https::credential::RBAC);
        }
    }
    parts.concat()
}

/// [`required`] as single verbs, for set comparison.
pub fn required_grants(features: Features) -> BTreeSet<Grant> {
    grants(&required(features))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{Names, Scope};

    #[test]
    fn no_wildcards_and_create_is_never_name_restricted() {
        for permission in required(Features::ALL) {
            assert!(!permission.verbs.contains(&"*"), "{permission:?}");
            assert!(
                !permission.resource.contains('*') && permission.group != "*",
                "{permission:?}"
            );
            // The API server authorizes `create` before the object has a name, so a
            // name-restricted create would never be allowed.
            assert!(
                permission.names == Names::Any || !permission.verbs.contains(&"create"),
                "{permission:?}"
            );
        }
    }

    #[test]
    fn secrets_are_never_granted_cluster_wide_outside_the_watched_scope() {
        // Cluster scope holds only cluster-scoped objects: Secrets, Events and connections are
        // reached through the watched namespaces, so a namespace-scoped install grants no
        // cluster-wide access to them.
        for permission in required(Features::ALL) {
            if permission.scope == Scope::Cluster {
                assert!(
                    [
                        "namespaces",
                        "securitylogreviews",
                        "validatingwebhookconfigurations",
                        "mutatingwebhookconfigurations",
                        "tokenreviews"
                    ]
                    .contains(&permission.resource),
                    "{permission:?}"
                );
            }
        }
    }

    #[test]
    fn every_write_outside_the_watched_namespaces_is_narrowed_to_named_objects() {
        // The operator changes cluster-scoped objects, and objects in its own namespace, only
        // by name: its keyring, public key, Lease, certificate Secret and configurations.
        for permission in required(Features::ALL) {
            let writes = permission
                .verbs
                .iter()
                .any(|v| ["update", "patch", "delete"].contains(v));
            if permission.scope != Scope::Watched && writes {
                assert_ne!(permission.names, Names::Any, "{permission:?}");
            }
        }
    }

    #[test]
    fn features_off_need_no_more_permissions() {
        let all = required_grants(Features::ALL);
        let controller_only = required_grants(Features::default());
        let files_mode = required_grants(Features {
            webhook: true,
            self_managed_certificates: false,
            credential_endpoint: false,
        });
        assert!(controller_only.is_subset(&files_mode) && files_mode.is_subset(&all));
        // The webhook's cluster view (namespaces, connections, Secrets) watches nothing the
        // controller does not watch itself; its certificates and the endpoint add rights.
        assert!(files_mode.len() < all.len());
    }
}
