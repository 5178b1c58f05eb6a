//! The refresh engine under a crowd and through an LWA outage, in virtual time (deterministic
//! tier: an in-process LWA that answers at once or fails while it is "down", a manual clock,
//! and an event queue standing in for the controller's requeues and wake-ups).
//!
//! Each connection does what the reconciler does: ask the engine's decision, refresh when it
//! says so with the token in use as the deadline, and come back when told (or when woken).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;

use amazon_seller_operator::crypto::SecretString;
use amazon_seller_operator::lwa::engine::FINAL_CHANCE_BEFORE_EXPIRY;
use amazon_seller_operator::lwa::{
    AccessToken, ClientCredentials, Clock, ConnectionKey, EngineConfig, LwaError, ManualClock,
    RateLimit, RefreshDecision, RefreshEngine, RefreshError, TokenGrant, TokenSource, clock,
};

const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

fn start() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn at(seconds: u64) -> Timestamp {
    clock::add(start(), Duration::from_secs(seconds))
}

/// LWA: a token of `lifetime` at once, or 503 while the clock is in the outage.
struct Lwa {
    clock: Arc<ManualClock>,
    outage: Option<(Timestamp, Timestamp)>,
    lifetime: Duration,
    calls: AtomicU32,
    /// Calls answered 503.
    failed: AtomicU32,
}

impl TokenSource for Lwa {
    async fn refresh_grant(
        &self,
        _client_id: &str,
        _client_secret: &SecretString,
        _refresh_token: &SecretString,
    ) -> Result<TokenGrant, LwaError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.now();
        if self
            .outage
            .is_some_and(|(from, until)| from <= now && now < until)
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
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

/// A token that expired before its successor was issued.
#[derive(Debug)]
struct Lapse {
    connection: usize,
    expired_at: Timestamp,
    replaced_at: Option<Timestamp>,
}

struct World {
    engine: RefreshEngine<Lwa>,
    clock: Arc<ManualClock>,
    woken: broadcast::Receiver<ConnectionKey>,
    keys: Vec<ConnectionKey>,
    tokens: Vec<Option<AccessToken>>,
    first_token_at: Vec<Option<Timestamp>>,
    throttled: Vec<u32>,
    lapses: Vec<Lapse>,
    events: BinaryHeap<Reverse<(Timestamp, usize)>>,
}

impl World {
    fn new(connections: usize, rate: RateLimit, lwa: impl FnOnce(Arc<ManualClock>) -> Lwa) -> Self {
        let clock = Arc::new(ManualClock::new(start()));
        let config = EngineConfig {
            rate,
            ..EngineConfig::default()
        };
        let engine = RefreshEngine::new(lwa(clock.clone()), config, clock.clone());
        let woken = engine.woken();
        let mut events = BinaryHeap::new();
        for i in 0..connections {
            events.push(Reverse((start(), i)));
        }
        Self {
            engine,
            clock,
            woken,
            keys: (0..connections)
                .map(|i| ConnectionKey::new(&format!("team-{}", i % 4), &format!("c{i}")))
                .collect(),
            tokens: vec![None; connections],
            first_token_at: vec![None; connections],
            throttled: vec![0; connections],
            lapses: Vec::new(),
            events,
        }
    }

    fn creds() -> ClientCredentials {
        ClientCredentials {
            client_id: "amzn1.application-oa2-client.sim".into(),
            client_secret: SecretString::from("simulated-client-secret"),
            refresh_token: SecretString::from("Atzr|simulated"),
            next_client_secret: None,
        }
    }

    /// Runs every reconcile due before `until`.
    async fn run_until(&mut self, until: Timestamp) {
        while let Some(Reverse((now, i))) = self.events.peek().copied() {
            if now > until {
                break;
            }
            self.events.pop();
            self.clock.set(now);
            self.reconcile(i, now).await;
            while let Ok(key) = self.woken.try_recv() {
                if let Some(j) = self.keys.iter().position(|k| *k == key) {
                    self.events.push(Reverse((now, j)));
                }
            }
        }
        self.clock.set(until);
        for (i, token) in self.tokens.iter().enumerate() {
            if let Some(token) = token
                && token.expires_at <= until
                && !self
                    .lapses
                    .iter()
                    .any(|l| l.connection == i && l.replaced_at.is_none())
            {
                self.lapses.push(Lapse {
                    connection: i,
                    expired_at: token.expires_at,
                    replaced_at: None,
                });
            }
        }
    }

