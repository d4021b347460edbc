//! The single-flight worker: one pass at a time, and triggers that arrive during a pass folded
//! into one more pass at the newest commit.
//!
//! Every trigger gets the id of the pass that will serve it at once (for a `202` answer) and a
//! receiver for that pass's report (for `?wait=true`).

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
}

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
}

/// What a trigger gets back.
pub struct Ticket {
    pub deployment: String,
    pub report: oneshot::Receiver<Arc<Report>>,
}

impl Worker {
    pub fn new(deployer: Deployer) -> Worker {
        Worker {
            inner: Arc::new(Inner {
                deployer,
                queue: Mutex::new(Queue::default()),
                sequence: AtomicU64::new(0),
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
        let mut queue = self.inner.queue.lock().expect("worker queue lock");
        let deployment = match &mut queue.pending {
            Some(pending) => {
                pending.request.merge(request);
                pending.waiters.push(sender);
                pending.id.clone()
            }
            None => {
                let id = self.next_id();
                queue.pending = Some(Pending {
                    id: id.clone(),
                    request,
                    waiters: vec![sender],
                });
                id
            }
        };
        if !queue.running {
            queue.running = true;
            tokio::spawn(Arc::clone(&self.inner).drain());
        }
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

    /// A sortable id: the UTC time the pass was queued and a sequence number.
    fn next_id(&self) -> String {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sequence = self.inner.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{seconds}-{sequence}")
    }
}

impl Inner {
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
            let report = Arc::new(self.run(pending.id, pending.request).await);
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
}
