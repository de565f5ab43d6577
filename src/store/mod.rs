//! The durable store: the only hand-off between ingest and delivery.
//!
//! Its verbs are those of a lease-based work queue — enqueue (event and deliveries in one
//! transaction), claim due deliveries with a lease, renew, finish an attempt (record it and
//! complete, reschedule or dead-letter the delivery), release — plus the look-ups the
//! operations API needs, retention (deleting finished work past an age, in batches), the
//! saved webhook configurations, and what nodes sharing a store
//! share besides the queue (the node list, a generated API key, wake-ups). A claim's
//! `lease_token` guards every later write, so a worker whose lease expired cannot overwrite
//! the next owner's work;
//! SQLite renders the claim with one writer thread; PostgreSQL with `FOR UPDATE SKIP LOCKED`,
//! so that several gateways can share one queue.
//!
//! - `url`: the `store` setting, parsed into which store to open;
//! - `sqlite`: the embedded store, one file in the data folder, one gateway;
//! - `postgres`: the shared store, with its embedded migrations;
//! - `search`: delivery searches, filters over either store's delivery list;
//! - `activity`: what a recent window holds (events in, deliveries by status), for the
//!   console's overview.
//!
//! Only this module knows SQL.

pub mod activity;
pub mod postgres;
mod search;
mod sqlite;
mod url;

pub use postgres::{PgSettings, PgStore, drop_schema, with_fresh_schema};
pub use search::{DeliveryFilter, EventFilter, EventPage};
pub use sqlite::SqliteStore;
pub use url::{DEFAULT_SQLITE_FILE, StoreUrl};

use crate::domain::{
    Attempt, ConfigId, DeliveryId, DeliveryStatus, Destination, EventId, LeaseToken, NodeId,
    UnixMillis, now_millis,
};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres: {}", error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres connection pool: {}", error_chain(.0))]
    Pool(deadpool_postgres::PoolError),
    /// A group of writes failed together (a lost connection): the message is the group's.
    #[error("the write group failed: {0}")]
    GroupFailed(String),
    /// A `store` setting that cannot be used; the message names the part at fault.
    #[error("{0}")]
    InvalidSetting(String),
    #[error(
        "database schema is at version {database}, this hookgate knows up to {known}; upgrade hookgate"
    )]
    SchemaTooNew { database: i32, known: i32 },
}

/// An error with its causes: tokio-postgres shows a server's refusal as just "db error" and a
/// failed connection without its reason, and the log needs both.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            error => StoreError::Pool(error),
        }
    }
}

/// An accepted event with the deliveries routing produced for it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    pub project_id: Option<String>,
    pub timestamp: f64,
    /// The canonical payload JSON, exactly as it will be sent.
    pub payload: String,
    pub deliveries: Vec<NewDelivery>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub destination: Destination,
    /// Set when the engine takes the delivery straight from ingest: it is stored in flight
    /// under this lease instead of queued.
    pub lease: Option<Lease>,
}

/// A lease on deliveries: its token guards every later write, and it ends at `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub token: LeaseToken,
    pub until: UnixMillis,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliverySummary {
    pub id: DeliveryId,
    #[serde(serialize_with = "crate::domain::serialize_redacted_url")]
    pub webhook_url: String,
    pub status: DeliveryStatus,
}

#[derive(Debug, Clone)]
pub struct EnqueueOutcome {
    pub event_id: EventId,
    /// True when the event id was already stored: nothing new was queued.
    pub duplicate: bool,
    pub deliveries: Vec<DeliverySummary>,
}

/// A delivery a worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub lease_token: LeaseToken,
    pub event_id: EventId,
    pub event_type: String,
    pub timestamp: f64,
    pub payload: Arc<str>,
    pub destination: Destination,
    /// Attempts made so far, over the delivery's whole life.
    pub attempts_made: u32,
    /// `attempts_made` when the delivery was last (re)queued; the retry budget counts from here.
    pub budget_start: u32,
}

