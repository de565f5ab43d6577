//! The delivery queue on PostgreSQL: release, redeliver and the look-ups of the operations
//! API (accepting is in `enqueue`, claiming in `claim`, recording attempts in `finish`).

use super::cluster::notify_queued;
use super::{DURABLE_COMMIT, PgStore, RELAXED_COMMIT, parse_id, stored_count};
use crate::domain::{
    Attempt, DeliveryId, DeliveryStatus, Destination, DestinationSource, EventId, Exchange,
    LeaseToken, UnixMillis, now_millis,
};
use crate::store::{DeliveryView, EventCursor, EventSummary, EventView, Page, StoreError};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.event_id, e.event_type, d.webhook_url, d.status, \
     d.destination, d.attempts, d.due_at, d.last_error, d.created_at, d.updated_at";

const RELEASE: &str = "UPDATE deliveries d SET status = 'queued', lease_token = NULL, due_at = $1, \
     last_error = coalesce($4, d.last_error) \
     FROM unnest($2::uuid[], $3::uuid[]) AS l(id, lease_token) \
     WHERE d.id = l.id AND d.lease_token = l.lease_token";

/// Queued or in-flight deliveries are left as they are: redelivery is idempotent.
const REDELIVER: &str = "UPDATE deliveries SET status = 'queued', due_at = $1, budget_start = attempts, \
     updated_at = $1, last_error = NULL WHERE id = $2 AND status NOT IN ('queued', 'in_flight')";

impl PgStore {
    pub async fn release_until(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        due_at: UnixMillis,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = leases
            .iter()
            .filter_map(|(id, token)| Some((parse_id(id)?, parse_id(token)?)))
            .unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(RELAXED_COMMIT).await?;
        let release = transaction.prepare_cached(RELEASE).await?;
        let released = transaction
            .execute(&release, &[&due_at, &ids, &tokens, &reason])
            .await?;
        if released > 0 {
            notify_queued(&transaction, &self.inner.origin).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    pub async fn redeliver(
        &self,
        delivery_id: DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        let Some(id) = parse_id(&delivery_id) else {
            return Ok(None);
        };
        {
            let mut client = self.client().await?;
            let transaction = client.transaction().await?;
            let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
            transaction.execute(&durable, &[]).await?;
            let redeliver = transaction.prepare_cached(REDELIVER).await?;
            let queued = transaction
                .execute(&redeliver, &[&now_millis(), &id])
                .await?;
            if queued > 0 {
                notify_queued(&transaction, &self.inner.origin).await?;
            }
            transaction.commit().await?;
        }
        self.delivery(delivery_id).await
    }

    /// Queue finished deliveries again with fresh retry budgets, in one durable transaction;
    /// returns how many were queued (queued and in-flight ones are left as they are).
    pub async fn redeliver_many(&self, delivery_ids: Vec<DeliveryId>) -> Result<usize, StoreError> {
        // An id that does not parse names no delivery.
        let ids: Vec<Uuid> = delivery_ids.iter().filter_map(parse_id).collect();
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
        transaction.execute(&durable, &[]).await?;
        let redeliver = transaction
            .prepare_cached(
                "UPDATE deliveries SET status = 'queued', due_at = $1, budget_start = attempts, \
                 updated_at = $1, last_error = NULL \
                 WHERE id = ANY($2) AND status NOT IN ('queued', 'in_flight')",
            )
            .await?;
        let queued = transaction
            .execute(&redeliver, &[&now_millis(), &ids])
            .await?;
        if queued > 0 {
            notify_queued(&transaction, &self.inner.origin).await?;
        }
        transaction.commit().await?;
        Ok(usize::try_from(queued).unwrap_or(usize::MAX))
    }

    pub async fn event(&self, event_id: EventId) -> Result<Option<EventView>, StoreError> {
        let Some(id) = parse_id(&event_id) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let lookup = client
            .prepare_cached(
                "SELECT id, event_type, project_id, timestamp, payload FROM events WHERE id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&lookup, &[&id]).await? else {
            return Ok(None);
        };
        let payload: String = row.try_get(4)?;
        let deliveries = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.event_id = $1 ORDER BY d.seq"
            ))
            .await?;
        let deliveries = client
            .query(&deliveries, &[&id])
            .await?
            .iter()
            .map(delivery_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(EventView {
            event_id: EventId::from(row.try_get::<_, Uuid>(0)?.to_string()),
            event_type: row.try_get(1)?,
            project_id: row.try_get(2)?,
            timestamp: row.try_get(3)?,
            accepted_at: (row.try_get::<_, f64>(3)? * 1000.0) as UnixMillis,
            payload: serde_json::from_str(&payload)
                .map_err(|error| StoreError::Corrupt(format!("event payload: {error}")))?,
            deliveries,
        }))
    }

