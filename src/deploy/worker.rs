//! The worker: passes one at a time, and each stack in a lane of its own.
//!
//! A pass's first half (lock, git sync, loading compose files, deciding each stack's job) is one
//! shared step: one runs at a time, and triggers that arrive meanwhile fold into one more pass at
//! the newest commit. Each stack's job then runs in that stack's lane: one job at a time per
//! stack, and a job that arrives while one runs waits, folded with any other waiting job so that
//! the newest commit wins. A push to stack A therefore deploys while stack B still waits for a
//! slow health check (issue 9), and two deployments of one stack never overlap.
//!
//! Every trigger gets the id of the pass that will serve it at once (for a `202` answer) and a
//! receiver for that pass's report (for `?wait=true`). A pass that failed for a reason that may
//! pass by itself (the deploy lock, the git remote) is tried again with backoff until it
//! succeeds or a newer trigger supersedes it, so that a push is never silently dropped.
//! The deploy lock is held while a pass prepares or any job runs; the next pass reuses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, stream};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Deployer, Job, Prepared, Report, Request, StackReport, failed};
use crate::notify::Notifier;
use crate::repo::CommitId;
use crate::stack::Fingerprint;
use crate::store;

/// A handle to the worker; clones share it.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    deployer: Deployer,
    queue: Mutex<Queue>,
    /// Stacks whose lane runs a job, with the job waiting behind it, if any.
    lanes: Mutex<HashMap<String, Lane>>,
    /// The deploy lock while a pass or a job holds it.
    lock: Mutex<Weak<store::Lock>>,
    /// Which stacks drifted from what was deployed (`drift::watch` keeps it).
    drift: Arc<super::drift::Drift>,
    sequence: AtomicU64,
    /// Counts the jobs that finished: a pass prepared while one finished cannot trust what it
    /// read of the state then.
    jobs_done: AtomicU64,
    /// Counts triggers from outside; a retry that finds it changed was superseded.
    triggers: AtomicU64,
    /// The first retry's delay; each next one doubles it, up to `MAX_RETRY_DELAY`.
    retry_delay: Duration,
    /// Told of every pass that ends (issue 8).
    notifier: Option<Notifier>,
}

/// The longest wait between two tries of a pass that keeps failing for a transient reason.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Queue {
    /// A pass is being prepared.
    running: bool,
    /// Set by `finish`: no pass and no job starts any more.
    closing: bool,
    pending: Option<Pending>,
    last: Option<Arc<Report>>,
}

struct Pending {
    id: String,
    request: Request,
    waiters: Vec<oneshot::Sender<Arc<Report>>>,
    /// How many times this request already failed transiently.
    retries: u32,
}

type Waiters = Vec<oneshot::Sender<Arc<StackReport>>>;

/// A stack's lane: it runs one job, for `waiters`; `next` waits behind it.
struct Lane {
    /// The running job's target: its fingerprint and the commit it was prepared at.
    target: Option<(Fingerprint, CommitId)>,
    waiters: Waiters,
    next: Option<(Job, Waiters)>,
}

/// What became of a job handed to its lane.
enum Submitted {
    /// Nothing to do: the stack is as recorded and its lane is idle.
    Done(Box<StackReport>),
    /// The job running in the lane already deploys what this one wants, for an earlier
    /// commit: the stack did not change since, so this pass leaves it to the earlier one.
    Covered,
    /// The job runs or waits; its report comes here.
    Queued(oneshot::Receiver<Arc<StackReport>>),
}

/// What a trigger gets back.
pub struct Ticket {
    pub deployment: String,
    pub report: oneshot::Receiver<Arc<Report>>,
}

impl Worker {
    pub fn new(deployer: Deployer) -> Worker {
        Worker::with_retry_delay(deployer, Duration::from_secs(2))
    }

    /// A worker whose first retry of a transiently failed pass comes after `retry_delay`.
    pub fn with_retry_delay(deployer: Deployer, retry_delay: Duration) -> Worker {
        Worker {
            inner: Arc::new(Inner {
                deployer,
                queue: Mutex::new(Queue::default()),
                lanes: Mutex::new(HashMap::new()),
                lock: Mutex::new(Weak::new()),
                drift: Arc::default(),
                sequence: AtomicU64::new(0),
                jobs_done: AtomicU64::new(0),
                triggers: AtomicU64::new(0),
                retry_delay,
                notifier: None,
            }),
        }
    }

