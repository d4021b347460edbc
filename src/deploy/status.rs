//! What each stack looks like now, for the read API and the status page: what was deployed, what
//! the checkout wants, its containers with their state and health, and what a deployment would
//! change. Only reads: it takes no lock, syncs nothing and changes nothing, so that a status
//! request never waits for a deployment.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use futures_util::{StreamExt, stream};
use serde::Serialize;

use crate::engine::{Container, Health};
use crate::repo::{self, CommitId};
use crate::stack::StackName;
use crate::stack::compose::Project;
use crate::store::{self, ImageCheck, Pin, StackRecord};

use super::apply::Log;
use super::plan::Summary;
use super::{Changes, Deployer, Found, Snapshot, StackDir, Target, changes, labels, measure};

/// One stack, now.
#[derive(Debug, Clone, Serialize)]
pub struct StackStatus {
    pub stack: String,
    /// The host this instance deploys for (`STACKHOOK_HOST`), when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub state: StackState,
    /// What was last deployed successfully.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployed>,
    /// The commit the checkout is at, which the stack should run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted_fingerprint: Option<String>,
    /// What differs from the deployed stack, when it is `pending`.
    #[serde(skip_serializing_if = "Changes::is_empty")]
    pub changes: Changes,
    /// What a deployment would do now, with reasons (for one stack only): for an up-to-date
    /// stack, what a redeploy would do, which is nothing unless its containers drifted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Summary>,
    /// How the containers differ from what was deployed, when the stack `Drifted`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Summary>,
    pub containers: Vec<ContainerStatus>,
    /// The commit a rollback holds the stack at, if any: pushes do not move it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pin>,
    /// What the last image check found (`STACKHOOK_IMAGE_CHECK`): per service, whether its tag
    /// names a newer image than the one it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_check: Option<ImageCheck>,
    /// Why the stack's compose file cannot be read, or its containers listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackState {
    /// Deployed as the checkout wants it.
    UpToDate,
    /// Deployed as the checkout wants it, but its containers were changed by hand since
    /// (`drift` says how).
    Drifted,
    /// The checkout wants something else: the next deployment changes it.
    Pending,
    /// In the repository, never deployed.
    New,
    /// Deployed, no longer in the repository.
    Removed,
    /// Its compose file cannot be read.
    Broken,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub commit: String,
    /// The commit's subject line, if the checkout has the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub fingerprint: String,
    pub deployed_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    pub service: String,
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub image: String,
}

/// How many stacks are looked at at once.
const STACKS_AT_ONCE: usize = 8;

impl Deployer {
    /// Every stack (or only `only`), now; with `plan`, what a deployment would do to each stack
    /// that is pending.
    pub async fn status(
        &self,
        only: Option<&StackName>,
        plan: bool,
    ) -> anyhow::Result<Vec<StackStatus>> {
        let dir = self.checkout_dir();
        let snapshot = self.head_snapshot().await?;
        let state = store::load(&self.config.state_dir)?;
        let pinned = self.pinned_snapshots(&state, false).await;
        let present = snapshot
            .as_ref()
            .map(|snapshot| snapshot.stacks(&self.config))
            .unwrap_or_default();
        let names: BTreeSet<String> = present
            .keys()
            .chain(state.stacks.keys())
            .chain(state.pins.keys())
            .filter(|name| only.is_none_or(|only| only.as_str() == name.as_str()))
            .cloned()
            .collect();
        // The futures are made first, so that the stream holds no closure over borrowed names.
        let looks: Vec<_> = names
            .iter()
            .map(|name| {
                let pin = state.pins.get(name);
                let present = match pin.map(|pin| pinned.get(&pin.commit)) {
                    None => snapshot.clone().zip(present.get(name).cloned()),
                    Some(Some(Ok(pinned))) => {
                        let mut stacks = pinned.stacks(&self.config);
                        Some(Arc::clone(pinned)).zip(stacks.remove(name))
                    }
                    Some(_) => None,
                };
                let check = state.image_checks.get(name);
                self.stack_status(name, present, state.stacks.get(name), pin, check, plan)
            })
            .collect();
        let mut statuses: Vec<StackStatus> =
            stream::iter(looks).buffered(STACKS_AT_ONCE).collect().await;
        let commits: HashSet<CommitId> = names
            .iter()
            .filter_map(|name| Some(state.stacks.get(name)?.commit.clone()))
            .collect();
        let subjects = tokio::task::spawn_blocking(move || {
            commits
                .into_iter()
                .filter_map(|commit| {
                    let subject = repo::subject(&dir, &commit).ok()??;
                    Some((commit.to_string(), subject))
                })
                .collect::<BTreeMap<String, String>>()
        })
        .await?;
        for deployed in statuses.iter_mut().filter_map(|s| s.deployed.as_mut()) {
            deployed.message = subjects.get(&deployed.commit).cloned();
        }
        Ok(statuses)
    }

