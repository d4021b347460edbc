//! The whole pipeline on a real engine: webhook → sync → detect → deploy.

use serde_json::json;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::{Harness, TOKEN};

const IMAGE: &str = "stackhook-test/busybox:latest";

/// A long-running service that stops at once on SIGTERM (`init: true`).
fn sleeper(marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n"
    )
}

/// Two services: `web` waits for `db` to be healthy.
fn web_and_db(web_marker: &str, db_marker: &str) -> String {
    format!(
        r#"services:
  web:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
    environment:
      MARKER: "{web_marker}"
    depends_on:
      db:
        condition: service_healthy
  db:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
    environment:
      MARKER: "{db_marker}"
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      timeout: 1s
      retries: 3
"#
    )
}

async fn harness(engine: TestEngine, test: &str) -> Harness {
    ensure_image(engine, IMAGE);
    Harness::new(engine, test).await
}

fn ids(
    containers: &std::collections::BTreeMap<String, stackhook::engine::Container>,
) -> Vec<(String, String)> {
    containers
        .iter()
        .map(|(service, c)| (service.clone(), c.id.clone()))
        .collect()
}

async fn push_deploys_only_the_changed_stack_and_service(engine: TestEngine) {
    let h = harness(engine, "push").await;
    h.compose("pair", &web_and_db("w1", "d1"));
    h.compose("solo", &sleeper("s1"));
    h.repo.commit("two stacks");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");

    let pair = h.containers("pair").await;
    let solo = h.containers("solo").await;
    assert_eq!(pair.len(), 2);
    assert_eq!(solo.len(), 1);
    for container in pair.values().chain(solo.values()) {
        assert_eq!(
            container.state,
            stackhook::engine::State::Running,
            "{container:?}"
        );
        assert_eq!(container.labels["com.docker.compose.oneoff"], "False");
        assert!(container.labels.contains_key("io.stackhook.commit"));
    }
    assert_eq!(pair["web"].name, format!("{}-web-1", h.stack("pair")));

    // Change one service of one stack.
    h.compose("pair", &web_and_db("w2", "d1"));
    h.repo.commit("change web");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let after_pair = h.containers("pair").await;
    let after_solo = h.containers("solo").await;
    assert_ne!(
        after_pair["web"].id, pair["web"].id,
        "web changed and must be recreated"
    );
    assert_eq!(after_pair["db"].id, pair["db"].id, "db did not change");
    assert_eq!(ids(&after_solo), ids(&solo), "solo did not change");
    let outcomes: Vec<_> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stack"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (h.stack("pair"), "deployed".to_owned()),
            (h.stack("solo"), "unchanged".to_owned())
        ]
    );

    // A push that changes no stack changes nothing.
    h.repo.write("README.md", "docs only\n");
    h.repo.commit("docs");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(ids(&h.containers("pair").await), ids(&after_pair));
    assert_eq!(ids(&h.containers("solo").await), ids(&after_solo));
    assert!(
        report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "unchanged"),
        "{report}"
    );

    server.stop().await;
    h.cleanup().await;
}

async fn signatures_pings_branches_and_bodies(engine: TestEngine) {
    let h = harness(engine, "sig").await;
    h.compose("app", &sleeper("1"));
    h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;
    let before = ids(&h.containers("app").await);

    let push = json!({ "ref": "refs/heads/main" }).to_string();
    let (status, body) = server
        .post("/hooks/github", &push, &[("X-GitHub-Event", "push")])
        .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({ "error": "missing X-Hub-Signature-256 header" })
        )
    );
    let wrong = stackhook::webhook::sign(&stackhook::config::Secret::new("wrong"), push.as_bytes());
    let (status, body) = server
        .post(
            "/hooks/github",
            &push,
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
        )
        .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({ "error": "X-Hub-Signature-256 does not match the body" })
        )
    );

    let (status, body) = server.github("/hooks/github", "ping", "{}").await;
    assert_eq!((status, body), (200, json!({ "pong": true })));

    let (status, body) = server.push("feature").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "ignored": "push to branch feature; stackhook follows main" })
        )
    );
    let (status, body) = server.github("/hooks/github", "issues", "{}").await;
    assert_eq!(
        (status, body),
        (200, json!({ "ignored": "event issues does not deploy" }))
    );
    let (status, body) = server.github("/hooks/github", "push", "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid push payload"),
        "{body}"
    );

    let (status, body) = server.github("/hooks/github", "push", &push).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["deployment"].is_string(), "{body}");

    let huge = "x".repeat(25 * 1024 * 1024 + 1);
    let (status, _) = server.github("/hooks/github", "push", &huge).await;
    assert_eq!(status, 413);

    server.settled().await;
    assert_eq!(
        ids(&h.containers("app").await),
        before,
        "nothing changed in the repository"
    );
    server.stop().await;
    h.cleanup().await;
}