    /// A worker that tells `notifier` of every pass that ends. Call it before the worker is
    /// cloned or triggered.
    pub fn with_notifier(mut self, notifier: Option<Notifier>) -> Worker {
        Arc::get_mut(&mut self.inner)
            .expect("with_notifier is called on a new worker")
            .notifier = notifier;
        self
    }

    pub fn deployer(&self) -> &Deployer {
        &self.inner.deployer
    }

    /// Queues a pass, or folds `request` into the one already queued. Must be called within a
    /// tokio runtime.
    pub fn trigger(&self, request: Request) -> Ticket {
        let (sender, receiver) = oneshot::channel();
        self.inner.triggers.fetch_add(1, Ordering::SeqCst);
        let deployment = self.inner.enqueue(request, Some(sender), 0);
        Ticket {
            deployment,
            report: receiver,
        }
    }

    /// The report of the last finished pass.
    pub fn last_report(&self) -> Option<Arc<Report>> {
        self.inner.queue().last.clone()
    }

    /// Whether a pass is being prepared: it may be changing pins and records.
    pub fn preparing(&self) -> bool {
        self.inner.queue().running
    }

    /// Whether a job of `stack` runs or waits.
    pub fn deploying(&self, stack: &str) -> bool {
        self.inner.lanes().contains_key(stack)
    }

    pub fn drift(&self) -> &super::drift::Drift {
        &self.inner.drift
    }

    /// Whether a pass is being prepared or queued, or a stack's job runs.
    pub fn busy(&self) -> bool {
        self.inner.queue().running || !self.inner.lanes().is_empty()
    }

    /// Lets the running pass and jobs finish, within `patience`, and starts no other: for a
    /// clean stop, so that SIGTERM never cuts a recreate in half (issue 9). Queued passes and
    /// jobs are dropped; their callers' waits end without a report. Returns whether the worker
    /// went idle in time.
    pub async fn finish(&self, patience: Duration) -> bool {
        self.inner.queue().closing = true;
        let deadline = tokio::time::Instant::now() + patience;
        while self.busy() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

impl Inner {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("worker queue lock")
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes.lock().expect("worker lanes lock")
    }

    /// Queues a pass, or folds `request` into the one already queued; returns the pass's id.
    fn enqueue(
        self: &Arc<Self>,
        request: Request,
        waiter: Option<oneshot::Sender<Arc<Report>>>,
        retries: u32,
    ) -> String {
        let mut queue = self.queue();
        let deployment = match &mut queue.pending {
            Some(pending) => {
                pending.request.merge(request);
                pending.waiters.extend(waiter);
                pending.retries = pending.retries.min(retries);
                pending.id.clone()
            }
            None => {
                let id = self.next_id();
                queue.pending = Some(Pending {
                    id: id.clone(),
                    request,
                    waiters: waiter.into_iter().collect(),
                    retries,
                });
                id
            }
        };
        if !queue.running {
            queue.running = true;
            tokio::spawn(Arc::clone(self).drain());
        }
        deployment
    }

    /// Tries `request` again after a delay that doubles with each retry, unless a trigger
    /// arrived meanwhile: the pass that serves it covers this one.
    fn retry_later(self: &Arc<Self>, request: Request, retries: u32) {
        let delay = self
            .retry_delay
            .saturating_mul(2u32.saturating_pow(retries.min(16)))
            .min(MAX_RETRY_DELAY);
        let triggers = self.triggers.load(Ordering::SeqCst);
        let inner = Arc::clone(self);
        tracing::warn!(
            "trying the deployment again in {}",
            humantime::format_duration(delay)
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let closing = inner.queue().closing;
            if !closing && inner.triggers.load(Ordering::SeqCst) == triggers {
                inner.enqueue(request, None, retries + 1);
            }
        });
    }

    /// A sortable id: the UTC time the pass was queued and a sequence number.
    fn next_id(&self) -> String {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{seconds}-{sequence}")
    }

