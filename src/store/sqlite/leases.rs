//! Leases on SQLite, held in memory instead of in the file.
//!
//! The file has one owner at a time, so no other process needs to see who holds a delivery,
//! and when the owner dies every lease dies with it (opening the file queues again whatever a
//! hand-over left in flight). Claiming, renewing and handing back at once therefore write no
//! lease (a claim writes only to dead-letter a row whose event is missing): a claimed row stays `queued` in the file, and the claim scan steps over the rows
//! held here. What a claim used to write per row (the status, a token, a due time moved in the
//! due index: three B-tree changes) and every renewal's rewrite of each held row are gone.
//!
//! A lease still ends: one that is not renewed by its `until` is free to be claimed again,
//! and its old holder's token no longer matches, so its late result is refused as before.

use crate::domain::{DeliveryId, LeaseToken, UnixMillis};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub(super) struct Leases {
    table: Mutex<LeaseTable>,
}

#[derive(Default)]
pub(super) struct LeaseTable {
    by_seq: HashMap<i64, Held>,
    by_id: HashMap<DeliveryId, i64>,
}

struct Held {
    id: DeliveryId,
    token: LeaseToken,
    until: UnixMillis,
    /// The row itself says `in_flight` (a hand-over from ingest), so handing it back must
    /// write `queued`; a claimed row is `queued` in the file already.
    row_in_flight: bool,
}

/// A held lease that matched its token.
pub(super) struct Matched {
    pub seq: i64,
    pub row_in_flight: bool,
}

impl Leases {
    /// The table, for a look-up or a change; never held across an await or a statement.
    pub fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        // No code that can panic runs while it is held, so a poisoned lock still holds
        // consistent maps.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LeaseTable {
    /// Whether the row is under a lease that has not ended at `now`.
    pub fn holds(&self, seq: i64, now: UnixMillis) -> bool {
        self.by_seq.get(&seq).is_some_and(|held| held.until > now)
    }

    /// Hold the row under a lease, replacing any lease it had (one that ended).
    pub fn hold(
        &mut self,
        seq: i64,
        id: DeliveryId,
        token: LeaseToken,
        until: UnixMillis,
        row_in_flight: bool,
    ) {
        self.by_id.insert(id.clone(), seq);
        let replaced = self.by_seq.insert(
            seq,
            Held {
                id: id.clone(),
                token,
                until,
                row_in_flight,
            },
        );
        // A row held under another id (a seq a rolled-back insert had used): that id is gone.
        if let Some(replaced) = replaced
            && replaced.id != id
            && self.by_id.get(&replaced.id) == Some(&seq)
        {
            self.by_id.remove(&replaced.id);
        }
    }

    /// The row `id` is held under, when `token` is still its lease (ended or not: an ended
    /// lease nobody has taken over still lets its holder finish).
    pub fn matching(&self, id: &DeliveryId, token: &LeaseToken) -> Option<Matched> {
        let seq = *self.by_id.get(id)?;
        let held = self.by_seq.get(&seq)?;
        (held.token == *token).then_some(Matched {
            seq,
            row_in_flight: held.row_in_flight,
        })
    }

    /// Hold a row handed over at ingest, once its insert has committed; unless its lease
    /// already ended and a claim took the row over meanwhile, which then wins.
    pub fn hold_handed_over(
        &mut self,
        seq: i64,
        id: DeliveryId,
        token: LeaseToken,
        until: UnixMillis,
    ) {
        if !self.by_seq.contains_key(&seq) || self.by_id.get(&id) != Some(&seq) {
            self.hold(seq, id, token, until, true);
        }
    }

    /// Rows under a lease that has not ended at `now`: the deliveries in flight.
    pub fn live(&self, now: UnixMillis) -> usize {
        self.by_seq.values().filter(|held| held.until > now).count()
    }

    /// Whether the row is still held under `token` (ended or not).
    pub fn is_held_by(&self, seq: i64, token: &LeaseToken) -> bool {
        self.by_seq
            .get(&seq)
            .is_some_and(|held| held.token == *token)
    }

    /// Let the row go if it is still held under `token`.
    pub fn release(&mut self, seq: i64, token: &LeaseToken) {
        if self.is_held_by(seq, token)
            && let Some(held) = self.by_seq.remove(&seq)
        {
            self.by_id.remove(&held.id);
        }
    }

    /// Let every row held under `token` go: the claim that took them failed.
    pub fn release_all(&mut self, token: &LeaseToken) {
        let by_id = &mut self.by_id;
        self.by_seq.retain(|_, held| {
            let keep = held.token != *token;
            if !keep {
                by_id.remove(&held.id);
            }
            keep
        });
    }

    /// Extend the leases still held under these tokens; returns how many were.
    pub fn renew(&mut self, leases: &[(DeliveryId, LeaseToken)], until: UnixMillis) -> usize {
        let mut renewed = 0;
        for (id, token) in leases {
            let Some(seq) = self.by_id.get(id) else {
                continue;
            };
            if let Some(held) = self.by_seq.get_mut(seq)
                && held.token == *token
            {
                held.until = held.until.max(until);
                renewed += 1;
            }
        }
        renewed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> DeliveryId {
        DeliveryId::from(text.to_owned())
    }

    fn token(text: &str) -> LeaseToken {
        LeaseToken::from(text.to_owned())
    }

    #[test]
    fn a_lease_holds_until_it_ends_and_is_refused_to_another_token() {
        let leases = Leases::default();
        let mut table = leases.lock();
        table.hold(7, id("d7"), token("a"), 1_000, false);
        assert!(table.holds(7, 999));
        assert!(!table.holds(7, 1_000), "ended at its until");
        assert!(!table.holds(8, 0), "another row");
        assert!(table.matching(&id("d7"), &token("a")).is_some());
        assert!(table.matching(&id("d7"), &token("b")).is_none());
    }

    #[test]
    fn taking_over_an_ended_lease_fences_the_old_holder() {
        let leases = Leases::default();
        let mut table = leases.lock();
        table.hold(7, id("d7"), token("old"), 1_000, true);
        table.hold(7, id("d7"), token("new"), 5_000, false);
        assert!(table.matching(&id("d7"), &token("old")).is_none());
        let matched = table.matching(&id("d7"), &token("new")).unwrap();
        assert_eq!((matched.seq, matched.row_in_flight), (7, false));
        assert_eq!(table.renew(&[(id("d7"), token("old"))], 9_000), 0);
        assert_eq!(table.renew(&[(id("d7"), token("new"))], 9_000), 1);
        assert!(table.holds(7, 8_999));
        table.release(7, &token("old"));
        assert!(table.holds(7, 0), "only its own token lets it go");
        table.release(7, &token("new"));
        assert!(!table.holds(7, 0));
        assert!(table.matching(&id("d7"), &token("new")).is_none());
    }

    #[test]
    fn a_row_held_under_another_id_forgets_the_old_one() {
        let leases = Leases::default();
        let mut table = leases.lock();
        table.hold(7, id("gone"), token("a"), 1_000, false);
        table.hold(7, id("d7"), token("b"), 1_000, false);
        assert!(table.matching(&id("gone"), &token("a")).is_none());
        assert!(!table.by_id.contains_key(&id("gone")));
        table.hold(8, id("d8"), token("b"), 1_000, false);
        table.hold(9, id("d9"), token("c"), 1_000, false);
        table.release_all(&token("b"));
        assert!(!table.holds(7, 0) && !table.holds(8, 0));
        assert!(table.holds(9, 0));
        assert_eq!(table.by_id.len(), 1);
    }
}
