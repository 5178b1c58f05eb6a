//! `AmazonSellerConnection`: one Team's connection to one Amazon seller account in one
//! marketplace. The doc comments on these types are what `kubectl explain` shows.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{self, SpecView};
pub use crate::domain::{Delivery, Environment, OnUnauthorizedMount};

/// What the Team asks for: which seller, marketplace and credentials, and which gateways may use
/// the runtime Secret.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "connectors.openteam.io",
    version = "v1alpha1",
    kind = "AmazonSellerConnection",
    doc = "A Team's connection to one Amazon seller account in one marketplace: the operator keeps a fresh SP-API access token for it in the runtime Secret `<name>-sp-api`.",
    namespaced,
    status = "AmazonSellerConnectionStatus",
    shortname = "asc",
    shortname = "sellerconn",
    // `kubectl get asc` stays narrow: whose, which marketplace, whether it works and until when.
    // `-o wide` (priority 1) adds what an operator looks up next: the seller and marketplace id,
    // why it is not Ready, the refresh times, where the token goes and the sealing key.
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.teamId"}"#,
    printcolumn = r#"{"name":"Seller","type":"string","priority":1,"jsonPath":".spec.sellerId"}"#,
    printcolumn = r#"{"name":"Marketplace","type":"string","jsonPath":".spec.marketplace"}"#,
    printcolumn = r#"{"name":"Marketplace ID","type":"string","priority":1,"jsonPath":".status.marketplaceId"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Token expires","type":"string","jsonPath":".status.tokenExpiresAt"}"#,
    printcolumn = r#"{"name":"Last refresh","type":"date","priority":1,"jsonPath":".status.lastRefreshAt"}"#,
    printcolumn = r#"{"name":"Next refresh","type":"string","priority":1,"jsonPath":".status.nextRefreshAt"}"#,
    printcolumn = r#"{"name":"Gateways","type":"string","priority":1,"jsonPath":".spec.gateways"}"#,
    printcolumn = r#"{"name":"Delivery","type":"string","priority":1,"jsonPath":".spec.delivery"}"#,
    printcolumn = r#"{"name":"Key","type":"string","priority":1,"jsonPath":".status.keyId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AmazonSellerConnectionSpec {
    /// The Team that owns this connection. Must equal the `connectors.openteam.io/team` label of
    /// the namespace. A DNS label; immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        extend("x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "teamId is immutable: create a new connection for another team"
        }])
    )]
    pub team_id: String,

    /// The seller's merchant token (Seller Central → Account Info), 8 to 20 upper-case letters
    /// and digits. Immutable.
    #[schemars(
        length(min = 8, max = 20),
        regex(pattern = r"^[A-Z0-9]{8,20}$"),
        extend("x-kubernetes-validations" = [{
            "rule": "self == oldSelf",
            "message": "sellerId is immutable: create a new connection for another seller"
        }])
    )]
    pub seller_id: String,

    /// The marketplace's country code, for example `US`, `DE` or `JP` (`UK` and `GB` are the
    /// same marketplace). The marketplace id, region and SP-API endpoint are derived from it.
    /// Run `amazon-seller-operator marketplaces` for the table.
    #[schemars(schema_with = "marketplace_schema")]
    pub marketplace: String,

    /// Which SP-API deployment to use: `Production` (live seller data) or `Sandbox`.
    #[serde(default)]
    pub environment: Environment,

    /// The name of the Secret in this namespace that holds the sealed LWA credentials (type
    /// `connectors.openteam.io/lwa-credentials`, key `sealed`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub credentials_secret_name: String,

    /// The gateway ids whose pods may mount the runtime Secret. A pod is a gateway when it
    /// carries the label `connectors.openteam.io/gateway: <id>`. At least one; no duplicates.
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub gateways: Vec<String>,

    /// How long before the access token expires the operator refreshes it, as hours, minutes
    /// and seconds (`20m`, `10m30s`). Between 5m and 50m; access tokens live one hour.
    #[serde(default = "default_renew_before")]
    #[schemars(
        regex(pattern = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"),
        length(min = 2, max = 24),
        extend("x-kubernetes-validations" = [{
            "rule": "duration(self) >= duration('5m') && duration(self) <= duration('50m')",
            "message": "renewBefore must be between 5m and 50m"
        }])
    )]
    pub renew_before: String,

    /// Containment switch. When true the runtime Secret is deleted at once and no token is
    /// refreshed; setting it back to false publishes a fresh token again.
    #[serde(default)]
    pub suspended: bool,

    /// How gateways receive the access token: `Secret` (the runtime Secret `<name>-sp-api`,
    /// mounted by gateway pods), `Endpoint` (only the operator's authenticated runtime
    /// credential endpoint, no runtime Secret) or `Both`. In `Endpoint` and `Both` modes the
    /// operator keeps the token sealed in `<name>-sp-api-sealed`, which no pod may mount.
    #[serde(default)]
    pub delivery: Delivery,

    /// What the operator does about a pod in this namespace that references the runtime Secret
    /// (or the sealed credentials or token store) outside the rules: a pod admitted before this
    /// connection existed, a gateway removed from `spec.gateways`, a changed gateway label, or a
    /// namespace given to another Team. `Report` (default): the condition
    /// `UnauthorizedMounts`, a Warning Event and an audit record naming the pod, the metric
    /// `amazon_seller_unauthorized_mounts` and its alert. `Evict`: the same, and the pod is
    /// evicted through the Eviction API (PodDisruptionBudgets apply; a controller that owns the
    /// pod makes a new one, which the admission webhook judges). Either way the runtime Secret
    /// is not created while such a pod names it.
    #[serde(default)]
    pub on_unauthorized_mount: OnUnauthorizedMount,
}

