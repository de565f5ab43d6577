//! The delivery queue on SQLite: enqueue, claim, finish, release, redeliver and look-ups.

use super::SqliteStore;
use crate::domain::{
    Attempt, DeliveryId, DeliveryStatus, Destination, EventId, LeaseToken, UnixMillis, now_millis,
};
use crate::store::{
    AttemptOutcome, ClaimBatch, ClaimBudget, ClaimedDelivery, DeliverySummary, DeliveryView,
    DueLeft, EnqueueOutcome, EventView, NewEvent, Page, StoreError,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::sync::Arc;

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.event_id, e.event_type, d.webhook_url, d.status, \
     d.destination, d.attempts, d.due_at, d.last_error, d.created_at, d.updated_at";

pub(super) fn requeue_orphans(conn: &Connection) -> Result<(), StoreError> {
    let requeued = conn.execute(
        "UPDATE deliveries SET status = 'queued', lease_token = NULL, due_at = ?1 \
         WHERE status = 'in_flight'",
        [now_millis()],
    )?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "sqlite: requeued deliveries left in flight by the last run"
        );
    }
    Ok(())
}

impl SqliteStore {
    pub async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        // Serialise here, on the caller's thread: the writer thread is the one serial
        // resource, so it only runs SQL.
        let rows = events
            .into_iter()
            .map(|event| {
                let deliveries = event
                    .deliveries
                    .iter()
                    .map(|delivery| {
                        let json = serde_json::to_string(&delivery.destination)
                            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                        Ok(DeliveryRow {
                            id: delivery.id.clone(),
                            lease: delivery.lease.clone(),
                            dest_key: delivery.destination.concurrency_key(),
                            url: delivery.destination.url.clone(),
                            destination: json,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok((event, deliveries))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(move |conn| {
            rows.into_iter()
                .map(|(event, deliveries)| enqueue_one(conn, event, deliveries))
                .collect()
        })
        .await
    }

    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: i64,
        budget: ClaimBudget,
    ) -> Result<ClaimBatch, StoreError> {
        let (rows, next_due_at, due_left) = self
            .write_relaxed(move |conn| claim(conn, limit, lease_ms, budget))
            .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for row in rows {
            match serde_json::from_str::<Destination>(&row.destination) {
                Ok(destination) => deliveries.push(ClaimedDelivery {
                    id: DeliveryId::from(row.id),
                    lease_token: LeaseToken::from(row.lease_token),
                    event_id: EventId::from(row.event_id),
                    event_type: row.event_type,
                    timestamp: row.timestamp,
                    payload: row.payload,
                    destination,
                    attempts_made: row.attempts_made,
                    budget_start: row.budget_start,
                }),
                // One unreadable row must not hold up the rest of the claim: it is
                // dead-lettered with the reason, and the others go out.
                Err(error) => unreadable.push((
                    DeliveryId::from(row.id),
                    LeaseToken::from(row.lease_token),
                    format!("stored destination is unreadable: {error}"),
                )),
            }
        }
        if !unreadable.is_empty() {
            tracing::error!(
                count = unreadable.len(),
                "dead-lettering deliveries with unreadable destinations"
            );
            self.write_relaxed(move |conn| {
                let mut fail = conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', last_error = ?1, lease_token = NULL, \
                     updated_at = ?4 WHERE id = ?2 AND lease_token = ?3",
                )?;
                let now = now_millis();
                for (id, lease_token, reason) in unreadable {
                    fail.execute(params![reason, id.as_str(), lease_token.as_str(), now])?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(ClaimBatch {
            deliveries,
            next_due_at,
            due_left,
        })
    }

    pub async fn finish_attempt(
        &self,
        delivery_id: DeliveryId,
        lease_token: LeaseToken,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        self.write_relaxed(move |conn| {
            let now = now_millis();
            let (status, due_at) = outcome.next_state(now);
            let updated = conn
                .prepare_cached(
                    "UPDATE deliveries SET status = ?1, due_at = ?2, attempts = ?3, \
                     last_error = ?4, updated_at = ?5, lease_token = NULL \
                     WHERE id = ?6 AND lease_token = ?7",
                )?
                .execute(params![
                    status.as_str(),
                    due_at,
                    attempt.number,
                    attempt.error,
                    now,
                    delivery_id.as_str(),
                    lease_token.as_str()
                ])?;
            if updated == 0 {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT OR REPLACE INTO attempts (delivery_id, number, started_at, duration_ms, \
                 response_status, error, response_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                delivery_id.as_str(),
                attempt.number,
                attempt.started_at,
                attempt.duration_ms as i64,
                attempt.response_status,
                attempt.error,
                attempt.response_body
            ])?;
            Ok(true)
        })
        .await
    }

    pub async fn release_until(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        due_at: UnixMillis,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.write_relaxed(move |conn| {
            let mut release = conn.prepare_cached(
                "UPDATE deliveries SET status = 'queued', lease_token = NULL, due_at = ?1, \
                 last_error = coalesce(?4, last_error) WHERE id = ?2 AND lease_token = ?3",
            )?;
            for (delivery_id, lease_token) in leases {
                release.execute(params![
                    due_at,
                    delivery_id.as_str(),
                    lease_token.as_str(),
                    reason.as_deref()
                ])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn renew_leases(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        until: UnixMillis,
    ) -> Result<usize, StoreError> {
        self.write_relaxed(move |conn| {
            let mut renew = conn.prepare_cached(
                "UPDATE deliveries SET due_at = ?1 \
                 WHERE id = ?2 AND lease_token = ?3 AND status = 'in_flight'",
            )?;
            let mut renewed = 0;
            for (delivery_id, lease_token) in leases {
                renewed +=
                    renew.execute(params![until, delivery_id.as_str(), lease_token.as_str()])?;
            }
            Ok(renewed)
        })
        .await
    }

    pub async fn redeliver(
        &self,
        delivery_id: DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        let id = delivery_id.clone();
        // Queued or in-flight deliveries are left as they are: redelivery is idempotent.
        self.write(move |conn| {
                let now = now_millis();
                conn.execute(
                    "UPDATE deliveries SET status = 'queued', due_at = ?1, budget_start = attempts, \
                     updated_at = ?1, last_error = NULL WHERE id = ?2 AND status NOT IN ('queued', 'in_flight')",
                    params![now, id.as_str()],
                )?;
                Ok(())
            })
            .await?;
        self.delivery(delivery_id).await
    }

    pub async fn event(&self, event_id: EventId) -> Result<Option<EventView>, StoreError> {
        self.read(move |conn| {
            let event = conn
                .query_row(
                    "SELECT id, event_type, project_id, timestamp, payload FROM events WHERE id = ?1",
                    [event_id.as_str()],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, f64>(3)?,
                            row.get::<_, String>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((event_id, event_type, project_id, timestamp, payload)) = event else {
                return Ok(None);
            };
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.event_id = ?1 ORDER BY d.seq"
            ))?;
            let deliveries = statement
                .query_map([event_id.as_str()], delivery_view)?
                .collect::<Result<Vec<_>, _>>()?;
            let payload = serde_json::from_str(&payload)
                .map_err(|error| StoreError::Corrupt(format!("event payload: {error}")))?;
            Ok(Some(EventView {
                event_id: EventId::from(event_id),
                event_type,
                project_id,
                timestamp,
                payload,
                deliveries,
            }))
        })
        .await
    }

    pub async fn delivery(
        &self,
        delivery_id: DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        self.read(move |conn| {
            let view = conn
                .query_row(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
                         WHERE d.id = ?1"
                    ),
                    [delivery_id.as_str()],
                    delivery_view,
                )
                .optional()?;
            let Some(mut view) = view else {
                return Ok(None);
            };
            let mut statement = conn.prepare_cached(
                "SELECT number, started_at, duration_ms, response_status, error, response_body \
                 FROM attempts WHERE delivery_id = ?1 ORDER BY number",
            )?;
            let attempts = statement
                .query_map([delivery_id.as_str()], |row| {
                    Ok(Attempt {
                        number: row.get(0)?,
                        started_at: row.get(1)?,
                        duration_ms: row.get::<_, i64>(2)? as u64,
                        response_status: row.get(3)?,
                        error: row.get(4)?,
                        response_body: row.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            view.attempts = Some(attempts);
            Ok(Some(view))
        })
        .await
    }

    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Page<DeliveryView>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&list_sql(status))?;
            let items = statement
                .query_map(
                    params![
                        before_seq.unwrap_or(i64::MAX),
                        (limit as i64).saturating_add(1)
                    ],
                    delivery_view,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(items, limit, |item| item.seq, None))
        })
        .await
    }

    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let depth: i64 = conn.query_row(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'in_flight')",
                [],
                |row| row.get(0),
            )?;
            Ok(depth as u64)
        })
        .await
    }
}

/// The delivery list, newest first, for one status or all. The status is written into the
/// statement (one cached statement per status, from a closed set), and a finished status
/// repeats the partial index's own condition word for word: SQLite uses a partial index only
/// when the query's terms contain its WHERE, and does not infer it from `status = 'failed'`.
/// Queued and in-flight rows are the newest, which the scan from the newest end meets first.
fn list_sql(status: Option<DeliveryStatus>) -> String {
    let filter = match status {
        Some(
            status @ (DeliveryStatus::Succeeded | DeliveryStatus::Failed | DeliveryStatus::Skipped),
        ) => format!(
            "d.status IN ('succeeded', 'failed', 'skipped') AND d.status = '{}'",
            status.as_str()
        ),
        Some(status) => format!("d.status = '{}'", status.as_str()),
        None => "1".to_owned(),
    };
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
         WHERE {filter} AND d.seq < ?1 ORDER BY d.seq DESC LIMIT ?2"
    )
}

/// A delivery ready for its INSERT.
struct DeliveryRow {
    id: DeliveryId,
    lease: Option<crate::store::Lease>,
    dest_key: String,
    url: String,
    destination: String,
}

fn enqueue_one(
    conn: &Connection,
    event: NewEvent,
    rows: Vec<DeliveryRow>,
) -> Result<EnqueueOutcome, StoreError> {
    let now = now_millis();
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, event_type, project_id, timestamp, payload, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            event.id.as_str(),
            event.event_type,
            event.project_id,
            event.timestamp,
            event.payload,
            now
        ])?;
    if inserted == 0 {
        let mut existing = conn.prepare_cached(
            "SELECT id, webhook_url, status FROM deliveries WHERE event_id = ?1 ORDER BY seq",
        )?;
        let deliveries = existing
            .query_map([event.id.as_str()], |row| {
                let status: String = row.get(2)?;
                Ok(DeliverySummary {
                    id: DeliveryId::from(row.get::<_, String>(0)?),
                    webhook_url: row.get(1)?,
                    status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Queued),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(EnqueueOutcome {
            event_id: event.id,
            duplicate: true,
            deliveries,
        });
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, dest_key, webhook_url, destination, status, \
         lease_token, due_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        // A handed-over delivery is in flight under its lease; to the API it is still queued.
        let (status, lease_token, due_at) = match &row.lease {
            Some(lease) => ("in_flight", Some(lease.token.as_str()), lease.until),
            None => ("queued", None, now),
        };
        insert.execute(params![
            row.id.as_str(),
            event.id.as_str(),
            row.dest_key,
            row.url,
            row.destination,
            status,
            lease_token,
            due_at,
            now
        ])?;
        deliveries.push(DeliverySummary {
            id: row.id,
            webhook_url: row.url,
            status: DeliveryStatus::Queued,
        });
    }
    Ok(EnqueueOutcome {
        event_id: event.id,
        duplicate: false,
        deliveries,
    })
}

/// A claimed row as the writer thread hands it over; parsed by the caller.
struct ClaimedRow {
    id: String,
    lease_token: String,
    event_id: String,
    event_type: String,
    timestamp: f64,
    payload: Arc<str>,
    destination: String,
    attempts_made: u32,
    budget_start: u32,
}

fn claim(
    conn: &Connection,
    limit: usize,
    lease_ms: i64,
    mut budget: ClaimBudget,
) -> Result<(Vec<ClaimedRow>, Option<UnixMillis>, DueLeft), StoreError> {
    let now = now_millis();
    let lease_token = uuid::Uuid::new_v4().to_string();
    // Pick from the oldest due rows, taking only as many per destination as it has room
    // for, so nothing is claimed just to be handed back. The scan reads at most `scan_rows`
    // entries of the covering (due time, destination) index, no table rows: a small window
    // normally, a deep one when the caller asks because full destinations may be hiding
    // others' due work behind their backlog. Choosing here rather than in SQL (a window
    // function ranking per destination) spares a sort and a JSON parse per claim.
    let mut chosen = Vec::with_capacity(limit);
    let mut scanned = 0;
    {
        let mut due = conn.prepare_cached(
            "SELECT seq, dest_key FROM deliveries INDEXED BY deliveries_due \
             WHERE status IN ('queued', 'in_flight') AND due_at <= ?1 \
             ORDER BY due_at LIMIT ?2",
        )?;
        let mut rows = due.query(params![
            now,
            i64::try_from(budget.scan_rows).unwrap_or(i64::MAX)
        ])?;
        while chosen.len() < limit
            && let Some(row) = rows.next()?
        {
            scanned += 1;
            let dest_key = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            if budget.admit(dest_key) {
                chosen.push(row.get::<_, i64>(0)?);
            }
        }
    }
    let due_left = budget.due_left(scanned, chosen.len(), limit);
    let mut take = conn.prepare_cached(
        "UPDATE deliveries SET status = 'in_flight', lease_token = ?1, due_at = ?2 \
         WHERE seq = ?3 RETURNING id, event_id, destination, attempts, budget_start",
    )?;
    let mut claimed = Vec::with_capacity(chosen.len());
    for seq in chosen {
        claimed.push(
            take.query_row(params![lease_token, now + lease_ms, seq], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, u32>(4)?,
                ))
            })?,
        );
    }
    let mut event_lookup =
        conn.prepare_cached("SELECT event_type, timestamp, payload FROM events WHERE id = ?1")?;
    // A fan-out claims several deliveries of one event; load its payload once.
    let mut loaded: Option<(String, String, f64, Arc<str>)> = None;
    let mut deliveries = Vec::with_capacity(claimed.len());
    for (id, event_id, destination, attempts_made, budget_start) in claimed {
        if loaded
            .as_ref()
            .is_none_or(|(cached_id, ..)| *cached_id != event_id)
        {
            let found = event_lookup
                .query_row([&event_id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, f64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            let Some((event_type, timestamp, payload)) = found else {
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', last_error = 'its event is missing', \
                     lease_token = NULL, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![&id, now])?;
                continue;
            };
            loaded = Some((event_id.clone(), event_type, timestamp, Arc::from(payload)));
        }
        let Some((_, event_type, timestamp, payload)) = loaded.as_ref() else {
            continue;
        };
        deliveries.push(ClaimedRow {
            id,
            lease_token: lease_token.clone(),
            event_id,
            event_type: event_type.clone(),
            timestamp: *timestamp,
            payload: payload.clone(),
            destination,
            attempts_made,
            budget_start,
        });
    }
    let next_due_at = conn
        .prepare_cached(
            "SELECT due_at FROM deliveries INDEXED BY deliveries_due WHERE status IN ('queued', 'in_flight') \
             ORDER BY due_at LIMIT 1",
        )?
        .query_row([], |row| row.get::<_, UnixMillis>(0))
        .optional()?;
    Ok((deliveries, next_due_at, due_left))
}

fn delivery_view(row: &Row<'_>) -> rusqlite::Result<DeliveryView> {
    let status: String = row.get(5)?;
    let status = DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Queued);
    let destination: String = row.get(6)?;
    let source = serde_json::from_str::<Destination>(&destination)
        .map(|destination| destination.source)
        .unwrap_or(crate::domain::DestinationSource::Inline);
    let due_at: UnixMillis = row.get(8)?;
    Ok(DeliveryView {
        seq: row.get(0)?,
        id: DeliveryId::from(row.get::<_, String>(1)?),
        event_id: EventId::from(row.get::<_, String>(2)?),
        event_type: row.get(3)?,
        webhook_url: row.get(4)?,
        status,
        source,
        attempt_count: row.get(7)?,
        next_attempt_at: (status == DeliveryStatus::Queued).then_some(due_at),
        last_error: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        attempts: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finished-status lists must walk the partial index, not the whole table.
    #[test]
    fn finished_status_lists_use_the_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("plan.sqlite3")).unwrap();
        let conn = Connection::open(dir.path().join("plan.sqlite3")).unwrap();
        for status in [
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
            DeliveryStatus::Skipped,
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(Some(status))))
                .unwrap()
                .query_map(params![i64::MAX, 10], |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains("deliveries_finished")),
                "{status:?}: {plan:?}"
            );
        }
        store.close();
    }
}
