//! A LOCAL LWA EMULATOR, NOT AMAZON: the token endpoint the demo (`make demo`) points the
//! operator at, so the operator's whole job can be seen without Amazon credentials. It never
//! contacts Amazon. It registers one demo seller and writes, into the directory given as the
//! first argument: `url` (the HTTPS token endpoint), `ca.pem` (its self-signed CA), and the
//! demo seller's `client-id`, `client-secret` and `refresh-token` (made-up values it accepts).
//!
//! Run: `cargo run --example lwa_emulator -- DIR` (stops on SIGTERM or Ctrl-C).

#[path = "../tests/support/lwa_emulator.rs"]
#[allow(dead_code)]
mod lwa_emulator;

use std::path::PathBuf;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".to_owned()));
    std::fs::create_dir_all(&dir)?;
    let emulator = lwa_emulator::LwaEmulator::start().await;
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
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "LWA emulator: {} token requests served",
        emulator.total_calls()
    );
    Ok(())
}
