//! The refresh engine at scale, in virtual time, against an in-process LWA, driven the way the
//! reconciler drives it: decide; refresh when told, with the expiry of the token in use as the
//! deadline; requeue at the instant any refusal names (one pending reconcile per connection, the
//! earliest wins, as in kube-runtime's scheduler); and reconcile at once the connections the
//! engine wakes when LWA answers again after an outage. `tests/refresh_queue.rs` is the same
//! model with assertions; this one prints figures and asserts nothing about timing.
//!
//! Scenarios:
//! - **creation burst**: N connections created at once (the run's N and rate limit, and 100 at
//!   5/s with bursts of 10): when each gets its first token (p50 / p99 / p100 against the
//!   queue's bound `(N − burst)/qps + 1/qps`), how often each was refused by the rate limit,
//!   LWA calls;
//! - **a simulated day** (a restart at +12 h; the shortest renewBefore; a 15-minute outage at
//!   +6 h, at the base rate limit and at twice it): LWA calls per connection per token lifetime
//!   against the schedule's floor, peak calls in one second against the bucket's
//!   `burst + qps`, tokens that lapsed, calls caused by the restart, CPU per refresh;
//! - **outage recovery** (no restart): steady state, then LWA answers 503 for 60 s or 15
//!   minutes; tokens that expired while LWA was down, and those that expired while it answered
//!   again beyond the engine's final chance ([`FINAL_CHANCE_BEFORE_EXPIRY`]) and whether the
//!   rate limit was spent then, how long the backlog took to drain, peak calls per second,
//!   wake-ups (and those missed by a receiver more than the channel's capacity behind).
//!
//! Run: `cargo bench --bench lwa_refresh [-- --connections N] [--lwa-qps Q --lwa-burst B]`
//! (10,000 connections and `run`'s default 10/s with bursts of 20 unless told). Under
//! `cargo test --all-targets` it makes a 200-connection smoke run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amazon_seller_operator::crypto::SecretString;
use amazon_seller_operator::lwa::clock;
use amazon_seller_operator::lwa::engine::FINAL_CHANCE_BEFORE_EXPIRY;
use amazon_seller_operator::lwa::schedule::{self, TokenPlan};
use amazon_seller_operator::lwa::{
    ClientCredentials, Clock, ConnectionKey, EngineConfig, LwaError, ManualClock, RateLimit,
    RefreshDecision, RefreshEngine, RefreshError, TokenGrant, TokenSource, TokenState, WaitReason,
};
use jiff::Timestamp;
use tokio::sync::broadcast::{self, error::TryRecvError};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Counts per second since the start.
#[derive(Default)]
struct PerSecond(Vec<u32>);

impl PerSecond {
    fn second(at: Timestamp) -> usize {
        clock::since(at, start()).as_secs() as usize
    }

    fn count(&mut self, at: Timestamp) {
        let second = Self::second(at);
        if self.0.len() <= second {
            self.0.resize(second + 1, 0);
        }
        self.0[second] += 1;
    }

    /// How many whole seconds `[from, until)` covers.
    fn seconds(from: Timestamp, until: Timestamp) -> usize {
        Self::second(until).saturating_sub(Self::second(from))
    }

    /// The counts of the whole seconds `[from, until)` covers.
    fn window(&self, from: Timestamp, until: Timestamp) -> &[u32] {
        let bound = |at| Self::second(at).min(self.0.len());
        self.0.get(bound(from)..bound(until)).unwrap_or(&[])
    }

    fn sum(&self, from: Timestamp, until: Timestamp) -> u64 {
        self.window(from, until).iter().map(|n| u64::from(*n)).sum()
    }

    fn max(&self, from: Timestamp, until: Timestamp) -> u32 {
        self.window(from, until).iter().copied().max().unwrap_or(0)
    }
}

/// LWA in process: answers every call with a token of `lifetime`, or 503 during the outage;
/// counts the calls of every second.
struct SimLwa {
    clock: Arc<ManualClock>,
    lifetime: Duration,
    outage: Option<(Timestamp, Timestamp)>,
    calls: AtomicU64,
    failures: AtomicU64,
    per_second: Mutex<PerSecond>,
}

impl SimLwa {
    fn per_second(&self) -> std::sync::MutexGuard<'_, PerSecond> {
        self.per_second
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most calls in one second of `[from, until)`.
    fn peak(&self, from: Timestamp, until: Timestamp) -> u32 {
        self.per_second().max(from, until)
    }

