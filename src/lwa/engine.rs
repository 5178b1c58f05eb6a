//! The refresh engine: decides when each connection's access token must be refreshed and
//! performs refreshes with every protection LWA and the operator need.
//!
//! - [`RefreshEngine::decide`] answers from the current token's expiry alone, without I/O: a
//!   valid token that is not due is kept, so a restart with valid tokens makes no LWA call.
//! - [`RefreshEngine::refresh`] makes at most one LWA call in flight per connection; callers
//!   that arrive while it runs share its result.
//! - A global token bucket ([`RateLimit`]) caps calls toward LWA; callers it cannot serve now
//!   wait in one queue ([`super::queue`]), most urgent first (no token, then the token that
//!   expires first), each with a turn it keeps: asking again before the turn reserves nothing.
//! - Retriable failures back off (capped, full jitter, never sooner than `Retry-After`, and
//!   never past the last chance before the token in use expires); a circuit breaker pauses
//!   everyone while LWA fails for everyone. When LWA answers again the pause and the backoffs
//!   it caused end, and the connections they held are woken ([`RefreshEngine::woken`]) to
//!   refresh in expiry order at the rate limit.
//! - Terminal failures stop calls for the connection until the caller's fingerprint of its
//!   spec and credentials changes. `invalid_client` with a `nextClientSecret` tries that secret
//!   once, and keeps using it (reported in [`Refreshed::used_next_secret`]).
//!
//! The engine never sleeps: every refusal carries the instant to come back, which the
//! reconciler turns into a requeue. Time comes from a [`Clock`], virtual in tests.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;

use super::breaker::{BreakerAnswer, BreakerConfig, BreakerState, CircuitBreaker};
use super::client::{LwaClient, LwaError, OAuthErrorCode, TokenSource};
use super::clock::{self, Clock};
use super::queue::{RateQueue, Turn};
use super::schedule::{self, BackoffPolicy, TokenPlan};
use super::token::{AccessToken, ClientCredentials, ConnectionKey, TokenState};
use crate::error::Categorized;
use crate::error::chain as error_chain;

/// The global rate limit toward LWA: a token bucket refilled at `qps`, holding `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    qps: f64,
    burst: NonZeroU32,
}

impl RateLimit {
    /// The default: 5 calls a second, bursts of 10. 10,000 connections refreshing every ~40
    /// minutes need about 4 a second.
    pub const DEFAULT: RateLimit = RateLimit {
        qps: 5.0,
        burst: NonZeroU32::MIN.saturating_add(9),
    };

    /// A limit of `qps` calls a second (between one a day and a million a second) with bursts
    /// of `burst` (at least 1); `None` outside those bounds.
    pub fn new(qps: f64, burst: u32) -> Option<Self> {
        let burst = NonZeroU32::new(burst)?;
        (qps.is_finite() && (1.0 / 86_400.0..=1e6).contains(&qps)).then_some(Self { qps, burst })
    }

    /// Calls per second.
    pub fn qps(&self) -> f64 {
        self.qps
    }

    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The time between two permits once the burst is spent.
    pub fn period(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.qps).unwrap_or(Duration::from_secs(86_400))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The engine's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineConfig {
    /// The global rate limit toward LWA.
    pub rate: RateLimit,
    /// Backoff after retriable failures.
    pub backoff: BackoffPolicy,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
}

/// Why a due refresh has to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The connection's last attempt failed and it is backing off.
    Backoff {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last failure's category.
        category: &'static str,
    },
    /// LWA is failing for everyone and the circuit breaker is open.
    CircuitOpen,
    /// The rate limit toward LWA is spent: this is the connection's turn in the queue.
    RateLimit,
}

/// What to do about a connection's token now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The current token is valid and not due: keep it and look again at `refresh_at`.
    UseExisting {
        /// When the token becomes due.
        refresh_at: Timestamp,
    },
    /// Refresh now (call [`RefreshEngine::refresh`]).
    RefreshNow,
    /// A refresh is due but must wait until `at`; a still-valid current token stays in use.
    RefreshAt {
        /// When to try.
        at: Timestamp,
        /// Why not now.
        reason: WaitReason,
    },
    /// LWA rejected these credentials: nothing to do until the fingerprint changes.
    Blocked {
        /// Why (`invalid_grant`, …).
        cause: TerminalCause,
    },
}

/// Why no token can be had for a connection's credentials until they change: what makes a
/// refresh failure terminal. The reconciler maps it to condition reasons and advice; its
/// [`category`](TerminalCause::category) is the metric label and audit reason, the same as the
/// underlying [`LwaError::category`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TerminalCause {
    /// LWA refused the request with this OAuth error code (HTTP 4xx).
    Rejected(OAuthErrorCode),
    /// A credential is empty, so no request was sent.
    IncompleteCredentials,
    /// The LWA client is misconfigured (endpoint, CA file, HTTP client).
    ClientConfig,
}

