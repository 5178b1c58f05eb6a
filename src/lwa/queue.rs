//! Turns at the LWA rate limit: who may call LWA now, and when each connection that may not will
//! be served. Pure: instants in, answers out; the engine holds it behind a lock.
//!
//! The limit is a token bucket (GCRA: one permit every `period`, up to `burst` at once). While
//! the bucket has room and nobody waits, a caller goes at once. Otherwise the caller joins a
//! queue ordered by urgency (no valid token first, then the token that expires first, then
//! whoever came first) and is given a *turn*: the instant the bucket will have a permit for it
//! if everyone ahead takes theirs. A turn is kept until the queue changes in front of it, so a
//! caller that comes back early (its own status write made another reconcile, say) is told the
//! same instant and reserves nothing new; only a more urgent newcomer, or a bucket that fell
//! behind, moves it later. So a crowd drains in expiry order at the configured rate and a token
//! that can be refreshed before it expires is.
//!
//! A hand-written bucket rather than `governor`: the queue needs to know *when* the bucket will
//! next have room, which `governor` answers only by taking a permit.

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

#[derive(Clone, Debug)]
struct Waiter {
    key: ConnectionKey,
    /// When the connection's valid token expires; `None`: it has none (most urgent).
    deadline: Option<Timestamp>,
    /// Arrival order, to break ties.
    seq: u64,
    turn: Timestamp,
}

impl Waiter {
    /// The queue's order: no token first, then earliest expiry, then earliest arrival.
    fn urgency(&self) -> (bool, Option<Timestamp>, u64) {
        (self.deadline.is_some(), self.deadline, self.seq)
    }
}

/// The token bucket and the queue of connections waiting for it.
#[derive(Clone, Debug)]
pub struct RateQueue {
    period: Duration,
    /// `period × (burst − 1)`: how far ahead of real time the bucket may be spent.
    tolerance: Duration,
    /// GCRA's theoretical arrival time: the bucket is full when it is `<= now`.
    tat: Timestamp,
    waiting: Vec<Waiter>,
    arrivals: u64,
}

impl RateQueue {
    /// A full bucket of `burst` permits at `now`, refilled one per `period`.
    pub fn new(period: Duration, burst: u32, now: Timestamp) -> Self {
        Self {
            period,
            tolerance: period.saturating_mul(burst.max(1) - 1),
            tat: now,
            waiting: Vec::new(),
            arrivals: 0,
        }
    }

    /// The turn of `key`, if it waits.
    pub fn turn(&self, key: &ConnectionKey) -> Option<Timestamp> {
        self.waiting.iter().find(|w| &w.key == key).map(|w| w.turn)
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
        self.drop_stale(now);
        if let Some(i) = self.waiting.iter().position(|w| &w.key == key) {
            let turn = self.waiting[i].turn;
            if now < turn {
                return Turn::Wait(turn);
            }
            // The permit is the turn's: a waiter that comes back late (its reconcile was slow)
            // takes it as of its turn, so those behind it keep theirs; one overtaken by those
            // behind it takes what the bucket has now.
            if self.take(turn) || self.take(now) {
                self.waiting.remove(i);
                return Turn::Go;
            }
            // The bucket fell behind the turns (a second call for a rotated client secret took
            // a permit, say): this turn and those after it move to when it has room.
            self.waiting[i].turn = self.free_at().max(now);
            self.reflow(i + 1);
            return Turn::Wait(self.waiting[i].turn);
        }
        if self.waiting.is_empty() && self.take(now) {
            return Turn::Go;
        }
        let waiter = Waiter {
            key: key.clone(),
            deadline,
            seq: self.arrivals,
            turn: now,
        };
        self.arrivals += 1;
        let i = self
            .waiting
            .partition_point(|w| w.urgency() <= waiter.urgency());
        self.waiting.insert(i, waiter);
        let earliest = self.free_at().max(now);
        self.waiting[i].turn = match i {
            0 => earliest,
            _ => clock::add(self.waiting[i - 1].turn, self.period).max(earliest),
        };
        self.reflow(i + 1);
        let turn = self.waiting[i].turn;
        if turn <= now && self.take(now) {
            self.waiting.remove(i);
            return Turn::Go;
        }
        Turn::Wait(turn)
    }

    /// Forgets `key` (deleted, suspended, or no longer waiting). The turns of those behind it
    /// stay: they were told them.
    pub fn forget(&mut self, key: &ConnectionKey) {
        self.waiting.retain(|w| &w.key != key);
    }

    /// When the bucket next has a permit.
    fn free_at(&self) -> Timestamp {
        clock::sub(self.tat, self.tolerance)
    }

    /// Takes a permit as of `at` if the bucket has one then.
    fn take(&mut self, at: Timestamp) -> bool {
        if at < self.free_at() {
            return false;
        }
        self.tat = clock::add(self.tat.max(at), self.period);
        true
    }

    /// Keeps the turns from `from` on at least a period apart, moving later ones only.
    fn reflow(&mut self, from: usize) {
        for j in from.max(1)..self.waiting.len() {
            let after = clock::add(self.waiting[j - 1].turn, self.period);
            if self.waiting[j].turn < after {
                self.waiting[j].turn = after;
            }
        }
    }

    fn drop_stale(&mut self, now: Timestamp) {
        self.waiting
            .retain(|w| clock::add(w.turn, STALE_AFTER) >= now);
    }
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
    fn the_token_that_expires_first_is_served_first() {
        let mut q = RateQueue::new(PERIOD, 1, at(0));
        assert_eq!(q.ask(at(0), &key(0), None), Turn::Go);
        let late = ms(q.ask(at(0), &key(1), Some(at(60_000))));
        let early = ms(q.ask(at(0), &key(2), Some(at(30_000))));
        let none = ms(q.ask(at(0), &key(3), None));
        // No token first, then the earlier expiry; the later one is pushed back.
        assert_eq!(none, 200);
        assert_eq!(q.turn(&key(2)), Some(at(400)));
        assert_eq!(q.turn(&key(1)), Some(at(600)));
        assert!(
            late < 600 && early == 200,
            "turns when asked: {late} {early}"
        );
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
