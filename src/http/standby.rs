//! Requests that would deploy, reaching an instance that is not the active slot. They are handed
//! on to the other slot when its address is configured, so that a webhook is never lost behind a
//! proxy that does not retry; otherwise they are refused with 503 and `Retry-After`, which
//! HAProxy (`retry-on 503`) and nginx (`proxy_next_upstream http_503`) resend to the active slot.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{BODY_LIMIT, DELIVERY_HEADER, DeployQuery, EVENT_HEADER, SIGNATURE_HEADER, Shared};
use crate::config::Config;
use crate::slot::Role;
use crate::webhook::Forge;

/// A header set on requests handed on, so that two standbys never pass one back and forth.
const HANDED_ON: &str = "x-stackhook-handed-on";

/// The headers the active slot reads, with each forge's (`forwarded_headers`); nothing else is handed on
/// (cookies, proxy headers).
const FORWARDED: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    HeaderName::from_static(SIGNATURE_HEADER),
    HeaderName::from_static(EVENT_HEADER),
    HeaderName::from_static(DELIVERY_HEADER),
];

/// How long a `?wait=true` request handed on may take: the active slot answers when its deploy
/// is done, which can take minutes.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The client that hands requests on. The active slot answers a request without `?wait=true` as
/// soon as it has read it, so `config.request_timeout` bounds the whole exchange.
pub fn client(config: &Config) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
        .timeout(config.request_timeout)
        .build()
        .expect("an HTTP client with built-in roots builds")
}

pub async fn guard(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let state = &shared.app;
    let active = match state.slots.role() {
        Role::Active => return next.run(request).await,
        Role::Standby { active } | Role::HandingOver { active } | Role::Draining { active } => {
            active
        }
    };
    let refuse = |reason: String| {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": reason })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    };
    let own = state.slots.own().map_or("-".into(), |s| s.to_string());
    let not_active = format!("this instance (slot {own}) is not active; slot {active} deploys");
    let Some(peer) = state.config.peer.clone() else {
        return refuse(not_active);
    };
    if request.headers().contains_key(HANDED_ON) {
        return refuse(not_active);
    }
    match hand_on(&shared.peer, &peer, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!("handing a request on to slot {active} at {peer}: {error:#}");
            refuse(format!("{not_active}, and it could not be reached"))
        }
    }
}

async fn hand_on(
    client: &reqwest::Client,
    peer: &str,
    request: Request,
) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    // `caller` has read the body already; this takes it from memory.
    let body = to_bytes(body, BODY_LIMIT).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", peer.trim_end_matches('/'));
    let mut forwarded = client
        .request(parts.method, url)
        .header(HANDED_ON, "1")
        .body(body);
    if Query::<DeployQuery>::try_from_uri(&parts.uri).is_ok_and(|query| query.wait) {
        forwarded = forwarded.timeout(WAIT_TIMEOUT);
    }
    for name in &forwarded_headers() {
        for value in parts.headers.get_all(name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await?;
    let mut response = Response::builder().status(answer.status());
    if let Some(content_type) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, content_type);
    }
    Ok(response.body(Body::from(answer.bytes().await?))?)
}

/// `FORWARDED` and every forge's headers, each once.
fn forwarded_headers() -> Vec<HeaderName> {
    let forges = Forge::ALL
        .iter()
        .flat_map(|forge| forge.headers())
        .map(|name| HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"));
    let mut names: Vec<HeaderName> = FORWARDED.into_iter().chain(forges).collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}
