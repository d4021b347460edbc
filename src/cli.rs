//! The command line: `serve`, `deploy` and `status`, each a thin layer over the library.
//!
//! Owns argument parsing and what the commands print; `main` only turns the result into an exit
//! code.

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Config;
use crate::deploy::plan::Kind;
use crate::deploy::worker::Worker;
use crate::deploy::{self, Deployer, Outcome, Report, Request, SUSPEND_FILE, Trigger, TriggerKind};
use crate::engine::docker;
use crate::engine::{Engine, State};
use crate::http::{self, AppState};
use crate::notify::Notifier;
use crate::repo::{self, CommitId};
use crate::slot::Slots;
use crate::stack::{Fingerprint, StackName};
use crate::store;

/// stackhook keeps a host's compose stacks in step with a git repository.
#[derive(Debug, Parser)]
#[command(name = "stackhook", version, about)]
pub struct Cli {
    /// A TOML config file; `STACKHOOK_*` environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhooks and /health; deploy once at start, then on every trigger.
    Serve,
    /// Run one pass and exit: sync, then deploy changed stacks (or only the named ones, forced).
    Deploy {
        /// Stacks to deploy even if unchanged; none means every changed stack.
        stacks: Vec<String>,
        /// Print the plan and touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show each deployed stack: commit, fingerprint, pin, services and their state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Deploy a stack as it was at an older commit, or as a deployment left it (images
    /// included, where the engine still has them), and pin it there: pushes do not move it
    /// until `stackhook unpin`.
    Rollback {
        stack: String,
        /// A commit (id, prefix, tag) or a deployment id from the history.
        #[arg(long, value_name = "COMMIT|DEPLOYMENT")]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Release a pinned stack and deploy it at the branch head.
    Unpin {
        stack: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command; the exit code says whether it did what was asked.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    repo::set_timeout(config.git_timeout);
    let engine: Arc<dyn Engine> = Arc::new(docker::connect(&config.engine_hosts).await?);
    match cli.command {
        Command::Serve => serve(config, engine).await.map(|()| ExitCode::SUCCESS),
        Command::Deploy {
            stacks,
            dry_run,
            json,
        } => deploy(config, engine, &stacks, dry_run, json).await,
        Command::Status { json } => status(&config, engine.as_ref(), json).await,
        Command::Rollback { stack, to, json } => {
            let request = Request::rollback(StackName::parse(&stack)?, to);
            deploy_request(config, engine, request, json).await
        }
        Command::Unpin { stack, json } => {
            let request = Request::unpin(StackName::parse(&stack)?);
            deploy_request(config, engine, request, json).await
        }
    }
}

async fn serve(config: Arc<Config>, engine: Arc<dyn Engine>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!("listening on {}", listener.local_addr()?);
    serve_on(config, engine, listener, shutdown_signal()).await
}

/// The server on a bound listener: reconciles once at start, polls if configured, and answers
/// HTTP until `shutdown` completes. In a slot, it deploys only while active, and after handing
/// over to the other slot it goes on reporting healthy for `config.handover`, drains for
/// `config.drain`, then stops (its container too).
pub async fn serve_on(
    config: Arc<Config>,
    engine: Arc<dyn Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Reporting healthy after the handover only helps when requests can be handed on.
    let handover = match config.peer {
        Some(_) => config.handover,
        None => Duration::ZERO,
    };
    let slots = Slots::new(config.slot, config.state_dir.clone()).with_handover(handover);
    let deployer = Deployer {
        config: Arc::clone(&config),
        engine: Arc::clone(&engine),
        holder: format!("stackhook serve, pid {}", std::process::id()),
        metrics: Default::default(),
        slots: slots.clone(),
    };
    let notifier = Notifier::new(&config)?;
    let worker = Worker::new(deployer).with_notifier(notifier.clone());
    let drift = tokio::spawn(deploy::drift::watch(worker.clone(), config.heal));
    let image_updates = config.image_check.map(|every| {
        let watch = deploy::image_updates::watch(worker.clone(), every, config.image_update);
        tokio::spawn(watch)
    });
    let background = tokio::spawn(trigger_while_active(
        worker.clone(),
        slots.clone(),
        config.state_dir.clone(),
        config.poll_interval,
    ));
    let drained = {
        let slots = slots.clone();
        let drain = config.drain;
        async move {
            slots.handed_over().await;
            tracing::info!(
                "handed over to slot {}; handing requests on for {}, then draining for {}",
                slots.active(),
                humantime::format_duration(handover),
                humantime::format_duration(drain)
            );
            tokio::time::sleep(handover + drain).await;
        }
    };
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = drained => {}
        }
    };
    let state = AppState {
        config,
        worker: worker.clone(),
        slots: slots.clone(),
    };
    let result = http::serve(listener, state, shutdown).await;
    background.abort();
    drift.abort();
    if let Some(image_updates) = &image_updates {
        image_updates.abort();
    }
    // A pass cut off mid-recreate would leave a container renamed aside; the next pass would
    // put it right, but a clean stop is better. This also makes a slot that handed over wait
    // for the pass that started the handover.
    if !worker.finish(FINISH_PASS).await {
        tracing::warn!(
            "the running deployment did not finish within {}; stopping anyway",
            humantime::format_duration(FINISH_PASS)
        );
    }
    if let Some(notifier) = &notifier {
        finish_notifications(notifier, FINISH_NOTIFICATIONS).await;
    }
    if let Some(container) = slots.own_container() {
        // Stopping through the engine, not by exiting, keeps `restart: unless-stopped` from
        // bringing the old slot back. The engine answers with SIGTERM, which must end this
        // process here: the handler `shutdown_signal` installed stays installed after its future
        // is dropped, so the signal would otherwise be swallowed and the engine would kill the
        // container after the grace period (exit status 137, seen in tests/it/self_update.rs).
        tracing::info!("drained; stopping this slot's container");
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = engine.stop(&container, Some(Duration::from_secs(10)));
        #[cfg(unix)]
        tokio::select! {
            stopped = stop => stopped?,
            _ = terminate.recv() => tracing::info!("stopped by the engine"),
        }
        #[cfg(not(unix))]
        stop.await?;
    }
    result
}

/// How long a stopping server waits for the running pass: less than the self stack's
/// `stop_grace_period` (30s) and systemd's `TimeoutStopSec` (60s), after which they kill it.
const FINISH_PASS: Duration = Duration::from_secs(25);

/// How long a stopping server waits for the messages of its last deployment: short, as a slot
/// that stops is within its grace period already.
const FINISH_NOTIFICATIONS: Duration = Duration::from_secs(3);

/// How long `stackhook deploy` waits for its messages before it exits: long enough for a
/// target's retries (1 s, 2 s, 4 s), not for a target that never answers.
const DEPLOY_NOTIFICATIONS: Duration = Duration::from_secs(15);

async fn finish_notifications(notifier: &Notifier, patience: Duration) {
    if !notifier.finish(patience).await {
        tracing::warn!(
            "notifications still unsent after {}; not waiting for them",
            humantime::format_duration(patience)
        );
    }
}

/// Triggers a pass whenever this instance becomes active (at start, and when the other slot
/// hands over to it, so that nothing that reached the old slot is missed), at every poll, and
/// while the slot that handed over left requests in the inbox.
async fn trigger_while_active(
    worker: Worker,
    slots: Slots,
    state_dir: PathBuf,
    poll: Option<Duration>,
) {
    const CHECK: Duration = Duration::from_millis(250);
    let mut was_active = false;
    let mut last_pass = Instant::now();
    let mut inbox_seen = None;
    loop {
        let active = slots.is_active();
        let poll_due = poll.is_some_and(|poll| last_pass.elapsed() >= poll);
        let inbox = store::inbox_written(&state_dir);
        let inbox_new = inbox.is_some() && inbox != inbox_seen;
        let request = if !was_active {
            Some(Request::all_changed().by(Trigger::new(TriggerKind::Start)))
        } else if poll_due {
            Some(Request::all_changed().by(Trigger::new(TriggerKind::Poll)))
        } else if inbox_new {
            // The pass takes the inbox's stacks into its request.
            Some(Request::default().by(Trigger::new(TriggerKind::Inbox)))
        } else {
            None
        };
        if let Some(request) = request.filter(|_| active) {
            inbox_seen = inbox;
            worker.trigger(request);
            last_pass = Instant::now();
        }
        was_active = active;
        let until_poll = poll.map_or(CHECK, |poll| poll.saturating_sub(last_pass.elapsed()));
        tokio::time::sleep(until_poll.min(CHECK)).await;
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

async fn deploy(
    config: Arc<Config>,
    engine: Arc<dyn Engine>,
    stacks: &[String],
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut request = if stacks.is_empty() {
        Request::all_changed()
    } else {
        Request::default()
    };
    for stack in stacks {
        request.forced.insert(StackName::parse(stack)?, None);
    }
    request.dry_run = dry_run;
    deploy_request(config, engine, request, json).await
}

/// Runs one pass for `request` from the command line and prints its report.
async fn deploy_request(
    config: Arc<Config>,
    engine: Arc<dyn Engine>,
    mut request: Request,
    json: bool,
) -> anyhow::Result<ExitCode> {
    request.triggers.push(Trigger::new(TriggerKind::Cli));
    let slots = Slots::new(config.slot, config.state_dir.clone()).without_serving();
    let notifier = Notifier::new(&config)?;
    let deployer = Deployer {
        config,
        engine,
        holder: format!("stackhook deploy, pid {}", std::process::id()),
        metrics: Default::default(),
        slots,
    };
    // Sorted with the server's ids in the history: the time, then the process id.
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("{seconds}-{}", std::process::id());
    let span = tracing::info_span!("deployment", id = %id);
    let report = Arc::new(deployer.run(id, &request).instrument(span).await);
    if json {
        println!("{}", serde_json::to_string_pretty(&*report)?);
    } else {
        print!("{}", render_report(&report));
    }
    if let Some(notifier) = notifier {
        notifier.deployment_finished(Arc::clone(&report));
        finish_notifications(&notifier, DEPLOY_NOTIFICATIONS).await;
    }
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A report as a person reads it: per stack and service, what was (or would be) done and why.
pub fn render_report(report: &Report) -> String {
    let mut out = String::new();
    let commit = report
        .commit
        .as_deref()
        .map_or("-", |c| &c[..c.len().min(12)]);
    let branch = report.branch.as_deref().unwrap_or("-");
    let host = report
        .host
        .as_deref()
        .map(|host| format!(" on host {host}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "deployment {} at {commit} ({branch}){host}",
        report.deployment
    );
    if report.suspended {
        let _ = writeln!(
            out,
            "suspended: {SUSPEND_FILE} is present, nothing deployed"
        );
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "error: {error}");
    }
    for stack in &report.stacks {
        let outcome = match stack.outcome {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::Planned => "plan",
            Outcome::Failed => "FAILED",
            Outcome::Pruned => "pruned",
        };
        let _ = writeln!(out, "stack {}: {outcome}", stack.stack);
        if let Some(pinned) = &stack.pinned {
            let _ = writeln!(out, "  pinned at {}", &pinned[..pinned.len().min(12)]);
        }
        for action in &stack.actions {
            let kind = match action.kind {
                Kind::Create => "create",
                Kind::Recreate => "recreate",
                Kind::Start => "start",
                Kind::Remove => "remove",
                Kind::Keep => "unchanged",
            };
            let service = match action.number {
                1 => action.service.clone(),
                number => format!("{} #{number}", action.service),
            };
            let _ = match &action.reason {
                Some(reason) => writeln!(out, "  {kind:<9} {service}: {reason}"),
                None => writeln!(out, "  {kind:<9} {service}"),
            };
        }
        for note in &stack.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        if let Some(error) = &stack.error {
            let _ = writeln!(out, "  error: {error}");
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct StackStatus {
    stack: String,
    project: String,
    commit: CommitId,
    fingerprint: Fingerprint,
    deployed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pinned: Option<store::Pin>,
    services: Vec<ServiceStatus>,
    /// What the server's last image check found (`STACKHOOK_IMAGE_CHECK`).
    #[serde(skip_serializing_if = "Option::is_none")]
    image_check: Option<store::ImageCheck>,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    service: String,
    container: Option<String>,
    state: String,
}

async fn status(config: &Config, engine: &dyn Engine, json: bool) -> anyhow::Result<ExitCode> {
    let state = store::load(&config.state_dir)?;
    let suspended = store::checkout_dir(&config.state_dir)
        .join(SUSPEND_FILE)
        .exists();
    let mut stacks = Vec::new();
    for (name, record) in &state.stacks {
        let containers = engine.containers(Some(&record.project)).await?;
        let services = record
            .services
            .keys()
            .map(|service| {
                let container = containers
                    .iter()
                    .find(|c| c.label(deploy::labels::SERVICE) == Some(service));
                ServiceStatus {
                    service: service.clone(),
                    container: container.map(|c| c.name.clone()),
                    state: container.map_or("missing".into(), |c| state_name(&c.state)),
                }
            })
            .collect();
        stacks.push(StackStatus {
            stack: name.clone(),
            project: record.project.clone(),
            commit: record.commit.clone(),
            fingerprint: record.fingerprint.clone(),
            deployed_at: record.deployed_at.clone(),
            pinned: state.pins.get(name).cloned(),
            services,
            image_check: state.image_checks.get(name).cloned(),
        });
    }
    if json {
        let body = serde_json::json!({ "suspended": suspended, "stacks": stacks });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    if suspended {
        println!("suspended: {SUSPEND_FILE} is present in the repository, deploys are paused");
    }
    if stacks.is_empty() {
        println!("no stack deployed yet");
    }
    for stack in &stacks {
        println!(
            "{} (project {}) commit {} fingerprint {} at {}",
            stack.stack,
            stack.project,
            stack.commit.short(),
            stack.fingerprint.short(),
            stack.deployed_at
        );
        if let Some(pin) = &stack.pinned {
            let to = pin
                .deployment
                .as_deref()
                .map_or(String::new(), |deployment| {
                    format!(" (deployment {deployment})")
                });
            println!(
                "  pinned at {}{to} since {}: `stackhook unpin {}` releases it",
                pin.commit.short(),
                pin.since,
                stack.stack
            );
        }
        for service in &stack.services {
            println!(
                "  {:<20} {:<10} {}",
                service.service,
                service.state,
                service.container.as_deref().unwrap_or("-")
            );
        }
        if let Some(check) = &stack.image_check {
            for line in image_check_lines(check) {
                println!("  {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an image check found that is worth a line: updates, and services it could not check.
fn image_check_lines(check: &store::ImageCheck) -> Vec<String> {
    let mut lines = Vec::new();
    for (service, image) in &check.services {
        match &image.finding {
            store::Finding::UpdateAvailable { running, available } => lines.push(format!(
                "image update: {service}: {} names {available}, it runs {} (checked {})",
                image.image,
                running.as_deref().unwrap_or(&image.image_id),
                check.checked_at
            )),
            store::Finding::Unknown { reason } => lines.push(format!(
                "image not checked: {service}: {}: {reason}",
                image.image
            )),
            store::Finding::UpToDate { .. } => {}
        }
    }
    lines
}

fn state_name(state: &State) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(map)) => map
            .values()
            .next()
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".to_owned(),
    }
}
