//! The delivery engine: runs each delivery as its own task through the attempt pipeline
//! (build → transform → normalise headers → sign, in `prepare`, which the console's
//! playground runs too; then send → decide), bounded overall and per destination.
//!
//! Deliveries reach it two ways, both through the store. Ingest asks [`Engine::reserve`]
//! before it commits: a fresh delivery whose destination has a free slot, while nothing
//! older of that destination is due in the store (see `due`), is written already leased to
//! this process, and
//! [`Engine::committed`] starts it once the commit is done, so no claim ever reads it back.
//! Everything else (retries, deliveries that found their destination full, redeliveries,
//! work left by a previous run) is claimed from the store by the [`Dispatcher`].
//!
//! Per-destination bounds are what keep a slow or black-holed receiver from delaying the
//! others: once a destination has its quota in flight, neither path starts more of its
//! deliveries until one finishes. Shutdown stops both paths, lets in-flight attempts finish
//! within a grace period, and hands back the leases of any that do not.

mod attempt;
pub mod breaker;
pub mod client;
mod dispatcher;
mod due;
pub mod feed;
pub mod health;
mod pauses;
pub mod prepare;
pub mod rate;
pub mod request;
pub mod retry;
pub mod sign;

pub use dispatcher::{Dispatcher, Stepped};

use crate::config::Config;
use crate::domain::{DeliveryId, LeaseToken};
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::store::{ClaimedDelivery, Lease, LiveNodes, NewEvent, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Finished attempts, for whoever watches them live.
    pub feed: feed::AttemptFeed,
    /// Each destination's recent attempts, for `GET /api/v1/destinations`.
    pub health: Arc<health::DestinationHealth>,
    /// Per-host request rates an attempt waits for.
    pub rates: Arc<rate::RateLimits>,
    /// Each destination's circuit breaker.
    pub breakers: Arc<breaker::Breakers>,
}

/// The engine's shared state: slots, leases held, the attempt tasks. Shared by the
/// dispatcher and by ingest.
pub struct Engine {
    context: Arc<DeliveryContext>,
    /// Notified when new deliveries are queued or a saturated destination frees a slot.
    wake: Notify,
    global: Arc<Semaphore>,
    /// This process's share of each destination's cap: the whole cap when it runs alone,
    /// the cap divided among the live nodes of a cluster (see `set_live_nodes`).
    per_destination_limit: AtomicUsize,
    /// Whether other live nodes share the store, as of the last heartbeat.
    clustered: AtomicBool,
    /// Slots in use per concurrency key.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Every lease this process holds: running attempts and deliveries waiting in memory
    /// for a slot. The renewal task extends them; shutdown hands back what is left.
    leases: Mutex<HashMap<DeliveryId, LeaseToken>>,
    tasks: TaskTracker,
    /// Due deliveries the dispatcher has not claimed yet, by destination. Ingest hands over
    /// nothing to those destinations then, so new events do not overtake older ones or
    /// retries.
    due: due::DueWork,
    /// Held across an operator's pause or resume (store, then memory) and across the
    /// heartbeat's sync (read, then apply), so neither undoes the other half-done.
    operator_pauses: tokio::sync::Mutex<()>,
}

