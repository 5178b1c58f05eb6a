//! The values the LWA client and the refresh engine pass around: a connection's client
//! credentials, the access token LWA grants, and what the engine needs to know about a token
//! it did not issue itself (one read back from a runtime Secret after a restart).
//!
//! Every secret is a [`SecretString`]: it zeroizes on drop and prints `<redacted>`.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use super::clock;
use crate::crypto::SecretString;

/// The lifetime LWA documents for access tokens; assumed when only a token's expiry is known.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A connection's LWA client credentials and refresh token, as unsealed from its Secret.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// The LWA client id (`amzn1.application-oa2-client.…`); an identifier, not a secret.
    pub client_id: String,
    /// The LWA client secret.
    pub client_secret: SecretString,
    /// The seller's refresh token (`Atzr|…`).
    pub refresh_token: SecretString,
    /// The rotated client secret during Amazon's overlap window, tried once when LWA answers
    /// `invalid_client` for [`client_secret`](Self::client_secret).
    pub next_client_secret: Option<SecretString>,
}

/// What LWA answered to a successful token request, before it is pinned to a point in time.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    /// The access token (`Atza|…`).
    pub access_token: SecretString,
    /// The token type LWA reports (`bearer`).
    pub token_type: String,
    /// The lifetime LWA reports (`expires_in`).
    pub expires_in: Duration,
}

impl TokenGrant {
    /// The token, with its expiry counted from `requested_at`: the instant before the request
    /// was sent, so the recorded expiry is never later than the one LWA applies.
    pub fn issued_at(self, requested_at: Timestamp) -> AccessToken {
        AccessToken {
            expires_at: clock::add(requested_at, self.expires_in),
            issued_at: requested_at,
            access_token: self.access_token,
            token_type: self.token_type,
        }
    }
}

/// An LWA access token and when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The access token (`Atza|…`).
    pub access_token: SecretString,
    /// The token type LWA reports (`bearer`).
    pub token_type: String,
    /// When LWA stops accepting the token.
    pub expires_at: Timestamp,
    /// When it was requested; `expires_at - issued_at` is the token's lifetime.
    pub issued_at: Timestamp,
}

impl AccessToken {
    /// The token's lifetime as LWA granted it.
    pub fn lifetime(&self) -> Duration {
        clock::since(self.expires_at, self.issued_at)
    }

    /// The non-secret facts the engine schedules on.
    pub fn state(&self) -> TokenState {
        TokenState {
            expires_at: self.expires_at,
            issued_at: self.issued_at,
        }
    }
}

/// The non-secret facts about a connection's current token: what a reconciler reads back from
/// the runtime Secret (`expires_at`) and status (`lastRefreshAt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenState {
    /// When the token stops working.
    pub expires_at: Timestamp,
    /// When it was requested.
    pub issued_at: Timestamp,
}

impl TokenState {
    /// A token of which only the expiry is known: LWA's documented one-hour lifetime is assumed.
    pub fn from_expiry(expires_at: Timestamp) -> Self {
        Self {
            expires_at,
            issued_at: clock::sub(expires_at, DEFAULT_TOKEN_LIFETIME),
        }
    }

    /// The token's lifetime.
    pub fn lifetime(&self) -> Duration {
        clock::since(self.expires_at, self.issued_at)
    }
}

/// Identifies a connection to the engine: `<namespace>/<name>`. Its hash also seeds the
/// connection's refresh jitter, so a restart keeps the same schedule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionKey(String);

impl ConnectionKey {
    /// The key of connection `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}/{name}"))
    }

    /// The key as `<namespace>/<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_expires_its_lifetime_after_the_request_started() {
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let token = TokenGrant {
            access_token: SecretString::from("Atza|x"),
            token_type: "bearer".into(),
            expires_in: Duration::from_secs(3600),
        }
        .issued_at(at);
        assert_eq!(
            token.expires_at,
            Timestamp::from_second(1_700_003_600).unwrap()
        );
        assert_eq!(token.lifetime(), Duration::from_secs(3600));
        assert_eq!(token.state().lifetime(), Duration::from_secs(3600));
    }

    #[test]
    fn credentials_and_tokens_debug_print_no_secret() {
        let creds = ClientCredentials {
            client_id: "amzn1.application-oa2-client.abc".into(),
            client_secret: SecretString::from("cs-very-secret"),
            refresh_token: SecretString::from("Atzr|refresh-secret"),
            next_client_secret: Some(SecretString::from("cs-next-secret")),
        };
        let token = AccessToken {
            access_token: SecretString::from("Atza|access-secret"),
            token_type: "bearer".into(),
            expires_at: Timestamp::UNIX_EPOCH,
            issued_at: Timestamp::UNIX_EPOCH,
        };
        let printed = format!("{creds:?} {token:?}");
        for secret in [
            "cs-very-secret",
            "refresh-secret",
            "cs-next-secret",
            "access-secret",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("amzn1.application-oa2-client.abc"));
    }
}