    /// The checkout's commit, if there is a checkout.
    async fn head_snapshot(&self) -> anyhow::Result<Option<Arc<Snapshot>>> {
        let dir = self.checkout_dir();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Arc<Snapshot>>> {
            let Some((id, _)) = repo::head(&dir)? else {
                return Ok(None);
            };
            let tree = repo::tree::read(&dir, id.as_str())?;
            Ok(Some(Arc::new(Snapshot { id, tree, dir })))
        })
        .await?
    }

    /// The compose project `stack` runs as deployed: loaded from the commit it deploys from (the
    /// checkout's, or its pin's with the pin's images), if that is what its record says was
    /// deployed. `None` for a stack that is not deployed, or pending: the next deployment
    /// changes it anyway.
    pub(crate) async fn deployed_project(&self, stack: &str) -> anyhow::Result<Option<Project>> {
        let state = store::load(&self.config.state_dir)?;
        let Some(record) = state.stacks.get(stack) else {
            return Ok(None);
        };
        let pin = state.pins.get(stack);
        let snapshot = match pin {
            Some(pin) => match self
                .pinned_snapshots(&state, false)
                .await
                .remove(&pin.commit)
            {
                Some(Ok(snapshot)) => snapshot,
                _ => return Ok(None),
            },
            None => match self.head_snapshot().await? {
                Some(snapshot) => snapshot,
                None => return Ok(None),
            },
        };
        let Some(place) = snapshot.stacks(&self.config).remove(stack) else {
            return Ok(None);
        };
        let mut project = self
            .load_stack(snapshot.dir.join(&place.path), stack)
            .await?;
        let (_, fingerprint) =
            measure(&snapshot, &place.tree_id, &project, &self.config.state_dir)?;
        if fingerprint != record.fingerprint {
            return Ok(None);
        }
        if let Some(pin) = pin {
            self.pinned_images(&mut project, pin, &Log::default()).await;
        }
        Ok(Some(project))
    }

    async fn stack_status(
        &self,
        name: &str,
        present: Option<(Arc<Snapshot>, StackDir)>,
        record: Option<&StackRecord>,
        pin: Option<&Pin>,
        image_check: Option<&ImageCheck>,
        plan: bool,
    ) -> StackStatus {
        let mut status = StackStatus {
            stack: name.to_owned(),
            host: self.config.host.clone(),
            project: record.map(|r| r.project.clone()),
            state: StackState::Removed,
            deployed: record.map(|record| Deployed {
                commit: record.commit.to_string(),
                message: None,
                fingerprint: record.fingerprint.as_str().to_owned(),
                deployed_at: record.deployed_at.clone(),
            }),
            wanted_commit: None,
            wanted_fingerprint: None,
            changes: Changes::default(),
            actions: Vec::new(),
            drift: Vec::new(),
            containers: Vec::new(),
            pinned: pin.cloned(),
            image_check: image_check.cloned(),
            error: None,
        };
        if let Some((snapshot, place)) = present {
            status.wanted_commit = Some(snapshot.id.to_string());
            match self
                .wanted(name, &snapshot, &place, record, pin, plan)
                .await
            {
                Ok((project, wanted)) => {
                    status.project = Some(project);
                    status.state = wanted.state;
                    status.wanted_fingerprint = Some(wanted.fingerprint);
                    status.changes = wanted.changes;
                    status.actions = wanted.actions;
                }
                Err(error) => {
                    status.state = StackState::Broken;
                    status.error = Some(format!("{error:#}"));
                }
            }
        }
        if let Some(project) = &status.project {
            match self.containers(project).await {
                Ok(containers) => status.containers = containers,
                Err(error) => {
                    status.error.get_or_insert(format!("{error:#}"));
                }
            }
        }
        status
    }

    /// The stack as the checkout wants it, compared with `record`.
    async fn wanted(
        &self,
        name: &str,
        snapshot: &Arc<Snapshot>,
        place: &StackDir,
        record: Option<&StackRecord>,
        pin: Option<&Pin>,
        plan: bool,
    ) -> anyhow::Result<(String, Wanted)> {
        let stack_dir = place.path.clone();
        let tree_id = place.tree_id.as_str();
        let mut project = self.load_stack(snapshot.dir.join(&stack_dir), name).await?;
        let (hashes, fingerprint) = measure(snapshot, tree_id, &project, &self.config.state_dir)?;
        let mut wanted = Wanted {
            state: StackState::New,
            fingerprint: fingerprint.as_str().to_owned(),
            changes: Changes::default(),
            actions: Vec::new(),
        };
        match record {
            Some(record) if record.fingerprint == fingerprint => {
                wanted.state = StackState::UpToDate;
            }
            Some(record) => {
                wanted.state = StackState::Pending;
                let variables = self.variable_digests(&project);
                let checkout = self.checkout_dir();
                wanted.changes =
                    changes(&checkout, record, snapshot, &stack_dir, &hashes, &variables);
            }
            None => {}
        }
        if plan {
            // A pinned stack runs the images its pin recorded, not what its tags name now.
            if let Some(pin) = pin {
                self.pinned_images(&mut project, pin, &Log::default()).await;
            }
            wanted.actions = self
                .preview(snapshot, name, place, &project, hashes, fingerprint)
                .await?;
        }
        Ok((project.name, wanted))
    }

    /// The plan's steps against what the engine runs, without pulling or building anything.
    async fn preview(
        &self,
        snapshot: &Arc<Snapshot>,
        name: &str,
        place: &StackDir,
        project: &Project,
        hashes: BTreeMap<String, crate::stack::ConfigHash>,
        fingerprint: crate::stack::Fingerprint,
    ) -> anyhow::Result<Vec<Summary>> {
        if self.swarm().await? {
            let origin = labels::Origin {
                stack: name,
                commit: snapshot.id.as_str(),
            };
            return super::swarm::deploy(
                self.engine.as_ref(),
                project,
                &store::digest_key(&self.config.state_dir)?,
                &origin,
                true,
                self.config.swarm_timeout,
                &Log::default(),
            )
            .await;
        }
        let found = Found {
            snapshot: Arc::clone(snapshot),
            name: StackName::parse(name)?,
            tree_id: place.tree_id.clone(),
            dir: snapshot.dir.join(&place.path),
            forced: Some(None),
            pull: BTreeSet::new(),
        };
        let target = Target {
            commit: snapshot,
            hashes,
            fingerprint,
            variables: BTreeMap::new(),
            dry_run: true,
        };
        let planned = self
            .plan_stack(&target, &found, project, None, &Log::default())
            .await?;
        Ok(planned
            .map(|(plan, _)| plan.summaries())
            .unwrap_or_default())
    }

    /// The project's containers with their state and, where they have a check, health.
    async fn containers(&self, project: &str) -> anyhow::Result<Vec<ContainerStatus>> {
        if self.swarm().await? {
            return self.tasks(project).await;
        }
        let containers = self.engine.containers(Some(project)).await?;
        let statuses = stream::iter(containers)
            .map(|container| async move {
                let health = match self.engine.inspect(&container.id).await {
                    Ok(inspected) => inspected.health,
                    Err(_) => None,
                };
                container_status(&container, health)
            })
            .buffered(STACKS_AT_ONCE)
            .collect()
            .await;
        Ok(statuses)
    }
}

