//! The status page (issue 8): HTML rendered on the server from what the read API serves, for a
//! person with a browser, a phone's included. No JavaScript build step and no template engine:
//! each page is a function from plain values (`StackStatus`, `Report`) to a `String`, and a few
//! lines of inline script follow a running deployment's log, which without JavaScript is shown
//! as it was when the page was served.
//!
//! Every dynamic string passes through `escape`. A page never holds the API token: signing in
//! puts it in an `HttpOnly` cookie that `caller` reads, and signing out clears it. Reading follows
//! `caller::may_read`, the read API's rule; redeploying wants the token and a request from this
//! server's own page (CSRF). This module decides nothing about deployments: its redeploy button
//! hands the worker the request `POST /stacks/{stack}/deploy` would.

use std::fmt::{self, Write};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Form, Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::api::blocking;
use super::caller::{self, TOKEN_COOKIE};
use super::{ApiError, AppState, Shared};
use crate::config::Config;
use crate::deploy::plan::{Kind, Summary};
use crate::deploy::status::{StackState, StackStatus};
use crate::deploy::{Changes, Outcome, Report, Request, Status, Trigger, TriggerKind};
use crate::history::History;
use crate::stack::StackName;
use crate::store::Finding;

/// How many deployments the overview and a stack's page list.
const RECENT: usize = 20;

/// A sign-in form is a few hundred bytes; anything larger is no sign-in.
const FORM_LIMIT: usize = 4 * 1024;

/// The routes of the pages, their sign-in and their redeploy button.
pub fn routes(shared: Shared) -> Router<Shared> {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/deployments/{id}", get(deployment))
        .route("/stacks/{stack}", get(stack))
        .route_layer(middleware::from_fn_with_state(shared.clone(), gate));
    // The forms' bodies are read within the deploy routes' deadline, as `caller` reads theirs.
    let forms = Router::new()
        .route("/login", get(sign_in).post(login))
        .route("/logout", post(logout))
        .route("/ui/stacks/{stack}/deploy", post(redeploy))
        .route("/ui/stacks/{stack}/rollback", post(roll_back))
        .route("/ui/stacks/{stack}/unpin", post(unpin))
        .route_layer(RequestBodyTimeoutLayer::new(
            shared.app.config.request_timeout,
        ))
        .route_layer(RequestBodyLimitLayer::new(FORM_LIMIT));
    pages.merge(forms)
}

/// Text made safe for HTML, in an element or a quoted attribute: `&`, `<`, `>`, `"` and `'`
/// become character references, so that a commit message, a compose file's error or a log line
/// shows as the text it is.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text)
}

pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Appends to a page; writing to a `String` cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {
        let _ = write!($out, $($arg)*);
    };
}

/// What the person looking at a page may do there.
#[derive(Debug, Clone, Copy, Default)]
struct Viewer {
    /// The request carries the API token: the redeploy and dry-run buttons show.
    signed_in: bool,
    /// An API token is configured, so signing in means something.
    can_sign_in: bool,
}

impl Viewer {
    fn of(config: &Config, headers: &HeaderMap) -> Viewer {
        Viewer {
            signed_in: caller::holds_token(config, headers),
            can_sign_in: config.api_token.is_some(),
        }
    }
}

/// `caller::reader` for pages: a refusal is the sign-in form, not JSON.
async fn gate(State(shared): State<Shared>, request: HttpRequest, next: Next) -> Response {
    let config = &shared.app.config;
    match caller::may_read(config, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(ApiError::StatusClosed) => closed(),
        Err(error) => {
            let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let problem = matches!(error, ApiError::BadToken)
                .then_some("The saved token is not the API token any more. Sign in again.");
            page(
                StatusCode::UNAUTHORIZED,
                &sign_in_html(here, problem, Viewer::default()),
            )
        }
    }
}

/// `GET /`: every stack and the recent deployments.
async fn overview(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&app.config, &headers);
    let deployer = app.worker.deployer();
    let history = deployer.history();
    let (stacks, reports) = tokio::join!(
        deployer.status(None, false),
        blocking("reading the history", move || history.list(RECENT, None)),
    );
    let stacks = match stacks {
        Ok(mut stacks) => {
            for status in &mut stacks {
                super::api::with_drift(&app, status);
            }
            stacks
        }
        Err(error) => {
            tracing::error!("reading the stacks' status: {error:#}");
            return failure(ApiError::Internal("reading the stacks' status"), viewer);
        }
    };
    match reports {
        Ok(reports) => ok(&overview_html(&stacks, &reports, viewer, SystemTime::now())),
        Err(error) => failure(error, viewer),
    }
}

/// `GET /deployments/{id}`: one deployment, its log live while it runs.
async fn deployment(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let viewer = Viewer::of(&app.config, &headers);
    if History::parse_id(&id).is_none() {
        return failure(ApiError::UnknownDeployment(id), viewer);
    }
    let history = app.worker.deployer().history();
    let lookup = id.clone();
    let found = blocking("reading the history", move || {
        let report = history.get(&lookup)?;
        let log = history.read_log(&lookup, 0)?.unwrap_or_default();
        Ok((report, String::from_utf8_lossy(&log).into_owned()))
    })
    .await;
    match found {
        Ok((Some(report), log)) => ok(&deployment_html(&report, &log, viewer, SystemTime::now())),
        // A deployment just asked for has an id before it has a record: the page waits for it.
        Ok((None, _)) => page(StatusCode::NOT_FOUND, &waiting_html(&id, viewer)),
        Err(error) => failure(error, viewer),
    }
}

#[derive(Debug, Default, Deserialize)]
struct StackQuery {
    /// Show what a deployment would do now (the dry-run button).
    #[serde(default)]
    plan: bool,
}

