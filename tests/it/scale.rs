//! Services that run several containers (`scale`, `deploy.replicas`; issue 11): numbered as
//! Compose numbers them, scaled up and down without touching the containers that stay.

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::Harness;

const IMAGE: &str = "stackhook-test/busybox:latest";

fn worker(replicas: u32) -> String {
    format!(
        "services:\n  worker:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n    deploy:\n      replicas: {replicas}\n"
    )
}

/// The stack's containers as (name, number, id).
async fn containers(h: &Harness) -> Vec<(String, String, String)> {
    let mut containers: Vec<_> = h
        .docker
        .containers(Some(&h.stack("app")))
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            let number = c.labels["com.docker.compose.container-number"].clone();
            (c.name, number, c.id)
        })
        .collect();
    containers.sort();
    containers
}

async fn scaling_adds_and_removes_numbered_containers(engine: TestEngine) {
    ensure_image(engine, IMAGE);
    let h = Harness::new(engine, "scale").await;
    let project = h.stack("app");
    h.compose("app", &worker(3));
    h.repo.commit("three workers");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let three = containers(&h).await;
    let names: Vec<(&str, &str)> = three
        .iter()
        .map(|(name, number, _)| (name.as_str(), number.as_str()))
        .collect();
    let expected: Vec<(String, String)> = (1..=3)
        .map(|n| (format!("{project}-worker-{n}"), n.to_string()))
        .collect();
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(name, number)| (name.as_str(), number.as_str()))
        .collect();
    assert_eq!(names, expected);

    h.compose("app", &worker(1));
    h.repo.commit("one worker");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let one = containers(&h).await;
    assert_eq!(
        one,
        three[..1],
        "worker 1 stays as it was; 2 and 3 are removed"
    );

    h.compose("app", &worker(2));
    h.repo.commit("two workers");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let two = containers(&h).await;
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0], three[0], "worker 1 is not recreated by scaling");
    assert_eq!(two[1].0, format!("{project}-worker-2"));

    server.stop().await;
    h.cleanup().await;
}

crate::engine_tests!(scaling_adds_and_removes_numbered_containers);
