//! Carrying out one stack's plan through the engine: images, networks, volumes, containers in
//! dependency order, and the waits for health and for completion.
//!
//! What was running keeps running when something goes wrong: images are resolved before any
//! container is touched, and a recreate renames the old container aside and brings it back if its
//! replacement cannot be created or started.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::engine::{ContainerSpec, Engine, Health, State};
use crate::stack::compose::{Condition, Healthcheck, MountKind, Project, PullPolicy};

use super::labels;
use super::plan::{Action, ActionKind};

/// Lines that tell a user what a deployment did, kept for its report and also traced.
#[derive(Debug, Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Log {
    pub fn line(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        self.lines.lock().expect("log lock").push(text);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// A sink for an engine's pull or build progress: each distinct line once, prefixed with
    /// the image, so that a layer's hundred "Downloading" updates make one line.
    pub fn progress(&self, image: &str) -> impl Fn(&str) + Send + Sync + use<> {
        let log = self.clone();
        let image = image.to_owned();
        let seen = Mutex::new(HashSet::new());
        move |line: &str| {
            if seen.lock().expect("progress lock").insert(line.to_owned()) {
                log.line(format!("{image}: {line}"));
            }
        }
    }
}

/// The image a service runs: its reference and the id the engine has for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub reference: String,
    pub id: String,
}

/// Makes sure every service's image is present, pulling or building as its pull policy (or
/// `override_policy`, from `?pull=`) says. Touches no container.
pub async fn images(
    engine: &dyn Engine,
    project: &Project,
    override_policy: Option<PullPolicy>,
    log: &Log,
) -> anyhow::Result<BTreeMap<String, Image>> {
    let mut images = BTreeMap::new();
    for (name, service) in &project.services {
        let reference = image_reference(project, name);
        // `?pull=always` cannot pull an image that only a `build:` makes: such a service keeps
        // its own policy, as `docker compose up --pull always` builds rather than pulls it.
        let buildable_only = service.build.is_some() && service.image.is_none();
        let policy = match override_policy {
            Some(PullPolicy::Always) if buildable_only => service.pull_policy,
            other => other.or(service.pull_policy),
        }
        .unwrap_or(PullPolicy::Missing);
        let present = engine.image_id(&reference).await?;
        let id = match (policy, present, &service.build) {
            (PullPolicy::Build, _, Some(build)) | (PullPolicy::Missing, None, Some(build)) => {
                log.line(format!("building {reference} for service {name}"));
                let progress = log.progress(&reference);
                engine
                    .build(&reference, build, &progress)
                    .await
                    .with_context(|| format!("service {name}: building {reference}"))?;
                None
            }
            (PullPolicy::Always, _, _) | (PullPolicy::Missing, None, None) => {
                log.line(format!("pulling {reference} for service {name}"));
                let progress = log.progress(&reference);
                engine
                    .pull(&reference, &progress)
                    .await
                    .with_context(|| format!("service {name}: pulling image {reference}"))?;
                None
            }
            (PullPolicy::Never | PullPolicy::Build, None, _) => {
                let policy = if policy == PullPolicy::Never {
                    "never"
                } else {
                    "build"
                };
                bail!(
                    "service {name}: image {reference} is not present and pull_policy {policy} forbids pulling it"
                )
            }
            (_, Some(id), _) => Some(id),
        };
        let id = match id {
            Some(id) => id,
            None => engine.image_id(&reference).await?.with_context(|| {
                format!("service {name}: image {reference} is still missing after pulling it")
            })?,
        };
        images.insert(name.clone(), Image { reference, id });
    }
    Ok(images)
}

/// The image a service runs: its `image:`, or for a service that only has `build:`, the name
/// Docker Compose gives the image it builds, `<project>-<service>`.
pub fn image_reference(project: &Project, service: &str) -> String {
    project.services[service]
        .image
        .clone()
        .unwrap_or_else(|| format!("{}-{service}", project.name))
}

