//! The circuit breaker toward LWA: a pure state machine over instants the caller supplies.
//!
//! When LWA fails for everyone (consecutive retriable failures from several connections), the
//! breaker opens and every refresh pauses, so an outage is not answered with a retry storm from
//! thousands of connections. After the pause one probe goes through (half-open): its success
//! closes the breaker, its failure reopens it for twice as long, up to a ceiling.
//!
//! An answer that proves LWA is working counts as a success, including a credential rejection
//! (`invalid_grant` is LWA doing its job); only retriable failures count against it.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;

use super::clock;

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retriable failures (with no success in between) that open the breaker.
    pub failure_threshold: u32,
    /// How many distinct connections those failures must come from: one connection with a
    /// broken token does not pause everyone else.
    pub min_connections: usize,
    /// How long the breaker stays open the first time.
    pub open_for: Duration,
    /// The longest it stays open; each failed probe doubles the pause up to this.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            min_connections: 2,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(5 * 60),
        }
    }
}

/// The breaker's state, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests pause until the instant.
    Open {
        /// When the next probe may go.
        until: Timestamp,
    },
    /// One probe may go, or is in flight.
    HalfOpen {
        /// Whether the probe has been handed out.
        probe_in_flight: bool,
    },
}

impl BreakerState {
    /// A bounded label for metrics: `closed`, `open` or `half_open`.
    pub fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Whether a request may go to LWA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerAnswer {
    /// It may; `probe` is true when it is the half-open probe, whose outcome must be reported.
    Allowed {
        /// This request is the probe.
        probe: bool,
    },
    /// It may not before `until`.
    Paused {
        /// When to ask again.
        until: Timestamp,
    },
}

/// The breaker. Not thread-safe by itself: the engine keeps it behind a mutex.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive_failures: u32,
    failing_connections: HashSet<u64>,
    /// The pause the next opening uses.
    next_open_for: Duration,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            failing_connections: HashSet::new(),
            next_open_for: config.open_for,
        }
    }

    /// The state at `now` (an open breaker whose pause is over reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen {
                probe_in_flight: false,
            },
            state => state,
        }
    }

    /// Asks to send a request at `now`. A probe handed out while half-open must be followed
    /// by [`record_success`](Self::record_success), [`record_failure`](Self::record_failure) or
    /// [`abandon_probe`](Self::abandon_probe).
    pub fn admit(&mut self, now: Timestamp) -> BreakerAnswer {
        match self.state(now) {
            BreakerState::Closed => BreakerAnswer::Allowed { probe: false },
            BreakerState::Open { until } => BreakerAnswer::Paused { until },
            BreakerState::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                };
                BreakerAnswer::Allowed { probe: true }
            }
            // Everyone else waits for the probe; they are told to come back after a short
            // while, by when the probe has normally answered.
            BreakerState::HalfOpen {
                probe_in_flight: true,
            } => BreakerAnswer::Paused {
                until: clock::add(now, self.config.open_for / 6),
            },
        }
    }

    /// Asks to send a request at `now` for a connection whose token would expire before the
    /// pause ends: it may probe early, when no probe is in flight. Tokens then expire only
    /// while LWA really is down, not while the breaker waits out a pause LWA has already
    /// recovered from; and each connection asks this at most once per token (at its last
    /// chance), so early probes are no storm.
    pub fn admit_early(&mut self, now: Timestamp) -> BreakerAnswer {
        match self.state(now) {
            BreakerState::Open { .. }
            | BreakerState::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                };
                BreakerAnswer::Allowed { probe: true }
            }
            BreakerState::Closed | BreakerState::HalfOpen { .. } => self.admit(now),
        }
    }

    /// LWA answered (a token or a credential rejection): close the breaker.
    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.failing_connections.clear();
        self.next_open_for = self.config.open_for;
    }

    /// A retriable failure of a request from the connection whose key hashes to `connection`.
    pub fn record_failure(&mut self, now: Timestamp, connection: u64, probe: bool) {
        if probe {
            self.open(now);
            return;
        }
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.failing_connections.insert(connection);
                if self.consecutive_failures >= self.config.failure_threshold
                    && self.failing_connections.len() >= self.config.min_connections
                {
                    self.open(now);
                }
            }
            // A request that started before the breaker opened: the breaker already knows.
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {}
        }
    }

    /// The probe was cancelled before LWA answered: let another request probe.
    pub fn abandon_probe(&mut self) {
        if let BreakerState::HalfOpen {
            probe_in_flight: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    fn open(&mut self, now: Timestamp) {
        self.state = BreakerState::Open {
            until: clock::add(now, self.next_open_for),
        };
        self.next_open_for = (self.next_open_for * 2).min(self.config.max_open_for);
        self.consecutive_failures = 0;
        self.failing_connections.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn open_breaker() -> CircuitBreaker {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for i in 0..5 {
            assert_eq!(
                breaker.admit(at(0)),
                BreakerAnswer::Allowed { probe: false }
            );
            breaker.record_failure(at(0), i % 2, false);
        }
        breaker
    }

    #[test]
    fn consecutive_failures_from_several_connections_open_the_breaker() {
        let breaker = open_breaker();
        assert_eq!(breaker.state(at(1)), BreakerState::Open { until: at(30) });
    }

    #[test]
    fn failures_of_one_connection_alone_do_not_open_it() {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..50 {
            breaker.record_failure(at(0), 7, false);
        }
        assert_eq!(breaker.state(at(0)), BreakerState::Closed);
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for i in 0..20 {
            breaker.record_failure(at(0), i, false);
            if i % 4 == 3 {
                breaker.record_success();
            }
        }
        assert_eq!(breaker.state(at(0)), BreakerState::Closed);
    }

    #[test]
    fn after_the_pause_exactly_one_probe_goes_and_its_success_closes() {
        let mut breaker = open_breaker();
        assert!(
            matches!(breaker.admit(at(29)), BreakerAnswer::Paused { until } if until == at(30))
        );
        assert_eq!(
            breaker.admit(at(30)),
            BreakerAnswer::Allowed { probe: true }
        );
        assert!(matches!(
            breaker.admit(at(30)),
            BreakerAnswer::Paused { .. }
        ));
        breaker.record_success();
        assert_eq!(
            breaker.admit(at(31)),
            BreakerAnswer::Allowed { probe: false }
        );
    }

    #[test]
    fn a_failed_probe_reopens_for_twice_as_long_up_to_the_ceiling() {
        let mut breaker = open_breaker();
        let mut now = at(30);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            assert_eq!(breaker.admit(now), BreakerAnswer::Allowed { probe: true });
            breaker.record_failure(now, 0, true);
            let BreakerState::Open { until } = breaker.state(now) else {
                panic!("a failed probe reopens the breaker");
            };
            pauses.push(clock::since(until, now).as_secs());
            now = until;
        }
        assert_eq!(pauses, [60, 120, 240, 300, 300, 300]);
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe() {
        let mut breaker = open_breaker();
        assert_eq!(
            breaker.admit(at(30)),
            BreakerAnswer::Allowed { probe: true }
        );
        breaker.abandon_probe();
        assert_eq!(
            breaker.admit(at(30)),
            BreakerAnswer::Allowed { probe: true }
        );
    }
}
