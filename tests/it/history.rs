//! Issue 8: the deployment history and the read API, on a real engine: what was deployed, when,
//! by whom and why, kept across restarts; stacks as they are now; a deployment's log, whole and
//! live.

use serde_json::{Value, json};

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::{Harness, SECRET};

const IMAGE: &str = "stackhook-test/busybox:latest";

fn sleeper(marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n"
    )
}

/// A signed push by alice, with a delivery id, waiting for the deployment.
async fn push(server: &crate::support::server::Server, delivery: &str, after: &str) -> Value {
    let body = json!({
        "ref": "refs/heads/main",
        "after": after,
        "pusher": { "name": "alice", "email": "alice@example.com" },
        "head_commit": { "id": after, "message": "Bump the app\n\nBecause." },
    })
    .to_string();
    let signature =
        stackhook::webhook::sign(&stackhook::config::Secret::new(SECRET), body.as_bytes());
    let (status, report) = server
        .post(
            "/hooks/github?wait=true",
            &body,
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &signature),
            ],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

async fn history_says_what_was_deployed_when_by_whom_and_why(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "history").await;
    let app = h.stack("app");
    h.compose("app", &sleeper("1"));
    h.repo
        .write(&format!("services/{app}/README.md"), "notes\n");
    let first = h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;

    h.compose("app", &sleeper("2"));
    let second = h.repo.commit("Bump the app");
    let answer = push(&server, "delivery-1", &second).await;
    let id = answer["deployment"].as_str().unwrap().to_owned();
    let stack = &answer["stacks"][0];
    assert_eq!(
        stack["changes"]["files"],
        json!(["compose.yaml"]),
        "{answer}"
    );
    assert_eq!(stack["changes"]["services"], json!(["app"]), "{answer}");
    assert_eq!(stack["changes"]["since"], json!(first), "{answer}");

    // The list: newest first, with the trigger, the commits and the outcome.
    let (status, list) = server.read("/api/deployments").await;
    assert_eq!(status, 200, "{list}");
    let newest = &list[0];
    assert_eq!(newest["deployment"], json!(id), "{list}");
    assert_eq!(newest["status"], "succeeded");
    assert_eq!(newest["commit"], json!(second));
    assert_eq!(newest["previous_commit"], json!(first));
    assert_eq!(newest["message"], "Bump the app");
    let trigger = &newest["triggers"][0];
    assert_eq!(trigger["kind"], "webhook", "{newest}");
    assert_eq!(trigger["delivery"], "delivery-1");
    assert_eq!(trigger["pusher"], "alice");
    assert_eq!(trigger["message"], "Bump the app\n\nBecause.");
    assert_eq!(newest["stacks"][0]["outcome"], "deployed");
    assert!(
        newest["stacks"][0].get("log").is_none(),
        "the list leaves logs out"
    );
    assert!(newest["duration_ms"].as_u64().is_some(), "{newest}");
    assert_eq!(list[1]["triggers"][0]["kind"], "start", "{list}");
    let (_, filtered) = server
        .read(&format!("/api/deployments?stack={app}&limit=1"))
        .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1, "{filtered}");

    // One deployment, whole, and its log as text and as a finished live stream.
    let (status, whole) = server.read(&format!("/api/deployments/{id}")).await;
    assert_eq!(status, 200, "{whole}");
    let actions = &whole["stacks"][0]["actions"][0];
    assert_eq!(actions["kind"], "recreate", "{whole}");
    assert_eq!(actions["reason"], "configuration changed");
    let (status, log) = server.read(&format!("/api/deployments/{id}/log")).await;
    assert_eq!(status, 200);
    let log = log.as_str().unwrap().to_owned();
    assert!(
        log.contains("started by webhook push (delivery delivery-1) by alice"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{app}: recreating {app}-app-1")),
        "{log}"
    );
    assert!(log.contains("succeeded in"), "{log}");
    let stream = server
        .client
        .get(server.url(&format!("/api/deployments/{id}/log")))
        .bearer_auth(crate::support::server::TOKEN)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = stream.text().await.unwrap();
    assert!(events.contains("event: line\ndata: "), "{events}");
    assert!(
        events.ends_with("event: end\ndata: succeeded\n\n"),
        "{events}"
    );

    // Stacks now: up to date, with the running container.
    let (status, stacks) = server.read("/api/stacks").await;
    assert_eq!(status, 200, "{stacks}");
    let mine = stacks
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stack"] == json!(app))
        .unwrap_or_else(|| panic!("{stacks}"));
    assert_eq!(mine["state"], "up_to_date", "{mine}");
    assert_eq!(mine["deployed"]["commit"], json!(second));
    assert_eq!(mine["containers"][0]["service"], "app");
    assert_eq!(mine["containers"][0]["state"], "running");

    // Read routes want the token.
    let (status, _) = server.get("/api/deployments").await;
    assert_eq!(status, 401);
    let (status, _) = server.get(&format!("/api/stacks/{app}")).await;
    assert_eq!(status, 401);
    let (status, _) = server.read("/api/deployments/..%2Fstate").await;
    assert_eq!(status, 404);

    // A deployment that fails leaves the stack pending, with the change that waits and the
    // plan that would carry it out.
    h.compose(
        "app",
        &sleeper("3").replace(IMAGE, "stackhook-test/missing:never"),
    );
    let third = h.repo.commit("A broken image");
    let body = json!({ "ref": "refs/heads/main", "after": third }).to_string();
    let (status, failed) = server
        .github("/hooks/github?wait=true", "push", &body)
        .await;
    assert_eq!(status, 500, "{failed}");
    let (status, pending) = server.read(&format!("/api/stacks/{app}")).await;
    assert_eq!(status, 200, "{pending}");
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["wanted_commit"], json!(third));
    assert_eq!(pending["changes"]["files"], json!(["compose.yaml"]));
    assert_eq!(pending["actions"][0]["kind"], "recreate", "{pending}");
    assert_eq!(
        pending["containers"][0]["state"], "running",
        "the old one runs"
    );

    // Prometheus: what happened, counted.
    let (status, _) = server
        .post(
            "/hooks/github",
            "{}",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", "sha256=00"),
            ],
        )
        .await;
    assert_eq!(status, 401);
    let (status, metrics) = server.read("/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        r#"stackhook_deployments_total{result="succeeded"} 2"#.to_owned(),
        r#"stackhook_deployments_total{result="failed"} 1"#.to_owned(),
        "stackhook_deployment_duration_seconds_count 3".to_owned(),
        r#"stackhook_webhook_requests_total{outcome="accepted"} 2"#.to_owned(),
        r#"stackhook_webhook_requests_total{outcome="bad_signature"} 1"#.to_owned(),
        "stackhook_git_sync_failures_total 0".to_owned(),
        format!(r#"stackhook_stack_failed{{stack="{app}"}} 1"#),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!(
            r#"stackhook_stack_last_success_timestamp_seconds{{stack="{app}"}} "#
        )),
        "{metrics}"
    );
    let (status, _) = server.get("/metrics").await;
    assert_eq!(status, 401, "metrics want the token too");

    // The history outlives the server.
    server.stop().await;
    let server = h.start().await;
    server.settled().await;
    let (_, list) = server.read("/api/deployments?limit=100").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()), "{ids:?}");
    server.stop().await;
    h.cleanup().await;
}

