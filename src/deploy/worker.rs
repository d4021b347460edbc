//! The single-flight worker: one pass at a time, and triggers that arrive during a pass folded
//! into one more pass at the newest commit.
//!
//! Every trigger gets the id of the pass that will serve it at once (for a `202` answer) and a
//! receiver for that pass's report (for `?wait=true`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
    async fn drain(self: Arc<Self>) {
        loop {
            let pending = {
                let mut queue = self.queue.lock().expect("worker queue lock");
                match queue.pending.take() {
                    Some(pending) => pending,
                    None => {
                        queue.running = false;
                        return;
                    }
                }
            };
            let report = Arc::new(self.deployer.run(pending.id, &pending.request).await);
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