async fn webhooks_without_a_secret_are_refused(engine: TestEngine) {
    let mut h = harness(engine, "nosecret").await;
    h.settings.remove("STACKHOOK_WEBHOOK_SECRET");
    h.repo.write("README.md", "empty\n");
    h.repo.commit("empty");
    let server = h.start().await;
    let (status, body) = server
        .post("/hooks/github", "{}", &[("X-GitHub-Event", "push")])
        .await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("STACKHOOK_WEBHOOK_SECRET"),
        "{body}"
    );
    server.stop().await;
}

async fn single_stack_redeploy_with_token_and_signature(engine: TestEngine) {
    let h = harness(engine, "single").await;
    h.compose("app", &sleeper("1"));
    h.compose("other", &sleeper("1"));
    h.repo.commit("stacks");
    let server = h.start().await;
    server.settled().await;
    let other = ids(&h.containers("other").await);
    let app = h.stack("app");
    let bearer = format!("Bearer {TOKEN}");

    let path = format!("/stacks/{app}/deploy?wait=true");
    let (status, report) = server.post(&path, "", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stacks"][0]["stack"], app.as_str());
    assert_eq!(
        report["stacks"].as_array().unwrap().len(),
        1,
        "only the named stack: {report}"
    );

    let release = json!({ "action": "published" }).to_string();
    let (status, report) = server.github(&path, "release", &release).await;
    assert_eq!(status, 200, "{report}");
    let draft = json!({ "action": "created" }).to_string();
    let (status, body) = server.github(&path, "release", &draft).await;
    assert_eq!(
        (status, body),
        (200, json!({ "ignored": "action created does not deploy" }))
    );

    let (status, _) = server
        .post(&path, "", &[("Authorization", "Bearer nope")])
        .await;
    assert_eq!(status, 401);
    let (status, _) = server.post(&path, "", &[]).await;
    assert_eq!(status, 401);
    let (status, body) = server
        .post("/stacks/nope/deploy", "", &[("Authorization", &bearer)])
        .await;
    assert_eq!(
        (status, body),
        (404, json!({ "error": "no stack named nope" }))
    );
    let (status, body) = server
        .post("/stacks/..%2Fetc/deploy", "", &[("Authorization", &bearer)])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not a stack name"),
        "{body}"
    );
    let (status, _) = server
        .post(
            &format!("/stacks/{app}/deploy?pull=sometimes"),
            "",
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(status, 400);

    let (status, report) = server
        .post(
            &format!("/redeploy-and-update/{app}?wait=true"),
            "",
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(
        status, 500,
        "the image cannot be pulled from a registry here: {report}"
    );
    assert!(
        report["failures"][0]
            .as_str()
            .unwrap()
            .contains("pulling image"),
        "{report}"
    );

    assert_eq!(ids(&h.containers("other").await), other);
    server.stop().await;
    h.cleanup().await;
}

async fn broken_stack_is_reported_and_the_others_still_deploy(engine: TestEngine) {
    let h = harness(engine, "broken").await;
    h.compose("good", &sleeper("1"));
    h.compose("flaky", &sleeper("1"));
    h.repo.commit("two good stacks");
    let server = h.start().await;
    server.settled().await;
    let flaky = ids(&h.containers("flaky").await);

    // Break one stack's YAML and change the other.
    h.compose("flaky", "services:\n  app:\n    image: [unclosed\n");
    h.compose("good", &sleeper("2"));
    h.repo.commit("break flaky");
    let (status, body) = server.push("main").await;
    assert_eq!(status, 500, "{body}");
    let failures = body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{body}");
    let failure = failures[0].as_str().unwrap();
    assert!(
        failure.starts_with(&format!("{}: ", h.stack("flaky"))),
        "{failure}"
    );
    assert!(failure.contains("compose.yaml: invalid YAML"), "{failure}");
    assert!(failure.contains("line 3"), "{failure}");
    assert_eq!(
        h.containers("good").await["app"].labels["io.stackhook.commit"],
        body["report"]["commit"].as_str().unwrap()
    );
    assert_eq!(
        ids(&h.containers("flaky").await),
        flaky,
        "what ran keeps running"
    );

    // A missing image fails the stack before its running container is touched.
    h.compose(
        "flaky",
        &sleeper("3").replace(IMAGE, "stackhook-test/absent:1"),
    );
    h.repo.commit("missing image");
    let (status, body) = server.push("main").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["failures"][0]
            .as_str()
            .unwrap()
            .contains("stackhook-test/absent:1"),
        "{body}"
    );
    let still = h.containers("flaky").await;
    assert_eq!(ids(&still), flaky);
    assert_eq!(still["app"].state, stackhook::engine::State::Running);

    server.stop().await;
    h.cleanup().await;
}

async fn services_and_stacks_removed_from_the_repository_are_taken_down(engine: TestEngine) {
    let h = harness(engine, "prune").await;
    h.compose("pair", &web_and_db("1", "1"));
    h.compose(
        "gone",
        &format!(
            "{}    volumes: [\"data:/data\"]\nvolumes:\n  data:\n",
            sleeper("1")
        ),
    );
    h.repo.commit("two stacks");
    let server = h.start().await;
    server.settled().await;
    assert_eq!(h.containers("gone").await.len(), 1);

    h.repo.remove(&format!("services/{}", h.stack("gone")));
    h.compose("pair", &sleeper("1").replace("app:", "db:"));
    h.repo.commit("remove a stack and a service");
    let (status, body) = server.push("main").await;
    assert_eq!(status, 200, "{body}");
    assert!(h.containers("gone").await.is_empty());
    let pair = h.containers("pair").await;
    assert_eq!(pair.keys().collect::<Vec<_>>(), ["db"]);
    let volume = format!("{}_data", h.stack("gone"));
    let output = std::process::Command::new("docker")
        .args(["volume", "inspect", &volume])
        .env("DOCKER_HOST", h.engine.host())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "named volumes of a pruned stack are kept"
    );

    server.stop().await;
    h.cleanup().await;
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &volume])
        .env("DOCKER_HOST", h.engine.host())
        .output();
}

