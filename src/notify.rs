//! Notifications: when a deployment ends, one message to each configured target (a JSON webhook,
//! Discord, Slack, ntfy) in the shape that service expects (issue 8).
//!
//! Owns what a message says and its delivery: in the background, each target on its own, retried
//! with backoff on a connection error, a 5xx or a 429, then given up with a warning. A
//! notification never blocks or fails a deployment: `deployment_finished` only spawns the sends.
//! This module reads no settings (`config` does) and decides nothing about a deployment. Like the
//! `?wait=true` answer (`http::answer`), a message carries an error's first line and the
//! deployment's own log lines, never a failed container's output, which may hold secrets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Config, NotifyKind, NotifyOn, NotifyTarget};
use crate::deploy::plan::{Kind, Summary};
use crate::deploy::{Outcome, Report};

/// Tells every configured target of the deployments that end. Clones share one HTTP client.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    targets: Vec<NotifyTarget>,
    on: NotifyOn,
    /// The first retry's delay; each next one doubles it.
    retry_delay: Duration,
    /// Messages still being sent, for `finish`.
    in_flight: Arc<AtomicUsize>,
    /// The error of the last pass that failed for a transient reason. The worker tries such a
    /// pass again and again while, say, the git remote is down; only the first failure and a
    /// change are worth a message.
    last_transient: Mutex<Option<String>>,
}

/// How often a target is tried again after its first try failed.
pub const RETRIES: u32 = 3;
/// The first retry's delay; then 2 s and 4 s.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest `Retry-After` of a 429 that is honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long one try may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How many of a failed stack's last log lines a message carries.
const LOG_TAIL: usize = 20;

// Each service's limits, applied in bytes: never more than the characters (or UTF-16 units) the
// service counts, so a message within them is never refused for its length.
/// Discord's execute-webhook `content` (docs.discord.com, Webhook resource, "Execute Webhook").
const DISCORD_CONTENT: usize = 2000;
/// Discord's embed `description` ("Embed Limits"; title 256, all embeds together 6000).
const DISCORD_DESCRIPTION: usize = 4096;
const DISCORD_TITLE: usize = 256;
/// Slack's `text` of a section block (docs.slack.dev, Block Kit, "Section block").
const SLACK_SECTION: usize = 3000;
/// Slack allows 50 blocks a message; past this many failed stacks' logs, one line says so.
const SLACK_LOG_BLOCKS: usize = 10;
/// ntfy's default `message-size-limit`; a longer body becomes an attachment (docs.ntfy.sh,
/// "Publishing").
const NTFY_MESSAGE: usize = 4096;
/// Below this many bytes left, a log tail is not worth starting.
const MIN_LOG_ROOM: usize = 64;
/// Marks a cut.
const ELLIPSIS: &str = "…";

const DISCORD_GREEN: u32 = 0x2e_a0_43;
const DISCORD_RED: u32 = 0xd1_24_2f;

impl Notifier {
    /// A notifier for the targets in `config`; `None` when there is none.
    pub fn new(config: &Config) -> anyhow::Result<Option<Notifier>> {
        Notifier::with_retry_delay(config, RETRY_DELAY)
    }

    /// A notifier whose first retry of a failed send comes after `retry_delay`.
    pub fn with_retry_delay(
        config: &Config,
        retry_delay: Duration,
    ) -> anyhow::Result<Option<Notifier>> {
        if config.notify.targets.is_empty() {
            return Ok(None);
        }
        // A redirect is not followed: it would turn the POST into a GET, and a webhook URL that
        // redirects is a mistake to report, not to work around.
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stackhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for notifications")?;
        for target in &config.notify.targets {
            tracing::info!(
                to = kind_name(&target.kind),
                host = %target.host,
                on = ?config.notify.on,
                "notifying deployments"
            );
        }
        Ok(Some(Notifier {
            inner: Arc::new(Inner {
                client,
                targets: config.notify.targets.clone(),
                on: config.notify.on,
                retry_delay,
                in_flight: Arc::new(AtomicUsize::new(0)),
                last_transient: Mutex::new(None),
            }),
        }))
    }

    /// Sends `report` to every target in the background, if it is worth a message (see
    /// `worth_notifying`); returns at once. Must be called within a tokio runtime.
    pub fn deployment_finished(&self, report: Arc<Report>) {
        if !self.inner.first_of_its_kind(&report) || !worth_notifying(&report, self.inner.on) {
            return;
        }
        for target in &self.inner.targets {
            let inner = Arc::clone(&self.inner);
            let target = target.clone();
            let report = Arc::clone(&report);
            let sending = Sending::start(&self.inner.in_flight);
            tokio::spawn(async move {
                let _sending = sending;
                let request = request(&target.kind, &report);
                inner.deliver(&target, &request, &report.deployment).await;
            });
        }
    }