impl TerminalCause {
    /// The terminal cause of `error`; `None` when retrying can help.
    pub fn of(error: &LwaError) -> Option<Self> {
        match error {
            LwaError::Rejected { code, .. } => Some(Self::Rejected(*code)),
            LwaError::IncompleteCredentials { .. } => Some(Self::IncompleteCredentials),
            LwaError::InvalidEndpoint { .. }
            | LwaError::ReadCaFile { .. }
            | LwaError::InvalidCaFile { .. }
            | LwaError::BuildClient { .. } => Some(Self::ClientConfig),
            LwaError::Unavailable { .. }
            | LwaError::RateLimited { .. }
            | LwaError::Timeout
            | LwaError::Connect { .. }
            | LwaError::Transport { .. }
            | LwaError::UnexpectedStatus { .. }
            | LwaError::Malformed { .. }
            | LwaError::TooLarge { .. } => None,
        }
    }

    /// The bounded name (`invalid_grant`, `client_error`, `incomplete_credentials`, `config`):
    /// the metric label, audit reason and the word in condition messages.
    pub fn category(self) -> &'static str {
        match self {
            Self::Rejected(
                code @ (OAuthErrorCode::InvalidGrant
                | OAuthErrorCode::InvalidClient
                | OAuthErrorCode::UnauthorizedClient
                | OAuthErrorCode::InvalidRequest
                | OAuthErrorCode::InvalidScope
                | OAuthErrorCode::UnsupportedGrantType),
            ) => code.as_str(),
            // Codes that are not about the credentials, or unknown: the text is not ours to use.
            Self::Rejected(
                OAuthErrorCode::ServerError
                | OAuthErrorCode::TemporarilyUnavailable
                | OAuthErrorCode::Other,
            ) => "client_error",
            Self::IncompleteCredentials => "incomplete_credentials",
            Self::ClientConfig => "config",
        }
    }
}

impl std::fmt::Display for TerminalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.category())
    }
}

/// A successful refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// The new access token.
    pub token: AccessToken,
    /// LWA rejected the current client secret and accepted `nextClientSecret`: the caller
    /// should promote it.
    pub used_next_secret: bool,
}

/// Why a refresh did not produce a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// LWA rejected the credentials; no call is made for this connection until the
    /// fingerprint changes.
    #[error(
        "failed to refresh the LWA access token: LWA rejected the credentials ({cause}); not retried until the connection's spec or credentials change"
    )]
    Terminal {
        /// Why.
        cause: TerminalCause,
    },
    /// A retriable failure; the connection backs off until `retry_at`.
    #[error(
        "failed to refresh the LWA access token ({category}, {attempts} failed attempts); next attempt at {retry_at}"
    )]
    Retriable {
        /// Which failure (an [`LwaError::category`]).
        category: &'static str,
        /// When the connection may try again.
        retry_at: Timestamp,
        /// Failed attempts in a row.
        attempts: u32,
    },
    /// Refreshes are paused while LWA fails for everyone.
    #[error(
        "failed to refresh the LWA access token: refreshes are paused while LWA is failing, until {until}"
    )]
    CircuitOpen {
        /// When to try again (spread a little per connection).
        until: Timestamp,
    },
    /// The global rate limit toward LWA is spent.
    #[error(
        "failed to refresh the LWA access token: the LWA rate limit is reached; retry at {retry_at}"
    )]
    Throttled {
        /// When a permit is expected for this caller.
        retry_at: Timestamp,
    },
}

impl RefreshError {
    /// When to come back; `None` for terminal errors.
    pub fn retry_at(&self) -> Option<Timestamp> {
        match self {
            RefreshError::Terminal { .. } => None,
            RefreshError::Retriable { retry_at, .. } | RefreshError::Throttled { retry_at } => {
                Some(*retry_at)
            }
            RefreshError::CircuitOpen { until } => Some(*until),
        }
    }
}

impl crate::error::Categorized for RefreshError {
    fn category(&self) -> &'static str {
        match self {
            RefreshError::Terminal { cause } => cause.category(),
            RefreshError::Retriable { category, .. } => category,
            RefreshError::CircuitOpen { .. } => "circuit_open",
            RefreshError::Throttled { .. } => "throttled",
        }
    }
}

/// Per-connection memory.
#[derive(Default)]
struct SlotState {
    /// The fingerprint the state below belongs to; a new one clears it.
    fingerprint: String,
    terminal: Option<TerminalCause>,
    failures: u32,
    retry_at: Option<Timestamp>,
    last_category: &'static str,
    /// LWA rejected the current secret and accepted (or was last asked with) the next one.
    prefer_next_secret: bool,
    /// When the last attempt that failed was made: a chance before expiry is taken once.
    last_failed_at: Option<Timestamp>,
    /// The last result with the fingerprint it was for, for callers that waited on it.
    last: Option<(String, Result<Refreshed, RefreshError>)>,
}

impl SlotState {
    fn reset_for(&mut self, fingerprint: &str) {
        *self = SlotState {
            fingerprint: fingerprint.to_owned(),
            ..SlotState::default()
        };
    }
}

struct Slot {
    /// Held for the whole of a refresh: the single flight.
    flight: tokio::sync::Mutex<()>,
    /// Refreshes finished; a waiter that sees it move shares the result.
    completed: AtomicU64,
    state: Mutex<SlotState>,
}

