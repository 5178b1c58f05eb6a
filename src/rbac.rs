//! The vocabulary of the Kubernetes permissions the operator's own code uses. Each component
//! declares its `RBAC` beside the API calls that need them (`controller`, `keystore`,
//! `operator::{preflight, lease, keys}`, `https::{cluster, certs, caller, credential}`);
//! `operator::permissions`, at the top, assembles them for the features an install turns on, so
//! every import points down to this module and none comes back up.
//!
//! The Helm chart's ClusterRole and Roles must grant exactly `operator::permissions::required`:
//! `tests/rbac.rs` compares the rendered rules with it and runs the operator's whole scenario
//! against a real API server as a ServiceAccount bound to nothing but those rules, then once more
//! without each rule in turn. A new API call without a matching declaration therefore fails a test, and so does a
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
    /// The public-key ConfigMap ([`crate::names::PUBLIC_KEY_CONFIGMAP`]).
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

/// One granted verb: the unit the code's declarations and the chart are compared in.
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
