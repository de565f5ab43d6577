//! Destination-level reads and writes on PostgreSQL: what waits for each destination, the
//! operators' pauses (read by every node at its heartbeat), and waking what a pause held
//! back.

use super::cluster::notify_queued;
use super::{DURABLE_COMMIT, PgStore};
use crate::domain::now_millis;
use crate::store::StoreError;

impl PgStore {
    /// Make due now the deliveries of `destination` a pause handed back (their last error
    /// starts with `reason_prefix`); returns how many.
    pub async fn wake_paused(
        &self,
        destination: String,
        reason_prefix: &'static str,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let wake = client
            .prepare_cached(
                "UPDATE deliveries SET due_at = $1 WHERE status = 'queued' AND dest_key = $2 \
                 AND due_at > $1 AND starts_with(last_error, $3)",
            )
            .await?;
        let woken = client
            .execute(&wake, &[&now_millis(), &destination, &reason_prefix])
            .await?;
        if woken > 0 {
            notify_queued(&client, &self.inner.origin).await?;
        }
        Ok(usize::try_from(woken).unwrap_or(usize::MAX))
    }

    /// Record an operator's pause of `destination`, or its end.
    pub async fn set_operator_pause(
        &self,
        destination: String,
        paused: bool,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
        transaction.execute(&durable, &[]).await?;
        if paused {
            let pause = transaction
                .prepare_cached(
                    "INSERT INTO destination_pauses (destination, paused_at) VALUES ($1, $2) \
                     ON CONFLICT (destination) DO NOTHING",
                )
                .await?;
            transaction
                .execute(&pause, &[&destination, &now_millis()])
                .await?;
        } else {
            let resume = transaction
                .prepare_cached("DELETE FROM destination_pauses WHERE destination = $1")
                .await?;
            transaction.execute(&resume, &[&destination]).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The destinations an operator has paused.
    pub async fn operator_pauses(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let list = client
            .prepare_cached("SELECT destination FROM destination_pauses")
            .await?;
        Ok(client
            .query(&list, &[])
            .await?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?)
    }

    /// Deliveries queued or in flight, by destination (concurrency key).
    pub async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(
                "SELECT dest_key, count(*) FROM deliveries \
                 WHERE status IN ('queued', 'in_flight') GROUP BY dest_key",
            )
            .await?;
        Ok(client
            .query(&count, &[])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<_, String>(0)?,
                    u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?)
    }
}
