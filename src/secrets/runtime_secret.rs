//! The runtime Secret `<connection>-sp-api`: what gateways mount. It holds the access token and
//! the derived, non-secret connection metadata, nothing else.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use crate::api::AmazonSellerConnection;
use crate::crypto::SecretString;
use crate::domain::validation::RUNTIME_SECRET_SUFFIX;
use crate::lwa::TokenState;
use crate::names::{CONNECTION_LABEL, ROLE_RUNTIME_TOKEN, RUNTIME_SECRET_TYPE, SECRET_ROLE_LABEL};

/// The runtime Secret's name for a connection.
pub fn name(connection: &str) -> String {
    format!("{connection}{RUNTIME_SECRET_SUFFIX}")
}

/// The non-secret facts a runtime Secret publishes beside the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `marketplace_id`.
    pub marketplace_id: &'static str,
    /// `region`.
    pub region: &'static str,
    /// `endpoint`.
    pub endpoint: &'static str,
    /// `seller_id`.
    pub seller_id: String,
}

/// Annotation on the runtime Secret recording when its token was issued, so the refresh
/// schedule is computed from the Secret alone, the same way before and after a restart and
/// whatever the age of the cached connection status.
pub const ISSUED_AT_ANNOTATION: &str = "connectors.openteam.io/issued-at";

/// A token as published in (or read back from) a runtime Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The access token.
    pub access_token: SecretString,
    /// `bearer`.
    pub token_type: String,
    /// Expiry, whole seconds.
    pub expires_at: Timestamp,
    /// When it was requested, whole seconds.
    pub issued_at: Timestamp,
}

impl Published {
    /// The non-secret facts the refresh schedule is computed from.
    pub fn state(&self) -> TokenState {
        TokenState {
            expires_at: self.expires_at,
            issued_at: self.issued_at,
        }
    }
}

/// Truncates to whole seconds: the precision of RFC 3339 values stored in the API, so a value
/// read back compares equal to the one computed.
pub fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// The desired runtime Secret, owned by the connection so it goes when the connection goes.
pub fn build(
    connection: &AmazonSellerConnection,
    token: &Published,
    metadata: &Metadata,
) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("access_token", token.access_token.expose().to_owned()),
        ("token_type", token.token_type.clone()),
        ("expires_at", whole_seconds(token.expires_at).to_string()),
        ("marketplace_id", metadata.marketplace_id.to_owned()),
        ("region", metadata.region.to_owned()),
        ("endpoint", metadata.endpoint.to_owned()),
        ("seller_id", metadata.seller_id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
    .collect();
    let connection_name = connection.metadata.name.clone().unwrap_or_default();
    let mut secret = Secret {
        type_: Some(RUNTIME_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    secret.metadata.name = Some(name(&connection_name));
    secret.metadata.namespace = connection.metadata.namespace.clone();
    secret.metadata.labels = Some(BTreeMap::from([
        (CONNECTION_LABEL.to_owned(), connection_name),
        (SECRET_ROLE_LABEL.to_owned(), ROLE_RUNTIME_TOKEN.to_owned()),
    ]));
    secret.metadata.annotations = Some(BTreeMap::from([(
        ISSUED_AT_ANNOTATION.to_owned(),
        whole_seconds(token.issued_at).to_string(),
    )]));
    secret.metadata.owner_references = connection.controller_owner_ref(&()).map(|o| vec![o]);
    secret
}

/// True when `observed` already holds exactly what `desired` would write (data, type, labels,
/// owner), so no write is needed.
pub fn up_to_date(observed: &Secret, desired: &Secret) -> bool {
    let labels_present = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| observed.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owned = desired.metadata.owner_references.iter().flatten().all(|o| {
        observed
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|p| p.uid == o.uid && p.controller == o.controller)
    });
    observed.type_ == desired.type_ && observed.data == desired.data && labels_present && owned
}

/// Reads the token back from a runtime Secret; `None` when it is not a complete one.
pub fn read(secret: &Secret) -> Option<Published> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok());
    let access_token = text("access_token").filter(|t| !t.is_empty())?;
    let expires_at: Timestamp = text("expires_at")?.parse().ok()?;
    // Without the annotation (a Secret written by an older version), assume LWA's documented
    // one-hour lifetime.
    let issued_at = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ISSUED_AT_ANNOTATION))
        .and_then(|v| v.parse::<Timestamp>().ok())
        .filter(|issued| *issued < expires_at)
        .unwrap_or_else(|| TokenState::from_expiry(expires_at).issued_at);
    Some(Published {
        access_token: SecretString::from(access_token),
        token_type: text("token_type")?.to_owned(),
        expires_at,
        issued_at,
    })
}