/// `GET /stacks/{stack}[?plan=true]`: one stack, its recent deployments and, for a viewer with
/// the token, a dry run.
async fn stack(
    State(app): State<AppState>,
    Path(stack): Path<String>,
    Query(query): Query<StackQuery>,
    headers: HeaderMap,
) -> Response {
    let viewer = Viewer::of(&app.config, &headers);
    let name = match StackName::parse(&stack) {
        Ok(name) => name,
        Err(error) => return failure(error.into(), viewer),
    };
    let planned = query.plan && viewer.signed_in;
    let deployer = app.worker.deployer();
    let history = deployer.history();
    let listed = name.to_string();
    let (statuses, reports) = tokio::join!(
        deployer.status(Some(&name), planned),
        blocking("reading the history", move || {
            history.list(RECENT, Some(&listed))
        }),
    );
    let status = match statuses {
        Ok(mut statuses) => match statuses.pop() {
            Some(mut status) => {
                super::api::with_drift(&app, &mut status);
                status
            }
            None => return failure(ApiError::UnknownStack(stack), viewer),
        },
        Err(error) => {
            tracing::error!("reading stack {name}'s status: {error:#}");
            return failure(ApiError::Internal("reading the stack's status"), viewer);
        }
    };
    match reports {
        Ok(reports) => ok(&stack_html(
            &status,
            &reports,
            viewer,
            planned,
            SystemTime::now(),
        )),
        Err(error) => failure(error, viewer),
    }
}

#[derive(Debug, Default, Deserialize)]
struct SignInQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`: the sign-in form, for a page that is public but whose buttons want the token.
async fn sign_in(State(app): State<AppState>, Query(query): Query<SignInQuery>) -> Response {
    if app.config.api_token.is_none() {
        return closed();
    }
    let next = local_path(&query.next).unwrap_or("/");
    ok(&sign_in_html(next, None, Viewer::default()))
}

#[derive(Debug, Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the API token, compared in constant time, becomes a cookie that only this
/// site's requests carry and no script reads; then back to the page the form was on. It needs
/// no same-origin check: a sign-in forged by another site would have to know the token.
async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let next = local_path(&form.next).unwrap_or("/");
    let Some(token) = &app.config.api_token else {
        return closed();
    };
    if !caller::same_token(&form.token, token) {
        tracing::info!("refused: a sign-in with a token that is not the API token");
        return page(
            StatusCode::UNAUTHORIZED,
            &sign_in_html(next, Some("That is not the API token."), Viewer::default()),
        );
    }
    let cookie = token_cookie(&caller::cookie_value(token), via_https(&headers));
    see_other(next, Some(cookie))
}

/// `POST /logout`: clears the cookie.
async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site(Viewer::of(&app.config, &headers));
    }
    see_other("/", Some(clear_cookie(via_https(&headers))))
}

/// `POST /ui/stacks/{stack}/deploy`: the redeploy button. Wants the token (public status or
/// not) and a request from this server's own page, then asks for what `POST
/// /stacks/{stack}/deploy` would, and shows the deployment.
async fn redeploy(
    State(app): State<AppState>,
    Path(stack): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(&app, &stack, &headers, |name| Request::stack(name, None))
}

#[derive(Debug, Deserialize)]
struct RollBack {
    to: String,
}

/// `POST /ui/stacks/{stack}/rollback` (form field `to`: a commit or a deployment id): the
/// stack page's rollback, as `POST /stacks/{stack}/rollback`; same rules as `redeploy`.
async fn roll_back(
    State(app): State<AppState>,
    Path(stack): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RollBack>,
) -> Response {
    let to = form.to.trim().to_owned();
    act(&app, &stack, &headers, |name| Request::rollback(name, to))
}

/// `POST /ui/stacks/{stack}/unpin`: the stack page's unpin, as `POST /stacks/{stack}/unpin`.
async fn unpin(
    State(app): State<AppState>,
    Path(stack): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(&app, &stack, &headers, Request::unpin)
}

/// A button's deployment: for a signed-in, same-origin request about a stack that exists (or
/// is pinned, which a rollback may have kept after the branch dropped it); then to its page.
fn act(
    app: &AppState,
    stack: &str,
    headers: &HeaderMap,
    request: impl FnOnce(StackName) -> Request,
) -> Response {
    let viewer = Viewer::of(&app.config, headers);
    if !viewer.signed_in {
        let here = format!("/stacks/{stack}");
        let here = local_path(&here).unwrap_or("/");
        return page(
            StatusCode::UNAUTHORIZED,
            &sign_in_html(here, Some("Deploying wants the API token."), viewer),
        );
    }
    if !same_origin(headers) {
        return cross_site(viewer);
    }
    let name = match StackName::parse(stack) {
        Ok(name) => name,
        Err(error) => return failure(error.into(), viewer),
    };
    if !app.has_stack(&name) && !pinned(app, &name) {
        return failure(ApiError::UnknownStack(stack.to_owned()), viewer);
    }
    let request = request(name).by(Trigger::new(TriggerKind::Api));
    let ticket = app.worker.trigger(request);
    see_other(&format!("/deployments/{}", ticket.deployment), None)
}

fn pinned(app: &AppState, name: &StackName) -> bool {
    crate::store::load(&app.config.state_dir)
        .is_ok_and(|state| state.pins.contains_key(name.as_str()))
}

/// Whether a form was posted from one of this server's pages, by the headers browsers set and
/// pages cannot (OWASP's CSRF cheat sheet, "verifying origin with standard headers"):
/// `Sec-Fetch-Site`, else `Origin` against the host the request was sent to. A request with
/// neither is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some((_, origin)) = text("origin").and_then(|o| o.split_once("://")) else {
        return false;
    };
    let host = text("x-forwarded-host")
        .and_then(|hosts| hosts.split(',').next())
        .or_else(|| text("host"));
    host.is_some_and(|host| host.trim().eq_ignore_ascii_case(origin))
}

/// `next` if it is a path on this server, so that signing in cannot send a browser elsewhere.
fn local_path(next: &str) -> Option<&str> {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 300
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.?=&%".contains(&b));
    local.then_some(next)
}

