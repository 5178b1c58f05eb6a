//! Login-with-Amazon: the token client, its error taxonomy, and the refresh engine that keeps
//! every connection's access token fresh while calling LWA only when needed.
//!
//! - [`client`]: one form-encoded token request over rustls/ring; errors classified terminal or
//!   retriable, each with a bounded category.
//! - [`schedule`] and [`breaker`]: pure rules (when to refresh, how long to back off, when to
//!   pause everyone); no I/O, no Kubernetes types.
//! - [`engine`]: the async driver over them: single flight per connection, global rate limit,
//!   backoff, circuit breaker, terminal-error memory.
//! - [`check`]: the `check-credentials` command.
//! - [`clock`]: wall-clock and virtual time.
//!
//! Credentials and tokens are [`SecretString`](crate::crypto::SecretString)s throughout; no
//! request or response body is logged, and no error message holds a secret.

pub mod breaker;
pub mod check;
pub mod client;
pub mod clock;
pub mod engine;
pub mod queue;
pub mod schedule;
pub mod token;

pub use breaker::{BreakerConfig, BreakerState};
pub use client::{
    DEFAULT_ENDPOINT, ErrorClass, LwaClient, LwaClientConfig, LwaError, OAuthErrorCode, TokenSource,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    EngineConfig, RateLimit, RefreshDecision, RefreshEngine, RefreshError, Refreshed,
    TerminalCause, WaitReason,
};
pub use schedule::BackoffPolicy;
pub use token::{AccessToken, ClientCredentials, ConnectionKey, TokenGrant, TokenState};
