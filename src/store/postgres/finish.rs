//! Recording attempts on PostgreSQL: group commit (see `group`) of `finish_attempt`.
//!
//! Each finish moves its delivery on (done, rescheduled or dead-lettered) and records the
//! attempt in its row (migration 4), guarded by the delivery id and lease token: a finish whose lease was lost
//! changes nothing and answers false. A group is one statement over `unnest`ed columns, in
//! a transaction that commits without waiting for the WAL flush (see `RELAXED_COMMIT`).
//! Measured (claims of 256 finished together, local server, debug build): one transaction
//! per finish drained 4.6k deliveries/s, grouped 12k/s (`throughput` in
//! tests/store_postgres.rs).

use super::group::GroupWrite;
use super::{PgStore, RELAXED_COMMIT, count_to_store, parse_id};
use crate::domain::{Attempt, DeliveryId, DeliveryStatus, LeaseToken, UnixMillis, now_millis};
use crate::store::{AttemptOutcome, StoreError};
use deadpool_postgres::Pool;
use std::collections::HashSet;
use uuid::Uuid;

/// Group-commit writers of attempt results.
pub(super) const WRITERS: usize = 2;

/// Move each delivery whose lease is still the one given, record its attempt in the row
/// (the attempt before it, when there was one, goes to `attempts`), and return the moved
/// pairs. Every part reads the rows as they were before the statement, so `previous` sees
/// the attempt that `moved` replaces; a writer between the two would have changed or
/// cleared the lease token, so `moved` then skips the row. A history record of that number
/// already there is kept (see migration 4 on older nodes).
const FINISH: &str = "WITH input AS ( \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int4[], \
             $6::text[], $7::int8[], $8::int8[], $9::int4[], $10::text[], $12::text[]) \
         AS i(id, lease_token, status, due_at, number, error, started_at, duration_ms, \
             response_status, response_body, exchange)), \
     moved AS ( \
         UPDATE deliveries d SET status = i.status, due_at = i.due_at, attempts = i.number, \
             last_error = i.error, updated_at = $11, lease_token = NULL, \
             latest_number = i.number, latest_started_at = i.started_at, \
             latest_duration_ms = i.duration_ms, latest_status = i.response_status, \
             latest_error = i.error, latest_body = i.response_body, \
             latest_exchange = i.exchange \
         FROM input i WHERE d.id = i.id AND d.lease_token = i.lease_token \
         RETURNING d.id, i.lease_token), \
     previous AS ( \
         SELECT d.id, d.latest_number, d.latest_started_at, d.latest_duration_ms, \
             d.latest_status, d.latest_error, d.latest_body, d.latest_exchange \
         FROM deliveries d JOIN input i ON d.id = i.id AND d.lease_token = i.lease_token \
         WHERE d.latest_number < i.number), \
     recorded AS ( \
         INSERT INTO attempts (delivery_id, number, started_at, duration_ms, response_status, \
             error, response_body, exchange) \
         SELECT p.id, p.latest_number, p.latest_started_at, p.latest_duration_ms, \
             p.latest_status, p.latest_error, p.latest_body, p.latest_exchange \
         FROM previous p JOIN moved m ON m.id = p.id \
         ON CONFLICT (delivery_id, number) DO NOTHING) \
     SELECT id, lease_token FROM moved";

/// One attempt's result, ready for the statement.
pub(super) struct FinishRow {
    id: Uuid,
    lease_token: Uuid,
    status: DeliveryStatus,
    due_at: UnixMillis,
    attempt: Attempt,
    /// `attempt.exchange` as stored.
    exchange: Option<String>,
}

impl PgStore {
    pub async fn finish_attempt(
        &self,
        delivery_id: DeliveryId,
        lease_token: LeaseToken,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        // A token or id that does not parse cannot be the lease on record.
        let (Some(id), Some(lease_token)) = (parse_id(&delivery_id), parse_id(&lease_token)) else {
            return Ok(false);
        };
        let now = now_millis();
        let (status, due_at) = outcome.next_state(now);
        let mut attempt = attempt;
        // A receiver's body or a plugin's error may hold NUL, which PostgreSQL's text cannot:
        // the record would fail to write and the delivery be sent again forever.
        for text in [&mut attempt.response_body, &mut attempt.error]
            .into_iter()
            .flatten()
        {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{FFFD}");
            }
        }
        let row = FinishRow {
            id,
            lease_token,
            status,
            due_at,
            exchange: attempt
                .exchange
                .as_ref()
                .map(|exchange| exchange.to_stored(attempt.number)),
            attempt,
        };
        self.inner.finishes.submit(row).await
    }
}

/// The group-commit kind for attempt results.
pub(super) struct Finish;

impl GroupWrite for Finish {
    type Input = FinishRow;
    /// Whether the lease was still held, so the result was recorded.
    type Output = bool;
    const KIND: &'static str = "finish";
    const MAX_ITEMS: usize = 1024;
    /// Response bodies and errors are kept short by the engine; this bounds the statement.
    const MAX_BYTES: usize = 16 << 20;

    fn size(row: &FinishRow) -> (usize, usize) {
        let attempt = &row.attempt;
        let bytes = attempt.error.as_ref().map_or(0, String::len)
            + attempt.response_body.as_ref().map_or(0, String::len)
            + row.exchange.as_ref().map_or(0, String::len);
        (1, bytes)
    }

    async fn write(
        pool: &Pool,
        _origin: &str,
        rows: &[&FinishRow],
    ) -> Result<Vec<bool>, StoreError> {
        let mut client = pool.get().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(RELAXED_COMMIT).await?;
        let finish = transaction.prepare_cached(FINISH).await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let tokens: Vec<Uuid> = rows.iter().map(|row| row.lease_token).collect();
        let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
        let due_at: Vec<UnixMillis> = rows.iter().map(|row| row.due_at).collect();
        let numbers: Vec<i32> = rows
            .iter()
            .map(|row| count_to_store(row.attempt.number))
            .collect();
        let errors: Vec<Option<&str>> = rows
            .iter()
            .map(|row| row.attempt.error.as_deref())
            .collect();
        let started_at: Vec<UnixMillis> = rows.iter().map(|row| row.attempt.started_at).collect();
        let durations: Vec<i64> = rows
            .iter()
            .map(|row| i64::try_from(row.attempt.duration_ms).unwrap_or(i64::MAX))
            .collect();
        let statuses_received: Vec<Option<i32>> = rows
            .iter()
            .map(|row| row.attempt.response_status.map(i32::from))
            .collect();
        let bodies: Vec<Option<&str>> = rows
            .iter()
            .map(|row| row.attempt.response_body.as_deref())
            .collect();
        let exchanges: Vec<Option<&str>> = rows.iter().map(|row| row.exchange.as_deref()).collect();
        let moved: HashSet<(Uuid, Uuid)> = transaction
            .query(
                &finish,
                &[
                    &ids,
                    &tokens,
                    &statuses,
                    &due_at,
                    &numbers,
                    &errors,
                    &started_at,
                    &durations,
                    &statuses_received,
                    &bodies,
                    &now_millis(),
                    &exchanges,
                ],
            )
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        transaction.commit().await?;
        Ok(rows
            .iter()
            .map(|row| moved.contains(&(row.id, row.lease_token)))
            .collect())
    }
}
