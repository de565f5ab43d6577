//! Bulk replay: queue again, with fresh retry budgets, every finished delivery a search
//! matches (e.g. every failed delivery to a host since a time), as a job whose progress can
//! be read.
//!
//! A job walks the search's pages from the newest match back and queues each page's matches
//! in one durable write, so a job of any size holds one page in memory. It is bounded so it
//! cannot flood the queue: at most `max_deliveries` per job, and before each page it waits
//! while more than `limits.replay_queue_ceiling` deliveries are queued or in flight, so a
//! replay of a million feeds the engine as fast as it drains and no faster. Deliveries it
//! queued leave the search's status (they are `queued` now) and sit above its cursor, so a
//! replay never meets its own work again.
//!
//! Jobs live in the memory of the node that runs them: their progress is read from that node
//! (`GET /api/v1/deliveries/redeliver/{job_id}`), and a restart ends them where they were;
//! what they queued stays queued.

use crate::deliver::{Engine, Handover};
use crate::domain::{UnixMillis, now_millis};
use crate::store::{DeliveryFilter, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Deliveries queued per durable write.
const DELIVERIES_PER_WRITE: usize = 500;
/// How often a job waiting for the queue to drain looks again.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Finished jobs kept for reading; the oldest are forgotten past this.
const KEPT_JOBS: usize = 100;

/// Where a job stands, as `GET /api/v1/deliveries/redeliver/{job_id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayJob {
    pub id: String,
    /// `running`, `done`, `failed` (the store failed; `error` says how) or `stopped` (the
    /// node shut down).
    pub state: &'static str,
    /// The search, as given.
    pub filter: serde_json::Value,
    pub max_deliveries: usize,
    pub dry_run: bool,
    /// Deliveries the search matched so far (for a dry run, all it would queue).
    pub matched: usize,
    /// Of those, queued again.
    pub queued: usize,
    /// Times the job waited for the queue to drain below the ceiling.
    pub waits: u64,
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub started_at: UnixMillis,
    #[serde(serialize_with = "crate::domain::serialize_optional_iso_millis")]
    pub finished_at: Option<UnixMillis>,
    pub error: Option<String>,
}

/// The jobs this node runs and has run.
pub struct Replays {
    store: Store,
    engine: Arc<Engine>,
    scan_rows: usize,
    queue_ceiling: u64,
    jobs: Mutex<BTreeMap<String, ReplayJob>>,
    shutdown: CancellationToken,
}

/// What a job is asked to do.
pub struct ReplayRequest {
    pub filter: DeliveryFilter,
    /// The filter as the caller wrote it, echoed in the job.
    pub described: serde_json::Value,
    pub max_deliveries: usize,
    pub dry_run: bool,
}

impl Replays {
    pub fn new(
        store: Store,
        engine: Arc<Engine>,
        scan_rows: usize,
        queue_ceiling: u64,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Replays {
            store,
            engine,
            scan_rows,
            queue_ceiling,
            jobs: Mutex::new(BTreeMap::new()),
            shutdown,
        })
    }

    /// Start a job in the background; returns it as it starts, or the id of the job still
    /// running: one runs at a time, so two cannot both fill the queue up to its ceiling or queue a
    /// delivery twice.
    pub fn start(self: &Arc<Self>, request: ReplayRequest) -> Result<ReplayJob, String> {
        if let Some(running) = self.jobs.lock().ok().and_then(|jobs| {
            jobs.values()
                .find(|job| job.finished_at.is_none())
                .map(|job| job.id.clone())
        }) {
            return Err(running);
        }
        // Time-ordered ids, so the listing's order is the jobs' order.
        let id = uuid::Uuid::now_v7().to_string();
        let job = ReplayJob {
            id: id.clone(),
            state: "running",
            filter: request.described.clone(),
            max_deliveries: request.max_deliveries,
            dry_run: request.dry_run,
            matched: 0,
            queued: 0,
            waits: 0,
            started_at: now_millis(),
            finished_at: None,
            error: None,
        };
        self.update(&id, |jobs| {
            jobs.insert(id.clone(), job.clone());
        });
        let replays = self.clone();
        tokio::spawn(async move {
            let ended = replays.run(&id, &request).await;
            replays.update(&id, |jobs| {
                if let Some(job) = jobs.get_mut(&id) {
                    job.finished_at = Some(now_millis());
                    match ended {
                        Ok(true) => job.state = "done",
                        Ok(false) => job.state = "stopped",
                        Err(error) => {
                            tracing::warn!(job_id = %id, %error, "bulk replay failed");
                            job.state = "failed";
                            job.error =
                                Some("the store failed; what was queued stays queued".to_owned());
                        }
                    }
                    tracing::info!(
                        job_id = %id,
                        state = job.state,
                        matched = job.matched,
                        queued = job.queued,
                        "bulk replay ended"
                    );
                }
            });
        });
        Ok(job)
    }

    pub fn job(&self, id: &str) -> Option<ReplayJob> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    /// Every job kept, newest first.
    pub fn jobs(&self) -> Vec<ReplayJob> {
        self.jobs
            .lock()
            .map(|jobs| jobs.values().rev().cloned().collect())
            .unwrap_or_default()
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut BTreeMap<String, ReplayJob>)) {
        let mut jobs = match self.jobs.lock() {
            Ok(jobs) => jobs,
            Err(poisoned) => poisoned.into_inner(),
        };
        change(&mut jobs);
        // Forget the oldest finished jobs; a running one is never dropped.
        while jobs.len() > KEPT_JOBS {
            let oldest_finished = jobs
                .iter()
                .find(|(other, job)| job.finished_at.is_some() && other.as_str() != id)
                .map(|(other, _)| other.clone());
            match oldest_finished {
                Some(other) => {
                    jobs.remove(&other);
                }
                None => break,
            }
        }
    }

    /// Walk the matches and queue them page by page. `Ok(false)` when stopped by shutdown.
    async fn run(&self, id: &str, request: &ReplayRequest) -> Result<bool, StoreError> {
        let mut cursor = None;
        let mut matched = 0usize;
        loop {
            let room = request.max_deliveries - matched;
            if room == 0 {
                return Ok(true);
            }
            if !request.dry_run && !self.wait_for_room(id).await? {
                return Ok(false);
            }
            let page = self
                .store
                .search_deliveries(
                    &request.filter,
                    DELIVERIES_PER_WRITE.min(room),
                    cursor,
                    self.scan_rows,
                )
                .await?;
            let ids: Vec<_> = page.items.into_iter().map(|view| view.id).collect();
            matched += ids.len();
            let queued = match (request.dry_run, ids.is_empty()) {
                (false, false) => {
                    let queued = self.store.redeliver_many(ids.clone()).await?;
                    // The dispatcher claims them now rather than at its next poll.
                    self.engine.committed(Handover::requeued(), &[]);
                    queued
                }
                _ => 0,
            };
            self.update(id, |jobs| {
                if let Some(job) = jobs.get_mut(id) {
                    job.matched = matched;
                    job.queued += queued;
                }
            });
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(true),
            }
            if self.shutdown.is_cancelled() {
                return Ok(false);
            }
        }
    }

    /// Wait until the queue holds at most the ceiling. `Ok(false)` when shutdown came first.
    async fn wait_for_room(&self, id: &str) -> Result<bool, StoreError> {
        loop {
            if self.store.queue_depth().await? <= self.queue_ceiling {
                return Ok(true);
            }
            self.update(id, |jobs| {
                if let Some(job) = jobs.get_mut(id) {
                    job.waits += 1;
                }
            });
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(DRAIN_POLL) => {}
            }
        }
    }
}
