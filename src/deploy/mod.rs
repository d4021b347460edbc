//! Deployments: one pass from the repository to the engine, and the worker that runs one at a time.
//!
//! A pass takes the deploy lock, syncs the repository, finds the stacks whose fingerprint changed
//! (or that were named), and for each: resolves images, plans against what the engine runs, and
//! applies the plan. Stacks are independent: one failing does not stop the others, and a few are
//! deployed at once. `plan` is pure; `apply` does the engine IO; `worker` coalesces triggers.

pub mod apply;
pub mod labels;
pub mod plan;
pub mod drift;
pub mod image_updates;
mod self_update;
pub mod status;
pub mod swarm;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::config::{Config, EngineMode, Prune};
use crate::engine::Engine;
use crate::history::History;
use crate::metrics::Metrics;
use crate::repo::{self, CommitId, tree::Tree};
use crate::slot::Slots;
use crate::stack::compose::{self, Project, PullPolicy, UpdateOrder};
use crate::stack::{self, ConfigHash, Fingerprint, StackName};
use crate::store::{self, StackRecord};

use apply::Log;
use plan::{Kind, Plan, Summary, Wanted};

/// The file at the repository root that pauses all deploys while it exists.
pub const SUSPEND_FILE: &str = ".stackhook-suspend";

/// How many stacks are deployed at once. Bounded so that a cold start of many stacks does not
/// flood the engine, which serialises much of its work anyway.
const STACKS_IN_FLIGHT: usize = 4;

/// How many stacks are deployed at once in Swarm mode, where a deployment mostly waits for Swarm
/// to converge, which it does for many services at once.
const SWARM_STACKS_IN_FLIGHT: usize = 16;

/// What started a deployment, for its history ("why did it redeploy?").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The delivery id: GitHub's `X-GitHub-Delivery`, or another forge's (`webhook::Forge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// The event name: GitHub's `X-GitHub-Event`, or another forge's (`Push Hook`, `repo:push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Who pushed, from the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pusher: Option<String>,
    /// The pushed head commit's id and message, from the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The pushed head commit's message; for an image update, which tags moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// A delivery from GitHub or another forge, or a generic signed trigger.
    Webhook,
    /// A single-stack request with a token or a signature.
    Api,
    Poll,
    /// The server started, or became the active slot.
    Start,
    /// `stackhook deploy`.
    Cli,
    /// What a slot that handed over left for the active one.
    Inbox,
    /// The stack drifted from what was deployed, and `STACKHOOK_HEAL` puts it back.
    Heal,
    /// A tag the stack runs names a newer image, and `STACKHOOK_IMAGE_UPDATE=pull` pulls it.
    ImageUpdate,
}

impl TriggerKind {
    /// Its name in the history and the API.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::Webhook => "webhook",
            TriggerKind::Api => "api",
            TriggerKind::Poll => "poll",
            TriggerKind::Start => "start",
            TriggerKind::Cli => "cli",
            TriggerKind::Inbox => "inbox",
            TriggerKind::Heal => "heal",
            TriggerKind::ImageUpdate => "image_update",
        }
    }
}

impl Trigger {
    pub fn new(kind: TriggerKind) -> Trigger {
        Trigger {
            kind,
            delivery: None,
            event: None,
            pusher: None,
            after: None,
            message: None,
        }
    }
}

/// A deployment keeps this many of the triggers folded into it, the newest.
const TRIGGERS_KEPT: usize = 20;

/// What a pass should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Deploy every stack whose fingerprint changed, and prune removed ones.
    pub all_changed: bool,
    /// Stacks to deploy whether or not they changed, each with an optional pull policy that
    /// overrides the compose file's (`?pull=always`).
    pub forced: BTreeMap<StackName, Option<PullPolicy>>,
    /// Plan and report, touch nothing.
    pub dry_run: bool,
    /// What asked for it, oldest first.
    pub triggers: Vec<Trigger>,
    /// Stacks to pin (roll back) or unpin first; each is also deployed.
    pub pins: BTreeMap<StackName, PinChange>,
    /// Services to pull whatever their policy says, by stack: an image update
    /// (`STACKHOOK_IMAGE_UPDATE=pull`). Each stack is also named in `forced`.
    pub pull: BTreeMap<StackName, BTreeSet<String>>,
}

/// A change to a stack's pin (`stackhook rollback`, `stackhook unpin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinChange {
    /// Hold the stack at a commit (an id, a prefix, a tag) or at what a deployment (its id)
    /// deployed of it.
    To(String),
    /// Let pushes move it again.
    Release,
}

impl Request {
    pub fn all_changed() -> Request {
        Request {
            all_changed: true,
            ..Request::default()
        }
    }

    pub fn stack(name: StackName, pull: Option<PullPolicy>) -> Request {
        Request {
            forced: BTreeMap::from([(name, pull)]),
            ..Request::default()
        }
    }

    /// Rolls `name` back to `to` (a commit or a deployment id) and pins it there.
    pub fn rollback(name: StackName, to: String) -> Request {
        let mut request = Request::stack(name.clone(), None);
        request.pins.insert(name, PinChange::To(to));
        request
    }

    /// Redeploys `name`, pulling the images of `services` first: the tags they run name newer
    /// images (`image_updates`).
    pub fn image_update(name: StackName, services: BTreeSet<String>) -> Request {
        let mut request = Request::stack(name.clone(), None);
        request.pull.insert(name, services);
        request
    }

    /// Unpins `name` and deploys it at the branch head.
    pub fn unpin(name: StackName) -> Request {
        let mut request = Request::stack(name.clone(), None);
        request.pins.insert(name, PinChange::Release);
        request
    }

    /// The request, recording `trigger` as what asked for it.
    pub fn by(mut self, trigger: Trigger) -> Request {
        self.triggers.push(trigger);
        self
    }

    /// Folds a later trigger into this one, so one pass serves both.
    pub fn merge(&mut self, later: Request) {
        self.all_changed |= later.all_changed;
        for (name, pull) in later.forced {
            let entry = self.forced.entry(name).or_default();
            if pull == Some(PullPolicy::Always) || entry.is_none() {
                *entry = pull;
            }
        }
        self.triggers.extend(later.triggers);
        self.pins.extend(later.pins);
        for (name, services) in later.pull {
            self.pull.entry(name).or_default().extend(services);
        }
        let surplus = self.triggers.len().saturating_sub(TRIGGERS_KEPT);
        self.triggers.drain(..surplus);
    }
}

impl From<&Request> for store::Inbox {
    fn from(request: &Request) -> store::Inbox {
        store::Inbox {
            all_changed: request.all_changed,
            stacks: request
                .forced
                .iter()
                .map(|(name, pull)| (name.to_string(), *pull))
                .collect(),
        }
    }
}

impl From<store::Inbox> for Request {
    /// The stacks of an inbox; a name that is no valid stack name is dropped, it never was one.
    fn from(inbox: store::Inbox) -> Request {
        Request {
            all_changed: inbox.all_changed,
            forced: inbox
                .stacks
                .into_iter()
                .filter_map(|(name, pull)| Some((StackName::parse(&name).ok()?, pull)))
                .collect(),
            dry_run: false,
            triggers: vec![Trigger::new(TriggerKind::Inbox)],
            pins: BTreeMap::new(),
            pull: BTreeMap::new(),
        }
    }
}

/// The outcome of one pass: what `?wait=true`, the CLI and the history show of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub deployment: String,
    pub status: Status,
    /// What asked for the deployment: the triggers folded into it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The commit's subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The commit checked out before this deployment synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The host that deployed (`STACKHOOK_HOST`), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub suspended: bool,
    pub dry_run: bool,
    pub stacks: Vec<StackReport>,
    /// A failure of the whole pass (the repository could not be synced, the lock not taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pass failed for a reason that may pass by itself (the lock, the git remote): the
    /// worker tries it again.
    #[serde(skip)]
    pub transient: bool,
    /// When the pass started, for its duration.
    #[serde(skip)]
    pub(crate) clock: Option<std::time::Instant>,
}

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    /// stackhook stopped before the deployment ended.
    Interrupted,
}