/// The request reached a proxy over HTTPS, so the cookie may travel over HTTPS only.
fn via_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The sign-in cookie: for this site's requests only (`SameSite=Strict`), out of scripts'
/// reach (`HttpOnly`), and gone when the browser session ends.
fn token_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{TOKEN_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

fn clear_cookie(secure: bool) -> String {
    token_cookie("", secure) + "; Max-Age=0"
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = Redirect::to(location).into_response();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The live log's script. It replaces the log served with the page by the stream's lines (old
/// and new) and reloads the page when the deployment ends; without it the log stays as served.
const SCRIPT: &str = "const log=document.getElementById('log');\
const source=new EventSource(log.dataset.follow);let fresh=true;\
source.addEventListener('line',e=>{if(fresh){log.textContent='';fresh=false}\
const end=innerHeight+scrollY>=document.body.scrollHeight-8;log.append(e.data+'\\n');\
if(end)scrollTo(0,document.body.scrollHeight)});\
source.addEventListener('end',e=>{source.close();if(e.data!=='unknown')location.reload()});";

const STYLE: &str = ":root{color-scheme:light dark;--fg:#1d2430;--muted:#5b6474;--line:#d0d7de;\
--bg:#fff;--card:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da}\
@media(prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9da7b3;--line:#30363d;\
--bg:#0d1117;--card:#161b22;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff}}\
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,sans-serif;color:var(--fg);\
background:var(--bg)}header{display:flex;justify-content:space-between;align-items:center;\
gap:1rem;padding:.6rem 1rem;border-bottom:1px solid var(--line)}\
.brand{font-weight:700;color:var(--fg);text-decoration:none}\
main{max-width:60rem;margin:0 auto;padding:1rem}h1{font-size:1.35rem;margin:.2rem 0 1rem}\
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}a{color:var(--info)}\
ul.cards{list-style:none;padding:0;margin:0;display:grid;gap:.6rem}\
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;\
padding:.6rem .85rem;overflow-wrap:anywhere}.card>div+div{margin-top:.2rem}\
.row{display:flex;flex-wrap:wrap;gap:.2rem .6rem;align-items:baseline}\
.name{font-weight:600;font-size:1.05rem}.muted{color:var(--muted);font-size:.9rem}\
.badge{display:inline-block;border-radius:1rem;padding:0 .55rem;font-size:.8rem;\
font-weight:600;border:1px solid currentColor;white-space:nowrap}\
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.info{color:var(--info)}\
.off{color:var(--muted)}code{font:.88em ui-monospace,monospace}\
pre{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem;\
margin:0;font:.8rem/1.45 ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:0}\
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}ul.plain{margin:.2rem 0;\
padding-left:1.2rem}.actions{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}\
button,input{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid var(--line)}\
button{background:var(--info);color:#fff;border-color:var(--info);cursor:pointer}\
button.plain{background:none;color:var(--info)}form.inline{display:inline;margin:0}\
label{display:block;margin:.8rem 0 .3rem}input[type=password]{width:100%;max-width:24rem;\
display:block;margin-bottom:.8rem}";

/// The page's Content-Security-Policy: its own style and script, by hash, and nothing else.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    };
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        hash(STYLE),
        hash(SCRIPT)
    );
    HeaderValue::from_str(&policy).expect("a policy of ASCII text")
});

fn ok(html: &str) -> Response {
    page(StatusCode::OK, html)
}

fn page(status: StatusCode, html: &str) -> Response {
    let mut response = (status, Html(html.to_owned())).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// An `ApiError` as a page: its status and its short message; details went to the log.
fn failure(error: ApiError, viewer: Viewer) -> Response {
    let status = error.into_response().status();
    let mut body = String::new();
    put!(
        body,
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">All stacks</a></p>",
        escape(status.canonical_reason().unwrap_or("Error")),
        escape(&error_text(status))
    );
    page(status, &layout("Error", &body, viewer, false))
}

fn error_text(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "There is nothing here: no such stack or deployment.".into(),
        StatusCode::BAD_REQUEST => {
            "That is not a stack name: use letters, digits, '-', '_' and '.'.".into()
        }
        _ => "The server could not read what this page shows; its log says why.".into(),
    }
}

fn closed() -> Response {
    let body = "<h1>The status page is off</h1><p>Set <code>STACKHOOK_API_TOKEN</code> to sign \
                in with it, or <code>STACKHOOK_PUBLIC_STATUS=true</code> to show this page to \
                anyone who reaches this address.</p>";
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        &layout("Off", body, Viewer::default(), false),
    )
}

fn cross_site(viewer: Viewer) -> Response {
    tracing::info!("refused: a form post that did not come from the status page");
    let body = "<h1>Refused</h1><p>This request did not come from stackhook's own page, so it \
                was not carried out. Open the page and use its button.</p>\
                <p><a href=\"/\">All stacks</a></p>";
    page(
        StatusCode::FORBIDDEN,
        &layout("Refused", body, viewer, false),
    )
}

/// The frame of every page. With `live`, the log script runs and, without JavaScript, the page
/// reloads itself now and then instead.
fn layout(title: &str, body: &str, viewer: Viewer, live: bool) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 1024);
    put!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · stackhook</title>",
        escape(title)
    );
    if live {
        out.push_str("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>");
    }
    put!(
        out,
        "<style>{STYLE}</style></head><body><header><a class=\"brand\" href=\"/\">stackhook</a>"
    );
    if viewer.signed_in {
        out.push_str(
            "<form class=\"inline\" method=\"post\" action=\"/logout\">\
             <button class=\"plain\">Sign out</button></form>",
        );
    } else if viewer.can_sign_in {
        out.push_str("<a href=\"/login\">Sign in</a>");
    }
    put!(out, "</header><main>{body}</main>");
    if live {
        put!(out, "<script>{SCRIPT}</script>");
    }
    out.push_str("</body></html>");
    out
}

fn sign_in_html(next: &str, problem: Option<&str>, viewer: Viewer) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(problem) = problem {
        put!(body, "<p class=\"bad\">{}</p>", escape(problem));
    }
    put!(
        body,
        "<form method=\"post\" action=\"/login\"><label for=\"token\">API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
         required><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <button>Sign in</button></form><p class=\"muted\">The token is stackhook's \
         <code>STACKHOOK_API_TOKEN</code>. This browser keeps it in a cookie for this site, \
         until you sign out or end the session.</p>",
        escape(next)
    );
    layout("Sign in", &body, viewer, false)
}