    /// Waits, within `patience`, for the messages still being sent: a process that exits right
    /// after a deployment (`stackhook deploy`, a server that stops) would cut them off. Returns
    /// whether all were sent or given up in time.
    pub async fn finish(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.inner.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Whether a finished pass is worth a message. A failure always is. A dry run never is: it
/// touched nothing, and whoever asked for it reads its answer. Nor is a pass that changed
/// nothing (every stack unchanged, or none, as in a suspended pass): the poll and every push
/// that touches no stack run one. With `NotifyOn::Failures`, only failures are.
pub fn worth_notifying(report: &Report, on: NotifyOn) -> bool {
    if report.dry_run {
        return false;
    }
    if !report.succeeded() {
        return true;
    }
    on == NotifyOn::All
        && report
            .stacks
            .iter()
            .any(|stack| stack.outcome != Outcome::Unchanged)
}

/// What a try came to.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Delivered { tries: u32 },
    GaveUp { tries: u32, reason: String },
}

/// Why a try failed.
#[derive(Debug)]
enum Failure {
    /// A connection error, a timeout, a 5xx or a 429: worth another try, after `after` if the
    /// target said when.
    Passing {
        reason: String,
        after: Option<Duration>,
    },
    /// Another answer (a 4xx, a redirect): the same request would fail again.
    Lasting(String),
}

/// One HTTP request to a target, computed from the report without IO. It holds no secret: the
/// URL and an ntfy token are added when it is sent.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Inner {
    /// Whether `report` is not the same transient failure as the last one. Any other pass but a
    /// dry run ends the run of failures, so that the next outage is told again.
    fn first_of_its_kind(&self, report: &Report) -> bool {
        if report.dry_run {
            return true;
        }
        let mut last = self.last_transient.lock().expect("notifier lock");
        if !report.transient {
            *last = None;
            return true;
        }
        if *last == report.error {
            tracing::debug!(deployment = %report.deployment, "the same failure again: no message");
            return false;
        }
        last.clone_from(&report.error);
        true
    }

    /// Sends `request` to `target`, trying again with backoff; the outcome goes to the log.
    async fn deliver(
        &self,
        target: &NotifyTarget,
        request: &Request,
        deployment: &str,
    ) -> Delivery {
        let to = kind_name(&target.kind);
        let mut delay = self.retry_delay;
        let mut tries = 0;
        loop {
            tries += 1;
            let reason = match self.send(target, request).await {
                Ok(()) => {
                    tracing::debug!(to, host = %target.host, deployment, tries, "notified");
                    return Delivery::Delivered { tries };
                }
                Err(Failure::Passing { reason, after }) if tries <= RETRIES => {
                    tracing::debug!(to, host = %target.host, deployment, "notifying: {reason}");
                    tokio::time::sleep(after.unwrap_or(delay)).await;
                    delay = delay.saturating_mul(2);
                    continue;
                }
                Err(Failure::Passing { reason, .. } | Failure::Lasting(reason)) => reason,
            };
            tracing::warn!(
                to,
                host = %target.host,
                deployment,
                "notification not sent after {tries} tries: {reason}"
            );
            return Delivery::GaveUp { tries, reason };
        }
    }

    /// One try. The reason of a failure never holds the URL: reqwest's errors name it, and a
    /// webhook URL holds its token.
    async fn send(&self, target: &NotifyTarget, request: &Request) -> Result<(), Failure> {
        let mut builder = self
            .client
            .post(target.url.expose())
            .header(CONTENT_TYPE, request.content_type)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let NotifyKind::Ntfy { token: Some(token) } = &target.kind {
            // Marked sensitive by reqwest, so that it never shows in a debug print.
            builder = builder.bearer_auth(token.expose());
        }
        let response = builder.send().await.map_err(|error| Failure::Passing {
            reason: format!("{:#}", anyhow::Error::new(error.without_url())),
            after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(response.headers().get(RETRY_AFTER)?))
            .flatten();
        let answer = response.text().await.unwrap_or_default();
        let answer = answer.split_whitespace().collect::<Vec<_>>().join(" ");
        let reason = match answer.is_empty() {
            true => format!("the target answered {status}"),
            false => format!("the target answered {status}: {}", truncate(&answer, 200)),
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Passing { reason, after })
        } else {
            Err(Failure::Lasting(reason))
        }
    }
}

/// Counts a message being sent, until dropped (also when its task panics or is cut off).
struct Sending(Arc<AtomicUsize>);

impl Sending {
    fn start(in_flight: &Arc<AtomicUsize>) -> Sending {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Sending(Arc::clone(in_flight))
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The request that tells a target of `report`, in its service's shape.
fn request(kind: &NotifyKind, report: &Report) -> Request {
    match kind {
        NotifyKind::Webhook => json_request(&webhook(report)),
        NotifyKind::Discord => json_request(&discord(report)),
        NotifyKind::Slack => json_request(&slack(report)),
        NotifyKind::Ntfy { .. } => ntfy(report),
    }
}

fn json_request(body: &impl Serialize) -> Request {
    Request {
        content_type: "application/json",
        headers: Vec::new(),
        body: serde_json::to_string(body).expect("a message serialises"),
    }
}

/// The JSON webhook's body (`STACKHOOK_NOTIFY_URL`), documented in the README: a stable shape
/// for scripts, with a `text` that chat services taking Slack-like webhooks (Mattermost,
/// Rocket.Chat) show as it is.
#[derive(Debug, Serialize)]
struct Webhook<'a> {
    /// The headline and a line a stack, as the chat messages say them.
    text: String,
    deployment: &'a str,
    commit: Option<&'a str>,
    branch: Option<&'a str>,
    /// The host that deployed (`STACKHOOK_HOST`).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    succeeded: bool,
    started_at: &'a str,
    finished_at: &'a str,
    /// Why the pass as a whole failed: its first line.
    error: Option<String>,
    /// Every stack of the pass, unchanged ones too.
    stacks: Vec<WebhookStack<'a>>,
}

#[derive(Debug, Serialize)]
struct WebhookStack<'a> {
    stack: &'a str,
    outcome: Outcome,
    /// The first line of why the stack failed.
    error: Option<String>,
    /// A failed stack's last deployment log lines; empty for the others.
    log: &'a [String],
}

