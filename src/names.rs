//! Names other components depend on: labels, Secret types and data keys, the field manager.
//! They are contracts (design §2): the chart, the alerts and users' manifests use them.

/// Namespace label binding a namespace to a Team.
pub const TEAM_LABEL: &str = "connectors.openteam.io/team";
/// Pod label naming the gateway a pod belongs to.
pub const GATEWAY_LABEL: &str = "connectors.openteam.io/gateway";
/// Label on managed Secrets naming their connection.
pub const CONNECTION_LABEL: &str = "connectors.openteam.io/connection";
/// Label on managed Secrets saying what they hold.
pub const SECRET_ROLE_LABEL: &str = "connectors.openteam.io/secret-role";
/// `SECRET_ROLE_LABEL` value of sealed LWA credentials Secrets.
pub const ROLE_LWA_CREDENTIALS: &str = "lwa-credentials";
/// `SECRET_ROLE_LABEL` value of runtime token Secrets.
pub const ROLE_RUNTIME_TOKEN: &str = "runtime-token";
/// `SECRET_ROLE_LABEL` value of a connection's sealed token store (`<connection>-sp-api-sealed`),
/// kept by the operator for the runtime credential endpoint.
pub const ROLE_TOKEN_STORE: &str = "token-store";
/// `SECRET_ROLE_LABEL` value of the operator's key Secret.
pub const ROLE_OPERATOR_KEYS: &str = "operator-keys";

/// Type of a sealed credentials Secret.
pub const LWA_CREDENTIALS_SECRET_TYPE: &str = "connectors.openteam.io/lwa-credentials";
/// Data key holding the sealed envelope.
pub const SEALED_KEY: &str = "sealed";
/// Type of a runtime Secret.
pub const RUNTIME_SECRET_TYPE: &str = "connectors.openteam.io/sp-api-token";

/// Type of a sealed token store: the current access token sealed to the operator's key (data
/// key `sealed`), read by the runtime credential endpoint on every replica.
pub const TOKEN_STORE_SECRET_TYPE: &str = "connectors.openteam.io/sp-api-token-sealed";

/// The audience a Gateway's projected ServiceAccount token must carry to call the runtime
/// credential endpoint.
pub const CREDENTIAL_ENDPOINT_AUDIENCE: &str = "connectors.openteam.io";
/// TokenReview `status.user.extra` key naming the pod a ServiceAccount token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// TokenReview `status.user.extra` key carrying that pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Default name of the Secret holding the operator's keyring.
pub const DEFAULT_KEY_SECRET: &str = "amazon-seller-operator-keys";
/// Data key of the keyring in the key Secret.
pub const KEYRING_KEY: &str = "keyring.json";
/// ConfigMap publishing the active public key.
pub const PUBLIC_KEY_CONFIGMAP: &str = "amazon-seller-operator-public-key";
/// Data key of the public key document in that ConfigMap.
pub const PUBLIC_KEY_KEY: &str = "public-key.json";

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "amazon-seller-operator";
