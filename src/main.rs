use std::process::ExitCode;

use clap::Parser;

use amazon_seller_operator::{cli, config::Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}
