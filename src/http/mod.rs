//! The HTTP API: webhooks, single-stack redeploys and `/health`. The only module that knows axum.
//!
//! Handlers check the caller (signature or token) before they read anything else, turn requests
//! into `deploy::Request`s for the worker, and answer with short JSON bodies. Details of failures
//! go to the log, never into a response.

mod answer;
mod api;
mod caller;
mod delivery;
mod error;
mod page;
mod server;
mod standby;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
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
use crate::deploy::{Request, SUSPEND_FILE, Trigger, TriggerKind};
use crate::metrics::WebhookOutcome;
use crate::slot::{Role, Slots};
use crate::stack::StackName;
use crate::stack::compose::PullPolicy;
use crate::store;
use crate::webhook::{self, Event, Forge};

use caller::Caller;
use delivery::Deliveries;
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

/// `AppState` and what the router adds to it, made once per router.
#[derive(Clone)]
struct Shared {
    app: AppState,
    deliveries: Arc<Deliveries>,
    /// The client that hands requests on to the active slot (`standby`), shared so that its
    /// connections are reused.
    peer: reqwest::Client,
}

impl FromRef<Shared> for AppState {
    fn from_ref(shared: &Shared) -> AppState {
        shared.app.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let shared = Shared {
        peer: standby::client(&state.config),
        deliveries: Arc::new(Deliveries::new(delivery::WINDOW, delivery::CAPACITY)),
        app: state,
    };
    // Layers run outside in: the caller is checked and the body read (`caller`) before a standby
    // hands the request on (`standby`), so that neither slot buffers a stranger's body.
    let github = Router::new()
        .route("/hooks/github", post(github))
        .route("/deploy-all-changed", post(github))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            standby::guard,
        ))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            caller::signed,
        ))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            count_webhook,
        ));
    // The other forges' routes: each forge's own credential check, then as GitHub's.
    let forge_layers = |forge: Forge, route: Router<Shared>| {
        route
            .route_layer(middleware::from_fn_with_state(
                shared.clone(),
                standby::guard,
            ))
            .route_layer(middleware::from_fn_with_state(
                (shared.clone(), forge),
                caller::forge,
            ))
            .route_layer(middleware::from_fn_with_state(
                shared.clone(),
                count_webhook,
            ))
    };
    let forges = [
        (
            Forge::GitLab,
            Router::new().route("/hooks/gitlab", post(forge_hook)),
        ),
        (
            Forge::Gitea,
            Router::new().route("/hooks/gitea", post(forge_hook)),
        ),
        (
            Forge::Bitbucket,
            Router::new().route("/hooks/bitbucket", post(forge_hook)),
        ),
        (
            Forge::Generic,
            Router::new().route("/hooks/generic", post(forge_hook)),
        ),
    ]
    .into_iter()
    .fold(Router::new(), |all, (forge, route)| {
        all.merge(forge_layers(forge, route))
    });
    let stacks = Router::new()
        .route("/stacks/{stack}/deploy", post(deploy_stack))
        .route("/redeploy-and-update/{stack}", post(redeploy_and_update))
        .route("/stacks/{stack}/rollback", post(rollback))
        .route("/stacks/{stack}/unpin", post(unpin))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            standby::guard,
        ))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            caller::token_or_signed,
        ));
    let read = Router::new()
        .route("/api/deployments", get(api::deployments))
        .route("/api/deployments/{id}", get(api::deployment))
        .route("/api/deployments/{id}/log", get(api::log))
        .route("/api/stacks", get(api::stacks))
        .route("/api/stacks/{stack}", get(api::stack))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            caller::reader,
        ));
    Router::new()
        .merge(github)
        .merge(forges)
        .merge(stacks)
        .merge(read)
        .merge(page::routes(shared.clone()))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(shared)
}

/// Serves until `shutdown` completes, then finishes in-flight requests. At most
/// `config.max_connections` connections are served at once, and each must send its headers
/// within `config.header_read_timeout` (see `server`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::clone(&state.config);
    server::run(listener, router(state), &config, shutdown).await
}

#[derive(Debug, Default, Deserialize)]
struct DeployQuery {
    #[serde(default)]
    wait: bool,
    pull: Option<String>,
}

const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const EVENT_HEADER: &str = "x-github-event";
const DELIVERY_HEADER: &str = "x-github-delivery";

