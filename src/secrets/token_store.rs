//! The sealed token store `<connection>-sp-api-sealed`: the current access token, sealed to the
//! operator's active key, kept for connections whose `spec.delivery` is `Endpoint` or `Both`.
//!
//! The runtime credential endpoint (which runs on every replica, not only the leader) reads
//! the token from here, and the reconciler reads it back after a restart so that a restart with
//! a valid token makes no LWA call. It holds ciphertext only (data key `sealed`); the webhook
//! refuses pods that reference it and writes by anyone but the operator.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use super::runtime_secret::{ISSUED_AT_ANNOTATION, Published, whole_seconds};
use crate::api::AmazonSellerConnection;
use crate::crypto::{self, Keyring, OpenError, SealError, StoredToken, TokenContext};
use crate::domain::validation::TOKEN_STORE_SUFFIX;
use crate::names::{
    CONNECTION_LABEL, ROLE_TOKEN_STORE, SEALED_KEY, SECRET_ROLE_LABEL, TOKEN_STORE_SECRET_TYPE,
};

/// Annotation on the token store recording when its token expires (not secret), for people and
/// for the endpoint's `Retry-After`.
pub const EXPIRES_AT_ANNOTATION: &str = "connectors.openteam.io/expires-at";

/// The token store's name for a connection.
pub fn name(connection: &str) -> String {
    format!("{connection}{TOKEN_STORE_SUFFIX}")
}

/// The sealing context of a connection's token store.
pub fn context<'a>(team_id: &'a str, namespace: &'a str, connection: &'a str) -> TokenContext<'a> {
    TokenContext {
        team_id,
        namespace,
        connection,
    }
}

fn stored(token: &Published) -> StoredToken {
    StoredToken {
        access_token: token.access_token.clone(),
        token_type: token.token_type.clone(),
        expires_at: whole_seconds(token.expires_at),
        issued_at: whole_seconds(token.issued_at),
    }
}

/// Opens a token store; `Ok(None)` when the Secret is not a token store at all.
pub fn open(
    secret: &Secret,
    keyring: &Keyring,
    context: &TokenContext<'_>,
) -> Result<Option<(Published, String)>, OpenError> {
    if secret.type_.as_deref() != Some(TOKEN_STORE_SECRET_TYPE) {
        return Ok(None);
    }
    let Some(envelope) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SEALED_KEY))
        .map(|b| b.0.as_slice())
    else {
        return Ok(None);
    };
    let (token, key_id) = crypto::open_token(keyring, context, envelope)?;
    Ok(Some((
        Published {
            access_token: token.access_token,
            token_type: token.token_type,
            expires_at: token.expires_at,
            issued_at: token.issued_at,
        },
        key_id,
    )))
}

/// True when `observed`, whose sealed content opened as `opened` (the token and the key it is
/// sealed to), already holds `token` sealed to `active_key`: sealing is randomised, so the
/// comparison is made on the opened value, and an unchanged token is not written again.
pub fn up_to_date(
    observed: &Secret,
    opened: Option<&(Published, String)>,
    token: &Published,
    active_key: &str,
) -> bool {
    opened.is_some_and(|(current, key_id)| {
        key_id == active_key
            && current.access_token == token.access_token
            && current.expires_at == whole_seconds(token.expires_at)
    }) && observed
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SECRET_ROLE_LABEL))
        .map(String::as_str)
        == Some(ROLE_TOKEN_STORE)
}

/// The desired token store, sealed to the keyring's active key and owned by the connection.
pub fn build(
    connection: &AmazonSellerConnection,
    token: &Published,
    keyring: &Keyring,
    context: &TokenContext<'_>,
) -> Result<Secret, SealError> {
    let envelope = crypto::seal_token(&keyring.active().public_key(), context, &stored(token))?;
    let connection_name = connection.metadata.name.clone().unwrap_or_default();
    let mut secret = Secret {
        type_: Some(TOKEN_STORE_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([(
            SEALED_KEY.to_owned(),
            ByteString(envelope),
        )])),
        ..Secret::default()
    };
    secret.metadata.name = Some(name(&connection_name));
    secret.metadata.namespace = connection.metadata.namespace.clone();
    secret.metadata.labels = Some(BTreeMap::from([
        (CONNECTION_LABEL.to_owned(), connection_name),
        (SECRET_ROLE_LABEL.to_owned(), ROLE_TOKEN_STORE.to_owned()),
    ]));
    secret.metadata.annotations = Some(BTreeMap::from([
        (
            ISSUED_AT_ANNOTATION.to_owned(),
            whole_seconds(token.issued_at).to_string(),
        ),
        (
            EXPIRES_AT_ANNOTATION.to_owned(),
            whole_seconds(token.expires_at).to_string(),
        ),
    ]));
    secret.metadata.owner_references = connection.controller_owner_ref(&()).map(|o| vec![o]);
    Ok(secret)
}

/// The expiry the annotation records, without opening the store.
pub fn expires_at(secret: &Secret) -> Option<Timestamp> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(EXPIRES_AT_ANNOTATION)?
        .parse()
        .ok()
}
