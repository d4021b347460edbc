//! stackhook updating itself A/B on the real Docker engine (issue 4): the local image runs in two
//! slots of its own stack, behind HAProxy from `deploy/haproxy.cfg`, and a push that changes the
//! stack's image hands over from one slot to the other while a client keeps sending signed
//! webhooks and status requests through the proxy.
//!
//! Docker only: Podman runs no healthchecks without systemd (FIELD-NOTES), and the self stack's
//! slots run the image built by `compose/build-image.sh`, which these tests build with Docker.

use crate::support::{root, tool};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackhook::config::Secret;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::repo::EnvRepo;
use crate::support::server::SECRET;

const DOCKER_HOST: &str = "unix:///var/run/docker.sock";
const SELF_IMAGE: &str = "stackhook-test/self";
const BUSYBOX: &str = "stackhook-test/busybox:latest";
/// An image whose process says why it cannot serve and exits.
const BROKEN_IMAGE: &str = "stackhook-test/self:broken";

/// The self stack as a test runs it: compose/compose.yaml's two slots, with the image from the
/// stack's `.env`, loopback ports, a short healthcheck and drain, and the state directory and the
/// repository mounted at their host paths.
const COMPOSE: &str = r#"x-slot: &slot
  image: ${SELF_IMAGE}
  command: ["serve"]
  init: true
  restart: unless-stopped
  volumes:
    - /var/run/docker.sock:/var/run/docker.sock
    - @STATE@:@STATE@
    - @REPO@:@REPO@:ro
  healthcheck:
    test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:1337/ready"]
    interval: 500ms
    timeout: 2s
    retries: 3
    start_period: 5s

x-environment: &environment
  STACKHOOK_REPO: @REPO@
  STACKHOOK_BRANCH: main
  STACKHOOK_STATE_DIR: @STATE@
  STACKHOOK_SELF_STACK: @STACK@
  STACKHOOK_WEBHOOK_SECRET: "@SECRET@"
  STACKHOOK_DRAIN: 2s
  STACKHOOK_LOG: info

services:
  stackhook-a:
    <<: *slot
    environment:
      <<: *environment
      STACKHOOK_SLOT: A
      STACKHOOK_PEER_URL: http://stackhook-b:1337
    ports:
      - "127.0.0.1:@PORT_A@:1337"
  stackhook-b:
    <<: *slot
    environment:
      <<: *environment
      STACKHOOK_SLOT: B
      STACKHOOK_PEER_URL: http://stackhook-a:1337
    ports:
      - "127.0.0.1:@PORT_B@:1337"
"#;

/// A → B on a new image tag, then B → A on another, while a client sends a request through the
/// proxy every 20 ms: not one of them may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_update_switches_slots_without_a_failed_request() {
    let images = self_images();
    let stack = SelfStack::start("abswitch", &images[0]).await;

    let mut from = "A";
    for (image, to) in [(&images[1], "B"), (&images[2], "A")] {
        let client = Stream::start(stack.proxy_url());
        // Some traffic before the change, so the stream covers the whole switch.
        client.wait_for_requests(25).await;

        stack.set_image(image);
        let pushed = Instant::now();
        let (status, body) = stack.push().await;
        let answered = pushed.elapsed();
        assert_eq!(
            status, 200,
            "the push that changes the self stack: {body:#}"
        );
        let stack_report = body["stacks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["stack"] == stack.name.as_str()))
            .unwrap_or_else(|| panic!("the report names the self stack: {body:#}"));
        assert_eq!(stack_report["outcome"], "deployed", "{body:#}");

        stack.wait_for_switch(from, to).await;
        let switched = pushed.elapsed();
        assert_eq!(
            stack.exit_code(&from.to_lowercase()).await.as_deref(),
            Some("0"),
            "slot {from} ends cleanly when the engine stops it, not killed after the grace period"
        );
        // Keep the stream going for a while after the old slot stopped.
        client.wait_for_requests(client.sent() + 100).await;
        let tally = client.stop().await;
        eprintln!(
            "switch {from} → {to}: push answered after {answered:?}, slot {from} stopped after \
             {switched:?}; {} requests through the proxy, {} failed",
            tally.sent,
            tally.failures.len()
        );
        assert!(
            tally.failures.is_empty(),
            "{} of {} requests through the proxy failed during the switch {from} → {to}:\n{}",
            tally.failures.len(),
            tally.sent,
            tally.failures.join("\n")
        );
        let (status, health) = stack.proxy_health().await;
        assert_eq!(status, 200, "{health:#}");
        assert_eq!(health["slot"], to, "{health:#}");
        assert_eq!(health["status"], "active", "{health:#}");
        from = to;
    }
}

