//! The single-flight worker: one pass at a time, and triggers that arrive during a pass folded
//! into one more pass at the newest commit.
//!
//! Every trigger gets the id of the pass that will serve it at once (for a `202` answer) and a
//! receiver for that pass's report (for `?wait=true`). A pass that failed for a reason that may
//! pass by itself (the deploy lock, the git remote) is tried again with backoff until it
//! succeeds or a newer trigger supersedes it, so that a push is never silently dropped (issue 9).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::{Deployer, Report, Request};

/// A handle to the worker; clones share it.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    deployer: Deployer,
    queue: Mutex<Queue>,
    sequence: AtomicU64,
    /// Counts triggers from outside; a retry that finds it changed was superseded.
    triggers: AtomicU64,
    /// The first retry's delay; each next one doubles it, up to `MAX_RETRY_DELAY`.
    retry_delay: Duration,
}

/// The longest wait between two tries of a pass that keeps failing for a transient reason.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Queue {
    running: bool,
    /// Set by `finish`: no pass starts any more.
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
                sequence: AtomicU64::new(0),
                triggers: AtomicU64::new(0),
                retry_delay,
            }),
        }
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
        self.inner
            .queue
            .lock()
            .expect("worker queue lock")
            .last
            .clone()
    }

    /// Whether a pass is running or queued.
    pub fn busy(&self) -> bool {
        self.inner.queue.lock().expect("worker queue lock").running
    }

    /// Lets the running pass finish, within `patience`, and starts no other: for a clean stop,
    /// so that SIGTERM never cuts a recreate in half (issue 9). A queued pass is dropped; its
    /// callers' waits end without a report. Returns whether the worker went idle in time.
    pub async fn finish(&self, patience: Duration) -> bool {
        self.inner.queue.lock().expect("worker queue lock").closing = true;
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
    /// Queues a pass, or folds `request` into the one already queued; returns the pass's id.
    fn enqueue(
        self: &Arc<Self>,
        request: Request,
        waiter: Option<oneshot::Sender<Arc<Report>>>,
        retries: u32,
    ) -> String {
        let mut queue = self.queue.lock().expect("worker queue lock");
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
            let closing = inner.queue.lock().expect("worker queue lock").closing;
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

    /// Runs one pass in a task of its own, so that a panic inside it fails that deployment
    /// instead of the worker: later triggers still deploy (issue 9, "Crash safety").
    async fn run(&self, id: String, request: Request) -> Report {
        let deployer = self.deployer.clone();
        let pass_id = id.clone();
        let pass = tokio::spawn(async move { deployer.run(pass_id, &request).await });
        match pass.await {
            Ok(report) => report,
            Err(error) => {
                let reason = match error.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into()),
                    Err(error) => error.to_string(),
                };
                tracing::error!(deployment = %id, "the deployment panicked: {reason}");
                Report::failed(
                    id,
                    format!("internal error: the deployment panicked: {reason}"),
                )
            }
        }
    }

    async fn drain(self: Arc<Self>) {
        loop {
            let pending = {
                let mut queue = self.queue.lock().expect("worker queue lock");
                match queue.pending.take() {
                    Some(pending) if !queue.closing => pending,
                    _ => {
                        queue.running = false;
                        return;
                    }
                }
            };
            let report = Arc::new(self.run(pending.id, pending.request.clone()).await);
            if report.transient {
                self.retry_later(pending.request, pending.retries);
            }
            tracing::info!(
                deployment = %report.deployment,
                succeeded = report.succeeded(),
                "deployment finished"
            );
            self.queue.lock().expect("worker queue lock").last = Some(Arc::clone(&report));
            for waiter in pending.waiters {
                let _ = waiter.send(Arc::clone(&report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use super::*;
    use crate::config::Config;
    use crate::engine::fake::{Fake, Operation};
    use crate::slot::Slots;

    /// A repository with one stack, committed with the git CLI.
    fn repository(dir: &std::path::Path) {
        let stack = dir.join("services/web");
        std::fs::create_dir_all(&stack).unwrap();
        std::fs::write(
            stack.join("compose.yaml"),
            "services:\n  web:\n    image: web:1\n",
        )
        .unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "web",
            ],
        ] {
            let status = Command::new("git")
                .args(args)
                .current_dir(dir)
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        }
    }

    #[tokio::test]
    async fn a_panic_in_a_pass_fails_that_deployment_and_later_ones_still_run() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        repository(repo.path());
        let environment = BTreeMap::from([
            (
                "STACKHOOK_REPO".to_owned(),
                repo.path().display().to_string(),
            ),
            (
                "STACKHOOK_STATE_DIR".to_owned(),
                state.path().display().to_string(),
            ),
        ]);
        let config = Config::from_sources(None, &environment).unwrap();
        let engine = Arc::new(Fake::default());
        engine.fail(Operation::Panic);
        let worker = Worker::new(Deployer {
            slots: Slots::new(None, config.state_dir.clone()),
            config: Arc::new(config),
            engine: engine.clone(),
            holder: "test".into(),
        });

        let first = worker.trigger(Request::all_changed()).report.await.unwrap();
        assert_eq!(
            first.error.as_deref(),
            Some("internal error: the deployment panicked: injected panic")
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
        let environment = BTreeMap::from([
            ("STACKHOOK_REPO".to_owned(), repo.display().to_string()),
            (
                "STACKHOOK_STATE_DIR".to_owned(),
                state.path().display().to_string(),
            ),
        ]);
        let config = Config::from_sources(None, &environment).unwrap();
        let engine = Arc::new(Fake::default());
        let worker = Worker::with_retry_delay(
            Deployer {
                slots: Slots::new(None, config.state_dir.clone()),
                config: Arc::new(config),
                engine: engine.clone(),
                holder: "test".into(),
            },
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
}
