//! The delivery engine: runs each delivery as its own task through the attempt pipeline
//! (build → transform → sign → send → decide), bounded overall and per destination.
//!
//! Deliveries reach it two ways. Ingest hands freshly accepted deliveries over directly when
//! their destination has a free slot and nothing older is waiting in the store: they are
//! written already leased to this process, so no claim query ever reads them back. Everything
//! else (retries, deliveries that found their destination full, work left by a previous run)
//! is claimed from the store by the dispatcher loop in batches.
//!
//! Per-destination bounds are what keep a slow or black-holed receiver from delaying the
//! others: once a destination has its quota in flight, neither path starts more of its
//! deliveries until one finishes. Shutdown stops both paths, lets in-flight attempts finish
//! within a grace period, and hands back the leases of any that do not.

mod attempt;
pub mod client;
pub mod request;
pub mod retry;
pub mod sign;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::store::{ClaimBudget, ClaimedDelivery, Lease, Store};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
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

/// The engine's shared state: slots, leases held, the attempt tasks. Cloned handles go to
/// the dispatcher loop and to ingest.
pub struct Engine {
    context: Arc<DeliveryContext>,
    /// Notified when new deliveries are queued or a saturated destination frees a slot.
    wake: Notify,
    global: Arc<Semaphore>,
    per_destination_limit: usize,
    /// Slots in use per concurrency key.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Leases of running attempts, handed back if shutdown's grace runs out.
    leases: Mutex<HashMap<String, String>>,
    tasks: TaskTracker,
    /// Set while the store may hold due deliveries the dispatcher has not claimed yet. Ingest
    /// hands nothing over then, so new events do not overtake older ones or retries.
    store_has_due: AtomicBool,
}

/// The right to run one delivery now: a global permit and one of its destination's slots.
/// Dropping it frees both and wakes the dispatcher.
pub struct Slot {
    engine: Arc<Engine>,
    key: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.engine.in_flight.lock()
            && let Some(count) = counts.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
        self.engine.wake.notify_one();
    }
}

/// The least time between claims; bounds claims to a few hundred a second.
const CLAIM_COALESCE: Duration = Duration::from_millis(2);
/// A claim may hold this many times a destination's slot count again, waiting in memory.
const PREFETCH_FACTOR: usize = 1;

/// How far a deep claim scan looks past full destinations' backlogs, and how often.
const DEEP_SCAN_ROWS: usize = 50_000;
/// Deep scans start this often and back off to `DEEP_SCAN_MAX_INTERVAL` while they find
/// nothing (one full destination draining its own backlog), so they cost little then.
const DEEP_SCAN_INTERVAL: Duration = Duration::from_millis(25);
const DEEP_SCAN_MAX_INTERVAL: Duration = Duration::from_millis(200);

