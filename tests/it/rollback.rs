//! Issue 10, "Rollback": a stack goes back to an older commit, or to what a deployment left
//! (the image it ran included), and stays pinned there through pushes until it is unpinned.

use serde_json::{Value, json};

use crate::support::image::{TestEngine, cli_output, import_version};
use crate::support::server::{Harness, Server, TOKEN};

/// Each test has an image of its own: the tests run at once, and some retag theirs.
const IMAGE: &str = "stackhook-test/rollback:latest";
const AUTO_IMAGE: &str = "stackhook-test/autorollback:latest";
const DRIFT_IMAGE: &str = "stackhook-test/drift:latest";

fn stack(marker: &str) -> String {
    stack_on(IMAGE, marker)
}

fn stack_on(image: &str, marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {image}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n"
    )
}

/// The running container's `MARKER` and the `version` label of its image.
async fn running(h: &Harness) -> (String, String) {
    let containers = h.containers("app").await;
    let id = &containers["app"].id;
    let marker = cli_output(
        h.engine,
        &[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            id,
        ],
    )
    .lines()
    .find_map(|line| line.strip_prefix("MARKER=").map(str::to_owned))
    .unwrap_or_default();
    let version = cli_output(
        h.engine,
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"version\"}}",
            id,
        ],
    );
    (marker, version.trim().to_owned())
}

async fn post(server: &Server, path: &str) -> (u16, Value) {
    server
        .post(path, "", &[("Authorization", &format!("Bearer {TOKEN}"))])
        .await
}

async fn push(server: &Server) {
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
}

