//! Admission webhook latency and throughput over TLS keep-alive on loopback, side by side with
//! a bare rustls server that answers every request with a fixed AdmissionReview. Prints
//! figures and their ratio; asserts nothing.
//!
//!     cargo bench --bench admission
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it makes a short smoke run.
//!
//! The difference between the two is what the webhook adds on top of TLS and HTTP: parsing the
//! review, converting the pod or Secret, the rules, metering, the audit record, and (for the
//! intake) one HPKE seal.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use amazon_seller_operator::crypto::Keyring;
use amazon_seller_operator::https::tls;
use amazon_seller_operator::observability::metrics::Metrics;

use support::Captured;
use support::webhook::{FakeCluster, Review, RunningWebhook, TestPki, https_client, pod};

const CONCURRENCY: usize = 16;

/// How much to measure: the full run under `cargo bench`, a smoke run under `cargo test`.
#[derive(Clone, Copy)]
struct Plan {
    sequential: usize,
    window: Duration,
}

const FIXED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-4000-8000-000000000001","allowed":true,"status":{},"auditAnnotations":{"reason":"none"}}}"#;

/// A minimal HTTP/1.1 keep-alive responder over rustls: reads a request (headers and a
/// Content-Length body) and writes the fixed answer.
async fn bare_server(acceptor: TlsAcceptor) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{FIXED}",
                    FIXED.len()
                );
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
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

async fn measure(plan: Plan, url: &str, ca_pem: &str, body: Vec<u8>) -> Figures {
    let client = https_client(ca_pem);
    let url = url.to_owned();
    let send = move |client: reqwest::Client, body: Vec<u8>| {
        let url = url.clone();
        async move {
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
    };
    // Warm up: handshake, pools, caches.
    for _ in 0..100 {
        send(client.clone(), body.clone()).await;
    }
    let mut latencies = Vec::with_capacity(plan.sequential);
    for _ in 0..plan.sequential {
        let started = Instant::now();
        send(client.clone(), body.clone()).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p50 = latencies[plan.sequential / 2];
    let p99 = latencies[plan.sequential * 99 / 100];

    let deadline = Instant::now() + plan.window;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let body = body.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    send(client.clone(), body.clone()).await;
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
    Figures {
        p50,
        p99,
        per_second: total as f64 / started.elapsed().as_secs_f64(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let plan = if std::env::args().any(|a| a == "--bench") {
        Plan {
            sequential: 2000,
            window: Duration::from_secs(3),
        }
    } else {
        Plan {
            sequential: 100,
            window: Duration::from_millis(300),
        }
    };
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
        let metrics = Metrics::new().unwrap();
        let admission = support::webhook::admission(cluster, keyring, metrics, Captured::default());
        let webhook = RunningWebhook::start(admission, pki.store()).await;
        let acceptor = TlsAcceptor::from(tls::server_config(pki.store()).unwrap());
        let bare = bare_server(acceptor).await;

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

        println!(
            "admission over TLS keep-alive on loopback: {} sequential requests (latency), \
             {CONCURRENCY} concurrent clients for {:.1}s (throughput)",
            plan.sequential,
            plan.window.as_secs_f64()
        );
        println!(
            "pod review: {} bytes; intake review: {} bytes",
            pod_review.len(),
            intake_review.len()
        );
        let baseline = measure(
            plan,
            &format!("{bare}/validate"),
            &pki.ca_pem,
            pod_review.clone(),
        )
        .await;
        let rows = [
            ("bare rustls, fixed answer", &baseline),
            (
                "webhook /validate pod",
                &measure(
                    plan,
                    &format!("{}/validate", webhook.url()),
                    &pki.ca_pem,
                    pod_review,
                )
                .await,
            ),
            (
                "webhook /mutate intake (seal)",
                &measure(
                    plan,
                    &format!("{}/mutate", webhook.url()),
                    &pki.ca_pem,
                    intake_review,
                )
                .await,
            ),
        ];
        println!(
            "{:<32} {:>12} {:>12} {:>12}   {:>9} {:>9} {:>11}",
            "server", "p50", "p99", "req/s", "p50 x", "p99 x", "req/s x"
        );
        for (name, f) in rows {
            println!(
                "{:<32} {:>12} {:>12} {:>12.0}   {:>9.2} {:>9.2} {:>11.2}",
                name,
                ms(f.p50),
                ms(f.p99),
                f.per_second,
                f.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
                f.p99.as_secs_f64() / baseline.p99.as_secs_f64(),
                f.per_second / baseline.per_second,
            );
        }
        webhook.stop().await;
    });
}
