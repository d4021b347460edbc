//! Pulling images from a registry (issue 3): progress in the deploy log, `pull_policy`, and
//! `?pull=always` recreating only the services whose image changed. The registry is the
//! in-test one from `support::registry`; no other registry is reachable on test machines.

use serde_json::Value;
use stackhook::engine::ImageId;

use crate::support::image::{TestEngine, ensure_image};
use crate::support::registry::Registry;
use crate::support::server::{Harness, TOKEN};

/// The local test image, for the service that never pulls.
const LOCAL: &str = "stackhook-test/busybox:latest";

/// A stack of `app`, running `image` from the registry, and `other`, running the local image.
fn app_and_other(image: &str, app_extra: &str) -> String {
    format!(
        "services:\n  app:\n    image: {image}\n    init: true\n    command: [\"sleep\", \"3600\"]\n{app_extra}  other:\n    image: {LOCAL}\n    init: true\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// A harness and a registry, with a repository name unique to this test run.
async fn setup(engine: TestEngine, test: &str) -> (Harness, Registry, String) {
    ensure_image(engine, LOCAL);
    let h = Harness::new(engine, test).await;
    let registry = Registry::start().await;
    let repository = format!("stackhook-test/{}-app", h.prefix);
    (h, registry, repository)
}

async fn deploy(server: &crate::support::server::Server, path: &str) -> (u16, Value) {
    server
        .post(path, "", &[("Authorization", &format!("Bearer {TOKEN}"))])
        .await
}

fn actions(report: &Value) -> Vec<String> {
    report["stacks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            // "image updated: sha256:… → sha256:…" compares as its first words.
            let reason = match a["reason"].as_str() {
                Some(reason) => format!("{:?}", reason.split(": ").next().unwrap_or(reason)),
                None => "null".into(),
            };
            format!("{} {} {reason}", a["service"], a["kind"])
        })
        .collect()
}

/// An image id without its `sha256:` prefix, which Podman leaves off in places.
fn bare(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// Removes the images a test pulled, under every name they were pulled as.
fn remove_images(h: &Harness, images: &[&str]) {
    let _ = h.engine.cli().args(["rmi", "-f"]).args(images).output();
}

async fn a_missing_image_is_pulled_with_progress_in_the_log(engine: TestEngine) {
    let (h, registry, repository) = setup(engine, "pull").await;
    let image = registry.reference(&repository, "1");
    let id = registry.publish(&repository, "1", "1");
    // An empty repository first, so that the stack's first deploy answers a push with its log.
    h.repo.write("README.md", "no stacks yet\n");
    h.repo.commit("empty");
    let server = h.start().await;
    server.settled().await;

    h.compose("app", &app_and_other(&image, ""));
    h.repo.commit("a stack with an image from the registry");
    let (status, report) = server.push("main").await;
    assert_eq!(status, 200, "{report}");
    let stack = &report["stacks"][0];
    assert_eq!(stack["outcome"], "deployed", "{report}");
    let log: Vec<&str> = stack["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    assert!(
        log.contains(&format!("pulling {image} for service app").as_str()),
        "{log:#?}"
    );
    let progress: Vec<&str> = log
        .iter()
        .filter_map(|line| line.strip_prefix(&format!("{image}: ")))
        .collect();
    // What each engine streams for a pull: Docker 20.10 by layer and for the whole image,
    // Podman 4.3 as containers/image copies it.
    let phrases: &[&str] = match engine {
        TestEngine::Docker => &[
            "Pulling fs layer",
            "Download complete",
            "Pull complete",
            "Downloaded newer image",
        ],
        TestEngine::Podman => &["Copying blob", "Copying config", "Writing manifest"],
    };
    for &phrase in phrases {
        assert!(
            progress.iter().any(|line| line.contains(phrase)),
            "no {phrase:?} in the pull progress: {log:#?}"
        );
    }
    assert!(
        !log.iter()
            .any(|line| line.contains(&format!("pulling {LOCAL}"))),
        "the local image is present and must not be pulled: {log:#?}"
    );
    let containers = h.containers("app").await;
    assert_eq!(
        containers["app"].state,
        stackhook::engine::State::Running,
        "{containers:?}"
    );
    assert_eq!(
        h.docker.image_id(&image).await.unwrap(),
        Some(ImageId::new(id))
    );

    server.stop().await;
    h.cleanup().await;
    remove_images(&h, &[&image]);
}

async fn pull_always_recreates_only_services_whose_image_changed(engine: TestEngine) {
    let (h, registry, repository) = setup(engine, "update").await;
    let image = registry.reference(&repository, "stable");
    let first = registry.publish(&repository, "stable", "1");
    // `?pull=always` pulls every service's image, so `other` must come from the registry too:
    // the local test image is in none, and pulling it fails the stack as it fails
    // `docker compose up --pull always`. It is published once and keeps its image id.
    let other_repository = format!("{repository}-other");
    let other = registry.reference(&other_repository, "stable");
    let other_id = registry.publish(&other_repository, "stable", "1");
    h.compose("app", &app_and_other(&image, "").replace(LOCAL, &other));
    h.repo.commit("a stack with images from the registry");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let before = h.containers("app").await;
    assert_eq!(
        h.docker.image_id(&image).await.unwrap(),
        Some(ImageId::new(first.clone()))
    );
    // The engine's own view of a container's image, not stackhook's.
    let image_of = |id: &str| {
        let output = h
            .engine
            .cli()
            .args(["container", "inspect", "--format", "{{.Image}}", id])
            .output()
            .unwrap();
        let id = String::from_utf8(output.stdout).unwrap();
        bare(id.trim()).to_owned()
    };
    assert_eq!(image_of(&before["app"].id), bare(&first));

    // Without `?pull=always`, a present image is not pulled again.
    let second = registry.publish(&repository, "stable", "2");
    assert_ne!(first, second, "the releases must differ in image id");
    let path = format!("/stacks/{}/deploy?wait=true", h.stack("app"));
    let (status, report) = deploy(&server, &path).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        actions(&report),
        [r#""app" "unchanged" null"#, r#""other" "unchanged" null"#]
    );

    let path = format!("/stacks/{}/deploy?pull=always&wait=true", h.stack("app"));
    let (status, report) = deploy(&server, &path).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        actions(&report),
        [
            r#""app" "recreate" "image updated""#,
            r#""other" "unchanged" null"#
        ]
    );
    let after = h.containers("app").await;
    assert_ne!(after["app"].id, before["app"].id, "app must be recreated");
    assert_eq!(
        after["other"].id, before["other"].id,
        "other did not change"
    );
    assert_eq!(image_of(&after["app"].id), bare(&second));
    let log = report["stacks"][0]["log"].to_string();
    assert!(
        log.contains(&format!("pulling {other} for service other")),
        "{log}"
    );
    assert_eq!(
        h.docker.image_id(&other).await.unwrap(),
        Some(ImageId::new(other_id))
    );

    server.stop().await;
    h.cleanup().await;
    remove_images(&h, &[&image, &first, &second, &other]);
}

async fn pull_policy_never_fails_on_a_missing_image_and_touches_nothing(engine: TestEngine) {
    let (h, registry, repository) = setup(engine, "never").await;
    let image = registry.reference(&repository, "1");
    // The registry has the image; only the policy keeps the engine from asking for it.
    registry.publish(&repository, "1", "1");
    h.compose("app", &app_and_other(&image, "    pull_policy: never\n"));
    h.repo.commit("a stack whose image must not be pulled");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], false, "{health}");

    let path = format!("/stacks/{}/deploy?wait=true", h.stack("app"));
    let (status, body) = deploy(&server, &path).await;
    assert_eq!(status, 500, "{body}");
    let stack = &body["report"]["stacks"][0];
    assert_eq!(stack["outcome"], "failed", "{body}");
    assert_eq!(
        stack["error"].as_str().unwrap(),
        format!(
            "service app: image {image} is not present and pull_policy never forbids pulling it"
        ),
        "{body}"
    );
    assert!(h.containers("app").await.is_empty(), "nothing is created");
    assert_eq!(h.docker.image_id(&image).await.unwrap(), None);
    assert!(
        registry.requests().is_empty(),
        "the engine must not ask the registry: {:?}",
        registry.requests()
    );

    server.stop().await;
    h.cleanup().await;
}

