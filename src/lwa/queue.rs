//! Turns at the LWA rate limit: who may call LWA now, and when each connection that may not will
//! be served. Pure: instants in, answers out; the engine holds it behind a lock.
//!
//! The limit is a token bucket (GCRA: one permit every `period`, up to `burst` at once). While
//! the bucket has room and nobody waits, a caller goes at once. Otherwise the caller joins a
//! queue ordered by urgency and is given a *turn*: the instant the bucket will have a permit
//! for it if everyone ahead takes theirs. Most urgent is a valid token that expires first: a
//! gateway that works now must not break to serve one that already lacks a token; then come
//! connections without a valid token, in the order they came. A turn is kept until the queue
//! changes in front of it, so a caller that comes back early (its own status write made another
//! reconcile, say) is told the same instant and reserves nothing new; only a more urgent
//! newcomer, or a bucket that fell behind, moves it later. So a crowd drains at the configured
//! rate and a token that can be refreshed before it expires is.
//!
//! A hand-written bucket rather than `governor`: the queue needs to know *when* the bucket will
//! next have room, which `governor` answers only by taking a permit. Turns are kept as integer
//! nanoseconds from the queue's origin and the waiters in urgency order (which is also turn
//! order), indexed by connection, so a queue of many thousands costs little per call.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::clock;
use super::token::ConnectionKey;

/// A waiter that has not come back this long after its turn is dropped: its connection was
/// deleted, suspended, or refreshed by another path. If it does come back, it queues again.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// The answer to a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Call LWA now: a permit is taken.
    Go,
    /// Come back at this instant.
    Wait(Timestamp),
}

/// Nanoseconds since the queue's origin.
type Nanos = i64;

/// The queue's order: a valid token before none, the earlier expiry first, then arrival.
type Urgency = (bool, Option<Timestamp>, u64);

#[derive(Clone, Debug)]
struct Waiter {
    key: ConnectionKey,
    urgency: Urgency,
    turn: Nanos,
}

/// The token bucket and the queue of connections waiting for it.
#[derive(Clone, Debug)]
pub struct RateQueue {
    origin: Timestamp,
    period: Nanos,
    /// `period × (burst − 1)`: how far ahead of real time the bucket may be spent.
    tolerance: Nanos,
    /// GCRA's theoretical arrival time: the bucket is full when it is `<= now`.
    tat: Nanos,
    /// In urgency order; turns never decrease along it.
    waiting: VecDeque<Waiter>,
    /// Each waiter's urgency, to find it.
    index: HashMap<ConnectionKey, Urgency>,
    arrivals: u64,
}

impl RateQueue {
    /// A full bucket of `burst` permits at `now`, refilled one per `period`.
    pub fn new(period: Duration, burst: u32, now: Timestamp) -> Self {
        let period = nanos(period);
        Self {
            origin: now,
            period,
            tolerance: period.saturating_mul(i64::from(burst.max(1) - 1)),
            tat: 0,
            waiting: VecDeque::new(),
            index: HashMap::new(),
            arrivals: 0,
        }
    }

    /// The turn of `key`, if it waits.
    pub fn turn(&self, key: &ConnectionKey) -> Option<Timestamp> {
        self.position(key)
            .map(|i| self.instant(self.waiting[i].turn))
    }

    /// How many connections wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Asks for a permit for `key` at `now`; `deadline` is when its valid token expires (`None`:
    /// it has none). A caller that waits keeps its place and its turn.
    pub fn ask(
        &mut self,
        now: Timestamp,
        key: &ConnectionKey,
        deadline: Option<Timestamp>,
    ) -> Turn {
        let now = self.nanos_at(now);
        self.drop_stale(now);
        if let Some(i) = self.position(key) {
            let turn = self.waiting[i].turn;
            if now < turn {
                return Turn::Wait(self.instant(turn));
            }
            // The permit is the turn's: a waiter that comes back late (its reconcile was slow)
            // takes it as of its turn, so those behind it keep theirs; one overtaken by those
            // behind it takes what the bucket has now.
            if self.take(turn) || self.take(now) {
                self.remove(i);
                return Turn::Go;
            }
            // The bucket fell behind the turns (a second call for a rotated client secret took
            // a permit, say): this turn and those after it move to when it has room.
            self.waiting[i].turn = self.free_at().max(now);
            self.reflow(i + 1);
            return Turn::Wait(self.instant(self.waiting[i].turn));
        }
        if self.waiting.is_empty() && self.take(now) {
            return Turn::Go;
        }
        let urgency = (deadline.is_none(), deadline, self.arrivals);
        self.arrivals += 1;
        let i = self.waiting.partition_point(|w| w.urgency <= urgency);
        let earliest = self.free_at().max(now);
        let turn = match i {
            0 => earliest,
            _ => (self.waiting[i - 1].turn + self.period).max(earliest),
        };
        self.waiting.insert(
            i,
            Waiter {
                key: key.clone(),
                urgency,
                turn,
            },
        );
        self.index.insert(key.clone(), urgency);
        self.reflow(i + 1);
        if turn <= now && self.take(now) {
            self.remove(i);
            return Turn::Go;
        }
        Turn::Wait(self.instant(turn))
    }

