//! The delivery queue on SQLite: enqueue, claim, finish, release, redeliver and look-ups.

use super::SqliteStore;
use super::leases::Leases;
use crate::domain::{
    Attempt, DeliveryId, DeliveryStatus, Destination, EventId, LeaseToken, UnixMillis, now_millis,
};
use crate::store::{
    AttemptOutcome, ClaimBatch, ClaimBudget, ClaimedDelivery, DeliverySummary, DeliveryView,
    DueLeft, EnqueueOutcome, EventView, Lease, NewEvent, Page, StoreError,
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
                held.hold(seq, id, lease.token, lease.until, true);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: i64,
        budget: ClaimBudget,
    ) -> Result<ClaimBatch, StoreError> {
        let leases = self.inner.leases.clone();
        let token = LeaseToken::generate();
        let claim_token = token.clone();
        let claimed = self
            .write_relaxed(move |conn| claim(conn, &leases, &claim_token, limit, lease_ms, budget))
            .await;
        let (rows, next_due_at, due_left) = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                // Its caller never sees these rows: they must not wait for the lease to end.
                self.inner.leases.lock().release_all(&token);
                return Err(error);
            }
        };
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for row in rows {
            match serde_json::from_str::<Destination>(&row.destination) {
                Ok(destination) => deliveries.push(ClaimedDelivery {
                    id: DeliveryId::from(row.id),
                    lease_token: row.lease_token,
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
                    row.lease_token,
                    format!("stored destination is unreadable: {error}"),
                )),
            }
        }
        if !unreadable.is_empty() {
            tracing::error!(
                count = unreadable.len(),
                "dead-lettering deliveries with unreadable destinations"
            );
            let leases = self.inner.leases.clone();
            let failed = self
                .write_relaxed(move |conn| {
                    let mut fail = conn.prepare_cached(
                        "UPDATE deliveries SET status = 'failed', last_error = ?1, \
                         updated_at = ?3 WHERE seq = ?2",
                    )?;
                    let now = now_millis();
                    let mut failed = Vec::new();
                    for (id, lease_token, reason) in unreadable {
                        let Some(held) = leases.lock().matching(&id, &lease_token) else {
                            continue;
                        };
                        fail.execute(params![reason, held.seq, now])?;
                        failed.push((held.seq, lease_token));
                    }
                    Ok(failed)
                })
                .await?;
            self.release_held(&failed);
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
        let leases = self.inner.leases.clone();
        let token = lease_token.clone();
        let finished = self
            .write_relaxed(move |conn| {
                let Some(held) = leases.lock().matching(&delivery_id, &lease_token) else {
                    return Ok(None);
                };
                if attempt.number > 1 {
                    // The attempt before this one leaves the row for the history table. A row
                    // from before the move has none there (its attempts are all in history), and
                    // an attempt run again under a new lease finds its own number already there.
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (delivery_id, number, started_at, \
                     duration_ms, response_status, error, response_body) \
                     SELECT id, attempts, latest_started_at, latest_duration_ms, latest_status, \
                     latest_error, latest_body FROM deliveries \
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
                 latest_error = ?4, latest_body = ?9 WHERE seq = ?10",
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
                    held.seq
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
        {
            let mut held = self.inner.leases.lock();
            for (delivery_id, lease_token) in leases {
                let Some(matched) = held.matching(&delivery_id, &lease_token) else {
                    continue;
                };
                if matched.row_in_flight || due_at > now_millis() || reason.is_some() {
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
    fn release_held(&self, rows: &[(i64, LeaseToken)]) {
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
                "SELECT number, started_at, duration_ms, response_status, error, response_body \
                 FROM attempts WHERE delivery_id = ?1 \
                 UNION ALL \
                 SELECT attempts, latest_started_at, latest_duration_ms, latest_status, \
                 latest_error, latest_body FROM deliveries \
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

/// A claimed row as the writer thread hands it over; parsed by the caller.
struct ClaimedRow {
    id: String,
    lease_token: LeaseToken,
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
    leases: &Leases,
    lease_token: &LeaseToken,
    limit: usize,
    lease_ms: i64,
    mut budget: ClaimBudget,
) -> Result<(Vec<ClaimedRow>, Option<UnixMillis>, DueLeft), StoreError> {
    let now = now_millis();
    // Pick from the oldest due rows, taking only as many per destination as it has room
    // for, so nothing is claimed just to be handed back. The scan reads the covering (due
    // time, destination) index, no table rows, and steps over rows held under a lease (this
    // process's running and waiting deliveries, at most a few claims' worth). Past those it
    // looks at `scan_rows` entries at most: a small window normally, a deep one when the
    // caller asks because full destinations may be hiding others' due work behind their
    // backlog. Choosing here rather than in SQL (a window function ranking per destination)
    // spares a sort and a JSON parse per claim. The first row left unchosen gives the time
    // the caller may sleep until.
    let mut chosen = Vec::with_capacity(limit);
    let mut scanned = 0;
    let mut next_due_at = None;
    {
        let mut due = conn.prepare_cached(
            "SELECT seq, due_at, dest_key FROM deliveries INDEXED BY deliveries_due \
             WHERE status IN ('queued', 'in_flight') ORDER BY due_at",
        )?;
        let mut rows = due.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            if leases.lock().holds(seq, now) {
                continue;
            }
            let due_at: UnixMillis = row.get(1)?;
            if due_at > now || chosen.len() >= limit || scanned >= budget.scan_rows {
                // A full destination's row seen earlier is due sooner.
                next_due_at.get_or_insert(due_at);
                break;
            }
            scanned += 1;
            let dest_key = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            if budget.admit(dest_key) {
                chosen.push(seq);
            } else if next_due_at.is_none() {
                next_due_at = Some(due_at);
            }
        }
    }
    let due_left = budget.due_left(scanned, chosen.len(), limit);
    let mut read = conn.prepare_cached(
        "SELECT id, event_id, destination, attempts, budget_start, status \
         FROM deliveries WHERE seq = ?1",
    )?;
    let mut event_lookup =
        conn.prepare_cached("SELECT event_type, timestamp, payload FROM events WHERE id = ?1")?;
    // A fan-out claims several deliveries of one event; load its payload once.
    let mut loaded: Option<(String, String, f64, Arc<str>)> = None;
    let mut deliveries = Vec::with_capacity(chosen.len());
    for seq in chosen {
        let (id, event_id, destination, attempts_made, budget_start, status) =
            read.query_row([seq], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get_ref(5)?.as_str().map_err(rusqlite::Error::from)? == "in_flight",
                ))
            })?;
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
                     updated_at = ?2 WHERE seq = ?1",
                )?
                .execute(params![seq, now])?;
                continue;
            };
            loaded = Some((event_id.clone(), event_type, timestamp, Arc::from(payload)));
        }
        let Some((_, event_type, timestamp, payload)) = loaded.as_ref() else {
            continue;
        };
        leases.lock().hold(
            seq,
            DeliveryId::from(id.as_str()),
            lease_token.clone(),
            now + lease_ms,
            status,
        );
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
    Ok((deliveries, next_due_at, due_left))
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
mod tests {
    use super::*;
    use crate::domain::{DestinationSource, OutputFormat, RetryOverride};
    use crate::store::{Lease, NewDelivery};

    fn one_delivery(url: &str, lease: Option<Lease>) -> NewEvent {
        let id = EventId::generate();
        NewEvent {
            payload: format!(r#"{{"event_id":"{id}"}}"#),
            id,
            event_type: "parse.success".into(),
            project_id: None,
            timestamp: 1.0,
            deliveries: vec![NewDelivery {
                id: DeliveryId::generate(),
                destination: Destination {
                    url: url.to_owned(),
                    headers: Vec::new(),
                    output_format: OutputFormat::Json,
                    signing_secret: None,
                    transform: None,
                    transform_config: None,
                    retry: RetryOverride::default(),
                    source: DestinationSource::Inline,
                },
                lease,
            }],
        }
    }

    fn budget() -> ClaimBudget {
        ClaimBudget {
            per_destination: 10,
            scan_rows: 100,
            ..ClaimBudget::default()
        }
    }

    fn attempt(number: u32, status: u16) -> Attempt {
        Attempt {
            number,
            started_at: 1_000 * i64::from(number),
            duration_ms: 5,
            response_status: Some(status),
            error: (status >= 300).then(|| format!("receiver answered {status}")),
            response_body: Some(format!("body {number}")),
        }
    }

    fn wal_bytes(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("leases.sqlite3-wal")).map_or(0, |meta| meta.len())
    }

    /// A claim writes nothing to the file, yet a second claim does not take what the first
    /// holds and the API shows it in flight. A lease that ended is claimed again, and the
    /// old holder's result is refused.
    #[tokio::test]
    async fn claims_hold_rows_in_memory_until_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
        let stored = store
            .enqueue(vec![
                one_delivery("http://127.0.0.1:9/a", None),
                one_delivery("http://127.0.0.1:9/b", None),
            ])
            .await
            .unwrap();
        let before = wal_bytes(dir.path());
        let first = store.claim_due(1, 60_000, budget()).await.unwrap();
        assert_eq!(first.deliveries.len(), 1);
        let held = &first.deliveries[0];
        assert_eq!(held.id, stored[0].deliveries[0].id, "oldest first");
        // The second delivery; the first is held.
        let second = store.claim_due(10, 60_000, budget()).await.unwrap();
        assert_eq!(second.deliveries.len(), 1);
        assert_eq!(second.deliveries[0].id, stored[1].deliveries[0].id);
        assert!(
            store
                .claim_due(10, 60_000, budget())
                .await
                .unwrap()
                .deliveries
                .is_empty()
        );
        assert_eq!(wal_bytes(dir.path()), before, "claims wrote to the file");
        let view = store.delivery(held.id.clone()).await.unwrap().unwrap();
        assert_eq!(view.status, DeliveryStatus::InFlight);
        let listed = store
            .deliveries(Some(DeliveryStatus::InFlight), 10, None)
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 2);
        let queued = store
            .deliveries(Some(DeliveryStatus::Queued), 10, None)
            .await
            .unwrap();
        assert!(queued.items.is_empty());

        // Handed back due now: the lease goes, nothing is written, and it is claimable.
        let lease = vec![(held.id.clone(), held.lease_token.clone())];
        store
            .release_until(lease, now_millis(), None)
            .await
            .unwrap();
        assert_eq!(wal_bytes(dir.path()), before, "a plain hand-back wrote");
        // Claimed under a lease that ends at once, then taken over by the next claim.
        let ended = store.claim_due(10, -1, budget()).await.unwrap();
        assert_eq!(ended.deliveries.len(), 1);
        let old = &ended.deliveries[0];
        let renewed = vec![(old.id.clone(), old.lease_token.clone())];
        assert_eq!(store.renew_leases(renewed, 0).await.unwrap(), 1);
        let taken_over = store.claim_due(10, 60_000, budget()).await.unwrap();
        assert_eq!(taken_over.deliveries.len(), 1);
        let current = &taken_over.deliveries[0];
        assert_eq!(current.id, old.id);
        let late = store
            .finish_attempt(
                old.id.clone(),
                old.lease_token.clone(),
                attempt(1, 200),
                AttemptOutcome::Succeeded,
            )
            .await
            .unwrap();
        assert!(!late, "the old holder's result is refused");
        assert!(
            store
                .finish_attempt(
                    current.id.clone(),
                    current.lease_token.clone(),
                    attempt(1, 200),
                    AttemptOutcome::Succeeded,
                )
                .await
                .unwrap()
        );
        let done = store.delivery(current.id.clone()).await.unwrap().unwrap();
        assert_eq!(done.status, DeliveryStatus::Succeeded);
        store.close();
    }

    /// Handing back with a reason, or a later due time, is written; a hand-over's row, in
    /// flight in the file, is written back to queued.
    #[tokio::test]
    async fn hand_backs_that_change_the_row_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
        let lease = Lease {
            token: LeaseToken::generate(),
            until: now_millis() + 60_000,
        };
        let handed_over = one_delivery("http://127.0.0.1:9/h", Some(lease.clone()));
        let handed_id = handed_over.deliveries[0].id.clone();
        store
            .enqueue(vec![
                handed_over,
                one_delivery("http://127.0.0.1:9/c", None),
            ])
            .await
            .unwrap();
        assert_eq!(
            store
                .delivery(handed_id.clone())
                .await
                .unwrap()
                .unwrap()
                .status,
            DeliveryStatus::InFlight
        );
        let claimed = store.claim_due(10, 60_000, budget()).await.unwrap();
        assert_eq!(claimed.deliveries.len(), 1, "the hand-over is held");
        let claimed = &claimed.deliveries[0];
        let later = now_millis() + 60_000;
        store
            .release_until(
                vec![(claimed.id.clone(), claimed.lease_token.clone())],
                later,
                Some("paused".into()),
            )
            .await
            .unwrap();
        let waiting = store.delivery(claimed.id.clone()).await.unwrap().unwrap();
        assert_eq!(waiting.status, DeliveryStatus::Queued);
        assert_eq!(waiting.next_attempt_at, Some(later));
        assert_eq!(waiting.last_error.as_deref(), Some("paused"));

        store
            .release_until(
                vec![(handed_id.clone(), lease.token.clone())],
                now_millis(),
                None,
            )
            .await
            .unwrap();
        let queued = store.delivery(handed_id.clone()).await.unwrap().unwrap();
        assert_eq!(queued.status, DeliveryStatus::Queued);
        let again = store.claim_due(10, 60_000, budget()).await.unwrap();
        let ids: Vec<&DeliveryId> = again.deliveries.iter().map(|d| &d.id).collect();
        assert_eq!(ids, [&handed_id]);
        store.close();
    }

    /// What is left due behind a full destination is due now, although later rows follow.
    #[tokio::test]
    async fn the_next_due_time_is_the_earliest_row_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
        store
            .enqueue(vec![
                one_delivery("http://127.0.0.1:9/a", None),
                one_delivery("http://127.0.0.1:9/b", None),
            ])
            .await
            .unwrap();
        // A third, of another destination, retrying in a minute.
        store
            .enqueue(vec![one_delivery("http://127.0.0.2:9/later", None)])
            .await
            .unwrap();
        let first_full = ClaimBudget {
            in_flight: [("127.0.0.1:9".to_owned(), 10)].into(),
            ..budget()
        };
        let third = store.claim_due(10, 60_000, first_full).await.unwrap();
        assert_eq!(third.deliveries.len(), 1);
        let later = now_millis() + 60_000;
        let leases = third
            .deliveries
            .iter()
            .map(|d| (d.id.clone(), d.lease_token.clone()))
            .collect();
        store.release_until(leases, later, None).await.unwrap();
        let one_slot = ClaimBudget {
            per_destination: 1,
            ..budget()
        };
        let batch = store.claim_due(10, 60_000, one_slot).await.unwrap();
        assert_eq!(batch.deliveries.len(), 1, "one slot for 127.0.0.1:9");
        let due = batch.next_due_at.expect("something is left");
        assert!(
            due <= now_millis(),
            "the full destination's row is due now: {due}"
        );
        store.close();
    }

    /// A file from before the latest attempt moved into the row and events knew their
    /// deliveries' range: its attempts stay in the history table, later attempts follow them
    /// in order, and events find their deliveries.
    #[tokio::test]
    async fn attempts_recorded_before_the_move_are_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE events (id TEXT PRIMARY KEY, event_type TEXT NOT NULL, \
                 project_id TEXT, timestamp REAL NOT NULL, payload TEXT NOT NULL, \
                 created_at INTEGER NOT NULL);
                 CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL, dest_key TEXT NOT NULL, \
                 webhook_url TEXT NOT NULL, destination TEXT NOT NULL, status TEXT NOT NULL, \
                 attempts INTEGER NOT NULL DEFAULT 0, budget_start INTEGER NOT NULL DEFAULT 0, \
                 due_at INTEGER NOT NULL, lease_token TEXT, last_error TEXT, \
                 created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
                 CREATE TABLE attempts (delivery_id TEXT NOT NULL, number INTEGER NOT NULL, \
                 started_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL, \
                 response_status INTEGER, error TEXT, response_body TEXT, \
                 PRIMARY KEY (delivery_id, number)) WITHOUT ROWID;
                 INSERT INTO events VALUES ('e1', 'parse.success', NULL, 1.0, '{}', 0);
                 INSERT INTO deliveries (id, event_id, dest_key, webhook_url, destination, \
                 status, attempts, due_at, last_error, created_at, updated_at) VALUES \
                 ('d1', 'e1', 'k', 'http://127.0.0.1:9/', \
                 '{\"url\":\"http://127.0.0.1:9/\",\"source\":{\"kind\":\"inline\"}}', 'queued', 1, 0, 'x', 0, 0);
                 INSERT INTO attempts VALUES ('d1', 1, 1000, 5, 500, 'receiver answered 500', 'old');
                 CREATE INDEX deliveries_event ON deliveries(event_id);
                 INSERT INTO events VALUES ('e2', 'parse.success', NULL, 1.0, '{}', 0);
                 INSERT INTO deliveries (seq, id, event_id, dest_key, webhook_url, destination, \
                 status, due_at, created_at, updated_at) VALUES \
                 (2, 'd2', 'e2', 'k', 'http://127.0.0.1:9/', '{}', 'succeeded', 0, 0, 0), \
                 (4, 'd4', 'e2', 'k', 'http://127.0.0.1:9/', '{}', 'succeeded', 0, 0, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        for (number, status) in [(2, 503), (3, 200)] {
            let claim = store.claim_due(10, 60_000, budget()).await.unwrap();
            let claimed = &claim.deliveries[0];
            assert_eq!(claimed.attempts_made, number - 1);
            let outcome = if status == 200 {
                AttemptOutcome::Succeeded
            } else {
                AttemptOutcome::Retry { due_at: 0 }
            };
            assert!(
                store
                    .finish_attempt(
                        claimed.id.clone(),
                        claimed.lease_token.clone(),
                        attempt(number, status),
                        outcome,
                    )
                    .await
                    .unwrap()
            );
        }
        let view = store
            .delivery(DeliveryId::from("d1"))
            .await
            .unwrap()
            .unwrap();
        let attempts = view.attempts.unwrap();
        let seen: Vec<(u32, Option<u16>, Option<String>)> = attempts
            .into_iter()
            .map(|attempt| {
                (
                    attempt.number,
                    attempt.response_status,
                    attempt.response_body,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, Some(500), Some("old".to_owned())),
                (2, Some(503), Some("body 2".to_owned())),
                (3, Some(200), Some("body 3".to_owned())),
            ]
        );
        assert_eq!(view.status, DeliveryStatus::Succeeded);
        // The event finds its delivery by the range worked out when the file was opened.
        let event = store.event(EventId::from("e1")).await.unwrap().unwrap();
        let ids: Vec<&str> = event.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d1"]);
        // Retention had deleted the delivery between this event's two: the range spans it.
        let event = store.event(EventId::from("e2")).await.unwrap().unwrap();
        let ids: Vec<&str> = event.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d2", "d4"]);
        store.close();
    }

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