    /// Prepares passes one at a time; each prepared pass's jobs go to the lanes, and the pass's
    /// report is gathered in a task of its own, so that the next pass can start at once.
    async fn drain(self: Arc<Self>) {
        loop {
            let pending = {
                let mut queue = self.queue();
                match queue.pending.take() {
                    Some(pending) if !queue.closing => pending,
                    _ => {
                        queue.running = false;
                        return;
                    }
                }
            };
            let jobs_done = self.jobs_done.load(Ordering::SeqCst);
            let (report, prepared) = self.prepare(pending.id.clone(), &pending.request).await;
            match prepared {
                Some(prepared) => {
                    *self.lock.lock().expect("worker lock slot") = Arc::downgrade(&prepared.lock);
                    let gather =
                        Arc::clone(&self).gather(report, prepared, jobs_done, pending.waiters);
                    tokio::spawn(gather);
                }
                None => {
                    if report.transient {
                        self.retry_later(pending.request, pending.retries);
                    }
                    self.done(report, pending.waiters);
                }
            }
        }
    }

    /// Prepares one pass in a task of its own, so that a panic inside it fails that
    /// deployment instead of the worker (issue 9, "Crash safety").
    async fn prepare(&self, id: String, request: &Request) -> (Report, Option<Prepared>) {
        let deployer = self.deployer.clone();
        let held = self.lock.lock().expect("worker lock slot").upgrade();
        let request = request.clone();
        let pass_id = id.clone();
        let span = tracing::info_span!("deployment", id = %pass_id);
        let pass = tokio::spawn(
            async move {
                let mut report = Report::new(pass_id, request.dry_run);
                let prepared = deployer.prepare(&request, held, &mut report).await;
                (report, prepared)
            }
            .instrument(span),
        );
        match pass.await {
            Ok((report, Ok(Some(prepared)))) => (report, Some(prepared)),
            Ok((mut report, Ok(None))) => {
                report.close();
                (report, None)
            }
            Ok((mut report, Err(error))) => {
                report.fail(error);
                (report, None)
            }
            Err(error) => {
                let reason = panic_reason(error);
                tracing::error!(deployment = %id, "the deployment panicked: {reason}");
                let error = format!("internal error: the deployment panicked: {reason}");
                (Report::failed(id, error), None)
            }
        }
    }