fn overview_html(
    stacks: &[StackStatus],
    reports: &[Report],
    viewer: Viewer,
    now: SystemTime,
) -> String {
    let mut body = match stacks.iter().find_map(|s| s.host.as_deref()) {
        Some(host) => format!("<h1>Stacks on {}</h1>", escape(host)),
        None => String::from("<h1>Stacks</h1>"),
    };
    if stacks.is_empty() {
        body.push_str("<p class=\"muted\">No stacks: the checkout has none yet.</p>");
    }
    body.push_str("<ul class=\"cards\" id=\"stacks\">");
    for status in stacks {
        let name = escape(&status.stack);
        put!(
            body,
            "<li class=\"card\" id=\"stack-{name}\"><div class=\"row\">\
             <a class=\"name\" href=\"/stacks/{name}\">{name}</a>{}</div>",
            state_badge(status.state)
        );
        deployed_line(&mut body, status, now);
        // The newest deployment in the list that did something to the stack.
        let last = reports.iter().find_map(|report| {
            let stack = report.stacks.iter().find(|s| s.stack == status.stack)?;
            Some((report, stack))
        });
        if let Some((report, stack)) = last {
            put!(
                body,
                "<div class=\"muted\">last: {} in <a href=\"/deployments/{id}\">{id}</a> {}</div>",
                outcome_badge(stack.outcome),
                ago(&report.started_at, now),
                id = escape(&report.deployment),
            );
        }
        changes_line(&mut body, &status.changes);
        image_updates_line(&mut body, status, false);
        containers_line(&mut body, status);
        if let Some(error) = &status.error {
            put!(
                body,
                "<div class=\"bad\">{}</div>",
                escape(first_line(error))
            );
        }
        body.push_str("</li>");
    }
    body.push_str("</ul><h2>Recent deployments</h2>");
    deployments_list(&mut body, reports, None, now);
    layout("Stacks", &body, viewer, false)
}

