//! Image updates (issue 10): whether the tags that deployed services run now name other images
//! in their registries. Found updates are reported in the status, the API and the metrics (the
//! state keeps the last check, `store::ImageCheck`); with `STACKHOOK_IMAGE_UPDATE=pull` the
//! stack is redeployed with those services' images pulled (`Request::image_update`, trigger
//! `image_update`). Nothing here writes a file: the compose file's tag stays what git says, and
//! the plan's reason names the image that went and the one that came.
//!
//! Followed: a service whose `image:` is a tag (not a digest, not a rollback's image id) that
//! its pull policy lets a deployment pull (not `never`, not `build`, and not built here), in a
//! stack deployed as its commit wants it. A pinned stack (`store::Pin`) is checked and
//! reported, never moved. A stack is looked at only while its lane is idle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::worker::Worker;
use super::{Deployer, Request, Trigger, TriggerKind, labels};
use crate::config::ImageUpdate;
use crate::engine::{Engine, ImageId, registry::Tagged};
use crate::stack::StackName;
use crate::stack::compose::{Project, PullPolicy, Service};
use crate::store::{self, Finding, ImageCheck, ServiceImage};

/// How soon a stack that was deploying when its turn came is looked at again.
const AGAIN: Duration = Duration::from_secs(5);

/// Checks every deployed stack at once, then every `every`, for as long as the server runs.
/// Only the active slot checks.
pub async fn watch(worker: Worker, every: Duration, policy: ImageUpdate) {
    // The update each service was last redeployed for: one whose deployment failed (its old
    // container is back) is not tried again until its tag names yet another image.
    let mut tried: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut only: Option<BTreeSet<String>> = None;
    loop {
        let later = check(&worker, policy, only.as_ref(), &mut tried).await;
        let wait = if later.is_empty() {
            every
        } else {
            every.min(AGAIN)
        };
        only = (!later.is_empty()).then_some(later);
        tokio::time::sleep(wait).await;
    }
}

/// Checks the deployed stacks (only those of `only`, if given) whose lane is idle, records what
/// it found and, with `ImageUpdate::Pull`, redeploys what has an update. Returns the stacks to
/// look at again soon: those that were deploying, and those it redeployed.
async fn check(
    worker: &Worker,
    policy: ImageUpdate,
    only: Option<&BTreeSet<String>>,
    tried: &mut BTreeMap<(String, String), String>,
) -> BTreeSet<String> {
    let mut later = BTreeSet::new();
    let deployer = worker.deployer();
    if !deployer.slots.is_active() {
        return later;
    }
    let state = match store::load(&deployer.config.state_dir) {
        Ok(state) => state,
        Err(error) => {
            tracing::warn!("checking images: {error:#}");
            return later;
        }
    };
    let mut registry = Registry::default();
    for (stack, record) in &state.stacks {
        if only.is_some_and(|only| !only.contains(stack)) {
            continue;
        }
        let Ok(name) = StackName::parse(stack) else {
            continue;
        };
        if worker.deploying(stack) || worker.preparing() {
            later.insert(stack.clone());
            continue;
        }
        let project = match deployer.deployed_project(stack).await {
            Ok(Some(project)) => project,
            Ok(None) => {
                // Pending: what it runs is about to change anyway.
                forget(deployer, stack);
                continue;
            }
            Err(error) => {
                tracing::debug!(stack, "checking images: {error:#}");
                continue;
            }
        };
        let found = look(
            deployer.engine.as_ref(),
            &record.project,
            &project,
            &mut registry,
        )
        .await;
        let kept = found.clone();
        let mut current = true;
        let saved = store::update(&deployer.config.state_dir, |state| {
            // A stack deployed (or taken down) since the state was read may run other images
            // now: what was found is out of date, and it is looked at again soon.
            current = state.stacks.get(stack) == Some(record);
            if current {
                state.image_checks.insert(stack.clone(), kept);
            }
        });
        if let Err(error) = saved {
            tracing::warn!(stack, "recording the image check: {error:#}");
        }
        if !current {
            later.insert(stack.clone());
            continue;
        }
        tell(stack, state.image_checks.get(stack), &found);
        if policy != ImageUpdate::Pull || state.pins.contains_key(stack) {
            continue;
        }
        let mut services = BTreeSet::new();
        let mut moved = Vec::new();
        for (service, image) in found.updates() {
            let Finding::UpdateAvailable { available, .. } = &image.finding else {
                continue;
            };
            let key = (stack.clone(), service.clone());
            if tried.get(&key) == Some(available) {
                continue;
            }
            tried.insert(key, available.clone());
            services.insert(service.clone());
            moved.push(format!("{service}: {} now names {available}", image.image));
        }
        if services.is_empty() {
            continue;
        }
        tracing::info!(stack, "redeploying with new images: {}", moved.join("; "));
        let trigger = Trigger {
            message: Some(moved.join("; ")),
            ..Trigger::new(TriggerKind::ImageUpdate)
        };
        worker.trigger(Request::image_update(name, services).by(trigger));
        later.insert(stack.clone());
    }
    // Stacks no longer deployed have nothing to report.
    let gone: Vec<&String> = state
        .image_checks
        .keys()
        .filter(|stack| !state.stacks.contains_key(*stack))
        .collect();
    for stack in gone {
        forget(deployer, stack);
    }
    later
}

