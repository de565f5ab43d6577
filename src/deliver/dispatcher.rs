//! The dispatcher: claims due deliveries from the store while the engine has room, and
//! starts them or holds them in memory until their destination has a free slot.
//!
//! Its state lives in [`Dispatcher`] and one [`Dispatcher::step`] does one round (start held
//! deliveries whose slot freed, claim once) and says what it did and how long to wait, so
//! [`Engine::run`](super::Engine::run) and the tests drive the same code.
//!
//! A claim may take up to twice a destination's slot count: what does not fit waits in
//! memory, leased, and starts the moment a slot frees, so a busy destination's slots never
//! wait on a store round trip and one claim serves many completions. The engine renews the
//! leases of held deliveries with those of running ones. When other nodes share the store, a
//! delivery held longer than a quarter of the lease is handed back so that one of them, with
//! room for its destination, can take it; and no node claims more than its free slots can
//! start soon, so work is not held where it cannot run.

use super::Engine;
use crate::domain::{DeliveryId, LeaseToken};
use crate::store::{ClaimBudget, ClaimedDelivery, DueLeft};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The least time between claims; bounds claims to a few hundred a second.
const CLAIM_COALESCE: Duration = Duration::from_millis(2);
/// A claim may hold this many times a destination's slot count again, waiting in memory.
const PREFETCH_FACTOR: usize = 1;
/// How long to wait when everything the engine may hold is held already.
const NO_ROOM_WAIT: Duration = Duration::from_millis(50);

/// How far a deep claim scan looks past full destinations' backlogs, and how often.
const DEEP_SCAN_ROWS: usize = 50_000;
/// Deep scans start this often and back off to `DEEP_SCAN_MAX_INTERVAL` while they find
/// nothing (one full destination draining its own backlog), so they cost little then.
const DEEP_SCAN_INTERVAL: Duration = Duration::from_millis(25);
const DEEP_SCAN_MAX_INTERVAL: Duration = Duration::from_millis(200);

/// What one step did, and so when the next should run.
#[derive(Debug, Clone, PartialEq)]
pub enum Stepped {
    /// The last claim was less than `CLAIM_COALESCE` ago: wait this long (or for a wake-up)
    /// so one claim serves many freed slots.
    TooSoon(Duration),
    /// Every slot and every place in memory is taken: nothing to claim until one frees.
    NoRoom,
    /// One claim ran. `wait` is `None` when it filled its limit (more is due now), else the
    /// time until the earliest queued delivery falls due, capped by the poll interval.
    Claimed {
        claimed: usize,
        started: usize,
        wait: Option<Duration>,
    },
    /// The store failed; back off this long.
    StoreFailed(Duration),
}

impl Stepped {
    /// How long to wait for a wake-up before the next step; `None`: step again at once.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Stepped::TooSoon(wait) | Stepped::StoreFailed(wait) => Some(*wait),
            Stepped::NoRoom => Some(NO_ROOM_WAIT),
            Stepped::Claimed { wait, .. } => *wait,
        }
    }
}

/// The dispatcher's state between steps.
pub struct Dispatcher {
    engine: Arc<Engine>,
    /// Claimed deliveries waiting in memory for their destination's slot.
    ready: Ready,
    /// Consecutive failed claims, for the back-off.
    store_failures: u32,
    last_claim: Option<Instant>,
    last_deep_scan: Instant,
    deep_scan_interval: Duration,
    /// Destinations whose held deliveries were just handed back for other nodes, until
    /// when: this node claims none of theirs meanwhile, or it would take them right back.
    handed_back: HashMap<String, Instant>,
}

impl Dispatcher {
    pub fn new(engine: Arc<Engine>) -> Self {
        Dispatcher {
            engine,
            ready: Ready::default(),
            store_failures: 0,
            last_claim: None,
            last_deep_scan: Instant::now(),
            deep_scan_interval: DEEP_SCAN_INTERVAL,
            handed_back: HashMap::new(),
        }
    }

