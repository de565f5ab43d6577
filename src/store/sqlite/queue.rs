//! The delivery queue on SQLite: enqueue, finish, release, redeliver and look-ups (claims
//! are in `claim`).

use super::SqliteStore;
use super::leases::Leases;
use crate::domain::{
    Attempt, DeliveryId, DeliveryStatus, Destination, EventId, Exchange, LeaseToken, UnixMillis,
    now_millis,
};
use crate::store::{
    AttemptOutcome, DeliverySummary, DeliveryView, EnqueueOutcome, EventCursor, EventSummary,
    EventView, Lease, NewEvent, Page, StoreError,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

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
        let leases = self.inner.leases.clone();
        let stored = self
            .write(move |conn| {
                rows.into_iter()
                    .map(|(event, deliveries)| enqueue_one(conn, &leases, event, deliveries))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        // Held once committed, not before: a rolled-back insert's seq is used again. Until
        // then nothing can claim these rows, which are in flight and due when the lease ends.
        let mut held = self.inner.leases.lock();
        let mut outcomes = Vec::with_capacity(stored.len());
        for (outcome, handed_over) in stored {
            for (seq, id, lease) in handed_over {
                held.hold_handed_over(seq, id, lease.token, lease.until);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    pub async fn finish_attempt(
        &self,
        delivery_id: DeliveryId,
        lease_token: LeaseToken,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let leases = self.inner.leases.clone();
        let token = lease_token.clone();
        let finished = self
            .write_relaxed(move |conn| {
                let Some(held) = leases.lock().matching(&delivery_id, &lease_token) else {
                    return Ok(None);
                };
                if attempt.number > 1 {
                    // The attempt before this one leaves the row for the history table. A row
                    // from before the move has none (its attempts are all in history already);
                    // a record of that number there can only be one an older build wrote.
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (delivery_id, number, started_at, \
                         duration_ms, response_status, error, response_body, exchange) \
                         SELECT id, attempts, latest_started_at, latest_duration_ms, \
                         latest_status, latest_error, latest_body, latest_exchange FROM deliveries \
                         WHERE seq = ?1 AND latest_started_at IS NOT NULL AND attempts < ?2",
                    )?
                    .execute(params![held.seq, attempt.number])?;
                }
                let now = now_millis();
                let (status, due_at) = outcome.next_state(now);
                conn.prepare_cached(
                    "UPDATE deliveries SET status = ?1, due_at = ?2, attempts = ?3, \
                     last_error = ?4, updated_at = ?5, \
                     latest_started_at = ?6, latest_duration_ms = ?7, latest_status = ?8, \
                     latest_error = ?4, latest_body = ?9, latest_exchange = ?11 WHERE seq = ?10",
                )?
                .execute(params![
                    status.as_str(),
                    due_at,
                    attempt.number,
                    attempt.error,
                    now,
                    attempt.started_at,
                    attempt.duration_ms as i64,
                    attempt.response_status,
                    attempt.response_body,
                    held.seq,
                    attempt
                        .exchange
                        .as_ref()
                        .map(|exchange| exchange.to_stored(attempt.number)),
                ])?;
                Ok(Some(held.seq))
            })
            .await?;
        // Let go once committed: a write that failed or was rolled back leaves the lease to
        // end, and the delivery runs again after it.
        let Some(seq) = finished else {
            return Ok(false);
        };
        self.release_held(&[(seq, token)]);
        Ok(true)
    }

    pub async fn release_until(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        due_at: UnixMillis,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        // A claimed row is `queued` in the file already: handing it back due now, with
        // nothing to say, is letting the lease go. A hand-over's row, a later due time or a
        // reason is written first.
        let mut to_write = Vec::new();
        let later = due_at > now_millis();
        {
            let mut held = self.inner.leases.lock();
            for (delivery_id, lease_token) in leases {
                let Some(matched) = held.matching(&delivery_id, &lease_token) else {
                    continue;
                };
                if matched.row_in_flight || later || reason.is_some() {
                    to_write.push((matched.seq, lease_token));
                } else {
                    held.release(matched.seq, &lease_token);
                }
            }
        }
        if to_write.is_empty() {
            return Ok(());
        }
        let leases = self.inner.leases.clone();
        let written = self
            .write_relaxed(move |conn| {
                let mut release = conn.prepare_cached(
                    "UPDATE deliveries SET status = 'queued', due_at = ?1, \
                     last_error = coalesce(?3, last_error) WHERE seq = ?2",
                )?;
                // Checked again here, in order with claims: a lease that ended meanwhile
                // may have been taken over.
                to_write.retain(|(seq, token)| leases.lock().is_held_by(*seq, token));
                for (seq, _) in &to_write {
                    release.execute(params![due_at, seq, reason.as_deref()])?;
                }
                Ok(to_write)
            })
            .await?;
        self.release_held(&written);
        Ok(())
    }

    /// Let rows go whose change was committed, each if still held under its token.
    pub(super) fn release_held(&self, rows: &[(i64, LeaseToken)]) {
        let mut held = self.inner.leases.lock();
        for (seq, token) in rows {
            held.release(*seq, token);
        }
    }

    /// Renewal writes nothing: the leases are in memory (see `leases`).
    pub async fn renew_leases(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        until: UnixMillis,
    ) -> Result<usize, StoreError> {
        Ok(self.inner.leases.lock().renew(&leases, until))
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

    /// Queue finished deliveries again with fresh retry budgets, in one durable write;
    /// returns how many were queued (queued and in-flight ones are left as they are).
    pub async fn redeliver_many(&self, delivery_ids: Vec<DeliveryId>) -> Result<usize, StoreError> {
        self.write(move |conn| {
            let now = now_millis();
            let mut statement = conn.prepare_cached(
                "UPDATE deliveries SET status = 'queued', due_at = ?1, budget_start = attempts, \
                 updated_at = ?1, last_error = NULL WHERE id = ?2 AND status NOT IN ('queued', 'in_flight')",
            )?;
            let mut queued = 0;
            for id in &delivery_ids {
                queued += statement.execute(params![now, id.as_str()])?;
            }
            Ok(queued)
        })
        .await
    }

    pub async fn event(&self, event_id: EventId) -> Result<Option<EventView>, StoreError> {
        let leases = self.inner.leases.clone();
        self.read(move |conn| {
            let event = conn
                .query_row(
                    "SELECT id, event_type, project_id, timestamp, payload, first_delivery_seq, \
                     delivery_count FROM events WHERE id = ?1",
                    [event_id.as_str()],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, f64>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, Option<i64>>(5)?,
                            row.get::<_, i64>(6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((event_id, event_type, project_id, timestamp, payload, first, count)) = event
            else {
                return Ok(None);
            };
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.seq >= ?1 AND d.seq < ?1 + ?2 AND d.event_id = ?3 ORDER BY d.seq"
            ))?;
            let mut deliveries = statement
                .query_map(params![first, count, event_id.as_str()], delivery_view)?
                .collect::<Result<Vec<_>, _>>()?;
            show_held(&leases, &mut deliveries);
            let payload = serde_json::from_str(&payload)
                .map_err(|error| StoreError::Corrupt(format!("event payload: {error}")))?;
            Ok(Some(EventView {
                event_id: EventId::from(event_id),
                event_type,
                project_id,
                timestamp,
                accepted_at: (timestamp * 1000.0) as UnixMillis,
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
        let leases = self.inner.leases.clone();
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
            show_held(&leases, std::slice::from_mut(&mut view));
            let mut statement = conn.prepare_cached(
                "SELECT number, started_at, duration_ms, response_status, error, response_body, \
                 exchange FROM attempts WHERE delivery_id = ?1 \
                 UNION ALL \
                 SELECT attempts, latest_started_at, latest_duration_ms, latest_status, \
                 latest_error, latest_body, latest_exchange FROM deliveries \
                 WHERE seq = ?2 AND latest_started_at IS NOT NULL \
                 ORDER BY 1",
            )?;
            let attempts = statement
                .query_map(params![delivery_id.as_str(), view.seq], |row| {
                    Ok(Attempt {
                        number: row.get(0)?,
                        started_at: row.get(1)?,
                        duration_ms: row.get::<_, i64>(2)? as u64,
                        response_status: row.get(3)?,
                        error: row.get(4)?,
                        response_body: row.get(5)?,
                        exchange: Exchange::from_stored(
                            row.get::<_, Option<String>>(6)?.as_deref(),
                            row.get(0)?,
                        ),
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
        let leases = self.inner.leases.clone();
        // A claimed row is `queued` in the file and in flight to the API (`show_held`), so
        // the two pending statuses are read together and told apart here.
        let pending = matches!(
            status,
            Some(DeliveryStatus::Queued | DeliveryStatus::InFlight)
        );
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&list_sql(status))?;
            let mut items = Vec::new();
            let mut before = before_seq.unwrap_or(i64::MAX);
            loop {
                let mut rows = statement
                    .query_map(
                        params![before, (limit as i64).saturating_add(1)],
                        delivery_view,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let exhausted = rows.len() <= limit;
                if let Some(last) = rows.last() {
                    before = last.seq;
                }
                show_held(&leases, &mut rows);
                items.extend(
                    rows.into_iter()
                        .filter(|item| !pending || Some(item.status) == status),
                );
                if !pending || items.len() > limit || exhausted {
                    break;
                }
            }
            items.truncate(limit.saturating_add(1));
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

    /// Events newest first, by rowid (acceptance order), from below `before`.
    pub async fn recent_events(
        &self,
        before: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<EventSummary>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT rowid, id, event_type, project_id, timestamp, created_at FROM events \
                 WHERE rowid < ?1 ORDER BY rowid DESC LIMIT ?2",
            )?;
            let rows = statement
                .query_map(
                    params![
                        before.map_or(i64::MAX, |cursor| cursor.rowid),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| {
                        let created_at: UnixMillis = row.get(5)?;
                        let id: String = row.get(1)?;
                        Ok(EventSummary {
                            event_id: EventId::from(id.clone()),
                            event_type: row.get(2)?,
                            project_id: row.get(3)?,
                            timestamp: row.get(4)?,
                            accepted_at: created_at,
                            position: EventCursor {
                                created_at,
                                id: Some(EventId::from(id)),
                                rowid: row.get(0)?,
                            },
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The waiting deliveries split as (queued, in flight): a held row is `queued` in the
    /// file, so the in-flight ones are the live leases.
    pub async fn queue_by_state(&self) -> Result<(u64, u64), StoreError> {
        let waiting = self.queue_depth().await?;
        let in_flight = self.inner.leases.lock().live(now_millis()) as u64;
        Ok((waiting.saturating_sub(in_flight), in_flight.min(waiting)))
    }
}

/// The delivery list, newest first, for one status or all. The status is written into the
/// statement (one cached statement per status, from a closed set), and a finished status
/// repeats the partial index's own condition word for word: SQLite uses a partial index only
/// when the query's terms contain its WHERE, and does not infer it from `status = 'failed'`.
/// Queued and in-flight rows are the newest, which the scan from the newest end meets first;
/// both are read for either (see `deliveries`).
fn list_sql(status: Option<DeliveryStatus>) -> String {
    let filter = match status {
        Some(
            status @ (DeliveryStatus::Succeeded | DeliveryStatus::Failed | DeliveryStatus::Skipped),
        ) => format!(
            "d.status IN ('succeeded', 'failed', 'skipped') AND d.status = '{}'",
            status.as_str()
        ),
        Some(_) => "d.status IN ('queued', 'in_flight')".to_owned(),
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

/// Rows stored handed over, to be held once committed: seq, delivery and lease.
type HandedOver = Vec<(i64, DeliveryId, Lease)>;

fn enqueue_one(
    conn: &Connection,
    leases: &Leases,
    event: NewEvent,
    rows: Vec<DeliveryRow>,
) -> Result<(EnqueueOutcome, HandedOver), StoreError> {
    let now = now_millis();
    // The writer is the file's one writer, so looking before inserting cannot race.
    let range = conn
        .prepare_cached("SELECT first_delivery_seq, delivery_count FROM events WHERE id = ?1")?
        .query_row([event.id.as_str()], |row| {
            Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    if let Some((first, count)) = range {
        let mut existing = conn.prepare_cached(
            "SELECT seq, id, webhook_url, status FROM deliveries \
             WHERE seq >= ?1 AND seq < ?1 + ?2 AND event_id = ?3 ORDER BY seq",
        )?;
        let deliveries = existing
            .query_map(params![first, count, event.id.as_str()], |row| {
                let status: String = row.get(3)?;
                let status = match DeliveryStatus::parse(&status) {
                    _ if leases.lock().holds(row.get(0)?, now) => DeliveryStatus::InFlight,
                    Some(status) => status,
                    None => DeliveryStatus::Queued,
                };
                Ok(DeliverySummary {
                    id: DeliveryId::from(row.get::<_, String>(1)?),
                    webhook_url: row.get(2)?,
                    status,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = EnqueueOutcome {
            event_id: event.id,
            duplicate: true,
            deliveries,
        };
        return Ok((outcome, Vec::new()));
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, dest_key, webhook_url, destination, status, \
         due_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?;
    let mut deliveries = Vec::with_capacity(rows.len());
    let mut handed_over = Vec::new();
    let mut first_delivery_seq = None;
    for row in rows {
        // A handed-over delivery is in flight under its lease; to the API it is still queued.
        // Its row says `in_flight`, due when the lease would end, so that opening the file
        // after a crash finds it; the lease itself is held in memory once committed.
        let (status, due_at) = match &row.lease {
            Some(lease) => ("in_flight", lease.until),
            None => ("queued", now),
        };
        insert.execute(params![
            row.id.as_str(),
            event.id.as_str(),
            row.dest_key,
            row.url,
            row.destination,
            status,
            due_at,
            now
        ])?;
        let seq = conn.last_insert_rowid();
        first_delivery_seq.get_or_insert(seq);
        if let Some(lease) = row.lease {
            handed_over.push((seq, row.id.clone(), lease));
        }
        deliveries.push(DeliverySummary {
            id: row.id,
            webhook_url: row.url,
            status: DeliveryStatus::Queued,
        });
    }
    conn.prepare_cached(
        "INSERT INTO events (id, event_type, project_id, timestamp, payload, created_at, \
         first_delivery_seq, delivery_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.id.as_str(),
        event.event_type,
        event.project_id,
        event.timestamp,
        event.payload,
        now,
        first_delivery_seq,
        deliveries.len() as i64
    ])?;
    let outcome = EnqueueOutcome {
        event_id: event.id,
        duplicate: false,
        deliveries,
    };
    Ok((outcome, handed_over))
}

/// A claimed row is still `queued` in the file; the API shows it in flight, as it is.
fn show_held(leases: &Leases, views: &mut [DeliveryView]) {
    let now = now_millis();
    let held = leases.lock();
    for view in views {
        if view.status == DeliveryStatus::Queued && held.holds(view.seq, now) {
            view.status = DeliveryStatus::InFlight;
            view.next_attempt_at = None;
        }
    }
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
mod tests;