/// Drops what the last check found of `stack`.
fn forget(deployer: &Deployer, stack: &str) {
    let forgotten = store::update(&deployer.config.state_dir, |state| {
        state.image_checks.remove(stack);
    });
    if let Err(error) = forgotten {
        tracing::warn!(stack, "forgetting the image check: {error:#}");
    }
}

/// Logs what changed since the last check: a new update, or a check that cannot tell.
fn tell(stack: &str, before: Option<&ImageCheck>, now: &ImageCheck) {
    for (service, image) in &now.services {
        let known = before.and_then(|before| before.services.get(service));
        if known.map(|known| &known.finding) == Some(&image.finding) {
            continue;
        }
        match &image.finding {
            Finding::UpdateAvailable { available, .. } => tracing::info!(
                stack,
                service,
                "image update available: {} now names {available}",
                image.image
            ),
            Finding::Unknown { reason } => {
                tracing::warn!(
                    stack,
                    service,
                    "cannot check image {}: {reason}",
                    image.image
                );
            }
            Finding::UpToDate { .. } => {}
        }
    }
}

/// The registry digests of the tags asked for in one round, so that a tag several stacks run is
/// asked for once.
#[derive(Default)]
struct Registry {
    digests: BTreeMap<String, Result<String, String>>,
}

impl Registry {
    async fn digest(&mut self, engine: &dyn Engine, reference: &str) -> Result<String, String> {
        if let Some(known) = self.digests.get(reference) {
            return known.clone();
        }
        let digest = engine
            .registry_digest(reference)
            .await
            .map_err(|error| format!("{error:#}"));
        self.digests.insert(reference.to_owned(), digest.clone());
        digest
    }
}

/// What the engine and the registries say of the followed services of `project`, whose
/// containers run under the compose project `project_name`.
async fn look(
    engine: &dyn Engine,
    project_name: &str,
    project: &Project,
    registry: &mut Registry,
) -> ImageCheck {
    let mut check = ImageCheck {
        checked_at: super::now(),
        services: BTreeMap::new(),
    };
    let containers = match engine.containers(Some(project_name)).await {
        Ok(containers) => containers,
        Err(error) => {
            tracing::debug!(project = project_name, "checking images: {error:#}");
            return check;
        }
    };
    for (name, service) in &project.services {
        let Some(reference) = followed(service) else {
            continue;
        };
        let mut ids: Vec<&ImageId> = containers
            .iter()
            .filter(|c| c.label(labels::SERVICE) == Some(name.as_str()))
            .filter(|c| c.label(labels::ONEOFF) != Some("True"))
            .map(|c| &c.image_id)
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        let mut images = Vec::new();
        let mut error = None;
        for id in ids {
            match engine.image_digests(id.as_str()).await {
                Ok(digests) => images.push((id.clone(), pulled_from(reference, &digests))),
                Err(e) => error = Some(format!("{e:#}")),
            }
        }
        let (image_id, finding) = match error {
            Some(reason) => (String::new(), Finding::Unknown { reason }),
            None if images.iter().all(|(_, digests)| digests.is_empty()) => {
                finding(reference, &images, None)
            }
            None => {
                let digest = registry.digest(engine, reference).await;
                finding(reference, &images, Some(digest))
            }
        };
        let image = ServiceImage {
            image: reference.to_owned(),
            image_id,
            finding,
        };
        check.services.insert(name.clone(), image);
    }
    check
}

/// The tag a service's image follows, if the check follows it: an `image:` that is a tag (not a
/// digest, nor a rollback's image id) and that a deployment may pull.
fn followed(service: &Service) -> Option<&str> {
    let image = service.image.as_deref()?;
    if image.contains('@') || image.starts_with("sha256:") {
        return None;
    }
    match service.pull_policy {
        Some(PullPolicy::Never | PullPolicy::Build) => None,
        // A service that can build its image builds it when it is missing: it came from no
        // registry, unless it is always pulled.
        Some(PullPolicy::Missing) | None if service.build.is_some() => None,
        _ => Some(image),
    }
}