    /// Sends a pass's jobs to their lanes, a few at a time, and reports when all are done.
    /// `jobs_done` is the count of finished jobs when the pass began to be prepared.
    async fn gather(
        self: Arc<Self>,
        mut report: Report,
        prepared: Prepared,
        jobs_done: u64,
        waiters: Vec<oneshot::Sender<Arc<Report>>>,
    ) {
        let Prepared {
            jobs,
            refused,
            in_flight,
            ..
        } = prepared;
        let stacks: Vec<Option<StackReport>> = stream::iter(jobs)
            .map(|job| {
                let inner = Arc::clone(&self);
                async move {
                    let stack = job.stack.clone();
                    if job.dry_run() {
                        return Some(inner.deployer.execute(job).await);
                    }
                    let state_read = inner.jobs_done.load(Ordering::SeqCst) == jobs_done;
                    match inner.submit(job, state_read) {
                        Submitted::Done(report) => Some(*report),
                        Submitted::Covered => None,
                        Submitted::Queued(done) => Some(match done.await {
                            Ok(report) => (*report).clone(),
                            Err(_) => {
                                failed(&stack, "stackhook stopped before deploying it".into())
                            }
                        }),
                    }
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        report.finish(stacks.into_iter().flatten().collect(), refused);
        self.done(report, waiters);
    }

    fn done(&self, report: Report, waiters: Vec<oneshot::Sender<Arc<Report>>>) {
        self.deployer.conclude(&report);
        let report = Arc::new(report);
        let changed = report.error.is_some()
            || report
                .stacks
                .iter()
                .any(|s| s.outcome != super::Outcome::Unchanged);
        if changed {
            tracing::info!(
                deployment = %report.deployment,
                succeeded = report.succeeded(),
                "deployment finished"
            );
        } else {
            // A poll that finds nothing new says so only at debug level.
            tracing::debug!(deployment = %report.deployment, "nothing changed");
        }
        self.queue().last = Some(Arc::clone(&report));
        if let Some(notifier) = &self.notifier {
            notifier.deployment_finished(Arc::clone(&report));
        }
        for waiter in waiters {
            let _ = waiter.send(Arc::clone(&report));
        }
    }

    /// Hands `job` to its stack's lane: it runs at once if the lane is free, else it waits,
    /// folded into the job already waiting there. A job the running one already carries out
    /// (same fingerprint, not named) waits for its report if both were prepared at one commit,
    /// and is `Covered` if not. A job whose stack was as recorded is `Done` at once if the lane
    /// is free and `state_read`: no job finished since its pass read the state. The receiver
    /// gets the report of the job that carried it out; it ends without one if the worker stops
    /// first.
    fn submit(self: &Arc<Self>, job: Job, state_read: bool) -> Submitted {
        let (waiter, receiver) = oneshot::channel();
        if self.queue().closing {
            return Submitted::Queued(receiver);
        }
        let mut lanes = self.lanes();
        match lanes.get_mut(&job.stack) {
            Some(lane) => {
                let same_target = lane
                    .target
                    .as_ref()
                    .is_some_and(|(fingerprint, _)| Some(fingerprint) == job.fingerprint());
                if lane.next.is_none() && same_target && !job.forced() {
                    let same_commit = lane
                        .target
                        .as_ref()
                        .is_some_and(|(_, commit)| Some(commit) == job.commit());
                    if !same_commit {
                        return Submitted::Covered;
                    }
                    lane.waiters.push(waiter);
                    return Submitted::Queued(receiver);
                }
                lane.next = Some(match lane.next.take() {
                    Some((waiting, mut waiters)) => {
                        waiters.push(waiter);
                        (waiting.merge(job), waiters)
                    }
                    None => (job, vec![waiter]),
                });
            }
            None => {
                if let Some(report) = job.unchanged().filter(|_| state_read) {
                    return Submitted::Done(Box::new(report));
                }
                let lane = Lane {
                    target: job.target(),
                    waiters: vec![waiter],
                    next: None,
                };
                lanes.insert(job.stack.clone(), lane);
                tokio::spawn(Arc::clone(self).run_lane(job));
            }
        }
        Submitted::Queued(receiver)
    }

    /// Runs a stack's jobs one after the other until none waits.
    async fn run_lane(self: Arc<Self>, mut job: Job) {
        let stack = job.stack.clone();
        loop {
            let report = Arc::new(self.execute(job).await);
            self.jobs_done.fetch_add(1, Ordering::SeqCst);
            let closing = self.queue().closing;
            let mut lanes = self.lanes();
            let lane = lanes.get_mut(&stack).expect("a running lane is listed");
            for waiter in lane.waiters.drain(..) {
                let _ = waiter.send(Arc::clone(&report));
            }
            match lane.next.take() {
                Some((next, waiters)) if !closing => {
                    lane.target = next.target();
                    lane.waiters = waiters;
                    job = next;
                }
                _ => {
                    lanes.remove(&stack);
                    return;
                }
            }
        }
    }

    /// Carries out one job in a task of its own: a panic fails that stack only.
    async fn execute(&self, job: Job) -> StackReport {
        let deployer = self.deployer.clone();
        let stack = job.stack.clone();
        let span = tracing::info_span!("deployment", id = %job.deployment(), stack = %stack);
        match tokio::spawn(async move { deployer.execute(job).await }.instrument(span)).await {
            Ok(report) => report,
            Err(error) => {
                let reason = panic_reason(error);
                tracing::error!(stack, "deploying the stack panicked: {reason}");
                failed(
                    &stack,
                    format!("internal error: deploying the stack panicked: {reason}"),
                )
            }
        }
    }
}

fn panic_reason(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(error) => error.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use super::*;
    use crate::config::Config;
    use crate::deploy::Outcome;
    use crate::engine::fake::{Fake, Operation};
    use crate::slot::{Slot, Slots};
    use crate::stack::StackName;
    use crate::stack::compose::PullPolicy;

    /// A repository with one stack, committed with the git CLI.
    pub(crate) fn repository(dir: &std::path::Path) {
        git(dir, &["init", "-q", "-b", "main"]);
        commit(dir, &[("web", "web:1")]);
    }

    /// Writes each stack's compose file, with one service of the stack's name on `image`, and
    /// commits.
    pub(crate) fn commit(dir: &std::path::Path, stacks: &[(&str, &str)]) {
        for (stack, image) in stacks {
            let stack_dir = dir.join("services").join(stack);
            std::fs::create_dir_all(&stack_dir).unwrap();
            let compose = format!("services:\n  {stack}:\n    image: {image}\n");
            std::fs::write(stack_dir.join("compose.yaml"), compose).unwrap();
        }
        git(dir, &["add", "."]);
        git(
            dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "change",
            ],
        );
    }

    pub(crate) fn git(dir: &std::path::Path, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    /// A deployer from `repo` to `engine`, its state in `state`, in `slot` if given.
    pub(crate) fn deployer(
        repo: &std::path::Path,
        state: &std::path::Path,
        engine: Arc<Fake>,
        slot: Option<Slot>,
    ) -> Deployer {
        let environment = BTreeMap::from([
            ("STACKHOOK_REPO".to_owned(), repo.display().to_string()),
            (
                "STACKHOOK_STATE_DIR".to_owned(),
                state.display().to_string(),
            ),
        ]);
        let config = Config::from_sources(None, &environment).unwrap();
        Deployer {
            slots: Slots::new(slot, config.state_dir.clone()),
            config: Arc::new(config),
            engine,
            holder: "test".into(),
            metrics: Default::default(),
        }
    }

    /// A worker deploying from `repo` to `engine`, its state in `state`.
    pub(crate) fn worker(
        repo: &std::path::Path,
        state: &std::path::Path,
        engine: Arc<Fake>,
    ) -> Worker {
        Worker::new(deployer(repo, state, engine, None))
    }

    pub(crate) async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn image_of(engine: &Fake, container: &str) -> Option<String> {
        engine.by_name().get(container).map(|c| c.image.clone())
    }

    #[tokio::test]
    async fn a_push_to_one_stack_deploys_while_another_stack_is_still_deploying() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        commit(repo.path(), &[("slow", "slow:1"), ("fast", "fast:1")]);
        let engine = Arc::new(Fake::default());
        let slow = engine.hold("slow");
        let worker = worker(repo.path(), state.path(), engine.clone());

        let first = worker.trigger(Request::all_changed());
        until("fast deployed", || {
            image_of(&engine, "fast-fast-1").as_deref() == Some("fast:1")
        })
        .await;
        commit(repo.path(), &[("fast", "fast:2")]);
        let second = worker.trigger(Request::all_changed()).report;
        let second = tokio::time::timeout(Duration::from_secs(20), second)
            .await
            .expect("the push to fast waited for slow")
            .unwrap();

        let stacks: Vec<(&str, Outcome)> = second
            .stacks
            .iter()
            .map(|s| (s.stack.as_str(), s.outcome))
            .collect();
        assert_eq!(stacks, [("fast", Outcome::Deployed)], "{second:?}");
        assert_eq!(image_of(&engine, "fast-fast-1").as_deref(), Some("fast:2"));
        assert_eq!(image_of(&engine, "slow-slow-1"), None, "slow is still held");

        slow.release();
        let first = first.report.await.unwrap();
        assert!(first.succeeded(), "{first:?}");
        assert_eq!(image_of(&engine, "slow-slow-1").as_deref(), Some("slow:1"));
        let recorded = crate::store::load(state.path()).unwrap();
        assert_eq!(
            recorded.stacks.keys().collect::<Vec<_>>(),
            ["fast", "slow"],
            "both stacks recorded"
        );
    }

    #[tokio::test]
    async fn deployments_of_one_stack_never_overlap_and_the_newest_commit_wins() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        commit(repo.path(), &[("slow", "slow:1")]);
        let engine = Arc::new(Fake::default());
        let slow = engine.hold("slow");
        let worker = worker(repo.path(), state.path(), engine.clone());

        let first = worker.trigger(Request::all_changed());
        until("slow's first job runs", || {
            worker.inner.lanes().contains_key("slow")
        })
        .await;
        commit(repo.path(), &[("slow", "slow:2")]);
        let second = worker.trigger(Request::all_changed());
        until("the second job waits in the lane", || {
            worker.inner.lanes()["slow"].next.is_some()
        })
        .await;
        commit(repo.path(), &[("slow", "slow:3")]);
        let third = worker.trigger(Request::all_changed());
        until("the third pass is prepared", || {
            !worker.inner.queue().running
        })
        .await;
        slow.release();

        for ticket in [first, second, third] {
            let report = ticket.report.await.unwrap();
            assert!(report.succeeded(), "{report:?}");
        }
        assert_eq!(image_of(&engine, "slow-slow-1").as_deref(), Some("slow:3"));
        let creates: Vec<String> = engine
            .history()
            .into_iter()
            .filter(|operation| operation.starts_with("create "))
            .collect();
        assert_eq!(
            creates,
            ["create slow-slow-1", "create slow-slow-1"],
            "slow:1, then slow:3; slow:2 was superseded before it started"
        );
        assert!(!worker.busy());
    }

    #[tokio::test]
    async fn a_slot_that_handed_over_leaves_what_it_was_asked_for_the_active_one() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        repository(repo.path());
        let engine = Arc::new(Fake::default());
        let deployer = |slot| deployer(repo.path(), state.path(), engine.clone(), Some(slot));
        crate::store::set_active_slot(state.path(), Slot::B).unwrap();
        let web = || StackName::parse("web").unwrap();

        // A request that reached slot A as it handed over to B.
        let old = deployer(Slot::A);
        let request = Request::stack(web(), Some(PullPolicy::Always));
        let report = old.run("1".into(), &request).await;
        assert_eq!(
            report.error.as_deref(),
            Some("this instance (slot A) is not the active one; handed on to slot B")
        );
        assert!(engine.by_name().is_empty());
        assert!(crate::store::inbox_written(state.path()).is_some());

        let new = deployer(Slot::B);
        let report = new.run("2".into(), &Request::default()).await;
        let stacks: Vec<(&str, Outcome)> = report
            .stacks
            .iter()
            .map(|s| (s.stack.as_str(), s.outcome))
            .collect();
        assert_eq!(stacks, [("web", Outcome::Deployed)], "{report:?}");
        assert_eq!(crate::store::inbox_written(state.path()), None, "taken");
    }

