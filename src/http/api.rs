//! The read API: deployments from the history and stacks as they are now, as JSON, and a
//! deployment's log as text or as a live stream (Server-Sent Events). Behind `caller::reader`.
//! It changes nothing; deploying stays with the routes in `http`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, stream};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::deploy::plan::Kind;
use crate::deploy::status::{StackState, StackStatus};
use crate::deploy::{Report, Status};
use crate::history::History;
use crate::stack::StackName;

/// How often a live log looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// How long a live log waits for a deployment that is queued but not started.
const FOLLOW_START: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    stack: Option<String>,
}

/// `GET /api/deployments?limit=&stack=`: the newest deployments, newest first, without their
/// stacks' log lines (`/api/deployments/{id}` has them).
pub async fn deployments(
    State(app): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let history = history(&app);
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    if let Some(stack) = &query.stack {
        StackName::parse(stack)?;
    }
    // Written record by record: a list of hundreds of deployments of many stacks is never
    // all in memory as values (it took 140 MiB of RSS at 200 deployments of 50 stacks).
    let body = blocking("reading the history", move || {
        let mut body = b"[".to_vec();
        let mut written = anyhow::Ok(());
        history.each(limit, query.stack.as_deref(), |mut report| {
            for stack in &mut report.stacks {
                stack.log = Vec::new();
            }
            if body.len() > 1 {
                body.push(b',');
            }
            if let Err(error) = serde_json::to_writer(&mut body, &report) {
                written = Err(error.into());
            }
        })?;
        written?;
        body.push(b']');
        Ok(body)
    })
    .await?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `GET /api/deployments/{id}`.
pub async fn deployment(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(find(&app, id).await?))
}

async fn find(app: &AppState, id: String) -> Result<Report, ApiError> {
    let history = history(app);
    let lookup = id.clone();
    blocking("reading the history", move || history.get(&lookup))
        .await?
        .ok_or(ApiError::UnknownDeployment(id))
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// `GET /api/deployments/{id}/log`: the log as text, or, with `Accept: text/event-stream` or
/// `?follow=true`, as Server-Sent Events: one `line` event a line, old and new, until the
/// deployment ends (an `end` event with its status).
pub async fn log(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_stream = query.follow
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_stream {
        if History::parse_id(&id).is_none() {
            return Err(ApiError::UnknownDeployment(id));
        }
        let stream = follow(history(&app), id);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let report = find(&app, id.clone()).await?;
    let history = history(&app);
    let log = blocking("reading a log", move || history.read_log(&id, 0))
        .await?
        .unwrap_or_default();
    let mut response = (StatusCode::OK, log).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if report.status == Status::Running {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(response)
}

/// The log's lines as they are written, until the deployment is no longer running.
fn follow(history: History, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Follow {
        history: History,
        id: String,
        offset: u64,
        /// A line begun but not yet ended.
        partial: Vec<u8>,
        waited: Duration,
        ended: bool,
        queue: std::collections::VecDeque<Event>,
    }
    let start = Follow {
        history,
        id,
        offset: 0,
        partial: Vec::new(),
        waited: Duration::ZERO,
        ended: false,
        queue: Default::default(),
    };
    stream::unfold(start, |mut follow| async move {
        loop {
            if let Some(event) = follow.queue.pop_front() {
                return Some((Ok(event), follow));
            }
            if follow.ended {
                return None;
            }
            let (history, id, offset) = (follow.history.clone(), follow.id.clone(), follow.offset);
            let read = tokio::task::spawn_blocking(move || {
                let status = history.get(&id)?.map(|report| report.status);
                let bytes = history.read_log(&id, offset)?.unwrap_or_default();
                anyhow::Ok((status, bytes))
            })
            .await;
            let (status, bytes) = match read {
                Ok(Ok(read)) => read,
                _ => (None, Vec::new()),
            };
            follow.offset += bytes.len() as u64;
            follow.partial.extend_from_slice(&bytes);
            if let Some(end) = follow.partial.iter().rposition(|b| *b == b'\n') {
                let complete: Vec<u8> = follow.partial.drain(..=end).collect();
                for line in String::from_utf8_lossy(&complete).lines() {
                    follow
                        .queue
                        .push_back(Event::default().event("line").data(line));
                }
            }
            match status {
                Some(Status::Running) => {}
                None if follow.waited < FOLLOW_START => {}
                status => {
                    let status = status.map_or("unknown".to_owned(), |s| {
                        serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    });
                    follow
                        .queue
                        .push_back(Event::default().event("end").data(status));
                    follow.ended = true;
                    continue;
                }
            }
            if follow.queue.is_empty() {
                tokio::time::sleep(FOLLOW_EVERY).await;
                follow.waited += FOLLOW_EVERY;
            }
        }
    })
}

/// `GET /api/stacks`: every stack now.
pub async fn stacks(State(app): State<AppState>) -> Result<Json<Vec<StackStatus>>, ApiError> {
    let deployer = app.worker.deployer();
    let mut statuses = deployer.status(None, false).await.map_err(|error| {
        tracing::error!("reading the stacks' status: {error:#}");
        ApiError::Internal("reading the stacks' status")
    })?;
    for status in &mut statuses {
        with_drift(&app, status);
    }
    Ok(Json(statuses))
}

/// `GET /api/stacks/{stack}`: one stack now, with what a deployment would do to it.
pub async fn stack(
    State(app): State<AppState>,
    Path(stack): Path<String>,
) -> Result<Json<StackStatus>, ApiError> {
    let name = StackName::parse(&stack)?;
    let deployer = app.worker.deployer();
    let mut statuses = deployer.status(Some(&name), true).await.map_err(|error| {
        tracing::error!("reading stack {name}'s status: {error:#}");
        ApiError::Internal("reading the stack's status")
    })?;
    let mut status = statuses.pop().ok_or(ApiError::UnknownStack(stack))?;
    // The plan was just made: it says whether the containers drifted, fresher than the watcher.
    if status.state == StackState::UpToDate && !app.worker.deploying(&status.stack) {
        let drift: Vec<_> = status
            .actions
            .iter()
            .filter(|step| step.kind != Kind::Keep)
            .cloned()
            .collect();
        if !drift.is_empty() {
            status.state = StackState::Drifted;
            status.drift = drift;
        }
    }
    Ok(Json(status))
}

/// Marks an up-to-date stack whose containers were changed by hand since.
pub(super) fn with_drift(app: &AppState, status: &mut StackStatus) {
    if status.state == StackState::UpToDate
        && let Some(drift) = app.worker.drift().of(&status.stack)
    {
        status.state = StackState::Drifted;
        status.drift = drift;
    }
}

fn history(app: &AppState) -> History {
    app.worker.deployer().history()
}

pub(super) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::error!("{what}: {error:#}");
            Err(ApiError::Internal(what))
        }
        Err(error) => {
            tracing::error!("{what}: {error}");
            Err(ApiError::Internal(what))
        }
    }
}