impl Deployer {
    /// In Swarm mode: each service's tasks of its current spec that should run, wherever they
    /// run, as the stack's containers.
    async fn tasks(&self, namespace: &str) -> anyhow::Result<Vec<ContainerStatus>> {
        let mut statuses = Vec::new();
        for service in self.engine.services(namespace).await? {
            let key = super::swarm::service_key(namespace, &service.name).to_owned();
            let image = service
                .labels
                .get(crate::engine::swarm::IMAGE_LABEL)
                .cloned()
                .unwrap_or_default();
            for task in self.engine.tasks(&service.id).await? {
                if task.desired != "running" {
                    continue;
                }
                statuses.push(ContainerStatus {
                    service: key.clone(),
                    name: format!("{}.{}", service.name, task.id),
                    state: task.state,
                    health: None,
                    image: image.clone(),
                });
            }
        }
        Ok(statuses)
    }
}

struct Wanted {
    state: StackState,
    fingerprint: String,
    changes: Changes,
    actions: Vec<Summary>,
}

fn container_status(container: &Container, health: Option<Health>) -> ContainerStatus {
    ContainerStatus {
        service: container
            .label(labels::SERVICE)
            .unwrap_or_default()
            .to_owned(),
        name: container.name.clone(),
        state: super::plan::state_name(&container.state).to_owned(),
        health,
        image: container.image.clone(),
    }
}