/// A self image that cannot serve never takes over: the push fails with the new slot's output,
/// the broken container is removed and slot A goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_self_image_leaves_the_active_slot_serving() {
    let images = self_images();
    let broken = broken_image();
    let stack = SelfStack::start("broken", &images[0]).await;
    let client = Stream::start(stack.proxy_url());
    client.wait_for_requests(25).await;

    stack.set_image(broken);
    let (status, body) = stack.push().await;
    assert_eq!(status, 500, "{body:#}");
    let failures = body["failures"].to_string();
    assert!(
        failures.contains("stackhook-b") && !failures.contains("this image cannot serve"),
        "the failure names the new slot's service; its output goes to the server log, not into \
         the response: {body:#}"
    );
    assert_eq!(stack.marker(), None, "no handover was recorded");
    assert_eq!(
        stack.container_state("b").await,
        None,
        "the broken slot B is removed"
    );
    assert_eq!(stack.container_state("a").await.as_deref(), Some("running"));

    client.wait_for_requests(client.sent() + 50).await;
    let tally = client.stop().await;
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests through the proxy failed:\n{}",
        tally.failures.len(),
        tally.sent,
        tally.failures.join("\n")
    );
    let (status, health) = stack.proxy_health().await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["slot"], "A", "{health:#}");
    assert_eq!(health["last_deployment"]["succeeded"], false, "{health:#}");
}