impl Report {
    /// The report of a pass that starts now.
    pub(crate) fn new(deployment: String, dry_run: bool) -> Report {
        let at = now();
        Report {
            deployment,
            status: Status::Running,
            triggers: Vec::new(),
            commit: None,
            message: None,
            previous_commit: None,
            branch: None,
            host: None,
            started_at: at.clone(),
            finished_at: at,
            duration_ms: None,
            suspended: false,
            dry_run,
            stacks: Vec::new(),
            error: None,
            transient: false,
            clock: Some(std::time::Instant::now()),
        }
    }

    /// The report of a pass that failed as a whole before it could say more.
    pub fn failed(deployment: String, error: String) -> Report {
        let mut report = Report::new(deployment, false);
        report.error = Some(error);
        report.close();
        report
    }

    /// Ends the report of a pass with its stacks' reports and, if gone stacks were not taken
    /// down, why.
    pub(crate) fn finish(&mut self, stacks: Vec<StackReport>, refused: Option<String>) {
        self.stacks.extend(stacks);
        self.stacks.sort_by(|a, b| a.stack.cmp(&b.stack));
        self.error = refused;
        self.close();
    }

    /// Ends the report of a pass that failed as a whole.
    pub(crate) fn fail(&mut self, error: anyhow::Error) {
        tracing::error!(deployment = %self.deployment, "{error:#}");
        self.error = Some(format!("{error:#}"));
        self.close();
    }

