//! What a recent window holds, for the console's overview: events accepted since a time, and
//! the deliveries created since then by where they stand now.
//!
//! Neither store indexes deliveries by creation time (an index more per delivery on the hot
//! path, for a page an operator opens now and then). Rows are numbered in insertion order
//! instead, and insertion times rise with the numbers, so a bisection over the numbers finds
//! the window's first row in a few dozen point reads and the count covers only the window.
//! Across nodes whose clocks differ the edge is as exact as the clocks are.

use crate::domain::UnixMillis;
use serde::Serialize;

/// The window's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    pub events_accepted: u64,
    /// Created in the window and not yet finished (queued or in flight).
    pub waiting: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Activity {
    /// Add a count of deliveries in `status` (the store's word for it).
    pub(super) fn add_deliveries(&mut self, status: &str, count: u64) {
        match status {
            "succeeded" => self.succeeded += count,
            "failed" => self.failed += count,
            "skipped" => self.skipped += count,
            _ => self.waiting += count,
        }
    }
}

/// The search for the first row, by position, created at or after `since`. Positions may
/// have gaps (retention deletes rows): a probe reads the first row at or after it.
#[derive(Debug)]
pub(super) struct FirstSince {
    since: UnixMillis,
    low: i64,
    /// One past the last position that can still be the answer.
    high: i64,
}

impl FirstSince {
    /// Over the positions `lowest..=highest`.
    pub(super) fn new(since: UnixMillis, lowest: i64, highest: i64) -> Self {
        FirstSince {
            since,
            low: lowest,
            high: highest.saturating_add(1).max(lowest),
        }
    }

    /// The position to read next, or `None` when the search is over.
    pub(super) fn probe(&self) -> Option<i64> {
        (self.low < self.high).then(|| self.low + (self.high - self.low) / 2)
    }

    /// What the read at `probe` found: the first row at or after it, as (position,
    /// created_at), or none.
    pub(super) fn found(&mut self, probe: i64, row: Option<(i64, UnixMillis)>) {
        match row {
            Some((position, created_at)) if position < self.high => {
                if created_at >= self.since {
                    self.high = position;
                } else {
                    self.low = position + 1;
                }
            }
            // Nothing between the probe and the end of the range: the answer lies below.
            _ => self.high = probe,
        }
    }

    /// Rows from this position on are the window's (meaningful once `probe` is `None`).
    pub(super) fn first(&self) -> i64 {
        self.low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the search over `rows` (position, created_at), sorted by position.
    fn search(rows: &[(i64, UnixMillis)], since: UnixMillis) -> (i64, usize) {
        let lowest = rows.first().map_or(1, |row| row.0);
        let highest = rows.last().map_or(0, |row| row.0);
        let mut search = FirstSince::new(since, lowest, highest);
        let mut reads = 0;
        while let Some(probe) = search.probe() {
            reads += 1;
            let row = rows.iter().find(|row| row.0 >= probe).copied();
            search.found(probe, row);
        }
        (search.first(), reads)
    }

    #[test]
    fn finds_the_first_row_in_the_window_across_gaps() {
        let rows: Vec<(i64, UnixMillis)> = (1..=1000)
            .filter(|position| position % 7 != 0)
            .map(|position| (position, position * 10))
            .collect();
        for since in [0, 5, 10, 11, 69, 70, 71, 5000, 9990, 10_000, 10_001] {
            let (first, reads) = search(&rows, since);
            let expected = rows.iter().filter(|row| row.1 >= since).count();
            let counted = rows.iter().filter(|row| row.0 >= first).count();
            assert_eq!(counted, expected, "since {since}: first {first}");
            assert!(reads <= 12, "since {since}: {reads} reads");
        }
    }

    #[test]
    fn counts_add_up_by_status() {
        let mut activity = Activity::default();
        for (status, count) in [
            ("queued", 2),
            ("in_flight", 1),
            ("succeeded", 5),
            ("failed", 3),
        ] {
            activity.add_deliveries(status, count);
        }
        assert_eq!(
            activity,
            Activity {
                events_accepted: 0,
                waiting: 3,
                succeeded: 5,
                failed: 3,
                skipped: 0
            }
        );
    }
}
