//! Issue 12, "Many hosts, one repository": two instances, one on Docker as host `a` and one on
//! Podman as host `b`, deploy from one repository, each only the stacks that are its own.

use std::collections::BTreeSet;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::server::{Harness, Server};

const IMAGE: &str = "stackhook-test/hosts:latest";

fn stack(extension: &str) -> String {
    format!(
        "{extension}services:\n  app:\n    image: {IMAGE}\n    init: true\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// The stacks a server has deployed, by `/api/stacks`.
async fn deployed(server: &Server) -> BTreeSet<String> {
    let (_, stacks) = server.read("/api/stacks").await;
    stacks
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["deployed"].is_object())
        .map(|s| s["stack"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_host_deploys_its_own_stacks_from_one_repository() {
    ensure_image(TestEngine::Docker, IMAGE);
    ensure_image(TestEngine::Podman, IMAGE);
    let mut a = Harness::new(TestEngine::Docker, "hosts").await;
    let mut b = Harness::new(TestEngine::Podman, "hosts").await;
    a.set("STACKHOOK_HOST", "a");
    b.set("STACKHOOK_HOST", "b");
    b.set("STACKHOOK_REPO", &a.repo.url());
    let (common, only_a, only_b, strict) = (
        a.stack("common"),
        a.stack("only-a"),
        a.stack("only-b"),
        a.stack("strict"),
    );
    a.compose("common", &stack(""));
    a.compose("only-a", &stack("x-stackhook:\n  hosts: [a]\n"));
    a.repo
        .write(&format!("hosts/b/{only_b}/compose.yaml"), &stack(""));
    a.repo.commit("two hosts");

    let server_a = a.start().await;
    let server_b = b.start().await;
    assert_eq!(
        server_a.settled().await["last_deployment"]["succeeded"],
        true
    );
    assert_eq!(
        server_b.settled().await["last_deployment"]["succeeded"],
        true
    );
    assert_eq!(
        deployed(&server_a).await,
        BTreeSet::from([common.clone(), only_a.clone()])
    );
    assert_eq!(
        deployed(&server_b).await,
        BTreeSet::from([common.clone(), only_b.clone()])
    );
    let (_, list) = server_b.read("/api/deployments?limit=1").await;
    assert_eq!(list[0]["host"], "b", "{list}");

    // A stack moved to the other host goes from one and comes to the other.
    a.compose("only-a", &stack("x-stackhook:\n  hosts: [b]\n"));
    a.repo.commit("only-a moves to b");
    let (status, report) = server_a.push("main").await;
    assert_eq!(status, 200, "{report}");
    let (status, report) = server_b.push("main").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(deployed(&server_a).await, BTreeSet::from([common.clone()]));
    assert!(a.containers("only-a").await.is_empty(), "taken down on a");
    assert_eq!(
        deployed(&server_b).await,
        BTreeSet::from([common.clone(), only_a.clone(), only_b.clone()])
    );
    server_b.stop().await;

    // Strict: a stack that names no host goes nowhere.
    b.set("STACKHOOK_HOST_STRICT", "true");
    let strict_state = tempfile::tempdir().unwrap();
    b.set(
        "STACKHOOK_STATE_DIR",
        &strict_state.path().display().to_string(),
    );
    a.compose("strict", &stack(""));
    a.repo.commit("a stack for no host in particular");
    let server_b = b.start().await;
    server_b.settled().await;
    let on_b = deployed(&server_b).await;
    assert!(
        !on_b.contains(&strict) && !on_b.contains(&common),
        "{on_b:?}"
    );
    assert!(on_b.contains(&only_b), "{on_b:?}");
    server_a.stop().await;
    server_b.stop().await;
    a.cleanup().await;
    b.cleanup().await;
}