/// How long in-flight attempts may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Engine {
    pub fn new(context: Arc<DeliveryContext>) -> Arc<Self> {
        let delivery = &context.config.delivery;
        Arc::new(Engine {
            global: Arc::new(Semaphore::new(delivery.max_in_flight)),
            per_destination_limit: delivery.max_in_flight_per_destination,
            context,
            wake: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            // Until the first claim has looked, assume a previous run left work behind.
            store_has_due: AtomicBool::new(true),
        })
    }

    /// Lease length: long enough to outlive any attempt, short enough that a dead node's
    /// work comes back soon.
    fn lease_ms(&self) -> i64 {
        let config = &self.context.config;
        (config.retry.request_timeout_ms.max(120_000) + config.plugins.timeout_ms + 30_000) as i64
    }

    /// A lease for deliveries ingest is about to hand over.
    pub fn new_lease(&self) -> Lease {
        Lease {
            token: uuid::Uuid::new_v4().to_string(),
            until: crate::domain::now_millis() + self.lease_ms(),
        }
    }

    /// A slot for a delivery ingest wants to hand over, if its destination has room and
    /// nothing older is waiting in the store. `None` means: store it queued.
    pub fn slot_for_handoff(self: &Arc<Self>, key: &str) -> Option<Slot> {
        if self.tasks.is_closed() || self.store_has_due.load(Ordering::Acquire) {
            return None;
        }
        self.slot(key)
    }

    /// Ingest stored deliveries queued (no slot, or a hand-over it could not complete):
    /// the dispatcher must look before ingest hands anything over again.
    pub fn queued_in_store(&self) {
        self.store_has_due.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn slot(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut counts = self.in_flight.lock().ok()?;
        // Look up before inserting: the key is allocated only for a destination's first slot.
        match counts.get_mut(key) {
            Some(count) if *count >= self.per_destination_limit => return None,
            Some(count) => *count += 1,
            None => {
                counts.insert(key.to_owned(), 1);
            }
        }
        Some(Slot {
            engine: self.clone(),
            key: key.to_owned(),
            _permit: permit,
        })
    }

    /// Start the attempt for a leased delivery in its slot.
    pub fn start(self: &Arc<Self>, delivery: ClaimedDelivery, slot: Slot) {
        if self.tasks.is_closed() {
            // Shutdown has drained the engine: hand the lease back rather than send after
            // the store may be closed; the next start delivers it.
            drop(slot);
            let store = self.context.store.clone();
            tokio::spawn(async move {
                let lease = vec![(delivery.id, delivery.lease_token)];
                if let Err(error) = store.release(lease).await {
                    tracing::warn!(%error, "a delivery handed over during shutdown stays leased until restart");
                }
            });
            return;
        }
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(delivery.id.clone(), delivery.lease_token.clone());
        }
        let engine = self.clone();
        self.tasks.spawn(async move {
            let delivery_id = delivery.id.clone();
            // The slot is handed back as soon as the receiver has answered: the store
            // write that follows must not count against the receiver.
            attempt::run(&engine.context, delivery, move || drop(slot)).await;
            if let Ok(mut leases) = engine.leases.lock() {
                leases.remove(&delivery_id);
            }
        });
    }

    /// The dispatcher loop: claim due deliveries while there is room, until shutdown.
    ///
    /// A claim may take up to twice a destination's slot count: what does not fit waits in
    /// memory, leased, and starts the moment a slot frees, so a busy destination's slots
    /// never wait on a store round trip and one claim serves many completions. Claims are
    /// leased for two attempts' time, since a held delivery may wait one attempt for its
    /// slot; one held longer than that is handed back rather than started on a short lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let config = self.context.config.clone();
        let per_destination_limit = self.per_destination_limit;
        let held_limit = per_destination_limit.saturating_mul(1 + PREFETCH_FACTOR);
        let max_held = config
            .delivery
            .max_in_flight
            .saturating_mul(1 + PREFETCH_FACTOR);
        let mut ready = Ready::default();
        let mut store_failures = 0u32;
        let mut last_deep_scan = tokio::time::Instant::now();
        let mut deep_scan_interval = DEEP_SCAN_INTERVAL;
        let mut last_claim: Option<tokio::time::Instant> = None;
        let mut sleep_for = Duration::ZERO;
        while !shutdown.is_cancelled() {
            if !sleep_for.is_zero() || last_claim.is_some() {
                let woke = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => true,
                    _ = tokio::time::sleep(sleep_for) => false,
                };
                // A retry or a lease falls due now: ingest must not overtake it.
                if !woke {
                    self.store_has_due.store(true, Ordering::Release);
                }
            }
            let stale = self.start_ready(&mut ready);
            if !stale.is_empty()
                && let Err(error) = self.context.store.release(stale).await
            {
                tracing::warn!(%error, "releasing stale held deliveries failed; their leases will expire");
            }
            // Let a few more completions and new events arrive, so one claim serves many
            // instead of one store round trip per freed slot.
            let since_claim = last_claim.map(|at| at.elapsed());
            if let Some(since) = since_claim
                && since < CLAIM_COALESCE
            {
                sleep_for = CLAIM_COALESCE.saturating_sub(since);
                continue;
            }
            let running = self.running_counts();
            let held_now = running.values().sum::<usize>() + ready.total;
            let limit = config
                .delivery
                .claim_batch
                .min(max_held.saturating_sub(held_now));
            if limit == 0 {
                last_claim = Some(tokio::time::Instant::now());
                sleep_for = Duration::from_millis(50);
                continue;
            }
            let mut held = running;
            for (key, queue) in &ready.queues {
                *held.entry(key.clone()).or_default() += queue.len();
            }
            // Normally the oldest due rows are enough. When a destination is full, its
            // backlog can fill that window, so now and then look much deeper for others.
            let any_full = held.values().any(|count| *count >= held_limit);
            let deep = any_full && last_deep_scan.elapsed() >= deep_scan_interval;
            if deep {
                last_deep_scan = tokio::time::Instant::now();
            }
            let budget = ClaimBudget {
                in_flight: held,
                per_destination: held_limit,
                scan_rows: if deep { DEEP_SCAN_ROWS } else { limit * 2 },
            };
            let claim_started = crate::domain::now_millis();
            last_claim = Some(tokio::time::Instant::now());
            // Ingest may queue more while this claim runs; it sets the flag again then.
            // Held deliveries are older than anything ingest could hand over now.
            if ready.total == 0 {
                self.store_has_due.store(false, Ordering::Release);
            }
            let batch = match self
                .context
                .store
                .claim_due(limit, 2 * self.lease_ms(), budget)
                .await
            {
                Ok(batch) => {
                    store_failures = 0;
                    batch
                }
                Err(error) => {
                    self.store_has_due.store(true, Ordering::Release);
                    store_failures += 1;
                    tracing::error!(%error, "claiming deliveries failed");
                    sleep_for = Duration::from_millis(100 * u64::from(store_failures.min(50)));
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
            for delivery in batch.deliveries {
                let key = delivery.destination.concurrency_key();
                match self.slot(&key) {
                    Some(slot) => self.start(delivery, slot),
                    None => ready.push(key, delivery),
                }
            }
            let left_due =
                claimed == limit || batch.next_due_at.is_some_and(|due| due <= claim_started);
            if left_due || ready.total > 0 {
                self.store_has_due.store(true, Ordering::Release);
            }
            if claimed == limit {
                sleep_for = Duration::ZERO;
                last_claim = None; // more may be due right now
                continue;
            }
            let idle = Duration::from_millis(config.delivery.poll_interval_ms);
            // Something due is left although there was room: full destinations hold it.
            // Their completions wake us; polling faster would only spin.
            let blocked = batch.next_due_at.is_some_and(|due| due <= claim_started);
            sleep_for = if blocked {
                idle.min(deep_scan_interval)
            } else {
                batch
                    .next_due_at
                    .map(|due| {
                        Duration::from_millis((due - crate::domain::now_millis()).max(1) as u64)
                    })
                    .unwrap_or(idle)
                    .min(idle)
            };
        }
        // Deliveries waiting in memory never started: their leases go back at once.
        let waiting = ready.drain_leases();
        if !waiting.is_empty()
            && let Err(error) = self.context.store.release(waiting).await
        {
            tracing::warn!(%error, "releasing waiting deliveries failed; their leases will expire");
        }
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            let leases: Vec<(String, String)> = self
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
}

