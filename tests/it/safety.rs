//! "Never lose a running service" (issue 9), on the real engines: a bad update leaves the old
//! container running, a pass after a crash mid-recreate converges, and destructive mistakes in
//! the repository are refused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackhook::engine::{Container, State};

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::Harness;

const IMAGE: &str = "stackhook-test/busybox:latest";

/// A service that sleeps, healthy when `check` (a shell condition) holds.
fn app(marker: &str, check: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n    healthcheck:\n      test: [\"CMD-SHELL\", \"{check}\"]\n      interval: 200ms\n      timeout: 2s\n      retries: 2\n"
    )
}

async fn harness(engine: TestEngine, test: &str) -> Harness {
    ensure_image(engine, IMAGE);
    Harness::new(engine, test).await
}

/// Every container of a stack's project, aside ones included, as (name, state, MARKER).
async fn all_containers(h: &Harness, stack: &str) -> Vec<Container> {
    let mut containers = h.docker.containers(Some(&h.stack(stack))).await.unwrap();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    containers
}

fn failure(report: &Value) -> String {
    report["failures"].to_string()
}

async fn an_update_that_never_gets_healthy_leaves_the_old_container_running(engine: TestEngine) {
    let h = harness(engine, "gate").await;
    h.compose("web", &app("1", "true"));
    h.repo.commit("a healthy app");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let before = all_containers(&h, "web").await;
    assert_eq!(before.len(), 1);

    // An update whose health check never passes, and one whose process exits at once.
    for (marker, yaml) in [
        ("2", app("2", "false")),
        (
            "3",
            app("3", "true").replace(
                "[\"sleep\", \"3600\"]",
                "[\"sh\", \"-c\", \"echo boom; exit 3\"]",
            ),
        ),
    ] {
        h.compose("web", &yaml);
        h.repo.commit(&format!("a broken update {marker}"));
        let (status, report) = server.push("main").await;
        assert_eq!(status, 500, "{report}");
        let failure = failure(&report);
        // Podman without systemd runs the check through exec, which sees only success: a
        // check that keeps failing shows as never getting healthy.
        let expected: &[&str] = if marker == "2" {
            &["it is unhealthy", "it did not become healthy within"]
        } else {
            &["it exited with code 3"]
        };
        assert!(expected.iter().any(|e| failure.contains(e)), "{failure}");
        assert!(failure.contains("the old container is back"), "{failure}");
        // The new container's output goes to the deployment's log, not into the HTTP answer.
        assert!(!failure.contains("boom"), "{failure}");
        let after = all_containers(&h, "web").await;
        assert_eq!(after.len(), 1, "only the old container is left: {after:?}");
        assert_eq!(after[0].id, before[0].id, "the very same container");
        assert_eq!(after[0].name, before[0].name);
        assert_eq!(after[0].state, State::Running);
    }

    server.stop().await;
    h.cleanup().await;
}

