//! The Kubernetes permissions the operator's own code uses, declared beside the API calls that
//! need them (`RBAC` constants in `controller`, `keystore`, `operator`, `webhook` and
//! `webhook::certs`) and assembled here for the features an install turns on.
//!
//! The Helm chart's ClusterRole and Roles must grant exactly [`required`]: `tests/rbac.rs`
//! compares the rendered rules with it and runs the operator's whole scenario against a real API
//! server as a ServiceAccount bound to nothing but those rules, then once more without each rule
//! in turn. A new API call without a matching declaration therefore fails a test, and so does a
//! declaration (or chart rule) nothing uses.
//!
//! Verbs follow from the calls: server-side apply is `patch` (and `create` when the apply may
//! create the object), `get_opt` is `get`, a watcher or reflector is `list` and `watch`, a
//! finalizer added or removed with a JSON patch is `patch`.

use std::collections::BTreeSet;

/// Where a permission applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Cluster-scoped objects, or every namespace (`Api::all`): a ClusterRole.
    Cluster,
    /// The operator's own namespace only (`--operator-namespace`): a Role there.
    OperatorNamespace,
    /// The namespaces the operator watches for connections: a ClusterRole when it watches all
    /// namespaces (no `--watch-namespace`), otherwise a Role in each watched namespace.
    Watched,
}

/// Which objects of a resource a permission covers. Anything but [`Names::Any`] becomes the
/// rule's `resourceNames`, so the operator cannot touch other objects of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Names {
    /// Every object (required for `create`, and for `list`/`watch` without a name selector).
    Any,
    /// The keyring Secret (`--key-secret`).
    KeySecret,
    /// The public-key ConfigMap ([`crate::api::names::PUBLIC_KEY_CONFIGMAP`]).
    PublicKeyConfigMap,
    /// The leader election Lease (`--lease-name`).
    Lease,
    /// The watched namespaces when `--watch-namespace` is given; every namespace otherwise.
    WatchedNamespaces,
    /// The self-managed webhook certificate Secret (`--webhook-cert-secret`).
    WebhookCertSecret,
    /// The operator's Validating- and MutatingWebhookConfiguration
    /// (`--validating-webhook-configuration`, `--mutating-webhook-configuration`).
    WebhookConfigurations,
}

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

/// One permission the code needs: these verbs on this resource, in this scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where one is meant (`amazonsellerconnections/status`).
    pub resource: &'static str,
    /// Verbs, lowercase as RBAC spells them.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Which objects.
    pub names: Names,
}

impl Permission {
    /// A permission on every object of `resource`.
    pub const fn new(
        group: &'static str,
        resource: &'static str,
        verbs: &'static [&'static str],
        scope: Scope,
    ) -> Self {
        Self {
            group,
            resource,
            verbs,
            scope,
            names: Names::Any,
        }
    }

    /// The same permission restricted to the objects `names` stands for.
    pub const fn named(mut self, names: Names) -> Self {
        self.names = names;
        self
    }
}

/// One granted verb: the unit [`required`] and the chart are compared in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// Where.
    pub scope: Scope,
    /// Which objects.
    pub names: Names,
    /// API group.
    pub group: String,
    /// Resource (with subresource).
    pub resource: String,
    /// Verb.
    pub verb: String,
}

/// Every permission the operator needs with `features` on, as declared beside the calls (an
/// object may appear in several declarations; [`required_grants`] merges them).
pub fn required(features: Features) -> Vec<Permission> {
    let mut parts = vec![
        crate::controller::RBAC,
        crate::keystore::RBAC,
        crate::operator::RBAC,
    ];
    if features.webhook {
        parts.push(crate::webhook::RBAC);
        if features.self_managed_certificates {
            parts.push(crate::webhook::certs::RBAC);
        }
        if features.credential_endpoint {
            parts.push(crate::webhook::credential::RBAC);
        }
    }
    parts.concat()
}

/// [`required`] as single verbs, for set comparison.
pub fn required_grants(features: Features) -> BTreeSet<Grant> {
    grants(&required(features))
}

/// Permissions as single verbs.
pub fn grants(permissions: &[Permission]) -> BTreeSet<Grant> {
    permissions
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(move |verb| Grant {
                scope: p.scope,
                names: p.names,
                group: p.group.to_owned(),
                resource: p.resource.to_owned(),
                verb: (*verb).to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn features_off_need_fewer_permissions() {
        let all = required_grants(Features::ALL);
        let controller_only = required_grants(Features::default());
        let files_mode = required_grants(Features {
            webhook: true,
            self_managed_certificates: false,
            credential_endpoint: false,
        });
        assert!(controller_only.is_subset(&files_mode) && files_mode.is_subset(&all));
        assert!(controller_only.len() < files_mode.len() && files_mode.len() < all.len());
    }
}
