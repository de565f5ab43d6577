//! The delivery engine: a dispatcher claims due deliveries from the store in batches and
//! runs each as its own task through the attempt pipeline (build → transform → sign → send
//! → decide), bounded overall and per destination.
//!
//! Per-destination bounds are what keep a slow or black-holed receiver from delaying the
//! others: once a destination has its quota in flight, the dispatcher stops claiming its
//! deliveries until one finishes. Shutdown stops claiming, lets in-flight attempts finish
//! within a grace period, and hands back the leases of any that do not.

mod attempt;
pub mod client;
pub mod request;
pub mod retry;
pub mod sign;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::store::{ClaimBudget, ClaimedDelivery, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything an attempt needs, shared by all of them.
pub struct DeliveryContext {
    pub store: Store,
    pub client: client::HttpClient,
    pub plugins: PluginHost,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

pub struct Engine {
    context: Arc<DeliveryContext>,
    /// Notified when new deliveries are queued or a saturated destination frees a slot.
    wake: Arc<Notify>,
    in_flight: Arc<InFlight>,
}

/// Claimed deliveries currently held by this process.
#[derive(Default)]
struct InFlight {
    per_destination: Mutex<HashMap<String, usize>>,
    leases: Mutex<HashMap<String, String>>,
}

/// The pause after a wake-up before claiming; bounds claims to a few hundred a second.
const CLAIM_COALESCE: Duration = Duration::from_millis(2);

/// How far a deep claim scan looks past full destinations' backlogs, and how often.
const DEEP_SCAN_ROWS: usize = 50_000;
/// Deep scans start this often and back off to `DEEP_SCAN_MAX_INTERVAL` while they find
/// nothing (one full destination draining its own backlog), so they cost little then.
const DEEP_SCAN_INTERVAL: Duration = Duration::from_millis(25);
const DEEP_SCAN_MAX_INTERVAL: Duration = Duration::from_millis(200);

/// How long in-flight attempts may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Engine {
    pub fn new(context: Arc<DeliveryContext>, wake: Arc<Notify>) -> Self {
        Engine {
            context,
            wake,
            in_flight: Arc::new(InFlight::default()),
        }
    }

