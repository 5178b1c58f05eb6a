//! The LWA client and refresh engine against the LWA emulator, over real HTTPS on loopback:
//! every error class drives the documented behaviour, and the protections (single flight, rate
//! limit, backoff, circuit breaker, terminal memory) hold.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amazon_seller_operator::crypto::SecretString;
use amazon_seller_operator::error::Categorized;
use amazon_seller_operator::lwa::client::ROTATION_SCOPE;
use amazon_seller_operator::lwa::clock;
use amazon_seller_operator::lwa::{
    BreakerState, ClientCredentials, Clock, ConnectionKey, EngineConfig, ErrorClass, LwaClient,
    LwaClientConfig, ManualClock, OAuthErrorCode, RateLimit, RefreshDecision, RefreshEngine,
    RefreshError, SystemClock, TerminalCause, TokenState, WaitReason,
};
use jiff::Timestamp;
use support::lwa_emulator::{LwaEmulator, Reply, Seller};

const RENEW_BEFORE: Duration = Duration::from_secs(20 * 60);

fn client(emulator: &LwaEmulator, timeout: Duration) -> LwaClient {
    LwaClient::new(&LwaClientConfig {
        endpoint: emulator.https_url(),
        extra_ca_file: Some(emulator.ca_file()),
        connect_timeout: Duration::from_secs(5),
        timeout,
        ..LwaClientConfig::default()
    })
    .expect("client for the emulator")
}

fn creds(seller: &Seller) -> ClientCredentials {
    ClientCredentials {
        client_id: seller.client_id.clone(),
        client_secret: SecretString::from(seller.client_secret.as_str()),
        refresh_token: SecretString::from(seller.refresh_token.as_str()),
        next_client_secret: None,
    }
}

fn key(seller: &Seller) -> ConnectionKey {
    ConnectionKey::new("team-test", &seller.client_id)
}

fn start_time() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid instant")
}

struct Rig {
    emulator: LwaEmulator,
    clock: Arc<ManualClock>,
    engine: Arc<RefreshEngine<LwaClient>>,
}

async fn rig_with(config: EngineConfig, timeout: Duration) -> Rig {
    let emulator = LwaEmulator::start().await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let engine = Arc::new(RefreshEngine::new(
        client(&emulator, timeout),
        config,
        clock.clone(),
    ));
    Rig {
        emulator,
        clock,
        engine,
    }
}

async fn rig() -> Rig {
    rig_with(EngineConfig::default(), Duration::from_secs(10)).await
}

#[tokio::test]
async fn refresh_over_https_posts_an_encoded_form_and_honours_expires_in() {
    let rig = rig().await;
    rig.emulator.set_expires_in(1800);
    let seller = rig.emulator.new_seller();
    let outcome = rig
        .engine
        .refresh(&key(&seller), "fp", &creds(&seller), None)
        .await
        .expect("LWA issues a token");
    assert!(outcome.token.access_token.expose().starts_with("Atza|"));
    assert_eq!(outcome.token.token_type, "bearer");
    assert_eq!(outcome.token.issued_at, start_time());
    assert_eq!(
        outcome.token.expires_at,
        clock::add(start_time(), Duration::from_secs(1800))
    );
    assert!(!outcome.used_next_secret);
    let calls = rig.emulator.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]
            .content_type
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(calls[0].grant_type, "refresh_token");
    // The token holds `|`, `+`, `/`, `=` and `&`: it arrived intact only if URL-encoded.
    assert_eq!(
        calls[0].refresh_token.as_deref(),
        Some(seller.refresh_token.as_str())
    );
}

#[tokio::test]
async fn client_credentials_grant_sends_the_rotation_scope() {
    let emulator = LwaEmulator::start().await;
    let seller = emulator.new_seller();
    let grant = client(&emulator, Duration::from_secs(10))
        .client_credentials_grant(
            &seller.client_id,
            &SecretString::from(seller.client_secret.as_str()),
            ROTATION_SCOPE,
        )
        .await
        .expect("application token");
    assert_eq!(grant.expires_in, Duration::from_secs(3600));
    let calls = emulator.calls();
    assert_eq!(calls[0].grant_type, "client_credentials");
    assert_eq!(calls[0].scope.as_deref(), Some(ROTATION_SCOPE));
}

