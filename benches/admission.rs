//! Admission webhook latency and throughput over TLS keep-alive on loopback, side by side with
//! a bare rustls server that answers every request with a fixed AdmissionReview. Prints
//! figures and their ratio; asserts nothing.
//!
//!     cargo bench --bench admission
//!     cargo bench --bench admission -- --profile validate --requests 3000   (one server only,
//!         sequential requests, for a profiler such as callgrind)
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it makes a short smoke run.
//!
//! The difference between the webhook and the bare server is what the webhook adds on top of
//! TLS and HTTP: parsing the review, converting the pod or Secret, the rules, metering, the
//! audit record, and (for the intake) one HPKE seal. Since the seal is work no faster server
//! could skip, `/mutate` is also compared with its floor: the bare server doing one
//! `crypto::seal` per request.
//!
//! The machine these run on is shared and has two cores, so the servers are measured in
//! interleaved rounds (every server once per round, the bare one first) and each ratio is taken
//! within its round: a burst of someone else's compilation then lowers both sides of one ratio
//! instead of one server's whole figure. The client, TLS configuration, bodies and concurrency
//! are the same for every server.
//!
//! Allocation counts come from a counting global allocator in this binary (around the system
//! allocator); it counts only while a counting phase runs, after the timed rounds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use amazon_seller_operator::crypto::{self, Credentials, Keyring, PublicKey, SealContext};
use amazon_seller_operator::https::{Reviewer, Webhook, tls};
use amazon_seller_operator::observability::metrics::Metrics;

use support::Captured;
use support::webhook::{FakeCluster, Review, RunningWebhook, TestPki, https_client, pod};

/// Counts allocations (and reallocations) and their bytes while [`COUNTING`] is set.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

impl CountingAllocator {
    fn count(size: usize) {
        // One relaxed load when not counting, so the timed rounds pay next to nothing.
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations and bytes per call of `f`, over `n` calls.
async fn allocations_per<F: Future<Output = ()>>(n: u64, mut f: impl FnMut() -> F) -> (f64, f64) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    ALLOCATED_BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..n {
        f().await;
    }
    COUNTING.store(false, Ordering::Relaxed);
    let per = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / n as f64;
    (per(&ALLOCATIONS), per(&ALLOCATED_BYTES))
}

const CONCURRENCY: usize = 16;

/// How much to measure: the full run under `cargo bench`, a smoke run under `cargo test`.
#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    /// Sequential requests per server and round (latency).
    sequential: usize,
    /// Concurrent window per server and round (throughput).
    window: Duration,
    /// Sequential requests per server for the allocation counts.
    counted: u64,
}

const FIXED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-4000-8000-000000000001","allowed":true,"status":{},"auditAnnotations":{"reason":"none"}}}"#;

/// The credentials the intake review carries, for the bare server's seal.
fn intake_credentials() -> Credentials {
    Credentials {
        client_id: "amzn1.application-oa2-client.bench".into(),
        client_secret: "amzn1.oa2-cs.v1.bench".into(),
        refresh_token: "Atzr|bench".into(),
        next_client_secret: None,
        client_secret_expires_at: None,
    }
}

/// A minimal HTTP/1.1 keep-alive responder over rustls: reads a request (headers and a
/// Content-Length body) and writes the fixed answer. With `seal`, it first seals the intake's
/// credentials once to that key, as the mutating webhook must.
async fn bare_server(acceptor: TlsAcceptor, seal: Option<PublicKey>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let seal = seal.map(Arc::new);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seal = seal.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{FIXED}",
                    FIXED.len()
                );
                let credentials = intake_credentials();
                let context = SealContext {
                    team_id: "acme",
                    namespace: "team-acme",
                    secret_name: "acme-us-lwa",
                };
                let mut buffer = Vec::with_capacity(64 * 1024);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    // Read the head.
                    let head_end = loop {
                        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..head_end + length);
                    if let Some(key) = &seal {
                        let envelope = crypto::seal(key, &context, &credentials).unwrap();
                        std::hint::black_box(envelope);
                    }
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// One server under test: where it listens and what it is sent.
struct Target {
    name: &'static str,
    url: String,
    body: Vec<u8>,
    /// The row this one's ratios are taken against (an index into the targets).
    reference: usize,
}

/// What one server measured, every round kept.
#[derive(Default)]
struct Figures {
    latencies: Vec<Duration>,
    per_second: Vec<f64>,
    /// CPU time of the whole process (client and server, user and kernel) per request in the
    /// throughput window, in microseconds: unlike requests per second, hardly moved by other
    /// work on the machine.
    cpu_per_request: Vec<f64>,
}

