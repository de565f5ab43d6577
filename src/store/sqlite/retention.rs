//! Retention on SQLite: finished work past its age deleted in small batches, each one short
//! job on the writer thread, so ingest, claims and attempt records queue behind a few
//! milliseconds of deleting rather than behind a whole sweep.
//!
//! No index of its own: each would be one more B-tree write per delivery on the writer that
//! bounds throughput (the two it had cost 18% of `bench --scenario batch`). Finished
//! deliveries are walked oldest first by the operations list's index (status, seq) and
//! events by rowid; both follow acceptance order, and a row accepted after the cut-off
//! cannot have finished before it, so each walk stops at the first such row. A finished
//! delivery's `updated_at` is when it finished: the last attempt's record sets it, and
//! nothing writes a finished row again except a redelivery, which queues it. The freed
//! pages go to the file's freelist and are reused by later writes, so under steady load the
//! file stops growing; it does not shrink (no `VACUUM`).

use super::SqliteStore;
use crate::domain::{EventId, UnixMillis};
use crate::store::{EventCursor, EventScan, PurgeCounts, StoreError};
use rusqlite::{Connection, params};

/// The finished statuses, each walked on its own so the index yields its rows in `seq`
/// order; the `IN` list repeats the partial index's condition word for word, which SQLite
/// needs to use it.
const FINISHED: [&str; 3] = ["succeeded", "failed", "skipped"];
const FINISHED_OLDEST: &str = "SELECT seq, created_at, updated_at \
     FROM deliveries INDEXED BY deliveries_finished \
     WHERE status IN ('succeeded', 'failed', 'skipped') AND status = ?1 ORDER BY seq";

/// Also says whether the row held its latest attempt (see the schema), which goes with it,
/// and whether any attempt may be in the history table.
const DELETE_DELIVERY: &str = "DELETE FROM deliveries WHERE seq = ?1 \
     RETURNING id, event_id, latest_started_at IS NOT NULL, \
     attempts > 1 OR latest_started_at IS NULL";

const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE delivery_id = ?1";

/// An event goes once no delivery refers to it: its last one was just deleted, or it never
/// had any.
const DELETE_EVENT_IF_EMPTY: &str = "DELETE FROM events WHERE id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM deliveries \
         WHERE seq >= events.first_delivery_seq \
         AND seq < events.first_delivery_seq + events.delivery_count \
         AND deliveries.event_id = events.id)";

/// Events in acceptance (rowid) order after the cursor.
const SCAN_EVENTS: &str =
    "SELECT rowid, created_at, id FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";

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
    let now = crate::domain::now_millis();
    let mut chosen: Vec<i64> = Vec::with_capacity(limit);
    let mut oldest = conn.prepare_cached(FINISHED_OLDEST)?;
    for status in FINISHED {
        let mut rows = oldest.query([status])?;
        while chosen.len() < limit
            && let Some(row) = rows.next()?
        {
            let (seq, created_at, updated_at): (i64, UnixMillis, UnixMillis) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            if accepted_after_cut_off(created_at, before_ms, now) {
                break;
            }
            if updated_at < before_ms {
                chosen.push(seq);
            }
        }
    }
    let mut delete = conn.prepare_cached(DELETE_DELIVERY)?;
    let mut counts = PurgeCounts::default();
    let mut attempts = conn.prepare_cached(DELETE_ATTEMPTS)?;
    let mut events: Vec<String> = Vec::with_capacity(chosen.len());
    for seq in chosen {
        let (id, event_id, had_latest_attempt, may_have_history): (String, String, bool, bool) =
            delete.query_row([seq], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
        counts.deliveries += 1;
        counts.attempts += u64::from(had_latest_attempt);
        if may_have_history {
            counts.attempts += attempts.execute([&id])? as u64;
        }
        events.push(event_id);
    }
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
    let now = crate::domain::now_millis();
    // Rowids are reused once the newest events are deleted: behind the cursor, start over.
    let newest: i64 = conn.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |row| {
        row.get(0)
    })?;
    let from = if newest < after.rowid { 0 } else { after.rowid };
    let mut scanned: Vec<(i64, UnixMillis, String)> = Vec::with_capacity(limit);
    {
        let mut scan = conn.prepare_cached(SCAN_EVENTS)?;
        let mut rows = scan.query(params![from, i64::try_from(limit).unwrap_or(i64::MAX)])?;
        while let Some(row) = rows.next()? {
            let created_at: UnixMillis = row.get(1)?;
            if accepted_after_cut_off(created_at, before_ms, now) {
                break;
            }
            if created_at > now {
                continue;
            }
            scanned.push((row.get(0)?, created_at, row.get(2)?));
        }
    }
    let mut deleted = 0;
    let mut event = conn.prepare_cached(DELETE_EVENT_IF_EMPTY)?;
    for (_, _, event_id) in &scanned {
        deleted += event.execute([event_id])? as u64;
    }
    let next = match scanned.last() {
        Some((rowid, created_at, id)) => EventCursor {
            created_at: *created_at,
            id: Some(EventId::from(id.clone())),
            rowid: *rowid,
        },
        None => after,
    };
    Ok(EventScan {
        scanned: scanned.len(),
        deleted,
        next,
    })
}

/// Where a walk in acceptance order stops: the first row accepted after the cut-off, so is
/// every row after it. A time in the future (the clock was set back since) proves nothing
/// and is stepped over rather than stopping the walk until the clock catches up.
fn accepted_after_cut_off(created_at: UnixMillis, before_ms: UnixMillis, now: UnixMillis) -> bool {
    (before_ms..=now).contains(&created_at)
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

    /// Both walks read their index or the table from the oldest row, never sorting; the
    /// event check is a point look-up.
    #[test]
    fn the_purge_walks_in_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        // As on the writer, which runs these: without it a delete checks `deliveries` for
        // rows referring to the event.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let finished = plan(&conn, FINISHED_OLDEST, params!["failed"]);
        assert!(
            finished
                .iter()
                .any(|step| step.contains("deliveries_finished"))
                && finished.iter().all(|step| !step.contains("TEMP B-TREE")),
            "{finished:?}"
        );
        let events = plan(&conn, SCAN_EVENTS, params![0, 10]);
        assert!(
            events.iter().all(|step| !step.contains("TEMP B-TREE")),
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
