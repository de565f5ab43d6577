//! Retention on SQLite: finished work past its age deleted in small batches, each one short
//! job on the writer thread, so ingest, claims and attempt records queue behind a few
//! milliseconds of deleting rather than behind a whole sweep.
//!
//! A finished delivery's `updated_at` is when it finished: the last attempt's record sets
//! it, and nothing writes a finished row again except a redelivery, which queues it (and so
//! takes it out of the finished index until it finishes anew). The freed pages go to the
//! file's freelist and are reused by later writes, so under steady load the file stops
//! growing; it does not shrink (no `VACUUM`).

use super::SqliteStore;
use crate::domain::{EventId, UnixMillis};
use crate::store::{EventCursor, EventScan, PurgeCounts, StoreError};
use rusqlite::{Connection, params};

/// The oldest finished deliveries, from the retention index alone, deleted; their ids and
/// events come back for the attempts and events to follow. The status list repeats the
/// partial index's condition word for word, which SQLite needs to use it.
const DELETE_FINISHED: &str = "DELETE FROM deliveries WHERE seq IN ( \
         SELECT seq FROM deliveries INDEXED BY deliveries_retention \
         WHERE status IN ('succeeded', 'failed', 'skipped') AND updated_at < ?1 \
         ORDER BY updated_at LIMIT ?2) \
     RETURNING id, event_id";

const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE delivery_id = ?1";

/// An event goes once no delivery refers to it: its last one was just deleted, or it never
/// had any.
const DELETE_EVENT_IF_EMPTY: &str = "DELETE FROM events WHERE id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)";

/// Events in acceptance order after the cursor, up to the age limit.
const SCAN_EVENTS: &str = "SELECT created_at, id FROM events INDEXED BY events_created \
     WHERE (created_at, id) > (?1, ?2) AND created_at < ?3 \
     ORDER BY created_at, id LIMIT ?4";

impl SqliteStore {
    pub async fn purge_finished(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<PurgeCounts, StoreError> {
        self.write_relaxed(move |conn| purge_finished(conn, before_ms, limit))
            .await
    }

    pub async fn purge_events_without_deliveries(
        &self,
        after: EventCursor,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<EventScan, StoreError> {
        self.write_relaxed(move |conn| purge_empty_events(conn, after, before_ms, limit))
            .await
    }
}

fn purge_finished(
    conn: &Connection,
    before_ms: UnixMillis,
    limit: usize,
) -> Result<PurgeCounts, StoreError> {
    let deleted: Vec<(String, String)> = conn
        .prepare_cached(DELETE_FINISHED)?
        .query_map(
            params![before_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut counts = PurgeCounts {
        deliveries: deleted.len() as u64,
        ..PurgeCounts::default()
    };
    let mut attempts = conn.prepare_cached(DELETE_ATTEMPTS)?;
    for (delivery_id, _) in &deleted {
        counts.attempts += attempts.execute([delivery_id])? as u64;
    }
    let mut events: Vec<&str> = deleted.iter().map(|(_, event)| event.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    let mut event = conn.prepare_cached(DELETE_EVENT_IF_EMPTY)?;
    for event_id in events {
        counts.events += event.execute([event_id])? as u64;
    }
    Ok(counts)
}

fn purge_empty_events(
    conn: &Connection,
    after: EventCursor,
    before_ms: UnixMillis,
    limit: usize,
) -> Result<EventScan, StoreError> {
    // The empty string sorts before every id.
    let after_id = after.id.as_ref().map_or("", |id| id.as_str()).to_owned();
    let scanned: Vec<(UnixMillis, String)> = conn
        .prepare_cached(SCAN_EVENTS)?
        .query_map(
            params![
                after.created_at,
                after_id,
                before_ms,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    let mut event = conn.prepare_cached(DELETE_EVENT_IF_EMPTY)?;
    for (_, event_id) in &scanned {
        deleted += event.execute([event_id])? as u64;
    }
    let next = match scanned.last() {
        Some((created_at, id)) => EventCursor {
            created_at: *created_at,
            id: Some(EventId::from(id.clone())),
        },
        None => after,
    };
    Ok(EventScan {
        scanned: scanned.len(),
        deleted,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Both scans walk their index from the start of the range, never the whole table.
    #[test]
    fn the_purge_finds_rows_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let finished = plan(&conn, DELETE_FINISHED, params![0, 10]);
        assert!(
            finished
                .iter()
                .any(|step| step.contains("deliveries_retention") && step.contains("updated_at<")),
            "{finished:?}"
        );
        let events = plan(&conn, SCAN_EVENTS, params![0, "", 0, 10]);
        assert!(
            events
                .iter()
                .any(|step| step.starts_with("SEARCH") && step.contains("events_created")),
            "{events:?}"
        );
        let empty = plan(&conn, DELETE_EVENT_IF_EMPTY, params!["x"]);
        assert!(
            empty.iter().all(|step| !step.starts_with("SCAN")),
            "{empty:?}"
        );
        store.close();
    }
}
