//! The `stackhook` binary: parse the command line, start tracing, run, and own the exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A deployer waits on the engine, not on its own CPU: two workers and a few blocking threads
    // (git, compose files) are plenty, and each thread that allocates costs glibc an arena, which
    // is most of an idle server's memory (bench/README.md).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("stackhook: starting the runtime: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> ExitCode {
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
