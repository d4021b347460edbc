//! Drift: a managed stack whose containers no longer match what was deployed, because someone
//! stopped, removed or recreated one by hand, or started a stranger under a managed project's
//! labels. Noticed within seconds from the engine's event stream; with `STACKHOOK_HEAL`, the
//! stack is put back by a deployment of its deployed commit.
//!
//! A stack is looked at only while its lane is idle: the events of stackhook's own deployments
//! are not drift, and the deployment's end is checked anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

use super::plan::{Kind, Summary};
use super::status::StackState;
use super::worker::Worker;
use super::{Request, Trigger, TriggerKind};
use crate::stack::StackName;
use crate::store;

/// Which managed stacks drifted, and how: the steps a deployment would take to put each back.
#[derive(Debug, Default)]
pub struct Drift {
    stacks: Mutex<BTreeMap<String, Vec<Summary>>>,
}

impl Drift {
    /// What differs in `stack`, if it drifted.
    pub fn of(&self, stack: &str) -> Option<Vec<Summary>> {
        self.map().get(stack).cloned()
    }

    fn set(&self, stack: &str, steps: Vec<Summary>) {
        let mut map = self.map();
        match steps.is_empty() {
            true => map.remove(stack),
            false => map.insert(stack.to_owned(), steps),
        };
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Summary>>> {
        self.stacks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The events that can make a stack drift, as Docker and Podman name them (Podman says `remove`
/// and `died` where Docker says `destroy` and `die`). Health probes and execs are not among them.
const ACTIONS: [&str; 14] = [
    "create", "start", "restart", "die", "died", "stop", "kill", "destroy", "remove", "rename",
    "pause", "unpause", "update", "cleanup",
];

/// How long events are gathered before the stacks they touched are looked at.
const SETTLE: Duration = Duration::from_secs(1);

/// How long to wait before following the events again after the connection broke.
const RECONNECT: Duration = Duration::from_secs(2);

/// Follows the engine's events for as long as the server runs: reconciles every stack on each
/// (re)connection, then looks at each stack an event touched. Only the active slot acts.
pub async fn watch(worker: Worker, heal: bool) {
    let deployer = worker.deployer().clone();
    loop {
        let mut events = match deployer.engine.container_events().await {
            Ok(events) => events,
            Err(error) => {
                tracing::debug!("{error:#}; following the engine's events again soon");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut everything = true;
        loop {
            if everything || !touched.is_empty() {
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        () = &mut settle => break,
                        event = events.next() => match event {
                            Some(Ok(event)) => note(&mut touched, event),
                            _ => break,
                        },
                    }
                }
                let projects = std::mem::take(&mut touched);
                let scope = if everything { None } else { Some(&projects) };
                // A stack that is deploying is looked at again once its events settle.
                touched = check(&worker, heal, scope).await;
                everything = false;
            }
            match events.next().await {
                Some(Ok(event)) => note(&mut touched, event),
                Some(Err(error)) => {
                    tracing::warn!("{error:#}; following the engine's events again");
                    break;
                }
                None => break,
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

fn note(touched: &mut BTreeSet<String>, event: crate::engine::ContainerEvent) {
    if ACTIONS.contains(&event.action.as_str())
        && let Some(project) = event.project
    {
        touched.insert(project);
    }
}

/// Looks at the stacks of `projects` (every stack for `None`) whose lane is idle; returns the
/// projects of those that were deploying, to look at later.
async fn check(
    worker: &Worker,
    heal: bool,
    projects: Option<&BTreeSet<String>>,
) -> BTreeSet<String> {
    let mut later = BTreeSet::new();
    let deployer = worker.deployer();
    if !deployer.slots.is_active() {
        return later;
    }
    let Ok(state) = store::load(&deployer.config.state_dir) else {
        return later;
    };
    let stacks: Vec<(String, String)> = state
        .stacks
        .iter()
        .filter(|(_, record)| projects.is_none_or(|p| p.contains(&record.project)))
        .map(|(stack, record)| (stack.clone(), record.project.clone()))
        .collect();
    for (stack, project) in stacks {
        let Ok(name) = StackName::parse(&stack) else {
            continue;
        };
        if worker.deploying(&stack) || worker.preparing() {
            later.insert(project);
            continue;
        }
        let status = match deployer.status(Some(&name), true).await {
            Ok(mut statuses) => match statuses.pop() {
                Some(status) => status,
                None => continue,
            },
            Err(error) => {
                tracing::debug!(stack, "looking for drift: {error:#}");
                continue;
            }
        };
        let mut steps: Vec<Summary> = match status.state {
            StackState::UpToDate => status
                .actions
                .into_iter()
                .filter(|step| step.kind != Kind::Keep)
                .collect(),
            _ => Vec::new(),
        };
        // A container that exited 0 finished its work (a one-shot job such as a migration that
        // others wait for with `service_completed_successfully`): starting it again is no
        // healing, and healing it would run it after every run.
        if steps.iter().any(|step| step.kind == Kind::Start) {
            let finished = finished_services(deployer, &project).await;
            steps.retain(|step| step.kind != Kind::Start || !finished.contains(&step.service));
        }
        let drifted = !steps.is_empty();
        if drifted && worker.drift().of(&stack).as_ref() != Some(&steps) {
            let what: Vec<String> = steps.iter().map(describe).collect();
            tracing::warn!(stack, "drifted from what was deployed: {}", what.join("; "));
        }
        deployer.metrics.drifted(&stack, drifted);
        worker.drift().set(&stack, steps);
        if drifted && heal {
            let request = Request::stack(name, None).by(Trigger::new(TriggerKind::Heal));
            worker.trigger(request);
            later.insert(project);
        }
    }
    later
}

/// The services of `project` whose containers all exited with status 0.
async fn finished_services(deployer: &super::Deployer, project: &str) -> BTreeSet<String> {
    let Ok(containers) = deployer.engine.containers(Some(project)).await else {
        return BTreeSet::new();
    };
    let mut exits: BTreeMap<String, bool> = BTreeMap::new();
    for container in containers {
        let Some(service) = container.label(super::labels::SERVICE).map(str::to_owned) else {
            continue;
        };
        let finished = container.state == crate::engine::State::Exited
            && matches!(deployer.engine.inspect(&container.id).await, Ok(s) if s.exit_code == Some(0));
        *exits.entry(service).or_insert(true) &= finished;
    }
    exits
        .into_iter()
        .filter_map(|(service, finished)| finished.then_some(service))
        .collect()
}

fn describe(step: &Summary) -> String {
    let kind = serde_json::to_value(step.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match &step.reason {
        Some(reason) => format!("{kind} {}: {reason}", step.service),
        None => format!("{kind} {}", step.service),
    }
}
