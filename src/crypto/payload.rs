//! The sealed payload: a connection's LWA client credentials and refresh token.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::SecretString;

/// The largest secret input accepted; real LWA values are far smaller, so anything bigger is
/// a wrong file (a key, a log) rather than a credential.
pub const MAX_SECRET_INPUT_BYTES: usize = 8 * 1024;

/// The prefix of every LWA client id.
pub const CLIENT_ID_PREFIX: &str = "amzn1.application-oa2-client.";
/// The prefix of every LWA refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "Atzr|";

/// LWA credentials for one seller authorization. Only ever held in memory; secret fields zeroize
/// on drop and print `<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// The LWA application's client id (`amzn1.application-oa2-client.…`); an identifier, not a
    /// secret, but sealed with the rest.
    pub client_id: String,
    /// The LWA client secret.
    pub client_secret: SecretString,
    /// The seller's refresh token (`Atzr|…`).
    pub refresh_token: SecretString,
    /// The client secret that replaces `client_secret` during Amazon's rotation overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_client_secret: Option<SecretString>,
    /// When `client_secret` expires (Amazon requires rotation every 180 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<Timestamp>,
}

/// A credential input that cannot be right. Messages name the input and never echo its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The value is empty (or only white space).
    #[error("{input} is empty")]
    Empty {
        /// Which input.
        input: &'static str,
    },
    /// The value is larger than any real credential.
    #[error("{input} is larger than {MAX_SECRET_INPUT_BYTES} bytes: is it the right file?")]
    TooLarge {
        /// Which input.
        input: &'static str,
    },
    /// The value does not have the shape Amazon gives it.
    #[error("{input} does not look like an LWA {what}: expected {expected}")]
    Shape {
        /// Which input.
        input: &'static str,
        /// What it should be.
        what: &'static str,
        /// The expected shape.
        expected: &'static str,
    },
}

impl Credentials {
    /// Checks every field's shape. `names` says how the caller calls each input (a flag name
    /// for the CLI, a data key for the webhook), in the order client id, client secret,
    /// refresh token, next client secret.
    pub fn check(&self, names: [&'static str; 4]) -> Result<(), InputError> {
        let [client_id, client_secret, refresh_token, next_client_secret] = names;
        check_size(client_id, &self.client_id)?;
        let id = self
            .client_id
            .strip_prefix(CLIENT_ID_PREFIX)
            .unwrap_or_default();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(InputError::Shape {
                input: client_id,
                what: "client id",
                expected: "amzn1.application-oa2-client.<letters and digits>",
            });
        }
        check_size(client_secret, self.client_secret.expose())?;
        check_size(refresh_token, self.refresh_token.expose())?;
        if !self
            .refresh_token
            .expose()
            .starts_with(REFRESH_TOKEN_PREFIX)
            || self.refresh_token.len() == REFRESH_TOKEN_PREFIX.len()
        {
            return Err(InputError::Shape {
                input: refresh_token,
                what: "refresh token",
                expected: "a value starting with \"Atzr|\"",
            });
        }
        if let Some(next) = &self.next_client_secret {
            check_size(next_client_secret, next.expose())?;
        }
        Ok(())
    }
}

fn check_size(input: &'static str, value: &str) -> Result<(), InputError> {
    if value.trim().is_empty() {
        Err(InputError::Empty { input })
    } else if value.len() > MAX_SECRET_INPUT_BYTES {
        Err(InputError::TooLarge { input })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = [
        "client id",
        "client secret",
        "refresh token",
        "next client secret",
    ];

    pub(crate) fn sample() -> Credentials {
        Credentials {
            client_id: "amzn1.application-oa2-client.0123abcd".into(),
            client_secret: "amzn1.oa2-cs.v1.secretvalue".into(),
            refresh_token: "Atzr|IwEBIRefreshTokenValue".into(),
            next_client_secret: None,
            client_secret_expires_at: None,
        }
    }

    #[test]
    fn well_formed_credentials_pass() {
        assert_eq!(sample().check(NAMES), Ok(()));
    }

    #[test]
    fn refresh_token_must_start_with_atzr() {
        let creds = Credentials {
            refresh_token: "Atza|not-a-refresh-token".into(),
            ..sample()
        };
        let err = creds.check(NAMES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refresh token does not look like an LWA refresh token: expected a value starting with \"Atzr|\""
        );
        assert!(!err.to_string().contains("not-a-refresh-token"));
    }

    #[test]
    fn client_id_must_have_the_lwa_shape() {
        let creds = Credentials {
            client_id: "my-client".into(),
            ..sample()
        };
        assert!(matches!(
            creds.check(NAMES),
            Err(InputError::Shape {
                input: "client id",
                ..
            })
        ));
    }

    #[test]
    fn empty_and_oversized_inputs_are_named() {
        let empty = Credentials {
            client_secret: " \n".into(),
            ..sample()
        };
        assert_eq!(
            empty.check(NAMES).unwrap_err().to_string(),
            "client secret is empty"
        );
        let huge = Credentials {
            next_client_secret: Some("x".repeat(MAX_SECRET_INPUT_BYTES + 1).into()),
            ..sample()
        };
        assert!(matches!(
            huge.check(NAMES),
            Err(InputError::TooLarge {
                input: "next client secret"
            })
        ));
    }

    #[test]
    fn debug_output_redacts_every_secret() {
        let text = format!("{:?}", sample());
        assert!(
            !text.contains("secretvalue") && !text.contains("RefreshTokenValue"),
            "{text}"
        );
    }
}
