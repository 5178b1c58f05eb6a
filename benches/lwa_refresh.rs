//! The refresh engine at scale, in virtual time: 10,000 connections over a simulated day
//! against an in-process LWA, driven the way the reconciler drives it (decide, then refresh
//! when told, requeue at the instant any refusal names).
//!
//! Prints figures and asserts nothing about timing:
//! - LWA calls per connection per token lifetime (1.00 is the floor: one call per token; the
//!   schedule's own floor is lifetime / (lifetime − renewBefore − mean jitter));
//! - peak LWA calls in any one second (bounded by the rate limit);
//! - CPU time per refresh (engine plus the in-process LWA);
//! - calls caused by an operator restart with valid tokens, and behaviour during an outage.
//!
//! Run: `cargo bench --bench lwa_refresh` (add `-- --connections 1000` for a quicker run).
//! Under `cargo test --all-targets` it makes a 200-connection smoke run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amazon_seller_operator::crypto::SecretString;
use amazon_seller_operator::lwa::clock;
use amazon_seller_operator::lwa::schedule;
use amazon_seller_operator::lwa::{
    ClientCredentials, Clock, ConnectionKey, EngineConfig, LwaError, ManualClock, RateLimit,
    RefreshDecision, RefreshEngine, RefreshError, TokenGrant, TokenSource, TokenState, WaitReason,
};
use jiff::Timestamp;

const LIFETIME: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// LWA in process: answers every call with a one-hour token, or 503 during an outage.
struct SimLwa {
    clock: Arc<ManualClock>,
    outage: Option<(Timestamp, Timestamp)>,
    calls: AtomicU64,
    failures: AtomicU64,
    per_second: Mutex<HashMap<i64, u32>>,
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
        *self
            .per_second
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(now.as_second())
            .or_default() += 1;
        if self
            .outage
            .is_some_and(|(from, to)| now >= from && now < to)
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
            expires_in: LIFETIME,
        })
    }
}

struct Scenario {
    name: &'static str,
    connections: usize,
    renew_before: Duration,
    restart_at: Option<Duration>,
    outage: Option<(Duration, Duration)>,
    rate: RateLimit,
}

struct Figures {
    calls: u64,
    failures: u64,
    successes: u64,
    throttled: u64,
    circuit_open: u64,
    deferred_by_breaker: u64,
    events: u64,
    peak_per_second: u32,
    restart_calls: Option<u64>,
    outage_calls: u64,
    expired_gaps: u64,
    steady_successes: u64,
    cpu: Duration,
    wall: Duration,
}

/// CPU time of this thread, from the scheduler's own accounting (Linux); wall time elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