/// The refresh engine. Share one per process behind an `Arc`.
pub struct RefreshEngine<S: TokenSource = LwaClient> {
    source: S,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// The rate limit's bucket and the connections waiting for it.
    queue: Mutex<RateQueue>,
    breaker: Mutex<CircuitBreaker>,
    /// Connections told to wait for the breaker: woken when it closes.
    paused: Mutex<HashSet<ConnectionKey>>,
    /// Where wake-ups go ([`RefreshEngine::woken`]).
    wake: broadcast::Sender<ConnectionKey>,
    slots: Mutex<HashMap<ConnectionKey, Arc<Slot>>>,
    random: RandomState,
    draws: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long before its token expires a failing connection retries, whatever its backoff says,
/// and from when it may probe LWA while the circuit breaker pauses everyone else.
pub const LAST_CHANCE_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

/// How long before its token expires a connection whose last chance failed tries once more: a
/// token lapses after an outage only if LWA came back within this much of its expiry.
pub const FINAL_CHANCE_BEFORE_EXPIRY: Duration = Duration::from_secs(10);

/// Whether one of the chances of a token expiring at `expires_at` has come by `now` and not
/// been taken by an attempt that failed since.
fn chance_due(expires_at: Timestamp, now: Timestamp, last_failed_at: Option<Timestamp>) -> bool {
    now < expires_at
        && [LAST_CHANCE_BEFORE_EXPIRY, FINAL_CHANCE_BEFORE_EXPIRY]
            .into_iter()
            .map(|before| clock::sub(expires_at, before))
            .any(|chance| chance <= now && last_failed_at.is_none_or(|at| at < chance))
}

/// The next of a token's chances after `now` (a minute, then ten seconds, before it expires).
fn next_chance(expires_at: Timestamp, now: Timestamp) -> Option<Timestamp> {
    [LAST_CHANCE_BEFORE_EXPIRY, FINAL_CHANCE_BEFORE_EXPIRY]
        .into_iter()
        .map(|before| clock::sub(expires_at, before))
        .find(|chance| *chance > now)
}

/// How many wake-ups a controller may fall behind ([`RefreshEngine::woken`]).
pub const WAKE_CAPACITY: usize = 128 * 1024;

/// What one refresh attempt got from LWA.
struct Answer {
    requested_at: Timestamp,
    result: Result<super::token::TokenGrant, LwaError>,
    used_next_secret: bool,
    /// When the token in use expires.
    deadline: Option<Timestamp>,
}

/// Releases a half-open probe that ended without an answer (cancelled, throttled).
struct ProbeGuard<'a> {
    breaker: &'a Mutex<CircuitBreaker>,
    probe: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.probe {
            lock(self.breaker).abandon_probe();
        }
    }
}

