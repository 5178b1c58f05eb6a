//! A LOCAL LWA EMULATOR, NOT AMAZON: the token endpoint the demo (`make demo`) points the
//! operator at, so the operator's whole job can be seen without Amazon credentials. It never
//! contacts Amazon. It registers one demo seller and writes, into the directory given as the
//! first argument: `url` (the HTTPS token endpoint), `ca.pem` (its self-signed CA), and the
//! demo seller's `client-id`, `client-secret` and `refresh-token` (made-up values it accepts).
//!
//! Run: `cargo run --example lwa_emulator -- DIR [EXPIRES_IN_SECONDS]` (stops on SIGTERM or
//! Ctrl-C). It also writes `calls`, the number of token requests served, every half second.

#[path = "../tests/support/lwa_emulator.rs"]
#[allow(dead_code)]
mod lwa_emulator;

use std::path::PathBuf;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".to_owned()));
    std::fs::create_dir_all(&dir)?;
    let emulator = lwa_emulator::LwaEmulator::start().await;
    if let Some(seconds) = std::env::args().nth(2).and_then(|s| s.parse().ok()) {
        emulator.set_expires_in(seconds);
    }
    let seller = emulator.new_seller();
    std::fs::write(dir.join("ca.pem"), emulator.ca_pem())?;
    std::fs::write(dir.join("client-id"), &seller.client_id)?;
    std::fs::write(dir.join("client-secret"), &seller.client_secret)?;
    std::fs::write(dir.join("refresh-token"), &seller.refresh_token)?;
    // Written last: its presence says the emulator is ready.
    std::fs::write(dir.join("url"), emulator.https_url())?;
    println!(
        "LWA EMULATOR (local, not Amazon) serving {} ; demo credentials in {}",
        emulator.https_url(),
        dir.display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => std::fs::write(dir.join("calls"), emulator.total_calls().to_string())?,
        }
    }
    println!(
        "LWA emulator: {} token requests served",
        emulator.total_calls()
    );
    Ok(())
}