fn webhook(report: &Report) -> Webhook<'_> {
    let mut text = headline(report);
    for line in stack_lines(report) {
        text.push('\n');
        text.push_str(&line);
    }
    Webhook {
        text,
        deployment: &report.deployment,
        commit: report.commit.as_deref(),
        branch: report.branch.as_deref(),
        host: report.host.as_deref(),
        succeeded: report.succeeded(),
        started_at: &report.started_at,
        finished_at: &report.finished_at,
        error: report.error.as_deref().map(first_line),
        stacks: report
            .stacks
            .iter()
            .map(|stack| WebhookStack {
                stack: &stack.stack,
                outcome: stack.outcome,
                error: stack.error.as_deref().map(first_line),
                log: match stack.outcome {
                    Outcome::Failed => log_tail(&stack.log),
                    _ => &[],
                },
            })
            .collect(),
    }
}

/// Discord's execute-webhook body: `content` and one embed (docs.discord.com, Webhook resource,
/// "Execute Webhook" and "Embed Object"). `allowed_mentions` with nothing to parse keeps an
/// `@everyone` in a log line from pinging anyone.
fn discord(report: &Report) -> Value {
    let (icon, color) = match report.succeeded() {
        true => ("✅", DISCORD_GREEN),
        false => ("❌", DISCORD_RED),
    };
    let mut description = truncate(&stack_lines(report).join("\n"), DISCORD_DESCRIPTION);
    for (stack, log) in failed_logs(report) {
        let open = format!("\n\n**{stack}**, the end of its log:\n```\n");
        let close = "\n```";
        let Some(room) = room(DISCORD_DESCRIPTION, &description, &open, close) else {
            break;
        };
        let lines: Vec<String> = log.iter().map(|line| unfence(line)).collect();
        description.push_str(&open);
        description.push_str(&tail(&lines, room));
        description.push_str(close);
    }
    json!({
        "content": truncate(&format!("{icon} {}", headline(report)), DISCORD_CONTENT),
        "embeds": [{
            "title": truncate(&format!("deployment {}", report.deployment), DISCORD_TITLE),
            "description": description,
            "color": color,
            "timestamp": report.finished_at,
        }],
        "allowed_mentions": { "parse": [] },
    })
}

