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

use crate::engine::{Container, ContainerSpec, Engine, Health, ImageId, State};
use crate::history::LogFile;
use crate::stack::compose::{
    Condition, Healthcheck, Hook, MountKind, Project, PullPolicy, UpdateOrder,
};

use super::labels;
use super::plan::{self, Action, Plan, Step};

/// Lines that tell a user what a deployment did, kept for its report, traced, and appended to
/// the deployment's log in the history as they come.
#[derive(Debug, Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    /// The history's log file, and the stack each line is prefixed with there.
    file: Option<(LogFile, Arc<str>)>,
}

impl Log {
    /// A log whose lines also go to `file`, prefixed with `stack`.
    pub fn to(file: LogFile, stack: &str) -> Log {
        Log {
            lines: Arc::default(),
            file: Some((file, stack.into())),
        }
    }

    pub fn line(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!("{text}");
        if let Some((file, stack)) = &self.file {
            file.line(&format!("{stack}: {text}"));
        }
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
    pub id: ImageId,
}

/// Makes sure every service's image is present, pulling or building as its pull policy (or
/// `override_policy`, from `?pull=`) says; the services in `always` are pulled as with
/// `pull=always` (an image update). Touches no container.
pub async fn images(
    engine: &dyn Engine,
    project: &Project,
    override_policy: Option<PullPolicy>,
    always: &BTreeSet<String>,
    log: &Log,
) -> anyhow::Result<BTreeMap<String, Image>> {
    let mut images = BTreeMap::new();
    for (name, service) in &project.services {
        let reference = image_reference(project, name);
        // `?pull=always` cannot pull an image that only a `build:` makes: such a service keeps
        // its own policy, as `docker compose up --pull always` builds rather than pulls it.
        let buildable_only = service.build.is_some() && service.image.is_none();
        let asked = match always.contains(name) {
            true => Some(PullPolicy::Always),
            false => override_policy,
        };
        let policy = match asked {
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

/// Carries out a stack's plan. Every service that can be deployed is; the error lists those that
/// could not.
///
/// A recreated service is gated: its old container waits, stopped (or still running, for
/// `start-first`) and renamed aside, until the new one runs and, where it has a health check, is
/// healthy. Only then is the old one removed; otherwise the new one is removed and the old one
/// comes back (issue 9, "Updates gated on health").
pub async fn containers(
    engine: &dyn Engine,
    project: &Project,
    plan: &Plan,
    log: &Log,
) -> anyhow::Result<()> {
    let mut failures: Vec<String> = Vec::new();
    let mut failed: BTreeSet<&str> = BTreeSet::new();
    // Every container of each service that runs, by service: a dependent waits for them all.
    let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut started: Vec<Started<'_>> = Vec::new();

    for step in &plan.steps {
        let Action::Remove { old } = &step.action else {
            continue;
        };
        log.line(format!("removing {} ({})", old.name, reason(step)));
        // Compose runs `pre_stop` where it stops a container of a service it still knows (a
        // surplus replica), and leaves the container be when a hook fails (its `stopContainer`).
        let pre_stop = match project.services.get(&step.service) {
            Some(service) if old.state == State::Running => &service.pre_stop[..],
            _ => &[],
        };
        if let Err(error) = run_hooks(engine, &old.id, "pre_stop", pre_stop).await {
            failures.push(format!("service {}: {error:#}", step.service));
            continue;
        }
        if let Err(error) = stop_and_remove(engine, &old.id, None).await {
            failures.push(format!(
                "service {}: removing {}: {error:#}",
                step.service, old.name
            ));
        }
    }

    for step in &plan.steps {
        let name = step.service.as_str();
        match &step.action {
            Action::Remove { .. } => continue,
            Action::Keep { current } => {
                ids.entry(name).or_default().push(current.id.clone());
                continue;
            }
            Action::Create { .. } | Action::Start { .. } | Action::Recreate { .. } => {}
        }
        let service = &project.services[name];
        let result = async {
            for (dependency, how) in &service.depends_on {
                if !project.services.contains_key(dependency) {
                    continue;
                }
                let outcome = match (failed.contains(dependency.as_str()), ids.get(dependency.as_str())) {
                    (true, _) | (_, None) => Err(anyhow::anyhow!("it was not deployed")),
                    (false, Some(containers)) => {
                        let check = project.services[dependency].healthcheck.as_ref();
                        let waits = containers.iter().map(|id| wait_for(engine, id, how.condition, check));
                        join_all(waits).await.into_iter().collect()
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
            match &step.action {
                Action::Create { spec } => {
                    log.line(format!("creating {} ({})", spec.name, reason(step)));
                    let id = engine.create(spec).await?;
                    engine.start(&id).await.with_context(|| format!("starting {}", spec.name))?;
                    run_hooks(engine, &id, "post_start", &service.post_start).await?;
                    Ok((id, None))
                }
                Action::Start { old, name } => {
                    log.line(format!("starting {name} ({})", reason(step)));
                    if old.name != *name {
                        engine.rename(&old.id, name).await.with_context(|| format!("renaming {} back to {name}", old.name))?;
                    }
                    engine.start(&old.id).await.with_context(|| format!("starting {name}"))?;
                    run_hooks(engine, &old.id, "post_start", &service.post_start).await?;
                    Ok((old.id.clone(), None))
                }
                Action::Recreate { old, spec, order } => {
                    log.line(format!("recreating {} ({}{})", spec.name, reason(step), match order {
                        UpdateOrder::StopFirst => "",
                        UpdateOrder::StartFirst => "; start-first",
                    }));
                    let (id, replaced) = recreate(engine, spec, old, *order).await?;
                    Ok((id, Some(replaced)))
                }
                Action::Keep { .. } | Action::Remove { .. } => unreachable!("skipped above"),
            }
        }
        .await;
        match result {
            Ok((id, replaced)) => {
                ids.entry(name).or_default().push(id.clone());
                started.push(Started {
                    service: name,
                    id,
                    replaced,
                });
            }
            Err(error) => {
                failed.insert(name);
                failures.push(format!("service {name}: {error:#}"));
            }
        }
    }

    // The gates are awaited for all started services at once, not one after another: a
    // dependent that needed one has already waited above.
    let gates = started.into_iter().map(|started| async move {
        let service = &project.services[started.service];
        let passed = gate(
            engine,
            &started.id,
            service.healthcheck.as_ref(),
            service.update_monitor,
        )
        .await;
        (started, passed)
    });
    for (started, passed) in join_all(gates).await {
        let service = started.service;
        match (passed, started.replaced) {
            (Ok(()), None) => {}
            (Ok(()), Some(replaced)) => {
                let removed = if replaced.running {
                    stop_and_remove(engine, &replaced.old.id, None).await
                } else {
                    engine.remove(&replaced.old.id).await
                };
                if let Err(error) = removed {
                    failures.push(format!(
                        "service {service}: removing the replaced container {}: {error:#}",
                        replaced.aside
                    ));
                }
            }
            (Err(error), replaced) => {
                let logs = engine.logs(&started.id, 20).await.unwrap_or_default();
                let mut failure = format!("service {service}: {error:#}");
                if let Some(replaced) = replaced {
                    log.line(format!(
                        "{service}: the new container failed its gate; bringing the old one back"
                    ));
                    match roll_back(engine, &started.id, &replaced).await {
                        Ok(()) => failure.push_str("; the old container is back"),
                        Err(error) => failure.push_str(&format!(
                            "; bringing the old container back failed: {error:#}"
                        )),
                    }
                }
                failure.push_str(&indent_logs(&logs));
                failures.push(failure);
            }
        }
    }

    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

/// A container that was created or started, waiting for its gate.
struct Started<'a> {
    service: &'a str,
    id: String,
    /// For a recreate: the old container, kept aside until the new one passes.
    replaced: Option<Replaced>,
}

/// A recreate's old container, renamed aside.
#[derive(Debug)]
struct Replaced {
    old: Container,
    /// Its name while aside.
    aside: String,
    /// Its own name, to give back.
    name: String,
    /// Whether it ran before the recreate (and so is started again on a roll-back).
    was_running: bool,
    /// Whether it still runs (`start-first`).
    running: bool,
}

/// Replaces `old` with a container made from `spec`, keeping `old` aside. Stop-first (Compose's
/// order) stops the old container before starting the new one, since it may hold the host ports
/// the new one needs; start-first leaves it running. If the new container cannot be created or
/// started, the old one is brought back at once.
async fn recreate(
    engine: &dyn Engine,
    spec: &ContainerSpec,
    old: &Container,
    order: UpdateOrder,
) -> anyhow::Result<(String, Replaced)> {
    let aside = plan::aside_name(old, &spec.name);
    // An interrupted pass may have left it aside already; Docker refuses a rename to its own name.
    if old.name != aside {
        engine
            .rename(&old.id, &aside)
            .await
            .with_context(|| format!("renaming {} aside", old.name))?;
    }
    let running = matches!(old.state, State::Running | State::Restarting);
    let mut replaced = Replaced {
        old: old.clone(),
        // A container left aside by an interrupted recreate was the running one until that
        // recreate stopped it: a roll-back starts it again.
        was_running: running || old.name == aside,
        aside,
        name: spec.name.clone(),
        running,
    };
    let new_id = match engine.create(spec).await {
        Ok(id) => id,
        Err(error) => {
            restore_after(engine, &replaced).await;
            return Err(error);
        }
    };
    if order == UpdateOrder::StopFirst && running {
        if let Err(error) = engine.stop(&old.id, spec.service.stop_grace_period).await {
            let _ = engine.remove(&new_id).await;
            restore_after(engine, &replaced).await;
            return Err(error).context(format!("stopping {}", old.name));
        }
        replaced.running = false;
    }
    let started = match engine.start(&new_id).await {
        Ok(()) => run_hooks(engine, &new_id, "post_start", &spec.service.post_start).await,
        Err(error) => Err(error).context(format!("starting {}", spec.name)),
    };
    if let Err(error) = started {
        let _ = engine.remove(&new_id).await;
        restore_after(engine, &replaced).await;
        return Err(error);
    }
    Ok((new_id, replaced))
}

/// Removes a replacement that failed its gate and brings the old container back.
async fn roll_back(engine: &dyn Engine, new_id: &str, replaced: &Replaced) -> anyhow::Result<()> {
    engine
        .remove(new_id)
        .await
        .context("removing the new container")?;
    restore(engine, replaced).await
}

/// Gives the old container back its name and, if it was stopped for the recreate, starts it
/// again.
async fn restore(engine: &dyn Engine, replaced: &Replaced) -> anyhow::Result<()> {
    engine
        .rename(&replaced.old.id, &replaced.name)
        .await
        .with_context(|| format!("renaming {} back to {}", replaced.aside, replaced.name))?;
    if replaced.was_running && !replaced.running {
        engine
            .start(&replaced.old.id)
            .await
            .with_context(|| format!("starting {}", replaced.name))?;
    }
    Ok(())
}

/// Brings the old container back after a failed step of its recreate. A failure here is logged:
/// the step's own error is the one to report.
async fn restore_after(engine: &dyn Engine, replaced: &Replaced) {
    if let Err(error) = restore(engine, replaced).await {
        tracing::error!("restoring {}: {error:#}", replaced.name);
    }
}

/// Whether a container that was just started is what it should be: still running (or done, with
/// status 0, for a one-shot service), where it has a health check healthy, and, where the service
/// sets `deploy.update_config.monitor`, still running when that period is over.
pub async fn gate(
    engine: &dyn Engine,
    id: &str,
    check: Option<&Healthcheck>,
    monitor: Option<Duration>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    still_up(engine, id).await?;
    if let Some(check) = check.filter(|c| !c.is_disabled()) {
        wait_for(engine, id, Condition::ServiceHealthy, Some(check)).await?;
    }
    if let Some(monitor) = monitor {
        let until = started + monitor.min(Duration::from_secs(600));
        while Instant::now() < until {
            tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(250))).await;
            still_up(engine, id).await?;
        }
    }
    Ok(())
}

/// Fails when the container exited with a status other than 0.
async fn still_up(engine: &dyn Engine, id: &str) -> anyhow::Result<()> {
    let status = engine.inspect(id).await?;
    match (&status.state, status.exit_code) {
        (State::Exited | State::Dead, Some(0)) => Ok(()),
        (State::Exited | State::Dead, code) => bail!("it exited with code {}", code.unwrap_or(-1)),
        (State::Restarting, code) => bail!(
            "it keeps restarting (last exit code {})",
            code.unwrap_or(-1)
        ),
        _ => Ok(()),
    }
}

/// Runs a service's `post_start` or `pre_stop` hooks (`kind`) in a container, in order. The
/// first that fails ends the run and fails it, as in Docker Compose ("web hook exited with
/// status 1"), with the hook's last output.
async fn run_hooks(
    engine: &dyn Engine,
    id: &str,
    kind: &str,
    hooks: &[Hook],
) -> anyhow::Result<()> {
    for (index, hook) in hooks.iter().enumerate() {
        let outcome = engine
            .exec(id, hook)
            .await
            .with_context(|| format!("{kind}[{index}] hook"))?;
        if outcome.exit_code != 0 {
            let lines: Vec<&str> = outcome.output.lines().collect();
            let last = lines[lines.len().saturating_sub(20)..].join("\n");
            bail!(
                "{kind}[{index}] hook exited with status {}{}",
                outcome.exit_code,
                indent_logs(&last)
            );
        }
    }
    Ok(())
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
                    // The engine calls a container that stopped running unhealthy; one that
                    // exited is better described by its exit status.
                    Health::Unhealthy => {
                        let status = engine.inspect(id).await?;
                        if matches!(status.state, State::Exited | State::Dead) {
                            bail!("it exited with code {}", status.exit_code.unwrap_or(-1))
                        }
                        bail!("it is unhealthy")
                    }
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
/// failed probes of `interval + timeout` each (defaults 30s, 30s, 3), plus a little slack, at most
/// ten minutes. Saturating: the durations come from compose files, and an absurd one must not
/// overflow (issue 9).
fn health_deadline(check: &Healthcheck) -> Duration {
    let interval = check.interval.unwrap_or(Duration::from_secs(30));
    let timeout = check.timeout.unwrap_or(Duration::from_secs(30));
    let retries = check.retries.unwrap_or(3);
    let probes = interval
        .saturating_add(timeout)
        .saturating_mul(retries.saturating_add(1));
    let deadline = check
        .start_period
        .unwrap_or_default()
        .saturating_add(probes)
        .saturating_add(Duration::from_secs(2));
    deadline.min(Duration::from_secs(600))
}

fn condition_name(condition: Condition) -> &'static str {
    match condition {
        Condition::ServiceStarted => "started",
        Condition::ServiceHealthy => "healthy",
        Condition::ServiceCompletedSuccessfully => "completed successfully",
    }
}

fn reason(step: &Step) -> &str {
    step.reason.as_deref().unwrap_or("unchanged")
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
    use expect_test::{Expect, expect};

    use super::*;
    use crate::deploy::plan::{Wanted, plan};
    use crate::engine::fake::{Fake, Operation};
    use crate::stack::ConfigHash;
    use crate::stack::compose::Service;

    fn project(healthcheck: bool) -> Project {
        let healthcheck = healthcheck.then(|| Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(Duration::from_millis(100)),
            timeout: None,
            retries: None,
            start_period: None,
            start_interval: None,
        });
        Project {
            name: "demo".into(),
            working_dir: "/repo/services/demo".into(),
            config_files: vec!["/repo/services/demo/compose.yaml".into()],
            services: BTreeMap::from([(
                "web".to_owned(),
                Service {
                    image: Some("web:2".into()),
                    healthcheck,
                    ..Service::default()
                },
            )]),
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            files_read: vec![],
            sealed: BTreeMap::new(),
            variables: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// A container of `web` as an earlier deploy left it, with config hash `hash`.
    fn existing(project: &Project, id: &str, name: &str, hash: &str, state: State) -> Container {
        let origin = labels::Origin {
            stack: "demo",
            commit: "c1",
        };
        let image = ImageId::new("sha256:web:1");
        let spec = labels::container_spec(
            project,
            "web",
            1,
            "web:1",
            Some(&image),
            &ConfigHash::new(hash),
            &origin,
        );
        Container {
            id: id.into(),
            name: name.replace("<id>", &id[..id.len().min(12)]),
            image: "web:1".into(),
            image_id: image,
            labels: spec.labels,
            state,
        }
    }

    /// Plans and applies `web` at config hash "h2" over what `engine` holds, and checks the
    /// outcome, the containers left (name, id, state) and what the engine was asked, in order.
    async fn check(engine: &Fake, project: &Project, order: UpdateOrder, expected: Expect) {
        let origin = labels::Origin {
            stack: "demo",
            commit: "c2",
        };
        let config_hash = ConfigHash::new("h2");
        let image = ImageId::new("sha256:web:2");
        let spec = labels::container_spec(
            project,
            "web",
            1,
            "web:2",
            Some(&image),
            &config_hash,
            &origin,
        );
        let wanted = BTreeMap::from([(
            "web".to_owned(),
            Wanted {
                config_hash,
                image: Some(image),
                specs: vec![spec],
                order,
            },
        )]);
        let observed = engine.containers(Some("demo")).await.unwrap();
        let plan = plan(project, &wanted, &observed).unwrap();
        let outcome = match containers(engine, project, &plan, &Log::default()).await {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        let left: Vec<String> = engine
            .by_name()
            .into_iter()
            .map(|(name, c)| format!("{name} {} {:?}", c.id, c.state))
            .collect();
        let actual = format!(
            "{outcome}\nleft: {}\nasked: {}\n",
            left.join(", "),
            engine.history().join(", ")
        );
        expected.assert_eq(&actual);
    }

    /// An engine running the old `web`, failing `failing`.
    fn running_old(project: &Project, failing: &[Operation]) -> Fake {
        let engine = Fake::default();
        engine.insert(existing(
            project,
            "old000000000",
            "demo-web-1",
            "h1",
            State::Running,
        ));
        for operation in failing {
            engine.fail(*operation);
        }
        engine
    }

    #[tokio::test]
    async fn recreate_replaces_the_old_container_once_the_new_one_runs() {
        let project = project(true);
        let engine = running_old(&project, &[]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, remove old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn the_old_container_keeps_running_when_its_replacement_cannot_be_created() {
        let project = project(false);
        let engine = running_old(&project, &[Operation::Create]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            service web: creating demo-web-1: injected failure
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, rename old000000000 demo-web-1
        "#]]).await;
    }

    #[tokio::test]
    async fn the_old_container_comes_back_when_its_replacement_cannot_start() {
        let project = project(false);
        let engine = running_old(&project, &[Operation::Start]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            service web: starting demo-web-1: starting fake00000001: injected failure
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, remove fake00000001, rename old000000000 demo-web-1, start old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn the_old_container_comes_back_when_its_replacement_is_unhealthy() {
        let project = project(true);
        let engine = running_old(&project, &[Operation::Health]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            service web: it is unhealthy; the old container is back; last output:
              | last words of fake00000001
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, remove fake00000001, rename old000000000 demo-web-1, start old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn the_old_container_comes_back_when_its_replacement_exits() {
        let project = project(false);
        let engine = running_old(&project, &[Operation::Crash]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            service web: it exited with code 1; the old container is back; last output:
              | last words of fake00000001
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, remove fake00000001, rename old000000000 demo-web-1, start old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn start_first_stops_the_old_container_only_once_the_new_one_is_healthy() {
        let project = project(true);
        let engine = running_old(&project, &[]);
        check(&engine, &project, UpdateOrder::StartFirst, expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, start fake00000001, stop old000000000, remove old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn start_first_never_stops_the_old_container_when_the_new_one_is_unhealthy() {
        let project = project(true);
        let engine = running_old(&project, &[Operation::Health]);
        check(&engine, &project, UpdateOrder::StartFirst, expect![[r#"
            service web: it is unhealthy; the old container is back; last output:
              | last words of fake00000001
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, start fake00000001, remove fake00000001, rename old000000000 demo-web-1
        "#]]).await;
    }

    #[tokio::test]
    async fn a_pass_after_dying_mid_recreate_replaces_the_container_left_aside() {
        let project = project(false);
        let engine = Fake::default();
        engine.insert(existing(
            &project,
            "old000000000",
            "<id>_demo-web-1",
            "h1",
            State::Exited,
        ));
        check(
            &engine,
            &project,
            UpdateOrder::StopFirst,
            expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: create demo-web-1, start fake00000001, remove old000000000
        "#]],
        )
        .await;
    }

    #[tokio::test]
    async fn a_pass_after_dying_before_the_new_container_started_starts_over() {
        let project = project(false);
        let engine = Fake::default();
        engine.insert(existing(
            &project,
            "old000000000",
            "<id>_demo-web-1",
            "h1",
            State::Exited,
        ));
        engine.insert(existing(
            &project,
            "half00000000",
            "demo-web-1",
            "h2",
            State::Created,
        ));
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: stop half00000000, remove half00000000, create demo-web-1, start fake00000001, remove old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn a_pass_after_dying_mid_recreate_restores_a_container_that_is_still_wanted() {
        let project = project(false);
        let engine = Fake::default();
        let mut current = existing(
            &project,
            "old000000000",
            "<id>_demo-web-1",
            "h2",
            State::Exited,
        );
        current.image_id = ImageId::new("sha256:web:2");
        engine.insert(current);
        check(
            &engine,
            &project,
            UpdateOrder::StopFirst,
            expect![[r#"
            ok
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 demo-web-1, start old000000000
        "#]],
        )
        .await;
    }

    /// `project(false)` whose `web` has two `post_start` and one `pre_stop` hooks.
    fn project_with_hooks() -> Project {
        let hook = |command: &str| Hook {
            command: vec!["sh".into(), "-c".into(), command.into()],
            ..Hook::default()
        };
        let mut project = project(false);
        let web = project.services.get_mut("web").unwrap();
        web.post_start = vec![hook("touch /started"), hook("touch /again")];
        web.pre_stop = vec![hook("touch /stopping")];
        project
    }

    #[tokio::test]
    async fn post_start_hooks_run_in_order_once_the_new_container_started() {
        let project = project_with_hooks();
        let engine = running_old(&project, &[]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, exec fake00000001 sh -c touch /started, exec fake00000001 sh -c touch /again, remove old000000000
        "#]]).await;
        let engine = Fake::default();
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            ok
            left: demo-web-1 fake00000001 Running
            asked: create demo-web-1, start fake00000001, exec fake00000001 sh -c touch /started, exec fake00000001 sh -c touch /again
        "#]]).await;
    }

    #[tokio::test]
    async fn a_failing_post_start_hook_brings_the_old_container_back() {
        let project = project_with_hooks();
        let engine = running_old(&project, &[Operation::Exec]);
        check(&engine, &project, UpdateOrder::StopFirst, expect![[r#"
            service web: post_start[0] hook exited with status 3; last output:
              | output of sh -c touch /started
            left: demo-web-1 old000000000 Running
            asked: rename old000000000 old000000000_demo-web-1, create demo-web-1, stop old000000000, start fake00000001, exec fake00000001 sh -c touch /started, remove fake00000001, rename old000000000 demo-web-1, start old000000000
        "#]]).await;
    }

    #[tokio::test]
    async fn pre_stop_hooks_run_before_a_surplus_replica_is_removed() {
        let project = project_with_hooks();
        let cases: [(&[Operation], Expect); 2] = [
            (
                &[],
                expect![[r#"
                ok
                left: demo-web-1 one000000000 Running
                asked: exec two000000000 sh -c touch /stopping, stop two000000000, remove two000000000
            "#]],
            ),
            // As in Compose, a failed hook leaves the container be.
            (
                &[Operation::Exec],
                expect![[r#"
                service web: pre_stop[0] hook exited with status 3; last output:
                  | output of sh -c touch /stopping
                left: demo-web-1 one000000000 Running, demo-web-2 two000000000 Running
                asked: exec two000000000 sh -c touch /stopping
            "#]],
            ),
        ];
        for (failing, expected) in cases {
            let engine = Fake::default();
            for (id, name) in [
                ("one000000000", "demo-web-1"),
                ("two000000000", "demo-web-2"),
            ] {
                let mut current = existing(&project, id, name, "h2", State::Running);
                current.image_id = ImageId::new("sha256:web:2");
                current
                    .labels
                    .insert(labels::CONTAINER_NUMBER.into(), name[9..].into());
                engine.insert(current);
            }
            for operation in failing {
                engine.fail(*operation);
            }
            check(&engine, &project, UpdateOrder::StopFirst, expected).await;
        }
    }

    #[test]
    fn absurd_health_check_durations_do_not_overflow() {
        let check = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(Duration::MAX),
            timeout: Some(Duration::MAX),
            retries: Some(u32::MAX),
            start_period: Some(Duration::MAX),
            start_interval: None,
        };
        assert_eq!(health_deadline(&check), Duration::from_secs(600));
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