#[tokio::test]
async fn plain_http_is_accepted_for_a_loopback_endpoint() {
    let emulator = LwaEmulator::start().await;
    let seller = emulator.new_seller();
    let client = LwaClient::new(&LwaClientConfig {
        endpoint: emulator.http_url(),
        ..LwaClientConfig::default()
    })
    .expect("loopback http is allowed");
    let c = creds(&seller);
    assert!(
        client
            .refresh_token_grant(&c.client_id, &c.client_secret, &c.refresh_token)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn invalid_grant_is_terminal_and_not_retried() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    rig.emulator.revoke(&seller.refresh_token);
    for _ in 0..3 {
        let result = rig
            .engine
            .refresh(&key(&seller), "gen-1", &creds(&seller), None)
            .await;
        assert_eq!(
            result,
            Err(RefreshError::Terminal {
                cause: TerminalCause::Rejected(OAuthErrorCode::InvalidGrant)
            })
        );
        rig.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(rig.emulator.calls_for(&seller.refresh_token), 1);
    assert_eq!(
        rig.engine
            .decide(rig.clock.now(), &key(&seller), "gen-1", None, RENEW_BEFORE),
        RefreshDecision::Blocked {
            cause: TerminalCause::Rejected(OAuthErrorCode::InvalidGrant)
        }
    );
    // The seller re-authorizes: new credentials, new fingerprint, a new attempt.
    rig.emulator
        .register_refresh_token(&seller.client_id, &seller.refresh_token);
    assert_eq!(
        rig.engine
            .decide(rig.clock.now(), &key(&seller), "gen-2", None, RENEW_BEFORE),
        RefreshDecision::RefreshNow
    );
    assert!(
        rig.engine
            .refresh(&key(&seller), "gen-2", &creds(&seller), None)
            .await
            .is_ok()
    );
    assert_eq!(rig.emulator.calls_for(&seller.refresh_token), 2);
}

#[tokio::test]
async fn every_terminal_error_is_classified_and_stops_retries() {
    let rig = rig().await;
    let cases = [
        (Reply::invalid_grant(), "invalid_grant"),
        (Reply::invalid_client(), "invalid_client"),
        (
            Reply::OAuthError {
                status: 400,
                code: "unauthorized_client",
            },
            "unauthorized_client",
        ),
        (
            Reply::OAuthError {
                status: 400,
                code: "invalid_request",
            },
            "invalid_request",
        ),
        (
            Reply::OAuthError {
                status: 400,
                code: "invalid_scope",
            },
            "invalid_scope",
        ),
        (
            Reply::OAuthError {
                status: 400,
                code: "unsupported_grant_type",
            },
            "unsupported_grant_type",
        ),
        (
            Reply::OAuthError {
                status: 403,
                code: "access_denied",
            },
            "client_error",
        ),
        (
            Reply::Status {
                status: 404,
                retry_after: None,
            },
            "client_error",
        ),
    ];
    for (reply, category) in cases {
        let seller = rig.emulator.new_seller();
        rig.emulator.always(&seller.client_id, reply.clone());
        // The plain client classifies it as terminal ...
        let c = creds(&seller);
        let error = client(&rig.emulator, Duration::from_secs(10))
            .refresh_token_grant(&c.client_id, &c.client_secret, &c.refresh_token)
            .await
            .expect_err("scripted failure");
        assert_eq!(error.class(), ErrorClass::Terminal, "{reply:?}");
        assert_eq!(error.category(), category, "{reply:?}");
        // ... and the engine stops calling for this connection.
        for _ in 0..3 {
            assert_eq!(
                rig.engine
                    .refresh(&key(&seller), "fp", &c, None)
                    .await
                    .map_err(|e| (matches!(e, RefreshError::Terminal { .. }), e.category())),
                Err((true, category)),
                "{reply:?}"
            );
            rig.clock.advance(Duration::from_secs(600));
        }
        assert_eq!(rig.emulator.calls_for(&seller.client_id), 2, "{reply:?}");
    }
}

#[tokio::test]
async fn every_retriable_error_is_classified_and_retried_after_backoff() {
    let cases = [
        (
            Reply::Status {
                status: 500,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Reply::Status {
                status: 503,
                retry_after: None,
            },
            "server_error",
        ),
        (
            Reply::OAuthError {
                status: 500,
                code: "server_error",
            },
            "server_error",
        ),
        (
            Reply::OAuthError {
                status: 503,
                code: "temporarily_unavailable",
            },
            "temporarily_unavailable",
        ),
        (Reply::RateLimited { retry_after: None }, "rate_limited"),
        (Reply::Malformed, "malformed_response"),
        (Reply::MissingExpiry, "malformed_response"),
        (Reply::Oversized, "response_too_large"),
        (Reply::Slow(Duration::from_secs(5)), "timeout"),
    ];
    for (reply, category) in cases {
        // A fresh engine per case, so the breaker does not join in.
        let rig = rig_with(EngineConfig::default(), Duration::from_millis(700)).await;
        let seller = rig.emulator.new_seller();
        rig.emulator.queue(&seller.client_id, [reply.clone()]);
        let c = creds(&seller);
        let Err(RefreshError::Retriable {
            category: got,
            retry_at,
            attempts,
        }) = rig.engine.refresh(&key(&seller), "fp", &c, None).await
        else {
            panic!("{reply:?} must be retriable");
        };
        assert_eq!((got, attempts), (category, 1), "{reply:?}");
        assert!(retry_at > rig.clock.now(), "{reply:?}");
        // Backing off: no call before retry_at, and decide says when.
        assert!(matches!(
            rig.engine.decide(rig.clock.now(), &key(&seller), "fp", None, RENEW_BEFORE),
            RefreshDecision::RefreshAt { at, reason: WaitReason::Backoff { attempts: 1, .. } } if at == retry_at
        ));
        assert!(
            rig.engine
                .refresh(&key(&seller), "fp", &c, None)
                .await
                .is_err()
        );
        assert_eq!(rig.emulator.calls_for(&seller.client_id), 1, "{reply:?}");
        // At retry_at it is retried, and succeeds.
        rig.clock.set(retry_at);
        assert!(
            rig.engine
                .refresh(&key(&seller), "fp", &c, None)
                .await
                .is_ok(),
            "{reply:?}"
        );
        assert_eq!(rig.emulator.calls_for(&seller.client_id), 2, "{reply:?}");
    }
}

#[tokio::test]
async fn connection_failures_are_retriable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let refused = LwaClient::new(&LwaClientConfig {
        endpoint: format!("http://127.0.0.1:{port}/auth/o2/token"),
        ..LwaClientConfig::default()
    })
    .expect("client");
    let c = ClientCredentials {
        client_id: "id".into(),
        client_secret: "secret".into(),
        refresh_token: "Atzr|x".into(),
        next_client_secret: None,
    };
    let error = refused
        .refresh_token_grant(&c.client_id, &c.client_secret, &c.refresh_token)
        .await
        .expect_err("nobody listens");
    assert_eq!(
        (error.class(), error.category()),
        (ErrorClass::Retriable, "connection")
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connection_error_and_sends_nothing() {
    let emulator = LwaEmulator::start().await;
    let seller = emulator.new_seller();
    let untrusting = LwaClient::new(&LwaClientConfig {
        endpoint: emulator.https_url(),
        ..LwaClientConfig::default()
    })
    .expect("client");
    let c = creds(&seller);
    let error = untrusting
        .refresh_token_grant(&c.client_id, &c.client_secret, &c.refresh_token)
        .await
        .expect_err("self-signed certificate is not trusted by default");
    assert_eq!(error.category(), "connection");
    assert_eq!(emulator.total_calls(), 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    rig.emulator.queue(
        &seller.client_id,
        [Reply::RateLimited {
            retry_after: Some("120".into()),
        }],
    );
    let c = creds(&seller);
    let error = rig
        .engine
        .refresh(&key(&seller), "fp", &c, None)
        .await
        .expect_err("429");
    let retry_at = error.retry_at().expect("retriable");
    assert!(clock::since(retry_at, start_time()) >= Duration::from_secs(120));
    rig.clock.advance(Duration::from_secs(119));
    assert!(
        rig.engine
            .refresh(&key(&seller), "fp", &c, None)
            .await
            .is_err()
    );
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 1);
    rig.clock.set(retry_at);
    assert!(
        rig.engine
            .refresh(&key(&seller), "fp", &c, None)
            .await
            .is_ok()
    );

    // The HTTP-date form, on a 503.
    let other = rig.emulator.new_seller();
    let in_five_minutes = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&clock::add(Timestamp::now(), Duration::from_secs(300)))
        .expect("HTTP date");
    rig.emulator.queue(
        &other.client_id,
        [Reply::Status {
            status: 503,
            retry_after: Some(in_five_minutes),
        }],
    );
    let now = rig.clock.now();
    let error = rig
        .engine
        .refresh(&key(&other), "fp", &creds(&other), None)
        .await
        .expect_err("503");
    let waited = clock::since(error.retry_at().expect("retriable"), now);
    assert!(waited >= Duration::from_secs(295), "{waited:?}");
}

#[tokio::test]
async fn backoff_grows_from_five_seconds_and_is_capped_at_five_minutes() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    rig.emulator.always(
        &seller.client_id,
        Reply::Status {
            status: 503,
            retry_after: None,
        },
    );
    let c = creds(&seller);
    let mut delays = Vec::new();
    for attempt in 1..=12u32 {
        let now = rig.clock.now();
        let Err(RefreshError::Retriable {
            retry_at, attempts, ..
        }) = rig.engine.refresh(&key(&seller), "fp", &c, None).await
        else {
            panic!("503 is retriable");
        };
        assert_eq!(attempts, attempt);
        let delay = clock::since(retry_at, now);
        let ceiling = Duration::from_secs(5 * 2u64.pow(attempt - 1)).min(Duration::from_secs(300));
        assert!(
            delay <= ceiling,
            "attempt {attempt}: {delay:?} > {ceiling:?}"
        );
        assert!(
            delay >= Duration::from_secs(1),
            "attempt {attempt}: {delay:?}"
        );
        delays.push(delay);
        rig.clock.set(retry_at);
    }
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 12);
    assert_eq!(rig.engine.failed_attempts(&key(&seller)), 12);
    // Full jitter over 5 s .. 300 s ceilings: the later delays are, on average, far longer.
    let early: Duration = delays[..3].iter().sum();
    let late: Duration = delays[9..].iter().sum();
    assert!(late > early, "{delays:?}");
}

#[tokio::test]
async fn breaker_opens_after_failures_for_everyone_and_closes_after_a_successful_probe() {
    let rig = rig().await;
    let sellers: Vec<Seller> = (0..8).map(|_| rig.emulator.new_seller()).collect();
    for seller in &sellers {
        rig.emulator.always(
            &seller.client_id,
            Reply::Status {
                status: 503,
                retry_after: None,
            },
        );
    }
    // Five failures from five connections open the breaker ...
    for seller in &sellers[..5] {
        let result = rig
            .engine
            .refresh(&key(seller), "fp", &creds(seller), None)
            .await;
        assert!(matches!(result, Err(RefreshError::Retriable { .. })));
    }
    let BreakerState::Open { until } = rig.engine.breaker_state(rig.clock.now()) else {
        panic!("the breaker must be open");
    };
    // ... and everyone pauses without calling LWA.
    let paused = rig
        .engine
        .refresh(&key(&sellers[5]), "fp", &creds(&sellers[5]), None)
        .await;
    assert!(matches!(paused, Err(RefreshError::CircuitOpen { until: u }) if u >= until));
    assert!(matches!(
        rig.engine
            .decide(rig.clock.now(), &key(&sellers[6]), "fp", None, RENEW_BEFORE),
        RefreshDecision::RefreshAt {
            reason: WaitReason::CircuitOpen,
            ..
        }
    ));
    assert_eq!(rig.emulator.total_calls(), 5);

    // After the pause one probe goes; it fails, and the breaker reopens for longer.
    rig.clock.set(until);
    let probe = rig
        .engine
        .refresh(&key(&sellers[5]), "fp", &creds(&sellers[5]), None)
        .await;
    assert!(matches!(probe, Err(RefreshError::Retriable { .. })));
    let BreakerState::Open { until: reopened } = rig.engine.breaker_state(rig.clock.now()) else {
        panic!("a failed probe reopens the breaker");
    };
    assert!(clock::since(reopened, until) > clock::since(until, start_time()));
    assert_eq!(rig.emulator.total_calls(), 6);

    // LWA recovers: the next probe succeeds and closes the breaker for everyone.
    for seller in &sellers {
        rig.emulator.clear(&seller.client_id);
    }
    rig.clock.set(reopened);
    assert!(
        rig.engine
            .refresh(&key(&sellers[6]), "fp", &creds(&sellers[6]), None)
            .await
            .is_ok()
    );
    assert_eq!(
        rig.engine.breaker_state(rig.clock.now()),
        BreakerState::Closed
    );
    assert!(
        rig.engine
            .refresh(&key(&sellers[7]), "fp", &creds(&sellers[7]), None)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_refreshes_of_one_connection_make_one_lwa_call() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    // Slow enough that every caller arrives while the one call is in flight.
    rig.emulator
        .queue(&seller.client_id, [Reply::Slow(Duration::from_millis(300))]);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let engine = rig.engine.clone();
        let seller = seller.clone();
        callers.spawn(async move {
            engine
                .refresh(&key(&seller), "fp", &creds(&seller), None)
                .await
        });
    }
    let results = callers.join_all().await;
    let tokens: std::collections::HashSet<String> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("shared success")
                .token
                .access_token
                .expose()
                .to_owned()
        })
        .collect();
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 1);
    assert_eq!(tokens.len(), 1, "every caller gets the one token");
}