/// Slack's incoming-webhook body: `text`, shown in notifications, and section blocks of mrkdwn
/// text (docs.slack.dev, "Sending messages using incoming webhooks", Block Kit "Section block").
/// Text is escaped as Slack asks (`&`, `<`, `>`), so that a log line cannot mention a channel.
fn slack(report: &Report) -> Value {
    let icon = match report.succeeded() {
        true => ":white_check_mark:",
        false => ":x:",
    };
    let headline = escape_mrkdwn(&headline(report));
    let mut summary = format!("*{headline}*");
    for line in stack_lines(report) {
        summary.push('\n');
        summary.push_str(&escape_mrkdwn(&line));
    }
    summary.push_str(&format!(
        "\n_deployment {}_",
        escape_mrkdwn(&report.deployment)
    ));
    let mut blocks = vec![section(&truncate(&summary, SLACK_SECTION))];
    let logs = failed_logs(report);
    for (stack, log) in logs.iter().take(SLACK_LOG_BLOCKS) {
        let open = format!("*{}*, the end of its log:\n```\n", escape_mrkdwn(stack));
        let close = "\n```";
        let lines: Vec<String> = log
            .iter()
            .map(|line| escape_mrkdwn(&unfence(line)))
            .collect();
        let room = SLACK_SECTION.saturating_sub(open.len() + close.len());
        blocks.push(section(&format!("{open}{}{close}", tail(&lines, room))));
    }
    if logs.len() > SLACK_LOG_BLOCKS {
        let more = logs.len() - SLACK_LOG_BLOCKS;
        blocks.push(section(&format!(
            "The logs of {more} more failed stacks are in the server log."
        )));
    }
    json!({
        "text": truncate(&format!("{icon} {headline}"), SLACK_SECTION),
        "blocks": blocks,
    })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// ntfy's publish request: the message as a plain-text body, `Title`, `Priority` and `Tags` as
/// headers (docs.ntfy.sh, "Publishing": message title, priority, tags & emojis). A header holds
/// ASCII only, which every HTTP library passes on unchanged.
fn ntfy(report: &Report) -> Request {
    let (priority, tags) = match report.succeeded() {
        true => ("default", "white_check_mark"),
        false => ("high", "rotating_light"),
    };
    let mut body = truncate(&stack_lines(report).join("\n"), NTFY_MESSAGE);
    for (stack, log) in failed_logs(report) {
        let open = format!("\n\n{stack}, the end of its log:\n");
        let Some(room) = room(NTFY_MESSAGE, &body, &open, "") else {
            break;
        };
        body.push_str(&open);
        body.push_str(&tail(log, room));
    }
    let title: String = headline(report)
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    Request {
        content_type: "text/plain; charset=utf-8",
        headers: vec![
            ("Title", title),
            ("Priority", priority.to_owned()),
            ("Tags", tags.to_owned()),
        ],
        body,
    }
}

/// What a message is about, in one line: "Deployed 0123456789ab (main)", "Deployment of
/// 0123456789ab (main) failed".
fn headline(report: &Report) -> String {
    let commit: Option<String> = report
        .commit
        .as_deref()
        .map(|commit| commit.chars().take(12).collect());
    let subject = match (commit, report.branch.as_deref()) {
        (Some(commit), Some(branch)) => Some(format!("{commit} ({branch})")),
        (Some(commit), None) => Some(commit),
        (None, Some(branch)) => Some(format!("({branch})")),
        (None, None) => None,
    };
    let headline = match (report.succeeded(), subject) {
        (true, Some(subject)) => format!("Deployed {subject}"),
        (true, None) => "Deployed".to_owned(),
        (false, Some(subject)) => format!("Deployment of {subject} failed"),
        (false, None) => "Deployment failed".to_owned(),
    };
    match &report.host {
        Some(host) => format!("{headline} on {host}"),
        None => headline,
    }
}

/// A line for the pass's error, if any, and one for each stack that did something; the
/// unchanged ones are counted.
fn stack_lines(report: &Report) -> Vec<String> {
    let mut lines: Vec<String> = report
        .error
        .iter()
        .map(|error| format!("error: {}", first_line(error)))
        .collect();
    let mut unchanged = 0;
    for stack in &report.stacks {
        let name = &stack.stack;
        lines.push(match stack.outcome {
            Outcome::Unchanged => {
                unchanged += 1;
                continue;
            }
            Outcome::Failed => {
                let error = stack.error.as_deref().unwrap_or("no reason given");
                format!("{name}: failed: {}", first_line(error))
            }
            Outcome::Deployed => format!("{name}: deployed{}", actions(&stack.actions)),
            Outcome::Planned => format!("{name}: planned{}", actions(&stack.actions)),
            Outcome::Pruned => format!("{name}: taken down, gone from the repository"),
        });
    }
    match unchanged {
        0 => {}
        1 => lines.push("1 stack unchanged".to_owned()),
        n => lines.push(format!("{n} stacks unchanged")),
    }
    lines
}

/// What was done to which services: " (recreate web, create worker)".
fn actions(actions: &[Summary]) -> String {
    let mut done: Vec<String> = actions
        .iter()
        .filter_map(|action| {
            let kind = match action.kind {
                Kind::Create => "create",
                Kind::Recreate => "recreate",
                Kind::Start => "start",
                Kind::Remove => "remove",
                Kind::Keep => return None,
            };
            Some(format!("{kind} {}", action.service))
        })
        .collect();
    // The containers of a scaled service are one entry each; one mention is enough.
    done.dedup();
    match done.is_empty() {
        true => String::new(),
        false => format!(" ({})", done.join(", ")),
    }
}

/// An error's first line. `deploy` puts a failed container's last output on the lines after it:
/// that output is the container's to say, not a chat channel's, so it stays in the server log,
/// as it does for `?wait=true` answers.
fn first_line(error: &str) -> String {
    match error.split_once('\n') {
        None => error.to_owned(),
        Some((first, _)) => format!("{first} (more in the server log)"),
    }
}

/// Each failed stack with the end of its deployment log, if it has one.
fn failed_logs(report: &Report) -> Vec<(&str, &[String])> {
    report
        .stacks
        .iter()
        .filter(|stack| stack.outcome == Outcome::Failed && !stack.log.is_empty())
        .map(|stack| (stack.stack.as_str(), log_tail(&stack.log)))
        .collect()
}

fn log_tail(log: &[String]) -> &[String] {
    &log[log.len().saturating_sub(LOG_TAIL)..]
}

/// How many bytes a log tail may take between `open` and `close` after `text`, within `max`;
/// `None` when too few to be worth it.
fn room(max: usize, text: &str, open: &str, close: &str) -> Option<usize> {
    max.checked_sub(text.len() + open.len() + close.len())
        .filter(|room| *room >= MIN_LOG_ROOM)
}

/// `text` in at most `max` bytes, cut on a character boundary; a cut ends in `…` where that
/// fits.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = if max >= ELLIPSIS.len() { ELLIPSIS } else { "" };
    let mut end = max - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

/// The last of `lines` that fit in `max` bytes, one a line; when some are left out, a first
/// line `…` says so. A last line too long for `max` alone keeps its end.
fn tail(lines: &[String], max: usize) -> String {
    let whole = lines.join("\n");
    if whole.len() <= max {
        return whole;
    }
    let budget = max.saturating_sub(ELLIPSIS.len());
    let mut used = 0;
    let mut first = lines.len();
    while first > 0 && used + 1 + lines[first - 1].len() <= budget {
        used += 1 + lines[first - 1].len();
        first -= 1;
    }
    if first == lines.len() {
        let last = lines.last().map_or("", String::as_str);
        let mut start = last.len() - budget.min(last.len());
        while !last.is_char_boundary(start) {
            start += 1;
        }
        return format!("{ELLIPSIS}{}", &last[start..]);
    }
    let mut text = ELLIPSIS.to_owned();
    for line in &lines[first..] {
        text.push('\n');
        text.push_str(line);
    }
    text
}

/// A log line that cannot close the code block it is shown in.
fn unfence(line: &str) -> String {
    line.replace("```", "'''")
}

/// Slack's three control characters, escaped as its "Formatting text" page asks.
fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The seconds of a `Retry-After` header, cut to `MAX_RETRY_AFTER`. Discord sends fractions; an
/// HTTP date is not honoured (the backoff applies).
fn retry_after(value: &reqwest::header::HeaderValue) -> Option<Duration> {
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// The target's kind as the log names it.
fn kind_name(kind: &NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Webhook => "webhook",
        NotifyKind::Discord => "discord",
        NotifyKind::Slack => "slack",
        NotifyKind::Ntfy { .. } => "ntfy",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, HashMap, VecDeque};

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, Method, Uri};
    use axum::response::{IntoResponse, Response};
    use expect_test::{Expect, expect};

    use super::*;
    use crate::deploy::StackReport;

    /// A local HTTP server standing in for Discord, Slack, ntfy or a JSON webhook: it records
    /// every request and answers as told, 200 by default. (Test support: the one use of axum
    /// outside `http`.)
    pub(crate) struct Recorder {
        pub(crate) url: String,
        state: Arc<Recording>,
    }

    #[derive(Default)]
    struct Recording {
        requests: Mutex<Vec<Recorded>>,
        /// By path, the answers to give first.
        answers: Mutex<HashMap<String, VecDeque<Answer>>>,
    }

    /// A status and a `Retry-After`.
    type Answer = (u16, Option<&'static str>);

    /// A request as received, without `host` (its port changes) and `content-length`.
    #[derive(Debug, Clone)]
    pub(crate) struct Recorded {
        pub(crate) method: String,
        pub(crate) path: String,
        pub(crate) headers: BTreeMap<String, String>,
        pub(crate) body: String,
    }

    impl Recorder {
        pub(crate) async fn start() -> Recorder {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let state = Arc::new(Recording::default());
            let app = axum::Router::new()
                .fallback(record)
                .with_state(Arc::clone(&state));
            tokio::spawn(async move { axum::serve(listener, app).await });
            Recorder { url, state }
        }

        /// Answers the next requests to `path` with `answers`, then 200.
        fn answer(&self, path: &str, answers: &[Answer]) {
            self.state
                .answers
                .lock()
                .unwrap()
                .insert(path.to_owned(), answers.iter().copied().collect());
        }

        pub(crate) fn requests(&self) -> Vec<Recorded> {
            self.state.requests.lock().unwrap().clone()
        }

        fn to(&self, path: &str) -> Vec<Recorded> {
            let requests = self.requests().into_iter();
            requests.filter(|request| request.path == path).collect()
        }

        /// Waits until `count` requests have arrived.
        pub(crate) async fn until(&self, count: usize) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.requests().len() < count {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{count} requests never arrived: {:#?}",
                    self.requests()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn record(
        State(state): State<Arc<Recording>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let headers = headers
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "host" | "content-length"))
            .map(|(name, value)| {
                let value = value.to_str().unwrap_or("(not ASCII)");
                (name.to_string(), value.to_owned())
            })
            .collect();
        state.requests.lock().unwrap().push(Recorded {
            method: method.to_string(),
            path: uri.to_string(),
            headers,
            body,
        });
        let answer = state
            .answers
            .lock()
            .unwrap()
            .get_mut(uri.path())
            .and_then(VecDeque::pop_front);
        let Some((status, retry_after)) = answer else {
            return StatusCode::OK.into_response();
        };
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(seconds) = retry_after {
            let value = HeaderValue::from_static(seconds);
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }

    /// A notifier for the targets in `pairs` (variable, path on the recorder), retrying after
    /// 10 ms, 20 ms and 40 ms.
    fn notifier(recorder: &Recorder, pairs: &[(&str, &str)]) -> Notifier {
        let mut environment: BTreeMap<String, String> = pairs
            .iter()
            .map(|(name, value)| {
                let value = match value.starts_with('/') {
                    true => format!("{}{value}", recorder.url),
                    false => value.to_string(),
                };
                (format!("STACKHOOK_{name}"), value)
            })
            .collect();
        environment.insert("STACKHOOK_REPO".into(), "/srv/env".into());
        let config = Config::from_sources(None, &environment).unwrap();
        Notifier::with_retry_delay(&config, Duration::from_millis(10))
            .unwrap()
            .expect("targets configured")
    }

    const EVERY_TARGET: [(&str, &str); 5] = [
        ("NOTIFY_URL", "/hook?key=k1"),
        ("NOTIFY_DISCORD_URL", "/api/webhooks/1/discord-token"),
        ("NOTIFY_SLACK_URL", "/services/T1/B1/slack-token"),
        ("NOTIFY_NTFY_URL", "/deploys"),
        ("NOTIFY_NTFY_TOKEN", "tk_ntfy"),
    ];

    fn report(stacks: Vec<StackReport>) -> Report {
        Report {
            deployment: "1714564800-7".into(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            branch: Some("main".into()),
            started_at: "2024-05-01T12:00:00Z".into(),
            finished_at: "2024-05-01T12:00:42Z".into(),
            suspended: false,
            dry_run: false,
            stacks,
            error: None,
            ..Report::new(String::new(), false)
        }
    }

    fn stack(name: &str, outcome: Outcome) -> StackReport {
        StackReport {
            project: Some(name.into()),
            ..StackReport::new(name, outcome)
        }
    }

    fn action(service: &str, kind: Kind) -> Summary {
        Summary {
            service: service.into(),
            number: 1,
            kind,
            reason: None,
        }
    }

    /// A pass where `api` deployed, `blog` did not change and `web` failed, with a container's
    /// output after its error's first line and a log that tries to ping and to break out of its
    /// code block.
    fn failed() -> Report {
        let mut api = stack("api", Outcome::Deployed);
        api.actions = vec![
            action("api", Kind::Recreate),
            action("worker", Kind::Create),
            action("worker", Kind::Create),
            action("db", Kind::Keep),
        ];
        let mut web = stack("web", Outcome::Failed);
        web.error = Some(
            "service web: it exited with code 1; the old container is back; last output:\n\
             DB_PASSWORD=hunter2\npanic: no database"
                .into(),
        );
        web.log = vec![
            "pulling nginx:1.27".into(),
            "recreating web-web-1 <!channel> @everyone".into(),
            "```".into(),
        ];
        report(vec![api, stack("blog", Outcome::Unchanged), web])
    }

    fn succeeded() -> Report {
        let mut api = stack("api", Outcome::Deployed);
        api.actions = vec![action("api", Kind::Recreate)];
        report(vec![api, stack("old", Outcome::Pruned)])
    }

    /// The requests, one after the other, as a reviewer reads them: JSON bodies pretty-printed.
    fn check(requests: &[Recorded], expected: Expect) {
        let mut out = String::new();
        for request in requests {
            out.push_str(&format!("{} {}\n", request.method, request.path));
            for (name, value) in &request.headers {
                out.push_str(&format!("{name}: {value}\n"));
            }
            out.push('\n');
            match serde_json::from_str::<Value>(&request.body) {
                Ok(json) => out.push_str(&serde_json::to_string_pretty(&json).unwrap()),
                Err(_) => out.push_str(&request.body),
            }
            out.push_str("\n\n");
        }
        expected.assert_eq(&out);
    }

    #[tokio::test]
    async fn each_service_gets_its_own_shape_of_a_failed_deployment() {
        let recorder = Recorder::start().await;
        let notifier = notifier(&recorder, &EVERY_TARGET);
        notifier.deployment_finished(Arc::new(failed()));
        assert!(notifier.finish(Duration::from_secs(10)).await);
        assert_eq!(recorder.requests().len(), 4);
        for request in recorder.requests() {
            assert!(!request.body.contains("hunter2"), "{request:?}");
        }
        check(
            &recorder.to("/hook?key=k1"),
            expect![[r#"
            POST /hook?key=k1
            accept: */*
            content-type: application/json
            user-agent: stackhook/0.1.0

            {
              "branch": "main",
              "commit": "0123456789abcdef0123456789abcdef01234567",
              "deployment": "1714564800-7",
              "error": null,
              "finished_at": "2024-05-01T12:00:42Z",
              "stacks": [
                {
                  "error": null,
                  "log": [],
                  "outcome": "deployed",
                  "stack": "api"
                },
                {
                  "error": null,
                  "log": [],
                  "outcome": "unchanged",
                  "stack": "blog"
                },
                {
                  "error": "service web: it exited with code 1; the old container is back; last output: (more in the server log)",
                  "log": [
                    "pulling nginx:1.27",
                    "recreating web-web-1 <!channel> @everyone",
                    "```"
                  ],
                  "outcome": "failed",
                  "stack": "web"
                }
              ],
              "started_at": "2024-05-01T12:00:00Z",
              "succeeded": false,
              "text": "Deployment of 0123456789ab (main) failed\napi: deployed (recreate api, create worker)\nweb: failed: service web: it exited with code 1; the old container is back; last output: (more in the server log)\n1 stack unchanged"
            }

        "#]],
        );
        check(
            &recorder.to("/api/webhooks/1/discord-token"),
            expect![[r#"
                POST /api/webhooks/1/discord-token
                accept: */*
                content-type: application/json
                user-agent: stackhook/0.1.0

                {
                  "allowed_mentions": {
                    "parse": []
                  },
                  "content": "❌ Deployment of 0123456789ab (main) failed",
                  "embeds": [
                    {
                      "color": 13706287,
                      "description": "api: deployed (recreate api, create worker)\nweb: failed: service web: it exited with code 1; the old container is back; last output: (more in the server log)\n1 stack unchanged\n\n**web**, the end of its log:\n```\npulling nginx:1.27\nrecreating web-web-1 <!channel> @everyone\n'''\n```",
                      "timestamp": "2024-05-01T12:00:42Z",
                      "title": "deployment 1714564800-7"
                    }
                  ]
                }

            "#]],
        );
        check(
            &recorder.to("/services/T1/B1/slack-token"),
            expect![[r#"
            POST /services/T1/B1/slack-token
            accept: */*
            content-type: application/json
            user-agent: stackhook/0.1.0

            {
              "blocks": [
                {
                  "text": {
                    "text": "*Deployment of 0123456789ab (main) failed*\napi: deployed (recreate api, create worker)\nweb: failed: service web: it exited with code 1; the old container is back; last output: (more in the server log)\n1 stack unchanged\n_deployment 1714564800-7_",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                },
                {
                  "text": {
                    "text": "*web*, the end of its log:\n```\npulling nginx:1.27\nrecreating web-web-1 &lt;!channel&gt; @everyone\n'''\n```",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                }
              ],
              "text": ":x: Deployment of 0123456789ab (main) failed"
            }

        "#]],
        );
        check(
            &recorder.to("/deploys"),
            expect![[r#"
            POST /deploys
            accept: */*
            authorization: Bearer tk_ntfy
            content-type: text/plain; charset=utf-8
            priority: high
            tags: rotating_light
            title: Deployment of 0123456789ab (main) failed
            user-agent: stackhook/0.1.0

            api: deployed (recreate api, create worker)
            web: failed: service web: it exited with code 1; the old container is back; last output: (more in the server log)
            1 stack unchanged

            web, the end of its log:
            pulling nginx:1.27
            recreating web-web-1 <!channel> @everyone
            ```

        "#]],
        );
    }

    #[tokio::test]
    async fn each_service_gets_its_own_shape_of_a_deployment_that_succeeded() {
        let recorder = Recorder::start().await;
        let notifier = notifier(&recorder, &EVERY_TARGET);
        notifier.deployment_finished(Arc::new(succeeded()));
        assert!(notifier.finish(Duration::from_secs(10)).await);
        let mut requests = recorder.requests();
        requests.sort_by(|a, b| a.path.cmp(&b.path));
        check(
            &requests,
            expect![[r#"
            POST /api/webhooks/1/discord-token
            accept: */*
            content-type: application/json
            user-agent: stackhook/0.1.0

            {
              "allowed_mentions": {
                "parse": []
              },
              "content": "✅ Deployed 0123456789ab (main)",
              "embeds": [
                {
                  "color": 3055683,
                  "description": "api: deployed (recreate api)\nold: taken down, gone from the repository",
                  "timestamp": "2024-05-01T12:00:42Z",
                  "title": "deployment 1714564800-7"
                }
              ]
            }

            POST /deploys
            accept: */*
            authorization: Bearer tk_ntfy
            content-type: text/plain; charset=utf-8
            priority: default
            tags: white_check_mark
            title: Deployed 0123456789ab (main)
            user-agent: stackhook/0.1.0

            api: deployed (recreate api)
            old: taken down, gone from the repository

            POST /hook?key=k1
            accept: */*
            content-type: application/json
            user-agent: stackhook/0.1.0

            {
              "branch": "main",
              "commit": "0123456789abcdef0123456789abcdef01234567",
              "deployment": "1714564800-7",
              "error": null,
              "finished_at": "2024-05-01T12:00:42Z",
              "stacks": [
                {
                  "error": null,
                  "log": [],
                  "outcome": "deployed",
                  "stack": "api"
                },
                {
                  "error": null,
                  "log": [],
                  "outcome": "pruned",
                  "stack": "old"
                }
              ],
              "started_at": "2024-05-01T12:00:00Z",
              "succeeded": true,
              "text": "Deployed 0123456789ab (main)\napi: deployed (recreate api)\nold: taken down, gone from the repository"
            }

            POST /services/T1/B1/slack-token
            accept: */*
            content-type: application/json
            user-agent: stackhook/0.1.0

            {
              "blocks": [
                {
                  "text": {
                    "text": "*Deployed 0123456789ab (main)*\napi: deployed (recreate api)\nold: taken down, gone from the repository\n_deployment 1714564800-7_",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                }
              ],
              "text": ":white_check_mark: Deployed 0123456789ab (main)"
            }

        "#]],
        );
    }

    #[tokio::test]
    async fn a_failing_target_is_retried_then_given_up_without_holding_up_the_caller() {
        let recorder = Recorder::start().await;
        recorder.answer("/flaky", &[(500, None), (502, None)]);
        recorder.answer("/down", &[(503, None); 10]);
        recorder.answer("/busy", &[(429, Some("0"))]);
        recorder.answer("/wrong", &[(404, None)]);
        let notifier = notifier(
            &recorder,
            &[
                ("NOTIFY_URL", "/flaky"),
                ("NOTIFY_DISCORD_URL", "/down"),
                ("NOTIFY_SLACK_URL", "/busy"),
                ("NOTIFY_NTFY_URL", "/wrong"),
            ],
        );
        let started = tokio::time::Instant::now();
        notifier.deployment_finished(Arc::new(failed()));
        // The test's runtime has one thread: nothing was sent while the call ran.
        assert!(recorder.requests().is_empty());
        assert!(!notifier.finish(Duration::ZERO).await, "sends in flight");

        assert!(notifier.finish(Duration::from_secs(10)).await);
        let tries = |path| recorder.to(path).len();
        assert_eq!(
            [
                tries("/flaky"),
                tries("/down"),
                tries("/busy"),
                tries("/wrong")
            ],
            [3, 1 + RETRIES as usize, 2, 1]
        );
        // The backoff of `/down`: 10 ms, 20 ms, 40 ms.
        assert!(started.elapsed() >= Duration::from_millis(70));
        let flaky = recorder.to("/flaky");
        assert!(flaky.iter().all(|request| request.body == flaky[0].body));
    }

    #[tokio::test]
    async fn what_a_delivery_came_to_names_no_secret() {
        let recorder = Recorder::start().await;
        recorder.answer("/down", &[(500, None); 10]);
        // A port that was free a moment ago, closed again: connecting is refused.
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let closed = format!("http://{closed}/api/webhooks/1/secret-token");
        let notifier = notifier(
            &recorder,
            &[
                ("NOTIFY_URL", "/flaky"),
                ("NOTIFY_DISCORD_URL", "/down"),
                ("NOTIFY_SLACK_URL", &closed),
            ],
        );
        recorder.answer("/flaky", &[(500, None)]);
        let report = failed();
        let inner = &notifier.inner;
        let deliver = |index: usize| {
            let target = &inner.targets[index];
            let request = request(&target.kind, &report);
            async move { inner.deliver(target, &request, "1").await }
        };
        assert_eq!(deliver(0).await, Delivery::Delivered { tries: 2 });
        assert_eq!(
            deliver(1).await,
            Delivery::GaveUp {
                tries: 4,
                reason: "the target answered 500 Internal Server Error".into()
            }
        );
        let Delivery::GaveUp { tries, reason } = deliver(2).await else {
            panic!("a closed port took a message");
        };
        assert_eq!(tries, 4);
        assert!(reason.contains("refused"), "{reason}");
        assert!(!reason.contains("secret-token"), "{reason}");
    }

    #[test]
    fn only_passes_that_did_something_or_failed_are_worth_a_message() {
        let dry_run = Report {
            dry_run: true,
            ..failed()
        };
        let suspended = Report {
            suspended: true,
            ..report(Vec::new())
        };
        let unchanged = report(vec![stack("api", Outcome::Unchanged)]);
        let broken = Report {
            error: Some("syncing the repository: timeout".into()),
            ..report(Vec::new())
        };
        for (report, all, failures) in [
            (&failed(), true, true),
            (&broken, true, true),
            (&succeeded(), true, false),
            (&unchanged, false, false),
            (&suspended, false, false),
            (&dry_run, false, false),
        ] {
            assert_eq!(worth_notifying(report, NotifyOn::All), all, "{report:?}");
            let only_failures = worth_notifying(report, NotifyOn::Failures);
            assert_eq!(only_failures, failures, "{report:?}");
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_notified_once_until_it_changes() {
        let recorder = Recorder::start().await;
        let notifier = notifier(&recorder, &[("NOTIFY_URL", "/hook")]);
        let transient = |error: &str| {
            Arc::new(Report {
                error: Some(error.into()),
                transient: true,
                ..report(Vec::new())
            })
        };
        for report in [
            transient("git remote: timeout"),
            transient("git remote: timeout"),
            transient("the deploy lock is held"),
            Arc::new(succeeded()),
            transient("the deploy lock is held"),
        ] {
            notifier.deployment_finished(report);
            assert!(notifier.finish(Duration::from_secs(10)).await);
        }
        let errors: Vec<Value> = recorder
            .requests()
            .iter()
            .map(|request| serde_json::from_str::<Value>(&request.body).unwrap()["error"].clone())
            .collect();
        assert_eq!(
            errors,
            [
                json!("git remote: timeout"),
                json!("the deploy lock is held"),
                json!(null),
                json!("the deploy lock is held")
            ]
        );
    }

    #[test]
    fn messages_stay_within_each_services_limits() {
        // Two bytes a character, so that a cut in the middle of one would show.
        let long = "é".repeat(5000);
        let many: Vec<StackReport> = (0..300)
            .map(|i| {
                let mut stack = stack(&format!("stack-{i}"), Outcome::Failed);
                stack.error = Some(format!("{long}\nmore"));
                stack.log = (0..100).map(|line| format!("{line} {long}")).collect();
                stack
            })
            .collect();
        let mut one = stack("web", Outcome::Failed);
        one.log = (0..1000)
            .map(|line| format!("line {line} {}", "é".repeat(40)))
            .collect();
        for report in [report(many), report(vec![one])] {
            let discord = discord(&report);
            assert!(discord["content"].as_str().unwrap().len() <= DISCORD_CONTENT);
            let embed = &discord["embeds"][0];
            assert!(embed["title"].as_str().unwrap().len() <= DISCORD_TITLE);
            assert!(embed["description"].as_str().unwrap().len() <= DISCORD_DESCRIPTION);
            let slack = slack(&report);
            assert!(slack["text"].as_str().unwrap().len() <= SLACK_SECTION);
            let blocks = slack["blocks"].as_array().unwrap();
            assert!(blocks.len() <= 50);
            for block in blocks {
                assert!(block["text"]["text"].as_str().unwrap().len() <= SLACK_SECTION);
            }
            assert!(ntfy(&report).body.len() <= NTFY_MESSAGE);
        }
        // One failed stack: its log's last line is there, whole, its code block closed.
        let report = report(vec![{
            let mut one = stack("web", Outcome::Failed);
            one.log = (0..1000)
                .map(|line| format!("line {line} {}", "é".repeat(40)))
                .collect();
            one
        }]);
        let last = format!("line 999 {}", "é".repeat(40));
        let description = discord(&report)["embeds"][0]["description"].clone();
        assert!(
            description
                .as_str()
                .unwrap()
                .ends_with(&format!("{last}\n```"))
        );
        assert!(ntfy(&report).body.ends_with(&last));
    }

    #[test]
    fn messages_name_the_host_that_deployed() {
        let mut report = report(vec![stack("app", Outcome::Deployed)]);
        assert_eq!(headline(&report), "Deployed 0123456789ab (main)");
        report.host = Some("nas".into());
        assert_eq!(headline(&report), "Deployed 0123456789ab (main) on nas");
        let body = serde_json::to_value(webhook(&report)).unwrap();
        assert_eq!(body["host"], "nas");
    }

    #[test]
    fn truncation_keeps_whole_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 5), "short");
        assert_eq!(truncate("ééé", 5), "é…");
        assert_eq!(truncate("ééééé", 7), "éé…");
        assert_eq!(truncate("éé", 3), "…");
        assert_eq!(truncate("éé", 1), "");
        let lines = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(tail(&lines(&["a", "bb", "ccc"]), 8), "a\nbb\nccc");
        assert_eq!(tail(&lines(&["a", "bb", "ccc"]), 7), "…\nccc");
        assert_eq!(tail(&lines(&["a", "bb", "ccc"]), 10), "a\nbb\nccc");
        assert_eq!(tail(&lines(&["a", "bb", "ccc"]), 6), "…ccc");
        assert_eq!(tail(&lines(&["a", "éé"]), 5), "…é");
        assert_eq!(tail(&lines(&["a", "éé"]), 6), "a\néé");
    }

    #[test]
    fn a_429_says_when_to_try_again() {
        let check = |value: &'static str| retry_after(&HeaderValue::from_static(value));
        assert_eq!(check("2"), Some(Duration::from_secs(2)));
        assert_eq!(check("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(check("3600"), Some(MAX_RETRY_AFTER));
        assert_eq!(check("-1"), None);
        assert_eq!(check("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn no_target_no_notifier() {
        let environment = BTreeMap::from([("STACKHOOK_REPO".to_owned(), "/srv/env".to_owned())]);
        let config = Config::from_sources(None, &environment).unwrap();
        assert!(Notifier::new(&config).unwrap().is_none());
    }
}
