//! The replay window: delivery ids (`X-GitHub-Delivery`, and the other forges' ids kept apart by
//! a prefix) seen lately, so that a delivery GitHub (or a proxy) sends twice runs once (issue 9).
//! Bounded in time and in count; it does not read headers.
//!
//! The id is not covered by the signature: this stops redeliveries and retries, not someone who
//! captured a signed request and sends it again under a new id (TLS stops that).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an id is remembered.
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// How many ids are remembered at most; the oldest goes first.
pub const CAPACITY: usize = 10_000;
/// GitHub's ids are UUIDs (36 characters); a longer one is refused rather than remembered.
pub const MAX_ID_LEN: usize = 100;

/// Delivery ids seen within the window, oldest first.
pub struct Deliveries {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

impl Deliveries {
    pub fn new(window: Duration, capacity: usize) -> Deliveries {
        Deliveries {
            window,
            capacity,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Records `id` as seen at `now`. False when it was already seen within the window.
    pub fn first_sighting(&self, id: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().expect("delivery window lock");
        while let Some((at, _)) = seen.order.front()
            && now.saturating_duration_since(*at) >= self.window
        {
            let (_, old) = seen.order.pop_front().expect("front exists");
            seen.ids.remove(&old);
        }
        if seen.ids.contains(id) {
            return false;
        }
        if seen.order.len() >= self.capacity
            && let Some((_, old)) = seen.order.pop_front()
        {
            seen.ids.remove(&old);
        }
        seen.ids.insert(id.to_owned());
        seen.order.push_back((now, id.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_within_the_window_and_up_to_the_capacity() {
        let deliveries = Deliveries::new(Duration::from_secs(600), 3);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert!(deliveries.first_sighting("a", at(0)));
        assert!(!deliveries.first_sighting("a", at(1)), "a repeat");
        assert!(
            !deliveries.first_sighting("a", at(599)),
            "still in the window"
        );
        assert!(
            deliveries.first_sighting("a", at(600)),
            "the window has passed"
        );
        assert!(deliveries.first_sighting("b", at(601)));
        assert!(deliveries.first_sighting("c", at(602)));
        // A fourth id pushes out the oldest, a.
        assert!(deliveries.first_sighting("d", at(603)));
        assert!(deliveries.first_sighting("a", at(604)));
        assert!(!deliveries.first_sighting("d", at(605)));
        assert_eq!(deliveries.seen.lock().unwrap().order.len(), 3);
    }
}