async fn suspend_file_pauses_deploys_and_health_says_so(engine: TestEngine) {
    let h = harness(engine, "suspend").await;
    h.compose("app", &sleeper("1"));
    h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;
    let before = ids(&h.containers("app").await);

    h.repo.write(".stackhook-suspend", "maintenance\n");
    h.compose("app", &sleeper("2"));
    h.repo.commit("suspend and change");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["suspended"], true);
    assert_eq!(ids(&h.containers("app").await), before);
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "active");
    assert_eq!(health["suspended"], true);

    h.repo.remove(".stackhook-suspend");
    h.repo.commit("resume");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_ne!(ids(&h.containers("app").await), before);
    assert_eq!(server.get("/health").await.1["suspended"], false);

    server.stop().await;
    h.cleanup().await;
}

async fn polling_deploys_without_a_webhook(engine: TestEngine) {
    let mut h = harness(engine, "poll").await;
    h.set("STACKHOOK_POLL_INTERVAL", "200ms");
    h.compose("app", &sleeper("1"));
    let first = h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;
    assert_eq!(
        h.containers("app").await["app"].labels["io.stackhook.commit"],
        first
    );

    h.compose("app", &sleeper("2"));
    let second = h.repo.commit("change");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let containers = h.containers("app").await;
        if containers
            .get("app")
            .map(|c| c.labels["io.stackhook.commit"].as_str())
            == Some(second.as_str())
            && containers["app"].state == stackhook::engine::State::Running
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "polling never deployed {second}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await;
    h.cleanup().await;
}

