//! When to refresh, and how long to wait after a failure: pure functions of plain values, no
//! I/O, no clock and no Kubernetes types, so every rule is tested exhaustively here.
//!
//! - A token is refreshed at `expires_at − renew_before − jitter`. The jitter is up to 10% of
//!   the token's lifetime, derived from a hash of the connection key: thousands of connections
//!   created together drift apart instead of refreshing in the same second, and a restarted
//!   operator computes the same schedule it had before.
//! - A token that is still valid and not yet due is never refreshed: [`plan`] returns
//!   [`TokenPlan::UseUntil`], which is how a restart with valid tokens makes no LWA calls.
//! - Retriable failures back off exponentially (5 s doubling to 5 min by default) with full
//!   jitter, and never sooner than LWA's `Retry-After`.
//!
//! The backoff is a small function rather than the `backon` crate (already in the tree through
//! kube-runtime): backon keeps its state in an iterator driving a retry loop, while here the
//! attempt count outlives any one call (the reconciler comes back later), the time is virtual in
//! tests, and backon's jitter adds up to one extra delay on top instead of drawing the whole
//! delay at random ("full jitter"), which is what spreads a crowd of failing connections.

use std::time::Duration;

use jiff::Timestamp;

use super::clock;
use super::token::TokenState;

/// The jitter is at most a tenth of the token's lifetime.
pub const MAX_JITTER_DIVISOR: u32 = 10;

/// What to do about a connection's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPlan {
    /// No token, an expired one, or one that is due: refresh it.
    RefreshNow,
    /// The token is valid and not yet due: keep using it and look again at this instant.
    UseUntil(Timestamp),
}

/// A stable 64-bit hash of a connection key (FNV-1a), the seed of its jitter. Stable across
/// processes and Rust versions, unlike `std`'s hasher, so a restart keeps the schedule.
pub fn jitter_seed(key: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    // A final avalanche (from SplitMix64) so keys that differ only in the last character do
    // not land next to each other.
    let mut h = key
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `max × u` for `u` uniform in [0, 1) drawn from the 64-bit `random`, in integer nanoseconds
/// (no float rounding, no panic).
pub fn fraction_of(max: Duration, random: u64) -> Duration {
    let nanos = (max.as_nanos() * u128::from(random >> 11)) >> 53;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The largest jitter for a token of `lifetime` renewed `renew_before` ahead: a tenth of the
/// lifetime, and never more than half of the time between issue and `expires − renew_before`
/// (so a long `renew_before` does not turn into a refresh right after the previous one).
pub fn max_jitter(lifetime: Duration, renew_before: Duration) -> Duration {
    (lifetime / MAX_JITTER_DIVISOR).min(lifetime.saturating_sub(renew_before) / 2)
}

/// The connection's jitter for a token of `lifetime`: deterministic in `seed`.
pub fn jitter(lifetime: Duration, renew_before: Duration, seed: u64) -> Duration {
    fraction_of(max_jitter(lifetime, renew_before), seed)
}

/// When to refresh `token`: `expires_at − renew_before − jitter`.
///
/// A token that lives no longer than `renew_before` cannot be kept valid for `renew_before`;
/// it is refreshed halfway through its life rather than continuously.
pub fn refresh_at(token: TokenState, renew_before: Duration, seed: u64) -> Timestamp {
    let lifetime = token.lifetime();
    if renew_before >= lifetime {
        return clock::add(token.issued_at, lifetime / 2);
    }
    let jitter = jitter(lifetime, renew_before, seed);
    clock::sub(clock::sub(token.expires_at, renew_before), jitter)
}

/// The LWA calls per second one connection needs on average in steady state: one per token,
/// and a token of `lifetime` is used for `lifetime − renew_before − mean jitter` (the jitter
/// is uniform, so its mean is half the maximum). Sizing `--lwa-qps` is summing this.
pub fn steady_calls_per_second(lifetime: Duration, renew_before: Duration) -> f64 {
    let used = if renew_before >= lifetime {
        lifetime / 2
    } else {
        lifetime
            .saturating_sub(renew_before)
            .saturating_sub(max_jitter(lifetime, renew_before) / 2)
    };
    1.0 / used.as_secs_f64().max(1.0)
}

/// Whether `current` must be refreshed at `now`.
pub fn plan(
    now: Timestamp,
    current: Option<TokenState>,
    renew_before: Duration,
    seed: u64,
) -> TokenPlan {
    let Some(token) = current else {
        return TokenPlan::RefreshNow;
    };
    let at = refresh_at(token, renew_before, seed);
    if now >= at || now >= token.expires_at {
        TokenPlan::RefreshNow
    } else {
        TokenPlan::UseUntil(at)
    }
}

/// Capped exponential backoff with full jitter, and how far `Retry-After` is believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest ceiling, reached after a few doublings.
    pub cap: Duration,
    /// The shortest delay: full jitter can draw zero, and a zero-delay retry is a busy loop.
    pub floor: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(5 * 60),
            floor: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60 * 60),
        }
    }
}

