//! The runtime credential endpoint's access rule: may this authenticated caller (a ServiceAccount
//! token bound to a pod) have this connection's access token?
//!
//! Plain types in, an [`Access`] out. The HTTP layer (`https::credential`) authenticates the
//! caller with a TokenReview, reads the bound pod and the connection, and converts them into
//! the views below; every rule is tested here without a cluster.
//!
//! The order of the checks is part of the rule: a caller from another namespace is refused
//! before the connection is looked at, so an outsider learns nothing about which connections
//! exist (403 whether or not it does); only a caller in the connection's namespace can tell an
//! unknown connection (404) from a refused one (403).

use std::fmt;

use schemars::JsonSchema;

use crate::names::GATEWAY_LABEL;

/// How a connection delivers its access token to gateways (`spec.delivery`; the CRD field's
/// own type, which is why it derives the schema).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, JsonSchema,
)]
pub enum Delivery {
    /// The runtime Secret `<name>-sp-api`, mounted by listed gateway pods.
    #[default]
    Secret,
    /// Only the runtime credential endpoint; no runtime Secret is written.
    Endpoint,
    /// The runtime Secret and the runtime credential endpoint.
    Both,
}

impl Delivery {
    /// Whether the runtime Secret `<connection>-sp-api` is written.
    pub fn writes_runtime_secret(self) -> bool {
        matches!(self, Delivery::Secret | Delivery::Both)
    }

    /// Whether the endpoint serves the token (and the sealed token store is kept).
    pub fn serves_endpoint(self) -> bool {
        matches!(self, Delivery::Endpoint | Delivery::Both)
    }

    /// The value as `spec.delivery` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Secret => "Secret",
            Delivery::Endpoint => "Endpoint",
            Delivery::Both => "Both",
        }
    }
}

/// The caller, as the TokenReview and the bound pod show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The ServiceAccount's namespace (also the bound pod's namespace).
    pub namespace: String,
    /// The bound pod's `connectors.openteam.io/gateway` label.
    pub gateway: Option<String>,
}

/// A connection as the rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// `spec.teamId`.
    pub team_id: String,
    /// `spec.gateways`.
    pub gateways: Vec<String>,
    /// `spec.suspended`.
    pub suspended: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `spec.delivery`.
    pub delivery: Delivery,
}

/// A request for connection `name` in `namespace`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The path's namespace.
    pub namespace: &'a str,
    /// The path's connection name.
    pub name: &'a str,
    /// The caller.
    pub caller: &'a Caller,
    /// The Team label of the path's namespace, if it has one.
    pub namespace_team: Option<&'a str>,
    /// The connection, when it exists.
    pub connection: Option<&'a ConnectionView>,
    /// Whether this operator manages connections in `namespace` (`--watch-namespace`).
    pub watched: bool,
}

/// Why access was refused. Each is a bounded word for the audit log (`reason`) and the error
/// body, and says which rule failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's pod is in another namespace (another Team's, or no Team's): 403.
    OtherNamespace,
    /// The namespace is not one this operator manages: 403.
    NotWatched,
    /// No such connection in the caller's own namespace: 404.
    UnknownConnection,
    /// The connection's Team is not the namespace's Team: 403.
    OtherTeam,
    /// The connection is being deleted: 403.
    Deleting,
    /// The caller's pod has no gateway label: 403.
    MissingGatewayLabel,
    /// The caller's gateway is not in `spec.gateways`: 403.
    GatewayNotListed,
    /// The connection is suspended: 403.
    Suspended,
    /// `spec.delivery` is `Secret`: the endpoint does not serve this connection: 403.
    Delivery,
}