/// Virtual time: with `burst` 3 and 4 per second, 20 eager connections get exactly
/// `3 + ⌊4·t⌋` calls by virtual time t, never more.
#[tokio::test]
async fn refreshes_across_connections_never_outpace_the_rate_limit_in_virtual_time() {
    let config = EngineConfig {
        rate: RateLimit::new(4.0, 3).expect("valid rate"),
        ..EngineConfig::default()
    };
    let rig = rig_with(config, Duration::from_secs(10)).await;
    let sellers: Vec<Seller> = (0..20).map(|_| rig.emulator.new_seller()).collect();
    let mut due: Vec<Option<Timestamp>> = vec![Some(start_time()); sellers.len()];
    let step = Duration::from_millis(50);
    let mut elapsed = Duration::ZERO;
    while due.iter().any(Option::is_some) {
        let now = rig.clock.now();
        for (seller, due) in sellers.iter().zip(due.iter_mut()) {
            if due.is_some_and(|at| at <= now) {
                *due = match rig
                    .engine
                    .refresh(&key(seller), "fp", &creds(seller), None)
                    .await
                {
                    Ok(_) => None,
                    Err(RefreshError::Throttled { retry_at }) => Some(retry_at),
                    Err(e) => panic!("{e}"),
                };
            }
        }
        let allowed = 3 + (elapsed.as_millis() * 4 / 1000) as usize;
        let calls = rig.emulator.total_calls();
        assert!(
            calls <= allowed,
            "{calls} calls by {elapsed:?}, limit {allowed}"
        );
        assert!(elapsed < Duration::from_secs(60), "no progress");
        rig.clock.advance(step);
        elapsed += step;
    }
    assert_eq!(rig.emulator.total_calls(), 20);
    // Throttled callers came back in an orderly queue: all done by (20 - 3) / 4 s + one step.
    assert!(elapsed <= Duration::from_millis(4250 + 100), "{elapsed:?}");
}