impl Figures {
    fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
    }
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();
}

/// One round for one server: `sequential` timed requests one after another, then
/// [`CONCURRENCY`] clients for `window`.
async fn round(plan: Plan, client: &reqwest::Client, target: &Target, figures: &mut Figures) {
    for _ in 0..plan.sequential {
        let started = Instant::now();
        send(client, &target.url, target.body.clone()).await;
        figures.latencies.push(started.elapsed());
    }
    let deadline = Instant::now() + plan.window;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let url = target.url.clone();
            let body = target.body.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    send(&client, &url, body.clone()).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    figures
        .per_second
        .push(total as f64 / started.elapsed().as_secs_f64());
    if let (Some(before), Some(after)) = (cpu_before, cpu_time()) {
        figures
            .cpu_per_request
            .push((after - before).as_secs_f64() * 1e6 / total as f64);
    }
}

/// CPU time this process's threads have run so far (Linux: the first field of each thread's
/// `/proc/self/task/*/schedstat`, in nanoseconds); `None` where that is not available.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Median and range of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

/// The argument after `flag`, if given.
fn argument(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            rounds: 5,
            sequential: 400,
            window: Duration::from_secs(1),
            counted: 2000,
        }
    } else {
        Plan {
            rounds: 1,
            sequential: 50,
            window: Duration::from_millis(200),
            counted: 20,
        }
    };
    let profile = argument("--profile");
    let requests: usize = argument("--requests")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pki = TestPki::new();
        let cluster = Arc::new(FakeCluster::with_team(
            "team-acme",
            "acme",
            "acme-us",
            &["gw-main"],
        ));
        let keyring = Arc::new(RwLock::new(Keyring::generate(jiff::Timestamp::now())));
        let public_key = keyring.read().unwrap().active().public_key();
        let metrics = Metrics::new().unwrap();
        let admission = support::webhook::admission(cluster, keyring, metrics, Captured::default());
        let webhook = RunningWebhook::start(admission.clone(), pki.store()).await;
        let acceptor = TlsAcceptor::from(tls::server_config(pki.store()).unwrap());
        let bare = bare_server(acceptor.clone(), None).await;
        let bare_seal = bare_server(acceptor, Some(public_key)).await;

        let pod_review = Review::pod("CREATE")
            .user("alice@example.com", &["openteam:team:acme"])
            .object(pod(
                "gw",
                "team-acme",
                Some("gw-main"),
                json!({"volumes": [{"name": "token", "secret": {"secretName": "acme-us-sp-api"}}],
                       "containers": [{"name": "main", "image": "registry.example/gateway:1",
                         "volumeMounts": [{"name": "token", "mountPath": "/var/run/sp-api"}]}]}),
            ))
            .body();
        let intake_review = Review::secret("CREATE")
            .user("alice@example.com", &["openteam:team:acme"])
            .object(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "acme-us-lwa", "namespace": "team-acme",
                             "labels": {"connectors.openteam.io/secret-role": "lwa-credentials"}},
                "stringData": {"clientId": "amzn1.application-oa2-client.bench",
                               "clientSecret": "amzn1.oa2-cs.v1.bench",
                               "refreshToken": "Atzr|bench"}
            }))
            .body();

        let targets = [
            Target {
                name: "bare rustls, fixed answer",
                url: format!("{bare}/validate"),
                body: pod_review.clone(),
                reference: 0,
            },
            Target {
                name: "webhook /validate pod",
                url: format!("{}/validate", webhook.url()),
                body: pod_review.clone(),
                reference: 0,
            },
            Target {
                name: "bare rustls + one seal",
                url: format!("{bare_seal}/mutate"),
                body: intake_review.clone(),
                reference: 0,
            },
            Target {
                name: "webhook /mutate intake (seal)",
                url: format!("{}/mutate", webhook.url()),
                body: intake_review.clone(),
                reference: 2,
            },
        ];
        let client = https_client(&pki.ca_pem);

        if let Some(which) = profile {
            // One server alone, sequential requests: what a profiler attributes is then this
            // server's path (plus the client's, which is the same for every server).
            let target = match which.as_str() {
                "bare" => &targets[0],
                "validate" => &targets[1],
                "bare-seal" => &targets[2],
                "mutate" => &targets[3],
                other => panic!("--profile bare|validate|bare-seal|mutate, not {other}"),
            };
            for _ in 0..100 {
                send(&client, &target.url, target.body.clone()).await;
            }
            let started = Instant::now();
            for _ in 0..requests {
                send(&client, &target.url, target.body.clone()).await;
            }
            println!(
                "{}: {requests} sequential requests in {:.2}s",
                target.name,
                started.elapsed().as_secs_f64()
            );
            webhook.stop().await;
            return;
        }

        println!(
            "admission over TLS keep-alive on loopback, {} interleaved rounds; per server and \
             round: {} sequential requests (latency), then {CONCURRENCY} concurrent clients for \
             {:.1}s (throughput)",
            plan.rounds,
            plan.sequential,
            plan.window.as_secs_f64()
        );
        println!(
            "pod review: {} bytes; intake review: {} bytes",
            pod_review.len(),
            intake_review.len()
        );
        // Warm up: handshakes, pools, caches.
        for target in &targets {
            for _ in 0..100 {
                send(&client, &target.url, target.body.clone()).await;
            }
        }
        let mut figures: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
        for _ in 0..plan.rounds {
            for (target, figures) in targets.iter().zip(&mut figures) {
                round(plan, &client, target, figures).await;
            }
        }

        println!(
            "{:<31} {:>10} {:>10} {:>8}   {:>6} {:>6} {:>7} {:>11} {:>8}   ratios against",
            "server", "p50", "p99", "req/s", "p50 x", "p99 x", "req/s x", "(range)", "vs bare"
        );
        for (target, f) in targets.iter().zip(&figures) {
            let reference = &figures[target.reference];
            let (per_second, _, _) = spread(f.per_second.clone());
            // The throughput ratio of each round, against the same round's reference.
            let ratios = |reference: &Figures| {
                spread(
                    f.per_second
                        .iter()
                        .zip(&reference.per_second)
                        .map(|(own, reference)| own / reference)
                        .collect(),
                )
            };
            let (ratio, low, high) = ratios(reference);
            let (to_bare, _, _) = ratios(&figures[0]);
            println!(
                "{:<31} {:>10} {:>10} {:>8.0}   {:>6.2} {:>6.2} {:>7.2} {:>11} {:>8.2}   {}",
                target.name,
                ms(f.percentile(50)),
                ms(f.percentile(99)),
                per_second,
                f.percentile(50).as_secs_f64() / reference.percentile(50).as_secs_f64(),
                f.percentile(99).as_secs_f64() / reference.percentile(99).as_secs_f64(),
                ratio,
                format!("{low:.2}-{high:.2}"),
                to_bare,
                targets[target.reference].name,
            );
        }
        println!(
            "(req/s: median over rounds; req/s x: median of the per-round throughput ratios, \
             and their range; vs bare: the same against the bare server)"
        );
        println!(
            "{:<31} {:>12} {:>9} {:>11} {:>8}   ratios against",
            "CPU per request", "µs", "x", "(range)", "vs bare"
        );
        for (target, f) in targets.iter().zip(&figures) {
            if f.cpu_per_request.is_empty() {
                continue;
            }
            let reference = &figures[target.reference];
            // As a throughput would be: the reference's CPU per request over this one's.
            let ratios = |reference: &Figures| {
                spread(
                    f.cpu_per_request
                        .iter()
                        .zip(&reference.cpu_per_request)
                        .map(|(own, reference)| reference / own)
                        .collect(),
                )
            };
            let (cpu, _, _) = spread(f.cpu_per_request.clone());
            let (ratio, low, high) = ratios(reference);
            let (to_bare, _, _) = ratios(&figures[0]);
            println!(
                "{:<31} {:>12.1} {:>9.2} {:>11} {:>8.2}   {}",
                target.name,
                cpu,
                ratio,
                format!("{low:.2}-{high:.2}"),
                to_bare,
                targets[target.reference].name,
            );
        }
        println!(
            "(the whole process: client and server, user and kernel; x: the reference's CPU per \
             request over this one's, median of the rounds, so 1 is as cheap as the reference)"
        );

        println!(
            "allocations per request ({} sequential requests; the whole exchange: client and \
             server in this process)",
            plan.counted
        );
        for target in &targets {
            let (count, bytes) = allocations_per(plan.counted, || {
                send(&client, &target.url, target.body.clone())
            })
            .await;
            println!(
                "  {:<31} {count:>8.1} allocations {bytes:>10.0} bytes",
                target.name
            );
        }
        let reviewer: &Reviewer = &admission;
        for (name, webhook, body) in [
            ("review_json, validate pod", Webhook::Validate, &pod_review),
            (
                "review_json, mutate intake",
                Webhook::Mutate,
                &intake_review,
            ),
        ] {
            let (count, bytes) = allocations_per(plan.counted, || async move {
                std::hint::black_box(reviewer.review_json(webhook, body).await);
            })
            .await;
            println!("  {name:<31} {count:>8.1} allocations {bytes:>10.0} bytes (handler alone)");
        }
        webhook.stop().await;
    });
}
