//! Prometheus metrics. One registry per running app (not a process-global recorder), so
//! several gateways in one test process count separately.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub struct Metrics {
    registry: Registry,
    pub events_ingested: Counter,
    pub deliveries_delivered: Counter,
    pub deliveries_failed: Counter,
    pub deliveries_skipped: Counter,
    pub delivery_retries: Counter,
    /// Deliveries started straight from ingest, without a claim reading them back.
    pub deliveries_handed_off: Counter,
    pub attempt_seconds: Histogram,
    pub queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub plugin_errors: Counter<u64, AtomicU64>,
    /// Deliveries handed back to the queue, no attempt spent, because their plugin is paused.
    pub plugin_deferrals: Counter,
    /// Events refused with 429 because the queue held `limits.max_queued` deliveries.
    pub events_refused_queue_full: Counter,
    /// Rows retention deleted, by table: `events`, `deliveries`, `attempts`.
    pub retention_deleted: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The tables retention deletes from, as the `table` label names them.
pub const RETAINED_TABLES: [&str; 3] = ["events", "deliveries", "attempts"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let events_ingested = Counter::default();
        registry.register(
            "events_ingested",
            "Events accepted by the ingestion API",
            events_ingested.clone(),
        );
        let deliveries_delivered = Counter::default();
        registry.register(
            "deliveries_delivered",
            "Deliveries answered with 2xx",
            deliveries_delivered.clone(),
        );
        let deliveries_failed = Counter::default();
        registry.register(
            "deliveries_failed",
            "Deliveries dead-lettered after their last attempt",
            deliveries_failed.clone(),
        );
        let deliveries_skipped = Counter::default();
        registry.register(
            "deliveries_skipped",
            "Deliveries a transform plugin chose to skip",
            deliveries_skipped.clone(),
        );
        let delivery_retries = Counter::default();
        registry.register(
            "delivery_retries",
            "Failed attempts scheduled for another try",
            delivery_retries.clone(),
        );
        let deliveries_handed_off = Counter::default();
        registry.register(
            "deliveries_handed_off",
            "Deliveries started straight from ingest instead of claimed from the store",
            deliveries_handed_off.clone(),
        );
        let attempt_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of one delivery attempt, transform and HTTP included",
            attempt_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Deliveries queued or in flight",
            queue_depth.clone(),
        );
        let plugin_errors = Counter::default();
        registry.register(
            "plugin_errors",
            "Transform plugin calls that trapped, overran or returned an error",
            plugin_errors.clone(),
        );
        let plugin_deferrals = Counter::default();
        registry.register(
            "plugin_deferrals",
            "Deliveries handed back to the queue without an attempt because their plugin is paused",
            plugin_deferrals.clone(),
        );
        let events_refused_queue_full = Counter::default();
        registry.register(
            "events_refused_queue_full",
            "Events refused with 429 because the queue was at its cap",
            events_refused_queue_full.clone(),
        );
        let retention_deleted = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "retention_deleted_rows",
            "Rows deleted by retention (finished work past its age), by table",
            retention_deleted.clone(),
        );
        for table in RETAINED_TABLES {
            drop(retention_deleted.get_or_create(&[("table", table)]));
        }
        Metrics {
            registry,
            events_ingested,
            deliveries_delivered,
            deliveries_failed,
            deliveries_skipped,
            delivery_retries,
            deliveries_handed_off,
            attempt_seconds,
            queue_depth,
            plugin_errors,
            plugin_deferrals,
            events_refused_queue_full,
            retention_deleted,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