async fn a_stack_rolls_back_stays_pinned_and_is_released(engine: TestEngine) {
    let mut h = Harness::new(engine, "rollback").await;
    h.set("STACKHOOK_PUBLIC_STATUS", "true");
    let app = h.stack("app");
    import_version(engine, IMAGE, "1");
    h.compose("app", &stack("1"));
    let first = h.repo.commit("one");
    let server = h.start().await;
    server.settled().await;
    let (_, list) = server.read("/api/deployments").await;
    let first_deployment = list[0]["deployment"].as_str().unwrap().to_owned();
    assert_eq!(running(&h).await, ("1".into(), "1".into()));

    // A new image under the same tag, and a new commit.
    import_version(engine, IMAGE, "2");
    h.compose("app", &stack("2"));
    h.repo.commit("two");
    push(&server).await;
    assert_eq!(running(&h).await, ("2".into(), "2".into()));

    // Back to the first deployment: its commit and the image it ran, which the tag no longer
    // names.
    let (status, report) = post(
        &server,
        &format!("/stacks/{app}/rollback?to={first_deployment}&wait=true"),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stacks"][0]["outcome"], "deployed", "{report}");
    assert_eq!(running(&h).await, ("1".into(), "1".into()));
    let (_, status) = server.read(&format!("/api/stacks/{app}")).await;
    assert_eq!(status["pinned"]["commit"], json!(first), "{status}");
    assert_eq!(status["pinned"]["deployment"], json!(first_deployment));
    assert_eq!(status["state"], "up_to_date", "{status}");

    // A push does not move a pinned stack.
    h.compose("app", &stack("3"));
    let third = h.repo.commit("three");
    push(&server).await;
    assert_eq!(running(&h).await, ("1".into(), "1".into()));

    // Unpinned, it follows the branch again.
    let (status, report) = post(&server, &format!("/stacks/{app}/unpin?wait=true")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(running(&h).await, ("3".into(), "2".into()));
    let (_, status) = server.read(&format!("/api/stacks/{app}")).await;
    assert!(status.get("pinned").is_none(), "{status}");
    assert_eq!(status["deployed"]["commit"], json!(third));

    // Refused: a commit that does not exist, and a signature instead of the token.
    let (status, report) = post(
        &server,
        &format!("/stacks/{app}/rollback?to=0000beef&wait=true"),
    )
    .await;
    assert_eq!(status, 500, "{report}");
    assert!(
        report["failures"][0]
            .as_str()
            .unwrap()
            .contains("no commit \"0000beef\""),
        "{report}"
    );
    assert_eq!(running(&h).await, ("3".into(), "2".into()), "nothing moved");
    let (status, _) = server
        .github(
            &format!("/stacks/{app}/rollback?to={first}"),
            "release",
            "{}",
        )
        .await;
    assert_eq!(status, 401);
    server.stop().await;

    // The CLI rolls back to a commit and shows the pin.
    let output = h
        .stackhook(&["rollback", &app, "--to", &first[..10]])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(running(&h).await.0, "1");
    let output = h.stackhook(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("pinned at {}", &first[..12])),
        "{text}"
    );
    let output = h.stackhook(&["unpin", &app]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(running(&h).await.0, "3");
    h.cleanup().await;
}

/// `STACKHOOK_AUTO_ROLLBACK=true`: a deployment that fails its health gate takes the whole
/// stack back to its last good commit, not only the service that failed.
async fn a_failed_deployment_rolls_the_stack_back_to_its_last_good_commit(engine: TestEngine) {
    let mut h = Harness::new(engine, "autorollback").await;
    h.set("STACKHOOK_AUTO_ROLLBACK", "true");
    import_version(engine, AUTO_IMAGE, "1");
    let stack = |marker: &str, check: &str| {
        format!(
            "services:\n  web:\n    image: {AUTO_IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n  app:\n    image: {AUTO_IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    depends_on: [web]\n    healthcheck:\n      test: [\"CMD\", \"{check}\"]\n      interval: 1s\n      timeout: 1s\n      retries: 2\n"
        )
    };
    h.compose("app", &stack("1", "true"));
    let good = h.repo.commit("good");
    let server = h.start().await;
    assert_eq!(server.settled().await["last_deployment"]["succeeded"], true);

    // web changes fine; app never gets healthy.
    h.compose("app", &stack("2", "false"));
    h.repo.commit("bad");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    let stack_report = &report["report"]["stacks"][0];
    assert_eq!(stack_report["outcome"], "failed", "{report}");
    assert_eq!(stack_report["rolled_back_to"], json!(good), "{report}");
    let containers = h.containers("app").await;
    let web = &containers["web"].id;
    let env = cli_output(
        engine,
        &[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            web,
        ],
    );
    assert!(env.lines().any(|l| l == "MARKER=1"), "web is back: {env}");
    assert_eq!(
        containers["app"].state,
        stackhook::engine::State::Running,
        "app runs its last good configuration"
    );
    let (_, stacks) = server
        .read(&format!("/api/stacks/{}", h.stack("app")))
        .await;
    assert_eq!(stacks["deployed"]["commit"], json!(good), "{stacks}");
    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    a_stack_rolls_back_stays_pinned_and_is_released,
    a_failed_deployment_rolls_the_stack_back_to_its_last_good_commit,
    drift_is_reported_and_healed
);

/// Issue 10, "Drift": a container stopped or removed by hand is noticed within seconds from the
/// engine's events, reported in the API and metrics, and, with `STACKHOOK_HEAL=true`, put back.
async fn drift_is_reported_and_healed(engine: TestEngine) {
    let mut h = Harness::new(engine, "drift").await;
    import_version(engine, DRIFT_IMAGE, "1");
    h.compose("app", &stack_on(DRIFT_IMAGE, "1"));
    h.repo.commit("one");
    let app = h.stack("app");
    let server = h.start().await;
    server.settled().await;

    // Stopped by hand: reported, not healed.
    let id = h.containers("app").await["app"].id.clone();
    cli_output(engine, &["stop", "-t", "1", &id]);
    let status = until(&server, &app, |s| s["state"] == "drifted").await;
    assert_eq!(status["drift"][0]["kind"], "start", "{status}");
    assert_eq!(
        status["drift"][0]["reason"], "container is exited",
        "{status}"
    );
    let (_, metrics) = server.read("/metrics").await;
    let drifted = format!(r#"stackhook_stack_drifted{{stack="{app}"}} 1"#);
    assert!(
        metrics.as_str().unwrap().lines().any(|l| l == drifted),
        "{metrics}"
    );
    assert_ne!(
        h.containers("app").await["app"].state,
        stackhook::engine::State::Running,
        "without STACKHOOK_HEAL nothing is put back"
    );
    server.stop().await;

    // With healing, a stopped or removed container comes back by itself: the one stopped
    // while no server ran as soon as a server follows the events again.
    h.set("STACKHOOK_HEAL", "true");
    let server = h.start().await;
    healed(&h, None).await;
    let id = h.containers("app").await["app"].id.clone();
    cli_output(engine, &["rm", "-f", &id]);
    healed(&h, Some(&id)).await;
    let healed = until(&server, &app, |s| s["state"] == "up_to_date").await;
    assert!(healed.get("drift").is_none(), "{healed}");
    let (_, list) = server.read("/api/deployments?limit=5").await;
    let kinds: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["triggers"][0]["kind"])
        .collect();
    assert!(kinds.contains(&&json!("heal")), "{list}");
    server.stop().await;
    h.cleanup().await;
}

/// Waits until the stack's container runs, and is not `old`.
async fn healed(h: &Harness, old: Option<&str>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let containers = h.containers("app").await;
        if containers.get("app").is_some_and(|c| {
            Some(c.id.as_str()) != old && c.state == stackhook::engine::State::Running
        }) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healed: {containers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls `/api/stacks` until `stack` meets `condition`; returns its status.
async fn until(server: &Server, stack: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, stacks) = server.read("/api/stacks").await;
        if let Some(status) = stacks
            .as_array()
            .and_then(|all| all.iter().find(|s| s["stack"] == json!(stack)))
            && condition(status)
        {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stack} never got there: {stacks}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