fn stack_html(
    status: &StackStatus,
    reports: &[Report],
    viewer: Viewer,
    planned: bool,
    now: SystemTime,
) -> String {
    let name = escape(&status.stack);
    let mut body = String::new();
    put!(
        body,
        "<h1>{name} {}</h1><div class=\"card\">",
        state_badge(status.state)
    );
    deployed_line(&mut body, status, now);
    if let Some(project) = &status.project {
        put!(
            body,
            "<div class=\"muted\">project <code>{}</code></div>",
            escape(project)
        );
    }
    if let Some(wanted) = &status.wanted_commit
        && status.state != StackState::UpToDate
    {
        put!(
            body,
            "<div>the checkout is at <code>{}</code></div>",
            escape(short(wanted))
        );
    }
    changes_line(&mut body, &status.changes);
    image_updates_line(&mut body, status, true);
    if let Some(error) = &status.error {
        put!(body, "<pre class=\"bad\">{}</pre>", escape(error));
    }
    body.push_str("</div>");
    if let Some(pin) = &status.pinned {
        put!(
            body,
            "<div>pinned at <code>{}</code> since {}: pushes leave it alone</div>",
            escape(short(pin.commit.as_str())),
            escape(&pin.since)
        );
    }
    if viewer.signed_in {
        put!(
            body,
            "<div class=\"actions\"><form class=\"inline\" method=\"post\" \
             action=\"/ui/stacks/{name}/deploy\"><button>Redeploy</button></form>\
             <form class=\"inline\" method=\"get\" action=\"/stacks/{name}\">\
             <input type=\"hidden\" name=\"plan\" value=\"true\">\
             <button class=\"plain\">Dry run</button></form></div>\
             <div class=\"actions\"><form class=\"inline\" method=\"post\" \
             action=\"/ui/stacks/{name}/rollback\">\
             <input name=\"to\" required placeholder=\"commit or deployment id\" \
             aria-label=\"roll back to\"> <button class=\"plain\">Roll back and pin</button>\
             </form></div>"
        );
        if status.pinned.is_some() {
            put!(
                body,
                "<div class=\"actions\"><form class=\"inline\" method=\"post\" \
                 action=\"/ui/stacks/{name}/unpin\"><button>Unpin</button></form></div>"
            );
        }
    } else if viewer.can_sign_in {
        put!(
            body,
            "<p class=\"muted\"><a href=\"/login?next=/stacks/{name}\">Sign in</a> to redeploy \
             or to see a dry run.</p>"
        );
    }
    if planned {
        body.push_str("<h2>Dry run</h2>");
        if status.actions.is_empty() {
            body.push_str(
                "<p>A deployment would change nothing: the stack is as the checkout wants it.</p>",
            );
        } else {
            body.push_str("<p class=\"muted\">What a deployment would do now:</p>");
            actions_list(&mut body, &status.actions);
        }
    }
    body.push_str("<h2>Containers</h2>");
    if status.containers.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str("<ul class=\"cards\">");
        for container in &status.containers {
            let health = container
                .health
                .map(|h| format!("{h:?}").to_lowercase())
                .map(|h| format!(", {h}"))
                .unwrap_or_default();
            let class = if container.state == "running" {
                "ok"
            } else {
                "warn"
            };
            put!(
                body,
                "<li class=\"card\"><div class=\"row\"><b>{}</b><span class=\"badge {class}\">{}{}\
                 </span></div><div class=\"muted\">{} · <code>{}</code></div></li>",
                escape(&container.service),
                escape(&container.state),
                escape(&health),
                escape(&container.name),
                escape(&container.image)
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>Recent deployments</h2>");
    deployments_list(&mut body, reports, Some(&status.stack), now);
    layout(&status.stack, &body, viewer, false)
}

fn deployment_html(report: &Report, log: &str, viewer: Viewer, now: SystemTime) -> String {
    let id = escape(&report.deployment);
    let running = report.status == Status::Running;
    let mut body = String::new();
    put!(
        body,
        "<h1>Deployment {id} {}</h1><dl>",
        status_badge(report.status)
    );
    put!(
        body,
        "<dt>Started</dt><dd>{}</dd>",
        ago(&report.started_at, now)
    );
    if running {
        put!(
            body,
            "<dt>Running</dt><dd>for {}</dd>",
            since(&report.started_at, now)
                .map(took)
                .unwrap_or_else(|| "a moment".into())
        );
    } else if let Some(ms) = report.duration_ms {
        put!(
            body,
            "<dt>Took</dt><dd>{}</dd>",
            took(Duration::from_millis(ms))
        );
    }
    if !report.triggers.is_empty() {
        body.push_str("<dt>Triggered by</dt><dd><ul class=\"plain\">");
        for trigger in &report.triggers {
            put!(body, "<li>{}", escape(&describe(trigger)));
            if let Some(delivery) = &trigger.delivery {
                put!(
                    body,
                    " <span class=\"muted\">delivery {}</span>",
                    escape(delivery)
                );
            }
            if let Some(message) = &trigger.message {
                put!(body, ": “{}”", escape(first_line(message)));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul></dd>");
    }
    if let Some(commit) = &report.commit {
        put!(
            body,
            "<dt>Commit</dt><dd><code>{}</code> {}",
            escape(short(commit)),
            escape(report.message.as_deref().unwrap_or(""))
        );
        if let Some(branch) = &report.branch {
            put!(body, " <span class=\"muted\">on {}</span>", escape(branch));
        }
        if let Some(host) = &report.host {
            put!(
                body,
                " <span class=\"muted\">by host {}</span>",
                escape(host)
            );
        }
        body.push_str("</dd>");
    }
    if let Some(previous) = &report.previous_commit {
        put!(
            body,
            "<dt>Before</dt><dd><code>{}</code></dd>",
            escape(short(previous))
        );
    }
    if report.dry_run {
        body.push_str("<dt>Dry run</dt><dd>yes: nothing was changed</dd>");
    }
    if report.suspended {
        body.push_str("<dt>Suspended</dt><dd>yes: deployments are paused</dd>");
    }
    body.push_str("</dl>");
    if let Some(error) = &report.error {
        put!(body, "<pre class=\"bad\">{}</pre>", escape(error));
    }
    if !report.stacks.is_empty() {
        body.push_str("<h2>Stacks</h2><ul class=\"cards\">");
        for stack in &report.stacks {
            let name = escape(&stack.stack);
            put!(
                body,
                "<li class=\"card\"><div class=\"row\"><a class=\"name\" href=\"/stacks/{name}\">\
                 {name}</a>{}</div>",
                outcome_badge(stack.outcome)
            );
            changes_line(&mut body, &stack.changes);
            if !stack.actions.is_empty() {
                actions_list(&mut body, &stack.actions);
            }
            if let Some(error) = &stack.error {
                put!(body, "<pre class=\"bad\">{}</pre>", escape(error));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>Log</h2>");
    log_block(&mut body, &report.deployment, log, running);
    layout(
        &format!("Deployment {}", report.deployment),
        &body,
        viewer,
        running,
    )
}

/// The page of a deployment that has an id but no record yet: asked for, not started.
fn waiting_html(id: &str, viewer: Viewer) -> String {
    let mut body = String::new();
    put!(
        body,
        "<h1>Deployment {}</h1><p>This deployment has not started yet, or the history no longer \
         keeps it. Its log shows here once it runs.</p><h2>Log</h2>",
        escape(id)
    );
    log_block(&mut body, id, "", true);
    layout(&format!("Deployment {id}"), &body, viewer, true)
}

fn log_block(body: &mut String, id: &str, log: &str, live: bool) {
    let follow = if live {
        format!(
            " data-follow=\"/api/deployments/{}/log?follow=true\"",
            escape(id)
        )
    } else {
        String::new()
    };
    let text = if log.is_empty() {
        "(no lines yet)"
    } else {
        log
    };
    put!(body, "<pre id=\"log\"{follow}>{}</pre>", escape(text));
}

fn deployments_list(body: &mut String, reports: &[Report], stack: Option<&str>, now: SystemTime) {
    if reports.is_empty() {
        body.push_str("<p class=\"muted\">None yet.</p>");
        return;
    }
    body.push_str("<ul class=\"cards\" id=\"deployments\">");
    for report in reports {
        let id = escape(&report.deployment);
        put!(
            body,
            "<li class=\"card\"><div class=\"row\">{}<a href=\"/deployments/{id}\">{id}</a>\
             <span class=\"muted\">{}",
            status_badge(report.status),
            ago(&report.started_at, now)
        );
        if let Some(ms) = report.duration_ms {
            put!(body, " · took {}", took(Duration::from_millis(ms)));
        }
        body.push_str("</span></div><div>");
        let triggers: Vec<String> = report.triggers.iter().take(3).map(describe).collect();
        let mut by = triggers.join(", ");
        if report.triggers.len() > 3 {
            by.push_str(&format!(" and {} more", report.triggers.len() - 3));
        }
        if by.is_empty() {
            by = "a direct call".into();
        }
        put!(body, "{}", escape(&by));
        if let Some(commit) = &report.commit {
            put!(
                body,
                " · <code>{}</code> {}",
                escape(short(commit)),
                escape(report.message.as_deref().unwrap_or(""))
            );
        }
        body.push_str("</div>");
        let stacks: Vec<String> = report
            .stacks
            .iter()
            .filter(|s| stack.is_none_or(|stack| s.stack == stack))
            .map(|s| format!("{} {}", s.stack, outcome_name(s.outcome)))
            .collect();
        if !stacks.is_empty() {
            put!(
                body,
                "<div class=\"muted\">{}</div>",
                escape(&stacks.join(", "))
            );
        }
        if let Some(error) = &report.error {
            put!(
                body,
                "<div class=\"bad\">{}</div>",
                escape(first_line(error))
            );
        }
        body.push_str("</li>");
    }
    body.push_str("</ul>");
}

fn deployed_line(body: &mut String, status: &StackStatus, now: SystemTime) {
    match &status.deployed {
        Some(deployed) => {
            put!(
                body,
                "<div>deployed <code>{}</code> {} <span class=\"muted\">{}</span></div>",
                escape(short(&deployed.commit)),
                escape(deployed.message.as_deref().unwrap_or("")),
                ago(&deployed.deployed_at, now)
            );
        }
        None => body.push_str("<div class=\"muted\">never deployed</div>"),
    }
}

fn changes_line(body: &mut String, changes: &Changes) {
    if changes.is_empty() {
        return;
    }
    let mut parts = Vec::new();
    for (what, names) in [
        ("files", &changes.files),
        ("services", &changes.services),
        ("variables", &changes.variables),
    ] {
        if !names.is_empty() {
            let names: Vec<String> = names
                .iter()
                .map(|name| format!("<code>{}</code>", escape(name)))
                .collect();
            parts.push(format!("{what} {}", names.join(" ")));
        }
    }
    put!(body, "<div>changes: {}</div>", parts.join("; "));
}

/// The image check's news (`STACKHOOK_IMAGE_CHECK`): each service whose tag names a newer image,
/// and on a stack's own page (`all`) the services it could not check, with why.
fn image_updates_line(body: &mut String, status: &StackStatus, all: bool) {
    let Some(check) = &status.image_check else {
        return;
    };
    for (service, image) in &check.services {
        match &image.finding {
            Finding::UpdateAvailable { available, .. } => {
                put!(
                    body,
                    "<div class=\"warn\">image update: <b>{}</b> <code>{}</code> names \
                     <code>{}</code>, newer than the image it runs</div>",
                    escape(service),
                    escape(&image.image),
                    escape(short_digest(available))
                );
            }
            Finding::Unknown { reason } if all => {
                put!(
                    body,
                    "<div class=\"muted\">image of <b>{}</b> not checked: {}</div>",
                    escape(service),
                    escape(first_line(reason))
                );
            }
            _ => {}
        }
    }
    if all && !check.services.is_empty() {
        put!(
            body,
            "<div class=\"muted\">images checked {}</div>",
            escape(&check.checked_at)
        );
    }
}

/// `sha256:0123456789ab`: a digest cut to what a reader compares.
fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn containers_line(body: &mut String, status: &StackStatus) {
    if status.containers.is_empty() {
        return;
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for container in &status.containers {
        *counts.entry(container.state.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    put!(
        body,
        "<div class=\"muted\">containers: {}</div>",
        escape(&counts.join(", "))
    );
}

fn actions_list(body: &mut String, actions: &[Summary]) {
    body.push_str("<ul class=\"plain\">");
    for action in actions {
        let kind = match action.kind {
            Kind::Create => "create",
            Kind::Recreate => "recreate",
            Kind::Start => "start",
            Kind::Remove => "remove",
            Kind::Keep => "unchanged",
        };
        put!(body, "<li><b>{kind}</b> {}", escape(&action.service));
        if action.number != 1 {
            put!(body, " #{}", action.number);
        }
        if let Some(reason) = &action.reason {
            put!(body, ": {}", escape(reason));
        }
        body.push_str("</li>");
    }
    body.push_str("</ul>");
}

/// `webhook push by alice`, `api`, `poll`.
fn describe(trigger: &Trigger) -> String {
    let mut text = trigger.kind.name().replace('_', " ");
    if let Some(event) = &trigger.event {
        text.push(' ');
        text.push_str(event);
    }
    if let Some(pusher) = &trigger.pusher {
        text.push_str(" by ");
        text.push_str(pusher);
    }
    if trigger.kind == TriggerKind::ImageUpdate
        && let Some(message) = &trigger.message
    {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

fn state_badge(state: StackState) -> &'static str {
    match state {
        StackState::UpToDate => "<span class=\"badge ok\">up to date</span>",
        StackState::Drifted => "<span class=\"badge warn\">drifted</span>",
        StackState::Pending => "<span class=\"badge warn\">pending</span>",
        StackState::New => "<span class=\"badge info\">new</span>",
        StackState::Removed => "<span class=\"badge off\">removed</span>",
        StackState::Broken => "<span class=\"badge bad\">broken</span>",
    }
}

fn status_badge(status: Status) -> &'static str {
    match status {
        Status::Running => "<span class=\"badge info\">running</span>",
        Status::Succeeded => "<span class=\"badge ok\">succeeded</span>",
        Status::Failed => "<span class=\"badge bad\">failed</span>",
        Status::Interrupted => "<span class=\"badge warn\">interrupted</span>",
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Deployed => "deployed",
        Outcome::Unchanged => "unchanged",
        Outcome::Planned => "planned",
        Outcome::Failed => "failed",
        Outcome::Pruned => "taken down",
    }
}

fn outcome_badge(outcome: Outcome) -> String {
    let class = match outcome {
        Outcome::Deployed => "ok",
        Outcome::Unchanged | Outcome::Planned | Outcome::Pruned => "off",
        Outcome::Failed => "bad",
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        outcome_name(outcome)
    )
}

/// A commit id as the CLI and logs show it (`CommitId::short`).
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn since(at: &str, now: SystemTime) -> Option<Duration> {
    let then = humantime::parse_rfc3339(at).ok()?;
    Some(now.duration_since(then).unwrap_or_default())
}

/// A time as `<time>` that reads "5 min ago", with the exact time on hover.
fn ago(at: &str, now: SystemTime) -> String {
    let text = match since(at, now) {
        None => at.to_owned(),
        Some(elapsed) => match elapsed.as_secs() {
            0..10 => "just now".to_owned(),
            seconds @ 10..60 => format!("{seconds} s ago"),
            seconds @ 60..3600 => format!("{} min ago", seconds / 60),
            seconds @ 3600..86_400 => format!("{} h ago", seconds / 3600),
            seconds => match seconds / 86_400 {
                1 => "yesterday".to_owned(),
                days => format!("{days} days ago"),
            },
        },
    };
    format!(
        "<time datetime=\"{at}\" title=\"{at}\">{}</time>",
        escape(&text),
        at = escape(at)
    )
}

/// A duration as people read it: `850 ms`, `4.2 s`, `3 min 4 s`.
fn took(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", duration.as_secs_f64()),
        _ => {
            let seconds = duration.as_secs();
            format!("{} min {} s", seconds / 60, seconds % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request as Http;
    use tower::ServiceExt;

    use super::*;
    use crate::deploy::StackReport;
    use crate::deploy::status::{ContainerStatus, Deployed};
    use crate::http::router;
    use crate::http::tests::{TOKEN, state};

    const AT: &str = "2026-12-01T18:00:00Z";
    const SHA: &str = "3f2a9c1b7d0e5a6b7c8d9e0f1a2b3c4d5e6f7a8b";

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-12-01T18:05:00Z").unwrap()
    }

    /// A finished deployment of `app` whose texts all come from a hostile committer.
    fn report(status: Status) -> Report {
        let mut report = Report::new("1764612000-3".into(), false);
        report.status = status;
        report.started_at = AT.into();
        report.duration_ms = Some(4200);
        report.commit = Some(SHA.into());
        report.message = Some("Bump <script>alert(1)</script> & more".into());
        report.previous_commit = Some("0".repeat(40));
        report.branch = Some("main".into());
        report.triggers = vec![Trigger {
            pusher: Some("alice <a@x>".into()),
            event: Some("push".into()),
            delivery: Some("d-1".into()),
            message: Some("Bump \"it\"\n\nBecause.".into()),
            ..Trigger::new(TriggerKind::Webhook)
        }];
        report.stacks = vec![StackReport {
            project: Some("app".into()),
            actions: vec![Summary {
                service: "web".into(),
                number: 1,
                kind: Kind::Recreate,
                reason: Some("configuration changed".into()),
            }],
            changes: Changes {
                since: Some("0".repeat(40)),
                files: vec!["compose.yaml".into(), "<img src=x>.conf".into()],
                variables: vec![],
                services: vec!["web".into()],
            },
            ..StackReport::new("app", Outcome::Deployed)
        }];
        report
    }

    fn status() -> StackStatus {
        StackStatus {
            host: None,
            stack: "app".into(),
            project: Some("app".into()),
            state: StackState::Pending,
            deployed: Some(Deployed {
                commit: SHA.into(),
                message: Some("Bump <script>alert(1)</script> & more".into()),
                fingerprint: "f".into(),
                deployed_at: AT.into(),
            }),
            wanted_commit: Some("b".repeat(40)),
            wanted_fingerprint: Some("g".into()),
            changes: Changes {
                files: vec!["compose.yaml".into()],
                variables: vec!["DB_PASSWORD".into()],
                services: vec!["web".into()],
                ..Changes::default()
            },
            actions: vec![],
            containers: vec![ContainerStatus {
                service: "web".into(),
                name: "app-web-1".into(),
                state: "running".into(),
                health: None,
                image: "nginx:1".into(),
            }],
            drift: vec![],
            pinned: None,
            image_check: None,
            error: None,
        }
    }

    /// The visible text of a page's body: tags dropped, character references left as they are.
    fn text(html: &str) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        let body = html.split_once("<body>").map_or(html, |(_, body)| body);
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    text.push(' ');
                }
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn escape_makes_markup_text() {
        let check = |input: &str, expected: &str| assert_eq!(escape(input).to_string(), expected);
        check("plain text", "plain text");
        check(
            "<script>alert('x')</script>",
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
        );
        check("a \"b\" & c", "a &quot;b&quot; &amp; c");
        check("&amp;", "&amp;amp;");
        check("ünïcode <", "ünïcode &lt;");
        check("", "");
    }

    #[test]
    fn the_overview_shows_stacks_and_deployments_and_escapes_commit_messages() {
        let html = overview_html(
            &[status()],
            &[report(Status::Succeeded)],
            Viewer::default(),
            now(),
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
        expect_test::expect![[r#"stackhook Stacks app pending deployed 3f2a9c1b7d0e Bump &lt;script&gt;alert(1)&lt;/script&gt; &amp; more 5 min ago last: deployed in 1764612000-3 5 min ago changes: files compose.yaml ; services web ; variables DB_PASSWORD containers: 1 running Recent deployments succeeded 1764612000-3 5 min ago · took 4.2 s webhook push by alice &lt;a@x&gt; · 3f2a9c1b7d0e Bump &lt;script&gt;alert(1)&lt;/script&gt; &amp; more app deployed"#]]
            .assert_eq(&text(&html));
        assert!(html.contains("<a class=\"name\" href=\"/stacks/app\">app</a>"));
        assert!(html.contains("href=\"/deployments/1764612000-3\""));
        assert!(html.contains("name=\"viewport\""));
    }

    #[test]
    fn a_deployment_page_shows_plan_reasons_and_log_and_follows_it_only_while_running() {
        let log = "18:00:01 started by webhook push\n18:00:02 app: recreating <web>\n";
        let html = deployment_html(&report(Status::Succeeded), log, Viewer::default(), now());
        assert!(!html.contains("<script"), "no script once it ended: {html}");
        assert!(!html.contains("<web>") && !html.contains("<img"), "{html}");
        expect_test::expect![[r#"stackhook Deployment 1764612000-3 succeeded Started 5 min ago Took 4.2 s Triggered by webhook push by alice &lt;a@x&gt; delivery d-1 : “Bump &quot;it&quot;” Commit 3f2a9c1b7d0e Bump &lt;script&gt;alert(1)&lt;/script&gt; &amp; more on main Before 000000000000 Stacks app deployed changes: files compose.yaml &lt;img src=x&gt;.conf ; services web recreate web: configuration changed Log 18:00:01 started by webhook push 18:00:02 app: recreating &lt;web&gt;"#]]
            .assert_eq(&text(&html));

        let html = deployment_html(&report(Status::Running), log, Viewer::default(), now());
        assert!(
            html.contains(&format!("<script>{SCRIPT}</script>")),
            "{html}"
        );
        assert!(html.contains(
            "<pre id=\"log\" data-follow=\"/api/deployments/1764612000-3/log?follow=true\">"
        ));
        assert!(
            html.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"),
            "without JavaScript the page reloads itself"
        );
        assert!(text(&html).contains("Running for 5 min 0 s"), "{html}");
    }

    #[test]
    fn an_image_update_shows_on_the_overview_and_the_stack_page() {
        let mut updated = status();
        let image = |finding| crate::store::ServiceImage {
            image: "ghcr.io/acme/<api>:2".into(),
            image_id: "sha256:i1".into(),
            finding,
        };
        updated.image_check = Some(crate::store::ImageCheck {
            checked_at: AT.into(),
            services: [
                (
                    "web".to_owned(),
                    image(Finding::UpdateAvailable {
                        running: Some(format!("sha256:{}", "0".repeat(64))),
                        available: format!("sha256:{}", "9f8e".repeat(16)),
                    }),
                ),
                (
                    "worker".to_owned(),
                    image(Finding::Unknown {
                        reason: "the registry has no such tag".into(),
                    }),
                ),
            ]
            .into(),
        });
        let html = overview_html(&[updated.clone()], &[], Viewer::default(), now());
        assert!(!html.contains("<api>"), "escaped: {html}");
        assert!(
            text(&html).contains(
                "image update: web ghcr.io/acme/&lt;api&gt;:2 names sha256:9f8e9f8e9f8e , newer than the image it runs"
            ),
            "{html}"
        );
        assert!(!text(&html).contains("not checked"), "{html}");
        let html = stack_html(&updated, &[], Viewer::default(), false, now());
        assert!(
            text(&html).contains("image of worker not checked: the registry has no such tag"),
            "{html}"
        );
    }

    #[test]
    fn the_buttons_show_only_with_the_token() {
        let mut pending = status();
        pending.actions = report(Status::Succeeded).stacks[0].actions.clone();
        let signed_in = Viewer {
            signed_in: true,
            can_sign_in: true,
        };
        let html = stack_html(&pending, &[], signed_in, true, now());
        assert!(html.contains("action=\"/ui/stacks/app/deploy\""), "{html}");
        assert!(
            html.contains("action=\"/ui/stacks/app/rollback\""),
            "{html}"
        );
        assert!(!html.contains("/ui/stacks/app/unpin"), "not pinned: {html}");
        assert!(text(&html).contains(
            "Dry run What a deployment would do now: recreate web: configuration changed"
        ));
        let mut pinned = pending.clone();
        pinned.pinned = Some(crate::store::Pin {
            commit: crate::repo::CommitId::parse(SHA).unwrap(),
            images: Default::default(),
            deployment: None,
            since: AT.into(),
        });
        let html = stack_html(&pinned, &[], signed_in, false, now());
        assert!(html.contains("action=\"/ui/stacks/app/unpin\""), "{html}");
        assert!(text(&html).contains("pinned at"), "{html}");
        let public = Viewer {
            signed_in: false,
            can_sign_in: true,
        };
        let html = stack_html(&pending, &[], public, false, now());
        assert!(!html.contains("/ui/stacks/"), "{html}");
        assert!(html.contains("href=\"/login?next=/stacks/app\""), "{html}");
        let html = stack_html(&pending, &[], Viewer::default(), false, now());
        assert!(!html.contains("/ui/stacks/") && !html.contains("/login"));
    }

    async fn send(app: &Router, request: Http<Body>) -> Response {
        app.clone().oneshot(request).await.unwrap()
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn form(path: &str, headers: &[(&str, &str)], body: &str) -> Http<Body> {
        let mut request =
            Http::post(path).header("content-type", "application/x-www-form-urlencoded");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> Http<Body> {
        let mut request = Http::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn signing_in_sets_a_strict_http_only_cookie_and_never_shows_the_token() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let sign_in = format!("token={}&next=%2Fstacks%2Fapp", TOKEN.replace(' ', "+"));

        let response = send(&app, form("/login", &[], &sign_in)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], "/stacks/app");
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            "stackhook_token=test%20token; HttpOnly; SameSite=Strict; Path=/"
        );

        let behind_tls = [("x-forwarded-proto", "https")];
        let response = send(&app, form("/login", &behind_tls, &sign_in)).await;
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            "stackhook_token=test%20token; HttpOnly; SameSite=Strict; Path=/; Secure"
        );

        let elsewhere = format!("token={}&next=%2F%2Fevil.example", TOKEN.replace(' ', "+"));
        let response = send(&app, form("/login", &[], &elsewhere)).await;
        assert_eq!(
            response.headers()[header::LOCATION],
            "/",
            "no open redirect"
        );

        let response = send(&app, form("/login", &[], "token=wrong")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        assert!(body(response).await.contains("That is not the API token."));

        let same = [("sec-fetch-site", "same-origin")];
        let response = send(&app, form("/logout", &same, "")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            "stackhook_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    #[tokio::test]
    async fn without_the_token_the_page_is_a_sign_in_form_and_with_the_cookie_it_shows_data() {
        let (state, _dir) = state(&[]);
        let app = router(state);
        let response = send(&app, get("/", &[])).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let html = body(response).await;
        assert!(
            html.contains("<form method=\"post\" action=\"/login\">"),
            "{html}"
        );
        assert!(!html.contains("Recent deployments"));

        let response = send(
            &app,
            get("/", &[("cookie", "stackhook_token=test%20token")]),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            policy.starts_with("default-src 'none'; style-src 'sha256-"),
            "{policy}"
        );
        let html = body(response).await;
        assert!(html.contains("Recent deployments"), "{html}");
        assert!(html.contains("Sign out") && !html.contains(TOKEN), "{html}");

        let response = send(&app, get("/", &[("cookie", "stackhook_token=stale")])).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(body(response).await.contains("not the API token any more"));
    }

    #[tokio::test]
    async fn a_redeploy_from_another_site_is_refused() {
        let (state, _dir) = state(&[("STACKHOOK_PUBLIC_STATUS", "true")]);
        std::fs::create_dir_all(state.stack_dir(&StackName::parse("app").unwrap())).unwrap();
        let app = router(state);
        let path = "/ui/stacks/app/deploy";
        let cookie = ("cookie", "stackhook_token=test%20token");
        for headers in [
            vec![cookie],
            vec![cookie, ("sec-fetch-site", "cross-site")],
            vec![cookie, ("sec-fetch-site", "same-site")],
            vec![
                cookie,
                ("origin", "https://evil.example"),
                ("host", "deploy.example"),
            ],
            vec![cookie, ("origin", "null"), ("host", "deploy.example")],
        ] {
            let response = send(&app, form(path, &headers, "")).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        }
        // Public status lets anyone read, but redeploying wants the token.
        let response = send(&app, form(path, &[("sec-fetch-site", "same-origin")], "")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        for headers in [
            vec![cookie, ("sec-fetch-site", "same-origin")],
            vec![
                cookie,
                ("origin", "http://deploy.example"),
                ("host", "deploy.example"),
            ],
            vec![
                cookie,
                ("origin", "https://deploy.example"),
                ("host", "10.0.0.2:1337"),
                ("x-forwarded-host", "deploy.example"),
            ],
        ] {
            let response = send(&app, form(path, &headers, "")).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{headers:?}");
            let location = response.headers()[header::LOCATION].to_str().unwrap();
            let id = location.strip_prefix("/deployments/").unwrap();
            assert!(History::parse_id(id).is_some(), "{location}");
        }

        // The rollback and unpin buttons follow the same rules.
        for (path, body) in [
            ("/ui/stacks/app/rollback", "to=1700000000-1"),
            ("/ui/stacks/app/unpin", ""),
        ] {
            let cross = vec![cookie, ("sec-fetch-site", "cross-site")];
            let response = send(&app, form(path, &cross, body)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
            let anonymous = [("sec-fetch-site", "same-origin")];
            let response = send(&app, form(path, &anonymous, body)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            let same = vec![cookie, ("sec-fetch-site", "same-origin")];
            let response = send(&app, form(path, &same, body)).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        }
    }
}
