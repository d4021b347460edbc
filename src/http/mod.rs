//! The HTTP API: webhooks, single-stack redeploys and `/health`. The only module that knows axum.
//!
//! Handlers check the caller (signature or token) before they read anything else, turn requests
//! into `deploy::Request`s for the worker, and answer with short JSON bodies. Details of failures
//! go to the log, never into a response.

mod error;
mod standby;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::deploy::worker::{Ticket, Worker};
use crate::deploy::{Request, SUSPEND_FILE};
use crate::slot::{Role, Slots};
use crate::stack::StackName;
use crate::stack::compose::PullPolicy;
use crate::webhook::{self, Event};

pub use error::ApiError;

/// GitHub sends webhook payloads of up to 25 MB.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub worker: Worker,
    pub slots: Slots,
}

pub fn router(state: AppState) -> Router {
    // Only the active slot deploys; the others hand these requests on (see `standby`).
    let deploys = Router::new()
        .route("/hooks/github", post(github))
        .route("/deploy-all-changed", post(github))
        .route("/stacks/{stack}/deploy", post(deploy_stack))
        .route("/redeploy-and-update/{stack}", post(redeploy_and_update))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            standby::guard,
        ));
    Router::new()
        .merge(deploys)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
struct DeployQuery {
    #[serde(default)]
    wait: bool,
    pull: Option<String>,
}

const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const EVENT_HEADER: &str = "x-github-event";

/// `POST /hooks/github` (and `/deploy-all-changed`): a signed GitHub delivery.
async fn github(
    State(state): State<AppState>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secret = state
        .config
        .webhook_secret
        .as_ref()
        .ok_or(ApiError::NoWebhookSecret)?;
    webhook::verify(
        secret,
        headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
        &body,
    )?;
    let event_name = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok());
    // gitops-deploy-server's callers post an empty signed body to mean "deploy what changed".
    let event = if body.is_empty() && event_name.is_none() {
        None
    } else {
        Some(webhook::parse_event(event_name, &body)?)
    };
    match event {
        Some(Event::Ping) => Ok(Json(json!({ "pong": true })).into_response()),
        Some(Event::Push { branch, .. }) => {
            let tracked = state.tracked_branch();
            match tracked {
                Some(tracked) if tracked != branch => Ok(ignored(format!(
                    "push to branch {branch}; stackhook follows {tracked}"
                ))),
                _ => Ok(state.start(Request::all_changed(), query.wait).await),
            }
        }
        Some(Event::OtherRef(reference)) => Ok(ignored(format!(
            "push to {reference}, which is not a branch"
        ))),
        Some(Event::Other(name)) => Ok(ignored(format!("event {name} does not deploy"))),
        None => Ok(state.start(Request::all_changed(), query.wait).await),
    }
}

/// `POST /stacks/{stack}/deploy`: redeploy one stack, for a curl or an app's release webhook.
async fn deploy_stack(
    State(state): State<AppState>,
    Path(stack): Path<String>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pull = match query.pull.as_deref() {
        None => None,
        Some("always") => Some(PullPolicy::Always),
        Some("missing") => Some(PullPolicy::Missing),
        Some("never") => Some(PullPolicy::Never),
        Some(other) => return Err(ApiError::BadPull(other.to_owned())),
    };
    state
        .redeploy(stack, pull, query.wait, &headers, &body)
        .await
}

/// `POST /redeploy-and-update/{stack}`: gitops-deploy-server's path, which pulls newer images.
async fn redeploy_and_update(
    State(state): State<AppState>,
    Path(stack): Path<String>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pull = Some(PullPolicy::Always);
    state
        .redeploy(stack, pull, query.wait, &headers, &body)
        .await
}