async fn a_service_that_never_gets_healthy_fails_the_deploy(engine: TestEngine) {
    let h = harness(engine, "unhealthy").await;
    h.compose(
        "app",
        &format!(
            "services:\n  sick:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 200ms\n      timeout: 1s\n      retries: 2\n  after:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    depends_on:\n      sick:\n        condition: service_healthy\n"
        ),
    );
    h.repo.commit("sick stack");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], false, "{health}");
    let (status, report) = server
        .post(
            &format!("/stacks/{}/deploy?wait=true", h.stack("app")),
            "",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(status, 500, "{report}");
    let failure = report["failures"][0].as_str().unwrap();
    assert!(
        failure.contains("service after: dependency sick is not healthy"),
        "{failure}"
    );
    assert!(
        !h.containers("app").await.contains_key("after"),
        "after must not start"
    );
    server.stop().await;
    h.cleanup().await;
}

async fn env_and_mounted_files_are_part_of_the_fingerprint(engine: TestEngine) {
    let h = harness(engine, "fprint").await;
    let stack = h.stack("app");
    h.repo
        .write(&format!("services/{stack}/.env"), "GREETING=hello\n");
    h.repo
        .write(&format!("services/{stack}/conf/app.conf"), "level=1\n");
    h.compose(
        "app",
        &format!(
            "services:\n  reader:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    volumes: [\"./conf:/conf:ro\"]\n  greeter:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      GREETING: ${{GREETING}}\n"
        ),
    );
    h.repo.commit("stack with .env and a mounted file");
    let server = h.start().await;
    server.settled().await;
    let first = h.containers("app").await;

    h.repo
        .write(&format!("services/{stack}/.env"), "GREETING=bonjour\n");
    h.repo.commit("change only .env");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let second = h.containers("app").await;
    assert_ne!(
        second["greeter"].id, first["greeter"].id,
        ".env feeds greeter"
    );
    assert_eq!(
        second["reader"].id, first["reader"].id,
        "reader does not read GREETING"
    );

    h.repo
        .write(&format!("services/{stack}/conf/app.conf"), "level=2\n");
    h.repo.commit("change only the mounted file");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let third = h.containers("app").await;
    assert_ne!(
        third["reader"].id, second["reader"].id,
        "reader mounts conf/"
    );
    assert_eq!(third["greeter"].id, second["greeter"].id);

    server.stop().await;
    h.cleanup().await;
}

async fn triggers_during_a_deploy_are_coalesced_into_one_pass(engine: TestEngine) {
    let h = harness(engine, "coalesce").await;
    h.compose("app", &sleeper("1"));
    h.repo.commit("one stack");
    let server = h.start().await;
    server.settled().await;

    // Hold the deploy lock, as a CLI deploy would, so that passes queue up behind it.
    let lock = stackhook::store::Lock::acquire(
        h.state_dir.path(),
        "the test",
        std::time::Duration::ZERO,
        |_| {},
    )
    .unwrap();
    let push = json!({ "ref": "refs/heads/main" }).to_string();
    let mut deployments = std::collections::BTreeSet::new();
    for marker in 2..=6 {
        h.compose("app", &sleeper(&marker.to_string()));
        h.repo.commit(&format!("change {marker}"));
        let (status, body) = server.github("/hooks/github", "push", &push).await;
        assert_eq!(status, 202, "{body}");
        deployments.insert(body["deployment"].as_str().unwrap().to_owned());
    }
    assert!(
        deployments.len() <= 2,
        "five triggers, at most one running and one queued pass: {deployments:?}"
    );
    drop(lock);

    // The signed empty body of gitops-deploy-server's path waits for a pass at the newest commit.
    let signature = stackhook::webhook::sign(
        &stackhook::config::Secret::new(crate::support::server::SECRET),
        b"",
    );
    let (status, report) = server
        .post(
            "/deploy-all-changed?wait=true",
            "",
            &[("X-Hub-Signature-256", &signature)],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let app = h.containers("app").await;
    assert_eq!(app["app"].state, stackhook::engine::State::Running);
    let output = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            &app["app"].id,
        ])
        .env("DOCKER_HOST", h.engine.host())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("MARKER=6"),
        "{output:?}"
    );

    server.stop().await;
    h.cleanup().await;
}