    pub async fn delivery(
        &self,
        delivery_id: DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        let Some(id) = parse_id(&delivery_id) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let lookup = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.id = $1"
            ))
            .await?;
        let Some(row) = client.query_opt(&lookup, &[&id]).await? else {
            return Ok(None);
        };
        let mut view = delivery_view(&row)?;
        let attempts = client
            .prepare_cached(
                "SELECT number, started_at, duration_ms, response_status, error, response_body, \
                     exchange \
                 FROM attempts WHERE delivery_id = $1 \
                 UNION ALL \
                 SELECT latest_number, latest_started_at, latest_duration_ms, latest_status, \
                     latest_error, latest_body, latest_exchange \
                 FROM deliveries WHERE id = $1 AND latest_number IS NOT NULL \
                 ORDER BY 1",
            )
            .await?;
        let attempts = client
            .query(&attempts, &[&id])
            .await?
            .iter()
            .map(|row| {
                Ok(Attempt {
                    number: stored_count(row.try_get(0)?),
                    started_at: row.try_get(1)?,
                    duration_ms: u64::try_from(row.try_get::<_, i64>(2)?).unwrap_or(0),
                    response_status: row
                        .try_get::<_, Option<i32>>(3)?
                        .and_then(|status| u16::try_from(status).ok()),
                    error: row.try_get(4)?,
                    response_body: row.try_get(5)?,
                    exchange: Exchange::from_stored(
                        row.try_get::<_, Option<&str>>(6)?,
                        stored_count(row.try_get(0)?),
                    ),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        view.attempts = Some(attempts);
        Ok(Some(view))
    }

    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Page<DeliveryView>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(&list_sql(status)).await?;
        let items = client
            .query(
                &list,
                &[
                    &before_seq.unwrap_or(i64::MAX),
                    &(limit as i64).saturating_add(1),
                ],
            )
            .await?
            .iter()
            .map(delivery_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, limit, |item| item.seq, None))
    }

    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'in_flight')",
            )
            .await?;
        let depth: i64 = client.query_one(&count, &[]).await?.try_get(0)?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    /// Events newest first, by `(created_at, id)` (the retention index), from below `before`.
    pub async fn recent_events(
        &self,
        before: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let (created_at, id) = match &before {
            Some(cursor) => (
                cursor.created_at,
                cursor.id.as_ref().and_then(parse_id).unwrap_or(Uuid::max()),
            ),
            None => (UnixMillis::MAX, Uuid::max()),
        };
        let client = self.client().await?;
        let list = client
            .prepare_cached(
                "SELECT created_at, id, event_type, project_id, timestamp FROM events \
                 WHERE (created_at, id) < ($1, $2) ORDER BY created_at DESC, id DESC LIMIT $3",
            )
            .await?;
        let rows = client
            .query(
                &list,
                &[&created_at, &id, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let created_at: UnixMillis = row.try_get(0)?;
                let id = EventId::from(row.try_get::<_, Uuid>(1)?.to_string());
                Ok(EventSummary {
                    event_id: id.clone(),
                    event_type: row.try_get(2)?,
                    project_id: row.try_get(3)?,
                    timestamp: row.try_get(4)?,
                    accepted_at: created_at,
                    position: EventCursor {
                        created_at,
                        id: Some(id),
                        rowid: 0,
                    },
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(StoreError::from)
    }

    /// The waiting deliveries split as (queued, in flight).
    pub async fn queue_by_state(&self) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE status = 'queued'), \
                        count(*) FILTER (WHERE status = 'in_flight') \
                 FROM deliveries WHERE status IN ('queued', 'in_flight')",
            )
            .await?;
        let row = client.query_one(&count, &[]).await?;
        let (queued, in_flight): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok((
            u64::try_from(queued).unwrap_or(0),
            u64::try_from(in_flight).unwrap_or(0),
        ))
    }
}

/// The delivery list, newest first, for one status or all. The status is written into the
/// statement (one cached statement per status, from a closed set) so the planner can prove
/// a finished status falls under the partial index's condition; a parameter would hide it.
fn list_sql(status: Option<DeliveryStatus>) -> String {
    let filter = match status {
        Some(status) => format!("d.status = '{}'", status.as_str()),
        None => "true".to_owned(),
    };
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
         WHERE {filter} AND d.seq < $1 ORDER BY d.seq DESC LIMIT $2"
    )
}

fn delivery_view(row: &Row) -> Result<DeliveryView, tokio_postgres::Error> {
    let status: String = row.try_get(5)?;
    let status = DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Queued);
    let destination: String = row.try_get(6)?;
    let source = serde_json::from_str::<Destination>(&destination)
        .map(|destination| destination.source)
        .unwrap_or(DestinationSource::Inline);
    let due_at: UnixMillis = row.try_get(8)?;
    Ok(DeliveryView {
        seq: row.try_get(0)?,
        id: DeliveryId::from(row.try_get::<_, Uuid>(1)?.to_string()),
        event_id: EventId::from(row.try_get::<_, Uuid>(2)?.to_string()),
        event_type: row.try_get(3)?,
        webhook_url: row.try_get(4)?,
        status,
        source,
        attempt_count: stored_count(row.try_get(7)?),
        next_attempt_at: (status == DeliveryStatus::Queued).then_some(due_at),
        last_error: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        attempts: None,
    })
}