async fn simulate(scenario: &Scenario) -> Figures {
    let start = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let clock = Arc::new(ManualClock::new(start));
    let outage = scenario
        .outage
        .map(|(from, len)| (clock::add(start, from), clock::add(start, from + len)));
    let lwa = Arc::new(SimLwa {
        clock: clock.clone(),
        outage,
        calls: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        per_second: Mutex::new(HashMap::new()),
    });
    let new_engine = || {
        RefreshEngine::new(
            SharedLwa(lwa.clone()),
            EngineConfig {
                rate: scenario.rate,
                ..EngineConfig::default()
            },
            clock.clone(),
        )
    };
    let mut engine = new_engine();
    let keys: Vec<ConnectionKey> = (0..scenario.connections)
        .map(|i| ConnectionKey::new(&format!("team-{}", i % 250), &format!("seller-{i}")))
        .collect();
    let creds: Vec<ClientCredentials> = (0..scenario.connections)
        .map(|i| ClientCredentials {
            client_id: format!("amzn1.application-oa2-client.{i}"),
            client_secret: SecretString::from(format!("secret-{i}")),
            refresh_token: SecretString::from(format!("Atzr|refresh-{i}")),
            next_client_secret: None,
        })
        .collect();
    let mut tokens: Vec<Option<TokenState>> = vec![None; scenario.connections];
    let mut queue: BinaryHeap<Reverse<(Timestamp, usize)>> = (0..scenario.connections)
        .map(|i| Reverse((start, i)))
        .collect();
    let end = clock::add(start, DAY);
    let restart = scenario.restart_at.map(|at| clock::add(start, at));
    let mut restarted = false;
    let mut figures = Figures {
        calls: 0,
        failures: 0,
        successes: 0,
        throttled: 0,
        circuit_open: 0,
        deferred_by_breaker: 0,
        events: 0,
        peak_per_second: 0,
        restart_calls: None,
        outage_calls: 0,
        expired_gaps: 0,
        steady_successes: 0,
        cpu: Duration::ZERO,
        wall: Duration::ZERO,
    };
    let steady_from = clock::add(start, LIFETIME);
    let cpu_before = thread_cpu_time();
    let wall_before = Instant::now();

    while let Some(Reverse((at, i))) = queue.pop() {
        if at >= end {
            break;
        }
        if let Some(restart_at) = restart.filter(|r| !restarted && at >= *r) {
            // The operator restarts: a new engine; every connection is reconciled at once with
            // the token read back from its runtime Secret (only the expiry is known).
            restarted = true;
            clock.set(restart_at);
            engine = new_engine();
            let before = lwa.calls.load(Ordering::Relaxed);
            queue.push(Reverse((at, i)));
            let mut resync = Vec::with_capacity(scenario.connections);
            for (j, token) in tokens.iter().enumerate() {
                let state = token.map(|t| TokenState::from_expiry(t.expires_at));
                match engine.decide(restart_at, &keys[j], "fp", state, scenario.renew_before) {
                    RefreshDecision::RefreshNow => {
                        let _ = engine.refresh(&keys[j], "fp", &creds[j], None).await;
                    }
                    _ => resync.push(j),
                }
            }
            figures.restart_calls = Some(lwa.calls.load(Ordering::Relaxed) - before);
            continue;
        }
        clock.set(at);
        figures.events += 1;
        let next = match engine.decide(at, &keys[i], "fp", tokens[i], scenario.renew_before) {
            RefreshDecision::UseExisting { refresh_at } => refresh_at,
            RefreshDecision::RefreshAt { at, reason } => {
                if reason == WaitReason::CircuitOpen {
                    figures.deferred_by_breaker += 1;
                }
                at
            }
            RefreshDecision::Blocked { .. } => continue,
            RefreshDecision::RefreshNow => {
                match engine.refresh(&keys[i], "fp", &creds[i], None).await {
                    Ok(outcome) => {
                        figures.successes += 1;
                        if at >= steady_from {
                            figures.steady_successes += 1;
                        }
                        if tokens[i].is_some_and(|t| t.expires_at < at) {
                            figures.expired_gaps += 1;
                        }
                        tokens[i] = Some(outcome.token.state());
                        at
                    }
                    Err(RefreshError::Throttled { retry_at }) => {
                        figures.throttled += 1;
                        retry_at
                    }
                    Err(RefreshError::CircuitOpen { until }) => {
                        figures.circuit_open += 1;
                        until
                    }
                    Err(e) => e
                        .retry_at()
                        .unwrap_or(clock::add(at, Duration::from_secs(60))),
                }
            }
        };
        queue.push(Reverse((next.max(at), i)));
    }

    figures.wall = wall_before.elapsed();
    figures.cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => figures.wall,
    };
    figures.calls = lwa.calls.load(Ordering::Relaxed);
    figures.failures = lwa.failures.load(Ordering::Relaxed);
    let per_second = lwa
        .per_second
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    figures.peak_per_second = per_second.values().copied().max().unwrap_or(0);
    if let Some((from, to)) = outage {
        figures.outage_calls = per_second
            .iter()
            .filter(|(s, _)| **s >= from.as_second() && **s < to.as_second())
            .map(|(_, n)| u64::from(*n))
            .sum();
    }
    figures
}

/// Lets the simulation keep a handle on the LWA stand-in the engine owns.
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

