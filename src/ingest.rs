//! The ingest use-case (SPEC 8): validate producers' events, resolve their destinations
//! (inline configurations, saved ones, operator routes), build each payload, and commit the
//! events with all their deliveries in one store transaction; then tell the engine what was
//! committed.
//!
//! In: [`IngestEvent`]s already parsed from JSON. Out: one [`Accepted`] per event, or an
//! [`IngestError`]: the first bad field, a full queue ([`QueueCap`]), or a store that could
//! not commit (remembered in `write_failing` for readiness). No HTTP types: the API,
//! `hookgate plugin run` and tests call these functions directly, and only `api/` turns the
//! errors into responses.

use crate::config::LimitsConfig;
use crate::deliver::Engine;
use crate::domain::{ConfigId, DeliveryId, DestinationSource, EventId, EventType, Payload};
use crate::egress::EgressGuard;
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::routing::{Checks, FieldError, Subscription, WebhookConfig, route};
use crate::store::{DeliverySummary, NewDelivery, NewEvent, SavedConfig, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One event as a producer submits it.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestEvent {
    pub event_type: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default, deserialize_with = "crate::domain::optional_project_id")]
    pub project_id: Option<String>,
    #[serde(default)]
    pub webhook_configurations: Option<Vec<WebhookConfig>>,
    #[serde(default)]
    pub webhook_configuration_ids: Option<Vec<ConfigId>>,
}