    /// The calls made in `[from, until)`.
    fn calls_between(&self, from: Timestamp, until: Timestamp) -> u64 {
        self.per_second().sum(from, until)
    }
}

impl TokenSource for SimLwa {
    async fn refresh_grant(
        &self,
        _client_id: &str,
        _client_secret: &SecretString,
        _refresh_token: &SecretString,
    ) -> Result<TokenGrant, LwaError> {
        let now = self.clock.now();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.per_second().count(now);
        if self
            .outage
            .is_some_and(|(from, until)| from <= now && now < until)
        {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(LwaError::Unavailable {
                status: 503,
                code: None,
                retry_after: None,
            });
        }
        Ok(TokenGrant {
            access_token: SecretString::from("Atza|simulated"),
            token_type: "bearer".into(),
            expires_in: self.lifetime,
        })
    }
}

/// Lets the simulation keep a handle on the LWA stand-in across engines (a restart makes a
/// new one).
struct SharedLwa(Arc<SimLwa>);

impl TokenSource for SharedLwa {
    fn refresh_grant(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> impl std::future::Future<Output = Result<TokenGrant, LwaError>> + Send {
        self.0
            .refresh_grant(client_id, client_secret, refresh_token)
    }
}

/// What one simulation runs. Every connection is created at the start.
#[derive(Clone, Copy)]
struct Setup {
    connections: usize,
    rate: RateLimit,
    lifetime: Duration,
    renew_before: Duration,
    /// LWA answers 503 from this long after the start, for this long.
    outage: Option<(Duration, Duration)>,
    /// The operator restarts this long after the start.
    restart_at: Option<Duration>,
    /// How long the simulation runs.
    length: Duration,
}

/// A token that expired before its successor was issued.
#[derive(Clone, Copy, Debug)]
struct Lapse {
    connection: usize,
    expired_at: Timestamp,
    /// `None`: still expired when the simulation ended.
    replaced_at: Option<Timestamp>,
}

/// The connections that were due, or had no valid token, when LWA came back, and when each
/// next got a token.
struct Backlog {
    since: Timestamp,
    members: Vec<bool>,
    count: usize,
    served_at: Vec<Option<Timestamp>>,
    /// The first token issued after LWA came back: when the engine learned it.
    first_token: Option<Timestamp>,
}

/// What a restart cost.
struct Restart {
    calls: u64,
    /// Connections whose token had expired or was due at the restart (they would call anyway).
    due: usize,
}

/// The reconciler and the engine over virtual time.
struct Sim {
    setup: Setup,
    lwa: Arc<SimLwa>,
    clock: Arc<ManualClock>,
    config: EngineConfig,
    engine: RefreshEngine<SharedLwa>,
    woken: broadcast::Receiver<ConnectionKey>,
    keys: Vec<ConnectionKey>,
    index: HashMap<ConnectionKey, usize>,
    creds: Vec<ClientCredentials>,
    /// The token each connection last got (kept after it expires, to see the lapse).
    tokens: Vec<Option<TokenState>>,
    /// The one reconcile queued per connection: a new trigger replaces it only when earlier.
    pending: Vec<Option<Timestamp>>,
    events: BinaryHeap<Reverse<(Timestamp, usize)>>,
    first_token_at: Vec<Option<Timestamp>>,
    with_token: usize,
    throttled: Vec<u32>,
    /// Rate-limit refusals before the connection's first token.
    throttled_before_first: Vec<u32>,
    /// Tokens issued to connections without a valid one.
    tokenless_served: PerSecond,
    lapses: Vec<Lapse>,
    backlog: Option<Backlog>,
    restart: Option<Restart>,
    /// Successes from here on count as steady state (after the creation burst).
    steady_from: Timestamp,
    steady_successes: u64,
    successes: u64,
    circuit_open: u64,
    deferred_by_breaker: u64,
    events_run: u64,
    woken_count: u64,
    missed_wakeups: u64,
}

impl Sim {
    fn new(setup: Setup) -> Self {
        let clock = Arc::new(ManualClock::new(start()));
        let outage = setup
            .outage
            .map(|(from, len)| (clock::add(start(), from), clock::add(start(), from + len)));
        let lwa = Arc::new(SimLwa {
            clock: clock.clone(),
            lifetime: setup.lifetime,
            outage,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            per_second: Mutex::new(PerSecond::default()),
        });
        let config = EngineConfig {
            rate: setup.rate,
            ..EngineConfig::default()
        };
        let engine = RefreshEngine::new(SharedLwa(lwa.clone()), config, clock.clone());
        let woken = engine.woken();
        let n = setup.connections;
        let keys: Vec<ConnectionKey> = (0..n)
            .map(|i| ConnectionKey::new(&format!("team-{}", i % 250), &format!("seller-{i}")))
            .collect();
        let index = keys.iter().cloned().zip(0..).collect();
        let creds = (0..n)
            .map(|i| ClientCredentials {
                client_id: format!("amzn1.application-oa2-client.{i}"),
                client_secret: SecretString::from(format!("secret-{i}")),
                refresh_token: SecretString::from(format!("Atzr|refresh-{i}")),
                next_client_secret: None,
            })
            .collect();
        let mut sim = Self {
            setup,
            lwa,
            clock,
            config,
            engine,
            woken,
            keys,
            index,
            creds,
            tokens: vec![None; n],
            pending: vec![None; n],
            events: BinaryHeap::with_capacity(n),
            first_token_at: vec![None; n],
            with_token: 0,
            throttled: vec![0; n],
            throttled_before_first: vec![0; n],
            tokenless_served: PerSecond::default(),
            lapses: Vec::new(),
            backlog: None,
            restart: None,
            steady_from: clock::add(start(), setup.lifetime),
            steady_successes: 0,
            successes: 0,
            circuit_open: 0,
            deferred_by_breaker: 0,
            events_run: 0,
            woken_count: 0,
            missed_wakeups: 0,
        };
        for i in 0..n {
            sim.schedule(i, start());
        }
        sim
    }