impl BackoffPolicy {
    /// The ceiling for retry number `attempt` (1 = the first retry): `base × 2^(attempt−1)`,
    /// at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
            .max(self.floor)
    }

    /// The delay before retry number `attempt`: drawn uniformly between `floor` and the
    /// ceiling from `random`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        self.floor + fraction_of(ceiling.saturating_sub(self.floor), random)
    }

    /// The delay before retry number `attempt` when LWA asked for `retry_after`: never
    /// shorter than what LWA asked for (up to `max_retry_after`).
    pub fn retry_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        random: u64,
    ) -> Duration {
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(self.max_retry_after));
        self.delay(attempt, random).max(asked)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn token(issued: i64, lifetime: Duration) -> TokenState {
        TokenState {
            issued_at: at(issued),
            expires_at: clock::add(at(issued), lifetime),
        }
    }

    #[test]
    fn no_token_means_refresh_now() {
        assert_eq!(plan(at(0), None, HOUR / 3, 7), TokenPlan::RefreshNow);
    }

    #[test]
    fn a_valid_token_that_is_not_due_is_kept() {
        let t = token(0, HOUR);
        let TokenPlan::UseUntil(when) = plan(at(60), Some(t), Duration::from_secs(1200), 42) else {
            panic!("a fresh token must be kept");
        };
        assert!(when <= at(2400) && when >= at(2400 - 360), "{when}");
        // Due: at or after the scheduled instant.
        assert_eq!(
            plan(when, Some(t), Duration::from_secs(1200), 42),
            TokenPlan::RefreshNow
        );
    }

    #[test]
    fn an_expired_token_is_refreshed() {
        let t = token(0, HOUR);
        assert_eq!(
            plan(at(3600), Some(t), Duration::from_secs(300), 1),
            TokenPlan::RefreshNow
        );
    }

    #[test]
    fn the_jitter_is_the_same_for_the_same_connection() {
        let a = jitter(HOUR, HOUR / 3, jitter_seed("team-acme/acme-us"));
        let b = jitter(HOUR, HOUR / 3, jitter_seed("team-acme/acme-us"));
        let c = jitter(HOUR, HOUR / 3, jitter_seed("team-acme/acme-uk"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_token_shorter_than_renew_before_is_refreshed_halfway() {
        let t = token(0, Duration::from_secs(600));
        assert_eq!(refresh_at(t, Duration::from_secs(1200), 99), at(300));
    }

    /// 10,000 connections whose tokens all expire in the same second refresh over six minutes,
    /// never more than a few dozen in any one second.
    #[test]
    fn ten_thousand_connections_with_one_expiry_spread_their_refreshes() {
        let t = token(0, HOUR);
        let mut per_second: HashMap<i64, u32> = HashMap::new();
        for i in 0..10_000 {
            let key = format!("team-{}/connection-{i}", i % 97);
            let when = refresh_at(t, Duration::from_secs(1200), jitter_seed(&key));
            *per_second.entry(when.as_second()).or_default() += 1;
        }
        let busiest = per_second.values().copied().max().unwrap();
        assert!(
            per_second.len() > 300,
            "{} distinct seconds",
            per_second.len()
        );
        assert!(busiest <= 60, "{busiest} refreshes in one second");
    }

    #[test]
    fn backoff_doubles_from_base_to_cap() {
        let policy = BackoffPolicy::default();
        let ceilings: Vec<u64> = (1..=9).map(|a| policy.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(policy.ceiling(u32::MAX), policy.cap);
    }

    #[test]
    fn retry_after_is_never_undercut_but_is_bounded() {
        let policy = BackoffPolicy::default();
        let d = policy.retry_delay(1, Some(Duration::from_secs(120)), 0);
        assert_eq!(d, Duration::from_secs(120));
        let d = policy.retry_delay(1, Some(Duration::from_secs(86_400)), u64::MAX);
        assert_eq!(d, policy.max_retry_after);
    }

    proptest! {
        /// The scheduled refresh is always at least `renew_before` before expiry, the jitter
        /// stays within 10% of the lifetime, and the refresh never comes before the token was
        /// issued.
        #[test]
        fn refresh_is_at_least_renew_before_ahead_and_jitter_is_bounded(
            lifetime_s in 60u64..=86_400,
            renew_fraction in 0.0f64..1.0,
            seed in any::<u64>(),
            issued in -1_000_000i64..1_000_000,
        ) {
            let lifetime = Duration::from_secs(lifetime_s);
            let renew_before = Duration::from_secs_f64(lifetime_s as f64 * renew_fraction);
            prop_assume!(renew_before < lifetime);
            let t = token(issued, lifetime);
            let when = refresh_at(t, renew_before, seed);
            let j = jitter(lifetime, renew_before, seed);
            prop_assert!(j <= lifetime / 10);
            prop_assert!(clock::since(t.expires_at, when) >= renew_before);
            prop_assert_eq!(clock::since(t.expires_at, when), renew_before + j);
            prop_assert!(when > t.issued_at);
        }

        /// With the CRD's bounds (renewBefore 5m..50m) and LWA's one-hour tokens, a token is
        /// always used for at least five minutes before its refresh.
        #[test]
        fn crd_bounds_never_refresh_within_five_minutes_of_issue(
            renew_s in 300u64..=3000,
            seed in any::<u64>(),
        ) {
            let t = token(0, HOUR);
            let when = refresh_at(t, Duration::from_secs(renew_s), seed);
            prop_assert!(clock::since(when, t.issued_at) >= Duration::from_secs(300));
        }

        /// A valid token that is not due is never refreshed, whatever the instant.
        #[test]
        fn a_token_is_refreshed_only_when_due(
            now_s in -10_000i64..10_000,
            renew_s in 300u64..=3000,
            seed in any::<u64>(),
        ) {
            let t = token(0, HOUR);
            let renew_before = Duration::from_secs(renew_s);
            let due = refresh_at(t, renew_before, seed);
            match plan(at(now_s), Some(t), renew_before, seed) {
                TokenPlan::RefreshNow => prop_assert!(at(now_s) >= due),
                TokenPlan::UseUntil(when) => {
                    prop_assert_eq!(when, due);
                    prop_assert!(at(now_s) < due);
                }
            }
        }

        /// Every backoff delay lies between the floor and the cap (or what LWA asked for).
        #[test]
        fn backoff_is_capped(attempt in 0u32..1000, random in any::<u64>(), after in proptest::option::of(0u64..100_000)) {
            let policy = BackoffPolicy::default();
            let d = policy.delay(attempt, random);
            prop_assert!(d >= policy.floor && d <= policy.cap);
            prop_assert!(d <= policy.ceiling(attempt));
            let r = policy.retry_delay(attempt, after.map(Duration::from_secs), random);
            prop_assert!(r <= policy.cap.max(policy.max_retry_after));
            if let Some(after) = after {
                prop_assert!(r >= Duration::from_secs(after).min(policy.max_retry_after));
            }
        }
    }

    #[test]
    fn steady_demand_matches_the_schedule_floor() {
        let hour = Duration::from_secs(3600);
        // renewBefore 20m: each token is used about 37 minutes, 1.62 calls per token lifetime.
        let per_hour = steady_calls_per_second(hour, Duration::from_secs(1200)) * 3600.0;
        assert!((per_hour - 1.62).abs() < 0.01, "{per_hour}");
        // renewBefore 5m: 1.15.
        let per_hour = steady_calls_per_second(hour, Duration::from_secs(300)) * 3600.0;
        assert!((per_hour - 1.15).abs() < 0.01, "{per_hour}");
        // A token no longer than renewBefore is refreshed halfway through its life.
        let short = Duration::from_secs(600);
        assert_eq!(steady_calls_per_second(short, short), 1.0 / 300.0);
    }
}