    /// Forgets `key` (deleted, suspended, or no longer waiting). The turns of those behind it
    /// stay: they were told them.
    pub fn forget(&mut self, key: &ConnectionKey) {
        if let Some(i) = self.position(key) {
            self.remove(i);
        }
    }

    fn position(&self, key: &ConnectionKey) -> Option<usize> {
        let urgency = self.index.get(key)?;
        self.waiting
            .binary_search_by(|w| w.urgency.cmp(urgency))
            .ok()
    }

    fn remove(&mut self, i: usize) {
        if let Some(waiter) = self.waiting.remove(i) {
            self.index.remove(&waiter.key);
        }
    }

    /// When the bucket next has a permit.
    fn free_at(&self) -> Nanos {
        self.tat - self.tolerance
    }

    /// Takes a permit as of `at` if the bucket has one then.
    fn take(&mut self, at: Nanos) -> bool {
        if at < self.free_at() {
            return false;
        }
        self.tat = self.tat.max(at) + self.period;
        true
    }

    /// Keeps the turns from `from` on at least a period apart, moving later ones only; stops at
    /// the first that need not move (those after it are spaced already).
    fn reflow(&mut self, from: usize) {
        for j in from.max(1)..self.waiting.len() {
            let after = self.waiting[j - 1].turn + self.period;
            if self.waiting[j].turn >= after {
                break;
            }
            self.waiting[j].turn = after;
        }
    }

    /// Drops the waiters whose turn passed more than [`STALE_AFTER`] ago: a prefix, since turns
    /// never decrease along the queue.
    fn drop_stale(&mut self, now: Nanos) {
        let cutoff = now - nanos(STALE_AFTER);
        while self.waiting.front().is_some_and(|w| w.turn < cutoff) {
            self.remove(0);
        }
    }

    fn nanos_at(&self, at: Timestamp) -> Nanos {
        if at >= self.origin {
            nanos(clock::since(at, self.origin))
        } else {
            -nanos(clock::since(self.origin, at))
        }
    }

    fn instant(&self, at: Nanos) -> Timestamp {
        let by = Duration::from_nanos(at.unsigned_abs());
        if at >= 0 {
            clock::add(self.origin, by)
        } else {
            clock::sub(self.origin, by)
        }
    }
}