/// `POST /hooks/github` (and `/deploy-all-changed`): a signed GitHub delivery; `caller` checked
/// the signature.
async fn github(
    State(shared): State<Shared>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(duplicate) = shared.replayed(&headers)? {
        return Ok(duplicate);
    }
    let event_name = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok());
    // gitops-deploy-server's callers post an empty signed body to mean "deploy what changed".
    let event = if body.is_empty() && event_name.is_none() {
        Event::Deploy
    } else {
        webhook::parse_event(event_name, &body)?
    };
    let trigger = Trigger {
        delivery: header(&headers, DELIVERY_HEADER),
        event: event_name.map(str::to_owned),
        ..Trigger::new(TriggerKind::Webhook)
    };
    Ok(shared.act(event, trigger, query.wait).await)
}

/// `POST /hooks/gitlab`, `/hooks/gitea`, `/hooks/bitbucket` and `/hooks/generic`: another forge's
/// delivery, or a CI job's signed trigger; `caller::forge` checked the credential.
async fn forge_hook(
    State(shared): State<Shared>,
    Extension(forge): Extension<Forge>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let present = |names: &[&'static str]| names.iter().copied().find(|n| headers.contains_key(*n));
    let delivery = present(forge.delivery_headers());
    if let Some(name) = delivery
        && let Some(duplicate) = shared.replayed_in(&headers, name, forge.name())?
    {
        return Ok(duplicate);
    }
    let event_name = present(forge.event_headers()).and_then(|name| header(&headers, name));
    let tracked = shared.app.tracked_branch();
    let event = forge.parse(event_name.as_deref(), &body, tracked.as_deref())?;
    let trigger = Trigger {
        delivery: delivery.and_then(|name| header(&headers, name)),
        event: event_name,
        ..Trigger::new(TriggerKind::Webhook)
    };
    Ok(shared.act(event, trigger, query.wait).await)
}

/// A header's value, if it is text and not too long for the history.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= 200).then(|| value.to_owned())
}

/// `POST /stacks/{stack}/deploy`: redeploy one stack, for a curl or an app's release webhook.
async fn deploy_stack(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
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
    shared
        .redeploy(caller, stack, pull, query.wait, &headers, &body)
        .await
}

/// `POST /redeploy-and-update/{stack}`: gitops-deploy-server's path, which pulls newer images.
async fn redeploy_and_update(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pull = Some(PullPolicy::Always);
    shared
        .redeploy(caller, stack, pull, query.wait, &headers, &body)
        .await
}

#[derive(Debug, Deserialize)]
struct RollbackQuery {
    to: String,
    #[serde(default)]
    wait: bool,
}

/// `POST /stacks/{stack}/rollback?to=<commit|deployment>`: deploy the stack as it was then and
/// pin it there.
async fn rollback(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Query(query): Query<RollbackQuery>,
) -> Result<Response, ApiError> {
    let to = query.to;
    shared
        .change_pin(caller, &stack, query.wait, |name| {
            Request::rollback(name, to)
        })
        .await
}

