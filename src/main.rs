//! The `stackhook` binary: parse the command line, start tracing, run, and own the exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STACKHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in container logs and files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = stackhook::cli::Cli::parse();
    match stackhook::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stackhook: {error:#}");
            ExitCode::from(2)
        }
    }
}