/// Claimed deliveries waiting in memory for a slot, per concurrency key, oldest first, with
/// when they were claimed.
#[derive(Default)]
struct Ready {
    queues: HashMap<String, VecDeque<(tokio::time::Instant, ClaimedDelivery)>>,
    total: usize,
}

impl Ready {
    fn push(&mut self, key: String, delivery: ClaimedDelivery) {
        self.queues
            .entry(key)
            .or_default()
            .push_back((tokio::time::Instant::now(), delivery));
        self.total += 1;
    }

    fn drain_leases(&mut self) -> Vec<(String, String)> {
        self.total = 0;
        self.queues
            .drain()
            .flat_map(|(_, queue)| queue)
            .map(|(_, delivery)| (delivery.id, delivery.lease_token))
            .collect()
    }
}

impl Engine {
    /// Start every waiting delivery whose destination now has a free slot; returns the
    /// leases of those held so long that less than one attempt's time is left on them.
    fn start_ready(self: &Arc<Self>, ready: &mut Ready) -> Vec<(String, String)> {
        let mut stale = Vec::new();
        if ready.total == 0 {
            return stale;
        }
        let max_wait = Duration::from_millis(self.lease_ms().max(0) as u64);
        for (key, queue) in ready.queues.iter_mut() {
            while let Some((claimed_at, _)) = queue.front() {
                if claimed_at.elapsed() >= max_wait {
                    if let Some((_, delivery)) = queue.pop_front() {
                        ready.total -= 1;
                        stale.push((delivery.id, delivery.lease_token));
                    }
                    continue;
                }
                let Some(slot) = self.slot(key) else { break };
                if let Some((_, delivery)) = queue.pop_front() {
                    ready.total -= 1;
                    self.start(delivery, slot);
                }
            }
        }
        ready.queues.retain(|_, queue| !queue.is_empty());
        stale
    }

    fn running_counts(&self) -> HashMap<String, usize> {
        self.in_flight
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }
}
