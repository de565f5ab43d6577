//! Claiming due deliveries on PostgreSQL.
//!
//! A claim reads the oldest due rows from the partial index without locking them, chooses
//! per destination within the caller's budget (as the SQLite claim does), and then takes
//! only the chosen rows with `FOR UPDATE SKIP LOCKED`, re-checking that each is still due:
//! a row another node took meanwhile is locked (skipped) or no longer due (dropped), so two
//! nodes never hold one delivery. Locking the whole scan instead would write a lock into
//! every row looked at, and the engine's deep scans look at tens of thousands. Rows whose
//! lease ran out are due again, so a dead node's deliveries return to the queue by
//! themselves; there is no start-up requeue as in SQLite, since other nodes own in-flight
//! rows.

use super::{PgStore, RELAXED_COMMIT, stored_count};
use crate::domain::{DeliveryId, Destination, EventId, LeaseToken, UnixMillis, now_millis};
use crate::store::{ClaimBatch, ClaimBudget, ClaimedDelivery, DueLeft, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::Row;
use uuid::Uuid;

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
const FAIL_CLAIMED: &str = "UPDATE deliveries SET status = 'failed', last_error = $1, lease_token = NULL, \
     updated_at = $4 WHERE id = $2 AND lease_token = $3";

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
        let (chosen, due_left) = choose(&due, limit, budget)?;
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
        // A chosen row another claim holds, or took and gave back, may still be due, and its
        // destination is not among the refused.
        let due_left = if taken.len() < chosen.len() {
            DueLeft::Unknown
        } else {
            due_left
        };
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
                    id: DeliveryId::from(row.id.to_string()),
                    lease_token: LeaseToken::from(lease_token.to_string()),
                    event_id: EventId::from(row.event_id.to_string()),
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
                    .execute(&fail, &[reason, id, &lease_token, &now])
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
            due_left,
        })
    }
}

/// Pick from the oldest due rows, taking only as many per destination as it has room for,
/// so nothing is claimed just to be handed back; exactly the SQLite claim's rule.
fn choose(
    due: &[Row],
    limit: usize,
    mut budget: ClaimBudget,
) -> Result<(Vec<i64>, DueLeft), StoreError> {
    let mut chosen = Vec::with_capacity(limit.min(due.len()));
    let mut scanned = 0;
    for row in due {
        if chosen.len() >= limit {
            break;
        }
        scanned += 1;
        if budget.admit(row.try_get(1)?) {
            chosen.push(row.try_get::<_, i64>(0)?);
        }
    }
    let due_left = budget.due_left(scanned, chosen.len(), limit);
    Ok((chosen, due_left))
}
