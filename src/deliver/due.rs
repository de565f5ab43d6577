//! What may be due in the store that ingest's hand-over must not overtake, per destination.
//!
//! A fresh delivery is handed over (stored leased, started at once) only when nothing of its
//! destination is due ahead of it. The dispatcher's claims say which destinations they left
//! due rows for (those too full to take more), ingest says which destinations it stored
//! queued, and anything whose destination is unknown — a retry or lease coming due, work
//! another node queued, a claim that stopped before seeing every due row — blocks every
//! destination until the next claim has looked. So one black-holed destination's backlog
//! sends only its own new deliveries through the queue, not everyone's.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct DueWork {
    /// False when nothing at all may be due: the common case, checked without the lock.
    any: AtomicBool,
    state: Mutex<DueState>,
}

#[derive(Default)]
struct DueState {
    /// What is in force: ingest checks this.
    unknown: bool,
    destinations: HashSet<String>,
    /// What was marked since the running claim began, kept when its findings replace the
    /// rest: the claim cannot have seen it.
    unknown_since_claim: bool,
    since_claim: HashSet<String>,
}

impl DueWork {
    /// Until the first claim has looked, a previous run may have left anything behind.
    pub fn new() -> Self {
        DueWork {
            any: AtomicBool::new(true),
            state: Mutex::new(DueState {
                unknown: true,
                ..DueState::default()
            }),
        }
    }

    /// Whether a new delivery to `key` must queue behind due work.
    pub fn blocks(&self, key: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        match self.state.lock() {
            Ok(state) => state.unknown || state.destinations.contains(key),
            Err(_) => true,
        }
    }

    /// Something is due whose destination is not known.
    pub fn mark_unknown(&self) {
        self.update(|state| {
            state.unknown = true;
            state.unknown_since_claim = true;
        });
    }

    /// Work of these destinations is due (or held in memory waiting for their slots).
    pub fn mark<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut keys = keys.into_iter().peekable();
        if keys.peek().is_none() {
            return;
        }
        self.update(|state| {
            for key in keys {
                if !state.destinations.contains(key) {
                    state.destinations.insert(key.clone());
                }
                if !state.since_claim.contains(key) {
                    state.since_claim.insert(key.clone());
                }
            }
        });
    }

    /// A claim begins: what it finds replaces what is in force when it ends. Until then the
    /// marks stay, so nothing overtakes work the claim has not taken yet.
    pub fn begin_claim(&self) {
        self.update(|state| {
            state.unknown_since_claim = false;
            state.since_claim.clear();
        });
    }

    /// The claim found this left due (`unknown`, or these destinations' work); with what was
    /// marked while it ran, that is now what is in force.
    pub fn finish_claim<'a>(
        &self,
        unknown: bool,
        destinations: impl IntoIterator<Item = &'a String>,
    ) {
        self.update(|state| {
            state.unknown = unknown || state.unknown_since_claim;
            state.destinations = std::mem::take(&mut state.since_claim);
            state.destinations.extend(destinations.into_iter().cloned());
            state.unknown_since_claim = false;
        });
    }

    fn update(&self, change: impl FnOnce(&mut DueState)) {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(&mut state);
        self.any.store(
            state.unknown || !state.destinations.is_empty(),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_destination_blocks_only_itself_and_unknown_work_blocks_all() {
        let due = DueWork::new();
        assert!(due.blocks("a"), "a previous run may have left work");
        due.begin_claim();
        assert!(due.blocks("a"), "marks stay while the claim runs");
        due.finish_claim(false, [&"black-hole".to_owned()]);
        assert!(due.blocks("black-hole"));
        assert!(!due.blocks("healthy"));
        due.mark_unknown();
        assert!(due.blocks("healthy"));
        due.begin_claim();
        due.finish_claim(false, []);
        assert!(!due.blocks("black-hole") && !due.blocks("healthy"));
    }

    #[test]
    fn what_is_marked_during_a_claim_outlives_its_findings() {
        let due = DueWork::new();
        due.begin_claim();
        due.mark([&"queued-meanwhile".to_owned()]);
        due.finish_claim(false, []);
        assert!(due.blocks("queued-meanwhile"));
        due.begin_claim();
        due.mark_unknown();
        due.finish_claim(false, []);
        assert!(due.blocks("anyone"));
    }
}