impl Refusal {
    /// The bounded reason word.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::OtherNamespace => "namespace",
            Refusal::NotWatched => "namespace_not_watched",
            Refusal::UnknownConnection => "unknown_connection",
            Refusal::OtherTeam => "team",
            Refusal::Deleting => "deleting",
            Refusal::MissingGatewayLabel => "missing_gateway_label",
            Refusal::GatewayNotListed => "gateway_not_listed",
            Refusal::Suspended => "suspended",
            Refusal::Delivery => "delivery",
        }
    }

    /// The HTTP status: 404 for an unknown connection (told only to callers in its
    /// namespace), 403 for everything else.
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnknownConnection => 404,
            _ => 403,
        }
    }
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The caller may have the token.
    Allowed,
    /// Refused; `message` names the rule and the fix, never a secret.
    Refused {
        /// Which rule.
        refusal: Refusal,
        /// What failed and how to fix it.
        message: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

fn refused(refusal: Refusal, message: String) -> Access {
    Access::Refused { refusal, message }
}

/// Decides whether the caller may have the connection's access token.
pub fn decide(request: &Request<'_>) -> Access {
    let caller = request.caller;
    if caller.namespace != request.namespace {
        return refused(
            Refusal::OtherNamespace,
            format!(
                "the calling pod runs in namespace {:?}: only gateway pods in namespace {:?} may \
                 request its connections' tokens",
                caller.namespace, request.namespace
            ),
        );
    }
    if !request.watched {
        return refused(
            Refusal::NotWatched,
            format!(
                "namespace {:?} is not managed by this operator (--watch-namespace): ask the \
                 platform team to add it",
                request.namespace
            ),
        );
    }
    let Some(connection) = request.connection else {
        return refused(
            Refusal::UnknownConnection,
            format!(
                "no AmazonSellerConnection {:?} in namespace {:?}: check the name in the URL",
                request.name, request.namespace
            ),
        );
    };
    if request.namespace_team != Some(connection.team_id.as_str()) {
        return refused(
            Refusal::OtherTeam,
            format!(
                "connection {:?} belongs to team {:?} but namespace {:?} is {}: an admin must \
                 label the namespace for that team",
                request.name,
                connection.team_id,
                request.namespace,
                request
                    .namespace_team
                    .map_or("not bound to a team".to_owned(), |t| format!("team {t:?}"))
            ),
        );
    }
    if connection.deleting {
        return refused(
            Refusal::Deleting,
            format!("connection {:?} is being deleted", request.name),
        );
    }
    let listed = connection.gateways.join(", ");
    let Some(gateway) = caller.gateway.as_deref() else {
        return refused(
            Refusal::MissingGatewayLabel,
            format!(
                "the calling pod has no label {GATEWAY_LABEL}: label it with a gateway listed in \
                 connection {:?} spec.gateways ({listed})",
                request.name
            ),
        );
    };
    if !connection.gateways.iter().any(|g| g == gateway) {
        return refused(
            Refusal::GatewayNotListed,
            format!(
                "gateway {gateway:?} is not listed in connection {:?} spec.gateways ({listed}): \
                 add it there, or call from a listed gateway's pod",
                request.name
            ),
        );
    }
    if connection.suspended {
        return refused(
            Refusal::Suspended,
            format!(
                "connection {:?} is suspended (spec.suspended: true): no token is served until \
                 it is resumed",
                request.name
            ),
        );
    }
    if !connection.delivery.serves_endpoint() {
        return refused(
            Refusal::Delivery,
            format!(
                "connection {:?} has spec.delivery {}: set it to Endpoint or Both to use this \
                 endpoint, or mount the runtime Secret",
                request.name,
                connection.delivery.as_str()
            ),
        );
    }
    Access::Allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(namespace: &str, gateway: Option<&str>) -> Caller {
        Caller {
            namespace: namespace.into(),
            gateway: gateway.map(str::to_owned),
        }
    }

    fn connection() -> ConnectionView {
        ConnectionView {
            team_id: "acme".into(),
            gateways: vec!["gw-main".into(), "gw-batch".into()],
            suspended: false,
            deleting: false,
            delivery: Delivery::Endpoint,
        }
    }

    fn decide_for(caller: &Caller, connection: Option<&ConnectionView>) -> Access {
        decide(&Request {
            namespace: "team-acme",
            name: "acme-us",
            caller,
            namespace_team: Some("acme"),
            connection,
            watched: true,
        })
    }

    fn refusal(access: Access) -> Refusal {
        match access {
            Access::Refused { refusal, message } => {
                assert!(!message.is_empty());
                refusal
            }
            Access::Allowed => panic!("expected a refusal"),
        }
    }

    #[test]
    fn a_listed_gateway_in_the_namespace_is_allowed_in_endpoint_and_both_modes() {
        let me = caller("team-acme", Some("gw-batch"));
        for delivery in [Delivery::Endpoint, Delivery::Both] {
            let c = ConnectionView {
                delivery,
                ..connection()
            };
            assert_eq!(decide_for(&me, Some(&c)), Access::Allowed);
        }
    }

    #[test]
    fn a_pod_of_another_namespace_is_refused_whether_or_not_the_connection_exists() {
        let outsider = caller("team-other", Some("gw-main"));
        let c = connection();
        assert_eq!(
            refusal(decide_for(&outsider, Some(&c))),
            Refusal::OtherNamespace
        );
        assert_eq!(
            refusal(decide_for(&outsider, None)),
            Refusal::OtherNamespace
        );
        assert_eq!(Refusal::OtherNamespace.status(), 403);
    }

    #[test]
    fn an_unknown_connection_is_404_only_for_callers_in_its_namespace() {
        let me = caller("team-acme", Some("gw-main"));
        assert_eq!(refusal(decide_for(&me, None)), Refusal::UnknownConnection);
        assert_eq!(Refusal::UnknownConnection.status(), 404);
    }

    #[test]
    fn a_gateway_that_is_not_listed_or_missing_is_refused() {
        let c = connection();
        let other = caller("team-acme", Some("gw-other"));
        assert_eq!(
            refusal(decide_for(&other, Some(&c))),
            Refusal::GatewayNotListed
        );
        let unlabelled = caller("team-acme", None);
        assert_eq!(
            refusal(decide_for(&unlabelled, Some(&c))),
            Refusal::MissingGatewayLabel
        );
    }

    #[test]
    fn suspended_deleting_and_secret_delivery_are_refused() {
        let me = caller("team-acme", Some("gw-main"));
        let suspended = ConnectionView {
            suspended: true,
            ..connection()
        };
        assert_eq!(
            refusal(decide_for(&me, Some(&suspended))),
            Refusal::Suspended
        );
        let deleting = ConnectionView {
            deleting: true,
            ..connection()
        };
        assert_eq!(refusal(decide_for(&me, Some(&deleting))), Refusal::Deleting);
        let secret_only = ConnectionView {
            delivery: Delivery::Secret,
            ..connection()
        };
        let Access::Refused { refusal, message } = decide_for(&me, Some(&secret_only)) else {
            panic!("secret delivery must be refused");
        };
        assert_eq!(refusal, Refusal::Delivery);
        assert!(message.contains("spec.delivery Secret"), "{message}");
    }

    #[test]
    fn a_namespace_the_operator_does_not_manage_is_refused() {
        let me = caller("team-acme", Some("gw-main"));
        let unwatched = decide(&Request {
            namespace: "team-acme",
            name: "acme-us",
            caller: &me,
            namespace_team: Some("acme"),
            connection: None,
            watched: false,
        });
        assert_eq!(refusal(unwatched), Refusal::NotWatched);
    }

    #[test]
    fn a_connection_of_another_team_than_its_namespace_is_refused() {
        let me = caller("team-acme", Some("gw-main"));
        let c = ConnectionView {
            team_id: "other".into(),
            ..connection()
        };
        assert_eq!(refusal(decide_for(&me, Some(&c))), Refusal::OtherTeam);
        let unbound = decide(&Request {
            namespace: "team-acme",
            name: "acme-us",
            caller: &me,
            namespace_team: None,
            connection: Some(&connection()),
            watched: true,
        });
        assert_eq!(refusal(unbound), Refusal::OtherTeam);
    }

    #[test]
    fn reasons_are_bounded_words() {
        for r in [
            Refusal::OtherNamespace,
            Refusal::NotWatched,
            Refusal::UnknownConnection,
            Refusal::OtherTeam,
            Refusal::Deleting,
            Refusal::MissingGatewayLabel,
            Refusal::GatewayNotListed,
            Refusal::Suspended,
            Refusal::Delivery,
        ] {
            assert!(
                r.reason()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }

    #[test]
    fn delivery_modes() {
        assert!(Delivery::Secret.writes_runtime_secret() && !Delivery::Secret.serves_endpoint());
        assert!(
            !Delivery::Endpoint.writes_runtime_secret() && Delivery::Endpoint.serves_endpoint()
        );
        assert!(Delivery::Both.writes_runtime_secret() && Delivery::Both.serves_endpoint());
        assert_eq!(Delivery::default(), Delivery::Secret);
    }
}