fn default_renew_before() -> String {
    "20m".to_owned()
}

fn marketplace_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": domain::marketplace::accepted_codes(),
    })
}

/// What the operator observed and derived. Written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmazonSellerConnectionStatus {
    /// The marketplace id derived from `spec.marketplace`, e.g. `ATVPDKIKX0DER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketplace_id: Option<String>,

    /// The SP-API region derived from `spec.marketplace`: `NA`, `EU` or `FE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// The SP-API endpoint for the region and environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The runtime Secret holding the current access token, `<name>-sp-api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_secret_name: Option<String>,

    /// When the current access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Time>,

    /// When the operator will next refresh the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<Time>,

    /// When the access token was last refreshed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<Time>,

    /// Refresh attempts that failed since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_refresh_attempts: Option<i32>,

    /// The id of the operator key the credentials are sealed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods in this namespace that reference the runtime Secret, the sealed credentials or the
    /// token store outside the rules (see `spec.onUnauthorizedMount`), by name, at most 16; the
    /// condition `UnauthorizedMounts` gives their number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"))]
    pub unauthorized_pods: Vec<UnauthorizedPod>,

    /// Standard conditions: `Ready`, `CredentialsValid`, `Suspended`, and
    /// `UnauthorizedMounts` once a pod outside the rules was found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"]
    ))]
    pub conditions: Vec<Condition>,
}

/// A pod found referencing a connection's Secrets outside the rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnauthorizedPod {
    /// The pod's name, in the connection's namespace.
    #[schemars(length(max = 253))]
    pub name: String,

    /// The first rule it breaks: `team_mismatch`, `missing_gateway_label`,
    /// `gateway_not_listed`, `env_reference`, `sub_path_mount`, `unsupported_reference` or
    /// `sealed_secret_reference`.
    #[schemars(length(max = 48))]
    pub reason: String,
}

impl AmazonSellerConnectionSpec {
    /// The plain view the domain rules take.
    pub fn view<'a>(&'a self, name: &'a str) -> SpecView<'a> {
        SpecView {
            name,
            team_id: &self.team_id,
            seller_id: &self.seller_id,
            marketplace: &self.marketplace,
            credentials_secret_name: &self.credentials_secret_name,
            gateways: &self.gateways,
            renew_before: &self.renew_before,
        }
    }
}