    #[tokio::test]
    async fn a_pass_that_changes_nothing_leaves_no_history() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        repository(repo.path());
        let engine = Arc::new(Fake::default());
        let worker = worker(repo.path(), state.path(), engine);

        let first = worker.trigger(Request::all_changed()).report.await.unwrap();
        let second = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert!(second.changed_nothing(), "{second:?}");
        let kept: Vec<String> = worker
            .deployer()
            .history()
            .list(10, None)
            .unwrap()
            .into_iter()
            .map(|r| r.deployment)
            .collect();
        assert_eq!(kept, std::slice::from_ref(&first.deployment));
        let log = worker.deployer().history().read_log(&second.deployment, 0);
        assert_eq!(log.unwrap(), None, "its log is gone too");
    }

    #[tokio::test]
    async fn a_panic_in_a_pass_fails_that_deployment_and_later_ones_still_run() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        repository(repo.path());
        let engine = Arc::new(Fake::default());
        engine.fail(Operation::Panic);
        let worker = worker(repo.path(), state.path(), engine.clone());

        let first = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert_eq!(
            first.stacks[0].error.as_deref(),
            Some("internal error: deploying the stack panicked: injected panic")
        );
        let second = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert!(second.succeeded(), "{second:?}");
        assert_eq!(engine.by_name().len(), 1, "web deployed by the second pass");
    }

    #[tokio::test]
    async fn a_pass_that_failed_for_a_transient_reason_is_tried_again() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("env");
        let state = tempfile::tempdir().unwrap();
        let engine = Arc::new(Fake::default());
        let worker = Worker::with_retry_delay(
            deployer(&repo, state.path(), engine.clone(), None),
            Duration::from_millis(50),
        );

        // The remote is not there yet: the push fails, and is not forgotten.
        let first = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert!(first.transient, "{first:?}");
        std::fs::create_dir(&repo).unwrap();
        repository(&repo);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !worker.last_report().is_some_and(|r| r.succeeded()) {
            assert!(tokio::time::Instant::now() < deadline, "never retried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(engine.by_name().len(), 1, "web deployed by the retry");
    }

    #[tokio::test]
    async fn a_pass_that_ends_is_told_to_the_notifier() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        repository(repo.path());
        let recorder = crate::notify::tests::Recorder::start().await;
        let environment = BTreeMap::from([
            ("STACKHOOK_REPO".to_owned(), "r".to_owned()),
            ("STACKHOOK_NOTIFY_URL".to_owned(), recorder.url.clone()),
        ]);
        let notifier = Notifier::new(&Config::from_sources(None, &environment).unwrap()).unwrap();
        let engine = Arc::new(Fake::default());
        let worker = worker(repo.path(), state.path(), engine).with_notifier(notifier);

        let report = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert!(report.succeeded(), "{report:?}");
        recorder.until(1).await;
        let body: serde_json::Value = serde_json::from_str(&recorder.requests()[0].body).unwrap();
        assert_eq!(body["deployment"], report.deployment.as_str());
        assert_eq!(body["stacks"][0]["outcome"], "deployed");
    }
}