    /// Ends the report: its end time, duration and status.
    pub(crate) fn close(&mut self) {
        self.finished_at = now();
        self.duration_ms = self
            .clock
            .map(|clock| u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.status = if self.succeeded() {
            Status::Succeeded
        } else {
            Status::Failed
        };
    }

    /// Whether the pass succeeded without deploying, taking down or pinning anything (a
    /// suspended pass included).
    pub fn changed_nothing(&self) -> bool {
        self.succeeded()
            && self
                .stacks
                .iter()
                .all(|s| s.outcome == Outcome::Unchanged && s.pinned.is_none())
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.stacks.iter().all(|s| s.outcome != Outcome::Failed)
    }

    pub fn failures(&self) -> Vec<String> {
        let stacks = self
            .stacks
            .iter()
            .filter(|s| s.outcome == Outcome::Failed)
            .map(|s| format!("{}: {}", s.stack, s.error.as_deref().unwrap_or("failed")));
        self.error.iter().cloned().chain(stacks).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackReport {
    pub stack: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Summary>,
    /// What changed in the stack since it was last deployed, by name: why it redeployed.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub changes: Changes,
    /// Service → the id of the image it runs now, once deployed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The commit the stack is pinned to (`stackhook rollback`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The deployment failed and the stack went back to this commit, its last good one
    /// (`STACKHOOK_AUTO_ROLLBACK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
    /// What the compose file asks for that `up -d` ignores without Swarm (`Project::notes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

/// What changed in a stack between two deployments, by name only (never a variable's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The deployed commit before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Files of the stack's directory, relative to it, that differ between the two commits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Variables the compose file reads whose value changed, appeared or went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<String>,
    /// Services whose configuration hash changed, appeared or went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.variables.is_empty() && self.services.is_empty()
    }
}

impl StackReport {
    pub(crate) fn new(stack: &str, outcome: Outcome) -> StackReport {
        StackReport {
            stack: stack.to_owned(),
            project: None,
            outcome,
            actions: Vec::new(),
            changes: Changes::default(),
            images: BTreeMap::new(),
            pinned: None,
            rolled_back_to: None,
            notes: Vec::new(),
            error: None,
            log: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Deployed,
    Unchanged,
    /// Dry run: `actions` says what would be done.
    Planned,
    Failed,
    /// Removed from the repository and taken down.
    Pruned,
}

/// Everything a pass needs, shared by the worker and the CLI.
#[derive(Clone)]
pub struct Deployer {
    pub config: Arc<Config>,
    pub engine: Arc<dyn Engine>,
    /// Describes this process to another one waiting for the lock.
    pub holder: String,
    /// This instance's slot; only the active one deploys.
    pub slots: Slots,
    pub metrics: Arc<Metrics>,
}

/// One commit of the repository, checked out: what a pass works on.
pub(crate) struct Snapshot {
    id: CommitId,
    tree: Tree,
    /// The checkout's work tree.
    dir: PathBuf,
}

impl Snapshot {
    /// `commit` written out under the state directory (`store::pinned_dir`), for a pinned or
    /// rolled-back stack: with `write`, writes it if it is not there yet; without, only reads
    /// what is there.
    fn written_out(
        checkout: &Path,
        state_dir: &Path,
        commit: &CommitId,
        write: bool,
    ) -> anyhow::Result<Snapshot> {
        let dir = store::pinned_dir(state_dir, commit);
        if write {
            repo::export(checkout, commit, &dir)?;
        } else if !repo::exported(&dir) {
            anyhow::bail!("commit {} is not written out yet", commit.short());
        }
        Ok(Snapshot {
            id: commit.clone(),
            tree: repo::tree::read(checkout, commit.as_str())?,
            dir,
        })
    }
}

/// Where one stack lives in a commit.
#[derive(Debug, Clone)]
pub(crate) struct StackDir {
    /// Relative to the repository's root.
    path: PathBuf,
    tree_id: String,
}

impl Snapshot {
    /// The stacks of this commit that this host deploys, by name (issue 12, "Many hosts"):
    /// `hosts/<host>/<name>` for `STACKHOOK_HOST`, which takes the place of a `<services_dir>/<name>`,
    /// and each `<services_dir>/<name>` whose compose file's `x-stackhook.hosts` names the host,
    /// or names none (unless `STACKHOOK_HOST_STRICT`). Without a host, every stack of
    /// `<services_dir>`.
    pub(crate) fn stacks(&self, config: &Config) -> BTreeMap<String, StackDir> {
        let dirs = |root: &Path| {
            self.tree
                .stacks(root)
                .into_iter()
                .map(|(name, tree_id)| {
                    let path = root.join(&name);
                    (name, StackDir { path, tree_id })
                })
                .collect::<BTreeMap<_, _>>()
        };
        let mut stacks = dirs(&config.services_dir);
        let Some(host) = &config.host else {
            return stacks;
        };
        stacks.retain(
            |_, stack| match crate::stack::hosts(&self.dir.join(&stack.path)) {
                Some(hosts) => hosts.contains(host),
                None => !config.host_strict,
            },
        );
        stacks.extend(dirs(&Path::new(crate::config::HOSTS_DIR).join(host)));
        stacks
    }
}

/// What one stack's deployment aims at.
struct Target<'a> {
    commit: &'a Snapshot,
    /// Service name → config hash.
    hashes: BTreeMap<String, ConfigHash>,
    fingerprint: Fingerprint,
    /// Variable name → keyed digest of its value.
    variables: BTreeMap<String, String>,
    dry_run: bool,
}

pub(crate) struct Found {
    /// The commit the stack deploys from: the branch head, or the commit it is pinned to.
    snapshot: Arc<Snapshot>,
    name: StackName,
    tree_id: String,
    dir: PathBuf,
    forced: Option<Option<PullPolicy>>,
    /// Services whose images are pulled whatever their policy says (`Request::pull`).
    pull: BTreeSet<String>,
}

impl Found {
    /// Nothing to do: the stack was not named, and its record says this fingerprint is deployed.
    fn unchanged(&self, record: Option<&StackRecord>, fingerprint: &Fingerprint) -> bool {
        self.forced.is_none() && record.is_some_and(|record| record.fingerprint == *fingerprint)
    }
}

/// What a pass asks of one stack: carried out in that stack's lane (`worker`), where two jobs of
/// one stack never overlap.
pub(crate) struct Job {
    pub(crate) stack: String,
    /// The deployment whose pass made the job: its log gets the job's lines.
    deployment: String,
    work: Work,
    dry_run: bool,
    /// The stack was as recorded when the pass was prepared.
    unchanged: bool,
    /// The deploy lock, held until every job of the passes that took it is done.
    _lock: Arc<store::Lock>,
}

enum Work {
    Deploy {
        snapshot: Arc<Snapshot>,
        found: Found,
        project: Box<Project>,
        hashes: BTreeMap<String, ConfigHash>,
        fingerprint: Fingerprint,
    },
    /// The stack is gone from the repository: take down its project.
    Prune { project: String },
}

impl Job {
    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub(crate) fn deployment(&self) -> &str {
        &self.deployment
    }

    /// What the stack will look like once deployed; `None` for a stack to take down.
    pub(crate) fn fingerprint(&self) -> Option<&Fingerprint> {
        match &self.work {
            Work::Deploy { fingerprint, .. } => Some(fingerprint),
            Work::Prune { .. } => None,
        }
    }

    /// The commit the job's pass was prepared at; `None` for a stack to take down.
    pub(crate) fn commit(&self) -> Option<&CommitId> {
        match &self.work {
            Work::Deploy { snapshot, .. } => Some(&snapshot.id),
            Work::Prune { .. } => None,
        }
    }

    /// What the job deploys: its fingerprint and commit; `None` for a stack to take down.
    pub(crate) fn target(&self) -> Option<(Fingerprint, CommitId)> {
        Some((self.fingerprint()?.clone(), self.commit()?.clone()))
    }

    /// Whether the stack was named, so that it deploys even if unchanged.
    pub(crate) fn forced(&self) -> bool {
        matches!(&self.work, Work::Deploy { found, .. } if found.forced.is_some())
    }

    /// The report of a job that need not run: its stack was as recorded when the pass was
    /// prepared, and not named. Only true while no other job of the stack runs or waits.
    pub(crate) fn unchanged(&self) -> Option<StackReport> {
        let Work::Deploy { project, .. } = &self.work else {
            return None;
        };
        (self.unchanged && !self.forced()).then(|| StackReport {
            project: Some(project.name.clone()),
            ..StackReport::new(&self.stack, Outcome::Unchanged)
        })
    }

    /// Folds a later job for the same stack into this one, which has not started: the later
    /// commit wins, and a stack named by either (with `pull: always` by either) stays named.
    pub(crate) fn merge(self, later: Job) -> Job {
        let work = match (self.work, later.work) {
            (
                Work::Deploy { found: earlier, .. },
                Work::Deploy {
                    snapshot,
                    mut found,
                    project,
                    hashes,
                    fingerprint,
                },
            ) => {
                found.forced = match (earlier.forced, found.forced) {
                    (None, later) => later,
                    (earlier, None) => earlier,
                    (Some(earlier), Some(later)) => Some(
                        [earlier, later]
                            .into_iter()
                            .find(|pull| *pull == Some(PullPolicy::Always))
                            .unwrap_or(later.or(earlier)),
                    ),
                };
                found.pull.extend(earlier.pull);
                Work::Deploy {
                    snapshot,
                    found,
                    project,
                    hashes,
                    fingerprint,
                }
            }
            (_, later) => later,
        };
        Job { work, ..later }
    }

    /// The stack named with the pull policy asked for, for the inbox of the active slot.
    fn as_inbox(&self) -> store::Inbox {
        let pull = match &self.work {
            Work::Deploy { found, .. } => found.forced.flatten(),
            Work::Prune { .. } => None,
        };
        store::Inbox {
            all_changed: matches!(self.work, Work::Prune { .. }),
            stacks: match self.work {
                Work::Deploy { .. } => BTreeMap::from([(self.stack.clone(), pull)]),
                Work::Prune { .. } => BTreeMap::new(),
            },
        }
    }
}

/// A pass up to its stacks' jobs: the lock taken, the commit checked out, the compose files
/// loaded, what to do with each stack decided.
pub(crate) struct Prepared {
    pub(crate) jobs: Vec<Job>,
    /// How many of them may run at once.
    pub(crate) in_flight: usize,
    /// Why stacks that are gone from the repository were not taken down.
    pub(crate) refused: Option<String>,
    pub(crate) lock: Arc<store::Lock>,
}

impl Deployer {
    pub fn checkout_dir(&self) -> PathBuf {
        store::checkout_dir(&self.config.state_dir)
    }

    pub fn history(&self) -> History {
        History::new(&self.config.state_dir, self.config.history)
    }

    /// Deploys `stack` as `last_good` recorded it (its commit and images): the automatic
    /// rollback after a failed deployment (`STACKHOOK_AUTO_ROLLBACK`). Returns the new record.
    async fn roll_back(
        &self,
        stack: &str,
        last_good: &StackRecord,
        log: &Log,
    ) -> anyhow::Result<StackRecord> {
        let commit = last_good.commit.clone();
        log.line(format!(
            "the deployment failed; rolling back to {}, the last good commit",
            commit.short()
        ));
        let checkout = self.checkout_dir();
        let snapshot = {
            let (commit, state_dir) = (commit.clone(), self.config.state_dir.clone());
            tokio::task::spawn_blocking(move || {
                Snapshot::written_out(&checkout, &state_dir, &commit, true)
            })
            .await??
        };
        let snapshot = Arc::new(snapshot);
        let place = snapshot
            .stacks(&self.config)
            .remove(stack)
            .with_context(|| format!("commit {} has no stack {stack}", commit.short()))?;
        let found = Found {
            dir: snapshot.dir.join(&place.path),
            snapshot: Arc::clone(&snapshot),
            name: StackName::parse(stack)?,
            tree_id: place.tree_id,
            forced: Some(None),
            pull: BTreeSet::new(),
        };
        let mut project = self.load(&found).await?;
        let pin = store::Pin {
            commit: commit.clone(),
            images: last_good.images.clone(),
            deployment: None,
            since: now(),
        };
        self.pinned_images(&mut project, &pin, log).await;
        let (hashes, fingerprint) =
            measure(&snapshot, &found.tree_id, &project, &self.config.state_dir)?;
        let target = Target {
            commit: &snapshot,
            hashes,
            fingerprint,
            variables: self.variable_digests(&project),
            dry_run: false,
        };
        let (report, record) = self
            .deploy_stack(target, found, project, Some(last_good.clone()), log.clone())
            .await;
        match (report.outcome, record) {
            (Outcome::Deployed, Some(record)) => {
                log.line(format!("rolled back to {}", commit.short()));
                Ok(record)
            }
            _ => anyhow::bail!(report.error.unwrap_or_else(|| "it did not deploy".into())),
        }
    }

    /// Points the services of a pinned stack at the images they ran at the pinned commit, where
    /// the engine still has them; the others run what their compose file names.
    async fn pinned_images(&self, project: &mut Project, pin: &store::Pin, log: &Log) {
        for (service, image) in &pin.images {
            let Some(entry) = project.services.get_mut(service) else {
                continue;
            };
            match self.engine.image_id(image).await {
                Ok(Some(_)) => entry.image = Some(image.clone()),
                _ => log.line(format!(
                    "{service}: image {image} of the pinned deployment is gone; using {}",
                    entry.image.as_deref().unwrap_or("its build")
                )),
            }
        }
    }

    /// Keyed digests of the values of the variables `project` read; none if the key cannot be
    /// read or made (then no change of a variable is named).
    fn variable_digests(&self, project: &Project) -> BTreeMap<String, String> {
        store::variable_digests(&self.config.state_dir, &project.variables).unwrap_or_else(
            |error| {
                tracing::warn!("variable digests: {error:#}");
                BTreeMap::new()
            },
        )
    }

    /// Records the end of a deployment in the history: its record and the last lines of its log.
    pub(crate) fn conclude(&self, report: &Report) {
        if report.dry_run || report.commit.is_none() && report.status == Status::Succeeded {
            // A dry run changes nothing; a pass that never synced (handed on) has nothing to say.
            return;
        }
        if report.changed_nothing() {
            // A poll or push that found nothing to do is no deployment: it would crowd the
            // history's deployments out within hours of polling.
            if let Err(error) = self.history().forget(&report.deployment) {
                tracing::warn!("forgetting deployment {}: {error:#}", report.deployment);
            }
            return;
        }
        let stacks: Vec<(String, bool)> = report
            .stacks
            .iter()
            .filter(|s| !matches!(s.outcome, Outcome::Unchanged | Outcome::Planned))
            .map(|s| (s.stack.clone(), s.outcome != Outcome::Failed))
            .collect();
        let took = Duration::from_millis(report.duration_ms.unwrap_or(0));
        self.metrics.deployment(report.succeeded(), took, &stacks);
        for stack in report
            .stacks
            .iter()
            .filter(|s| s.outcome == Outcome::Pruned)
        {
            self.metrics.forget(&stack.stack);
        }
        let history = self.history();
        let log = history.log(&report.deployment);
        for stack in &report.stacks {
            match &stack.error {
                Some(error) => log.line(&format!("{}: failed: {error}", stack.stack)),
                None if stack.outcome != Outcome::Unchanged => {
                    log.line(&format!("{}: {:?}", stack.stack, stack.outcome).to_lowercase());
                }
                None => {}
            }
        }
        if let Some(error) = &report.error {
            log.line(&format!("failed: {error}"));
        }
        let took = report
            .duration_ms
            .map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string())
            .unwrap_or_default();
        log.line(&format!("{:?} in {took}", report.status).to_lowercase());
        if let Err(error) = history.record(report) {
            tracing::warn!("recording deployment {}: {error:#}", report.deployment);
        }
    }

    /// Runs one whole pass, its stacks a few at a time, holding the deploy lock throughout: for
    /// the CLI. The server's worker runs `prepare` and then each job in its stack's lane. Never
    /// fails as a whole: failures are in the report.
    pub async fn run(&self, deployment: String, request: &Request) -> Report {
        let mut report = Report::new(deployment, request.dry_run);
        match self.prepare(request, None, &mut report).await {
            Ok(Some(prepared)) => {
                let stacks = stream::iter(prepared.jobs)
                    .map(|job| async {
                        match job.unchanged() {
                            Some(report) => report,
                            None => self.execute(job).await,
                        }
                    })
                    .buffer_unordered(prepared.in_flight)
                    .collect()
                    .await;
                report.finish(stacks, prepared.refused);
            }
            Ok(None) => report.close(),
            Err(error) => report.fail(error),
        }
        self.conclude(&report);
        report
    }

    /// The first half of a pass, one at a time: takes the deploy lock (unless this process
    /// already holds it, `held`), syncs the repository, loads the compose files of the stacks to
    /// deploy and says what each stack's job is. `None` when deploys are suspended.
    pub(crate) async fn prepare(
        &self,
        request: &Request,
        held: Option<Arc<store::Lock>>,
        report: &mut Report,
    ) -> anyhow::Result<Option<Prepared>> {
        let transient = |error: anyhow::Error, report: &mut Report| {
            report.transient = true;
            error
        };
        report.triggers = request.triggers.clone();
        report.host.clone_from(&self.config.host);
        let history = self.history();
        let lock = match held {
            Some(lock) => lock,
            None => {
                let lock = Arc::new(self.lock().await.map_err(|e| transient(e, report))?);
                // With the lock just taken, no deployment of this state directory runs.
                match history.recover() {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!("{n} deployments were interrupted by a stop"),
                    Err(error) => tracing::warn!("recovering the history: {error:#}"),
                }
                lock
            }
        };
        if !self.slots.is_active() {
            return Err(self.hand_on(store::Inbox::from(request)));
        }
        if !request.dry_run {
            // Only while holding the lock: a running record without it was interrupted.
            if let Err(error) = history.record(report) {
                tracing::warn!("recording deployment {}: {error:#}", report.deployment);
            }
            let log = history.log(&report.deployment);
            log.line(&format!("started by {}", describe(&report.triggers)));
        }
        let checkout = self.sync().await.map_err(|e| transient(e, report))?;
        report.commit = Some(checkout.commit.to_string());
        report.branch = Some(checkout.branch.clone());
        report.message = Some(checkout.summary.clone());
        report.previous_commit = checkout.previous.as_ref().map(ToString::to_string);
        history.log(&report.deployment).line(&format!(
            "{} at {}: {}",
            checkout.branch,
            checkout.commit.short(),
            checkout.summary
        ));
        if checkout.dir.join(SUSPEND_FILE).exists() {
            tracing::info!(
                "{SUSPEND_FILE} is present at {}: deploys are paused",
                checkout.commit
            );
            report.suspended = true;
            return Ok(None);
        }
        // What a slot that handed over was still asked to deploy (issue 9).
        let mut request = request.clone();
        if !request.dry_run {
            request.merge(store::take_inbox(&self.config.state_dir)?.into());
        }

        let snapshot = {
            let dir = checkout.dir.clone();
            let commit = checkout.commit.clone();
            let tree = tokio::task::spawn_blocking(move || repo::tree::read(&dir, commit.as_str()))
                .await??;
            Arc::new(Snapshot {
                id: checkout.commit,
                tree,
                dir: checkout.dir,
            })
        };
        let mut state = store::load(&self.config.state_dir)?;
        if !request.dry_run && !request.pins.is_empty() {
            self.change_pins(&snapshot, &mut request, &mut state, report)
                .await?;
        }
        let pinned = self.pinned_snapshots(&state, !request.dry_run).await;
        let mut unknown: BTreeSet<&StackName> = request.forced.keys().collect();
        let mut found = Vec::new();
        let present = snapshot.stacks(&self.config);
        let names: BTreeSet<&String> = present.keys().chain(state.pins.keys()).collect();
        for name in names {
            let (snapshot, place) = match state.pins.get(name) {
                None => (Arc::clone(&snapshot), present.get(name).cloned()),
                Some(pin) => match pinned.get(&pin.commit) {
                    Some(Ok(pinned)) => {
                        let mut stacks = pinned.stacks(&self.config);
                        (Arc::clone(pinned), stacks.remove(name))
                    }
                    Some(Err(error)) => {
                        report.stacks.push(failed(name, error.clone()));
                        continue;
                    }
                    None => continue,
                },
            };
            let Some(StackDir { path, tree_id }) = place else {
                let error = format!(
                    "stack {name} is pinned to commit {}, which has no {}/{name}",
                    snapshot.id.short(),
                    self.config.services_dir.display()
                );
                report.stacks.push(failed(name, error));
                continue;
            };
            let dir = snapshot.dir.join(path);
            let Ok(name) = StackName::parse(name) else {
                report
                    .stacks
                    .push(failed(name, format!("{name:?} is not a valid stack name")));
                continue;
            };
            unknown.remove(&name);
            let forced = request.forced.get(&name).cloned();
            if request.all_changed || forced.is_some() {
                found.push(Found {
                    pull: request.pull.get(&name).cloned().unwrap_or_default(),
                    name,
                    tree_id,
                    dir,
                    forced,
                    snapshot,
                });
            }
        }
        for name in unknown {
            report.stacks.push(failed(
                name.as_str(),
                format!("no stack {name} in {}", self.config.services_dir.display()),
            ));
        }

        let loaded: Vec<(Found, anyhow::Result<Project>)> = stream::iter(found)
            .map(|found| async {
                let project = self.load(&found).await;
                (found, project)
            })
            .buffer_unordered(STACKS_IN_FLIGHT)
            .collect()
            .await;
        let clashes = project_clashes(&loaded, &state);
        let job = |stack: String, work: Work, unchanged: bool| Job {
            stack,
            deployment: report.deployment.clone(),
            work,
            dry_run: request.dry_run,
            unchanged,
            _lock: Arc::clone(&lock),
        };

        let mut jobs = Vec::new();
        let mut deployed = BTreeSet::new();
        for (found, project) in loaded {
            deployed.insert(found.name.to_string());
            let measured = project.and_then(|project| {
                let measured = measure(
                    &found.snapshot,
                    &found.tree_id,
                    &project,
                    &self.config.state_dir,
                )?;
                Ok((project, measured))
            });
            let error = match measured {
                Ok((project, (hashes, fingerprint))) => match clashes.get(found.name.as_str()) {
                    None => {
                        let stack = found.name.to_string();
                        let unchanged = state
                            .stacks
                            .get(&stack)
                            .is_some_and(|r| r.fingerprint == fingerprint);
                        let work = Work::Deploy {
                            snapshot: Arc::clone(&found.snapshot),
                            found,
                            project: Box::new(project),
                            hashes,
                            fingerprint,
                        };
                        jobs.push(job(stack, work, unchanged));
                        continue;
                    }
                    Some(error) => error.clone(),
                },
                Err(error) => format!("{error:#}"),
            };
            tracing::error!(stack = %found.name, "{error}");
            report.stacks.push(failed(found.name.as_str(), error));
        }

        let mut refused = None;
        if request.all_changed && self.config.prune != Prune::Off {
            let gone: Vec<String> = state
                .stacks
                .keys()
                .filter(|name| !present.contains_key(*name) && !deployed.contains(*name))
                .filter(|name| **name != self.config.self_stack && !state.pins.contains_key(*name))
                .cloned()
                .collect();
            match self.prune_refusal(&snapshot.tree, &present, &gone, &state) {
                Some(reason) => {
                    tracing::error!("{reason}");
                    refused = Some(reason);
                }
                None => {
                    for name in gone {
                        let project = state.stacks[&name].project.clone();
                        jobs.push(job(name, Work::Prune { project }, false));
                    }
                }
            }
        }
        let in_flight = match self.swarm().await {
            Ok(true) => SWARM_STACKS_IN_FLIGHT,
            _ => STACKS_IN_FLIGHT,
        };
        Ok(Some(Prepared {
            jobs,
            in_flight,
            refused,
            lock,
        }))
    }

    /// Carries out the request's pin changes on `state` and saves them: a stack whose change
    /// fails is reported failed and not deployed. Under the deploy lock.
    async fn change_pins(
        &self,
        head: &Snapshot,
        request: &mut Request,
        state: &mut store::State,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let history = self.history();
        for (name, change) in std::mem::take(&mut request.pins) {
            let stack = name.to_string();
            match change {
                PinChange::Release => {
                    if state.pins.remove(&stack).is_some() {
                        history
                            .log(&report.deployment)
                            .line(&format!("{stack}: unpinned"));
                    }
                }
                PinChange::To(to) => {
                    let checkout = head.dir.clone();
                    let (lookup, stack_name) = (history.clone(), stack.clone());
                    let pin = tokio::task::spawn_blocking(move || {
                        pin_target(&checkout, &lookup, &stack_name, &to)
                    })
                    .await?;
                    match pin {
                        Ok(pin) => {
                            history.log(&report.deployment).line(&format!(
                                "{stack}: rolling back to {} and pinning it there",
                                pin.commit.short()
                            ));
                            state.pins.insert(stack, pin);
                        }
                        Err(error) => {
                            request.forced.remove(&name);
                            report.stacks.push(failed(&stack, format!("{error:#}")));
                        }
                    }
                }
            }
        }
        let pins = state.pins.clone();
        store::update(&self.config.state_dir, |state| state.pins = pins)
    }

    /// The commits stacks are pinned to, each written out under the state directory (once),
    /// or why it cannot be. With `write` (under the lock), writes what is missing and removes
    /// what commits nothing uses any more; without, only reads.
    pub(crate) async fn pinned_snapshots(
        &self,
        state: &store::State,
        write: bool,
    ) -> BTreeMap<CommitId, Result<Arc<Snapshot>, String>> {
        let commits: BTreeSet<CommitId> = state.pins.values().map(|p| p.commit.clone()).collect();
        let in_use: BTreeSet<String> = commits
            .iter()
            .chain(state.stacks.values().map(|record| &record.commit))
            .map(|commit| commit.to_string())
            .collect();
        let checkout = self.checkout_dir();
        let state_dir = self.config.state_dir.clone();
        let made = tokio::task::spawn_blocking(move || {
            let entries = std::fs::read_dir(state_dir.join("pinned"))
                .ok()
                .filter(|_| write);
            if let Some(entries) = entries {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !in_use.contains(&name) {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            commits
                .into_iter()
                .map(|commit| {
                    let snapshot = Snapshot::written_out(&checkout, &state_dir, &commit, write)
                        .map(Arc::new)
                        .map_err(|error| format!("{error:#}"));
                    (commit, snapshot)
                })
                .collect()
        })
        .await;
        made.unwrap_or_default()
    }

    /// The error of a pass or job that reached a slot which is not (or no longer) the active
    /// one: what it was asked goes to the inbox, for the active slot to deploy (issue 9).
    fn hand_on(&self, inbox: store::Inbox) -> anyhow::Error {
        let own = self.slots.own().map_or("-".into(), |s| s.to_string());
        let active = self.slots.active();
        let not_active = format!("this instance (slot {own}) is not the active one");
        if self.slots.own().is_none() || inbox.is_empty() {
            return anyhow::anyhow!("{not_active}; slot {active} deploys");
        }
        match store::post_to_inbox(&self.config.state_dir, inbox) {
            Ok(()) => anyhow::anyhow!("{not_active}; handed on to slot {active}"),
            Err(error) => error.context(format!(
                "{not_active}; handing the request on to slot {active}"
            )),
        }
    }

    /// Carries out one stack's job and records the result in the state.
    pub(crate) async fn execute(&self, job: Job) -> StackReport {
        if !job.dry_run && !self.slots.is_active() {
            let error = self.hand_on(job.as_inbox());
            return failed(&job.stack, format!("{error:#}"));
        }
        let Job {
            stack,
            deployment,
            work,
            dry_run,
            ..
        } = job;
        let log = match dry_run {
            true => Log::default(),
            false => Log::to(self.history().log(&deployment), &stack),
        };
        let (report, change): (StackReport, Option<Option<StackRecord>>) = match work {
            Work::Deploy {
                snapshot,
                found,
                project,
                hashes,
                fingerprint,
            } => {
                let variables = self.variable_digests(&project);
                // Fresh from disk: an earlier job of this stack may have finished meanwhile.
                let (record, pin) = match store::load(&self.config.state_dir) {
                    Ok(state) => (
                        state.stacks.get(&stack).cloned(),
                        state.pins.get(&stack).cloned(),
                    ),
                    Err(error) => return failed(&stack, format!("{error:#}")),
                };
                let mut project = project;
                if let Some(pin) = &pin {
                    self.pinned_images(&mut project, pin, &log).await;
                }
                let stack_dir = found
                    .dir
                    .strip_prefix(&snapshot.dir)
                    .map_or_else(|_| self.config.services_dir.join(&stack), Path::to_path_buf);
                let changes = |report: &StackReport| {
                    let since = record
                        .as_ref()
                        .filter(|_| report.outcome != Outcome::Unchanged)?;
                    let checkout = self.checkout_dir();
                    Some(changes(
                        &checkout, since, &snapshot, &stack_dir, &hashes, &variables,
                    ))
                };
                let wanted = Target {
                    commit: &snapshot,
                    hashes: hashes.clone(),
                    fingerprint,
                    variables: variables.clone(),
                    dry_run,
                };
                let (mut report, mut new_record) = self
                    .deploy_stack(wanted, found, *project, record.clone(), log.clone())
                    .await;
                report.changes = changes(&report).unwrap_or_default();
                let last_good = record
                    .as_ref()
                    .filter(|record| record.commit != snapshot.id && pin.is_none());
                if let Some(last_good) = last_good.filter(|_| {
                    report.outcome == Outcome::Failed && self.config.auto_rollback && !dry_run
                }) {
                    match self.roll_back(&stack, last_good, &log).await {
                        Ok(record) => {
                            report.rolled_back_to = Some(record.commit.to_string());
                            new_record = Some(record);
                        }
                        Err(error) => log.line(format!("rolling back failed too: {error:#}")),
                    }
                    report.log = log.lines();
                }
                report.pinned = pin.map(|pin| pin.commit.to_string());
                (report, new_record.map(Some))
            }
            Work::Prune { project } => {
                let report = self.prune(&stack, &project, dry_run, log).await;
                let pruned = report.outcome == Outcome::Pruned;
                (report, pruned.then_some(None))
            }
        };
        let Some(change) = change.filter(|_| !dry_run) else {
            return report;
        };
        let state_dir = self.config.state_dir.clone();
        let name = stack.clone();
        let saved = tokio::task::spawn_blocking(move || {
            store::update(&state_dir, |state| match change {
                Some(record) => {
                    // What the image check found of a service whose image changed since is
                    // out of date: the next check says what the new one is.
                    if let Some(check) = state.image_checks.get_mut(&name) {
                        check.forget_replaced(&record.images);
                    }
                    state.stacks.insert(name, record);
                }
                None => {
                    state.stacks.remove(&name);
                    state.image_checks.remove(&name);
                }
            })
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|saved| saved);
        match saved {
            Ok(()) => report,
            Err(error) => StackReport {
                outcome: Outcome::Failed,
                error: Some(format!("recording stack {stack}: {error:#}")),
                ..report
            },
        }
    }

    /// Why taking down `gone` looks like a mistake rather than a wish, unless
    /// `STACKHOOK_PRUNE=force`: the services directory is missing from the commit (a moved or
    /// mistyped directory), or no stack at all would be left (issue 9, "Destructive mistakes").
    fn prune_refusal(
        &self,
        tree: &Tree,
        present: &BTreeMap<String, StackDir>,
        gone: &[String],
        state: &store::State,
    ) -> Option<String> {
        if gone.is_empty() || self.config.prune == Prune::Force {
            return None;
        }
        let services_dir = self.config.services_dir.display();
        let names = gone.join(", ");
        if !tree.has_dir(&self.config.services_dir) {
            return Some(format!(
                "refusing to take down {} stacks ({names}): the commit has no directory {services_dir}; \
                 set STACKHOOK_PRUNE=force if that is meant",
                gone.len()
            ));
        }
        let deployed = state
            .stacks
            .keys()
            .filter(|name| **name != self.config.self_stack)
            .count();
        if present.is_empty() && gone.len() >= deployed {
            return Some(format!(
                "refusing to take down every stack ({names}): {services_dir} holds none; \
                 set STACKHOOK_PRUNE=force if that is meant"
            ));
        }
        None
    }

    async fn lock(&self) -> anyhow::Result<store::Lock> {
        let state_dir = self.config.state_dir.clone();
        let holder = self.holder.clone();
        tokio::task::spawn_blocking(move || {
            store::Lock::acquire(&state_dir, &holder, Duration::from_secs(600), |current| {
                tracing::warn!("waiting for the deploy lock, held by {current}");
            })
        })
        .await?
    }

    async fn sync(&self) -> anyhow::Result<repo::Checkout> {
        let source = repo::Source {
            url: self.config.repo.clone(),
            branch: self.config.branch.clone(),
            token: self.config.git_token.clone(),
            ssh_key: self.config.git_ssh_key.clone(),
            known_hosts: self.config.git_known_hosts.clone(),
            check_host_keys: self.config.git_check_host_keys,
        };
        let dir = self.checkout_dir();
        let started = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || repo::sync(&source, &dir))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|synced| synced);
        self.metrics.sync(synced.is_ok(), started.elapsed());
        synced
    }

    /// Loads a stack's compose file.
    async fn load(&self, found: &Found) -> anyhow::Result<Project> {
        self.load_stack(found.dir.clone(), found.name.as_str())
            .await
    }

    /// Loads the compose file of the stack `name` in `dir`, with what the host adds to it: the
    /// process environment, the stack's local env file and the age keys.
    pub(crate) async fn load_stack(&self, dir: PathBuf, name: &str) -> anyhow::Result<Project> {
        let host = compose::Host {
            environment: self.config.environment.clone(),
            local_env: (self.config.local_env_dir.as_ref())
                .map(|local| local.join(format!("{name}.env"))),
            age_keys: self.config.age_keys.clone(),
        };
        Ok(tokio::task::spawn_blocking(move || compose::load(&dir, &host)).await??)
    }

    /// Whether stacks become Swarm services (`STACKHOOK_ENGINE_MODE`; with `auto`, when the
    /// engine is a Swarm manager).
    pub(crate) async fn swarm(&self) -> anyhow::Result<bool> {
        match self.config.engine_mode {
            EngineMode::Standalone => Ok(false),
            EngineMode::Auto => self.engine.swarm_manager().await,
            EngineMode::Swarm => match self.engine.swarm_manager().await? {
                true => Ok(true),
                false => anyhow::bail!(
                    "STACKHOOK_ENGINE_MODE=swarm, but the engine is no manager of an active swarm: \
                     run `docker swarm init` (or join it as a manager), or point DOCKER_HOST at a manager"
                ),
            },
        }
    }

    /// Brings one stack to what `commit` wants, unless nothing about it changed.
    async fn deploy_stack(
        &self,
        target: Target<'_>,
        found: Found,
        project: Project,
        record: Option<StackRecord>,
        log: Log,
    ) -> (StackReport, Option<StackRecord>) {
        match self.swarm().await {
            Ok(false) => {}
            Ok(true) => {
                return self
                    .deploy_swarm_stack(target, found, project, record, log)
                    .await;
            }
            Err(error) => {
                let mut report = StackReport::new(found.name.as_str(), Outcome::Failed);
                report.error = Some(format!("{error:#}"));
                return (report, None);
            }
        }
        let mut report = StackReport::new(found.name.as_str(), Outcome::Failed);
        report.project = Some(project.name.clone());
        report.notes.clone_from(&project.notes);
        let mut project = project;
        let sealed = sealed_files(&mut project, &self.config.state_dir, found.name.as_str());
        let result = async {
            let Some((plan, record)) = self
                .plan_stack(&target, &found, &project, record.as_ref(), &log)
                .await?
            else {
                return Ok((Outcome::Unchanged, None));
            };
            report.actions = plan.summaries();
            if target.dry_run {
                return Ok((Outcome::Planned, None));
            }
            for (file, source) in &sealed {
                store::write_private(file, project.sealed[source].as_bytes())
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            if plan.changes_anything() {
                apply::resources(self.engine.as_ref(), &project).await?;
                let own_slot = self
                    .slots
                    .own()
                    .filter(|_| found.name.as_str() == self.config.self_stack);
                match own_slot {
                    Some(own) => self.update_self(own, &project, &plan, &log).await?,
                    None => apply::containers(self.engine.as_ref(), &project, &plan, &log).await?,
                }
            }
            report.images = record.images.clone();
            // What no container of the stack mounts any more goes, once the deployment is done.
            let keep: Vec<PathBuf> = sealed.iter().map(|(file, _)| file.clone()).collect();
            store::remove_sealed(&self.config.state_dir, found.name.as_str(), &keep)?;
            anyhow::Ok((Outcome::Deployed, Some(record)))
        }
        .await;
        report.log = log.lines();
        match result {
            Ok((outcome, record)) => {
                report.outcome = outcome;
                (report, record)
            }
            Err(error) => {
                tracing::error!(stack = %found.name, "{error:#}");
                report.error = Some(format!("{error:#}"));
                (report, None)
            }
        }
    }

    /// `deploy_stack` in Swarm mode: the stack as Swarm services (`deploy::swarm`).
    async fn deploy_swarm_stack(
        &self,
        target: Target<'_>,
        found: Found,
        project: Project,
        record: Option<StackRecord>,
        log: Log,
    ) -> (StackReport, Option<StackRecord>) {
        let mut report = StackReport::new(found.name.as_str(), Outcome::Unchanged);
        report.project = Some(project.name.clone());
        // The notes say what `docker compose up` leaves to Swarm: Swarm does it here.
        if found.unchanged(record.as_ref(), &target.fingerprint) {
            return (report, None);
        }
        let origin = labels::Origin {
            stack: found.name.as_str(),
            commit: target.commit.id.as_str(),
        };
        let key = match store::digest_key(&self.config.state_dir) {
            Ok(key) => key,
            Err(error) => {
                report.outcome = Outcome::Failed;
                report.error = Some(format!("{error:#}"));
                return (report, None);
            }
        };
        let result = swarm::deploy(
            self.engine.as_ref(),
            &project,
            &key,
            &origin,
            target.dry_run,
            self.config.swarm_timeout,
            &log,
        )
        .await;
        report.log = log.lines();
        match result {
            Ok(actions) => {
                report.actions = actions;
                if target.dry_run {
                    report.outcome = Outcome::Planned;
                    return (report, None);
                }
                report.outcome = Outcome::Deployed;
                let record = StackRecord {
                    commit: target.commit.id.clone(),
                    fingerprint: target.fingerprint,
                    project: project.name.clone(),
                    deployed_at: now(),
                    services: target.hashes,
                    variables: target.variables,
                    images: BTreeMap::new(),
                };
                (report, Some(record))
            }
            Err(error) => {
                tracing::error!(stack = %found.name, "{error:#}");
                report.outcome = Outcome::Failed;
                report.error = Some(format!("{error:#}"));
                (report, None)
            }
        }
    }

    /// The stack's plan and the record it leaves once carried out; `None` when its fingerprint
    /// says nothing changed and it was not named. Resolves (pulls or builds) images, except in a
    /// dry run; touches no container.
    async fn plan_stack(
        &self,
        target: &Target<'_>,
        found: &Found,
        project: &Project,
        record: Option<&StackRecord>,
        log: &Log,
    ) -> anyhow::Result<Option<(Plan, StackRecord)>> {
        let Target {
            commit,
            hashes,
            fingerprint,
            variables,
            dry_run,
        } = target;
        if found.unchanged(record, fingerprint) {
            return Ok(None);
        }
        project.check_standalone()?;

        let pull = found.forced.flatten();
        let images = if *dry_run {
            self.present_images(project).await?
        } else {
            apply::images(self.engine.as_ref(), project, pull, &found.pull, log).await?
        };
        let observed = self.engine.containers(Some(&project.name)).await?;
        let origin = labels::Origin {
            stack: found.name.as_str(),
            commit: commit.id.as_str(),
        };
        let wanted = hashes
            .iter()
            .map(|(service, hash)| {
                let image = images.get(service);
                let reference = image.map_or_else(
                    || apply::image_reference(project, service),
                    |image| image.reference.clone(),
                );
                let image = image.map(|image| image.id.clone());
                let specs = (1..=labels::replicas(project, service))
                    .map(|number| {
                        labels::container_spec(
                            project,
                            service,
                            number,
                            &reference,
                            image.as_ref(),
                            hash,
                            &origin,
                        )
                    })
                    .collect();
                let want = Wanted {
                    config_hash: hash.clone(),
                    image,
                    specs,
                    order: project.services[service]
                        .update_order
                        .unwrap_or(UpdateOrder::StopFirst),
                };
                (service.clone(), want)
            })
            .collect();
        let plan = plan::plan(project, &wanted, &observed)
            .with_context(|| format!("{}", project.config_files[0].display()))?;
        let record = StackRecord {
            commit: commit.id.clone(),
            fingerprint: fingerprint.clone(),
            project: project.name.clone(),
            deployed_at: now(),
            services: hashes.clone(),
            variables: variables.clone(),
            images: images
                .iter()
                .map(|(service, image)| (service.clone(), image.id.as_str().to_owned()))
                .collect(),
        };
        Ok(Some((plan, record)))
    }

    /// For a dry run: the images the engine already has, without pulling anything.
    async fn present_images(
        &self,
        project: &Project,
    ) -> anyhow::Result<BTreeMap<String, apply::Image>> {
        let mut images = BTreeMap::new();
        for name in project.services.keys() {
            let reference = apply::image_reference(project, name);
            if let Some(id) = self.engine.image_id(&reference).await? {
                images.insert(name.clone(), apply::Image { reference, id });
            }
        }
        Ok(images)
    }

    /// Takes down a stack that is gone from the repository: its containers and networks, not its
    /// volumes, which may hold the only copy of someone's data.
    async fn prune(&self, name: &str, project: &str, dry_run: bool, log: Log) -> StackReport {
        let mut report = StackReport::new(name, Outcome::Pruned);
        report.project = Some(project.to_owned());
        let swarm = match self.swarm().await {
            Ok(swarm) => swarm,
            Err(error) => {
                // Taking down containers instead would find none and forget the stack's services.
                report.outcome = Outcome::Failed;
                report.error = Some(format!("taking down stack {name}: {error:#}"));
                return report;
            }
        };
        if swarm {
            match swarm::take_down(self.engine.as_ref(), project, dry_run, &log).await {
                Ok(actions) => {
                    report.actions = actions;
                    if dry_run {
                        report.outcome = Outcome::Planned;
                    }
                }
                Err(error) => {
                    report.outcome = Outcome::Failed;
                    report.error = Some(format!("taking down stack {name}: {error:#}"));
                }
            }
            report.log = log.lines();
            return report;
        }
        let result: anyhow::Result<()> = async {
            let containers = self.engine.containers(Some(project)).await?;
            for container in containers {
                report.actions.push(Summary {
                    service: container
                        .label(labels::SERVICE)
                        .unwrap_or_default()
                        .to_owned(),
                    number: container
                        .label(labels::CONTAINER_NUMBER)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                    kind: Kind::Remove,
                    reason: Some("stack is no longer in the repository".into()),
                });
                if !dry_run {
                    log.line(format!(
                        "removing {} (stack {name} is gone)",
                        container.name
                    ));
                    apply::stop_and_remove(self.engine.as_ref(), &container.id, None).await?;
                }
            }
            if !dry_run {
                for network in self.engine.networks(project).await? {
                    self.engine.remove_network(&network).await?;
                }
                // The decrypted files its containers mounted go with them.
                store::remove_sealed(&self.config.state_dir, name, &[])?;
            }
            Ok(())
        }
        .await;
        if dry_run {
            report.outcome = Outcome::Planned;
        }
        if let Err(error) = result {
            report.outcome = Outcome::Failed;
            report.error = Some(format!("taking down stack {name}: {error:#}"));
        }
        report.log = log.lines();
        report
    }
}

/// Stacks whose compose project name another stack also uses, in this pass or as deployed, each
/// with an error naming both: two stacks under one project would fight over its containers.
fn project_clashes(
    loaded: &[(Found, anyhow::Result<Project>)],
    state: &store::State,
) -> BTreeMap<String, String> {
    let mut owners: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (found, project) in loaded {
        if let Ok(project) = project {
            owners
                .entry(&project.name)
                .or_default()
                .insert(found.name.as_str());
        }
    }
    let loaded_names: BTreeSet<&str> = loaded.iter().map(|(f, _)| f.name.as_str()).collect();
    for (name, record) in &state.stacks {
        if !loaded_names.contains(name.as_str())
            && let Some(stacks) = owners.get_mut(record.project.as_str())
        {
            stacks.insert(name);
        }
    }
    let mut clashes = BTreeMap::new();
    for (project, stacks) in owners.into_iter().filter(|(_, s)| s.len() > 1) {
        let names: Vec<&str> = stacks.iter().copied().collect();
        for stack in &stacks {
            clashes.insert(
                stack.to_string(),
                format!(
                    "stacks {} use the same compose project name, {project}: give each its own `name:`",
                    names.join(" and ")
                ),
            );
        }
    }
    clashes
}

fn failed(stack: &str, error: String) -> StackReport {
    StackReport {
        error: Some(error),
        ..StackReport::new(stack, Outcome::Failed)
    }
}

/// RFC 3339, UTC, to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The pin that `to` (a deployment id, or a commit) names for `stack`: a deployment gives the
/// commit it deployed and the images the stack ran; a commit gives itself, with the images of
/// the newest deployment of the stack at that commit, if the history has one.
fn pin_target(
    checkout: &Path,
    history: &History,
    stack: &str,
    to: &str,
) -> anyhow::Result<store::Pin> {
    let deployed = |report: &Report| {
        report
            .stacks
            .iter()
            .find(|s| s.stack == stack && s.outcome == Outcome::Deployed)
            .cloned()
    };
    let (commit, images, deployment) = if History::parse_id(to).is_some() {
        let report = history
            .get(to)?
            .with_context(|| format!("no deployment {to} in the history"))?;
        let deployed = deployed(&report)
            .with_context(|| format!("deployment {to} did not deploy stack {stack}"))?;
        let commit = report
            .commit
            .as_deref()
            .with_context(|| format!("deployment {to} has no commit"))?;
        (
            CommitId::parse(commit)?,
            deployed.images,
            Some(to.to_owned()),
        )
    } else {
        let commit = repo::resolve(checkout, to)?;
        let images = history
            .list(usize::MAX, Some(stack))?
            .iter()
            .filter(|report| report.commit.as_deref() == Some(commit.as_str()))
            .find_map(deployed)
            .map(|deployed| deployed.images)
            .unwrap_or_default();
        (commit, images, None)
    };
    Ok(store::Pin {
        commit,
        images,
        deployment,
        since: now(),
    })
}

/// A stack's services' configuration hashes and its fingerprint at `snapshot`. A stack that
/// holds SOPS files is measured by what they hold, under the state directory's digest key
/// (`stack::sealed_digest`), never by their ciphertext.
fn measure(
    snapshot: &Snapshot,
    tree_id: &str,
    project: &Project,
    state_dir: &Path,
) -> anyhow::Result<(BTreeMap<String, ConfigHash>, Fingerprint)> {
    let key = match project.sealed.is_empty() {
        true => None,
        false => Some(store::digest_key(state_dir).context("the digest key")?),
    };
    let sealed = |path: &Path| {
        Some(stack::sealed_digest(
            key.as_deref()?,
            project.sealed.get(path)?,
        ))
    };
    let content_id = |path: &Path| {
        sealed(path).or_else(|| {
            let relative = path.strip_prefix(&snapshot.dir).ok()?;
            snapshot.tree.content_id(relative).map(str::to_owned)
        })
    };
    let hashes: BTreeMap<String, ConfigHash> = project
        .services
        .keys()
        .map(|service| {
            let hash = stack::config_hash(project, service, &content_id, key.as_deref());
            (service.clone(), hash)
        })
        .collect();
    let tree_id = match (&key, project.working_dir.strip_prefix(&snapshot.dir)) {
        (Some(_), Ok(stack_dir)) => {
            stack::sealed_tree_id(snapshot.tree.files_under(stack_dir).map(|(path, id)| {
                (
                    path,
                    sealed(&snapshot.dir.join(path)).unwrap_or(id.to_owned()),
                )
            }))
        }
        _ => tree_id.to_owned(),
    };
    let fingerprint = stack::fingerprint(&tree_id, project, &hashes, key.as_deref());
    Ok((hashes, fingerprint))
}

/// Points the services' SOPS-encrypted secret and config files at where they are written out
/// for their containers (`store::sealed_file`), and returns `(written out, encrypted source)`
/// for each. Writing them is the caller's, once the stack is to be deployed.
fn sealed_files(project: &mut Project, state_dir: &Path, stack: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut files = Vec::new();
    for service in project.services.values_mut() {
        for file in &mut service.files {
            let compose::FileSource::File(source) = &file.source else {
                continue;
            };
            if !project.sealed.contains_key(source) {
                continue;
            }
            let kind = match file.kind {
                compose::FileKind::Secret => "secret",
                compose::FileKind::Config => "config",
            };
            let written = store::sealed_file(state_dir, stack, kind, &file.name);
            if !files.iter().any(|(path, _)| *path == written) {
                files.push((written.clone(), source.clone()));
            }
            file.source = compose::FileSource::File(written);
        }
    }
    files
}

/// What changed in a stack since `since` was deployed: its files between the two commits, the
/// variables whose digest differs and the services whose configuration hash does.
fn changes(
    checkout: &Path,
    since: &StackRecord,
    snapshot: &Snapshot,
    stack_dir: &Path,
    hashes: &BTreeMap<String, ConfigHash>,
    variables: &BTreeMap<String, String>,
) -> Changes {
    fn differing<V: PartialEq>(
        old: &BTreeMap<String, V>,
        new: &BTreeMap<String, V>,
    ) -> Vec<String> {
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        names
            .into_iter()
            .filter(|name| old.get(*name) != new.get(*name))
            .cloned()
            .collect()
    }
    let files = if since.commit == snapshot.id {
        Vec::new()
    } else {
        repo::changed_files(checkout, &since.commit, &snapshot.id, stack_dir, 100).unwrap_or_else(
            |error| {
                tracing::debug!("listing changed files: {error:#}");
                Vec::new()
            },
        )
    };
    Changes {
        since: Some(since.commit.to_string()),
        files,
        // A record from before digests were kept has none: nothing to compare.
        variables: match since.variables.is_empty() {
            true => Vec::new(),
            false => differing(&since.variables, variables),
        },
        services: differing(&since.services, hashes),
    }
}

/// The triggers of a deployment, for its log: `webhook push (delivery d1) by alice`, ….
fn describe(triggers: &[Trigger]) -> String {
    if triggers.is_empty() {
        return "a direct call".into();
    }
    let described: Vec<String> = triggers
        .iter()
        .map(|trigger| {
            let mut text = trigger.kind.name().to_owned();
            if let Some(event) = &trigger.event {
                text.push_str(&format!(" {event}"));
            }
            if let Some(delivery) = &trigger.delivery {
                text.push_str(&format!(" (delivery {delivery})"));
            }
            if let Some(pusher) = &trigger.pusher {
                text.push_str(&format!(" by {pusher}"));
            }
            if trigger.kind == TriggerKind::ImageUpdate
                && let Some(message) = &trigger.message
            {
                text.push_str(&format!(" ({message})"));
            }
            text
        })
        .collect();
    described.join(", ")
}
