//! Issue 8: the status page, on a real engine and in a real browser (Debian's `chromium`,
//! headless): what a person sees of the stacks, the deployments and a deployment's log, which the
//! page follows while the deployment runs. The overview's phone-sized screenshot is kept in
//! `target/artifacts/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::image::{TestEngine, cli_output, ensure_image};
use crate::support::server::{Harness, SECRET, Server, TOKEN};

const IMAGE: &str = "stackhook-test/busybox:latest";

/// A service that is healthy at once while `gate` is `open`, and otherwise only once
/// `/tmp/ready` exists in its container: the test decides when a deployment ends.
fn gated(gate: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      GATE: \"{gate}\"\n    healthcheck:\n      test: [\"CMD-SHELL\", \"test \\\"$$GATE\\\" = open || test -f /tmp/ready\"]\n      interval: 1s\n      timeout: 5s\n      start_period: 120s\n"
    )
}

/// A signed push by alice of `after`, not waiting: the deployment's id.
async fn push(server: &Server, after: &str) -> String {
    let body = json!({
        "ref": "refs/heads/main",
        "after": after,
        "pusher": { "name": "alice", "email": "alice@example.com" },
        "head_commit": { "id": after, "message": "Bump the app" },
    })
    .to_string();
    let signature =
        stackhook::webhook::sign(&stackhook::config::Secret::new(SECRET), body.as_bytes());
    let (status, answer) = server
        .post(
            "/hooks/github",
            &body,
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "page-1"),
                ("X-Hub-Signature-256", &signature),
            ],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["deployment"].as_str().unwrap().to_owned()
}

/// Waits for deployment `id` to end; its record.
async fn ended(server: &Server, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (status, record) = server.read(&format!("/api/deployments/{id}")).await;
        if status == 200 && record["status"] != "running" {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment {id} did not end: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_person_sees_stacks_deployments_and_a_live_log_in_a_browser(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "page").await;
    h.set("STACKHOOK_PUBLIC_STATUS", "true");
    let app = h.stack("app");
    h.compose("app", &gated("open"));
    h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;

    // A deployment that runs until the test lets its new container become healthy.
    h.compose("app", &gated("closed"));
    let second = h.repo.commit("Bump the app");
    let id = push(&server, &second).await;

    // The browser opens the deployment's page while it runs, through a relay that tells the
    // test when the page has started following the log.
    let relay = Relay::start(server.addr).await;
    let browser = tokio::spawn(dump_dom(format!("http://{}/deployments/{id}", relay.addr)));
    let follow = format!("GET /api/deployments/{id}/log?follow=true ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !relay.saw(&follow) {
        assert!(
            !browser.is_finished(),
            "the browser ended without following the log"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not follow the log: {}",
            relay.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, record) = server.read(&format!("/api/deployments/{id}")).await;
    assert_eq!(record["status"], "running", "{record}");
    let container = format!("{app}-app-1");
    cli_output(engine, &["exec", &container, "touch", "/tmp/ready"]);

    // The page saw the deployment end by itself: the lines written after it was served, and
    // the final status.
    let page = visible_text(&browser.await.unwrap());
    assert!(
        page.contains(&format!("Deployment {id} succeeded")),
        "{page}"
    );
    assert!(
        page.contains(&format!("{app}: recreating {container}")),
        "{page}"
    );
    assert!(page.contains("succeeded in"), "the last log line: {page}");
    assert!(
        page.contains("recreate app: configuration changed"),
        "{page}"
    );
    assert!(page.contains("webhook push by alice"), "{page}");
    assert_eq!(ended(&server, &id).await["status"], "succeeded");

    // The overview: the stack, its state and deployed commit, the deployment in the list.
    let url = server.url("/");
    let overview = visible_text(&dump_dom(url.clone()).await);
    let short = &second[..12];
    assert!(
        overview.contains(&format!("{app} up to date deployed {short} Bump the app")),
        "{overview}"
    );
    assert!(overview.contains(&format!("succeeded {id} ")), "{overview}");
    assert!(
        overview.contains(&format!("webhook push by alice · {short} Bump the app")),
        "{overview}"
    );
    assert!(overview.contains("containers: 1 running"), "{overview}");

    let artifact = artifacts().join(format!("status-page-{}.png", engine.name()));
    screenshot(&url, &artifact).await;
    let png = std::fs::read(&artifact).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is no screenshot of a page",
        artifact.display()
    );

    server.stop().await;
    h.cleanup().await;
}

async fn without_the_token_the_page_asks_for_it_and_the_cookie_opens_it(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "pagetoken").await;
    let app = h.stack("app");
    h.compose("app", &gated("open"));
    let commit = h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\" action=\"/login\">"),
        "{html}"
    );
    assert!(!html.contains(&app), "no data without the token: {html}");

    let response = client
        .post(server.url("/login"))
        .form(&[("token", TOKEN), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();

    let response = client
        .get(server.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = visible_text(&response.text().await.unwrap());
    assert!(
        page.contains(&format!("{app} up to date deployed {}", &commit[..12])),
        "{page}"
    );
    assert!(!page.contains(TOKEN), "{page}");

    // The redeploy button, as the browser posts it.
    let response = client
        .post(server.url(&format!("/ui/stacks/{app}/deploy")))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location.strip_prefix("/deployments/").unwrap();
    let record = ended(&server, id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["triggers"][0]["kind"], "api", "{record}");
    assert_eq!(record["stacks"][0]["stack"], json!(app), "{record}");
    let response = client
        .get(server.url(&location))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let page = visible_text(&response.text().await.unwrap());
    assert!(
        page.contains(&format!("Deployment {id} succeeded")),
        "{page}"
    );

    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    a_person_sees_stacks_deployments_and_a_live_log_in_a_browser,
    without_the_token_the_page_asks_for_it_and_the_cookie_opens_it,
);

/// `target/artifacts/` of the repository, where test runs leave what a person may look at.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium, as `scripts/engines.sh browser` installs it, with a profile of its own.
async fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new("chromium");
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .kill_on_drop(true);
    let output = command.output();
    let output = match tokio::time::timeout(Duration::from_secs(240), output).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "chromium is not installed: run scripts/engines.sh browser (scripts/test.sh does)"
        ),
        Ok(Err(error)) => panic!("running chromium: {error}"),
        Err(_) => panic!("chromium {args:?} did not finish within 240 s"),
    };
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The page's DOM once its scripts have run.
async fn dump_dom(url: String) -> String {
    chromium(&["--dump-dom", &url]).await
}

