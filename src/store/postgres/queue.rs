//! The delivery queue on PostgreSQL: claim, release, redeliver and look-ups (accepting is in
//! `enqueue`, recording attempts in `finish`).
//!
//! A claim reads the oldest due rows from the partial index without locking them, chooses
//! per destination within the caller's budget (as the SQLite claim does), and then takes
//! only the chosen rows with `FOR UPDATE SKIP LOCKED`, re-checking that each is still due:
//! a row another node took meanwhile is locked (skipped) or no longer due (dropped), so two
//! nodes never hold one delivery. Locking the whole scan instead would write a lock into
//! every row looked at, and the engine's deep scans look at tens of thousands.

use super::{DURABLE_COMMIT, PgStore, RELAXED_COMMIT, parse_id, stored_count};
use crate::domain::{
    Attempt, DeliveryStatus, Destination, DestinationSource, UnixMillis, now_millis,
};
use crate::store::{
    ClaimBatch, ClaimBudget, ClaimedDelivery, DeliveryView, EventView, Page, StoreError,
};
use deadpool_postgres::GenericClient;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::Row;
use uuid::Uuid;

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.event_id, e.event_type, d.webhook_url, d.status, \
     d.destination, d.attempts, d.due_at, d.last_error, d.created_at, d.updated_at";

/// Due work, oldest first, from the index alone.
const SCAN_DUE: &str = "SELECT seq, dest_key FROM deliveries \
     WHERE status IN ('queued', 'in_flight') AND due_at <= $1 ORDER BY due_at LIMIT $2";

/// Take the chosen rows that are still due and not locked by another claim.
const TAKE: &str = "WITH chosen AS ( \
         SELECT seq FROM deliveries \
         WHERE seq = ANY($1::int8[]) AND status IN ('queued', 'in_flight') AND due_at <= $2 \
         FOR UPDATE SKIP LOCKED) \
     UPDATE deliveries d SET status = 'in_flight', lease_token = $3, due_at = $4 \
     FROM chosen WHERE d.seq = chosen.seq \
     RETURNING d.seq, d.id, d.event_id, d.destination, d.attempts, d.budget_start";

const LOAD_EVENTS: &str =
    "SELECT id, event_type, timestamp, payload FROM events WHERE id = ANY($1::uuid[])";

const NEXT_DUE: &str = "SELECT due_at FROM deliveries WHERE status IN ('queued', 'in_flight') \
     ORDER BY due_at LIMIT 1";

/// Dead-letter a claimed delivery that cannot be sent, if the lease is still ours.
const FAIL_CLAIMED: &str = "UPDATE deliveries SET status = 'failed', last_error = $1, lease_token = NULL \
     WHERE id = $2 AND lease_token = $3";

const RELEASE: &str = "UPDATE deliveries d SET status = 'queued', lease_token = NULL, due_at = $1 \
     FROM unnest($2::uuid[], $3::uuid[]) AS l(id, lease_token) \
     WHERE d.id = l.id AND d.lease_token = l.lease_token";

/// Queued or in-flight deliveries are left as they are: redelivery is idempotent.
const REDELIVER: &str = "UPDATE deliveries SET status = 'queued', due_at = $1, budget_start = attempts, \
     updated_at = $1, last_error = NULL WHERE id = $2 AND status NOT IN ('queued', 'in_flight')";

/// A claimed row before its destination is parsed.
struct TakenRow {
    seq: i64,
    id: Uuid,
    event_id: Uuid,
    destination: String,
    attempts_made: u32,
    budget_start: u32,
}

