//! Retention: the background task that deletes finished work past its age, so the store
//! stops growing by every event, delivery and attempt.
//!
//! In: the store and `RetentionConfig`. Out: rows deleted through the store's two purge
//! verbs, counted in `hookgate_retention_deleted_rows_total` and logged once per sweep that
//! deleted anything (nothing when idle). Uses only `store` and `metrics`.
//!
//! Every `interval_ms` a sweep deletes what finished more than `max_age_ms` ago:
//! - finished deliveries (succeeded, failed, skipped) with their attempts, and the events
//!   they leave without any delivery, oldest first;
//! - events routed to no destination, found by a scan in acceptance order that resumes
//!   where the previous sweep stopped, so each event is looked at about once per process
//!   (a restart starts the scan from the first event again).
//!
//! Each batch is one short store transaction (on SQLite one job on the writer thread), and
//! the sweep pauses between batches as long as the batch took, so ingest, claims and
//! attempt records run in between and a sweep takes at most about half the store's time.
//! Queued and in-flight deliveries, the events they belong to, and saved configurations are
//! never deleted.

use crate::config::RetentionConfig;
use crate::domain::{UnixMillis, now_millis};
use crate::metrics::Metrics;
use crate::store::{EventCursor, PurgeCounts, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The shortest breather between two batches of one sweep. The pause is as long as the
/// batch took when that is longer, so a sweep holds the store (on SQLite, its one writer
/// thread) at most about half the time while other writers get it in between.
const MIN_BATCH_PAUSE: Duration = Duration::from_millis(5);

/// The retention loop's state.
pub struct Retention {
    store: Store,
    metrics: Arc<Metrics>,
    /// Finished work older than this is deleted.
    max_age_ms: u64,
    /// Time between sweeps.
    interval: Duration,
    /// Deliveries deleted, or events looked at, per batch.
    batch: usize,
    /// Where the scan for events without deliveries resumes.
    events_from: EventCursor,
}

/// What one sweep did: what it deleted, and the error that ended it early, if any.
#[derive(Debug, Default)]
pub struct Swept {
    pub deleted: PurgeCounts,
    pub error: Option<StoreError>,
}

impl Retention {
    /// `None` when retention is off (`max_age_ms` 0).
    pub fn new(store: Store, config: &RetentionConfig, metrics: Arc<Metrics>) -> Option<Self> {
        config.enabled().then(|| Retention {
            store,
            metrics,
            max_age_ms: config.max_age_ms,
            interval: Duration::from_millis(config.interval_ms),
            batch: config.batch,
            events_from: EventCursor::default(),
        })
    }

    /// Run sweeps in the background until `shutdown`; nothing when retention is off.
    pub fn start(
        store: &Store,
        config: &RetentionConfig,
        metrics: &Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        if let Some(retention) = Retention::new(store.clone(), config, metrics.clone()) {
            tokio::spawn(retention.run(shutdown));
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let swept = self.sweep(now_millis(), &shutdown).await;
            let PurgeCounts {
                deliveries,
                attempts,
                events,
            } = swept.deleted;
            match swept.error {
                // A store closed by shutdown is not worth a warning.
                Some(_) if shutdown.is_cancelled() => return,
                Some(error) => tracing::warn!(
                    %error,
                    deliveries,
                    attempts,
                    events,
                    "retention: sweep stopped by a store error; trying again next interval"
                ),
                None if swept.deleted.is_empty() => {}
                None => tracing::info!(
                    deliveries,
                    attempts,
                    events,
                    max_age_ms = self.max_age_ms,
                    "retention: deleted finished work"
                ),
            }
        }
    }

    /// Delete everything that finished before `now - max_age_ms`, batch by batch, until
    /// nothing is left or `shutdown` fires.
    pub async fn sweep(&mut self, now: UnixMillis, shutdown: &CancellationToken) -> Swept {
        let before_ms = now.saturating_sub(i64::try_from(self.max_age_ms).unwrap_or(i64::MAX));
        let mut swept = Swept::default();
        if let Err(error) = self
            .sweep_into(before_ms, shutdown, &mut swept.deleted)
            .await
        {
            swept.error = Some(error);
        }
        swept
    }

    async fn sweep_into(
        &mut self,
        before_ms: UnixMillis,
        shutdown: &CancellationToken,
        deleted: &mut PurgeCounts,
    ) -> Result<(), StoreError> {
        let full = self.batch as u64;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let batch = self.store.purge_finished(before_ms, self.batch).await?;
            self.count(batch);
            *deleted += batch;
            if batch.deliveries < full {
                break;
            }
            pause(started.elapsed()).await;
        }
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let scan = self
                .store
                .purge_events_without_deliveries(self.events_from.clone(), before_ms, self.batch)
                .await?;
            self.events_from = scan.next;
            let batch = PurgeCounts {
                events: scan.deleted,
                ..PurgeCounts::default()
            };
            self.count(batch);
            *deleted += batch;
            if scan.scanned < self.batch {
                break;
            }
            pause(started.elapsed()).await;
        }
        Ok(())
    }

    fn count(&self, batch: PurgeCounts) {
        for (table, rows) in [
            ("events", batch.events),
            ("deliveries", batch.deliveries),
            ("attempts", batch.attempts),
        ] {
            if rows > 0 {
                self.metrics
                    .retention_deleted
                    .get_or_create(&[("table", table)])
                    .inc_by(rows);
            }
        }
    }
}

/// Wait between two batches: as long as the last one took, and at least `MIN_BATCH_PAUSE`.
async fn pause(batch_took: Duration) {
    tokio::time::sleep(batch_took.max(MIN_BATCH_PAUSE)).await;
}