async fn a_pass_after_a_crash_mid_recreate_converges(engine: TestEngine) {
    let h = harness(engine, "crash").await;
    h.compose("web", &app("1", "true"));
    h.repo.commit("an app");
    let server = h.start().await;
    server.settled().await;
    let old = all_containers(&h, "web").await.remove(0);

    // What a recreate leaves when stackhook dies right after renaming the old container aside
    // and stopping it.
    let aside = format!("{}_{}", &old.id[..12], old.name);
    h.docker.rename(&old.id, &aside).await.unwrap();
    h.docker.stop(&old.id, None).await.unwrap();
    h.compose("web", &app("2", "true"));
    h.repo.commit("an update after the crash");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let after = all_containers(&h, "web").await;
    assert_eq!(
        after.len(),
        1,
        "the container left aside is gone: {after:?}"
    );
    assert_eq!(after[0].name, old.name);
    assert_eq!(after[0].state, State::Running);
    assert_ne!(after[0].id, old.id);

    // Dying after the rename when the container is still what is wanted: it gets its name back.
    let current = after[0].clone();
    let aside = format!("{}_{}", &current.id[..12], current.name);
    h.docker.rename(&current.id, &aside).await.unwrap();
    let (status, report) = server
        .post(
            &format!("/stacks/{}/deploy?wait=true", h.stack("web")),
            "",
            &[(
                "Authorization",
                &format!("Bearer {}", crate::support::server::TOKEN),
            )],
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let restored = all_containers(&h, "web").await;
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(
        (restored[0].id.as_str(), restored[0].name.as_str()),
        (current.id.as_str(), current.name.as_str())
    );

    server.stop().await;
    h.cleanup().await;
}

async fn a_commit_without_the_services_directory_takes_nothing_down(engine: TestEngine) {
    let mut h = harness(engine, "noprune").await;
    h.compose("one", &app("1", "true"));
    h.compose("two", &app("1", "true"));
    h.repo.commit("two stacks");
    let server = h.start().await;
    server.settled().await;

    h.repo.remove("services");
    h.repo.write("README.md", "moved everything\n");
    h.repo.commit("services/ moved away by mistake");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    let failure = failure(&report);
    assert!(
        failure.contains("refusing to take down 2 stacks")
            && failure.contains("the commit has no directory services")
            && failure.contains("STACKHOOK_PRUNE=force"),
        "{failure}"
    );
    for stack in ["one", "two"] {
        let containers = all_containers(&h, stack).await;
        assert_eq!(containers.len(), 1, "{stack} still runs");
        assert_eq!(containers[0].state, State::Running);
    }
    server.stop().await;

    // Asked for in so many words, it is done.
    h.set("STACKHOOK_PRUNE", "force");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    for stack in ["one", "two"] {
        assert!(
            all_containers(&h, stack).await.is_empty(),
            "{stack} is gone"
        );
    }
    server.stop().await;
    h.cleanup().await;
}

async fn two_stacks_with_one_project_name_are_refused(engine: TestEngine) {
    let h = harness(engine, "clash").await;
    let project = h.stack("shared");
    for stack in ["left", "right"] {
        h.compose(stack, &format!("name: {project}\n{}", app("1", "true")));
    }
    h.compose("fine", &app("1", "true"));
    h.repo.commit("two stacks, one project name");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], false, "{health}");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    let failed: BTreeSet<&str> = report["report"]["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "failed")
        .map(|s| s["stack"].as_str().unwrap())
        .collect();
    let (left, right) = (h.stack("left"), h.stack("right"));
    assert_eq!(failed, BTreeSet::from([left.as_str(), right.as_str()]));
    let failure = failure(&report);
    assert!(
        failure.contains(&format!(
            "stacks {left} and {right} use the same compose project name, {project}"
        )),
        "{failure}"
    );
    assert!(
        h.docker
            .containers(Some(&project))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        all_containers(&h, "fine").await.len(),
        1,
        "the other stack deploys"
    );
    server.stop().await;
    h.cleanup().await;
}

/// A remote that accepts the connection and then never says a word.
fn silent_remote() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/env.git", listener.local_addr().unwrap());
    (listener, url)
}

/// Waits for a child process, at most `limit`; kills it and fails if it takes longer.
fn finish_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

