//! The A/B slots stackhook runs in when it updates itself, and which of them is active.
//!
//! Exactly one slot is active: the one named by the marker in the shared state directory (slot A
//! when there is none). Only the active instance deploys, and only it answers `/health` with 200.
//! The marker is written only by a deploy pass, which holds the deploy lock, so two instances can
//! never both believe they are active. An instance not started in a slot is always active.
//!
//! A slot that hands over goes on answering `/health` with 200 for a short while (handing every
//! request on) before it answers 503: a proxy that still holds the new slot down from its last
//! check would otherwise retry the old slot's 503 on the old slot only, and fail the request.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a slot: use A or B")]
pub struct SlotError(String);

impl FromStr for Slot {
    type Err = SlotError;

    fn from_str(text: &str) -> Result<Slot, SlotError> {
        match text.trim() {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            other => Err(SlotError(other.to_owned())),
        }
    }
}

/// What this instance is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves and deploys.
    Active,
    /// Waits; `active` deploys.
    Standby { active: Slot },
    /// Just handed over to the other slot: still reports healthy, so that the proxy sees the new
    /// slot healthy before this one turns unhealthy, and hands every request on.
    HandingOver { active: Slot },
    /// Handed over to the other slot; finishing in-flight requests before it stops.
    Draining { active: Slot },
}

/// This instance's slot and the shared marker; clones share the draining flag.
#[derive(Debug, Clone)]
pub struct Slots {
    own: Option<Slot>,
    state_dir: PathBuf,
    handover: Duration,
    /// Whether this process can hand over: a server can (it drains and stops afterwards); a CLI
    /// run inside a slot's container cannot, since the server beside it would never drain.
    serves: bool,
    handed_over_at: Arc<Mutex<Option<Instant>>>,
    draining: Arc<AtomicBool>,
    handed_over: Arc<Notify>,
    own_container: Arc<Mutex<Option<String>>>,
}

impl Slots {
    pub fn new(own: Option<Slot>, state_dir: PathBuf) -> Slots {
        Slots {
            own,
            state_dir,
            handover: Duration::ZERO,
            serves: true,
            handed_over_at: Arc::new(Mutex::new(None)),
            draining: Arc::new(AtomicBool::new(false)),
            handed_over: Arc::new(Notify::new()),
            own_container: Arc::new(Mutex::new(None)),
        }
    }

    /// How long this instance reports healthy after it handed over (`Role::HandingOver`).
    pub fn with_handover(mut self, handover: Duration) -> Slots {
        self.handover = handover;
        self
    }

    /// For a process that does not serve (the CLI): it never hands over.
    pub fn without_serving(mut self) -> Slots {
        self.serves = false;
        self
    }

    /// Whether this process can carry out a handover.
    pub fn can_hand_over(&self) -> bool {
        self.serves
    }

    pub fn own(&self) -> Option<Slot> {
        self.own
    }

    /// The slot the marker names; slot A until a handover wrote one.
    pub fn active(&self) -> Slot {
        store::active_slot(&self.state_dir).unwrap_or(Slot::A)
    }

    pub fn role(&self) -> Role {
        let Some(own) = self.own else {
            return Role::Active;
        };
        let active = self.active();
        if self.draining.load(Ordering::SeqCst) {
            let handed_over_at = *self.handed_over_at.lock().expect("slot lock");
            match handed_over_at {
                Some(at) if at.elapsed() < self.handover => Role::HandingOver { active },
                _ => Role::Draining { active },
            }
        } else if active == own {
            Role::Active
        } else {
            Role::Standby { active }
        }
    }

    pub fn is_active(&self) -> bool {
        self.role() == Role::Active
    }

    /// Makes `to` the active slot. Call only while holding the deploy lock. `own_container` is
    /// this instance's container, which stops once it has drained.
    pub fn hand_over(&self, to: Slot, own_container: Option<String>) -> anyhow::Result<()> {
        store::set_active_slot(&self.state_dir, to)?;
        if Some(to) != self.own {
            *self.own_container.lock().expect("slot lock") = own_container;
            *self.handed_over_at.lock().expect("slot lock") = Some(Instant::now());
            self.draining.store(true, Ordering::SeqCst);
            self.handed_over.notify_one();
        }
        Ok(())
    }

    /// This instance's container, once it has handed over.
    pub fn own_container(&self) -> Option<String> {
        self.own_container.lock().expect("slot lock").clone()
    }

    /// Completes once this instance has handed over to the other slot.
    pub async fn handed_over(&self) {
        self.handed_over.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_decides_who_is_active() {
        let dir = tempfile::tempdir().unwrap();
        let a = Slots::new(Some(Slot::A), dir.path().to_owned());
        let b = Slots::new(Some(Slot::B), dir.path().to_owned());
        let unslotted = Slots::new(None, dir.path().to_owned());
        assert_eq!(a.role(), Role::Active, "A is active when no marker exists");
        assert_eq!(b.role(), Role::Standby { active: Slot::A });
        assert_eq!(unslotted.role(), Role::Active);

        a.hand_over(Slot::B, None).unwrap();
        assert_eq!(a.role(), Role::Draining { active: Slot::B });
        assert_eq!(b.role(), Role::Active);

        // With a handover period, the old slot first reports itself healthy, then draining.
        let b_again = Slots::new(Some(Slot::B), dir.path().to_owned())
            .with_handover(Duration::from_secs(3600));
        b_again.hand_over(Slot::A, None).unwrap();
        assert_eq!(b_again.role(), Role::HandingOver { active: Slot::A });
        assert!(!b_again.is_active(), "only the marker's slot deploys");
        a.hand_over(Slot::B, None).unwrap();

        // After a restart the marker still says B, whatever order the slots come up in.
        let a_again = Slots::new(Some(Slot::A), dir.path().to_owned());
        assert_eq!(a_again.role(), Role::Standby { active: Slot::B });
    }

    #[test]
    fn slot_names() {
        assert_eq!("a".parse::<Slot>(), Ok(Slot::A));
        assert_eq!("B".parse::<Slot>(), Ok(Slot::B));
        assert_eq!(
            "C".parse::<Slot>().unwrap_err().to_string(),
            r#""C" is not a slot: use A or B"#
        );
    }
}
