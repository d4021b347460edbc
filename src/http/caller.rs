//! Admission to the deploy routes: who is calling, proven before the request is acted on.
//!
//! The credentials in the headers are checked before a byte of the body is read, so that a
//! stranger cannot make the server buffer 25 MB (issue 9): a bearer token is checked whole, a
//! signature header for its form. Then the body is read within `config.request_timeout` of the
//! request's arrival, and a signature checked over it. Handlers find the `Caller` in the
//! request's extensions. This module does not decide what a caller may ask for.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::{ApiError, BODY_LIMIT, SIGNATURE_HEADER, Shared};
use crate::config::{Config, Secret};
use crate::webhook::{self, Credential, Forge, SignatureError};

/// How a request to a deploy route proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `Authorization: Bearer <api token>`.
    Token,
    /// `X-Hub-Signature-256` made with the webhook secret over the body.
    Signed,
}

/// For GitHub's routes, which take only signed deliveries.
pub async fn signed(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    admit(&shared, request, next, false).await
}

/// For the single-stack routes, which take a bearer token or a signature.
pub async fn token_or_signed(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    admit(&shared, request, next, true).await
}

/// For the other forges' routes: the forge's own credential (`webhook::Forge`), checked as far as
/// the headers allow before the body is read, and against the body after. The handler finds the
/// `Forge` in the request's extensions.
pub async fn forge(
    State((shared, forge)): State<(Shared, Forge)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let config = &shared.app.config;
    let secret = forge_secret(config, forge).ok_or(ApiError::NoWebhookSecret)?;
    forge.admit(secret, credential(request.headers(), forge))?;
    let (mut parts, body) = request.into_parts();
    let body = read(
        body,
        arrived + config.request_timeout,
        config.request_timeout,
    )
    .await?;
    forge.verify(secret, credential(&parts.headers, forge), &body)?;
    parts.extensions.insert(forge);
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// The key a forge's requests are checked with: its own setting, which `config` made fall back
/// to the webhook secret.
fn forge_secret(config: &Config, forge: Forge) -> Option<&Secret> {
    match forge {
        Forge::GitLab => config.gitlab_token.as_ref(),
        Forge::Gitea => config.gitea_secret.as_ref(),
        Forge::Bitbucket => config.bitbucket_secret.as_ref(),
        Forge::Generic => config.webhook_secret.as_ref(),
    }
}

/// The first of the forge's credential headers that the request has.
fn credential(headers: &HeaderMap, forge: Forge) -> Option<Credential<'_>> {
    forge.credential_headers().iter().find_map(|&name| {
        let value = headers.get(name)?;
        Some(Credential {
            header: name,
            value: value.as_bytes(),
        })
    })
}

/// For the read routes (API, status page, metrics): the bearer token, or anyone with
/// `STACKHOOK_PUBLIC_STATUS=true`. A browser, which cannot send a header on a link, may carry the
/// token in the `stackhook_token` cookie that the status page's sign-in sets.
pub async fn reader(
    State(shared): State<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    may_read(&shared.app.config, request.headers())?;
    Ok(next.run(request).await)
}

/// `reader`'s rule, from the headers alone: the status page answers a refusal with its sign-in
/// form instead of JSON.
pub fn may_read(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    if config.public_status {
        return Ok(());
    }
    let token = config.api_token.as_ref().ok_or(ApiError::StatusClosed)?;
    match given_token(headers) {
        Some(given) if same_token(&given, token) => Ok(()),
        Some(_) => Err(ApiError::BadToken),
        None => Err(ApiError::TokenRequired),
    }
}

/// Whether the headers carry the API token, as a bearer token or in the cookie: what the status
/// page's redeploy button wants, public status or not.
pub fn holds_token(config: &Config, headers: &HeaderMap) -> bool {
    match (config.api_token.as_ref(), given_token(headers)) {
        (Some(token), Some(given)) => same_token(&given, token),
        _ => false,
    }
}

/// The cookie the status page's sign-in sets to the API token.
pub const TOKEN_COOKIE: &str = "stackhook_token";