/// Measured time: call k (0-based) reaches LWA no earlier than (k + 1 - burst) / qps after
/// the start. No slack in that direction; the run may only be slower than ideal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_across_connections_never_outpace_the_rate_limit_in_real_time() {
    let (qps, burst) = (20.0, 5u32);
    let emulator = LwaEmulator::start().await;
    let sellers: Vec<Seller> = (0..30).map(|_| emulator.new_seller()).collect();
    let started = Timestamp::now();
    let engine = Arc::new(RefreshEngine::new(
        client(&emulator, Duration::from_secs(10)),
        EngineConfig {
            rate: RateLimit::new(qps, burst).expect("valid rate"),
            ..EngineConfig::default()
        },
        Arc::new(SystemClock),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for seller in sellers {
        let engine = engine.clone();
        tasks.spawn(async move {
            for _ in 0..1000 {
                match engine
                    .refresh(&key(&seller), "fp", &creds(&seller), None)
                    .await
                {
                    Ok(_) => return,
                    Err(RefreshError::Throttled { retry_at }) => {
                        let wait = clock::since(retry_at, Timestamp::now());
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("never got a permit");
        });
    }
    tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .expect("all connections refreshed within a minute");
    let mut arrivals: Vec<Timestamp> = emulator.calls().iter().map(|c| c.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 30);
    let period = Duration::from_millis(50);
    for (k, at) in arrivals.iter().enumerate() {
        let earliest = period * (k as u32 + 1).saturating_sub(burst);
        let offset = clock::since(*at, started);
        assert!(
            offset >= earliest,
            "call {k} at +{offset:?}, earlier than the limit allows (+{earliest:?})"
        );
    }
}

#[tokio::test]
async fn a_restart_with_valid_tokens_makes_no_lwa_calls() {
    let generous = EngineConfig {
        rate: RateLimit::new(1000.0, 100).expect("valid rate"),
        ..EngineConfig::default()
    };
    let rig = rig_with(generous, Duration::from_secs(10)).await;
    let sellers: Vec<Seller> = (0..25).map(|_| rig.emulator.new_seller()).collect();
    let mut tokens = Vec::new();
    for seller in &sellers {
        let outcome = rig
            .engine
            .refresh(&key(seller), "fp", &creds(seller), None)
            .await
            .expect("token");
        tokens.push(outcome.token.state());
    }
    assert_eq!(rig.emulator.total_calls(), 25);
    rig.clock.advance(Duration::from_secs(10 * 60));
    let before: Vec<RefreshDecision> = sellers
        .iter()
        .zip(&tokens)
        .map(|(s, t)| {
            rig.engine
                .decide(rig.clock.now(), &key(s), "fp", Some(*t), RENEW_BEFORE)
        })
        .collect();

    // The operator restarts: a new engine, tokens read back from the runtime Secrets (only
    // their expiry is known).
    let restarted = RefreshEngine::new(
        client(&rig.emulator, Duration::from_secs(10)),
        EngineConfig::default(),
        rig.clock.clone(),
    );
    for ((seller, token), earlier) in sellers.iter().zip(&tokens).zip(&before) {
        let state = TokenState::from_expiry(token.expires_at);
        let decision = restarted.decide(
            rig.clock.now(),
            &key(seller),
            "fp",
            Some(state),
            RENEW_BEFORE,
        );
        assert!(
            matches!(decision, RefreshDecision::UseExisting { .. }),
            "{decision:?}"
        );
        // The same schedule as before the restart.
        assert_eq!(&decision, earlier);
        if decision == RefreshDecision::RefreshNow {
            let _ = restarted
                .refresh(&key(seller), "fp", &creds(seller), None)
                .await;
        }
    }
    assert_eq!(rig.emulator.total_calls(), 25, "a restart made LWA calls");
}

#[tokio::test]
async fn invalid_client_with_a_next_secret_tries_it_once_and_reports_it() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    // Amazon has rotated the secret: only the new one works now.
    rig.emulator
        .register_app(&seller.client_id, &["amzn1.oa2-cs.v1.rotated"]);
    let mut c = creds(&seller);
    c.next_client_secret = Some(SecretString::from("amzn1.oa2-cs.v1.rotated"));
    let outcome = rig
        .engine
        .refresh(&key(&seller), "fp", &c, None)
        .await
        .expect("the next secret works");
    assert!(outcome.used_next_secret);
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 2);
    // Later refreshes go straight to the working secret.
    rig.clock.advance(Duration::from_secs(3600));
    let outcome = rig
        .engine
        .refresh(&key(&seller), "fp", &c, None)
        .await
        .expect("token");
    assert!(outcome.used_next_secret);
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 3);
}

#[tokio::test]
async fn invalid_client_without_a_working_next_secret_is_terminal_after_one_try_of_each() {
    let rig = rig().await;
    let seller = rig.emulator.new_seller();
    rig.emulator
        .register_app(&seller.client_id, &["a-third-secret"]);
    let mut c = creds(&seller);
    c.next_client_secret = Some(SecretString::from("amzn1.oa2-cs.v1.also-wrong"));
    assert_eq!(
        rig.engine.refresh(&key(&seller), "fp", &c, None).await,
        Err(RefreshError::Terminal {
            cause: TerminalCause::Rejected(OAuthErrorCode::InvalidClient)
        })
    );
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 2);
    rig.clock.advance(Duration::from_secs(3600));
    assert!(
        rig.engine
            .refresh(&key(&seller), "fp", &c, None)
            .await
            .is_err()
    );
    assert_eq!(rig.emulator.calls_for(&seller.client_id), 2);
}