/// `POST /stacks/{stack}/unpin`: release a pinned stack and deploy it at the branch head.
async fn unpin(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(stack): Path<String>,
    Query(query): Query<DeployQuery>,
) -> Result<Response, ApiError> {
    shared
        .change_pin(caller, &stack, query.wait, Request::unpin)
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

impl Shared {
    /// A single-stack redeploy. A signed request redeploys only for a published GitHub release,
    /// or, with an empty body, under a fresh delivery id: any other signed body was meant for
    /// another endpoint, and reusing it here would force a redeploy (issue 9).
    async fn redeploy(
        &self,
        caller: Caller,
        stack: String,
        pull: Option<PullPolicy>,
        wait: bool,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        if caller == Caller::Signed {
            let event = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok());
            if body.is_empty() {
                if !headers.contains_key(DELIVERY_HEADER) {
                    return Err(ApiError::DeliveryRequired);
                }
            } else if event != Some("release") {
                return Err(ApiError::SignedNotRelease);
            }
        }
        if let Some(duplicate) = self.replayed(headers)? {
            return Ok(duplicate);
        }
        let name = StackName::parse(&stack)?;
        match webhook::action(body) {
            Some(action) if action != "published" => {
                return Ok(ignored(format!("action {action} does not deploy")));
            }
            None if caller == Caller::Signed && !body.is_empty() => {
                return Ok(ignored(
                    "a release event without an action does not deploy".into(),
                ));
            }
            _ => {}
        }
        if !self.app.has_stack(&name) {
            return Err(ApiError::UnknownStack(name.to_string()));
        }
        let trigger = Trigger {
            delivery: header(headers, DELIVERY_HEADER),
            event: header(headers, EVENT_HEADER),
            ..Trigger::new(TriggerKind::Api)
        };
        Ok(self
            .start(Request::stack(name, pull).by(trigger), wait)
            .await)
    }

    /// Acts on a delivery's event: a push to the branch stackhook follows (or to any, before it
    /// knows which) and a bare `Deploy` start a pass over what changed; the rest is answered and
    /// ignored.
    async fn act(&self, event: Event, trigger: Trigger, wait: bool) -> Response {
        match event {
            Event::Ping => {
                let mut response = Json(json!({ "pong": true })).into_response();
                response.extensions_mut().insert(WebhookOutcome::Ignored);
                response
            }
            Event::Deploy => self.start(Request::all_changed().by(trigger), wait).await,
            Event::Push {
                branch,
                after,
                pusher,
                message,
            } => {
                let tracked = self.app.tracked_branch();
                let trigger = Trigger {
                    pusher,
                    message,
                    after: Some(after).filter(|after| !after.is_empty()),
                    ..trigger
                };
                match tracked {
                    Some(tracked) if tracked != branch => ignored(format!(
                        "push to branch {branch}; stackhook follows {tracked}"
                    )),
                    _ => self.start(Request::all_changed().by(trigger), wait).await,
                }
            }
            Event::OtherRef(reference) => {
                ignored(format!("push to {reference}, which is not a branch"))
            }
            Event::Other(name) => ignored(format!("event {name} does not deploy")),
        }
    }

    /// A rollback or unpin of `stack`. Only with the API token: a signature proves a push, not a
    /// wish to go back.
    async fn change_pin(
        &self,
        caller: Caller,
        stack: &str,
        wait: bool,
        request: impl FnOnce(StackName) -> Request,
    ) -> Result<Response, ApiError> {
        if caller != Caller::Token {
            return Err(ApiError::TokenRequired);
        }
        let request = request(StackName::parse(stack)?).by(Trigger::new(TriggerKind::Api));
        Ok(self.start(request, wait).await)
    }

    /// An answer for a delivery whose `X-GitHub-Delivery` id was seen within the window; `None`
    /// for a new one, which is remembered from now on, and for a request without an id.
    fn replayed(&self, headers: &HeaderMap) -> Result<Option<Response>, ApiError> {
        self.replayed_in(headers, "X-GitHub-Delivery", "")
    }

    /// As `replayed`, for the id in `header`, kept apart from other senders' ids by `scope`.
    fn replayed_in(
        &self,
        headers: &HeaderMap,
        header: &'static str,
        scope: &str,
    ) -> Result<Option<Response>, ApiError> {
        let Some(id) = headers.get(header) else {
            return Ok(None);
        };
        let id = id
            .to_str()
            .ok()
            .filter(|id| !id.is_empty() && id.len() <= delivery::MAX_ID_LEN)
            .ok_or(ApiError::BadDelivery(header))?;
        let remembered = if scope.is_empty() {
            id.to_owned()
        } else {
            format!("{scope}:{id}")
        };
        if self.deliveries.first_sighting(&remembered, Instant::now()) {
            Ok(None)
        } else {
            tracing::info!("delivery {id} was seen before; ignored");
            Ok(Some(ignored(format!("duplicate delivery {id}"))))
        }
    }

    async fn start(&self, request: Request, wait: bool) -> Response {
        let Ticket { deployment, report } = self.app.worker.trigger(request.clone());
        if !wait {
            return (
                StatusCode::ACCEPTED,
                Json(json!({ "deployment": deployment })),
            )
                .into_response();
        }
        // Waiting is not bounded by `config.request_timeout`, which covers only receiving the
        // request: a deploy that pulls images or waits for health checks takes minutes.
        match report.await {
            Ok(report) => answer::answer(&report, &request),
            Err(_) => ApiError::WorkerGone.into_response(),
        }
    }
}

impl AppState {
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

    #[cfg(test)]
    fn stack_dir(&self, name: &StackName) -> PathBuf {
        self.checkout_dir()
            .join(&self.config.services_dir)
            .join(name.as_str())
    }

    /// Whether the checkout has a directory for stack `name`, for this host or any.
    fn has_stack(&self, name: &StackName) -> bool {
        let checkout = self.checkout_dir();
        self.config
            .stack_paths(name.as_str())
            .iter()
            .any(|path| checkout.join(path).is_dir())
    }

    fn suspended(&self) -> bool {
        self.checkout_dir().join(SUSPEND_FILE).exists()
    }
}

fn ignored(reason: String) -> Response {
    let mut response = (StatusCode::OK, Json(json!({ "ignored": reason }))).into_response();
    response.extensions_mut().insert(WebhookOutcome::Ignored);
    response
}