impl PgStore {
    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: i64,
        budget: ClaimBudget,
    ) -> Result<ClaimBatch, StoreError> {
        let now = now_millis();
        let lease_token = Uuid::new_v4();
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(RELAXED_COMMIT).await?;
        let scan = transaction.prepare_cached(SCAN_DUE).await?;
        let due = transaction
            .query(&scan, &[&now, &(budget.scan_rows as i64)])
            .await?;
        let chosen = choose(&due, limit, budget)?;
        let mut taken = Vec::with_capacity(chosen.len());
        if !chosen.is_empty() {
            let take = transaction.prepare_cached(TAKE).await?;
            let lease_end = now.saturating_add(lease_ms);
            for row in transaction
                .query(&take, &[&chosen, &now, &lease_token, &lease_end])
                .await?
            {
                taken.push(TakenRow {
                    seq: row.try_get(0)?,
                    id: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                    destination: row.try_get(3)?,
                    attempts_made: stored_count(row.try_get(4)?),
                    budget_start: stored_count(row.try_get(5)?),
                });
            }
        }
        // Oldest first, as chosen; RETURNING follows no order.
        let position: HashMap<i64, usize> = chosen
            .iter()
            .enumerate()
            .map(|(index, seq)| (*seq, index))
            .collect();
        taken.sort_by_key(|row| position.get(&row.seq).copied().unwrap_or(usize::MAX));

        // A fan-out claims several deliveries of one event: load each event once.
        let mut event_ids: Vec<Uuid> = taken.iter().map(|row| row.event_id).collect();
        event_ids.sort_unstable();
        event_ids.dedup();
        let mut events: HashMap<Uuid, (String, f64, Arc<str>)> = HashMap::new();
        if !event_ids.is_empty() {
            let load = transaction.prepare_cached(LOAD_EVENTS).await?;
            for row in transaction.query(&load, &[&event_ids]).await? {
                let payload: String = row.try_get(3)?;
                events.insert(
                    row.try_get(0)?,
                    (row.try_get(1)?, row.try_get(2)?, Arc::from(payload)),
                );
            }
        }
        let mut deliveries = Vec::with_capacity(taken.len());
        // One unreadable row must not hold up the rest of the claim: it is dead-lettered
        // with the reason, and the others go out.
        let mut unsendable = Vec::new();
        for row in taken {
            let Some((event_type, timestamp, payload)) = events.get(&row.event_id) else {
                unsendable.push((row.id, "its event is missing".to_owned()));
                continue;
            };
            match serde_json::from_str::<Destination>(&row.destination) {
                Ok(destination) => deliveries.push(ClaimedDelivery {
                    id: row.id.to_string(),
                    lease_token: lease_token.to_string(),
                    event_id: row.event_id.to_string(),
                    event_type: event_type.clone(),
                    timestamp: *timestamp,
                    payload: payload.clone(),
                    destination,
                    attempts_made: row.attempts_made,
                    budget_start: row.budget_start,
                }),
                Err(error) => {
                    unsendable.push((row.id, format!("stored destination is unreadable: {error}")))
                }
            }
        }
        if !unsendable.is_empty() {
            tracing::error!(
                count = unsendable.len(),
                "dead-lettering claimed deliveries that cannot be sent"
            );
            let fail = transaction.prepare_cached(FAIL_CLAIMED).await?;
            for (id, reason) in &unsendable {
                transaction
                    .execute(&fail, &[reason, id, &lease_token])
                    .await?;
            }
        }
        let next_due = transaction.prepare_cached(NEXT_DUE).await?;
        let next_due_at = match transaction.query_opt(&next_due, &[]).await? {
            Some(row) => Some(row.try_get::<_, UnixMillis>(0)?),
            None => None,
        };
        transaction.commit().await?;
        Ok(ClaimBatch {
            deliveries,
            next_due_at,
        })
    }

    pub async fn release(&self, leases: Vec<(String, String)>) -> Result<(), StoreError> {
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
        transaction
            .execute(&release, &[&now_millis(), &ids, &tokens])
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn redeliver(&self, delivery_id: String) -> Result<Option<DeliveryView>, StoreError> {
        let Some(id) = parse_id(&delivery_id) else {
            return Ok(None);
        };
        {
            let mut client = self.client().await?;
            let transaction = client.transaction().await?;
            let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
            transaction.execute(&durable, &[]).await?;
            let redeliver = transaction.prepare_cached(REDELIVER).await?;
            transaction
                .execute(&redeliver, &[&now_millis(), &id])
                .await?;
            transaction.commit().await?;
        }
        self.delivery(delivery_id).await
    }

    pub async fn event(&self, event_id: String) -> Result<Option<EventView>, StoreError> {
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
            event_id: row.try_get::<_, Uuid>(0)?.to_string(),
            event_type: row.try_get(1)?,
            project_id: row.try_get(2)?,
            timestamp: row.try_get(3)?,
            payload: serde_json::from_str(&payload)
                .map_err(|error| StoreError::Corrupt(format!("event payload: {error}")))?,
            deliveries,
        }))
    }

    pub async fn delivery(&self, delivery_id: String) -> Result<Option<DeliveryView>, StoreError> {
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
                "SELECT number, started_at, duration_ms, response_status, error, response_body \
                 FROM attempts WHERE delivery_id = $1 ORDER BY number",
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
        let mut items = client
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
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|item| item.seq)
        } else {
            None
        };
        Ok(Page {
            items,
            next_cursor,
            total: None,
        })
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
}

/// Pick from the oldest due rows, taking only as many per destination as it has room for,
/// so nothing is claimed just to be handed back; exactly the SQLite claim's rule.
fn choose(due: &[Row], limit: usize, budget: ClaimBudget) -> Result<Vec<i64>, StoreError> {
    let mut room = budget.in_flight;
    let mut chosen = Vec::with_capacity(limit.min(due.len()));
    for row in due {
        if chosen.len() >= limit {
            break;
        }
        let dest_key: &str = row.try_get(1)?;
        let held = match room.get_mut(dest_key) {
            Some(held) => held,
            None => room.entry(dest_key.to_owned()).or_default(),
        };
        if *held >= budget.per_destination {
            continue;
        }
        *held += 1;
        chosen.push(row.try_get::<_, i64>(0)?);
    }
    Ok(chosen)
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
        id: row.try_get::<_, Uuid>(1)?.to_string(),
        event_id: row.try_get::<_, Uuid>(2)?.to_string(),
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
