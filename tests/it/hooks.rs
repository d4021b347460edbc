//! Lifecycle hooks (issue 11): `post_start` runs in each container once it started, with the
//! hook's user, working directory and environment; `pre_stop` runs before a surplus replica is
//! stopped; a failing `post_start` fails the update and brings the old container back.

use std::process::Output;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::Harness;

const IMAGE: &str = "stackhook-test/busybox:latest";

/// `replicas` workers whose `post_start` runs `post_start`, and whose `pre_stop` writes the
/// stopping container's hostname into `out`, a host directory, where it outlives the container.
fn workers(replicas: u32, out: &str, post_start: &str) -> String {
    format!(
        r#"services:
  worker:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
    volumes: ["{out}:/out"]
    deploy: {{replicas: {replicas}}}
    post_start:
      - command: ["sh", "-c", {post_start:?}]
        user: "1000"
        working_dir: /tmp
        environment: {{GREETING: hello}}
    pre_stop:
      - command: sh -c 'cat /etc/hostname > /out/stopped'
"#
    )
}

/// `$$` is `$` once the compose file is interpolated.
const WRITES: &str = "echo \"$$GREETING $$(id -u) $$(pwd)\" > /tmp/started";

/// The stack's containers as (name, id), by name.
async fn containers(h: &Harness) -> Vec<(String, String)> {
    let mut containers: Vec<_> = h
        .docker
        .containers(Some(&h.stack("app")))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.id))
        .collect();
    containers.sort();
    containers
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

async fn hooks_run_in_the_containers(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "hooks").await;
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_string_lossy().into_owned();

    h.compose("app", &workers(2, &out_path, WRITES));
    h.repo.commit("two workers with hooks");
    let first = h.stackhook(&["deploy"]).output().unwrap();
    let two = containers(&h).await;
    let started: Vec<String> = two
        .iter()
        .map(|(name, _)| {
            let output = engine
                .cli()
                .args(["exec", name, "cat", "/tmp/started"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect();

    h.compose("app", &workers(1, &out_path, WRITES));
    h.repo.commit("one worker");
    let second = h.stackhook(&["deploy"]).output().unwrap();
    let stopped = std::fs::read_to_string(out.path().join("stopped")).unwrap_or_default();
    let one = containers(&h).await;

    h.compose("app", &workers(1, &out_path, "exit 3"));
    h.repo.commit("a failing post_start hook");
    let third = h.stackhook(&["deploy"]).output().unwrap();
    let after_failure = containers(&h).await;
    h.cleanup().await;

    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(started, ["hello 1000 /tmp\n", "hello 1000 /tmp\n"]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(one, two[..1], "worker 1 stays");
    assert_eq!(
        stopped.trim(),
        &two[1].1[..12],
        "pre_stop ran in worker 2 before it was stopped"
    );
    assert!(!third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("post_start[0] hook exited with status 3"),
        "{}",
        text(&third)
    );
    assert_eq!(after_failure, one, "the old worker is back");
}

crate::engine_tests!(hooks_run_in_the_containers);
