//! Credential protection: HPKE sealing to operator keys, the keyring, and redacting secret
//! types. Pure code: no Kubernetes imports.

mod keys;
mod payload;
mod seal;
mod secret;

pub use keys::{KeyError, KeyPair, Keyring, PublicKey, SUITE};
pub use payload::{
    CLIENT_ID_PREFIX, Credentials, InputError, MAX_SECRET_INPUT_BYTES, REFRESH_TOKEN_PREFIX,
};
pub use seal::{
    ENVELOPE_VERSION, OpenError, SealContext, SealError, StoredToken, TokenContext, open,
    open_token, seal, seal_token, sealed_key_id,
};
pub use secret::SecretString;
