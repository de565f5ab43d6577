//! Retention on PostgreSQL: finished work past its age deleted in small batches, each its
//! own short transaction.
//!
//! A batch picks the oldest finished deliveries from the retention index with
//! `FOR UPDATE SKIP LOCKED`, so it never waits on a row another transaction holds (a
//! redelivery in progress), and a row that changed since the statement began (redelivered:
//! queued again) is re-checked and left alone. Claims, renewals and attempt records only
//! touch queued and in-flight rows, which a purge never selects, so neither waits on the
//! other. Then the batch deletes the deliveries' attempts and those of their events no
//! delivery refers to any more, in the same transaction.
//!
//! Batches of every node take turns under one advisory lock: two nodes deleting the last
//! two deliveries of one event at once would each still see the other's, and the event
//! would stay forever. Only purgers take that lock.

use super::{PgStore, RELAXED_COMMIT, parse_id};
use crate::domain::{EventId, UnixMillis};
use crate::store::{EventCursor, EventScan, PurgeCounts, StoreError};
use uuid::Uuid;

/// Taken with `pg_advisory_xact_lock` by each retention batch: "hg-purge" in ASCII.
const RETENTION_LOCK_KEY: i64 = 0x6867_2d70_7572_6765;

/// The oldest finished deliveries, found by the retention index and locked (skipping rows
/// another transaction holds), then deleted by primary key. The status list repeats the
/// partial index's condition, so the planner proves it. The chosen keys go through an array,
/// an init plan: joined as a subquery (`IN`, or a CTE), the planner hashed it against a
/// scan of the whole table.
const DELETE_FINISHED: &str = "DELETE FROM deliveries WHERE seq = ANY(ARRAY( \
         SELECT seq FROM deliveries \
         WHERE status IN ('succeeded', 'failed', 'skipped') AND updated_at < $1 \
         ORDER BY updated_at LIMIT $2 \
         FOR UPDATE SKIP LOCKED)) \
     RETURNING id, event_id, latest_number IS NOT NULL";

const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE delivery_id = ANY($1::uuid[])";

/// A statement of its own after the deliveries' delete: within one statement the
/// `NOT EXISTS` would still see the rows that statement deletes.
const DELETE_EVENTS_IF_EMPTY: &str = "DELETE FROM events e WHERE e.id = ANY($1::uuid[]) \
     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)";

/// Events in acceptance order after the cursor, up to the age limit.
const SCAN_EVENTS: &str = "SELECT created_at, id FROM events \
     WHERE (created_at, id) > ($1, $2) AND created_at < $3 \
     ORDER BY created_at, id LIMIT $4";

impl PgStore {
    pub async fn purge_finished(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<PurgeCounts, StoreError> {
        let mut client = self.client().await?;
        let transaction = begin_purge(&mut client).await?;
        let delete = transaction.prepare_cached(DELETE_FINISHED).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut deliveries = Vec::new();
        let mut events = Vec::new();
        // A delivery's latest attempt is in its row (migration 4) and goes with it.
        let mut latest_attempts = 0;
        for row in transaction.query(&delete, &[&before_ms, &limit]).await? {
            deliveries.push(row.try_get::<_, Uuid>(0)?);
            events.push(row.try_get::<_, Uuid>(1)?);
            latest_attempts += u64::from(row.try_get::<_, bool>(2)?);
        }
        let mut counts = PurgeCounts {
            deliveries: deliveries.len() as u64,
            ..PurgeCounts::default()
        };
        if !deliveries.is_empty() {
            let attempts = transaction.prepare_cached(DELETE_ATTEMPTS).await?;
            counts.attempts =
                latest_attempts + transaction.execute(&attempts, &[&deliveries]).await?;
            events.sort_unstable();
            events.dedup();
            let empty = transaction.prepare_cached(DELETE_EVENTS_IF_EMPTY).await?;
            counts.events = transaction.execute(&empty, &[&events]).await?;
        }
        transaction.commit().await?;
        Ok(counts)
    }

    pub async fn purge_events_without_deliveries(
        &self,
        after: EventCursor,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<EventScan, StoreError> {
        // The nil UUID sorts before every id.
        let after_id = after.id.as_ref().and_then(parse_id).unwrap_or(Uuid::nil());
        let mut client = self.client().await?;
        let transaction = begin_purge(&mut client).await?;
        let scan = transaction.prepare_cached(SCAN_EVENTS).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut scanned = Vec::new();
        let mut last = None;
        for row in transaction
            .query(&scan, &[&after.created_at, &after_id, &before_ms, &limit])
            .await?
        {
            let created_at: UnixMillis = row.try_get(0)?;
            let id: Uuid = row.try_get(1)?;
            scanned.push(id);
            last = Some((created_at, id));
        }
        let deleted = if scanned.is_empty() {
            0
        } else {
            let empty = transaction.prepare_cached(DELETE_EVENTS_IF_EMPTY).await?;
            transaction.execute(&empty, &[&scanned]).await?
        };
        transaction.commit().await?;
        let next = match last {
            Some((created_at, id)) => EventCursor {
                created_at,
                id: Some(EventId::from(id.to_string())),
                rowid: 0,
            },
            None => after,
        };
        Ok(EventScan {
            scanned: scanned.len(),
            deleted,
            next,
        })
    }
}

/// A purge's transaction: committed without waiting for an fsync (losing a purge loses
/// nothing), and holding the purgers' lock so nodes take turns.
async fn begin_purge(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let transaction = client.transaction().await?;
    transaction.batch_execute(RELAXED_COMMIT).await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK_KEY])
        .await?;
    Ok(transaction)
}
