//! The overview's window on SQLite: events by rowid and deliveries by `seq`, each bisected to
//! the window's first row (see `store::activity`), then counted from there.

use super::SqliteStore;
use crate::domain::UnixMillis;
use crate::store::StoreError;
use crate::store::activity::{Activity, FirstSince};
use rusqlite::{Connection, OptionalExtension};

impl SqliteStore {
    pub async fn activity_since(&self, since: UnixMillis) -> Result<Activity, StoreError> {
        self.read(move |conn| {
            let mut activity = Activity::default();
            let first_event = first_since(conn, "events", "rowid", since)?;
            let events: i64 = conn.query_row(
                "SELECT count(*) FROM events WHERE rowid >= ?1",
                [first_event],
                |row| row.get(0),
            )?;
            activity.events_accepted = events as u64;
            let first_delivery = first_since(conn, "deliveries", "seq", since)?;
            let mut by_status = conn.prepare_cached(
                "SELECT status, count(*) FROM deliveries WHERE seq >= ?1 GROUP BY status",
            )?;
            let counts = by_status.query_map([first_delivery], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            for count in counts {
                let (status, count) = count?;
                activity.add_deliveries(&status, count as u64);
            }
            Ok(activity)
        })
        .await
    }
}

/// The position (`column` of `table`, which numbers rows in insertion order) of the first
/// row created at or after `since`.
fn first_since(
    conn: &Connection,
    table: &'static str,
    column: &'static str,
    since: UnixMillis,
) -> Result<i64, StoreError> {
    // Two subqueries: SQLite reads `min` or `max` alone from the B-tree's end, but both
    // in one select scan the whole table.
    let (lowest, highest): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT (SELECT min({column}) FROM {table}), (SELECT max({column}) FROM {table})"),
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (Some(lowest), Some(highest)) = (lowest, highest) else {
        return Ok(0);
    };
    let mut search = FirstSince::new(since, lowest, highest);
    let mut at_or_after = conn.prepare_cached(&format!(
        "SELECT {column}, created_at FROM {table} WHERE {column} >= ?1 ORDER BY {column} LIMIT 1"
    ))?;
    while let Some(probe) = search.probe() {
        let row = at_or_after
            .query_row([probe], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        search.found(probe, row);
    }
    Ok(search.first())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::fixtures::one_delivery;

    /// The window's edge found by the real probes over rows retention has thinned: every
    /// third row gone, creation times one second per position, statuses mixed.
    #[tokio::test]
    async fn counts_the_window_over_gaps_in_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store
            .enqueue(
                (0..60)
                    .map(|_| one_delivery("http://127.0.0.1:9/a", None))
                    .collect(),
            )
            .await
            .unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "UPDATE events SET created_at = rowid * 1000;
             UPDATE deliveries SET created_at = seq * 1000,
                 status = CASE seq % 4 WHEN 0 THEN 'failed' WHEN 1 THEN 'succeeded' ELSE 'queued' END;
             DELETE FROM deliveries WHERE seq % 3 = 0;
             DELETE FROM events WHERE rowid % 3 = 0;",
        )
        .unwrap();
        let kept: Vec<i64> = (1..=60).filter(|position| position % 3 != 0).collect();
        for since_seconds in [0, 1, 2, 3, 4, 29, 30, 31, 58, 59, 60, 61] {
            let since = since_seconds * 1000;
            let in_window: Vec<i64> = kept
                .iter()
                .copied()
                .filter(|position| *position >= since_seconds)
                .collect();
            let mut expected = Activity {
                events_accepted: in_window.len() as u64,
                ..Activity::default()
            };
            for position in &in_window {
                let status = match position % 4 {
                    0 => "failed",
                    1 => "succeeded",
                    _ => "queued",
                };
                expected.add_deliveries(status, 1);
            }
            assert_eq!(
                store.activity_since(since).await.unwrap(),
                expected,
                "since {since_seconds} s"
            );
        }
    }
}