fn report(scenario: &Scenario, f: &Figures) {
    let n = scenario.connections as f64;
    let lifetimes = DAY.as_secs_f64() / LIFETIME.as_secs_f64();
    let steady_lifetimes = (DAY - LIFETIME).as_secs_f64() / LIFETIME.as_secs_f64();
    let mean_jitter = schedule::max_jitter(LIFETIME, scenario.renew_before).as_secs_f64() / 2.0;
    let floor = LIFETIME.as_secs_f64()
        / (LIFETIME.as_secs_f64() - scenario.renew_before.as_secs_f64() - mean_jitter);
    let rate = scenario.rate;
    println!(
        "\n== {}: {} connections, 24 h virtual, token lifetime {} s, renewBefore {} s, rate limit {}/s burst {}",
        scenario.name,
        scenario.connections,
        LIFETIME.as_secs(),
        scenario.renew_before.as_secs(),
        rate.qps(),
        rate.burst()
    );
    println!(
        "LWA calls: {} ({} tokens issued, {} failed)",
        f.calls, f.successes, f.failures
    );
    println!(
        "LWA calls per connection per token lifetime: {:.2} over the day, {:.2} after the first hour \
         (floor 1.00; this renewBefore's schedule floor {:.2})",
        f.calls as f64 / (n * lifetimes),
        f.steady_successes as f64 / (n * steady_lifetimes),
        floor
    );
    println!(
        "peak LWA calls in one second: {} (the bucket allows at most burst + qps = {})",
        f.peak_per_second,
        f64::from(rate.burst()) + rate.qps()
    );
    println!(
        "refusals without an LWA call: {} throttled, {} circuit open, {} deferred by the open breaker; \
         refreshes after a token had expired: {}",
        f.throttled, f.circuit_open, f.deferred_by_breaker, f.expired_gaps
    );
    println!(
        "CPU per refresh (engine + in-process LWA): {:.2} µs; per scheduling event: {:.2} µs; \
         {} events; CPU {:.2} s, wall {:.2} s",
        f.cpu.as_secs_f64() * 1e6 / f.calls.max(1) as f64,
        f.cpu.as_secs_f64() * 1e6 / f.events.max(1) as f64,
        f.events,
        f.cpu.as_secs_f64(),
        f.wall.as_secs_f64()
    );
    if let (Some(at), Some(calls)) = (scenario.restart_at, f.restart_calls) {
        println!(
            "restart at +{} h with valid tokens, all {} connections resynced: {} LWA calls",
            at.as_secs() / 3600,
            scenario.connections,
            calls
        );
    }
    if let Some((from, len)) = scenario.outage {
        println!(
            "LWA outage at +{} h for {} min (every call 503): {} LWA calls during it while about \
             {:.0} connections fell due; refreshes after a token had expired: {}",
            from.as_secs() / 3600,
            len.as_secs() / 60,
            f.outage_calls,
            n * len.as_secs_f64() / (LIFETIME.as_secs_f64() / floor),
            f.expired_gaps
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
    let connections = args
        .iter()
        .skip_while(|a| *a != "--connections")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let flag =
        |name: &str| -> Option<String> { args.iter().skip_while(|a| *a != name).nth(1).cloned() };
    // `--lwa-qps Q --lwa-burst B`: the base rate limit of the first three scenarios, by default
    // what `run` uses by default (10/s, bursts of 20); the headroom scenario gets twice as much.
    let qps: f64 = flag("--lwa-qps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let burst: u32 = flag("--lwa-burst")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let Some(base) = RateLimit::new(qps, burst) else {
        eprintln!("--lwa-qps {qps} is out of range");
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
    let scenarios = [
        Scenario {
            name: "steady day with a restart",
            connections,
            renew_before: Duration::from_secs(20 * 60),
            restart_at: Some(Duration::from_secs(12 * 3600)),
            outage: None,
            rate: base,
        },
        Scenario {
            name: "shortest renewBefore",
            connections,
            renew_before: Duration::from_secs(5 * 60),
            restart_at: None,
            outage: None,
            rate: base,
        },
        Scenario {
            name: "LWA outage",
            connections,
            renew_before: Duration::from_secs(20 * 60),
            restart_at: None,
            outage: Some((Duration::from_secs(6 * 3600), Duration::from_secs(15 * 60))),
            rate: base,
        },
        Scenario {
            name: "LWA outage, with twice the rate limit",
            connections,
            renew_before: Duration::from_secs(20 * 60),
            restart_at: None,
            outage: Some((Duration::from_secs(6 * 3600), Duration::from_secs(15 * 60))),
            rate: headroom,
        },
    ];
    for scenario in &scenarios {
        let figures = runtime.block_on(simulate(scenario));
        report(scenario, &figures);
    }
}
