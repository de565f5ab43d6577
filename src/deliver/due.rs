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
    unknown: bool,
    destinations: HashSet<String>,
}

impl DueWork {
    /// Until the first claim has looked, a previous run may have left anything behind.
    pub fn new() -> Self {
        DueWork {
            any: AtomicBool::new(true),
            state: Mutex::new(DueState {
                unknown: true,
                destinations: HashSet::new(),
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
        self.update(|state| state.unknown = true);
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
            }
        });
    }

    /// A claim is about to take what is due, oldest first: from now on only what it leaves
    /// (marked when it returns), what is `held` in memory for want of slots, and what ingest
    /// queues meanwhile need to go first. Deliveries queued while the claim runs are taken
    /// by the next one; claims follow each other closely, so hand-over during one only
    /// reorders, it cannot starve the queue.
    pub fn begin_claim<'a>(&self, held: impl IntoIterator<Item = &'a String>) {
        self.update(|state| {
            state.unknown = false;
            state.destinations.clear();
            state.destinations.extend(held.into_iter().cloned());
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
        due.begin_claim([&"held".to_owned()]);
        assert!(!due.blocks("a"));
        assert!(due.blocks("held"), "deliveries held for slots go first");
        due.mark([&"black-hole".to_owned()]);
        assert!(due.blocks("black-hole"));
        assert!(!due.blocks("healthy"));
        due.mark_unknown();
        assert!(due.blocks("healthy"));
        due.begin_claim([]);
        assert!(!due.blocks("black-hole") && !due.blocks("healthy"));
    }
}
