//! Destination-level reads and writes on SQLite: what waits for each destination, the
//! operators' pauses, and waking what a pause held back.

use super::SqliteStore;
use crate::domain::now_millis;
use crate::store::StoreError;
use rusqlite::params;

impl SqliteStore {
    /// Make due now the deliveries of `destination` a pause handed back (their last error
    /// starts with `reason_prefix`); returns how many.
    pub async fn wake_paused(
        &self,
        destination: String,
        reason_prefix: &'static str,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| {
            let now = now_millis();
            Ok(conn.execute(
                "UPDATE deliveries SET due_at = ?1 WHERE status IN ('queued', 'in_flight') \
                 AND dest_key = ?2 AND due_at > ?1 AND substr(last_error, 1, length(?3)) = ?3",
                params![now, destination, reason_prefix],
            )?)
        })
        .await
    }

    /// Record an operator's pause of `destination`, or its end.
    pub async fn set_operator_pause(
        &self,
        destination: String,
        paused: bool,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            match paused {
                true => conn.execute(
                    "INSERT OR IGNORE INTO destination_pauses (destination, paused_at) \
                     VALUES (?1, ?2)",
                    params![destination, now_millis()],
                )?,
                false => conn.execute(
                    "DELETE FROM destination_pauses WHERE destination = ?1",
                    [destination],
                )?,
            };
            Ok(())
        })
        .await
    }

    /// The destinations an operator has paused.
    pub async fn operator_pauses(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT destination FROM destination_pauses")?;
            let rows = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Deliveries queued or in flight, by destination (concurrency key).
    pub async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT dest_key, count(*) FROM deliveries \
                 WHERE status IN ('queued', 'in_flight') GROUP BY dest_key",
            )?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