/// Whether the tag `reference`, which names `registry` (`None`: not asked, as no image was
/// pulled from its repository), names the images a service's containers run (`images`: each id
/// with the digests it was pulled as from that repository, `pulled_from`). Returns the id of the
/// image the finding is about: an outdated one where there is one.
fn finding(
    reference: &str,
    images: &[(ImageId, Vec<String>)],
    registry: Option<Result<String, String>>,
) -> (String, Finding) {
    let first = images
        .first()
        .map(|(id, _)| id.as_str().to_owned())
        .unwrap_or_default();
    let available = match registry {
        None => {
            let reason = format!(
                "the image it runs was not pulled from {} (it was built or loaded here)",
                repository(reference)
            );
            return (first, Finding::Unknown { reason });
        }
        Some(Err(reason)) => return (first, Finding::Unknown { reason }),
        Some(Ok(digest)) => digest,
    };
    match images
        .iter()
        .find(|(_, digests)| !digests.contains(&available))
    {
        None => (first, Finding::UpToDate { digest: available }),
        Some((id, digests)) => {
            let running = digests.first().cloned();
            let finding = Finding::UpdateAvailable { running, available };
            (id.as_str().to_owned(), finding)
        }
    }
}

/// The digests (`sha256:…`) among an image's registry digests (`<repository>@sha256:…`) that
/// it was pulled as from the repository of `reference`. Podman gives an image made here a
/// digest too, under `localhost/`, which names no registry.
fn pulled_from(reference: &str, repo_digests: &[String]) -> Vec<String> {
    let wanted = repository(reference);
    repo_digests
        .iter()
        .filter_map(|repo_digest| {
            let (name, digest) = repo_digest.rsplit_once('@')?;
            (repository(name) == wanted).then(|| digest.to_owned())
        })
        .collect()
}

