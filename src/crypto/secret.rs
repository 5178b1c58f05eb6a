//! Types for plaintext secrets: they zeroize their memory on drop and never print their value.
//!
//! `Debug` and `Display` both print `<redacted>`, so a secret that slips into a log line, an
//! error message or a panic shows nothing. The value is reachable only through
//! [`SecretString::expose`], which makes every use greppable.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret string (client secret, refresh token, access token).
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret. The caller's `String` moves in, so no unzeroized copy is left behind.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext. Use only where the value must leave the process (an LWA request, a
    /// runtime Secret) or be sealed.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes (not secret in itself; used for size limits).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl From<Zeroizing<String>> for SecretString {
    fn from(value: Zeroizing<String>) -> Self {
        Self::new(value.as_str().to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Serializes the plaintext: used only to build the payload that is sealed at once.
impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretString::from("Atzr|IwEBIA-very-secret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: SecretString,
        }
        let holder = format!(
            "{:?}",
            Holder {
                token: secret.clone()
            }
        );
        assert!(!holder.contains("Atzr"), "{holder}");
        assert_eq!(secret.expose(), "Atzr|IwEBIA-very-secret");
    }

    #[test]
    fn zeroize_clears_the_value() {
        let mut secret = SecretString::from("amzn1.oa2-cs.v1.secret");
        secret.zeroize();
        assert!(secret.is_empty());
    }
}