    async fn reconcile(&mut self, i: usize, now: Timestamp) {
        let key = &self.keys[i];
        let current = self.tokens[i].as_ref().filter(|t| t.expires_at > now);
        let decision = self.engine.decide(
            now,
            key,
            "fp",
            current.map(AccessToken::state),
            RENEW_BEFORE,
        );
        let next = match decision {
            RefreshDecision::UseExisting { refresh_at } => Some(refresh_at),
            RefreshDecision::RefreshAt { at, .. } => Some(at),
            RefreshDecision::Blocked { .. } => None,
            RefreshDecision::RefreshNow => {
                let deadline = current.map(|t| t.expires_at);
                match self
                    .engine
                    .refresh(key, "fp", &Self::creds(), deadline)
                    .await
                {
                    Ok(refreshed) => {
                        if let Some(old) = &self.tokens[i]
                            && old.expires_at <= now
                        {
                            self.lapses.push(Lapse {
                                connection: i,
                                expired_at: old.expires_at,
                                replaced_at: Some(now),
                            });
                        }
                        self.tokens[i] = Some(refreshed.token);
                        self.first_token_at[i].get_or_insert(now);
                        // The next reconcile reads the new token back and is told its due time.
                        Some(now)
                    }
                    Err(RefreshError::Throttled { retry_at }) => {
                        self.throttled[i] += 1;
                        Some(retry_at)
                    }
                    Err(RefreshError::Retriable { retry_at, .. }) => Some(retry_at),
                    Err(RefreshError::CircuitOpen { until }) => Some(until),
                    Err(RefreshError::Terminal { cause }) => panic!("terminal {cause}"),
                }
            }
        };
        if let Some(next) = next {
            self.events.push(Reverse((next.max(now), i)));
        }
    }
}

#[tokio::test]
async fn a_crowd_created_at_once_gets_its_first_tokens_within_the_rate_limit() {
    // 100 connections at 5 calls a second with bursts of 10: the first 10 at once, the other 90
    // one every 200 ms; each is told its turn once and keeps it.
    let (n, qps, burst) = (100usize, 5.0, 10u32);
    let mut world = World::new(n, RateLimit::new(qps, burst).unwrap(), |clock| Lwa {
        clock,
        outage: None,
        lifetime: Duration::from_secs(3600),
        calls: AtomicU32::new(0),
        failed: AtomicU32::new(0),
    });
    world.run_until(at(120)).await;
    let bound = Duration::from_secs_f64((n - burst as usize) as f64 / qps + 1.0 / qps);
    let last = world
        .first_token_at
        .iter()
        .map(|t| clock::since(t.expect("every connection has a token"), start()))
        .max()
        .unwrap_or_default();
    assert!(
        last <= bound,
        "the last first token came {last:?} after creation, bound {bound:?}"
    );
    assert_eq!(world.engine.source().calls.load(Ordering::SeqCst), n as u32);
    assert!(
        world.throttled.iter().all(|t| *t <= 1),
        "a connection was refused more than once: {:?}",
        world.throttled
    );
    assert_eq!(world.throttled.iter().sum::<u32>(), n as u32 - burst);
    assert!(world.lapses.is_empty(), "{:?}", world.lapses);
}

#[tokio::test]
async fn after_an_outage_no_token_expires_while_the_rate_limit_has_room() {
    // 100 connections with 420 s tokens renewed 5 minutes before expiry (about every 100 s),
    // 5 calls a second; LWA answers 503 for `outage` seconds from minute 10. Tokens issued
    // before the outage must all be replaced before they expire once LWA is back.
    for outage in [60u64, 150, 330] {
        let down = (at(600), at(600 + outage));
        let mut world = World::new(100, RateLimit::new(5.0, 10).unwrap(), |clock| Lwa {
            clock,
            outage: Some(down),
            lifetime: Duration::from_secs(420),
            calls: AtomicU32::new(0),
            failed: AtomicU32::new(0),
        });
        world.run_until(at(600 + outage + 900)).await;
        // A token may expire only while LWA is down, or so soon after it is back that its
        // final try came before (FINAL_CHANCE_BEFORE_EXPIRY); one that expires later was left
        // to lapse while there was room.
        let late: Vec<&Lapse> = world
            .lapses
            .iter()
            .filter(|l| l.expired_at >= clock::add(down.1, FINAL_CHANCE_BEFORE_EXPIRY))
            .collect();
        assert!(late.is_empty(), "outage {outage} s: {late:#?}");
        // Those that lapsed during the outage got a token soon after it.
        for lapse in &world.lapses {
            let replaced = lapse.replaced_at.expect("replaced");
            assert!(
                replaced <= clock::add(down.1, Duration::from_secs(60)),
                "outage {outage} s: {lapse:?}"
            );
        }
        assert!(
            world
                .tokens
                .iter()
                .all(|t| t.as_ref().is_some_and(|t| t.expires_at > world.clock.now())),
            "outage {outage} s: every connection has a valid token at the end"
        );
        // No storm while LWA is down: the breaker's probes, and each connection's two chances
        // before its token expires, at most.
        let failed = world.engine.source().failed.load(Ordering::SeqCst);
        assert!(
            failed <= 2 * 100 + 10,
            "outage {outage} s: {failed} calls failed"
        );
        eprintln!(
            "outage {outage} s: {} calls failed, {} tokens lapsed (all while LWA was down)",
            failed,
            world.lapses.len()
        );
    }
}