/// The right to run one delivery now: a global permit and one of its destination's slots.
/// Dropping it frees both and wakes the dispatcher.
struct Slot {
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

/// What [`Engine::reserve`] set aside for a batch of events about to be committed: per
/// event, the deliveries to start with their slots, and the destinations of those stored
/// queued.
/// Give it back to [`Engine::committed`] once the commit is done; dropped instead, its slots
/// free and the leased deliveries are claimed again when their lease ends.
#[derive(Default)]
pub struct Handover {
    events: Vec<EventHandover>,
    /// Destinations of the deliveries stored queued.
    queued: Vec<String>,
    /// Deliveries were queued whose destinations are not known here.
    requeued: bool,
}

#[derive(Default)]
struct EventHandover {
    started: Vec<(ClaimedDelivery, Slot)>,
}

impl Handover {
    /// For deliveries put back in the queue outside ingest (redelivery): nothing to start,
    /// but the dispatcher must look.
    pub fn requeued() -> Self {
        Handover {
            requeued: true,
            ..Handover::default()
        }
    }
}

/// How long in-flight attempts may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Engine {
    pub fn new(context: Arc<DeliveryContext>) -> Arc<Self> {
        let delivery = &context.config.delivery;
        Arc::new(Engine {
            global: Arc::new(Semaphore::new(delivery.max_in_flight)),
            per_destination_limit: AtomicUsize::new(delivery.max_in_flight_per_destination),
            clustered: AtomicBool::new(false),
            context,
            wake: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            due: due::DueWork::new(),
            operator_pauses: tokio::sync::Mutex::new(()),
        })
    }

    /// Attempts that could start now, as far as the global bound goes.
    fn free_slots(&self) -> usize {
        self.global.available_permits()
    }

    /// Whether other live nodes share the store.
    fn clustered(&self) -> bool {
        self.clustered.load(Ordering::Relaxed)
    }

    /// An operator's pause of `destination` (a concurrency key), until resumed; false when
    /// it was paused by an operator already.
    pub async fn pause_destination(&self, destination: &str) -> Result<bool, StoreError> {
        let _turn = self.operator_pauses.lock().await;
        self.context
            .store
            .set_operator_pause(destination, true)
            .await?;
        Ok(match self.context.breakers.pause(destination) {
            Some(change) => {
                pauses::announce(&self.context, destination, change).await;
                true
            }
            None => false,
        })
    }

    /// An operator's resume of `destination`'s pause, whoever paused it; false when it was
    /// not paused. Its deliveries go out as they come due again.
    pub async fn resume_destination(
        self: &Arc<Self>,
        destination: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.operator_pauses.lock().await;
        self.context
            .store
            .set_operator_pause(destination, false)
            .await?;
        Ok(match self.context.breakers.resume(destination) {
            Some(change) => {
                pauses::announce(&self.context, destination, change).await;
                self.committed(Handover::requeued(), &[]);
                true
            }
            None => false,
        })
    }

    /// Take up the operators' pauses the store holds (set through any node, or before a
    /// restart). The node that took the call announced it; here it is only logged.
    pub async fn sync_operator_pauses(self: &Arc<Self>) -> Result<(), StoreError> {
        let _turn = self.operator_pauses.lock().await;
        let paused: std::collections::HashSet<String> = self
            .context
            .store
            .operator_pauses()
            .await?
            .into_iter()
            .collect();
        let (newly, resumed) = self.context.breakers.sync_operator_pauses(&paused);
        for destination in &newly {
            tracing::info!(%destination, "destination paused by an operator (through another node, or before a restart)");
        }
        for destination in &resumed {
            tracing::info!(%destination, "destination resumed by an operator through another node");
            // This node may have handed deliveries back again after the resume and before
            // it heard of it: they are due now too.
            if let Err(error) = self
                .context
                .store
                .wake_paused(destination, pauses::PAUSED_REASON_PREFIX)
                .await
            {
                tracing::warn!(%destination, %error, "waking deliveries held by a pause failed; they go when they come due");
            }
        }
        if !resumed.is_empty() {
            self.committed(Handover::requeued(), &[]);
        }
        Ok(())
    }

    /// The destinations paused now.
    pub fn paused_destinations(&self) -> HashMap<String, breaker::PauseView> {
        self.context.breakers.paused()
    }

    /// Attempts running now per destination (concurrency key).
    pub fn running_by_destination(&self) -> HashMap<String, usize> {
        self.in_flight
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.context
            .config
            .delivery
            .max_in_flight
            .saturating_sub(self.global.available_permits())
    }