    /// Lease length: long enough to outlive any attempt, short enough that a dead node's
    /// work comes back soon.
    fn lease_ms(&self) -> i64 {
        let config = &self.context.config;
        (config.retry.request_timeout_ms.max(120_000) + config.plugins.timeout_ms + 30_000) as i64
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.context.config.clone();
        let global = Arc::new(Semaphore::new(config.delivery.max_in_flight));
        let per_destination_limit = config.delivery.max_in_flight_per_destination;
        let tasks = TaskTracker::new();
        let mut store_failures = 0u32;
        let mut last_deep_scan = tokio::time::Instant::now();
        let mut deep_scan_interval = DEEP_SCAN_INTERVAL;
        while !shutdown.is_cancelled() {
            let free = global.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            let limit = free.min(config.delivery.claim_batch);
            let in_flight = self
                .in_flight
                .per_destination
                .lock()
                .map(|counts| counts.clone())
                .unwrap_or_default();
            // Normally the oldest due rows are enough. When a destination is full, its
            // backlog can fill that window, so now and then look much deeper for others.
            let any_full = in_flight
                .values()
                .any(|count| *count >= per_destination_limit);
            let deep = any_full && last_deep_scan.elapsed() >= deep_scan_interval;
            if deep {
                last_deep_scan = tokio::time::Instant::now();
            }
            let budget = ClaimBudget {
                in_flight,
                per_destination: per_destination_limit,
                scan_rows: if deep { DEEP_SCAN_ROWS } else { limit * 2 },
            };
            let claim_started = crate::domain::now_millis();
            let batch = match self
                .context
                .store
                .claim_due(limit, self.lease_ms(), budget)
                .await
            {
                Ok(batch) => {
                    store_failures = 0;
                    batch
                }
                Err(error) => {
                    store_failures += 1;
                    tracing::error!(%error, "claiming deliveries failed");
                    let wait = Duration::from_millis(100 * u64::from(store_failures.min(50)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            let claimed = batch.deliveries.len();
            if deep {
                deep_scan_interval = if claimed == 0 {
                    (deep_scan_interval * 2).min(DEEP_SCAN_MAX_INTERVAL)
                } else {
                    DEEP_SCAN_INTERVAL
                };
            }
            let mut over_limit = Vec::new();
            for delivery in batch.deliveries {
                let key = delivery.destination.concurrency_key();
                if !self.reserve(&key, &delivery, per_destination_limit) {
                    over_limit.push((delivery.id, delivery.lease_token));
                    continue;
                }
                let Ok(permit) = global.clone().try_acquire_owned() else {
                    self.unreserve(&key, &delivery.id);
                    over_limit.push((delivery.id, delivery.lease_token));
                    continue;
                };
                let context = self.context.clone();
                let in_flight = self.in_flight.clone();
                let wake = self.wake.clone();
                tasks.spawn(async move {
                    let delivery_id = delivery.id.clone();
                    // The slot is handed back as soon as the receiver has answered: the
                    // store write that follows must not count against the receiver.
                    let slot_in_use = (permit, in_flight.clone(), key, wake);
                    attempt::run(&context, delivery, move || {
                        let (permit, in_flight, key, wake) = slot_in_use;
                        drop(permit);
                        in_flight.release_slot(&key);
                        wake.notify_one();
                    })
                    .await;
                    in_flight.forget_lease(&delivery_id);
                });
            }
            let released = over_limit.len();
            if !over_limit.is_empty()
                && let Err(error) = self.context.store.release(over_limit).await
            {
                tracing::warn!(%error, "releasing over-limit claims failed; their leases will expire");
            }
            if claimed == limit && released < claimed {
                continue; // more may be due right now
            }
            let idle = Duration::from_millis(config.delivery.poll_interval_ms);
            // Nothing claimable although something is due: full destinations hold it.
            // Their completions wake us; polling faster would only spin.
            let blocked =
                claimed == released && batch.next_due_at.is_some_and(|due| due <= claim_started);
            let idle = if blocked {
                idle.min(deep_scan_interval)
            } else {
                idle
            };
            let until_due = batch
                .next_due_at
                .filter(|_| !blocked)
                .map(|due| Duration::from_millis((due - crate::domain::now_millis()).max(1) as u64))
                .unwrap_or(idle)
                .min(idle);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {
                    // Let a few more completions and new events arrive, so one claim
                    // serves many instead of one store round trip per freed slot.
                    tokio::time::sleep(CLAIM_COALESCE).await;
                }
                _ = tokio::time::sleep(until_due) => {}
            }
        }
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            let leases: Vec<(String, String)> = self
                .in_flight
                .leases
                .lock()
                .map(|leases| {
                    leases
                        .iter()
                        .map(|(id, token)| (id.clone(), token.clone()))
                        .collect()
                })
                .unwrap_or_default();
            tracing::warn!(
                unfinished = leases.len(),
                "shutdown grace over; releasing leases"
            );
            if let Err(error) = self.context.store.release(leases).await {
                tracing::error!(%error, "releasing leases at shutdown failed; they will expire");
            }
        }
    }

    fn reserve(&self, key: &str, delivery: &ClaimedDelivery, limit: usize) -> bool {
        let Ok(mut counts) = self.in_flight.per_destination.lock() else {
            return false;
        };
        let count = counts.entry(key.to_owned()).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        if let Ok(mut leases) = self.in_flight.leases.lock() {
            leases.insert(delivery.id.clone(), delivery.lease_token.clone());
        }
        true
    }

    fn unreserve(&self, key: &str, delivery_id: &str) {
        self.in_flight.release_slot(key);
        self.in_flight.forget_lease(delivery_id);
    }
}

impl InFlight {
    fn release_slot(&self, key: &str) {
        if let Ok(mut counts) = self.per_destination.lock()
            && let Some(count) = counts.get_mut(key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(key);
            }
        }
    }

    fn forget_lease(&self, delivery_id: &str) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(delivery_id);
        }
    }
}