/// Polls `/api/stacks/{stack}` until `ready` holds of its `image_check`; returns the status.
async fn image_check_until(
    server: &crate::support::server::Server,
    stack: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = server.read(&format!("/api/stacks/{stack}")).await;
        assert_eq!(status, 200, "{body}");
        if ready(&body["image_check"]) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never: {what}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Issue 10, "Image updates through git": with `STACKHOOK_IMAGE_CHECK`, a tag that names a new
/// image in the registry is reported in the API, the metrics, the CLI and the status page; the
/// running container is not touched without `STACKHOOK_IMAGE_UPDATE=pull`. A service on an image
/// that came from no registry is reported as not checked.
async fn an_image_update_is_reported_everywhere_and_deploys_nothing(engine: TestEngine) {
    let (mut h, registry, repository) = setup(engine, "imgcheck").await;
    let image = registry.reference(&repository, "stable");
    let first = registry.publish(&repository, "stable", "1");
    h.compose("app", &app_and_other(&image, ""));
    h.repo.commit("a stack with an image from the registry");
    h.set("STACKHOOK_IMAGE_CHECK", "1s")
        .set("STACKHOOK_PUBLIC_STATUS", "true");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let stack = h.stack("app");
    let old_digest = registry.digest(&repository, "stable");
    let body = image_check_until(&server, &stack, "the first check", |check| {
        check["services"]["app"]["state"] == "up_to_date"
    })
    .await;
    let app = &body["image_check"]["services"]["app"];
    assert_eq!(app["digest"], old_digest.as_str(), "{body}");
    assert_eq!(app["image"], image.as_str(), "{body}");
    let other = &body["image_check"]["services"]["other"];
    assert_eq!(other["state"], "unknown", "{body}");
    assert!(
        other["reason"]
            .as_str()
            .unwrap()
            .contains("was not pulled from"),
        "{body}"
    );
    let before = h.containers("app").await;

    let second = registry.publish(&repository, "stable", "2");
    let new_digest = registry.digest(&repository, "stable");
    let body = image_check_until(&server, &stack, "the update is seen", |check| {
        check["services"]["app"]["state"] == "update_available"
    })
    .await;
    let app = &body["image_check"]["services"]["app"];
    assert_eq!(app["available"], new_digest.as_str(), "{body}");
    assert_eq!(app["running"], old_digest.as_str(), "{body}");
    assert_eq!(
        bare(app["image_id"].as_str().unwrap()),
        bare(&first),
        "{body}"
    );

    let (_, stacks) = server.read("/api/stacks").await;
    let listed = stacks
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stack"] == stack.as_str())
        .unwrap();
    assert_eq!(
        listed["image_check"]["services"]["app"]["state"],
        "update_available"
    );
    let (_, metrics) = server.read("/metrics").await;
    let line = format!("stackhook_image_update_available{{stack=\"{stack}\",service=\"app\"}} 1");
    assert!(
        metrics.as_str().unwrap().lines().any(|l| l == line),
        "no {line:?} in {metrics}"
    );
    let (_, page) = server.get(&format!("/stacks/{stack}")).await;
    assert!(
        page.as_str().unwrap().contains("image update: <b>app</b>"),
        "{page}"
    );
    let output = h.stackhook(&["status", "--json"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        status["stacks"][0]["image_check"]["services"]["app"]["available"],
        new_digest.as_str(),
        "{status}"
    );
    let output = h.stackhook(&["status"]).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&format!("image update: app: {image} names {new_digest}")),
        "{text}"
    );

    let after = h.containers("app").await;
    assert_eq!(
        after["app"].id, before["app"].id,
        "only reported: {after:?}"
    );
    server.stop().await;
    h.cleanup().await;
    remove_images(&h, &[&image, &first, &second]);
}