async fn one_shot_dependencies_must_complete_successfully(engine: TestEngine) {
    let h = harness(engine, "oneshot").await;
    let stack = |exit_code: u8| {
        format!(
            "services:\n  migrate:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo migrating; exit {exit_code}\"]\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n"
        )
    };
    h.compose("good", &stack(0));
    h.compose("bad", &stack(3));
    h.repo.commit("two stacks with a one-shot migration");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], false, "{health}");

    let good = h.containers("good").await;
    assert_eq!(good["migrate"].state, stackhook::engine::State::Exited);
    assert_eq!(good["app"].state, stackhook::engine::State::Running);
    let bad = h.containers("bad").await;
    assert!(
        !bad.contains_key("app"),
        "app must wait for a migration that failed"
    );
    let (_, report) = server
        .post(
            &format!("/stacks/{}/deploy?wait=true", h.stack("bad")),
            "",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    let failure = report["failures"][0].as_str().unwrap();
    assert!(
        failure.contains(
            "service app: dependency migrate is not completed successfully: it exited with code 3"
        ),
        "{failure}"
    );
    server.stop().await;
    h.cleanup().await;
}

async fn pull_always_builds_rather_than_pulls_a_build_only_service(engine: TestEngine) {
    let h = harness(engine, "pullbuild").await;
    let stack = h.stack("app");
    h.compose(
        "app",
        "services:\n  web:\n    build: ./web\n    init: true\n",
    );
    h.repo.write(
        &format!("services/{stack}/web/Dockerfile"),
        &format!("FROM {IMAGE}\nCMD [\"sleep\", \"3600\"]\n"),
    );
    h.repo.commit("a build-only service");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");

    let (status, report) = server
        .post(
            &format!("/stacks/{stack}/deploy?pull=always&wait=true"),
            "",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(status, 200, "nothing to pull from a registry: {report}");
    assert_eq!(
        report["stacks"][0]["actions"][0]["kind"], "unchanged",
        "{report}"
    );
    server.stop().await;
    h.cleanup().await;
    let _ = h
        .engine
        .cli()
        .args(["rmi", "-f", &format!("{stack}-web")])
        .output();
}

/// Tags `tag` onto a new image made from the test image, as a registry push of a new release
/// followed by a pull would.
async fn release(h: &Harness, tag: &str, version: &str) {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nLABEL version={version}\n"),
    )
    .unwrap();
    let build = stackhook::stack::compose::Build {
        context: context.path().to_owned(),
        dockerfile: "Dockerfile".into(),
        args: Default::default(),
        target: None,
        ..Default::default()
    };
    h.docker.build(tag, &build, &|_| {}).await.unwrap();
}