/// Per-destination room for a claim: what is in flight per concurrency key, and the cap.
#[derive(Debug, Clone, Default)]
pub struct ClaimBudget {
    pub in_flight: std::collections::HashMap<String, usize>,
    pub per_destination: usize,
    /// Due deliveries to look through, oldest first.
    pub scan_rows: usize,
    /// Destinations whose due rows were passed over for want of room (filled by `admit`).
    pub refused: std::collections::HashSet<String>,
}

impl ClaimBudget {
    /// The claim's rule, the same on every store: walking due rows oldest first, take one
    /// for `dest_key` only while its destination has room, so nothing is claimed just to be
    /// handed back. Counts it when taken.
    pub fn admit(&mut self, dest_key: &str) -> bool {
        // Look up before inserting: the key is allocated only for a destination's first row.
        let held = match self.in_flight.get_mut(dest_key) {
            Some(held) => held,
            None => self.in_flight.entry(dest_key.to_owned()).or_default(),
        };
        if *held >= self.per_destination {
            if !self.refused.contains(dest_key) {
                self.refused.insert(dest_key.to_owned());
            }
            return false;
        }
        *held += 1;
        true
    }

    /// What the claim leaves due in the store, once it has looked at `scanned` due rows and
    /// chosen `chosen` of at most `limit`: only the refused destinations' rows when it saw
    /// every due row, or it cannot tell.
    pub fn due_left(self, scanned: usize, chosen: usize, limit: usize) -> DueLeft {
        if chosen >= limit || scanned >= self.scan_rows {
            DueLeft::Unknown
        } else if self.refused.is_empty() {
            DueLeft::Nothing
        } else {
            DueLeft::Held(self.refused)
        }
    }
}

/// The due work a claim left in the store, for ingest's hand-over: new deliveries must not
/// overtake due ones of their destination.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum DueLeft {
    /// Nothing due is left.
    Nothing,
    /// Only rows of these destinations, passed over because they are full.
    Held(std::collections::HashSet<String>),
    /// The claim stopped before it saw every due row.
    #[default]
    Unknown,
}

#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub deliveries: Vec<ClaimedDelivery>,
    /// The earliest due time of what is left queued, so the dispatcher can sleep until then.
    pub next_due_at: Option<UnixMillis>,
    pub due_left: DueLeft,
}

/// What an attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded,
    Skipped,
    Retry { due_at: UnixMillis },
    Failed,
}

impl AttemptOutcome {
    /// The delivery's status after this outcome, and when it is next due (now unless it
    /// waits for a retry).
    pub fn next_state(&self, now: UnixMillis) -> (DeliveryStatus, UnixMillis) {
        match self {
            AttemptOutcome::Succeeded => (DeliveryStatus::Succeeded, now),
            AttemptOutcome::Skipped => (DeliveryStatus::Skipped, now),
            AttemptOutcome::Failed => (DeliveryStatus::Failed, now),
            AttemptOutcome::Retry { due_at } => (DeliveryStatus::Queued, *due_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    #[serde(serialize_with = "crate::domain::serialize_redacted_url")]
    pub webhook_url: String,
    pub status: DeliveryStatus,
    pub source: crate::domain::DestinationSource,
    pub attempt_count: u32,
    /// When the next attempt is due (queued deliveries only).
    #[serde(serialize_with = "crate::domain::serialize_optional_iso_millis")]
    pub next_attempt_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub created_at: UnixMillis,
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub updated_at: UnixMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
    /// Keyset cursor position; not part of the API.
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: EventId,
    pub event_type: String,
    pub project_id: Option<String>,
    /// Unix seconds, as the event's payload gives it (SPEC 5).
    pub timestamp: f64,
    /// `timestamp` in ISO 8601 UTC, like every other API timestamp.
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub accepted_at: UnixMillis,
    pub payload: serde_json::Value,
    pub deliveries: Vec<DeliveryView>,
}

/// A saved webhook configuration, secrets included; the API layer decides what to show.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedConfig {
    pub id: ConfigId,
    pub tenant_id: String,
    /// The configuration fields except the secret, as the API accepted them.
    pub settings: serde_json::Value,
    pub signing_secret: Option<String>,
    /// The secret a rotation replaced, valid until its window ends.
    pub previous_secret: Option<crate::domain::PreviousSecret>,
    pub created_at: String,
    pub updated_at: String,
    pub seq: i64,
}

/// A gateway process as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub listen: String,
    pub version: String,
    pub started_at: UnixMillis,
    pub heartbeat_at: UnixMillis,
    /// Attempts running on it.
    pub in_flight: u32,
    /// How many attempts it runs at once to one destination: its share of the cap.
    pub destination_share: u32,
    /// The plugins it serves, so a node running other versions stands out.
    pub plugins: Vec<NodePlugin>,
}

/// What a heartbeat learns: the live nodes, and how many of them started before this one
/// (its rank, by start time and id, the order every node agrees on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveNodes {
    pub count: usize,
    pub rank: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NodePlugin {
    pub name: String,
    pub sha256: String,
}

/// What a retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub deliveries: u64,
    pub attempts: u64,
    pub events: u64,
}