    /// One round: start held deliveries whose slot has freed, hand back those held too long
    /// while other nodes could run them, and claim once if the last claim was not just now
    /// and there is room.
    pub async fn step(&mut self) -> Stepped {
        let engine = self.engine.clone();
        let config = engine.context.config.clone();
        let stale = self.start_ready();
        if !stale.is_empty() {
            for (delivery_id, lease_token) in &stale {
                engine.drop_lease(delivery_id, lease_token);
            }
            if let Err(error) = engine.context.store.release(stale).await {
                tracing::warn!(%error, "handing back long-held deliveries failed; their leases will expire");
            }
        }
        // Let a few more completions and new events arrive, so one claim serves many
        // instead of one store round trip per freed slot.
        if let Some(since) = self.last_claim.map(|at| at.elapsed())
            && since < CLAIM_COALESCE
        {
            return Stepped::TooSoon(CLAIM_COALESCE.saturating_sub(since));
        }
        let held_limit = engine
            .destination_share()
            .saturating_mul(1 + PREFETCH_FACTOR);
        let max_held = config
            .delivery
            .max_in_flight
            .saturating_mul(1 + PREFETCH_FACTOR);
        let running = engine.running_counts();
        let held_now = running.values().sum::<usize>() + self.ready.total;
        // Beyond what is held, no more than the free slots can start (and as many again to
        // follow them): a node at its global bound leaves new work to the others.
        let startable = engine
            .free_slots()
            .saturating_mul(1 + PREFETCH_FACTOR)
            .saturating_sub(self.ready.total);
        let limit = config
            .delivery
            .claim_batch
            .min(max_held.saturating_sub(held_now))
            .min(startable);
        if limit == 0 {
            self.last_claim = Some(Instant::now());
            return Stepped::NoRoom;
        }
        let mut held = running;
        for (key, queue) in &self.ready.queues {
            *held.entry(key.clone()).or_default() += queue.len();
        }
        let now = Instant::now();
        self.handed_back.retain(|_, until| *until > now);
        for key in self.handed_back.keys() {
            held.insert(key.clone(), held_limit);
        }
        // Normally the oldest due rows are enough. When a destination is full, its
        // backlog can fill that window, so now and then look much deeper for others.
        let any_full = held.values().any(|count| *count >= held_limit);
        let deep = any_full && self.last_deep_scan.elapsed() >= self.deep_scan_interval;
        if deep {
            self.last_deep_scan = Instant::now();
        }
        let budget = ClaimBudget {
            in_flight: held,
            per_destination: held_limit,
            scan_rows: if deep { DEEP_SCAN_ROWS } else { limit * 2 },
            refused: Default::default(),
        };
        let claim_started = crate::domain::now_millis();
        self.last_claim = Some(Instant::now());
        // Held deliveries, and those just handed back to the cluster, are older than anything
        // ingest could hand over now; what the claim leaves is marked when it returns.
        engine
            .due
            .begin_claim(self.ready.queues.keys().chain(self.handed_back.keys()));
        let batch = match engine
            .context
            .store
            .claim_due(limit, engine.lease_ms(), budget)
            .await
        {
            Ok(batch) => {
                self.store_failures = 0;
                batch
            }
            Err(error) => {
                engine.due.mark_unknown();
                self.store_failures += 1;
                tracing::error!(%error, "claiming deliveries failed");
                return Stepped::StoreFailed(Duration::from_millis(
                    100 * u64::from(self.store_failures.min(50)),
                ));
            }
        };
        let claimed = batch.deliveries.len();
        if deep {
            self.deep_scan_interval = if claimed == 0 {
                (self.deep_scan_interval * 2).min(DEEP_SCAN_MAX_INTERVAL)
            } else {
                DEEP_SCAN_INTERVAL
            };
        }
        let mut started = 0;
        for delivery in batch.deliveries {
            let key = delivery.destination.concurrency_key();
            match engine.slot(&key) {
                Some(slot) => {
                    engine.start(delivery, slot);
                    started += 1;
                }
                None => {
                    engine.hold_lease(&delivery.id, &delivery.lease_token);
                    self.ready.push(key, delivery);
                }
            }
        }
        match &batch.due_left {
            DueLeft::Unknown => engine.due.mark_unknown(),
            DueLeft::Held(destinations) => engine.due.mark(destinations),
            DueLeft::Nothing => {}
        }
        engine.due.mark(self.ready.queues.keys());
        if claimed == limit {
            self.last_claim = None; // more may be due right now
            return Stepped::Claimed {
                claimed,
                started,
                wait: None,
            };
        }
        let idle = Duration::from_millis(config.delivery.poll_interval_ms);
        // Something due is left although there was room: full destinations hold it.
        // Their completions wake us; polling faster would only spin.
        let blocked = batch.next_due_at.is_some_and(|due| due <= claim_started);
        let wait = if blocked {
            idle.min(self.deep_scan_interval)
        } else {
            batch
                .next_due_at
                .map(|due| Duration::from_millis((due - crate::domain::now_millis()).max(1) as u64))
                .unwrap_or(idle)
                .min(idle)
        };
        Stepped::Claimed {
            claimed,
            started,
            wait: Some(wait),
        }
    }

    /// Deliveries waiting in memory never started: their leases go back at once.
    pub async fn release_waiting(&mut self) {
        let waiting = self.ready.drain_leases();
        for (delivery_id, lease_token) in &waiting {
            self.engine.drop_lease(delivery_id, lease_token);
        }
        if !waiting.is_empty()
            && let Err(error) = self.engine.context.store.release(waiting).await
        {
            tracing::warn!(%error, "releasing waiting deliveries failed; their leases will expire");
        }
    }

