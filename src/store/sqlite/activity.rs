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
    let (lowest, highest): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT min({column}), max({column}) FROM {table}"),
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
