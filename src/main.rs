use std::process::ExitCode;

use clap::Parser;

use amazon_seller_operator::{cli, config::Cli};

/// mimalloc rather than the system allocator: less CPU and about half the resident memory
/// once a large cache has settled (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: commands use 2 and 3 for their own outcomes
    // (`check-credentials`: 2 = credentials rejected, 3 = LWA unavailable).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Unlocked handles: `run` writes logs and audit records from many threads, so holding the
    // stdout lock here for the life of the process would block them all.
    cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr())
}