    /// Start every waiting delivery whose destination now has a free slot, oldest first.
    /// Returns the leases of those held too long while other nodes share the store.
    fn start_ready(&mut self) -> Vec<(DeliveryId, LeaseToken)> {
        let mut stale = Vec::new();
        let ready = &mut self.ready;
        if ready.total == 0 {
            return stale;
        }
        let max_hold = self
            .engine
            .clustered()
            .then(|| Duration::from_millis(self.engine.context.config.delivery.lease_ms / 4));
        for (key, queue) in ready.queues.iter_mut() {
            while let Some((held_since, _)) = queue.front() {
                if let Some(max_hold) = max_hold
                    && held_since.elapsed() >= max_hold
                {
                    if let Some((_, delivery)) = queue.pop_front() {
                        ready.total -= 1;
                        stale.push((delivery.id, delivery.lease_token));
                        self.handed_back
                            .insert(key.clone(), Instant::now() + max_hold);
                    }
                    continue;
                }
                let Some(slot) = self.engine.slot(key) else {
                    break;
                };
                if let Some((_, delivery)) = queue.pop_front() {
                    ready.total -= 1;
                    self.engine.start(delivery, slot);
                }
            }
        }
        ready.queues.retain(|_, queue| !queue.is_empty());
        stale
    }
}

/// Claimed deliveries waiting in memory for a slot, per concurrency key, oldest first, with
/// when they were claimed.
#[derive(Default)]
struct Ready {
    queues: HashMap<String, VecDeque<(Instant, ClaimedDelivery)>>,
    total: usize,
}

impl Ready {
    fn push(&mut self, key: String, delivery: ClaimedDelivery) {
        self.queues
            .entry(key)
            .or_default()
            .push_back((Instant::now(), delivery));
        self.total += 1;
    }

    fn drain_leases(&mut self) -> Vec<(DeliveryId, LeaseToken)> {
        self.total = 0;
        self.queues
            .drain()
            .flat_map(|(_, queue)| queue)
            .map(|(_, delivery)| (delivery.id, delivery.lease_token))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::deliver::{DeliveryContext, client::HttpClient};
    use crate::domain::{DeliveryId, Destination, DestinationSource, EventId, OutputFormat};
    use crate::egress::EgressGuard;
    use crate::metrics::Metrics;
    use crate::plugin::PluginHost;
    use crate::store::{NewDelivery, NewEvent, SqliteStore, Store};

    fn event_for(url: &str) -> NewEvent {
        NewEvent {
            id: EventId::generate(),
            event_type: "parse.success".into(),
            project_id: None,
            timestamp: 1.0,
            payload: "{}".into(),
            deliveries: vec![NewDelivery {
                id: DeliveryId::generate(),
                destination: Destination {
                    url: url.into(),
                    headers: Vec::new(),
                    output_format: OutputFormat::Json,
                    signing_secret: None,
                    previous_signing_secret: None,
                    transform: None,
                    transform_config: None,
                    retry: Default::default(),
                    source: DestinationSource::Inline,
                },
                lease: None,
            }],
        }
    }

    /// A destination with one slot: a claim takes two (one started, one held for the slot),
    /// and the next claim finds the third due but blocked behind the full destination.
    #[tokio::test]
    async fn steps_claim_within_the_destination_bound() {
        let dir = tempfile::tempdir().unwrap();
        // A receiver that accepts connections and never answers.
        let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hole", black_hole.local_addr().unwrap());
        let mut config = Config::default();
        config.delivery.max_in_flight_per_destination = 1;
        config.delivery.poll_interval_ms = 1_000;
        let store = Store::Sqlite(SqliteStore::open(&dir.path().join("step.sqlite3")).unwrap());
        let egress = EgressGuard::new(&["127.0.0.0/8".to_owned()]).unwrap();
        let plugins = PluginHost::start(dir.path().join("plugins"), None, &config.plugins)
            .await
            .unwrap();
        let engine = Engine::new(Arc::new(DeliveryContext {
            store: store.clone(),
            client: HttpClient::new(egress, 1024).unwrap(),
            plugins,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            feed: Default::default(),
            health: Default::default(),
            rates: Arc::new(crate::deliver::rate::RateLimits::new(Default::default())),
            breakers: Arc::new(crate::deliver::breaker::Breakers::new(
                crate::deliver::breaker::BreakerPolicy {
                    after_failures: 0,
                    first_pause: Duration::from_secs(1),
                    max_pause: Duration::from_secs(1),
                },
            )),
        }));
        store
            .enqueue((0..3).map(|_| event_for(&url)).collect())
            .await
            .unwrap();
        let mut dispatcher = Dispatcher::new(engine.clone());

        let first = dispatcher.step().await;
        assert!(
            matches!(
                first,
                Stepped::Claimed {
                    claimed: 2,
                    started: 1,
                    wait: Some(_)
                }
            ),
            "{first:?}"
        );
        // Steps right after a claim are coalesced; the next claim finds the third delivery
        // due but its destination full (one running, one held), so it takes nothing and
        // waits no longer than a deep scan's interval for a slot to free.
        let blocked = loop {
            match dispatcher.step().await {
                Stepped::TooSoon(wait) => tokio::time::sleep(wait).await,
                other => break other,
            }
        };
        assert!(
            matches!(
                blocked,
                Stepped::Claimed {
                    claimed: 0,
                    started: 0,
                    wait: Some(wait)
                } if wait <= DEEP_SCAN_MAX_INTERVAL
            ),
            "{blocked:?}"
        );
        assert_eq!(store.queue_depth().await.unwrap(), 3);
        dispatcher.release_waiting().await;
    }
}