/// Captures tracing output in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_message() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rig = rig_with(EngineConfig::default(), Duration::from_millis(700)).await;
    let mut printed = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let scripts = [
        None,
        Some(Reply::invalid_grant()),
        Some(Reply::invalid_client()),
        Some(Reply::Status {
            status: 503,
            retry_after: Some("30".into()),
        }),
        Some(Reply::Malformed),
        Some(Reply::Slow(Duration::from_secs(3))),
    ];
    for script in scripts {
        let seller = rig.emulator.new_seller();
        let mut c = creds(&seller);
        c.next_client_secret = Some(SecretString::from(format!("{}-next", seller.client_secret)));
        secrets.extend([
            seller.client_secret.clone(),
            format!("{}-next", seller.client_secret),
            seller.refresh_token.clone(),
        ]);
        if let Some(script) = script {
            rig.emulator.always(&seller.client_id, script);
        }
        let result = rig.engine.refresh(&key(&seller), "fp", &c, None).await;
        printed.push(format!("{result:?}"));
        if let Err(e) = &result {
            printed.push(e.to_string());
        }
        let client_error = client(&rig.emulator, Duration::from_millis(700))
            .refresh_token_grant(&c.client_id, &c.client_secret, &c.refresh_token)
            .await;
        if let Err(e) = client_error {
            printed.push(format!(
                "{e} {e:?} {}",
                amazon_seller_operator::error::chain(&e)
            ));
        }
    }
    let logs =
        String::from_utf8(capture.0.lock().expect("capture lock").clone()).expect("utf-8 logs");
    assert!(
        logs.contains("invalid_grant"),
        "the failures were logged: {logs}"
    );
    let everything = format!("{logs}\n{}", printed.join("\n"));
    for secret in &secrets {
        assert!(!everything.contains(secret.as_str()), "a secret leaked");
        // Nor a recognisable fragment: the part after the fixed prefix.
        let tail = &secret[secret.len() - 10..];
        assert!(!everything.contains(tail), "a secret fragment leaked");
    }
    let issued = rig.emulator.issued_tokens();
    assert!(!issued.is_empty());
    for token in &issued {
        assert!(
            !everything.contains(token.as_str()),
            "an access token leaked"
        );
    }
}