async fn a_remote_that_never_answers_fails_the_pass_in_bounded_time(engine: TestEngine) {
    let mut h = harness(engine, "silent").await;
    let (listener, url) = silent_remote();
    h.set("STACKHOOK_REPO", &url);
    h.set("STACKHOOK_GIT_TIMEOUT", "1s");
    let run = || {
        let child = h
            .stackhook(&["deploy"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        finish_within(child, Duration::from_secs(30))
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(!first.status.success(), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(&format!("connecting to {url}")),
        "{stdout}{stderr}"
    );
    // The lock went with the first process: a second one does not wait for it.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr.contains("waiting for the deploy lock"), "{stderr}");
    drop(listener);
}

async fn sigterm_lets_the_running_deployment_finish(engine: TestEngine) {
    let mut h = harness(engine, "sigterm").await;
    h.compose(
        "slow",
        &format!(
            "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sh\", \"-c\", \"sleep 2; touch /tmp/ready; sleep 3600\"]\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 200ms\n      retries: 30\n"
        ),
    );
    h.repo.commit("a stack that takes a while to get healthy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.set("STACKHOOK_LISTEN", &format!("127.0.0.1:{port}"));
    let server = h
        .stackhook(&["serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Its first pass is waiting for the container's health when the signal comes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_containers(&h, "slow").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first pass never created the container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = finish_within(server, Duration::from_secs(40));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("deployment finished") && stderr.contains("succeeded=true"),
        "{stderr}"
    );
    let state = std::fs::read_to_string(h.state_dir.path().join("state.json")).unwrap();
    assert!(
        state.contains(&h.stack("slow")),
        "the deployment was recorded: {state}"
    );
    h.cleanup().await;
}

/// When the engine last started a container.
fn started_at(engine: TestEngine, id: &str) -> String {
    crate::support::image::cli_output(engine, &["inspect", "-f", "{{.State.StartedAt}}", id])
}

async fn start_first_never_stops_the_old_container_for_a_bad_update(engine: TestEngine) {
    let h = harness(engine, "startfirst").await;
    let start_first = |yaml: String| {
        format!("{yaml}    deploy:\n      update_config:\n        order: start-first\n")
    };
    h.compose("web", &start_first(app("1", "true")));
    h.repo.commit("a start-first app");
    let server = h.start().await;
    server.settled().await;
    let old = all_containers(&h, "web").await.remove(0);
    let old_start = started_at(engine, &old.id);

    h.compose("web", &start_first(app("2", "false")));
    h.repo
        .commit("a start-first update that never gets healthy");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    assert!(
        failure(&report).contains("the old container is back"),
        "{report}"
    );
    let after = all_containers(&h, "web").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].id.as_str(), after[0].state.clone()),
        (old.id.as_str(), State::Running)
    );
    assert_eq!(
        started_at(engine, &old.id),
        old_start,
        "never stopped, never restarted"
    );

    h.compose("web", &start_first(app("3", "true")));
    h.repo.commit("a good start-first update");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let after = all_containers(&h, "web").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].id, old.id);
    server.stop().await;
    h.cleanup().await;
}

async fn a_container_that_dies_within_the_monitor_period_is_rolled_back(engine: TestEngine) {
    let h = harness(engine, "monitor").await;
    let service = |command: &str| {
        format!(
            "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: {command}\n    deploy:\n      update_config:\n        monitor: 3s\n"
        )
    };
    h.compose("web", &service("[\"sleep\", \"3600\"]"));
    h.repo.commit("an app without a health check");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let old = all_containers(&h, "web").await.remove(0);

    h.compose(
        "web",
        &service("[\"sh\", \"-c\", \"sleep 1; echo dying; exit 4\"]"),
    );
    h.repo.commit("an update that dies after a second");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 500, "{report}");
    let failure = failure(&report);
    assert!(failure.contains("it exited with code 4"), "{failure}");
    assert!(!failure.contains("dying"), "{failure}");
    let after = all_containers(&h, "web").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].id.as_str(), after[0].state.clone()),
        (old.id.as_str(), State::Running)
    );
    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(
    start_first_never_stops_the_old_container_for_a_bad_update,
    a_container_that_dies_within_the_monitor_period_is_rolled_back,
    sigterm_lets_the_running_deployment_finish,
    a_remote_that_never_answers_fails_the_pass_in_bounded_time,
    an_update_that_never_gets_healthy_leaves_the_old_container_running,
    a_pass_after_a_crash_mid_recreate_converges,
    a_commit_without_the_services_directory_takes_nothing_down,
    two_stacks_with_one_project_name_are_refused,
);