/// Counts each webhook request by its outcome (`/metrics`): what the handler marked, else what
/// its status says.
async fn count_webhook(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let outcome = match response.extensions().get::<WebhookOutcome>() {
        Some(outcome) => *outcome,
        None if status == StatusCode::UNAUTHORIZED => WebhookOutcome::BadSignature,
        None if status.is_success() || status == StatusCode::INTERNAL_SERVER_ERROR => {
            // 500 is a `?wait=true` deployment that failed: the request itself was accepted.
            WebhookOutcome::Accepted
        }
        None => WebhookOutcome::Refused,
    };
    shared.app.worker.deployer().metrics.webhook(outcome);
    response
}

/// The OpenAPI document of every route here, kept in the repository (`docs/openapi.json`); a
/// test checks it against the router.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`.
async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /metrics`, in Prometheus's text format.
async fn metrics(State(app): State<AppState>) -> Response {
    let deployer = app.worker.deployer();
    let state_dir = deployer.config.state_dir.clone();
    let state = tokio::task::spawn_blocking(move || store::load(&state_dir))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text = deployer.metrics.render(&state);
    let mut response = text.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Secret;
    use crate::deploy::Deployer;
    use crate::engine::fake::Fake;

    const SECRET: &str = "test secret";
    pub(super) const TOKEN: &str = "test token";

    /// A server state whose passes fail at once (the repository does not exist), with `extra`
    /// settings; the directory holds the state directory.
    pub(super) fn state(extra: &[(&str, &str)]) -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut settings: BTreeMap<String, String> = [
            (
                "STACKHOOK_REPO",
                dir.path().join("nowhere").display().to_string(),
            ),
            ("STACKHOOK_STATE_DIR", dir.path().display().to_string()),
            ("STACKHOOK_WEBHOOK_SECRET", SECRET.into()),
            ("STACKHOOK_API_TOKEN", TOKEN.into()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        for (name, value) in extra {
            settings.insert((*name).to_owned(), (*value).to_owned());
        }
        let config = Arc::new(Config::from_sources(None, &settings).unwrap());
        let slots = Slots::new(config.slot, config.state_dir.clone());
        let deployer = Deployer {
            config: Arc::clone(&config),
            engine: Arc::new(Fake::default()),
            holder: "a test".into(),
            metrics: Default::default(),
            slots: slots.clone(),
        };
        let state = AppState {
            config,
            worker: Worker::new(deployer),
            slots,
        };
        (state, dir)
    }

    fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> HttpRequest<Body> {
        let mut request = HttpRequest::post(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body.into()).unwrap()
    }

    /// A signed request, with an event name and a delivery id when given.
    fn signed(
        path: &str,
        event: Option<&str>,
        delivery: Option<&str>,
        body: &str,
    ) -> HttpRequest<Body> {
        let signature = webhook::sign(&Secret::new(SECRET), body.as_bytes());
        let mut headers = vec![("X-Hub-Signature-256", signature.as_str())];
        headers.extend(event.map(|e| ("X-GitHub-Event", e)));
        headers.extend(delivery.map(|d| ("X-GitHub-Delivery", d)));
        post(path, &headers, body.to_owned())
    }

    /// The routes `router` declares, read from this file's source: (method, path).
    fn declared_routes() -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (source, function) in [
            (include_str!("mod.rs"), "pub fn router("),
            (include_str!("page.rs"), "pub fn routes("),
        ] {
            routes.extend(routes_of(source, function));
        }
        routes
    }

    /// The routes that `function` of `source` declares.
    fn routes_of(source: &str, function: &str) -> BTreeSet<(String, String)> {
        let router = &source[source.find(function).unwrap()..];
        let router = &router[..router.find("\n}\n").unwrap()];
        let mut routes = BTreeSet::new();
        for part in router.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let call = rest.split(".route").next().unwrap();
            for method in ["get", "post", "put", "delete", "patch"] {
                let mut from = 0;
                while let Some(at) = call[from..].find(&format!("{method}(")) {
                    let at = from + at;
                    let before = call[..at].chars().last();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        routes.insert((method.to_owned(), path.to_owned()));
                    }
                    from = at + method.len();
                }
            }
        }
        routes
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_the_router_has() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let declared = declared_routes();
        assert!(declared.len() >= 15, "{declared:?}");
        assert_eq!(documented, declared);
    }

    #[tokio::test]
    async fn every_documented_route_is_served() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            let concrete = path.replace("{stack}", "web").replace("{id}", "1-1");
            for method in item.as_object().unwrap().keys() {
                let request = HttpRequest::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                // The router's own 404 and 405 have empty bodies; a handler's refusal says why.
                let unrouted = matches!(status.as_u16(), 404 | 405) && body.is_empty();
                assert!(!unrouted, "{method} {path}: {status}");
            }
        }
        let response = app
            .oneshot(HttpRequest::get("/nowhere").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "the check can fail");
    }

    /// A body that never arrives.
    fn endless() -> Body {
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())
    }

    /// Sends `request` through a router of its own, sharing nothing but `router`'s state.
    async fn send(app: &Router, request: HttpRequest<Body>) -> (u16, Value) {
        let response = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(request))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, body)
    }

    #[tokio::test]
    async fn credentials_are_checked_before_the_body_is_read() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let malformed = [("X-Hub-Signature-256", "sha256=not-hex")];
        let wrong_token = [("Authorization", "Bearer nope")];
        for (path, headers, error) in [
            (
                "/hooks/github",
                &[][..],
                "missing X-Hub-Signature-256 header",
            ),
            (
                "/deploy-all-changed",
                &malformed[..],
                "X-Hub-Signature-256 is not of the form sha256=<64 hex digits>",
            ),
            (
                "/stacks/app/deploy",
                &wrong_token[..],
                "the bearer token is not the API token",
            ),
            (
                "/redeploy-and-update/app",
                &[][..],
                "send Authorization: Bearer <api token> or a valid X-Hub-Signature-256",
            ),
            (
                "/hooks/gitlab",
                &[("X-Gitlab-Token", "nope")][..],
                "X-Gitlab-Token is not the GitLab token",
            ),
            (
                "/hooks/gitea",
                &[("X-Gitea-Signature", "sha256=not-hex")][..],
                "X-Gitea-Signature is not of the form <64 hex digits>",
            ),
            (
                "/hooks/bitbucket",
                &[("X-Hub-Signature-256", "sha256=0")][..],
                "missing X-Hub-Signature header",
            ),
            (
                "/hooks/generic",
                &[][..],
                "missing X-Hub-Signature-256 header",
            ),
        ] {
            let (status, body) = send(&app, post(path, headers, endless())).await;
            assert_eq!((status, body), (401, json!({ "error": error })), "{path}");
        }
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_refused() {
        let (state, _dir) = state(&[("STACKHOOK_REQUEST_TIMEOUT", "200ms")]);
        let app = router(state);
        let signature = webhook::sign(&Secret::new(SECRET), b"");
        let request = post(
            "/hooks/github",
            &[("X-Hub-Signature-256", &signature)],
            endless(),
        );
        let (status, body) = send(&app, request).await;
        assert_eq!(
            (status, body),
            (
                408,
                json!({ "error": "the request body did not arrive within 200ms" })
            )
        );
        let request = post(
            "/stacks/app/deploy",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            endless(),
        );
        assert_eq!(send(&app, request).await.0, 408);
        let signature = Forge::Gitea.sign(&Secret::new(SECRET), b"");
        let request = post(
            "/hooks/gitea",
            &[("X-Gitea-Signature", &signature)],
            endless(),
        );
        assert_eq!(send(&app, request).await.0, 408);
    }

    /// A request as `forge` sends it: its credential made with `secret`, then `headers`.
    fn from_forge(
        forge: Forge,
        secret: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> HttpRequest<Body> {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let credential = forge.sign(&Secret::new(secret), body.as_bytes());
        // The header every sender of the forge sets: Gitea's, which Forgejo sets as well.
        let header = *forge.credential_headers().last().unwrap();
        let mut all = vec![(header, credential.as_str())];
        all.extend_from_slice(headers);
        post(&format!("/hooks/{forge}"), &all, body)
    }

    /// What an answer says, in short: `queued`, `pong`, or why it was ignored or refused.
    fn gist((status, body): (u16, Value)) -> String {
        let said = if body.get("deployment").is_some() {
            "queued".to_owned()
        } else if body.get("pong").is_some() {
            "pong".to_owned()
        } else {
            let reason = body["ignored"].as_str().or(body["error"].as_str());
            reason.unwrap_or("?").to_owned()
        };
        format!("{status} {said}")
    }

    #[tokio::test]
    async fn every_forge_deploys_a_push_of_the_branch_and_ignores_the_rest() {
        let (state, _dir) = state(&[("STACKHOOK_BRANCH", "main")]);
        let app = router(state.clone());
        let gitlab_push = |reference: &str| {
            json!({
                "object_kind": "push",
                "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                "ref": reference,
                "user_username": "jsmith",
                "commits": [{ "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme" }],
            })
        };
        let gitea_push = |reference: &str| {
            json!({
                "ref": reference,
                "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
                "commits": [{ "id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!" }],
                "pusher": { "login": "gitea", "username": "gitea" },
            })
        };
        let bitbucket_push = |kind: &str, name: &str| {
            json!({
                "actor": { "display_name": "Emma" },
                "push": { "changes": [{
                    "new": { "type": kind, "name": name, "target": {
                        "type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d", "message": "new commit message\n"
                    } },
                    "old": null, "created": true, "forced": false, "closed": false
                }] },
            })
        };
        let main = gitlab_push("refs/heads/main");
        let gitlab = |headers: &[(&str, &str)], body: &Value| {
            from_forge(Forge::GitLab, SECRET, headers, body)
        };
        let cases = [
            gitlab(
                &[("X-Gitlab-Event", "Push Hook"), ("Idempotency-Key", "gl-1")],
                &main,
            ),
            gitlab(
                &[("X-Gitlab-Event", "Push Hook"), ("Idempotency-Key", "gl-1")],
                &main,
            ),
            gitlab(
                &[("X-Gitlab-Event", "Push Hook")],
                &gitlab_push("refs/heads/feature"),
            ),
            gitlab(
                &[("X-Gitlab-Event", "Tag Push Hook")],
                &gitlab_push("refs/tags/v1.0.0"),
            ),
            from_forge(
                Forge::GitLab,
                "wrong",
                &[("X-Gitlab-Event", "Push Hook")],
                &main,
            ),
            post(
                "/hooks/gitlab",
                &[("X-Gitlab-Event", "Push Hook")],
                main.to_string(),
            ),
            from_forge(
                Forge::Gitea,
                SECRET,
                &[("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "gt-1")],
                &gitea_push("refs/heads/main"),
            ),
            from_forge(
                Forge::Gitea,
                SECRET,
                &[("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "gt-1")],
                &gitea_push("refs/heads/main"),
            ),
            from_forge(
                Forge::Gitea,
                SECRET,
                &[("X-Gitea-Event", "push")],
                &gitea_push("refs/tags/v1"),
            ),
            from_forge(
                Forge::Gitea,
                "wrong",
                &[("X-Gitea-Event", "push")],
                &gitea_push("refs/heads/main"),
            ),
            from_forge(
                Forge::Bitbucket,
                SECRET,
                &[("X-Event-Key", "repo:push"), ("X-Request-UUID", "bb-1")],
                &bitbucket_push("branch", "main"),
            ),
            from_forge(
                Forge::Bitbucket,
                SECRET,
                &[("X-Event-Key", "repo:push")],
                &bitbucket_push("branch", "feature"),
            ),
            from_forge(
                Forge::Bitbucket,
                SECRET,
                &[("X-Event-Key", "repo:push")],
                &bitbucket_push("tag", "v1"),
            ),
            from_forge(
                Forge::Bitbucket,
                SECRET,
                &[("X-Event-Key", "diagnostics:ping")],
                &json!({ "test": true }),
            ),
            from_forge(
                Forge::Bitbucket,
                "wrong",
                &[("X-Event-Key", "repo:push")],
                &bitbucket_push("branch", "main"),
            ),
            from_forge(Forge::Generic, SECRET, &[], &Value::Null),
            from_forge(
                Forge::Generic,
                SECRET,
                &[("Idempotency-Key", "ci-1")],
                &json!({ "ref": "main" }),
            ),
            from_forge(
                Forge::Generic,
                SECRET,
                &[("Idempotency-Key", "ci-1")],
                &json!({ "ref": "main" }),
            ),
            from_forge(
                Forge::Generic,
                SECRET,
                &[],
                &json!({ "ref": "refs/heads/dev" }),
            ),
            from_forge(Forge::Generic, "wrong", &[], &json!({ "ref": "main" })),
        ];
        let mut answers = Vec::new();
        for request in cases {
            answers.push(gist(send(&app, request).await));
        }
        expect_test::expect![[r#"
            [
                "202 queued",
                "200 duplicate delivery gl-1",
                "200 push to branch feature; stackhook follows main",
                "200 push to refs/tags/v1.0.0, which is not a branch",
                "401 X-Gitlab-Token is not the GitLab token",
                "401 missing X-Gitlab-Token header",
                "202 queued",
                "200 duplicate delivery gt-1",
                "200 push to refs/tags/v1, which is not a branch",
                "401 X-Gitea-Signature does not match the body",
                "202 queued",
                "200 push to branch feature; stackhook follows main",
                "200 push to refs/tags/v1, which is not a branch",
                "200 pong",
                "401 X-Hub-Signature does not match the body",
                "202 queued",
                "202 queued",
                "200 duplicate delivery ci-1",
                "200 push to branch dev; stackhook follows main",
                "401 X-Hub-Signature-256 does not match the body",
            ]
        "#]]
        .assert_debug_eq(&answers);
        let metrics = state
            .worker
            .deployer()
            .metrics
            .render(&store::State::default());
        let counted: Vec<&str> = metrics
            .lines()
            .filter(|line| line.starts_with("stackhook_webhook_requests_total"))
            .collect();
        expect_test::expect![[r#"
            [
                "stackhook_webhook_requests_total{outcome=\"accepted\"} 5",
                "stackhook_webhook_requests_total{outcome=\"ignored\"} 10",
                "stackhook_webhook_requests_total{outcome=\"bad_signature\"} 5",
                "stackhook_webhook_requests_total{outcome=\"refused\"} 0",
            ]
        "#]]
        .assert_debug_eq(&counted);
    }

    #[tokio::test]
    async fn a_forge_s_own_secret_overrides_the_webhook_secret() {
        let (state, _dir) = state(&[
            ("STACKHOOK_GITLAB_TOKEN", "gitlab token"),
            ("STACKHOOK_BITBUCKET_SECRET", "bitbucket secret"),
        ]);
        let app = router(state);
        let push = json!({ "ref": "refs/heads/main", "after": "abc" });
        let gitlab = [("X-Gitlab-Event", "Push Hook")];
        let gitea = [("X-Gitea-Event", "push")];
        let bitbucket = [("X-Event-Key", "diagnostics:ping")];
        let cases = [
            from_forge(Forge::GitLab, SECRET, &gitlab, &push),
            from_forge(Forge::GitLab, "gitlab token", &gitlab, &push),
            from_forge(Forge::Bitbucket, SECRET, &bitbucket, &json!({})),
            from_forge(Forge::Bitbucket, "bitbucket secret", &bitbucket, &json!({})),
            from_forge(Forge::Gitea, SECRET, &gitea, &push),
            from_forge(Forge::Generic, SECRET, &[], &Value::Null),
        ];
        let mut answers = Vec::new();
        for request in cases {
            answers.push(gist(send(&app, request).await));
        }
        expect_test::expect![[r#"
            [
                "401 X-Gitlab-Token is not the GitLab token",
                "202 queued",
                "401 X-Hub-Signature does not match the body",
                "200 pong",
                "202 queued",
                "202 queued",
            ]
        "#]]
        .assert_debug_eq(&answers);
    }

    #[tokio::test]
    async fn forgejo_s_own_signature_is_the_one_checked() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let body = json!({ "ref": "refs/heads/main", "after": "abc" }).to_string();
        let right = Forge::Gitea.sign(&Secret::new(SECRET), body.as_bytes());
        let wrong = Forge::Gitea.sign(&Secret::new("wrong"), body.as_bytes());
        // Forgejo sends its own headers and Gitea's, alike.
        let request = |forgejo: &str, gitea: &str| {
            post(
                "/hooks/gitea",
                &[
                    ("X-Forgejo-Signature", forgejo),
                    ("X-Gitea-Signature", gitea),
                    ("X-Forgejo-Event", "push"),
                    ("X-Gitea-Event", "push"),
                ],
                body.clone(),
            )
        };
        let answers = [
            gist(send(&app, request(&right, &right)).await),
            gist(send(&app, request(&wrong, &right)).await),
            gist(send(&app, request(&right, &wrong)).await),
        ];
        expect_test::expect![[r#"
            [
                "202 queued",
                "401 X-Forgejo-Signature does not match the body",
                "202 queued",
            ]
        "#]]
        .assert_debug_eq(&answers);
    }

    #[tokio::test]
    async fn a_repeated_delivery_runs_once() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let push = json!({ "ref": "refs/heads/main" }).to_string();
        let (status, body) = send(
            &app,
            signed("/hooks/github", Some("push"), Some("d-1"), &push),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let (status, body) = send(
            &app,
            signed("/hooks/github", Some("push"), Some("d-1"), &push),
        )
        .await;
        assert_eq!(
            (status, body),
            (200, json!({ "ignored": "duplicate delivery d-1" }))
        );
        let (status, body) = send(
            &app,
            signed("/hooks/github", Some("push"), Some("d-2"), &push),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let long = "x".repeat(delivery::MAX_ID_LEN + 1);
        let (status, _) = send(
            &app,
            signed("/hooks/github", Some("push"), Some(&long), &push),
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn a_signed_single_stack_request_is_a_release_or_a_fresh_empty_delivery() {
        let (state, _dir) = state(&[]);
        let stack_dir = state.stack_dir(&StackName::parse("app").unwrap());
        std::fs::create_dir_all(stack_dir).unwrap();
        let app = router(state);
        let path = "/stacks/app/deploy";
        let push = json!({ "ref": "refs/heads/main" }).to_string();
        let published = json!({ "action": "published" }).to_string();
        let created = json!({ "action": "created" }).to_string();
        let cases = [
            (signed(path, Some("push"), Some("p-1"), &push), 400),
            (signed(path, None, None, &push), 400),
            (signed(path, None, None, ""), 400),
            (signed(path, None, Some("e-1"), ""), 202),
            (signed(path, None, Some("e-1"), ""), 200),
            (signed(path, Some("release"), Some("r-1"), &published), 202),
            (signed(path, Some("release"), Some("r-2"), &created), 200),
            (
                post(
                    path,
                    &[("Authorization", &format!("Bearer {TOKEN}"))],
                    push.clone(),
                ),
                202,
            ),
        ];
        let mut answers = Vec::new();
        for (request, expected) in cases {
            let (status, body) = send(&app, request).await;
            assert_eq!(status, expected, "{body}");
            answers.push(
                body["error"]
                    .as_str()
                    .or(body["ignored"].as_str())
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        expect_test::expect![[r#"
            [
                "a signed request to a single-stack endpoint must be a GitHub release event, or have an empty body and an X-GitHub-Delivery id; send Authorization: Bearer <api token> otherwise",
                "a signed request to a single-stack endpoint must be a GitHub release event, or have an empty body and an X-GitHub-Delivery id; send Authorization: Bearer <api token> otherwise",
                "a signed request with an empty body must carry a fresh X-GitHub-Delivery id, so that it cannot be replayed",
                "",
                "duplicate delivery e-1",
                "",
                "action created does not deploy",
                "",
            ]
        "#]]
        .assert_debug_eq(&answers);
    }

    /// A peer that answers with the names of the headers it was sent.
    async fn echo_peer() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = Router::new().fallback(|headers: HeaderMap| async move {
            let mut names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
            names.sort();
            Json(json!(names))
        });
        tokio::spawn(async move { axum::serve(listener, echo).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_standby_hands_on_only_the_headers_the_active_slot_reads() {
        let peer = echo_peer().await;
        let (state, _dir) = state(&[("STACKHOOK_SLOT", "B"), ("STACKHOOK_PEER_URL", &peer)]);
        let app = router(state);
        let body = "{}";
        let signature = webhook::sign(&Secret::new(SECRET), body.as_bytes());
        let request = post(
            "/hooks/github",
            &[
                ("X-Hub-Signature-256", &signature),
                ("X-GitHub-Event", "ping"),
                ("X-GitHub-Delivery", "h-1"),
                ("Content-Type", "application/json"),
                ("Cookie", "session=1"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Connection", "keep-alive, x-private"),
            ],
            body,
        );
        let (status, names) = send(&app, request).await;
        assert_eq!(status, 200);
        assert_eq!(
            names,
            json!([
                "accept",
                "content-length",
                "content-type",
                "host",
                "x-github-delivery",
                "x-github-event",
                "x-hub-signature-256",
                "x-stackhook-handed-on"
            ])
        );
    }

    #[tokio::test]
    async fn a_standby_hands_on_a_forge_s_headers() {
        let peer = echo_peer().await;
        let (state, _dir) = state(&[("STACKHOOK_SLOT", "B"), ("STACKHOOK_PEER_URL", &peer)]);
        let app = router(state);
        let request = from_forge(
            Forge::GitLab,
            SECRET,
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("Idempotency-Key", "k-1"),
                ("X-Gitlab-Instance", "https://gitlab.example.com"),
            ],
            &json!({ "ref": "refs/heads/main" }),
        );
        let (status, names) = send(&app, request).await;
        assert_eq!(status, 200);
        assert_eq!(
            names,
            json!([
                "accept",
                "content-length",
                "host",
                "idempotency-key",
                "x-gitlab-event",
                "x-gitlab-token",
                "x-stackhook-handed-on"
            ])
        );
    }

    #[tokio::test]
    async fn a_standby_gives_up_on_a_peer_that_does_not_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = format!("http://{}", listener.local_addr().unwrap());
        // Accepts connections and keeps them, silent.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let (state, _dir) = state(&[
            ("STACKHOOK_SLOT", "B"),
            ("STACKHOOK_PEER_URL", &peer),
            ("STACKHOOK_REQUEST_TIMEOUT", "300ms"),
        ]);
        let app = router(state);
        let (status, body) = send(&app, signed("/hooks/github", Some("ping"), None, "{}")).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .ends_with("and it could not be reached"),
            "{body}"
        );
        silent.abort();
    }
}