/// A repository's full name, as the engines read it: `nginx` is
/// `registry-1.docker.io/library/nginx`, whatever its tag.
fn repository(name: &str) -> String {
    match Tagged::parse(name) {
        Ok(tagged) => format!("{}/{}", tagged.host, tagged.repository),
        Err(_) => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::deploy::worker::tests::{commit, git, until, worker};
    use crate::engine::fake::Fake;

    fn stack(name: &str) -> StackName {
        StackName::parse(name).unwrap()
    }

    fn running_image(engine: &Fake, container: &str) -> String {
        engine.by_name()[container].image_id.as_str().to_owned()
    }

    /// Two stacks on tags of the fake registry, `web` free and `held` pinned by a rollback; then
    /// both tags move. The check reports web's update in the state, the status and the metrics;
    /// with `pull`, web is redeployed onto the new image, recorded as an image update with both
    /// image ids in its reason, and held is not moved.
    #[tokio::test]
    async fn an_image_update_is_reported_and_pulled_and_a_pinned_stack_stays() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        commit(repo.path(), &[("web", "web:1"), ("held", "held:1")]);
        let engine = Arc::new(Fake::default());
        engine.publish("web:1", "sha256:d1", "sha256:img1");
        engine.publish("held:1", "sha256:h1", "sha256:himg1");
        let worker = worker(repo.path(), state.path(), engine.clone());
        let pull_both = Request {
            forced: [
                (stack("web"), Some(PullPolicy::Always)),
                (stack("held"), Some(PullPolicy::Always)),
            ]
            .into(),
            ..Request::default()
        };
        let report = worker.trigger(pull_both).report.await.unwrap();
        assert!(report.succeeded(), "{report:?}");
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo.path())
            .output()
            .unwrap();
        let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
        let pinned = Request::rollback(stack("held"), head);
        let report = worker.trigger(pinned).report.await.unwrap();
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(running_image(&engine, "web-web-1"), "sha256:img1");
        assert_eq!(running_image(&engine, "held-held-1"), "sha256:himg1");

        engine.publish("web:1", "sha256:d2", "sha256:img2");
        engine.publish("held:1", "sha256:h2", "sha256:himg2");
        let mut tried = BTreeMap::new();
        check(&worker, ImageUpdate::Report, None, &mut tried).await;
        let deployer = worker.deployer();
        let recorded = store::load(state.path()).unwrap();
        let web = &recorded.image_checks["web"].services["web"];
        assert_eq!(
            (web.image.as_str(), web.image_id.as_str(), &web.finding),
            (
                "web:1",
                "sha256:img1",
                &Finding::UpdateAvailable {
                    running: Some("sha256:d1".into()),
                    available: "sha256:d2".into(),
                }
            )
        );
        // The pin runs the image id its deployment recorded: no tag to follow.
        assert!(recorded.image_checks["held"].services.is_empty());
        let status = deployer.status(Some(&stack("web")), false).await.unwrap();
        let json = serde_json::to_value(&status[0]).unwrap();
        assert_eq!(
            json["image_check"]["services"]["web"]["state"],
            "update_available"
        );
        assert_eq!(
            json["image_check"]["services"]["web"]["available"],
            "sha256:d2"
        );
        let metrics = deployer.metrics.render(&recorded);
        assert!(
            metrics.contains("stackhook_image_update_available{stack=\"web\",service=\"web\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            running_image(&engine, "web-web-1"),
            "sha256:img1",
            "only reported"
        );

        let later = check(&worker, ImageUpdate::Pull, None, &mut tried).await;
        assert_eq!(later, BTreeSet::from(["web".to_owned()]), "looked at again");
        until("web runs the new image", || {
            running_image(&engine, "web-web-1") == "sha256:img2" && !worker.busy()
        })
        .await;
        assert_eq!(running_image(&engine, "held-held-1"), "sha256:himg1");
        let history = deployer.history().list(10, None).unwrap();
        let update = &history[0];
        assert_eq!(update.triggers[0].kind, TriggerKind::ImageUpdate);
        assert_eq!(
            update.triggers[0].message.as_deref(),
            Some("web: web:1 now names sha256:d2")
        );
        let stacks: Vec<&str> = update.stacks.iter().map(|s| s.stack.as_str()).collect();
        assert_eq!(stacks, ["web"], "{update:?}");
        let reasons: Vec<Option<&str>> = update.stacks[0]
            .actions
            .iter()
            .map(|a| a.reason.as_deref())
            .collect();
        assert_eq!(reasons, [Some("image updated: sha256:img1 → sha256:img2")]);
        let recorded = store::load(state.path()).unwrap();
        assert!(
            recorded.image_checks["web"].services.is_empty(),
            "the deployment made the finding out of date: {:?}",
            recorded.image_checks
        );

        check(&worker, ImageUpdate::Pull, None, &mut tried).await;
        let recorded = store::load(state.path()).unwrap();
        assert_eq!(
            recorded.image_checks["web"].services["web"].finding,
            Finding::UpToDate {
                digest: "sha256:d2".into()
            }
        );
        let metrics = deployer.metrics.render(&recorded);
        assert!(
            metrics.contains("stackhook_image_update_available{stack=\"web\",service=\"web\"} 0"),
            "{metrics}"
        );
    }

    /// An update whose deployment failed (the old container is back) is not deployed again at
    /// every check: only once the tag names yet another image.
    #[tokio::test]
    async fn an_update_is_pulled_once_per_new_digest() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        commit(repo.path(), &[("web", "web:1")]);
        let engine = Arc::new(Fake::default());
        engine.publish("web:1", "sha256:d1", "sha256:img1");
        let worker = worker(repo.path(), state.path(), engine.clone());
        let first = Request::stack(stack("web"), Some(PullPolicy::Always));
        assert!(worker.trigger(first).report.await.unwrap().succeeded());

        engine.publish("web:1", "sha256:d2", "sha256:img2");
        engine.fail(crate::engine::fake::Operation::Crash);
        let mut tried = BTreeMap::new();
        check(&worker, ImageUpdate::Pull, None, &mut tried).await;
        until("the update failed", || {
            worker
                .last_report()
                .is_some_and(|report| !report.succeeded())
        })
        .await;
        until("the worker is idle", || !worker.busy()).await;
        assert_eq!(running_image(&engine, "web-web-1"), "sha256:img1");
        let later = check(&worker, ImageUpdate::Pull, None, &mut tried).await;
        assert!(later.is_empty(), "not tried again: {later:?}");

        engine.publish("web:1", "sha256:d3", "sha256:img3");
        check(&worker, ImageUpdate::Pull, None, &mut tried).await;
        until("web runs the newest image", || {
            running_image(&engine, "web-web-1") == "sha256:img3" && !worker.busy()
        })
        .await;
    }

    fn images(entries: &[(&str, &[&str])]) -> Vec<(ImageId, Vec<String>)> {
        entries
            .iter()
            .map(|(id, digests)| {
                let digests = digests.iter().map(|d| (*d).to_owned()).collect();
                (ImageId::new(*id), digests)
            })
            .collect()
    }

    fn judge(
        reference: &str,
        running: &[(&str, &[&str])],
        registry: Option<Result<&str, &str>>,
        expected: expect_test::Expect,
    ) {
        let registry = registry.map(|r| r.map(str::to_owned).map_err(str::to_owned));
        let images: Vec<(ImageId, Vec<String>)> = images(running)
            .into_iter()
            .map(|(id, digests)| (id, pulled_from(reference, &digests)))
            .collect();
        let (id, finding) = finding(reference, &images, registry);
        expected.assert_eq(&format!(
            "{id} {}",
            serde_json::to_string(&finding).unwrap()
        ));
    }

    #[test]
    fn an_image_pulled_as_the_digest_the_tag_names_is_up_to_date() {
        judge(
            "nginx:1.27",
            &[("sha256:i1", &["nginx@sha256:aaa"])],
            Some(Ok("sha256:aaa")),
            expect_test::expect![[r#"sha256:i1 {"state":"up_to_date","digest":"sha256:aaa"}"#]],
        );
    }

    #[test]
    fn an_image_update_names_the_running_digest_of_the_same_repository() {
        judge(
            "127.0.0.1:5000/app:stable",
            &[(
                "sha256:i1",
                &["other/app@sha256:zzz", "127.0.0.1:5000/app@sha256:old"],
            )],
            Some(Ok("sha256:new")),
            expect_test::expect![[
                r#"sha256:i1 {"state":"update_available","running":"sha256:old","available":"sha256:new"}"#
            ]],
        );
        // Podman names Docker Hub's images in full, Docker does not.
        judge(
            "nginx",
            &[("sha256:i1", &["docker.io/library/nginx@sha256:old"])],
            Some(Ok("sha256:new")),
            expect_test::expect![[
                r#"sha256:i1 {"state":"update_available","running":"sha256:old","available":"sha256:new"}"#
            ]],
        );
    }

    #[test]
    fn one_replica_on_an_old_image_is_an_update() {
        judge(
            "app:1",
            &[
                ("sha256:i2", &["app@sha256:new"]),
                ("sha256:i1", &["app@sha256:old"]),
            ],
            Some(Ok("sha256:new")),
            expect_test::expect![[
                r#"sha256:i1 {"state":"update_available","running":"sha256:old","available":"sha256:new"}"#
            ]],
        );
    }

    #[test]
    fn what_cannot_be_compared_is_unknown_with_why() {
        // Podman names an image made here under `localhost/`, with a digest of its own.
        judge(
            "stackhook-test/busybox:latest",
            &[(
                "sha256:i1",
                &["localhost/stackhook-test/busybox@sha256:local"],
            )],
            None,
            expect_test::expect![[
                r#"sha256:i1 {"state":"unknown","reason":"the image it runs was not pulled from registry-1.docker.io/stackhook-test/busybox (it was built or loaded here)"}"#
            ]],
        );
        judge(
            "app:1",
            &[("sha256:i1", &[])],
            None,
            expect_test::expect![[
                r#"sha256:i1 {"state":"unknown","reason":"the image it runs was not pulled from registry-1.docker.io/library/app (it was built or loaded here)"}"#
            ]],
        );
        judge(
            "app:1",
            &[("sha256:i1", &["app@sha256:old"])],
            Some(Err("app:1: the registry has no such tag")),
            expect_test::expect![[
                r#"sha256:i1 {"state":"unknown","reason":"app:1: the registry has no such tag"}"#
            ]],
        );
    }

    #[test]
    fn only_tags_that_a_deployment_may_pull_are_followed() {
        let service = |image: Option<&str>, pull: Option<PullPolicy>, build: bool| Service {
            image: image.map(str::to_owned),
            pull_policy: pull,
            build: build.then(|| crate::stack::compose::Build {
                context: "/nowhere".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            (service(Some("nginx:1"), None, false), Some("nginx:1")),
            (
                service(Some("app:1"), Some(PullPolicy::Always), true),
                Some("app:1"),
            ),
            (service(None, None, true), None),
            (service(Some("app:1"), None, true), None),
            (service(Some("nginx@sha256:abc"), None, false), None),
            (service(Some("sha256:abc"), None, false), None),
            (
                service(Some("nginx:1"), Some(PullPolicy::Never), false),
                None,
            ),
            (
                service(Some("nginx:1"), Some(PullPolicy::Build), false),
                None,
            ),
        ];
        for (service, expected) in cases {
            assert_eq!(followed(&service), expected, "{service:?}");
        }
    }
}
