//! Seal and open one LWA credential (HPKE X25519 / HKDF-SHA256 / AES-256-GCM), per operation.
//! Prints figures; asserts nothing about timing.
//!
//! Run: `cargo bench --bench sealing`

use std::hint::black_box;
use std::time::{Duration, Instant};

use amazon_seller_operator::crypto::{self, Credentials, Keyring, SealContext};

fn per_op(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let keyring = Keyring::generate(jiff::Timestamp::now());
    let public = keyring.active().public_key();
    let context = SealContext {
        team_id: "acme",
        namespace: "team-acme",
        secret_name: "acme-us-lwa",
    };
    let credentials = Credentials {
        client_id: "amzn1.application-oa2-client.0123456789abcdef0123456789abcdef".into(),
        client_secret:
            "amzn1.oa2-cs.v1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
        refresh_token: format!("Atzr|{}", "x".repeat(400)).into(),
        next_client_secret: None,
        client_secret_expires_at: None,
    };
    let envelope = crypto::seal(&public, &context, &credentials).expect("seal");
    let n = 2_000;
    // Warm up caches and the allocator.
    for _ in 0..200 {
        black_box(crypto::seal(&public, &context, &credentials).expect("seal"));
    }

    let started = Instant::now();
    for _ in 0..n {
        black_box(crypto::seal(&public, &context, black_box(&credentials)).expect("seal"));
    }
    let seal = per_op(started.elapsed(), n);

    let started = Instant::now();
    for _ in 0..n {
        black_box(crypto::open(&keyring, &context, black_box(&envelope)).expect("open"));
    }
    let open = per_op(started.elapsed(), n);

    println!(
        "sealing benchmark ({n} operations each, envelope {} bytes)",
        envelope.len()
    );
    println!("  seal per credential: {seal:>8.1} µs");
    println!("  open per credential: {open:>8.1} µs");
    println!("  opens per second on one core: {:.0}", 1e6 / open);
}