    fn seed(&self, i: usize) -> u64 {
        schedule::jitter_seed(self.keys[i].as_str())
    }

    /// Queues a reconcile of connection `i` at `at`, unless an earlier one is queued.
    fn schedule(&mut self, i: usize, at: Timestamp) {
        if self.pending[i].is_some_and(|p| p <= at) {
            return;
        }
        self.pending[i] = Some(at);
        self.events.push(Reverse((at, i)));
    }

    /// Runs the next reconcile due before `before`; `false` when there is none.
    async fn step(&mut self, before: Timestamp) -> bool {
        while let Some(Reverse((at, i))) = self.events.peek().copied() {
            if at >= before {
                return false;
            }
            self.events.pop();
            if self.pending[i] != Some(at) {
                continue; // replaced by an earlier trigger, already run
            }
            self.pending[i] = None;
            self.clock.set(at);
            self.reconcile(i, at).await;
            self.drain_woken(at);
            return true;
        }
        false
    }

    /// Runs every reconcile due before `before`.
    async fn run_until(&mut self, before: Timestamp) {
        while self.step(before).await {}
        self.clock.set(before);
    }

    /// The controller reconciles the connections the engine woke at once. One that fell more
    /// than the channel's capacity behind misses the oldest; those come back at their requeue.
    fn drain_woken(&mut self, now: Timestamp) {
        loop {
            match self.woken.try_recv() {
                Ok(key) => {
                    self.woken_count += 1;
                    if let Some(&j) = self.index.get(&key) {
                        self.schedule(j, now);
                    }
                }
                Err(TryRecvError::Lagged(missed)) => self.missed_wakeups += missed,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    /// One reconcile of connection `i`, as the controller makes it.
    async fn reconcile(&mut self, i: usize, now: Timestamp) {
        self.events_run += 1;
        // The token in use is the one read back from the runtime Secret, if it has not expired.
        let current = self.tokens[i].filter(|t| t.expires_at > now);
        let decision =
            self.engine
                .decide(now, &self.keys[i], "fp", current, self.setup.renew_before);
        let next = match decision {
            RefreshDecision::UseExisting { refresh_at } => Some(refresh_at),
            RefreshDecision::RefreshAt { at, reason } => {
                if reason == WaitReason::CircuitOpen {
                    self.deferred_by_breaker += 1;
                }
                Some(at)
            }
            RefreshDecision::Blocked { .. } => None,
            RefreshDecision::RefreshNow => {
                let deadline = current.map(|t| t.expires_at);
                let result = self
                    .engine
                    .refresh(&self.keys[i], "fp", &self.creds[i], deadline)
                    .await;
                match result {
                    Ok(refreshed) => {
                        self.refreshed(i, now, deadline, refreshed.token.state());
                        // The next reconcile reads the new token back and is told its due time.
                        Some(now)
                    }
                    Err(RefreshError::Throttled { retry_at }) => {
                        self.throttled[i] += 1;
                        if self.first_token_at[i].is_none() {
                            self.throttled_before_first[i] += 1;
                        }
                        Some(retry_at)
                    }
                    Err(RefreshError::CircuitOpen { until }) => {
                        self.circuit_open += 1;
                        Some(until)
                    }
                    Err(RefreshError::Retriable { retry_at, .. }) => Some(retry_at),
                    Err(RefreshError::Terminal { .. }) => None,
                }
            }
        };
        if let Some(next) = next {
            self.schedule(i, next.max(now));
        }
    }

    fn refreshed(
        &mut self,
        i: usize,
        now: Timestamp,
        deadline: Option<Timestamp>,
        token: TokenState,
    ) {
        self.successes += 1;
        if deadline.is_none() {
            self.tokenless_served.count(now);
        }
        if now >= self.steady_from {
            self.steady_successes += 1;
        }
        if let Some(old) = self.tokens[i]
            && old.expires_at <= now
        {
            self.lapses.push(Lapse {
                connection: i,
                expired_at: old.expires_at,
                replaced_at: Some(now),
            });
        }
        if self.first_token_at[i].is_none() {
            self.first_token_at[i] = Some(now);
            self.with_token += 1;
        }
        if let Some(backlog) = &mut self.backlog {
            backlog.first_token.get_or_insert(now);
            if backlog.members[i] && backlog.served_at[i].is_none() {
                backlog.served_at[i] = Some(now);
            }
        }
        self.tokens[i] = Some(token);
    }

    /// The operator restarts at `at`: a new engine (full bucket, no memory), the old requeues
    /// gone, and every connection reconciled at once with the token read back from its runtime
    /// Secret (whole seconds).
    async fn restart(&mut self, at: Timestamp) {
        self.clock.set(at);
        self.engine =
            RefreshEngine::new(SharedLwa(self.lwa.clone()), self.config, self.clock.clone());
        self.woken = self.engine.woken();
        self.events.clear();
        self.pending.fill(None);
        let whole = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
        for token in self.tokens.iter_mut().flatten() {
            *token = TokenState {
                expires_at: whole(token.expires_at),
                issued_at: whole(token.issued_at),
            };
        }
        let before = self.lwa.calls.load(Ordering::Relaxed);
        let mut due = 0;
        for i in 0..self.setup.connections {
            let current = self.tokens[i].filter(|t| t.expires_at > at);
            if schedule::plan(at, current, self.setup.renew_before, self.seed(i))
                == TokenPlan::RefreshNow
            {
                due += 1;
            }
            self.reconcile(i, at).await;
            self.drain_woken(at);
        }
        self.restart = Some(Restart {
            calls: self.lwa.calls.load(Ordering::Relaxed) - before,
            due,
        });
    }

    /// LWA answers again at `at`: remembers which connections were due or had no valid token.
    fn lwa_back(&mut self, at: Timestamp) {
        let members: Vec<bool> = (0..self.setup.connections)
            .map(|i| {
                let current = self.tokens[i].filter(|t| t.expires_at > at);
                schedule::plan(at, current, self.setup.renew_before, self.seed(i))
                    == TokenPlan::RefreshNow
            })
            .collect();
        self.backlog = Some(Backlog {
            since: at,
            count: members.iter().filter(|m| **m).count(),
            served_at: vec![None; members.len()],
            first_token: None,
            members,
        });
    }

    /// The end of the simulation: tokens still expired count as lapsed.
    fn finish(&mut self, end: Timestamp) {
        for (i, token) in self.tokens.iter().enumerate() {
            if let Some(token) = token
                && token.expires_at <= end
            {
                self.lapses.push(Lapse {
                    connection: i,
                    expired_at: token.expires_at,
                    replaced_at: None,
                });
            }
        }
    }

    /// Whether the rate limit was spent before `at`: the bucket granted at least 98% of `qps`
    /// a second over the minute before (or since LWA came back, when that is later). A token
    /// that expired then expired for want of capacity, whatever the queue's order.
    fn rate_spent_before(&self, at: Timestamp) -> bool {
        let mut from = clock::sub(at, MINUTE);
        if let Some((_, back)) = self.lwa.outage
            && back <= at
        {
            from = from.max(back);
        }
        let seconds = PerSecond::seconds(from, at).max(1);
        let calls = self.lwa.calls_between(from, at);
        calls as f64 >= 0.98 * self.setup.rate.qps() * seconds as f64
    }
}

/// CPU time of this thread, from the scheduler's own accounting (Linux); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// A simulation run to its end, with the CPU and wall time it took.
struct Run {
    sim: Sim,
    cpu: Duration,
    wall: Duration,
}

/// What happens at an instant of a simulation besides reconciles.
enum Milestone {
    Restart,
    LwaBack,
}

async fn simulate(setup: Setup) -> Run {
    let cpu_before = thread_cpu_time();
    let wall_before = Instant::now();
    let mut sim = Sim::new(setup);
    let restart = setup.restart_at.map(|at| clock::add(start(), at));
    let back = setup
        .outage
        .map(|(from, len)| clock::add(start(), from + len));
    let mut milestones: Vec<(Timestamp, Milestone)> = restart
        .map(|at| (at, Milestone::Restart))
        .into_iter()
        .chain(back.map(|at| (at, Milestone::LwaBack)))
        .collect();
    milestones.sort_by_key(|(at, _)| *at);
    for (at, milestone) in milestones {
        sim.run_until(at).await;
        match milestone {
            Milestone::Restart => sim.restart(at).await,
            Milestone::LwaBack => sim.lwa_back(at),
        }
    }
    let end = clock::add(start(), setup.length);
    sim.run_until(end).await;
    sim.finish(end);
    let wall = wall_before.elapsed();
    let cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall,
    };
    Run { sim, cpu, wall }
}

fn rate_text(rate: RateLimit) -> String {
    format!("{}/s burst {}", rate.qps(), rate.burst())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(values: &[Duration], p: usize) -> Duration {
    match values.len() {
        0 => Duration::ZERO,
        n => values[(n * p).div_ceil(100).clamp(1, n) - 1],
    }
}

/// N connections created at once: how soon each gets its first token.
async fn creation_burst(connections: usize, rate: RateLimit) {
    let excess = connections.saturating_sub(rate.burst() as usize) as f64;
    let bound = Duration::from_secs_f64(excess / rate.qps() + 1.0 / rate.qps());
    let setup = Setup {
        connections,
        rate,
        lifetime: HOUR,
        renew_before: 20 * MINUTE,
        outage: None,
        restart_at: None,
        length: bound * 2 + HOUR,
    };
    let mut sim = Sim::new(setup);
    let cap = clock::add(start(), setup.length);
    let cpu_before = thread_cpu_time();
    let wall_before = Instant::now();
    while sim.with_token < connections && sim.step(cap).await {}
    let cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => wall_before.elapsed(),
    };
    let mut first: Vec<Duration> = sim
        .first_token_at
        .iter()
        .flatten()
        .map(|at| clock::since(*at, start()))
        .collect();
    first.sort();
    println!(
        "\n== creation burst: {connections} connections created at once, rate limit {}, 1 h tokens",
        rate_text(rate)
    );
    println!(
        "first token after creation: p50 {} / p99 {} / p100 {} (bound (N − burst)/qps + 1/qps = {}){}",
        secs(percentile(&first, 50)),
        secs(percentile(&first, 99)),
        secs(percentile(&first, 100)),
        secs(bound),
        match connections - first.len() {
            0 => String::new(),
            missing => format!("; {missing} connections got none"),
        }
    );
    let before_first: u64 = sim
        .throttled_before_first
        .iter()
        .map(|t| u64::from(*t))
        .sum();
    let all: u64 = sim.throttled.iter().map(|t| u64::from(*t)).sum();
    let now = sim.clock.now();
    sim.finish(now);
    println!(
        "throttled refusals per connection before its first token: max {}, total {} (N − burst = \
         {}); LWA calls: {}{}",
        sim.throttled_before_first
            .iter()
            .max()
            .copied()
            .unwrap_or(0),
        before_first,
        connections.saturating_sub(rate.burst() as usize),
        sim.lwa.calls.load(Ordering::Relaxed),
        match all - before_first {
            0 => String::new(),
            later => format!(
                "; meanwhile {later} refusals of the first tokens' refreshes (queued behind \
                 connections without a token) and {} tokens expired before their successor",
                sim.lapses.len()
            ),
        }
    );
    // The scheduler's accounting moves in ticks: a few milliseconds read as nothing.
    if cpu >= Duration::from_millis(50) {
        println!(
            "CPU per reconcile: {:.2} µs ({} reconciles, CPU {:.2} s)",
            cpu.as_secs_f64() * 1e6 / sim.events_run.max(1) as f64,
            sim.events_run,
            cpu.as_secs_f64()
        );
    }
}

/// Lapses split by when they expired relative to an outage `[from, back)`.
#[derive(Default)]
struct LapseSplit {
    while_down: usize,
    /// Expired within the final chance of LWA's return: its last try came while LWA was down.
    at_return: usize,
    /// Expired while LWA answered, at or after `back + FINAL_CHANCE_BEFORE_EXPIRY` (or before
    /// the outage).
    while_up: Vec<Lapse>,
}

fn split_lapses(sim: &Sim) -> LapseSplit {
    let window = sim
        .lwa
        .outage
        .map(|(from, back)| (from, back, clock::add(back, FINAL_CHANCE_BEFORE_EXPIRY)));
    let mut split = LapseSplit::default();
    for lapse in &sim.lapses {
        match window {
            Some((from, back, _)) if from <= lapse.expired_at && lapse.expired_at < back => {
                split.while_down += 1;
            }
            Some((_, back, last)) if back <= lapse.expired_at && lapse.expired_at < last => {
                split.at_return += 1;
            }
            _ => split.while_up.push(*lapse),
        }
    }
    split
}

/// Says how many lapses came while LWA answered, how many of those for want of capacity, and
/// the first few that were not.
fn describe_while_up(sim: &Sim, while_up: &[Lapse]) -> String {
    if while_up.is_empty() {
        return "0".into();
    }
    let spent = while_up
        .iter()
        .filter(|l| sim.rate_spent_before(l.expired_at))
        .count();
    let mut text = format!(
        "{} ({spent} of them with the rate limit spent up to their expiry)",
        while_up.len()
    );
    let unexplained: Vec<String> = while_up
        .iter()
        .filter(|l| !sim.rate_spent_before(l.expired_at))
        .take(5)
        .map(|l| {
            format!(
                "{} expired at +{:.1} s, {}",
                sim.keys[l.connection].as_str(),
                clock::since(l.expired_at, start()).as_secs_f64(),
                l.replaced_at.map_or("never replaced".into(), |r| format!(
                    "replaced at +{:.1} s",
                    clock::since(r, start()).as_secs_f64()
                ))
            )
        })
        .collect();
    if !unexplained.is_empty() {
        text.push_str(&format!("; first with room: {}", unexplained.join("; ")));
    }
    // Who got the permits meanwhile: the queue serves connections without a token first.
    if let Some((_, back)) = sim.lwa.outage
        && let Some(last) = while_up
            .iter()
            .map(|l| l.expired_at)
            .filter(|at| *at >= back)
            .max()
    {
        text.push_str(&format!(
            "; from the return until the last of them expired ({} later) LWA issued {} tokens, \
             {} of them to connections whose token had already expired",
            secs(clock::since(last, back)),
            sim.lwa.calls_between(back, last),
            sim.tokenless_served.sum(back, last)
        ));
    }
    text
}

fn outage_text(setup: &Setup) -> String {
    setup.outage.map_or(String::new(), |(from, len)| {
        format!(
            "; LWA answers 503 for {} from +{}",
            if len < MINUTE * 2 {
                format!("{} s", len.as_secs())
            } else {
                format!("{} min", len.as_secs() / 60)
            },
            if from < HOUR {
                format!("{} min", from.as_secs() / 60)
            } else {
                format!("{} h", from.as_secs() / 3600)
            }
        )
    })
}

/// Wake-ups and LWA calls around the outage.
fn describe_outage(sim: &Sim) -> Option<String> {
    let (from, back) = sim.lwa.outage?;
    Some(format!(
        "{} LWA calls while it was down; {} connections woken when it answered again ({} wake-ups \
         missed)",
        sim.lwa.calls_between(from, back),
        sim.woken_count,
        sim.missed_wakeups
    ))
}

struct DayScenario {
    name: &'static str,
    setup: Setup,
}

fn report_day(scenario: &DayScenario, run: &Run) {
    let setup = &scenario.setup;
    let sim = &run.sim;
    let n = setup.connections as f64;
    let lifetime = setup.lifetime.as_secs_f64();
    let lifetimes = setup.length.as_secs_f64() / lifetime;
    let steady_lifetimes = (setup.length - setup.lifetime).as_secs_f64() / lifetime;
    let mean_jitter = schedule::max_jitter(setup.lifetime, setup.renew_before).as_secs_f64() / 2.0;
    let floor = lifetime / (lifetime - setup.renew_before.as_secs_f64() - mean_jitter);
    let calls = sim.lwa.calls.load(Ordering::Relaxed);
    let rate = setup.rate;
    println!(
        "\n== {}: {} connections, 24 h virtual, token lifetime {} s, renewBefore {} s, rate limit {}{}",
        scenario.name,
        setup.connections,
        setup.lifetime.as_secs(),
        setup.renew_before.as_secs(),
        rate_text(rate),
        outage_text(setup)
    );
    println!(
        "LWA calls: {} ({} tokens issued, {} failed)",
        calls,
        sim.successes,
        sim.lwa.failures.load(Ordering::Relaxed)
    );
    println!(
        "LWA calls per connection per token lifetime: {:.2} over the day, {:.2} after the first hour \
         (floor 1.00; this renewBefore's schedule floor {:.2})",
        calls as f64 / (n * lifetimes),
        sim.steady_successes as f64 / (n * steady_lifetimes),
        floor
    );
    println!(
        "peak LWA calls in one second: {} (the bucket allows at most burst + qps = {})",
        sim.lwa.peak(start(), clock::add(start(), setup.length)),
        f64::from(rate.burst()) + rate.qps()
    );
    let split = split_lapses(sim);
    let lapsed = match sim.lwa.outage {
        Some(_) => format!(
            "{} (while LWA was down: {}; within the final {} s before its return: {}; while it \
             answered: {})",
            sim.lapses.len(),
            split.while_down,
            FINAL_CHANCE_BEFORE_EXPIRY.as_secs(),
            split.at_return,
            describe_while_up(sim, &split.while_up)
        ),
        None => format!(
            "{} ({})",
            sim.lapses.len(),
            describe_while_up(sim, &split.while_up)
        ),
    };
    println!(
        "refusals without an LWA call: {} throttled, {} circuit open, {} deferred by the open \
         breaker; tokens that expired before their successor came: {lapsed}",
        sim.throttled.iter().map(|t| u64::from(*t)).sum::<u64>(),
        sim.circuit_open,
        sim.deferred_by_breaker
    );
    println!(
        "CPU per refresh (engine + in-process LWA): {:.2} µs; per reconcile: {:.2} µs; \
         {} reconciles; CPU {:.2} s, wall {:.2} s",
        run.cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
        run.cpu.as_secs_f64() * 1e6 / sim.events_run.max(1) as f64,
        sim.events_run,
        run.cpu.as_secs_f64(),
        run.wall.as_secs_f64()
    );
    if let (Some(at), Some(restart)) = (setup.restart_at, &sim.restart) {
        println!(
            "restart at +{} h, all {} connections reconciled at once by a new engine: {} LWA calls \
             ({} connections had an expired or due token)",
            at.as_secs() / 3600,
            setup.connections,
            restart.calls,
            restart.due
        );
    }
    if let Some(text) = describe_outage(sim) {
        println!("outage: {text}");
    }
}

/// Steady state, then an outage: what expired, and how LWA's return was absorbed.
async fn outage_recovery(name: &str, setup: Setup) {
    let run = simulate(setup).await;
    let sim = &run.sim;
    let rate = setup.rate;
    println!(
        "\n== outage recovery, {name}: {} connections created at once, token lifetime {} s, \
         renewBefore {} s, rate limit {}{}",
        setup.connections,
        setup.lifetime.as_secs(),
        setup.renew_before.as_secs(),
        rate_text(rate),
        outage_text(&setup)
    );
    let split = split_lapses(sim);
    println!(
        "tokens expired while LWA was down: {}; within the final {} s before its return: {}; \
         expired while capacity existed (at or after return + {} s, or before the outage): {}",
        split.while_down,
        FINAL_CHANCE_BEFORE_EXPIRY.as_secs(),
        split.at_return,
        FINAL_CHANCE_BEFORE_EXPIRY.as_secs(),
        describe_while_up(sim, &split.while_up)
    );
    if let Some(backlog) = &sim.backlog {
        let served: Vec<Timestamp> = backlog.served_at.iter().flatten().copied().collect();
        let drained = served
            .iter()
            .max()
            .map_or(Duration::ZERO, |at| clock::since(*at, backlog.since));
        let noticed = backlog
            .first_token
            .map_or(Duration::ZERO, |at| clock::since(at, backlog.since));
        println!(
            "backlog when LWA came back: {} connections due or without a valid token; first \
             token {} after the return (the breaker's probe, or a token's last chances); backlog \
             drained (each with a new token) {} after the return{}",
            backlog.count,
            secs(noticed),
            secs(drained),
            match backlog.count - served.len() {
                0 => String::new(),
                left => format!("; {left} still waiting at the end"),
            }
        );
        let end = clock::add(start(), setup.length);
        // Whole seconds, the last one included.
        let drained_at = clock::add(backlog.since, drained + Duration::from_secs(1));
        let first = backlog.first_token.unwrap_or(backlog.since);
        println!(
            "LWA calls from the return until the backlog drained: {} ({:.1}/s from the first \
             token on); peak LWA calls in one second: {} after the return, {} over the run (the \
             bucket allows at most burst + qps = {})",
            sim.lwa.calls_between(backlog.since, drained_at),
            sim.lwa.calls_between(first, drained_at) as f64
                / PerSecond::seconds(first, drained_at).max(1) as f64,
            sim.lwa.peak(backlog.since, end),
            sim.lwa.peak(start(), end),
            f64::from(rate.burst()) + rate.qps()
        );
    }
    if let Some(text) = describe_outage(sim) {
        println!(
            "{text}; {} throttled, {} circuit open, {} deferred by the open breaker",
            sim.throttled.iter().map(|t| u64::from(*t)).sum::<u64>(),
            sim.circuit_open,
            sim.deferred_by_breaker
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` the binary runs without
    // it, and a small smoke run is enough to prove it still works.
    let default = if args.iter().any(|a| a == "--bench") {
        10_000
    } else {
        200
    };
    let flag =
        |name: &str| -> Option<String> { args.iter().skip_while(|a| *a != name).nth(1).cloned() };
    let connections: usize = flag("--connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    // `--lwa-qps Q --lwa-burst B`: the base rate limit, by default what `run` uses by default
    // (10/s, bursts of 20); the headroom scenario gets twice as much.
    let qps: f64 = flag("--lwa-qps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let burst: u32 = flag("--lwa-burst")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (Some(base), Some(fault_injection)) = (RateLimit::new(qps, burst), RateLimit::new(5.0, 10))
    else {
        eprintln!("--lwa-qps {qps} --lwa-burst {burst} is out of range");
        std::process::exit(1);
    };
    let headroom = RateLimit::new(qps * 2.0, burst.saturating_mul(2)).unwrap_or(base);
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("failed to start a runtime: {e}");
            std::process::exit(1);
        }
    };

    runtime.block_on(creation_burst(connections, base));
    if (connections, base) != (100, fault_injection) {
        runtime.block_on(creation_burst(100, fault_injection));
    }

    let day = Setup {
        connections,
        rate: base,
        lifetime: HOUR,
        renew_before: 20 * MINUTE,
        outage: None,
        restart_at: None,
        length: DAY,
    };
    let outage = Some((6 * HOUR, 15 * MINUTE));
    let scenarios = [
        DayScenario {
            name: "steady day with a restart",
            setup: Setup {
                restart_at: Some(12 * HOUR),
                ..day
            },
        },
        DayScenario {
            name: "shortest renewBefore",
            setup: Setup {
                renew_before: 5 * MINUTE,
                ..day
            },
        },
        DayScenario {
            name: "LWA outage",
            setup: Setup { outage, ..day },
        },
        DayScenario {
            name: "LWA outage, with twice the rate limit",
            setup: Setup {
                outage,
                rate: headroom,
                ..day
            },
        },
    ];
    for scenario in &scenarios {
        let run = runtime.block_on(simulate(scenario.setup));
        report_day(scenario, &run);
    }

    // Outages bite when they outlast renewBefore: 420 s tokens renewed 5 minutes ahead (the
    // fault-injection run's), and real 1 h tokens with the shortest renewBefore at the run's
    // size and rate limit. Each starts once the schedules have drifted apart.
    for len in [MINUTE, 15 * MINUTE] {
        runtime.block_on(outage_recovery(
            "fault-injection sizing",
            Setup {
                connections: 100,
                rate: fault_injection,
                lifetime: Duration::from_secs(420),
                renew_before: 5 * MINUTE,
                outage: Some((10 * MINUTE, len)),
                restart_at: None,
                length: 10 * MINUTE + len + 15 * MINUTE,
            },
        ));
    }
    for len in [MINUTE, 15 * MINUTE] {
        runtime.block_on(outage_recovery(
            "the run's size",
            Setup {
                connections,
                rate: base,
                lifetime: HOUR,
                renew_before: 5 * MINUTE,
                outage: Some((6 * HOUR, len)),
                restart_at: None,
                length: 6 * HOUR + len + 2 * HOUR,
            },
        ));
    }
}