impl PurgeCounts {
    pub fn is_empty(&self) -> bool {
        *self == PurgeCounts::default()
    }
}

impl std::ops::AddAssign for PurgeCounts {
    fn add_assign(&mut self, other: PurgeCounts) {
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.events += other.events;
    }
}

/// A position in the events ordered by acceptance: after `(created_at, id)` on PostgreSQL
/// (from the first event when `id` is `None`), after `rowid` on SQLite (whose rowids follow
/// acceptance; 0 is before the first). The default starts at the first event on both; a
/// cursor is only meaningful to the store that returned it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventCursor {
    pub created_at: UnixMillis,
    pub id: Option<EventId>,
    pub rowid: i64,
}

/// An event as the event list shows it, with its position in the list.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub event_id: EventId,
    pub event_type: String,
    pub project_id: Option<String>,
    /// Unix seconds, as the payload gives it.
    pub timestamp: f64,
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub accepted_at: UnixMillis,
    #[serde(skip)]
    pub position: EventCursor,
}

/// One batch of the scan for events without deliveries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventScan {
    /// Events looked at; fewer than the limit means the scan reached `before_ms`.
    pub scanned: usize,
    /// Of those, the ones deleted because no delivery refers to them.
    pub deleted: u64,
    /// Where the next batch starts.
    pub next: EventCursor,
}

#[derive(Debug, Clone, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
    pub total: Option<u64>,
}

impl<T> Page<T> {
    /// A page of at most `limit` from rows read one past it, newest first: the extra row only
    /// shows that a next page exists, which starts below the last row kept (`position`).
    pub fn from_rows(
        mut items: Vec<T>,
        limit: usize,
        position: impl Fn(&T) -> i64,
        total: Option<u64>,
    ) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(position)
        } else {
            None
        };
        Page {
            items,
            next_cursor,
            total,
        }
    }
}