/// After a handover to B, both containers restarted (as by a host reboot) come back with exactly
/// one active slot, the one the marker names.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_restart_of_both_slots_only_the_recorded_one_is_active() {
    let images = self_images();
    let stack = SelfStack::start("restart", &images[0]).await;
    stack.set_image(&images[1]);
    let (status, body) = stack.push().await;
    assert_eq!(status, 200, "{body:#}");
    stack.wait_for_switch("A", "B").await;

    // B first, then A, which was stopped after it handed over.
    for slot in ["b", "a"] {
        let output = docker(&["restart", "--time", "5", &stack.container(slot)]).await;
        assert!(
            output.status.success(),
            "docker restart {}: {}",
            stack.container(slot),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = stack.direct_health("A").await;
        let b = stack.direct_health("B").await;
        if let (Some((a_status, a_body)), Some((b_status, b_body))) = (&a, &b) {
            assert_ne!(
                *a_status, 200,
                "slot A answers /health 200 after the restart: {a_body}"
            );
            if *b_status == 200 {
                assert_eq!(a_body["status"], "standby", "{a_body:#}");
                assert_eq!(b_body["status"], "active", "{b_body:#}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: slot A {a:?}, slot B {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.marker().as_deref(), Some("B"));
    let (status, health) = stack.proxy_health().await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["slot"], "B", "{health:#}");
}

/// One test's self stack, its repository and state directory, and the proxy in front of it.
/// Dropping it removes the containers, the network and the proxy, and prints their logs when the
/// test failed.
struct SelfStack {
    name: String,
    repo: EnvRepo,
    state: tempfile::TempDir,
    ports: [u16; 2],
    proxy_port: u16,
    proxy: Option<Child>,
    proxy_log: PathBuf,
    client: reqwest::Client,
}

impl SelfStack {
    /// Commits the self stack on `image`, bootstraps it with `stackhook deploy` on the host, as a
    /// user does, starts HAProxy and waits until slot A answers through it.
    async fn start(test: &str, image: &str) -> SelfStack {
        let name = format!("t{}{test}", std::process::id() % 10_000);
        let repo = EnvRepo::new();
        let state = tempfile::tempdir().unwrap();
        let [port_a, port_b, proxy_port] = free_ports();
        let compose = COMPOSE
            .replace("@STATE@", &state.path().display().to_string())
            .replace("@REPO@", &repo.path().display().to_string())
            .replace("@STACK@", &name)
            .replace("@SECRET@", SECRET)
            .replace("@PORT_A@", &port_a.to_string())
            .replace("@PORT_B@", &port_b.to_string());
        repo.write(&format!("services/{name}/compose.yaml"), &compose);
        repo.write(
            &format!("services/{name}/.env"),
            &format!("SELF_IMAGE={image}\n"),
        );
        repo.commit("the self stack");
        let proxy_log = state.path().join("haproxy.log");
        let mut stack = SelfStack {
            name,
            repo,
            state,
            ports: [port_a, port_b],
            proxy_port,
            proxy: None,
            proxy_log,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };

        let mut deploy = tokio::process::Command::new(env!("CARGO_BIN_EXE_stackhook"));
        deploy.arg("deploy");
        for (variable, _) in std::env::vars() {
            if variable.starts_with("STACKHOOK_") {
                deploy.env_remove(variable);
            }
        }
        deploy
            .env("STACKHOOK_REPO", stack.repo.path())
            .env("STACKHOOK_STATE_DIR", stack.state.path())
            .env("STACKHOOK_SELF_STACK", &stack.name)
            .env("DOCKER_HOST", DOCKER_HOST);
        let output = deploy.output().await.unwrap();
        assert!(
            output.status.success(),
            "bootstrapping the self stack with `stackhook deploy` failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let log = std::fs::File::create(&stack.proxy_log).unwrap();
        let child = tool("haproxy")
            .args(["-db", "-f"])
            .arg(root().join("deploy/haproxy.cfg"))
            .env("STACKHOOK_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env("STACKHOOK_SLOT_A", format!("127.0.0.1:{port_a}"))
            .env("STACKHOOK_SLOT_B", format!("127.0.0.1:{port_b}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting haproxy: {e}; run scripts/proxies.sh"));
        stack.proxy = Some(child);

        // Slot A is active (no marker), has finished the pass it runs at start, and the proxy
        // sends traffic to it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = stack.try_proxy_health().await;
            if let Some((200, body)) = &health
                && body["slot"] == "A"
                && !body["last_deployment"].is_null()
                && body["deploying"] == false
            {
                assert_eq!(body["last_deployment"]["succeeded"], true, "{body:#}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot A did not answer /health through the proxy: {health:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stack.marker(), None);
        stack
    }

    fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    fn container(&self, slot: &str) -> String {
        format!("{}-stackhook-{slot}-1", self.name)
    }

    /// Commits a new `.env` for the self stack: a new image is a new configuration.
    fn set_image(&self, image: &str) {
        self.repo.write(
            &format!("services/{}/.env", self.name),
            &format!("SELF_IMAGE={image}\n"),
        );
        self.repo.commit(&format!("self stack on {image}"));
    }

    /// A signed push of the tracked branch through the proxy, waiting for the deployment.
    async fn push(&self) -> (u16, Value) {
        let body = serde_json::json!({ "ref": "refs/heads/main", "after": "0" }).to_string();
        let response = signed(
            &self.client,
            &format!("{}/hooks/github?wait=true", self.proxy_url()),
            "push",
            &body,
        )
        .send()
        .await
        .unwrap();
        parts(response).await.unwrap()
    }

    /// The slot the marker in the state directory names, if there is a marker.
    fn marker(&self) -> Option<String> {
        std::fs::read_to_string(self.state.path().join("active-slot"))
            .ok()
            .map(|text| text.trim().to_owned())
    }

    /// `docker inspect --format <format>` of one slot's container; None when there is none.
    async fn inspect(&self, slot: &str, format: &str) -> Option<String> {
        let output = docker(&["inspect", "--format", format, &self.container(slot)]).await;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// `running`, `exited`, …, or None when there is no such container.
    async fn container_state(&self, slot: &str) -> Option<String> {
        self.inspect(slot, "{{.State.Status}}").await
    }

    async fn exit_code(&self, slot: &str) -> Option<String> {
        self.inspect(slot, "{{.State.ExitCode}}").await
    }

    async fn container_health(&self, slot: &str) -> Option<String> {
        self.inspect(slot, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")
            .await
    }

    /// Waits until the marker names `to`, slot `from`'s container has stopped and `to`'s is
    /// healthy.
    async fn wait_for_switch(&self, from: &str, to: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let (from_container, to_container) = (from.to_lowercase(), to.to_lowercase());
        loop {
            let marker = self.marker();
            let old = self.container_state(&from_container).await;
            let new = self.container_health(&to_container).await;
            if marker.as_deref() == Some(to)
                && old.as_deref() == Some("exited")
                && new.as_deref() == Some("healthy")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no switch {from} → {to}: marker {marker:?}, slot {from} {old:?}, slot {to} {new:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_proxy_health(&self) -> Option<(u16, Value)> {
        let response = self
            .client
            .get(format!("{}/health", self.proxy_url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        parts(response).await.ok()
    }

    async fn proxy_health(&self) -> (u16, Value) {
        self.try_proxy_health()
            .await
            .expect("/health through the proxy")
    }

    /// `/health` of one slot, bypassing the proxy.
    async fn direct_health(&self, slot: &str) -> Option<(u16, Value)> {
        let port = if slot == "A" {
            self.ports[0]
        } else {
            self.ports[1]
        };
        let response = self
            .client
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        parts(response).await.ok()
    }
}

impl Drop for SelfStack {
    fn drop(&mut self) {
        let docker = |arguments: &[&str]| {
            Command::new("docker")
                .args(arguments)
                .env("DOCKER_HOST", DOCKER_HOST)
                .output()
        };
        if std::thread::panicking() {
            for slot in ["a", "b"] {
                if let Ok(output) = docker(&["logs", "--tail", "60", &self.container(slot)]) {
                    eprintln!(
                        "--- {} ---\n{}{}",
                        self.container(slot),
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        // Shown with --nocapture, or when the test failed: what the proxy saw of the switch.
        if let Ok(log) = std::fs::read_to_string(&self.proxy_log) {
            eprintln!("--- haproxy: server changes, and requests not answered 200 at once ---");
            for line in log.lines().filter(|line| !plain_success(line)) {
                eprintln!("{line}");
            }
        }
        if let Some(mut proxy) = self.proxy.take() {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
        let label = format!("label=com.docker.compose.project={}", self.name);
        if let Ok(output) = docker(&["ps", "-aq", "--filter", &label]) {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = docker(&["rm", "-f", "-v", id]);
            }
        }
        let _ = docker(&["network", "rm", &format!("{}_default", self.name)]);
    }
}

/// A client that sends one request through the proxy every 20 ms, in turn a signed `ping`, a
/// signed push of a branch stackhook does not follow and `GET /health`, and records every answer
/// that is not a 2xx.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Tally>,
}

struct Tally {
    sent: usize,
    failures: Vec<String>,
}

impl Stream {
    fn start(proxy: String) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let started = Instant::now();
                let mut failures = Vec::new();
                let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
                let other = r#"{"ref":"refs/heads/elsewhere","after":"0"}"#;
                let mut round = 0;
                // Bounded, so that a test that never stops it does not run forever.
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                    let hook = format!("{proxy}/hooks/github");
                    let (what, request) = match round % 3 {
                        0 => ("ping", signed(&client, &hook, "ping", ping)),
                        1 => ("push elsewhere", signed(&client, &hook, "push", other)),
                        _ => ("GET /health", client.get(format!("{proxy}/health"))),
                    };
                    let at = started.elapsed();
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {}
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            failures.push(format!("{at:.2?} {what}: {status} {body}"));
                        }
                        Err(error) => failures.push(format!("{at:.2?} {what}: {error:#}")),
                    }
                    round += 1;
                    sent.store(round, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Tally {
                    sent: round,
                    failures,
                }
            }
        });
        Stream { stop, sent, task }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    async fn wait_for_requests(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent() < count {
            assert!(
                !self.task.is_finished() && Instant::now() < deadline,
                "the client sent {} of {count} requests",
                self.sent()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// An HAProxy log line of a request answered 200 by the first server tried.
fn plain_success(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let retries = fields.get(10).and_then(|f| f.split('/').nth(4));
    fields.get(5) == Some(&"200") && retries == Some("0")
}

/// A GitHub delivery signed with the test secret.
fn signed(client: &reqwest::Client, url: &str, event: &str, body: &str) -> reqwest::RequestBuilder {
    let signature = stackhook::webhook::sign(&Secret::new(SECRET), body.as_bytes());
    client
        .post(url)
        .header("X-GitHub-Event", event)
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
}

async fn parts(response: reqwest::Response) -> reqwest::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

/// The self image, built once per test run with `compose/build-image.sh` and tagged `:1`, `:2`
/// and `:3`: three configurations of the self stack.
pub(crate) fn self_images() -> [String; 3] {
    static BUILT: OnceLock<()> = OnceLock::new();
    let tags = ["1", "2", "3"].map(|tag| format!("{SELF_IMAGE}:{tag}"));
    BUILT.get_or_init(|| {
        let output = Command::new(root().join("compose/build-image.sh"))
            .arg(&tags[0])
            .current_dir(root())
            .env("DOCKER_HOST", DOCKER_HOST)
            .output()
            .expect("running compose/build-image.sh");
        assert!(
            output.status.success(),
            "compose/build-image.sh {} failed:\n{}",
            tags[0],
            String::from_utf8_lossy(&output.stderr)
        );
        for tag in &tags[1..] {
            docker_blocking(&["tag", &tags[0], tag]);
        }
    });
    tags
}

/// An image that prints why it cannot serve and exits, from the busybox test image.
fn broken_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_image(TestEngine::Docker, BUSYBOX);
        let context = tempfile::tempdir().unwrap();
        std::fs::write(
            context.path().join("Containerfile"),
            format!(
                "FROM {BUSYBOX}\nENTRYPOINT [\"/bin/sh\", \"-c\", \"echo this image cannot serve $0 >&2; exit 3\"]\n"
            ),
        )
        .unwrap();
        let context = context.path().display().to_string();
        docker_blocking(&[
            "build",
            "--quiet",
            "--tag",
            BROKEN_IMAGE,
            "--file",
            &format!("{context}/Containerfile"),
            &context,
        ]);
    });
    BROKEN_IMAGE
}

/// Three loopback ports that were free a moment ago. They come from below the kernel's ephemeral
/// range (32768 and up), because a port the kernel handed out for `:0` is soon handed out again
/// for some outgoing connection of a test running alongside, and the proxy then cannot bind it.
fn free_ports() -> [u16; 3] {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 4_000) as u16 * 3;
    let mut ports = Vec::with_capacity(3);
    while ports.len() < 3 {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_000;
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    [ports[0], ports[1], ports[2]]
}

async fn docker(arguments: &[&str]) -> std::process::Output {
    tokio::process::Command::new("docker")
        .args(arguments)
        .env("DOCKER_HOST", DOCKER_HOST)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("docker is needed: run scripts/engines.sh docker (as root)")
}

fn docker_blocking(arguments: &[&str]) {
    let output = Command::new("docker")
        .args(arguments)
        .env("DOCKER_HOST", DOCKER_HOST)
        .output()
        .expect("docker is needed: run scripts/engines.sh docker (as root)");
    assert!(
        output.status.success(),
        "docker {} failed:\n{}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
