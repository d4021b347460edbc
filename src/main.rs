//! The `stackhook` binary: parse the command line, start tracing (`STACKHOOK_LOG`,
//! `STACKHOOK_LOG_FORMAT`), run, and own the exit code.

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
    let filter =
        EnvFilter::try_from_env("STACKHOOK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("STACKHOOK_LOG_FORMAT").as_deref() {
        // One JSON object a line, with the deployment's span (its id) on each, for log shippers.
        Ok("json") => logs.json().with_current_span(true).init(),
        Ok("text") | Err(_) => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        Ok(other) => {
            eprintln!("stackhook: STACKHOOK_LOG_FORMAT must be text or json, not {other:?}");
            return ExitCode::from(2);
        }
    }
    let cli = stackhook::cli::Cli::parse();
    match stackhook::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stackhook: {error:#}");
            ExitCode::from(2)
        }
    }
}