impl<S: TokenSource> RefreshEngine<S> {
    /// An engine calling LWA through `source`, reading time from `clock`.
    pub fn new(source: S, config: EngineConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let queue = RateQueue::new(config.rate.period(), config.rate.burst(), now);
        let (wake, _) = broadcast::channel(WAKE_CAPACITY);
        Self {
            source,
            config,
            queue: Mutex::new(queue),
            breaker: Mutex::new(CircuitBreaker::new(config.breaker)),
            paused: Mutex::new(HashSet::new()),
            wake,
            slots: Mutex::new(HashMap::new()),
            random: RandomState::new(),
            draws: AtomicU64::new(0),
            clock,
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Where tokens come from (to inspect a stand-in in tests).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Decides, without I/O, what to do about `key`'s token at `now`. `current` is the token
    /// in use (read back from the runtime Secret after a restart), `fingerprint` identifies
    /// the connection's spec and credentials (for example generation + credentials Secret
    /// resourceVersion).
    pub fn decide(
        &self,
        now: Timestamp,
        key: &ConnectionKey,
        fingerprint: &str,
        current: Option<TokenState>,
        renew_before: Duration,
    ) -> RefreshDecision {
        let seed = schedule::jitter_seed(key.as_str());
        if let TokenPlan::UseUntil(refresh_at) = schedule::plan(now, current, renew_before, seed) {
            return RefreshDecision::UseExisting { refresh_at };
        }
        let mut last_failed_at = None;
        if let Some(slot) = lock(&self.slots).get(key).cloned() {
            let state = lock(&slot.state);
            if state.fingerprint == fingerprint {
                last_failed_at = state.last_failed_at;
                if let Some(cause) = state.terminal {
                    return RefreshDecision::Blocked { cause };
                }
                if let Some(at) = state.retry_at.filter(|at| now < *at) {
                    return RefreshDecision::RefreshAt {
                        at,
                        reason: WaitReason::Backoff {
                            attempts: state.failures,
                            category: state.last_category,
                        },
                    };
                }
            }
        }
        let paused_until = match lock(&self.breaker).state(now) {
            BreakerState::Open { until } => Some(self.spread(until, seed)),
            BreakerState::HalfOpen {
                probe_in_flight: true,
            } => Some(clock::add(now, self.config.breaker.open_for / 6)),
            BreakerState::Closed | BreakerState::HalfOpen { .. } => None,
        };
        if let Some(until) = paused_until {
            // A token that would expire during the pause is tried at its chances before it
            // expires, when it may probe LWA early (see `refresh`).
            let expires_at = current.map(|t| t.expires_at);
            if expires_at.is_some_and(|d| chance_due(d, now, last_failed_at)) {
                return RefreshDecision::RefreshNow;
            }
            lock(&self.paused).insert(key.clone());
            let chance = expires_at.and_then(|d| next_chance(d, now));
            return RefreshDecision::RefreshAt {
                at: chance.map_or(until, |at| at.min(until)),
                reason: WaitReason::CircuitOpen,
            };
        }
        // A connection waiting for its turn at the rate limit keeps it: asking again before
        // then neither opens its credentials nor reserves anything.
        if let Some(turn) = lock(&self.queue).turn(key).filter(|turn| now < *turn) {
            return RefreshDecision::RefreshAt {
                at: turn,
                reason: WaitReason::RateLimit,
            };
        }
        RefreshDecision::RefreshNow
    }

    /// Refreshes `key`'s access token with `creds`, unless the connection is blocked, backing
    /// off, paused by the breaker or waiting for its turn at the rate limit (each an error
    /// carrying when to come back). `deadline` is when the token in use expires (`None`: there
    /// is none): it orders the queue and bounds the backoff. Concurrent calls for one key make
    /// one LWA call and share its result.
    pub async fn refresh(
        &self,
        key: &ConnectionKey,
        fingerprint: &str,
        creds: &ClientCredentials,
        deadline: Option<Timestamp>,
    ) -> Result<Refreshed, RefreshError> {
        let slot = self.slot(key);
        let seen = slot.completed.load(Ordering::SeqCst);
        let _flight = slot.flight.lock().await;
        if slot.completed.load(Ordering::SeqCst) != seen {
            let state = lock(&slot.state);
            if let Some((for_fingerprint, result)) = &state.last
                && for_fingerprint == fingerprint
            {
                return result.clone();
            }
        }
        let result = self
            .refresh_alone(key, &slot, fingerprint, creds, deadline)
            .await;
        lock(&slot.state).last = Some((fingerprint.to_owned(), result.clone()));
        slot.completed.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// Forgets a connection (deleted, or no longer managed).
    pub fn forget(&self, key: &ConnectionKey) {
        lock(&self.slots).remove(key);
        lock(&self.queue).forget(key);
        lock(&self.paused).remove(key);
    }

    /// Connections to reconcile now: those the breaker paused, and those backing off from
    /// failures while it was open, once LWA answers again. Each controller subscribes and
    /// reconciles the keys of its namespaces. A receiver that falls more than
    /// [`WAKE_CAPACITY`] behind misses the oldest; those connections come back at the time they
    /// were given, which the backoff bound keeps before their tokens expire.
    pub fn woken(&self) -> broadcast::Receiver<ConnectionKey> {
        self.wake.subscribe()
    }

    /// How many connections wait for their turn at the rate limit.
    pub fn waiting(&self) -> usize {
        lock(&self.queue).waiting()
    }

    /// Failed attempts in a row for `key` (status `failedRefreshAttempts`).
    pub fn failed_attempts(&self, key: &ConnectionKey) -> u32 {
        lock(&self.slots)
            .get(key)
            .map_or(0, |slot| lock(&slot.state).failures)
    }

    /// The circuit breaker's state at `now`.
    pub fn breaker_state(&self, now: Timestamp) -> BreakerState {
        lock(&self.breaker).state(now)
    }

    fn slot(&self, key: &ConnectionKey) -> Arc<Slot> {
        lock(&self.slots)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    flight: tokio::sync::Mutex::new(()),
                    completed: AtomicU64::new(0),
                    state: Mutex::new(SlotState::default()),
                })
            })
            .clone()
    }

    /// The refresh proper, with the connection's flight lock held.
    async fn refresh_alone(
        &self,
        key: &ConnectionKey,
        slot: &Slot,
        fingerprint: &str,
        creds: &ClientCredentials,
        deadline: Option<Timestamp>,
    ) -> Result<Refreshed, RefreshError> {
        let now = self.clock.now();
        let seed = schedule::jitter_seed(key.as_str());
        let (prefer_next, last_failed_at) = {
            let mut state = lock(&slot.state);
            if state.fingerprint != fingerprint {
                state.reset_for(fingerprint);
            }
            if let Some(cause) = state.terminal {
                return Err(RefreshError::Terminal { cause });
            }
            if let Some(retry_at) = state.retry_at.filter(|at| now < *at) {
                return Err(RefreshError::Retriable {
                    category: state.last_category,
                    retry_at,
                    attempts: state.failures,
                });
            }
            (state.prefer_next_secret, state.last_failed_at)
        };
        let admission = {
            let mut breaker = lock(&self.breaker);
            match breaker.admit(now) {
                BreakerAnswer::Paused { .. }
                    if deadline.is_some_and(|d| chance_due(d, now, last_failed_at)) =>
                {
                    breaker.admit_early(now)
                }
                answer => answer,
            }
        };
        let mut probe = match admission {
            BreakerAnswer::Allowed { probe } => ProbeGuard {
                breaker: &self.breaker,
                probe,
            },
            BreakerAnswer::Paused { until } => {
                lock(&self.paused).insert(key.clone());
                return Err(RefreshError::CircuitOpen {
                    until: self.spread(until, seed),
                });
            }
        };
        self.take_permit(now, key, deadline)?;

        let next = creds.next_client_secret.as_ref();
        let (secret, mut used_next) = match next {
            Some(next) if prefer_next => (next, true),
            _ => (&creds.client_secret, false),
        };
        let mut requested_at = now;
        let mut result = self
            .source
            .refresh_grant(&creds.client_id, secret, &creds.refresh_token)
            .await;
        if let (Some(next), false) = (next, used_next)
            && matches!(
                result,
                Err(LwaError::Rejected {
                    code: OAuthErrorCode::InvalidClient,
                    ..
                })
            )
        {
            // The current secret is rejected: from now on (until the credentials change) only
            // the next one is used, and it is tried once now.
            lock(&slot.state).prefer_next_secret = true;
            tracing::info!(connection = %key, "LWA rejected the client secret; trying the next client secret");
            requested_at = self.clock.now();
            if let Err(throttled) = self.take_permit(requested_at, key, deadline) {
                // LWA answered, so the breaker learns it is up.
                probe.probe = false;
                self.lwa_answered(requested_at);
                return Err(throttled);
            }
            result = self
                .source
                .refresh_grant(&creds.client_id, next, &creds.refresh_token)
                .await;
            used_next = true;
        }
        // From here the outcome is recorded: the probe is no longer abandoned on drop.
        let was_probe = std::mem::replace(&mut probe.probe, false);
        let answer = Answer {
            requested_at,
            result,
            used_next_secret: used_next,
            deadline,
        };
        self.record(key, slot, seed, was_probe, answer)
    }

    /// Records LWA's answer (or the failure to get one) for `key`.
    fn record(
        &self,
        key: &ConnectionKey,
        slot: &Slot,
        seed: u64,
        probe: bool,
        answer: Answer,
    ) -> Result<Refreshed, RefreshError> {
        let error = match answer.result {
            Ok(grant) => {
                {
                    let mut state = lock(&slot.state);
                    state.failures = 0;
                    state.retry_at = None;
                    state.last_failed_at = None;
                }
                self.lwa_answered(answer.requested_at);
                let token = grant.issued_at(answer.requested_at);
                tracing::debug!(connection = %key, expires_at = %token.expires_at, used_next_secret = answer.used_next_secret, "refreshed the LWA access token");
                return Ok(Refreshed {
                    token,
                    used_next_secret: answer.used_next_secret,
                });
            }
            Err(error) => error,
        };
        let category = error.category();
        if let Some(cause) = TerminalCause::of(&error) {
            lock(&slot.state).terminal = Some(cause);
            // LWA answered: it is up, whatever it thinks of these credentials.
            self.lwa_answered(answer.requested_at);
            tracing::warn!(connection = %key, category, error = %error_chain(&error), "LWA rejected the credentials; not retrying until they change");
            return Err(RefreshError::Terminal { cause });
        }
        let now = self.clock.now();
        lock(&self.breaker).record_failure(now, seed, probe);
        let mut state = lock(&slot.state);
        state.failures = state.failures.saturating_add(1);
        state.last_failed_at = Some(answer.requested_at);
        let delay =
            self.config
                .backoff
                .retry_delay(state.failures, error.retry_after(), self.draw());
        let mut retry_at = clock::add(now, delay);
        // The backoff never runs past the last chance before the token in use expires (unless
        // LWA asked for longer with Retry-After): a connection that failed early in an outage
        // must not sleep through its own expiry once LWA is back.
        if let Some(chance) = answer.deadline.and_then(|d| next_chance(d, now)) {
            let earliest = clock::add(
                now,
                error
                    .retry_after()
                    .unwrap_or_default()
                    .max(self.config.backoff.floor),
            );
            retry_at = retry_at.min(chance.max(earliest));
        }
        state.retry_at = Some(retry_at);
        state.last_category = category;
        tracing::warn!(connection = %key, category, attempts = state.failures, %retry_at, error = %error_chain(&error), "failed to refresh the LWA access token; will retry");
        Err(RefreshError::Retriable {
            category,
            retry_at,
            attempts: state.failures,
        })
    }

    /// LWA answered (a token or a credential rejection). When that closes an open or probing
    /// breaker, the pause and the backoffs of the outage end: every connection the breaker
    /// paused or that backs off from a retriable failure is released and woken, to queue for
    /// the rate limit in expiry order. No slot lock may be held by the caller.
    fn lwa_answered(&self, now: Timestamp) {
        let recovered = {
            let mut breaker = lock(&self.breaker);
            let was_closed = breaker.state(now) == BreakerState::Closed;
            breaker.record_success();
            !was_closed
        };
        if !recovered {
            return;
        }
        let mut woken: Vec<ConnectionKey> = lock(&self.paused).drain().collect();
        let slots: Vec<(ConnectionKey, Arc<Slot>)> = lock(&self.slots)
            .iter()
            .map(|(key, slot)| (key.clone(), slot.clone()))
            .collect();
        for (key, slot) in slots {
            let mut state = lock(&slot.state);
            if state.terminal.is_none() && state.retry_at.is_some_and(|at| at > now) {
                state.retry_at = None;
                woken.push(key);
            }
        }
        tracing::info!(
            woken = woken.len(),
            "LWA answers again: refreshes resume in expiry order"
        );
        for key in woken {
            // No receiver (no controller running) is not an error.
            let _ = self.wake.send(key);
        }
    }

    /// Takes a permit for `key`, or returns its turn in the queue.
    fn take_permit(
        &self,
        now: Timestamp,
        key: &ConnectionKey,
        deadline: Option<Timestamp>,
    ) -> Result<(), RefreshError> {
        match lock(&self.queue).ask(now, key, deadline) {
            Turn::Go => Ok(()),
            Turn::Wait(retry_at) => Err(RefreshError::Throttled { retry_at }),
        }
    }

    /// `until` plus up to a tenth of the breaker's pause, per connection, so paused
    /// connections do not all return in the same instant.
    fn spread(&self, until: Timestamp, seed: u64) -> Timestamp {
        clock::add(
            until,
            schedule::fraction_of(self.config.breaker.open_for / 10, seed),
        )
    }

    /// A random 64-bit value for backoff jitter (SipHash with a per-process random key over a
    /// counter: unpredictable enough to spread retries, no extra dependency).
    fn draw(&self) -> u64 {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::crypto::SecretString;
    use crate::lwa::clock::ManualClock;
    use crate::lwa::token::TokenGrant;

    /// An in-memory LWA: answers with the scripted results in order, then with tokens.
    #[derive(Default)]
    struct FakeLwa {
        calls: AtomicU32,
        script: Mutex<Vec<Result<(), LwaError>>>,
        secrets_seen: Mutex<Vec<String>>,
        delay: Option<Duration>,
    }

    impl TokenSource for FakeLwa {
        async fn refresh_grant(
            &self,
            _client_id: &str,
            client_secret: &SecretString,
            _refresh_token: &SecretString,
        ) -> Result<TokenGrant, LwaError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            lock(&self.secrets_seen).push(client_secret.expose().to_owned());
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            let scripted = {
                let mut script = lock(&self.script);
                (!script.is_empty()).then(|| script.remove(0))
            };
            scripted.unwrap_or(Ok(()))?;
            Ok(TokenGrant {
                access_token: SecretString::from("Atza|fake"),
                token_type: "bearer".into(),
                expires_in: Duration::from_secs(3600),
            })
        }
    }

    fn start() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn engine(fake: FakeLwa, config: EngineConfig) -> (RefreshEngine<FakeLwa>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start()));
        (RefreshEngine::new(fake, config, clock.clone()), clock)
    }

    fn creds(next: Option<&str>) -> ClientCredentials {
        ClientCredentials {
            client_id: "amzn1.application-oa2-client.test".into(),
            client_secret: SecretString::from("current"),
            refresh_token: SecretString::from("Atzr|r"),
            next_client_secret: next.map(SecretString::from),
        }
    }

    fn key(i: u32) -> ConnectionKey {
        ConnectionKey::new("team", &format!("c{i}"))
    }

    fn rejected(code: OAuthErrorCode) -> LwaError {
        LwaError::Rejected { status: 400, code }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let fake = FakeLwa {
            delay: Some(Duration::from_millis(50)),
            ..FakeLwa::default()
        };
        let (engine, _) = engine(fake, EngineConfig::default());
        let engine = Arc::new(engine);
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let engine = engine.clone();
            callers.spawn(async move { engine.refresh(&key(1), "fp", &creds(None), None).await });
        }
        let results = callers.join_all().await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn terminal_errors_block_until_the_fingerprint_changes() {
        let fake = FakeLwa::default();
        lock(&fake.script).push(Err(rejected(OAuthErrorCode::InvalidGrant)));
        let (engine, _) = engine(fake, EngineConfig::default());
        let c = creds(None);
        for _ in 0..3 {
            assert_eq!(
                engine.refresh(&key(1), "gen1", &c, None).await,
                Err(RefreshError::Terminal {
                    cause: TerminalCause::Rejected(OAuthErrorCode::InvalidGrant)
                })
            );
        }
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            engine.decide(start(), &key(1), "gen1", None, Duration::from_secs(1200)),
            RefreshDecision::Blocked {
                cause: TerminalCause::Rejected(OAuthErrorCode::InvalidGrant)
            }
        );
        assert_eq!(
            engine.decide(start(), &key(1), "gen2", None, Duration::from_secs(1200)),
            RefreshDecision::RefreshNow
        );
        assert!(engine.refresh(&key(1), "gen2", &c, None).await.is_ok());
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalid_client_moves_to_the_next_secret_and_stays_there() {
        let fake = FakeLwa::default();
        lock(&fake.script).push(Err(rejected(OAuthErrorCode::InvalidClient)));
        let (engine, _) = engine(fake, EngineConfig::default());
        let c = creds(Some("next"));
        let outcome = engine.refresh(&key(1), "fp", &c, None).await.unwrap();
        assert!(outcome.used_next_secret);
        let outcome = engine.refresh(&key(1), "fp", &c, None).await.unwrap();
        assert!(outcome.used_next_secret);
        assert_eq!(
            *lock(&engine.source.secrets_seen),
            ["current", "next", "next"]
        );
    }

    #[tokio::test]
    async fn retriable_errors_back_off_and_retry_after_is_honoured() {
        let fake = FakeLwa::default();
        lock(&fake.script).push(Err(LwaError::RateLimited {
            retry_after: Some(Duration::from_secs(90)),
        }));
        let (engine, clock) = engine(fake, EngineConfig::default());
        let c = creds(None);
        let Err(RefreshError::Retriable {
            category,
            retry_at,
            attempts,
        }) = engine.refresh(&key(1), "fp", &c, None).await
        else {
            panic!("429 is retriable");
        };
        assert_eq!((category, attempts), ("rate_limited", 1));
        assert!(retry_at >= clock::add(start(), Duration::from_secs(90)));
        // Before retry_at: no call.
        clock.advance(Duration::from_secs(89));
        assert!(engine.refresh(&key(1), "fp", &c, None).await.is_err());
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 1);
        clock.set(retry_at);
        assert!(engine.refresh(&key(1), "fp", &c, None).await.is_ok());
        assert_eq!(engine.failed_attempts(&key(1)), 0);
    }

    fn unavailable() -> LwaError {
        LwaError::Unavailable {
            status: 503,
            code: None,
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn a_throttled_connection_is_told_its_turn_and_keeps_it() {
        let config = EngineConfig {
            rate: RateLimit::new(1.0, 1).unwrap(),
            ..EngineConfig::default()
        };
        let (engine, clock) = engine(FakeLwa::default(), config);
        let c = creds(None);
        assert!(engine.refresh(&key(1), "fp", &c, None).await.is_ok());
        let Err(RefreshError::Throttled { retry_at: turn }) =
            engine.refresh(&key(2), "fp", &c, None).await
        else {
            panic!("the bucket holds one");
        };
        // Until the turn, deciding again tells the same turn and neither calls LWA nor
        // reserves anything more.
        for _ in 0..5 {
            clock.advance(Duration::from_millis(100));
            assert_eq!(
                engine.decide(clock.now(), &key(2), "fp", None, Duration::from_secs(1200)),
                RefreshDecision::RefreshAt {
                    at: turn,
                    reason: WaitReason::RateLimit
                }
            );
        }
        assert_eq!(engine.waiting(), 1);
        clock.set(turn);
        assert_eq!(
            engine.decide(turn, &key(2), "fp", None, Duration::from_secs(1200)),
            RefreshDecision::RefreshNow
        );
        assert!(engine.refresh(&key(2), "fp", &c, None).await.is_ok());
        assert_eq!(engine.waiting(), 0);
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_backoff_never_runs_past_the_last_chance_before_the_token_expires() {
        let fake = FakeLwa::default();
        // Enough failures in a row for the backoff ceiling (5 minutes) to apply.
        for _ in 0..8 {
            lock(&fake.script).push(Err(unavailable()));
        }
        let config = EngineConfig {
            // One connection's failures never open the breaker.
            breaker: BreakerConfig {
                min_connections: 2,
                ..BreakerConfig::default()
            },
            ..EngineConfig::default()
        };
        let (engine, clock) = engine(fake, config);
        let c = creds(None);
        let expires = clock::add(start(), Duration::from_secs(150));
        let last_chance = clock::sub(expires, LAST_CHANCE_BEFORE_EXPIRY);
        let mut retries = Vec::new();
        for _ in 0..6 {
            match engine.refresh(&key(1), "fp", &c, Some(expires)).await {
                Err(RefreshError::Retriable { retry_at, .. }) => {
                    retries.push(retry_at);
                    clock.set(retry_at);
                }
                other => panic!("{other:?}"),
            }
            if clock.now() >= last_chance {
                break;
            }
        }
        assert!(
            retries.iter().all(|at| *at <= last_chance),
            "{retries:?} past {last_chance}"
        );
        assert_eq!(
            retries.last(),
            Some(&last_chance),
            "the last retry is the last chance"
        );
    }

    #[tokio::test]
    async fn when_lwa_answers_again_the_paused_and_backing_off_are_woken() {
        let fake = FakeLwa::default();
        for _ in 0..5 {
            lock(&fake.script).push(Err(unavailable()));
        }
        // Backoffs long enough to outlast the breaker's first pause.
        let config = EngineConfig {
            backoff: BackoffPolicy {
                base: Duration::from_secs(600),
                cap: Duration::from_secs(600),
                floor: Duration::from_secs(60),
                ..BackoffPolicy::default()
            },
            ..EngineConfig::default()
        };
        let (engine, clock) = engine(fake, config);
        let mut woken = engine.woken();
        let c = creds(None);
        // Five connections fail: the breaker opens, each backs off.
        for i in 0..5 {
            assert!(matches!(
                engine.refresh(&key(i), "fp", &c, None).await,
                Err(RefreshError::Retriable { .. })
            ));
        }
        assert!(matches!(
            engine.breaker_state(clock.now()),
            BreakerState::Open { .. }
        ));
        // A sixth is paused by the breaker.
        assert!(matches!(
            engine.decide(clock.now(), &key(5), "fp", None, Duration::from_secs(1200)),
            RefreshDecision::RefreshAt {
                reason: WaitReason::CircuitOpen,
                ..
            }
        ));
        // The pause ends; the probe (connection 9) gets a token.
        clock.advance(Duration::from_secs(31));
        assert!(engine.refresh(&key(9), "fp", &c, None).await.is_ok());
        let mut keys = Vec::new();
        while let Ok(k) = woken.try_recv() {
            keys.push(k.as_str().to_owned());
        }
        keys.sort();
        assert_eq!(
            keys,
            [
                "team/c0", "team/c1", "team/c2", "team/c3", "team/c4", "team/c5"
            ]
        );
        // Their backoff is over: they may refresh now.
        for i in 0..5 {
            assert_eq!(
                engine.decide(clock.now(), &key(i), "fp", None, Duration::from_secs(1200)),
                RefreshDecision::RefreshNow,
                "c{i}"
            );
        }
        // A token while the breaker was closed wakes nobody.
        assert!(engine.refresh(&key(10), "fp", &c, None).await.is_ok());
        assert!(woken.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_rate_limit_hands_out_staggered_return_times() {
        let config = EngineConfig {
            rate: RateLimit::new(2.0, 3).unwrap(),
            ..EngineConfig::default()
        };
        let (engine, _) = engine(FakeLwa::default(), config);
        let c = creds(None);
        let mut retry_ats = Vec::new();
        for i in 0..8 {
            match engine.refresh(&key(i), "fp", &c, None).await {
                Ok(_) => {}
                Err(RefreshError::Throttled { retry_at }) => retry_ats.push(retry_at),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(engine.source.calls.load(Ordering::SeqCst), 3);
        let offsets: Vec<u128> = retry_ats
            .iter()
            .map(|t| clock::since(*t, start()).as_millis())
            .collect();
        assert_eq!(offsets, [500, 1000, 1500, 2000, 2500]);
    }

    #[test]
    fn terminal_causes_are_the_errors_retrying_cannot_help_with_the_same_category() {
        let codes = [
            OAuthErrorCode::InvalidGrant,
            OAuthErrorCode::InvalidClient,
            OAuthErrorCode::UnauthorizedClient,
            OAuthErrorCode::InvalidRequest,
            OAuthErrorCode::InvalidScope,
            OAuthErrorCode::UnsupportedGrantType,
            OAuthErrorCode::ServerError,
            OAuthErrorCode::TemporarilyUnavailable,
            OAuthErrorCode::Other,
        ];
        let errors = codes.into_iter().map(rejected).chain([
            LwaError::IncompleteCredentials {
                field: "refresh token",
            },
            LwaError::InvalidEndpoint {
                reason: "has no host",
            },
            LwaError::InvalidCaFile {
                path: "ca.pem".into(),
                reason: "it holds no PEM certificate",
            },
            LwaError::ReadCaFile {
                path: "ca.pem".into(),
                source: std::io::Error::other("gone"),
            },
            LwaError::BuildClient {
                source: "no TLS".into(),
            },
            LwaError::Unavailable {
                status: 503,
                code: Some(OAuthErrorCode::TemporarilyUnavailable),
                retry_after: None,
            },
            LwaError::RateLimited { retry_after: None },
            LwaError::Timeout,
            LwaError::UnexpectedStatus { status: 302 },
            LwaError::Malformed { what: "no token" },
            LwaError::TooLarge { limit: 1 },
        ]);
        for error in errors {
            let retriable = error.class() == crate::lwa::ErrorClass::Retriable;
            match TerminalCause::of(&error) {
                Some(cause) => {
                    assert!(!retriable, "{error}");
                    assert_eq!(cause.category(), error.category(), "{error}");
                    assert_eq!(
                        RefreshError::Terminal { cause }.category(),
                        error.category()
                    );
                }
                None => assert!(retriable, "{error}"),
            }
        }
    }

    #[test]
    fn rate_limits_outside_their_bounds_are_refused() {
        assert!(RateLimit::new(0.0, 1).is_none());
        assert!(RateLimit::new(f64::NAN, 1).is_none());
        assert!(RateLimit::new(5.0, 0).is_none());
        assert_eq!(RateLimit::DEFAULT.burst(), 10);
        assert_eq!(
            RateLimit::new(20.0, 1).unwrap().period(),
            Duration::from_millis(50)
        );
    }
}