    /// How many attempts this process may run at once to one destination.
    pub fn destination_share(&self) -> usize {
        self.per_destination_limit.load(Ordering::Relaxed)
    }

    /// `live.count` processes share the store: each takes its part of every destination's
    /// cap, the cap divided evenly with the remainder going to the first started, so the
    /// parts add up to the cap (a node past the cap's count gets none).
    pub fn set_live_nodes(&self, live: LiveNodes) {
        let cap = self.context.config.delivery.max_in_flight_per_destination;
        let nodes = live.count.max(1);
        self.context.rates.set_live_nodes(nodes);
        let share = cap / nodes + usize::from(live.rank < cap % nodes);
        self.clustered.store(nodes > 1, Ordering::Relaxed);
        if self.per_destination_limit.swap(share, Ordering::Relaxed) != share {
            tracing::info!(
                nodes,
                rank = live.rank,
                share,
                cap,
                "per-destination share changed"
            );
            self.wake.notify_one();
        }
    }

    /// Lease length: renewed while held (see `renew_leases`), so it only has to outlast a
    /// few missed renewals, and a dead process's deliveries come back this soon.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.context.config.delivery.lease_ms).unwrap_or(i64::MAX)
    }

    /// Record a lease this process now holds (claimed, handed over, or started).
    fn hold_lease(&self, delivery_id: &DeliveryId, lease_token: &LeaseToken) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(delivery_id.clone(), lease_token.clone());
        }
    }

    /// Forget a lease this process no longer holds. Only that lease: if the delivery was
    /// claimed again since (its lease had run out), the newer one stays.
    fn drop_lease(&self, delivery_id: &DeliveryId, lease_token: &LeaseToken) {
        if let Ok(mut leases) = self.leases.lock()
            && leases.get(delivery_id) == Some(lease_token)
        {
            leases.remove(delivery_id);
        }
    }

    fn held_leases(&self) -> Vec<(DeliveryId, LeaseToken)> {
        self.leases
            .lock()
            .map(|leases| {
                leases
                    .iter()
                    .map(|(id, token)| (id.clone(), token.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Extend every lease held, each quarter of the lease, until `stop`. A task of its own,
    /// so neither a slow claim nor shutdown's drain holds renewals up.
    async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_millis(self.context.config.delivery.lease_ms / 4);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let leases = self.held_leases();
            if leases.is_empty() {
                continue;
            }
            let asked = leases.len();
            let until = crate::domain::now_millis() + self.lease_ms();
            match self.context.store.renew_leases(leases, until).await {
                Ok(renewed) if renewed < asked => tracing::debug!(
                    lost = asked - renewed,
                    "some leases ended, were taken over or are being written; not renewed"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "renewing leases failed; they may expire and be sent again")
                }
            }
        }
    }

    /// Before `events` are committed: lease every delivery whose destination has a free slot
    /// (so it is stored in flight) while nothing older of that destination is due.
    pub fn reserve(self: &Arc<Self>, events: &mut [NewEvent]) -> Handover {
        let mut lease: Option<Lease> = None;
        let mut handover = Handover::default();
        for event in events.iter_mut() {
            let mut reserved = EventHandover::default();
            let mut payload: Option<Arc<str>> = None;
            for delivery in &mut event.deliveries {
                let key = delivery.destination.concurrency_key();
                let Some(slot) = self.slot_for_handoff(&key) else {
                    handover.queued.push(key);
                    continue;
                };
                let lease = lease.get_or_insert_with(|| Lease {
                    token: LeaseToken::generate(),
                    until: crate::domain::now_millis() + self.lease_ms(),
                });
                delivery.lease = Some(lease.clone());
                let payload = payload.get_or_insert_with(|| Arc::from(event.payload.as_str()));
                reserved.started.push((
                    ClaimedDelivery {
                        id: delivery.id.clone(),
                        lease_token: lease.token.clone(),
                        event_id: event.id.clone(),
                        event_type: event.event_type.clone(),
                        timestamp: event.timestamp,
                        payload: payload.clone(),
                        destination: delivery.destination.clone(),
                        attempts_made: 0,
                        budget_start: 0,
                    },
                    slot,
                ));
            }
            handover.events.push(reserved);
        }
        handover
    }

    /// The one entry point for committed deliveries: start what `reserve` leased, except for
    /// events the store found `duplicate` (stored before, so nothing of theirs was written
    /// and their slots go back), and wake the dispatcher if anything was stored queued.
    pub fn committed(self: &Arc<Self>, handover: Handover, duplicate: &[bool]) {
        let mut started = 0;
        for (index, event) in handover.events.into_iter().enumerate() {
            if duplicate.get(index).copied().unwrap_or(false) {
                continue;
            }
            started += event.started.len();
            for (delivery, slot) in event.started {
                self.start(delivery, slot);
            }
        }
        self.context
            .metrics
            .deliveries_handed_off
            .inc_by(started as u64);
        if handover.requeued {
            self.due.mark_unknown();
        }
        if handover.requeued || !handover.queued.is_empty() {
            self.due.mark(&handover.queued);
            self.wake.notify_one();
        }
    }

    /// A slot for a delivery ingest wants to hand over, if its destination has room and
    /// nothing older of it is due. `None` means: store it queued.
    fn slot_for_handoff(self: &Arc<Self>, key: &str) -> Option<Slot> {
        if self.tasks.is_closed() || self.due.blocks(key) {
            return None;
        }
        self.slot(key)
    }

    fn slot(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut counts = self.in_flight.lock().ok()?;
        // Look up before inserting: the key is allocated only for a destination's first slot.
        match counts.get_mut(key) {
            Some(count) if *count >= self.destination_share() => return None,
            Some(count) => *count += 1,
            None if self.destination_share() == 0 => return None,
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
    fn start(self: &Arc<Self>, delivery: ClaimedDelivery, slot: Slot) {
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
        self.hold_lease(&delivery.id, &delivery.lease_token);
        let engine = self.clone();
        self.tasks.spawn(async move {
            let lease = (delivery.id.clone(), delivery.lease_token.clone());
            // The slot is handed back as soon as the receiver has answered: the store
            // write that follows must not count against the receiver.
            attempt::run(&engine.context, delivery, move || drop(slot)).await;
            engine.drop_lease(&lease.0, &lease.1);
        });
    }

    fn running_counts(&self) -> HashMap<String, usize> {
        self.in_flight
            .lock()
            .map(|counts| counts.clone())
            .unwrap_or_default()
    }

    /// Claim due deliveries while there is room, until `shutdown`; then drain. Leases are
    /// renewed throughout, the drain included.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let renewals_stop = CancellationToken::new();
        let renewals = tokio::spawn(self.clone().renew_leases(renewals_stop.clone()));
        let mut dispatcher = Dispatcher::new(self.clone());
        loop {
            let stepped = dispatcher.step().await;
            if shutdown.is_cancelled() {
                break;
            }
            let Some(wait) = stepped.wait() else {
                continue;
            };
            let woke = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(wait) => false,
            };
            // A retry or a lease falls due now: ingest must not overtake it.
            if !woke {
                self.due.mark_unknown();
            }
        }
        dispatcher.release_waiting().await;
        self.drain().await;
        renewals_stop.cancel();
        let _ = renewals.await;
    }

    /// Stop starting attempts, let running ones finish within the grace period, and hand
    /// back the leases of any that do not.
    async fn drain(&self) {
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_ok()
        {
            return;
        }
        let leases = self.held_leases();
        tracing::warn!(
            unfinished = leases.len(),
            "shutdown grace over; releasing leases"
        );
        if let Err(error) = self.context.store.release(leases).await {
            tracing::error!(%error, "releasing leases at shutdown failed; they will expire");
        }
    }
}