/// Creates the networks and volumes the project's services use.
pub async fn resources(engine: &dyn Engine, project: &Project) -> anyhow::Result<()> {
    let networks: BTreeSet<&String> = project
        .services
        .values()
        .filter(|service| service.network_mode.is_none())
        .flat_map(|service| service.networks.keys())
        .collect();
    for key in networks {
        let network = labels::network(project, key);
        engine
            .ensure_network(&network)
            .await
            .with_context(|| format!("network {}", network.name))?;
    }
    let volumes: BTreeSet<&String> = project
        .services
        .values()
        .flat_map(|service| &service.volumes)
        .filter(|mount| mount.kind == MountKind::Volume)
        .filter_map(|mount| mount.source.as_ref())
        .collect();
    for key in volumes {
        let volume = labels::volume(project, key);
        engine
            .ensure_volume(&volume)
            .await
            .with_context(|| format!("volume {}", volume.name))?;
    }
    Ok(())
}

/// Carries out `actions` (from `plan::plan`, already in dependency order). Every service that can
/// be deployed is; the error lists those that could not.
pub async fn containers(
    engine: &dyn Engine,
    project: &Project,
    actions: &[Action],
    specs: &BTreeMap<String, ContainerSpec>,
    log: &Log,
) -> anyhow::Result<()> {
    let mut failures: Vec<String> = Vec::new();
    let mut failed: BTreeSet<&str> = BTreeSet::new();
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut started: Vec<(&str, String)> = Vec::new();

    for action in actions.iter().filter(|a| a.kind == ActionKind::Remove) {
        let Some(container) = &action.container else {
            continue;
        };
        log.line(format!("removing {} ({})", container.name, reason(action)));
        if let Err(error) = stop_and_remove(engine, &container.id, None).await {
            failures.push(format!(
                "service {}: removing {}: {error:#}",
                action.service, container.name
            ));
        }
    }

    for action in actions.iter().filter(|a| a.kind != ActionKind::Remove) {
        let name = action.service.as_str();
        let service = &project.services[name];
        if let Some(container) = &action.container {
            ids.insert(name, container.id.clone());
        }
        if action.kind == ActionKind::Unchanged {
            continue;
        }
        let result = async {
            for (dependency, how) in &service.depends_on {
                if !project.services.contains_key(dependency) {
                    continue;
                }
                let outcome = match (failed.contains(dependency.as_str()), ids.get(dependency.as_str())) {
                    (true, _) | (_, None) => Err(anyhow::anyhow!("it was not deployed")),
                    (false, Some(id)) => {
                        let check = project.services[dependency].healthcheck.as_ref();
                        wait_for(engine, id, how.condition, check).await
                    }
                };
                match outcome {
                    Ok(()) => {}
                    Err(error) if how.required => {
                        bail!("dependency {dependency} is not {}: {error:#}", condition_name(how.condition))
                    }
                    Err(error) => log.line(format!(
                        "{name}: optional dependency {dependency} is not ready ({error:#}); starting anyway"
                    )),
                }
            }
            let spec = &specs[name];
            log.line(format!("{} {} ({})", verb(action.kind), spec.name, reason(action)));
            match (action.kind, &action.container) {
                (ActionKind::Create, _) => {
                    let id = engine.create(spec).await?;
                    engine.start(&id).await.with_context(|| format!("starting {}", spec.name))?;
                    Ok(id)
                }
                (ActionKind::Recreate, Some(old)) => recreate(engine, spec, old).await,
                (ActionKind::Start, Some(old)) => {
                    engine.start(&old.id).await.with_context(|| format!("starting {}", spec.name))?;
                    Ok(old.id.clone())
                }
                (kind, _) => bail!("internal error: {kind:?} without a container"),
            }
        }
        .await;
        match result {
            Ok(id) => {
                ids.insert(name, id.clone());
                started.push((name, id));
            }
            Err(error) => {
                failed.insert(name);
                failures.push(format!("service {name}: {error:#}"));
            }
        }
    }

    // Health is awaited for all started services at once, not one after another: a dependent
    // that needed it has already waited above.
    let waits = started.iter().filter_map(|(name, id)| {
        let check = project.services[*name].healthcheck.as_ref()?;
        if check.is_disabled() {
            return None;
        }
        Some(async move {
            let result = wait_for(engine, id, Condition::ServiceHealthy, Some(check)).await;
            (name, result)
        })
    });
    for (name, result) in join_all(waits).await {
        if let Err(error) = result {
            let logs = match ids.get(*name) {
                Some(id) => engine.logs(id, 20).await.unwrap_or_default(),
                None => String::new(),
            };
            failures.push(format!("service {name}: {error:#}{}", indent_logs(&logs)));
        }
    }

    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

/// Replaces `old` with a container made from `spec`. Compose stops the old container first, since
/// it may hold the host ports the new one needs; stackhook does too, but renames it aside first
/// and brings it back when the new container cannot be created or started.
async fn recreate(
    engine: &dyn Engine,
    spec: &ContainerSpec,
    old: &crate::engine::Container,
) -> anyhow::Result<String> {
    let aside = format!("{}_{}", &old.id[..old.id.len().min(12)], spec.name);
    engine
        .rename(&old.id, &aside)
        .await
        .with_context(|| format!("renaming {} aside", old.name))?;
    let new_id = match engine.create(spec).await {
        Ok(id) => id,
        Err(error) => {
            restore(engine, old, &spec.name, false).await;
            return Err(error);
        }
    };
    let was_running = old.state == State::Running;
    let stop_timeout = spec.service.stop_grace_period;
    if was_running && let Err(error) = engine.stop(&old.id, stop_timeout).await {
        let _ = engine.remove(&new_id).await;
        restore(engine, old, &spec.name, false).await;
        return Err(error).context(format!("stopping {}", old.name));
    }
    if let Err(error) = engine.start(&new_id).await {
        let _ = engine.remove(&new_id).await;
        restore(engine, old, &spec.name, was_running).await;
        return Err(error).context(format!("starting {}", spec.name));
    }
    engine
        .remove(&old.id)
        .await
        .with_context(|| format!("removing the replaced container {aside}"))?;
    Ok(new_id)
}

/// Gives the old container back its name and, if it was running, starts it again. Failures here
/// are logged: the original error is the one to report.
async fn restore(engine: &dyn Engine, old: &crate::engine::Container, name: &str, start: bool) {
    if let Err(error) = engine.rename(&old.id, name).await {
        tracing::error!("restoring {name}: {error:#}");
    }
    if start && let Err(error) = engine.start(&old.id).await {
        tracing::error!("restarting {name}: {error:#}");
    }
}

pub async fn stop_and_remove(
    engine: &dyn Engine,
    id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    engine.stop(id, timeout).await?;
    engine.remove(id).await
}

/// Waits until the container meets `condition`, within a deadline derived from its health check.
pub async fn wait_for(
    engine: &dyn Engine,
    id: &str,
    condition: Condition,
    check: Option<&Healthcheck>,
) -> anyhow::Result<()> {
    match condition {
        Condition::ServiceStarted => Ok(()),
        Condition::ServiceHealthy => {
            let Some(check) = check.filter(|c| !c.is_disabled()) else {
                bail!("it has no health check")
            };
            let deadline = Instant::now() + health_deadline(check);
            let pause = check
                .interval
                .unwrap_or(Duration::from_secs(30))
                .clamp(Duration::from_millis(100), Duration::from_millis(500));
            loop {
                match engine.health(id, check).await? {
                    Health::Healthy => return Ok(()),
                    Health::Unhealthy => bail!("it is unhealthy"),
                    Health::Starting if Instant::now() >= deadline => {
                        bail!(
                            "it did not become healthy within {}",
                            humantime::format_duration(health_deadline(check))
                        )
                    }
                    Health::Starting => tokio::time::sleep(pause).await,
                }
            }
        }
        Condition::ServiceCompletedSuccessfully => {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let status = engine.inspect(id).await?;
                match (&status.state, status.exit_code) {
                    (State::Exited | State::Dead, Some(0)) => return Ok(()),
                    (State::Exited | State::Dead, code) => {
                        bail!("it exited with code {}", code.unwrap_or(-1))
                    }
                    _ if Instant::now() >= deadline => bail!("it did not complete within 10m"),
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
}

/// How long a health check may take to pass, by Docker's rules: the start period, then `retries`
/// failed probes of `interval + timeout` each (defaults 30s, 30s, 3), plus a little slack.
fn health_deadline(check: &Healthcheck) -> Duration {
    let interval = check.interval.unwrap_or(Duration::from_secs(30));
    let timeout = check.timeout.unwrap_or(Duration::from_secs(30));
    let retries = check.retries.unwrap_or(3);
    let deadline = check.start_period.unwrap_or_default()
        + (interval + timeout) * (retries + 1)
        + Duration::from_secs(2);
    deadline.min(Duration::from_secs(600))
}

fn condition_name(condition: Condition) -> &'static str {
    match condition {
        Condition::ServiceStarted => "started",
        Condition::ServiceHealthy => "healthy",
        Condition::ServiceCompletedSuccessfully => "completed successfully",
    }
}

fn verb(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Create => "creating",
        ActionKind::Recreate => "recreating",
        ActionKind::Start => "starting",
        ActionKind::Remove => "removing",
        ActionKind::Unchanged => "keeping",
    }
}

fn reason(action: &Action) -> &str {
    action.reason.as_deref().unwrap_or("unchanged")
}

fn indent_logs(logs: &str) -> String {
    if logs.trim().is_empty() {
        return String::new();
    }
    format!(
        "; last output:\n{}",
        logs.trim_end()
            .lines()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::plan::plan;
    use crate::deploy::{labels, plan::Wanted};
    use crate::engine::Container;
    use crate::engine::fake::{Fake, Operation};
    use crate::stack::compose::Service;

    fn project() -> Project {
        Project {
            name: "demo".into(),
            working_dir: "/repo/services/demo".into(),
            config_files: vec!["/repo/services/demo/compose.yaml".into()],
            services: BTreeMap::from([(
                "web".to_owned(),
                Service {
                    image: Some("web:2".into()),
                    ..Service::default()
                },
            )]),
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            files_read: vec![],
            variables: BTreeMap::new(),
        }
    }

    /// Recreates `web` (running "old", config hash "h1") with config hash "h2", the fake failing
    /// `failing`; returns the outcome and the containers left, by name, as (id, state).
    async fn recreate_with(failing: Option<Operation>) -> (Result<(), String>, Vec<String>) {
        let engine = Fake::default();
        let project = project();
        let origin = labels::Origin {
            stack: "demo",
            commit: "c1",
        };
        let old = labels::container_spec(&project, "web", "web:1", "sha256:web:1", "h1", &origin);
        engine.insert(Container {
            id: "old".into(),
            name: old.name.clone(),
            image: "web:1".into(),
            image_id: "sha256:web:1".into(),
            labels: old.labels,
            state: State::Running,
        });
        if let Some(operation) = failing {
            engine.fail(operation);
        }
        let spec = labels::container_spec(&project, "web", "web:2", "sha256:web:2", "h2", &origin);
        let wanted = BTreeMap::from([(
            "web".to_owned(),
            Wanted {
                config_hash: "h2".into(),
                image_id: Some("sha256:web:2".into()),
            },
        )]);
        let observed = engine.containers(Some("demo")).await.unwrap();
        let actions = plan(&project, &wanted, &observed).unwrap();
        assert_eq!(actions[0].kind, ActionKind::Recreate);
        let specs = BTreeMap::from([("web".to_owned(), spec)]);
        let result = containers(&engine, &project, &actions, &specs, &Log::default())
            .await
            .map_err(|error| format!("{error:#}"));
        let left = engine
            .by_name()
            .into_iter()
            .map(|(name, c)| format!("{name} {} {:?}", c.id, c.state))
            .collect();
        (result, left)
    }

    #[tokio::test]
    async fn recreate_replaces_the_old_container() {
        let (result, left) = recreate_with(None).await;
        assert_eq!(result, Ok(()));
        assert_eq!(left, ["demo-web-1 fake00000001 Running"]);
    }

    #[tokio::test]
    async fn the_old_container_keeps_running_when_its_replacement_cannot_be_created() {
        let (result, left) = recreate_with(Some(Operation::Create)).await;
        assert_eq!(
            result,
            Err("service web: creating demo-web-1: injected failure".into())
        );
        assert_eq!(left, ["demo-web-1 old Running"]);
    }

    #[tokio::test]
    async fn the_old_container_comes_back_when_its_replacement_cannot_start() {
        let (result, left) = recreate_with(Some(Operation::Start)).await;
        assert_eq!(
            result,
            Err("service web: starting demo-web-1: starting fake00000001: injected failure".into())
        );
        assert_eq!(
            left,
            ["demo-web-1 old Running"],
            "renamed back and started again"
        );
    }

    #[test]
    fn progress_lines_reach_the_log_once_each() {
        let log = Log::default();
        let progress = log.progress("app:1");
        for line in [
            "abc Downloading",
            "abc Downloading",
            "abc Pull complete",
            "abc Downloading",
        ] {
            progress(line);
        }
        assert_eq!(
            log.lines(),
            ["app:1: abc Downloading", "app:1: abc Pull complete"]
        );
    }
}
