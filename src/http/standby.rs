//! Requests that would deploy, reaching an instance that is not the active slot. They are handed
//! on to the other slot when its address is configured, so that a webhook is never lost behind a
//! proxy that does not retry; otherwise they are refused with 503 and `Retry-After`, which
//! HAProxy (`retry-on 503`) and nginx (`proxy_next_upstream http_503`) resend to the active slot.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, BODY_LIMIT};
use crate::slot::Role;

/// A header set on requests handed on, so that two standbys never pass one back and forth.
const HANDED_ON: &str = "x-stackhook-handed-on";

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
    match hand_on(&peer, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!("handing a request on to slot {active} at {peer}: {error:#}");
            refuse(format!("{not_active}, and it could not be reached"))
        }
    }
}

async fn hand_on(peer: &str, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, BODY_LIMIT).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", peer.trim_end_matches('/'));
    let mut forwarded = reqwest::Client::new()
        .request(parts.method, url)
        .header(HANDED_ON, "1")
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
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