/// The configured store. An enum rather than a trait object: the set is closed and known,
/// and async methods stay plain.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    pub async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        dispatch!(self, s => s.enqueue(events).await)
    }

    /// Claim up to `limit` due deliveries, oldest first, never taking a destination past
    /// `per_destination` in flight counting the `busy` ones this node already holds.
    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: i64,
        busy: ClaimBudget,
    ) -> Result<ClaimBatch, StoreError> {
        dispatch!(self, s => s.claim_due(limit, lease_ms, busy).await)
    }

    /// Record one attempt and move the delivery on; ignored if the lease was lost.
    pub async fn finish_attempt(
        &self,
        delivery: &ClaimedDelivery,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.finish_attempt(delivery.id.clone(), delivery.lease_token.clone(), attempt, outcome).await)
    }

    /// Give claimed deliveries back untouched (shutdown, or a destination over its limit).
    pub async fn release(&self, leases: Vec<(DeliveryId, LeaseToken)>) -> Result<(), StoreError> {
        self.release_until(leases, now_millis(), None).await
    }

    /// Hand leased deliveries back to the queue, due at `due_at`, without recording an
    /// attempt: their retry budget is untouched. `reason`, when given, becomes their
    /// `last_error`, so a look-up says why they wait.
    pub async fn release_until(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        due_at: UnixMillis,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_until(leases, due_at, reason).await)
    }

    /// Extend the leases this process still holds to `until`; a lease another holder has
    /// taken over is left alone. Returns how many were extended.
    pub async fn renew_leases(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        until: UnixMillis,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.renew_leases(leases, until).await)
    }

    /// Queue a finished delivery again with a fresh retry budget.
    pub async fn redeliver(
        &self,
        delivery_id: &DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        dispatch!(self, s => s.redeliver(delivery_id.clone()).await)
    }

    /// Queue finished deliveries again with fresh retry budgets, in one durable write;
    /// returns how many were queued.
    pub async fn redeliver_many(&self, delivery_ids: Vec<DeliveryId>) -> Result<usize, StoreError> {
        dispatch!(self, s => s.redeliver_many(delivery_ids).await)
    }

    pub async fn event(&self, event_id: &EventId) -> Result<Option<EventView>, StoreError> {
        dispatch!(self, s => s.event(event_id.clone()).await)
    }

    pub async fn delivery(
        &self,
        delivery_id: &DeliveryId,
    ) -> Result<Option<DeliveryView>, StoreError> {
        dispatch!(self, s => s.delivery(delivery_id.clone()).await)
    }

    /// Deliveries newest first; `before_seq` is the cursor from the previous page.
    pub async fn deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Page<DeliveryView>, StoreError> {
        dispatch!(self, s => s.deliveries(status, limit, before_seq).await)
    }

    /// Delete up to `limit` finished deliveries (succeeded, failed, skipped) that finished
    /// before `before_ms`, oldest first, with their attempts and the events they leave
    /// without any delivery. Queued and in-flight deliveries are never touched, nor rows
    /// another transaction holds (PostgreSQL: a redelivery in progress).
    pub async fn purge_finished(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<PurgeCounts, StoreError> {
        dispatch!(self, s => s.purge_finished(before_ms, limit).await)
    }

    /// Look at up to `limit` events accepted before `before_ms`, in acceptance order from
    /// `after`, and delete those no delivery refers to (routing found no destination).
    /// Events that still have deliveries are passed over: `purge_finished` deletes them with
    /// their last delivery.
    pub async fn purge_events_without_deliveries(
        &self,
        after: EventCursor,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<EventScan, StoreError> {
        dispatch!(self, s => s.purge_events_without_deliveries(after, before_ms, limit).await)
    }

    /// Events accepted and deliveries created at or after `since`, the deliveries by their
    /// status now (see `activity`).
    pub async fn activity_since(
        &self,
        since: UnixMillis,
    ) -> Result<activity::Activity, StoreError> {
        dispatch!(self, s => s.activity_since(since).await)
    }

    /// Deliveries queued or in flight.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.queue_depth().await)
    }

    /// Events newest first from below `before` (the newest when `None`), at most `limit`.
    pub async fn recent_events(
        &self,
        before: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<EventSummary>, StoreError> {
        dispatch!(self, s => s.recent_events(before, limit).await)
    }

    /// Make due now the deliveries of `destination` (a concurrency key) a pause handed back,
    /// known by their last error starting with `reason_prefix`; returns how many.
    pub async fn wake_paused(
        &self,
        destination: &str,
        reason_prefix: &'static str,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.wake_paused(destination.to_owned(), reason_prefix).await)
    }

    /// Record an operator's pause of `destination` (a concurrency key), or its end, for every
    /// node and across restarts.
    pub async fn set_operator_pause(
        &self,
        destination: &str,
        paused: bool,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_operator_pause(destination.to_owned(), paused).await)
    }

    /// The destinations an operator has paused.
    pub async fn operator_pauses(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.operator_pauses().await)
    }

    /// Deliveries queued or in flight, by destination (concurrency key).
    pub async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        dispatch!(self, s => s.waiting_by_destination().await)
    }

    /// The waiting deliveries split as (queued, in flight).
    pub async fn queue_by_state(&self) -> Result<(u64, u64), StoreError> {
        dispatch!(self, s => s.queue_by_state().await)
    }

    /// Stop accepting writes once what is queued has committed.
    pub fn close(&self) {
        dispatch!(self, s => s.close())
    }

    /// Whether a durable write commits now (see each store's `probe_write`).
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.probe_write().await)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Record `node`'s heartbeat, forget nodes silent for a long time, and count the nodes
    /// heard from within `alive_within_ms` (this one included) and this one's rank.
    pub async fn heartbeat_node(
        &self,
        node: NodeRecord,
        alive_within_ms: i64,
    ) -> Result<LiveNodes, StoreError> {
        dispatch!(self, s => s.heartbeat_node(node, alive_within_ms).await)
    }

    /// A node leaving cleanly takes itself off the list.
    pub async fn remove_node(&self, node_id: &NodeId) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_node(node_id.clone()).await)
    }

    /// The API key shared by every node of a cluster when none is configured: the stored
    /// one, or `candidate` if there is none yet, with whether `candidate` became it. `None`
    /// on SQLite, whose one node keeps its generated key in the data folder.
    pub async fn shared_api_key(
        &self,
        candidate: String,
    ) -> Result<Option<(String, bool)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(store) => store.shared_api_key(candidate).await.map(Some),
        }
    }

    /// Call `on_queued` whenever another process sharing the store commits queued work, and
    /// after each (re)connect, until `shutdown`. This process's own queued work is not
    /// announced to it: ingest, redelivery and the engine tell the engine themselves. SQLite
    /// has one process per file, so nothing calls it there.
    pub fn watch_queued(
        &self,
        on_queued: impl Fn() + Send + Sync + 'static,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if let Store::Postgres(store) = self {
            store.watch_queued(on_queued, shutdown);
        }
    }

    /// Every node in the list, oldest first: the live ones and those silent for less than
    /// the hour after which they are forgotten.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        dispatch!(self, s => s.nodes().await)
    }

    pub async fn insert_config(&self, config: SavedConfig) -> Result<SavedConfig, StoreError> {
        dispatch!(self, s => s.insert_config(config).await)
    }

    pub async fn update_config(
        &self,
        config: SavedConfig,
    ) -> Result<Option<SavedConfig>, StoreError> {
        dispatch!(self, s => s.update_config(config).await)
    }

    pub async fn config(&self, config_id: &ConfigId) -> Result<Option<SavedConfig>, StoreError> {
        dispatch!(self, s => s.config(config_id.clone()).await)
    }

    pub async fn configs_by_id(&self, ids: Vec<ConfigId>) -> Result<Vec<SavedConfig>, StoreError> {
        dispatch!(self, s => s.configs_by_id(ids).await)
    }

    pub async fn delete_config(&self, config_id: &ConfigId) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_config(config_id.clone()).await)
    }

    /// Configurations of a tenant (all tenants when `None`), newest first.
    pub async fn configs(
        &self,
        tenant_id: Option<String>,
        limit: usize,
        before_seq: Option<i64>,
        with_total: bool,
    ) -> Result<Page<SavedConfig>, StoreError> {
        dispatch!(self, s => s.configs(tenant_id, limit, before_seq, with_total).await)
    }
}