/// The page as a phone (412 × 915 CSS pixels) shows it.
async fn screenshot(url: &str, file: &Path) {
    let _ = std::fs::remove_file(file);
    let target = format!("--screenshot={}", file.display());
    chromium(&["--window-size=412,915", &target, url]).await;
}

/// What a person reads in a page's body: tags dropped, entities of the page's texts decoded,
/// whitespace collapsed.
fn visible_text(html: &str) -> String {
    let body = html.split_once("<body>").map_or(html, |(_, body)| body);
    let mut text = String::new();
    let mut in_tag = false;
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
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TCP relay in front of the server that keeps what clients sent, so that a test knows what
/// the browser asked for and when.
struct Relay {
    addr: SocketAddr,
    sent: Arc<Mutex<String>>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(String::new()));
        let record = Arc::clone(&sent);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(server).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = upstream.into_split();
                    let requests = async {
                        let mut buffer = [0; 8192];
                        loop {
                            let n = from_client.read(&mut buffer).await?;
                            if n == 0 {
                                return to_server.shutdown().await;
                            }
                            record
                                .lock()
                                .unwrap()
                                .push_str(&String::from_utf8_lossy(&buffer[..n]));
                            to_server.write_all(&buffer[..n]).await?;
                        }
                    };
                    let answers = tokio::io::copy(&mut from_server, &mut to_client);
                    let _ = tokio::join!(requests, answers);
                });
            }
        });
        Relay { addr, sent }
    }

    fn saw(&self, text: &str) -> bool {
        self.sent.lock().unwrap().contains(text)
    }

    fn requests(&self) -> String {
        let sent = self.sent.lock().unwrap();
        sent.lines()
            .filter(|line| line.starts_with("GET ") || line.starts_with("POST "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