/// A duration in nanoseconds, saturating (about 292 years).
fn nanos(duration: Duration) -> Nanos {
    Nanos::try_from(duration.as_nanos()).unwrap_or(Nanos::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(200); // 5 a second

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    fn key(i: usize) -> ConnectionKey {
        ConnectionKey::new("team-acme", &format!("c{i}"))
    }

    fn ms(turn: Turn) -> i64 {
        match turn {
            Turn::Go => 0,
            Turn::Wait(t) => t.as_millisecond() - 1_700_000_000_000,
        }
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_get_turns_a_period_apart() {
        let mut q = RateQueue::new(PERIOD, 10, at(0));
        for i in 0..10 {
            assert_eq!(q.ask(at(0), &key(i), None), Turn::Go, "{i}");
        }
        let turns: Vec<i64> = (10..15).map(|i| ms(q.ask(at(0), &key(i), None))).collect();
        assert_eq!(turns, [200, 400, 600, 800, 1000]);
    }

    #[test]
    fn asking_again_before_the_turn_reserves_nothing_new() {
        let mut q = RateQueue::new(PERIOD, 1, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        assert_eq!(ms(q.ask(at(0), &key(1), None)), 200);
        assert_eq!(ms(q.ask(at(0), &key(2), None)), 400);
        // key 1 comes back many times early: same turn, and key 2's turn does not move.
        for t in [10, 50, 150, 199] {
            assert_eq!(ms(q.ask(at(t), &key(1), None)), 200);
        }
        assert_eq!(q.turn(&key(2)), Some(at(400)));
        assert_eq!(q.ask(at(200), &key(1), None), Turn::Go);
        assert_eq!(q.ask(at(400), &key(2), None), Turn::Go);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn the_token_that_expires_first_is_served_first_then_those_without_one() {
        let mut q = RateQueue::new(PERIOD, 1, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        let none = ms(q.ask(at(0), &key(3), None));
        let late = ms(q.ask(at(0), &key(1), Some(at(60_000))));
        let early = ms(q.ask(at(0), &key(2), Some(at(30_000))));
        // A working gateway must not break to serve one that already lacks a token: valid
        // tokens first, the earlier expiry first; those behind are pushed back a period each.
        assert_eq!((none, late, early), (200, 200, 200), "turns when asked");
        assert_eq!(q.turn(&key(2)), Some(at(200)));
        assert_eq!(q.turn(&key(1)), Some(at(400)));
        assert_eq!(q.turn(&key(3)), Some(at(600)));
        assert_eq!(q.waiting(), 3);
    }

    #[test]
    fn many_waiters_cost_little_and_drain_in_order() {
        // 50,000 connections without a token asking twice each, then served at their turns:
        // every call finds its waiter by index, and those served leave from the front.
        let mut q = RateQueue::new(PERIOD, 10, at(0));
        let n = 50_000;
        let turns: Vec<i64> = (0..n).map(|i| ms(q.ask(at(0), &key(i), None))).collect();
        let waiting: Vec<usize> = (0..n).filter(|i| turns[*i] > 0).collect();
        assert_eq!(waiting.len(), n - 10, "the burst went at once");
        for &i in &waiting {
            assert_eq!(ms(q.ask(at(0), &key(i), None)), turns[i], "{i}");
        }
        for &i in &waiting {
            assert_eq!(q.ask(at(turns[i]), &key(i), None), Turn::Go, "{i}");
        }
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_late_waiter_does_not_hold_up_those_behind_it() {
        let mut q = RateQueue::new(PERIOD, 1, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        assert_eq!(ms(q.ask(at(0), &key(1), None)), 200);
        assert_eq!(ms(q.ask(at(0), &key(2), None)), 400);
        // key 1 is slow to come back; key 2 comes at its turn and goes.
        assert_eq!(q.ask(at(400), &key(2), None), Turn::Go);
        assert_eq!(q.ask(at(700), &key(1), None), Turn::Go);
    }

    #[test]
    fn a_waiter_far_behind_its_turn_does_not_move_the_turns_after_it() {
        let mut q = RateQueue::new(PERIOD, 2, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        assert_eq!(q.ask(at(0), &key(1), None), Turn::Go);
        assert_eq!(ms(q.ask(at(0), &key(2), None)), 200);
        assert_eq!(ms(q.ask(at(0), &key(3), None)), 400);
        // key 2 comes back 900 ms late, well past the bucket's tolerance; key 3, on time
        // after it, still goes.
        assert_eq!(q.ask(at(1100), &key(2), None), Turn::Go);
        assert_eq!(q.ask(at(1100), &key(3), None), Turn::Go);
    }

    #[test]
    fn a_newcomer_waits_behind_those_with_turns_even_when_the_bucket_has_room() {
        let mut q = RateQueue::new(PERIOD, 2, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        assert_eq!(q.ask(at(0), &key(1), None), Turn::Go);
        assert_eq!(ms(q.ask(at(0), &key(2), None)), 200);
        // At 300 ms the bucket has room, but key 2 has not taken its permit yet: a newcomer
        // with the same urgency queues behind it.
        assert_eq!(ms(q.ask(at(300), &key(3), None)), 400);
    }

    #[test]
    fn a_waiter_that_never_comes_back_is_forgotten() {
        let mut q = RateQueue::new(PERIOD, 1, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        assert_eq!(ms(q.ask(at(0), &key(1), None)), 200);
        let later = 200 + STALE_AFTER.as_millis() as i64 + 1;
        assert_eq!(q.ask(at(later), &key(2), None), Turn::Go);
        assert_eq!(q.turn(&key(1)), None);
    }

    #[test]
    fn n_at_once_are_all_served_within_the_rate_limit_plus_one_period() {
        // The bound the engine promises: (N − burst) / qps plus one interval.
        for (n, burst) in [(100usize, 10u32), (37, 1), (5, 20)] {
            let mut q = RateQueue::new(PERIOD, burst, at(0));
            let mut last = 0;
            let mut pending: Vec<(usize, i64)> = Vec::new();
            for i in 0..n {
                match q.ask(at(0), &key(i), None) {
                    Turn::Go => {}
                    Turn::Wait(_) => pending.push((i, ms(q.ask(at(0), &key(i), None)))),
                }
            }
            // Everyone comes back at their turn.
            pending.sort_by_key(|(_, t)| *t);
            for (i, t) in pending {
                assert_eq!(
                    q.ask(at(t), &key(i), None),
                    Turn::Go,
                    "n={n} key {i} at {t}"
                );
                last = last.max(t);
            }
            let bound = (n.saturating_sub(burst as usize) as i64 + 1) * PERIOD.as_millis() as i64;
            assert!(
                last <= bound,
                "n={n} burst={burst}: last at {last} ms, bound {bound}"
            );
        }
    }
}