/// The API token as the cookie's value: bytes a cookie value cannot hold (RFC 6265, 4.1.1:
/// controls, space, `"`, `,`, `;`, `\`, non-ASCII) and `%` are percent-encoded, so that any token
/// works; a token made of letters, digits and the usual symbols is its own cookie value.
pub fn cookie_value(token: &Secret) -> String {
    let mut value = String::new();
    for byte in token.expose().bytes() {
        if matches!(byte, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
        {
            value.push(char::from(byte));
        } else {
            value.push_str(&format!("%{byte:02X}"));
        }
    }
    value
}

/// The bearer token, else the cookie's, decoded.
fn given_token(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(bearer) = bearer(headers) {
        return Some(bearer.into());
    }
    let value = cookie(headers, TOKEN_COOKIE)?;
    if !value.contains('%') {
        return Some(value.into());
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let decoded = (byte == b'%')
            .then(|| hex::decode(tail.get(..2)?).ok())
            .flatten();
        match decoded.as_deref() {
            Some(&[decoded]) => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned().into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

async fn admit(
    shared: &Shared,
    request: Request,
    next: Next,
    takes_token: bool,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let config = &shared.app.config;
    let caller = from_headers(
        request.headers(),
        takes_token.then_some(config.api_token.as_ref()).flatten(),
        config.webhook_secret.as_ref(),
        takes_token,
    )?;
    let (mut parts, body) = request.into_parts();
    let body = read(
        body,
        arrived + config.request_timeout,
        config.request_timeout,
    )
    .await?;
    if caller == Caller::Signed {
        let secret = config
            .webhook_secret
            .as_ref()
            .ok_or(ApiError::NoWebhookSecret)?;
        let signature = parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
        webhook::verify(secret, signature, &body)?;
    }
    parts.extensions.insert(caller);
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// Decides the caller from the headers alone.
fn from_headers(
    headers: &HeaderMap,
    token: Option<&Secret>,
    secret: Option<&Secret>,
    takes_token: bool,
) -> Result<Caller, ApiError> {
    if takes_token {
        match (bearer(headers), token) {
            (Some(given), Some(token)) if same_token(given, token) => return Ok(Caller::Token),
            (Some(_), _) => return Err(ApiError::BadToken),
            (None, _) => {}
        }
    }
    let signature = headers.get(SIGNATURE_HEADER);
    match (signature, secret) {
        (Some(signature), Some(_)) => {
            well_formed(signature.as_bytes())?;
            Ok(Caller::Signed)
        }
        (None, Some(_)) if !takes_token => Err(SignatureError::Missing.into()),
        (_, None) if !takes_token => Err(ApiError::NoWebhookSecret),
        _ if token.is_none() && secret.is_none() => Err(ApiError::NoCredentials),
        _ => Err(ApiError::Unauthenticated),
    }
}

/// Compares digests of the two, so that the time taken says nothing of either's bytes or length.
pub fn same_token(given: &str, token: &Secret) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let token = Sha256::digest(token.expose().as_bytes());
    given.as_slice().ct_eq(token.as_slice()).into()
}

/// `sha256=` and 64 hex digits, the form `webhook::verify` checks again with the body.
fn well_formed(signature: &[u8]) -> Result<(), SignatureError> {
    match signature.strip_prefix(b"sha256=") {
        Some(hex) if hex.len() == 64 && hex.iter().all(u8::is_ascii_hexdigit) => Ok(()),
        _ => Err(SignatureError::Malformed),
    }
}

/// Reads the body whole, by `deadline`. The router's `RequestBodyLimitLayer` refuses a body over
/// `BODY_LIMIT` by its `Content-Length` before this; the count here catches one sent chunked.
async fn read(body: Body, deadline: Instant, timeout: Duration) -> Result<Bytes, ApiError> {
    let collect = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                let too_large = std::iter::successors(
                    Some(&error as &(dyn std::error::Error + 'static)),
                    |error| error.source(),
                )
                .any(|error| error.is::<http_body_util::LengthLimitError>());
                if too_large {
                    ApiError::TooLarge
                } else {
                    tracing::info!("reading a request body: {error}");
                    ApiError::BodyRead
                }
            })?;
            if bytes.len() + chunk.len() > BODY_LIMIT {
                return Err(ApiError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout_at(deadline, collect)
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout))?
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn any_token_survives_the_cookie() {
        for token in ["abc-DEF_123.+/=~", "with space; and, \"quotes\"", "50%\\é"] {
            let secret = Secret::new(token);
            let value = cookie_value(&secret);
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";,\\\"".contains(&b)),
                "{value}"
            );
            let mut headers = HeaderMap::new();
            let cookie = format!("other=1; {TOKEN_COOKIE}={value}; last=2");
            headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
            assert_eq!(given_token(&headers).as_deref(), Some(token));
        }
        assert_eq!(cookie_value(&Secret::new("abc-DEF_123")), "abc-DEF_123");
    }
}
