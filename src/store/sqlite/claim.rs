//! Claims on SQLite: due rows found through the (due time, destination) index, taken per
//! destination as far as its room allows, and held under a lease in memory (`leases`).

use super::SqliteStore;
use super::leases::Leases;
use crate::domain::{DeliveryId, Destination, EventId, LeaseToken, UnixMillis, now_millis};
use crate::store::{ClaimBatch, ClaimBudget, ClaimedDelivery, DueLeft, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

impl SqliteStore {
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
                .await;
            match failed {
                Ok(failed) => self.release_held(&failed),
                // The readable ones still go out; these stay leased, and are read again
                // once their lease ends.
                Err(error) => {
                    tracing::error!(%error, "dead-lettering unreadable deliveries failed")
                }
            }
        }
        Ok(ClaimBatch {
            deliveries,
            next_due_at,
            due_left,
        })
    }
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