/// With `STACKHOOK_IMAGE_UPDATE=pull`, a tag that names a new image redeploys the stacks that run
/// it, recorded as an `image_update` with the image that went and the one that came; a stack
/// pinned by a rollback stays on its image.
async fn with_pull_an_image_update_redeploys_and_a_pinned_stack_stays(engine: TestEngine) {
    let (mut h, registry, repository) = setup(engine, "imgpull").await;
    let image = registry.reference(&repository, "stable");
    let first = registry.publish(&repository, "stable", "1");
    h.compose("app", &app_and_other(&image, ""));
    h.compose("held", &app_and_other(&image, ""));
    let commit = h.repo.commit("two stacks on one tag");
    h.set("STACKHOOK_IMAGE_CHECK", "1s")
        .set("STACKHOOK_IMAGE_UPDATE", "pull");
    let server = h.start().await;
    let health = server.settled().await;
    assert_eq!(health["last_deployment"]["succeeded"], true, "{health}");
    let (app, held) = (h.stack("app"), h.stack("held"));
    let path = format!("/stacks/{held}/rollback?to={commit}&wait=true");
    let (status, report) = deploy(&server, &path).await;
    assert_eq!(status, 200, "{report}");
    let image_of = |containers: &std::collections::BTreeMap<
        String,
        stackhook::engine::Container,
    >| { bare(containers["app"].image_id.as_str()).to_owned() };
    assert_eq!(image_of(&h.containers("held").await), bare(&first));

    let second = registry.publish(&repository, "stable", "2");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    while image_of(&h.containers("app").await) != bare(&second) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "app was never redeployed onto the new image"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The history says why: an image update, with the image that went and the one that came.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let update = loop {
        let (_, list) = server
            .read(&format!("/api/deployments?stack={app}&limit=10"))
            .await;
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["triggers"][0]["kind"] == "image_update" && d["status"] == "succeeded");
        if let Some(found) = found {
            break found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no image update in {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let id = update["deployment"].as_str().unwrap();
    let (_, update) = server.read(&format!("/api/deployments/{id}")).await;
    let message = update["triggers"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("app: {image} now names sha256:")),
        "{update}"
    );
    let stacks: Vec<&str> = update["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stack"].as_str().unwrap())
        .collect();
    assert_eq!(
        stacks,
        [app.as_str()],
        "the pinned stack is not in it: {update}"
    );
    let reason = update["stacks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["service"] == "app")
        .and_then(|a| a["reason"].as_str())
        .unwrap()
        .to_owned();
    // The plan names each image by the first 12 hex digits of its id.
    let went_and_came = format!(
        "sha256:{} → sha256:{}",
        &bare(&first)[..12],
        &bare(&second)[..12]
    );
    assert_eq!(
        reason,
        format!("image updated: {went_and_came}"),
        "{update}"
    );
    let log = update["stacks"][0]["log"].to_string();
    assert!(
        log.contains(&format!("pulling {image} for service app")),
        "{log}"
    );
    assert!(
        !log.contains("pulling stackhook-test"),
        "only app is pulled: {log}"
    );

    // The pinned stack runs what its rollback gave it, after checks that saw the new image.
    let body = image_check_until(&server, &app, "app checked again", |check| {
        check["services"]["app"]["state"] == "up_to_date"
    })
    .await;
    assert_eq!(
        body["image_check"]["services"]["app"]["digest"],
        registry.digest(&repository, "stable").as_str()
    );
    assert_eq!(image_of(&h.containers("held").await), bare(&first));
    let (_, held_status) = server.read(&format!("/api/stacks/{held}")).await;
    assert!(held_status["pinned"].is_object(), "{held_status}");

    server.stop().await;
    h.cleanup().await;
    remove_images(&h, &[&image, &first, &second]);
}

crate::engine_tests!(
    a_missing_image_is_pulled_with_progress_in_the_log,
    pull_always_recreates_only_services_whose_image_changed,
    pull_policy_never_fails_on_a_missing_image_and_touches_nothing,
    an_image_update_is_reported_everywhere_and_deploys_nothing,
    with_pull_an_image_update_redeploys_and_a_pinned_stack_stays,
);