/// `GET /health`, for reverse proxies: 200 while this instance is the active one, and for the
/// short handover period after it handed over, while it hands every request on to the new active
/// slot; 503 on a standby slot and on one that is draining.
async fn health(State(state): State<AppState>) -> Response {
    let (status, role) = match state.slots.role() {
        Role::Active => (StatusCode::OK, "active"),
        // Serves through the new active slot until the proxy has seen that one healthy.
        Role::HandingOver { .. } => (StatusCode::OK, "handing-over"),
        Role::Standby { .. } => (StatusCode::SERVICE_UNAVAILABLE, "standby"),
        Role::Draining { .. } => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    let last = state.worker.last_report();
    let body = json!({
        "status": role,
        "slot": state.slots.own(),
        "active_slot": state.slots.own().map(|_| state.slots.active()),
        "suspended": state.suspended(),
        "deploying": state.worker.busy(),
        "last_deployment": last.map(|report| json!({
            "id": report.deployment,
            "commit": report.commit,
            "succeeded": report.succeeded(),
            "finished_at": report.finished_at,
        })),
    });
    (status, Json(body)).into_response()
}

/// `GET /ready`, for container health checks: 200 whenever this instance serves, active or not,
/// so that a new slot can prove itself before it is handed over to.
async fn ready(State(state): State<AppState>) -> Response {
    Json(json!({ "ready": true, "slot": state.slots.own() })).into_response()
}

impl AppState {
    async fn redeploy(
        &self,
        stack: String,
        pull: Option<PullPolicy>,
        wait: bool,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        self.authorize(headers, body)?;
        let name = StackName::parse(&stack)?;
        if let Some(action) = webhook::action(body)
            && action != "published"
        {
            return Ok(ignored(format!("action {action} does not deploy")));
        }
        if !self.stack_dir(&name).is_dir() {
            return Err(ApiError::UnknownStack(name.to_string()));
        }
        Ok(self.start(Request::stack(name, pull), wait).await)
    }

    /// A bearer API token, or a GitHub signature made with the webhook secret.
    fn authorize(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (bearer, &self.config.api_token) {
            (Some(given), Some(token))
                if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) =>
            {
                return Ok(());
            }
            (Some(_), _) => return Err(ApiError::BadToken),
            (None, _) => {}
        }
        match (headers.get(SIGNATURE_HEADER), &self.config.webhook_secret) {
            (Some(signature), Some(secret)) => {
                Ok(webhook::verify(secret, Some(signature.as_bytes()), body)?)
            }
            _ if self.config.api_token.is_none() && self.config.webhook_secret.is_none() => {
                Err(ApiError::NoCredentials)
            }
            _ => Err(ApiError::Unauthenticated),
        }
    }

    async fn start(&self, request: Request, wait: bool) -> Response {
        let Ticket { deployment, report } = self.worker.trigger(request);
        if !wait {
            return (
                StatusCode::ACCEPTED,
                Json(json!({ "deployment": deployment })),
            )
                .into_response();
        }
        match report.await {
            Ok(report) if report.succeeded() => (StatusCode::OK, Json(&*report)).into_response(),
            Ok(report) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({
                    "deployment": report.deployment,
                    "failures": report.failures(),
                    "report": &*report,
                })),
            )
                .into_response(),
            Err(_) => ApiError::WorkerGone.into_response(),
        }
    }

    /// The configured branch, else the one the last pass followed (the remote's default).
    fn tracked_branch(&self) -> Option<String> {
        self.config
            .branch
            .clone()
            .or_else(|| self.worker.last_report()?.branch.clone())
    }

    fn checkout_dir(&self) -> PathBuf {
        self.worker.deployer().checkout_dir()
    }

    fn stack_dir(&self, name: &StackName) -> PathBuf {
        self.checkout_dir()
            .join(&self.config.services_dir)
            .join(name.as_str())
    }

    fn suspended(&self) -> bool {
        self.checkout_dir().join(SUSPEND_FILE).exists()
    }
}

fn ignored(reason: String) -> Response {
    (StatusCode::OK, Json(json!({ "ignored": reason }))).into_response()
}

/// Compares in time that depends only on the lengths, so a token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