/// What the producer is told about one accepted event.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: EventId,
    pub deliveries: Vec<DeliverySummary>,
    /// Present and true when the event id had been accepted before: nothing new was queued.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Why events were not accepted. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A payload over the size limit; the field names where.
    #[error("{0}")]
    TooLarge(FieldError),
    /// The queue holds `max` deliveries or more: the producer should try again later.
    #[error(
        "the delivery queue is full ({queued} deliveries queued or in flight, the cap is {max}); try again later"
    )]
    QueueFull { queued: u64, max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The cap on deliveries queued or in flight (`limits.max_queued`). Counting the queue on
/// every request would cost a scan per ingest, so the store is counted now and then (see
/// [`QueueCap::count_if_due`]) and this node's own ingest is added on top: requests reserve
/// their deliveries before they commit (so concurrent requests cannot all pass against the
/// same count) and what they committed stays added until the next count. The estimate errs
/// high, never low, for this node's own ingest; other nodes' accepts since the last count
/// are not in it.
pub struct QueueCap {
    max: u64,
    counted: AtomicU64,
    /// Deliveries of requests that passed the cap and are committing now.
    pending: AtomicU64,
    /// Deliveries committed since the last count started.
    committed_since_count: AtomicU64,
    /// When the last count succeeded.
    last_count: std::sync::Mutex<std::time::Instant>,
    /// Other nodes queue into the same store (PostgreSQL): count every time, since this
    /// node's own estimate does not see their work.
    shared_store: bool,
}

impl QueueCap {
    pub const COUNT_EVERY_NEAR_CAP: std::time::Duration = std::time::Duration::from_secs(1);
    pub const COUNT_EVERY_FAR_FROM_CAP: std::time::Duration = std::time::Duration::from_secs(10);

    /// `max` 0 means no cap; `shared_store` when other nodes may queue into the store.
    pub fn new(max: u64, shared_store: bool) -> Self {
        QueueCap {
            max,
            counted: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            committed_since_count: AtomicU64::new(0),
            last_count: std::sync::Mutex::new(std::time::Instant::now()),
            shared_store,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// Reserve room for `deliveries`, or refuse them when they would take the queue past the
    /// cap. The reservation must be settled with [`QueueCap::settle`].
    fn reserve(&self, deliveries: u64) -> Result<(), IngestError> {
        if !self.enabled() {
            return Ok(());
        }
        let mut pending = self.pending.load(Ordering::Acquire);
        loop {
            let queued = self
                .counted
                .load(Ordering::Acquire)
                .saturating_add(self.committed_since_count.load(Ordering::Acquire))
                .saturating_add(pending);
            if queued.saturating_add(deliveries) > self.max {
                return Err(IngestError::QueueFull {
                    queued,
                    max: self.max,
                });
            }
            match self.pending.compare_exchange_weak(
                pending,
                pending + deliveries,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => pending = now,
            }
        }
    }

    /// End a reservation of `reserved` deliveries, of which `committed` were stored.
    fn settle(&self, reserved: u64, committed: u64) {
        if !self.enabled() {
            return;
        }
        self.committed_since_count
            .fetch_add(committed, Ordering::AcqRel);
        saturating_sub(&self.pending, reserved);
    }

    /// Count the store's queue if it is due: every time this is called (each
    /// [`QueueCap::COUNT_EVERY_NEAR_CAP`]) once this node's estimate passes a quarter of the
    /// cap or when other nodes share the store, every
    /// [`QueueCap::COUNT_EVERY_FAR_FROM_CAP`] otherwise: the count scans every queued row,
    /// and a low estimate, which only errs high, needs none sooner.
    pub(crate) async fn count_if_due(&self, store: &Store) -> Result<(), StoreError> {
        let estimate = self
            .counted
            .load(Ordering::Acquire)
            .saturating_add(self.committed_since_count.load(Ordering::Acquire));
        let since = self
            .last_count
            .lock()
            .map_or(Self::COUNT_EVERY_FAR_FROM_CAP, |at| at.elapsed());
        if !self.shared_store && estimate < self.max / 4 && since < Self::COUNT_EVERY_FAR_FROM_CAP {
            return Ok(());
        }
        self.count(store).await
    }

    /// Count the store's queue now. What was committed before the count started is in it;
    /// what commits while it runs stays added on top until the next count (counted twice,
    /// briefly: the estimate errs high).
    pub(crate) async fn count(&self, store: &Store) -> Result<(), StoreError> {
        let before = self.committed_since_count.load(Ordering::Acquire);
        let depth = store.queue_depth().await?;
        if let Ok(mut at) = self.last_count.lock() {
            *at = std::time::Instant::now();
        }
        self.counted.store(depth, Ordering::Release);
        saturating_sub(&self.committed_since_count, before);
        Ok(())
    }
}

/// One inline destination whose plugin is to be asked about its config.
struct PluginConfigCheck {
    plugin: String,
    config_json: String,
    /// The config's field as the 422 names it, e.g.
    /// `events[1].webhook_configurations[0].webhook_transform_config`.
    field: String,
}

fn plugin_config_checks(events: &[IngestEvent], in_batch: bool) -> Vec<PluginConfigCheck> {
    let mut checks = Vec::new();
    for (index, event) in events.iter().enumerate() {
        for (position, config) in event.webhook_configurations.iter().flatten().enumerate() {
            if let Some(plugin) = &config.webhook_transform {
                checks.push(PluginConfigCheck {
                    plugin: plugin.clone(),
                    config_json: config.transform_config_json(),
                    field: format!(
                        "{}webhook_configurations[{position}].webhook_transform_config",
                        field_prefix(in_batch, index)
                    ),
                });
            }
        }
    }
    checks
}

fn saturating_sub(counter: &AtomicU64, amount: u64) {
    // The closure always returns Some, so the update cannot fail.
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |value| {
        Some(value.saturating_sub(amount))
    });
}

/// An operator route: the subscription and the project it is limited to, if any.
pub type Route = (Option<String>, Subscription);

/// Everything accepting events needs, built once at start.
#[derive(Clone)]
pub struct Ingest {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub plugins: PluginHost,
    pub egress: EgressGuard,
    pub metrics: Arc<Metrics>,
    pub routes: Arc<[Route]>,
    pub limits: LimitsConfig,
    pub queue_cap: Arc<QueueCap>,
    /// Set while commits fail (a full disk, an I/O error), for `/readyz`.
    pub write_failing: Arc<AtomicBool>,
}

impl Ingest {
    /// Ask each inline destination's plugin whether it accepts its
    /// `webhook_transform_config`, so a config no delivery could succeed with is a 422
    /// naming the field instead of a delivery that fails every attempt. Saved
    /// configurations were asked when they were saved. `checks` comes from
    /// `plugin_config_checks`, taken before the events were prepared (which consumes them).
    async fn check_plugin_configs(&self, checks: Vec<PluginConfigCheck>) -> Result<(), FieldError> {
        for check in checks {
            if let Err(refused) = self
                .plugins
                .validate_config(&check.plugin, &check.config_json)
                .await
            {
                return Err(FieldError::new(
                    refused.field(&check.field),
                    format!("is refused by plugin {}: {}", check.plugin, refused.message),
                ));
            }
        }
        Ok(())
    }

    /// Validate and enqueue `events` atomically: either every event is stored with its
    /// deliveries, or none is and the error names the first bad field (`events[i].` prefixed
    /// when `in_batch`). Returns once the store has committed.
    pub async fn accept(
        &self,
        events: Vec<IngestEvent>,
        in_batch: bool,
    ) -> Result<Vec<Accepted>, IngestError> {
        let saved = self.load_saved_configs(&events, in_batch).await?;
        let plugin_checks = plugin_config_checks(&events, in_batch);
        let timestamp = unix_seconds_now();
        let mut prepared = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let prefix = field_prefix(in_batch, index);
            prepared.push(self.prepare(event, &prefix, &saved, timestamp)?);
        }
        // After every event's own fields passed, so the first bad field is named first and
        // no plugin runs for a request refused anyway.
        self.check_plugin_configs(plugin_checks).await?;
        let reserved: u64 = prepared
            .iter()
            .map(|event| event.deliveries.len() as u64)
            .sum();
        if let Err(full) = self.queue_cap.reserve(reserved) {
            self.metrics
                .events_refused_queue_full
                .inc_by(prepared.len() as u64);
            return Err(full);
        }
        let handover = self.engine.reserve(&mut prepared);
        // Stored and started in a task of its own: if the producer hangs up while the commit
        // is pending, the caller is dropped, but deliveries committed in flight must still
        // start.
        let (store, engine, metrics, queue_cap) = (
            self.store.clone(),
            self.engine.clone(),
            self.metrics.clone(),
            self.queue_cap.clone(),
        );
        let write_failing = self.write_failing.clone();
        let outcomes = tokio::spawn(async move {
            let committed = store.enqueue(prepared).await;
            write_failing.store(committed.is_err(), Ordering::Relaxed);
            let stored: u64 = committed.as_ref().map_or(0, |outcomes| {
                outcomes
                    .iter()
                    .filter(|outcome| !outcome.duplicate)
                    .map(|outcome| outcome.deliveries.len() as u64)
                    .sum()
            });
            queue_cap.settle(reserved, stored);
            let outcomes = committed?;
            let new_events = outcomes.iter().filter(|outcome| !outcome.duplicate).count();
            metrics.events_ingested.inc_by(new_events as u64);
            let duplicates: Vec<bool> = outcomes.iter().map(|outcome| outcome.duplicate).collect();
            engine.committed(handover, &duplicates);
            Ok::<_, StoreError>(outcomes)
        })
        .await
        .map_err(|error| StoreError::Corrupt(format!("the store task failed: {error}")))??;
        Ok(outcomes
            .into_iter()
            .map(|outcome| Accepted {
                event_id: outcome.event_id,
                deliveries: outcome.deliveries,
                duplicate: outcome.duplicate,
            })
            .collect())
    }

    /// Whether commits work. Reads can work while commits fail; after a failed commit this
    /// answers the failure until a small durable write goes through again.
    pub async fn check_writes(&self) -> Result<(), StoreError> {
        if self.write_failing.load(Ordering::Relaxed) {
            self.store.probe_write().await?;
            self.write_failing.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every saved configuration the events name, fetched in one store read; an id that does
    /// not exist, or belongs to another project, is an error naming where it was given.
    async fn load_saved_configs(
        &self,
        events: &[IngestEvent],
        in_batch: bool,
    ) -> Result<BTreeMap<ConfigId, SavedConfig>, IngestError> {
        let mut ids: Vec<ConfigId> = events
            .iter()
            .flat_map(|event| event.webhook_configuration_ids.iter().flatten().cloned())
            .collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        ids.sort();
        ids.dedup();
        let found: BTreeMap<_, _> = self
            .store
            .configs_by_id(ids)
            .await?
            .into_iter()
            .map(|config| (config.id.clone(), config))
            .collect();
        for (index, event) in events.iter().enumerate() {
            for (position, id) in event.webhook_configuration_ids.iter().flatten().enumerate() {
                let visible = found.get(id).is_some_and(|config| {
                    event
                        .project_id
                        .as_ref()
                        .is_none_or(|project| *project == config.tenant_id)
                });
                if !visible {
                    let prefix = field_prefix(in_batch, index);
                    return Err(unknown_config(
                        format!("{prefix}webhook_configuration_ids[{position}]"),
                        id,
                    )
                    .into());
                }
            }
        }
        Ok(found)
    }

    /// One event, checked and routed: its payload as it will be sent and a delivery per
    /// destination.
    fn prepare(
        &self,
        event: IngestEvent,
        prefix: &str,
        saved: &BTreeMap<ConfigId, SavedConfig>,
        timestamp: f64,
    ) -> Result<NewEvent, IngestError> {
        let (event_type, event_id, data) = event_fields(
            &event.event_type,
            event.event_id.as_deref(),
            event.data,
            prefix,
        )?;
        let plugin_missing = |name: &str| self.plugins.missing(name);
        let checks = Checks {
            egress: &self.egress,
            plugin_missing: &plugin_missing,
            allow_patterns: false,
        };
        let mut subscriptions: Vec<Subscription> = Vec::new();
        for (index, config) in event.webhook_configurations.iter().flatten().enumerate() {
            let path = format!("{prefix}webhook_configurations[{index}]");
            subscriptions.push(config.validate(&path, &checks, DestinationSource::Inline)?);
        }
        for (index, id) in event.webhook_configuration_ids.iter().flatten().enumerate() {
            let path = format!("{prefix}webhook_configuration_ids[{index}]");
            let Some(stored) = saved.get(id) else {
                return Err(unknown_config(path, id).into());
            };
            let config =
                WebhookConfig::from_saved(&stored.settings, stored.signing_secret.as_deref())
                    .map_err(|message| FieldError::new(path.clone(), message))?;
            let source = DestinationSource::Saved {
                config_id: stored.id.clone(),
            };
            let mut subscription = config.validate("", &checks, source).map_err(|error| {
                FieldError::new(
                    path.clone(),
                    format!("saved configuration is no longer valid: {error}"),
                )
            })?;
            // Signing checks the window again at each attempt: one made after it ends
            // carries only the new signature.
            subscription.destination.previous_signing_secret = stored.previous_secret.clone();
            subscriptions.push(subscription);
        }
        let mut destinations = route(event_type, &subscriptions);
        for (scope, subscription) in self.routes.iter() {
            let in_scope = scope
                .as_ref()
                .is_none_or(|project| event.project_id.as_ref() == Some(project));
            if in_scope && subscription.filter.accepts(event_type) {
                destinations.push(subscription.destination.clone());
            }
        }
        let payload = bounded_payload(
            &event_id,
            event_type,
            timestamp,
            &data,
            prefix,
            self.limits.max_event_bytes,
        )?;
        Ok(NewEvent {
            id: event_id,
            event_type: event_type.as_str().to_owned(),
            project_id: event.project_id,
            timestamp,
            payload,
            deliveries: destinations
                .into_iter()
                .map(|destination| NewDelivery {
                    id: DeliveryId::generate(),
                    destination,
                    lease: None,
                })
                .collect(),
        })
    }
}

/// An event's own fields checked as ingest checks them: its type, its id (a UUID when given,
/// generated when not) and its data (an object; `{}` when absent). `prefix` is where the
/// event sits in the request (`events[2].`), for the field names in errors.
pub fn event_fields(
    event_type: &str,
    event_id: Option<&str>,
    data: Option<serde_json::Value>,
    prefix: &str,
) -> Result<(EventType, EventId, serde_json::Value), FieldError> {
    let event_type = EventType::parse(event_type)
        .map_err(|error| FieldError::new(format!("{prefix}event_type"), error.to_string()))?;
    let event_id = match event_id {
        Some(given) => EventId::from(
            uuid::Uuid::parse_str(given)
                .map_err(|_| {
                    FieldError::new(
                        format!("{prefix}event_id"),
                        format!("{given:?} is not a UUID"),
                    )
                })?
                .to_string(),
        ),
        None => EventId::generate(),
    };
    let data = data.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !data.is_object() {
        return Err(FieldError::new(
            format!("{prefix}data"),
            "must be a JSON object",
        ));
    }
    Ok((event_type, event_id, data))
}

/// The payload of SPEC 3 (see `payload_json`), refused when over `max_event_bytes`.
pub fn bounded_payload(
    event_id: &EventId,
    event_type: EventType,
    timestamp: f64,
    data: &serde_json::Value,
    prefix: &str,
    max_event_bytes: usize,
) -> Result<String, IngestError> {
    let payload = payload_json(event_id, event_type, timestamp, data)
        .map_err(|error| FieldError::new(format!("{prefix}data"), error.to_string()))?;
    if payload.len() > max_event_bytes {
        return Err(IngestError::TooLarge(FieldError::new(
            format!("{prefix}data"),
            format!(
                "the event payload is {} bytes, over the limit of {max_event_bytes} bytes",
                payload.len(),
            ),
        )));
    }
    Ok(payload)
}

/// The payload of SPEC 3, exactly as it is stored and sent.
pub fn payload_json(
    event_id: &EventId,
    event_type: EventType,
    timestamp: f64,
    data: &serde_json::Value,
) -> serde_json::Result<String> {
    serde_json::to_string(&Payload {
        event_id: event_id.as_str(),
        event_type,
        timestamp,
        data,
    })
}

fn unknown_config(field: String, id: &ConfigId) -> FieldError {
    FieldError::new(
        field,
        format!("no webhook configuration with id {:?}", id.as_str()),
    )
}

/// Where an event's fields are named in errors: `events[i].` inside a batch.
fn field_prefix(in_batch: bool, index: usize) -> String {
    match in_batch {
        true => format!("events[{index}]."),
        false => String::new(),
    }
}

/// Now as Unix seconds with microseconds: the `timestamp` of SPEC 3.
pub fn unix_seconds_now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}