async fn a_redeploy_recreates_only_services_whose_image_changed(engine: TestEngine) {
    let h = harness(engine, "image").await;
    let released = format!("stackhook-test/{}-released:1", h.prefix);
    let pinned = format!("stackhook-test/{}-pinned:1", h.prefix);
    release(&h, &released, "1").await;
    release(&h, &pinned, "1").await;
    h.compose(
        "app",
        &format!(
            "services:\n  released:\n    image: {released}\n    init: true\n    command: [\"sleep\", \"3600\"]\n  pinned:\n    image: {pinned}\n    init: true\n    command: [\"sleep\", \"3600\"]\n"
        ),
    );
    h.repo.commit("two images");
    let server = h.start().await;
    server.settled().await;
    let before = h.containers("app").await;

    release(&h, &released, "2").await;
    let (status, report) = server
        .post(
            &format!("/stacks/{}/deploy?pull=never&wait=true", h.stack("app")),
            "",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let actions: Vec<_> = report["stacks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {} {}", a["service"], a["kind"], a["reason"]))
        .collect();
    assert_eq!(actions[0], r#""pinned" "unchanged" null"#);
    // The reason names the image that went and the one that came.
    assert!(
        actions[1].starts_with(r#""released" "recreate" "image updated: sha256:"#)
            && actions[1].contains(" → sha256:"),
        "{actions:?}"
    );
    let after = h.containers("app").await;
    assert_ne!(after["released"].id, before["released"].id);
    assert_eq!(after["pinned"].id, before["pinned"].id);

    server.stop().await;
    h.cleanup().await;
    let _ = h
        .engine
        .cli()
        .args(["rmi", "-f", &released, &pinned])
        .output();
}

/// Issue 9, "One slow stack never holds back the others": a push to one stack deploys, and its
/// `?wait=true` answer comes, while another stack's new container still waits for its first
/// health probe to pass.
async fn a_push_to_one_stack_deploys_while_another_waits_for_its_health_check(engine: TestEngine) {
    let h = harness(engine, "lanes").await;
    h.compose("fast", &sleeper("1"));
    h.repo.commit("fast");
    let server = h.start().await;
    server.settled().await;

    // Healthy only once the test says so, as GitLab is after its first five minutes.
    h.compose(
        "slow",
        &format!(
            "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"test -f /tmp/ready\"]\n      interval: 1s\n      timeout: 1s\n      retries: 600\n"
        ),
    );
    h.repo.commit("a slow stack");
    let push = json!({ "ref": "refs/heads/main" }).to_string();
    let (status, body) = server.github("/hooks/github", "push", &push).await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let slow = loop {
        if let Some(app) = h.containers("slow").await.remove("app")
            && app.state == stackhook::engine::State::Running
        {
            break app;
        }
        assert!(tokio::time::Instant::now() < deadline, "slow never started");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    h.compose("fast", &sleeper("2"));
    h.repo.commit("change fast");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(90), server.push("main"));
    let (status, report) = answer.await.expect("the push to fast waited for slow");
    assert_eq!(status, 200, "{report}");
    let stacks: Vec<(&str, &str)> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stack"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(stacks, [(h.stack("fast").as_str(), "deployed")], "{report}");
    let (_, health) = server.get("/health").await;
    assert_eq!(health["deploying"], true, "slow still waits: {health}");

    crate::support::image::cli_output(engine, &["exec", &slow.id, "touch", "/tmp/ready"]);
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let slow_now = h.containers("slow").await;
    assert_eq!(
        slow_now["app"].id, slow.id,
        "slow kept the container it was waiting for"
    );

    server.stop().await;
    h.cleanup().await;
}

/// Issue 9: a request that reached a slot just as it handed over is left in the state
/// directory's inbox; the active server picks it up without another trigger.
async fn the_active_server_deploys_what_a_slot_that_handed_over_left_in_the_inbox(
    engine: TestEngine,
) {
    let h = harness(engine, "inbox").await;
    h.compose("app", &sleeper("1"));
    h.repo.commit("one stack");
    let server = h.start().await;
    let before = server.settled().await["last_deployment"]["id"].clone();

    let inbox = stackhook::store::Inbox {
        all_changed: false,
        stacks: [(h.stack("app"), None)].into(),
    };
    stackhook::store::post_to_inbox(h.state_dir.path(), inbox).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let health = loop {
        let (_, health) = server.get("/health").await;
        if health["last_deployment"]["id"] != before && health["deploying"] == false {
            break health;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox was never read: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    assert_eq!(stackhook::store::inbox_written(h.state_dir.path()), None);

    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    the_active_server_deploys_what_a_slot_that_handed_over_left_in_the_inbox,
    a_push_to_one_stack_deploys_while_another_waits_for_its_health_check,
    pull_always_builds_rather_than_pulls_a_build_only_service,
    one_shot_dependencies_must_complete_successfully,
    a_redeploy_recreates_only_services_whose_image_changed,
    env_and_mounted_files_are_part_of_the_fingerprint,
    triggers_during_a_deploy_are_coalesced_into_one_pass,
    push_deploys_only_the_changed_stack_and_service,
    signatures_pings_branches_and_bodies,
    webhooks_without_a_secret_are_refused,
    single_stack_redeploy_with_token_and_signature,
    broken_stack_is_reported_and_the_others_still_deploy,
    services_and_stacks_removed_from_the_repository_are_taken_down,
    suspend_file_pauses_deploys_and_health_says_so,
    polling_deploys_without_a_webhook,
    a_service_that_never_gets_healthy_fails_the_deploy,
);