/// Issue 8, "Notifications": a deployment on a real engine is told to a JSON webhook (a local
/// HTTP server here), and a failure with the stack's error.
async fn a_finished_deployment_is_told_to_a_webhook(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    let mut h = Harness::new(engine, "notify").await;
    h.set("STACKHOOK_NOTIFY_URL", &format!("http://{address}/hook"));
    let app = h.stack("app");
    h.compose("app", &sleeper("1"));
    h.repo.commit("one");
    let server = h.start().await;
    let wait = std::time::Duration::from_secs(60);
    let message = tokio::time::timeout(wait, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message["succeeded"], true, "{message}");
    assert_eq!(message["stacks"][0]["stack"], json!(app), "{message}");
    assert_eq!(message["stacks"][0]["outcome"], "deployed", "{message}");

    h.compose(
        "app",
        &sleeper("2").replace(IMAGE, "stackhook-test/missing:never"),
    );
    h.repo.commit("a broken image");
    let (status, _) = server.push("main").await;
    assert_eq!(status, 500);
    let message = tokio::time::timeout(wait, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message["succeeded"], false, "{message}");
    assert!(
        message["stacks"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{message}"
    );
    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    history_says_what_was_deployed_when_by_whom_and_why,
    a_finished_deployment_is_told_to_a_webhook
);
