//! The overview's window on PostgreSQL: events counted on their `(created_at, id)` index;
//! deliveries bisected over `seq` to the window's first row (see `store::activity`), then
//! counted from there.

use super::PgStore;
use crate::domain::UnixMillis;
use crate::store::StoreError;
use crate::store::activity::{Activity, FirstSince};

impl PgStore {
    pub async fn activity_since(&self, since: UnixMillis) -> Result<Activity, StoreError> {
        let client = self.client().await?;
        let mut activity = Activity::default();
        let events = client
            .prepare_cached("SELECT count(*) FROM events WHERE created_at >= $1")
            .await?;
        let count: i64 = client.query_one(&events, &[&since]).await?.try_get(0)?;
        activity.events_accepted = u64::try_from(count).unwrap_or(0);

        let bounds = client
            .prepare_cached(
                "SELECT (SELECT min(seq) FROM deliveries), (SELECT max(seq) FROM deliveries)",
            )
            .await?;
        let row = client.query_one(&bounds, &[]).await?;
        let (lowest, highest): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        let (Some(lowest), Some(highest)) = (lowest, highest) else {
            return Ok(activity);
        };
        let at_or_after = client
            .prepare_cached(
                "SELECT seq, created_at FROM deliveries WHERE seq >= $1 ORDER BY seq LIMIT 1",
            )
            .await?;
        let mut search = FirstSince::new(since, lowest, highest);
        while let Some(probe) = search.probe() {
            let found = match client.query_opt(&at_or_after, &[&probe]).await? {
                Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
                None => None,
            };
            search.found(probe, found);
        }
        let by_status = client
            .prepare_cached(
                "SELECT status, count(*) FROM deliveries WHERE seq >= $1 GROUP BY status",
            )
            .await?;
        for row in client.query(&by_status, &[&search.first()]).await? {
            let (status, count): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            activity.add_deliveries(&status, u64::try_from(count).unwrap_or(0));
        }
        Ok(activity)
    }
}
