//! Prometheus metrics. One registry per running app (not a process-global recorder), so
//! several gateways in one test process count separately.
//!
//! Served as the classic Prometheus text format (0.0.4) by default, which every scraper and
//! parser reads, and as OpenMetrics 1.0 when the scraper asks for it (`Accept:
//! application/openmetrics-text`). Labels have bounded values: event types are a closed set,
//! outcomes four, plugins what is installed; destination hosts are kept for the first
//! [`MAX_HOST_LABELS`] seen and the rest counted under `other`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Destination hosts that get a label of their own; later ones count as `other`.
pub const MAX_HOST_LABELS: usize = 50;

/// How an attempt ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptLabel {
    Succeeded,
    Retry,
    Failed,
    Skipped,
}

impl AttemptLabel {
    pub const ALL: [AttemptLabel; 4] = [
        AttemptLabel::Succeeded,
        AttemptLabel::Retry,
        AttemptLabel::Failed,
        AttemptLabel::Skipped,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|label| label.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptLabel::Succeeded => "succeeded",
            AttemptLabel::Retry => "retry",
            AttemptLabel::Failed => "failed",
            AttemptLabel::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    event_type: String,
    outcome: String,
    /// The destination's transform plugin, `none` without one.
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// Buckets of the attempt duration histograms, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// One finished attempt, for [`Metrics::record_attempt`].
pub struct AttemptRecord<'a> {
    pub event_type: &'a str,
    pub outcome: AttemptLabel,
    pub plugin: Option<&'a str>,
    pub host: &'a str,
    pub duration: std::time::Duration,
}

pub struct Metrics {
    registry: Registry,
    pub events_ingested: Counter,
    pub deliveries_delivered: Counter,
    pub deliveries_failed: Counter,
    pub deliveries_skipped: Counter,
    pub delivery_retries: Counter,
    /// Deliveries started straight from ingest, without a claim reading them back.
    pub deliveries_handed_off: Counter,
    attempt_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    attempts: Family<AttemptLabels, Counter>,
    destination_attempts: Family<HostLabels, Counter>,
    /// Hosts given a label of their own so far.
    hosts_labelled: Mutex<HashSet<String>>,
    pub queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    queue_by_state: Family<StateLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub plugin_errors: Counter<u64, AtomicU64>,
    /// Deliveries handed back to the queue, no attempt spent, because their plugin is paused.
    pub plugin_deferrals: Counter,
    /// Destinations paused, by their breaker or an operator.
    pub destination_pauses: Counter,
    /// Deliveries handed back to the queue, no attempt spent, because their destination is
    /// paused.
    pub destination_deferrals: Counter,
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
        let attempt_seconds =
            Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of one delivery attempt, transform and HTTP included, by outcome",
            attempt_seconds.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by event type, outcome (succeeded, retry, failed, skipped) and transform plugin",
            attempts.clone(),
        );
        let destination_attempts = Family::<HostLabels, Counter>::default();
        registry.register(
            "destination_attempts",
            "Delivery attempts by destination host (the first 50 hosts seen; later ones as other) and outcome",
            destination_attempts.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Deliveries queued or in flight",
            queue_depth.clone(),
        );
        let queue_by_state =
            Family::<StateLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "queue_deliveries",
            "Deliveries waiting, by state: queued (due now or later) or in_flight (leased to a node)",
            queue_by_state.clone(),
        );
        for outcome in AttemptLabel::ALL {
            drop(attempt_seconds.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str().to_owned(),
            }));
        }
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
        let destination_pauses = Counter::default();
        registry.register(
            "destination_pauses",
            "Destinations paused by their circuit breaker or an operator",
            destination_pauses.clone(),
        );
        let destination_deferrals = Counter::default();
        registry.register(
            "destination_deferrals",
            "Deliveries handed back to the queue without an attempt because their destination is paused",
            destination_deferrals.clone(),
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
            attempts,
            destination_attempts,
            hosts_labelled: Mutex::new(HashSet::new()),
            queue_depth,
            queue_by_state,
            plugin_errors,
            plugin_deferrals,
            destination_pauses,
            destination_deferrals,
            events_refused_queue_full,
            retention_deleted,
        }
    }

    /// Count one finished attempt under its labels and time it by outcome.
    pub fn record_attempt(&self, attempt: AttemptRecord<'_>) {
        let outcome = attempt.outcome.as_str().to_owned();
        self.attempt_seconds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.clone(),
            })
            .observe(attempt.duration.as_secs_f64());
        self.attempts
            .get_or_create(&AttemptLabels {
                event_type: attempt.event_type.to_owned(),
                outcome: outcome.clone(),
                plugin: attempt.plugin.unwrap_or("none").to_owned(),
            })
            .inc();
        self.destination_attempts
            .get_or_create(&HostLabels {
                host: self.host_label(attempt.host),
                outcome,
            })
            .inc();
    }

    /// `host`, or `other` once [`MAX_HOST_LABELS`] other hosts have labels: a gateway
    /// sending to a million tenants' hosts must not make a million series.
    fn host_label(&self, host: &str) -> String {
        let mut labelled = match self.hosts_labelled.lock() {
            Ok(labelled) => labelled,
            Err(poisoned) => poisoned.into_inner(),
        };
        if labelled.contains(host) {
            return host.to_owned();
        }
        if labelled.len() < MAX_HOST_LABELS {
            labelled.insert(host.to_owned());
            return host.to_owned();
        }
        "other".to_owned()
    }

    /// Set the queue gauges from a count of the store's waiting deliveries.
    pub fn set_queue(&self, queued: u64, in_flight: u64) {
        let gauge = |state: &str| {
            self.queue_by_state.get_or_create(&StateLabels {
                state: state.to_owned(),
            })
        };
        gauge("queued").set(i64::try_from(queued).unwrap_or(i64::MAX));
        gauge("in_flight").set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.queue_depth
            .set(i64::try_from(queued.saturating_add(in_flight)).unwrap_or(i64::MAX));
    }

    /// Every metric in OpenMetrics 1.0 text.
    pub fn render_openmetrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Every metric in the classic Prometheus text format (0.0.4).
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render_openmetrics())
    }
}

/// The classic text format from OpenMetrics text, for what the encoder writes: a counter's
/// family is named without `_total` in OpenMetrics, and the classic format names it as its
/// sample (`name_total`), or a classic parser sees two metrics; `# UNIT` and `# EOF` do not
/// exist there. Samples, labels and histograms read the same in both.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(&renamed),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_in_the_classic_format() {
        let metrics = Metrics::new();
        metrics.events_ingested.inc();
        let classic = metrics.render_prometheus();
        assert!(
            classic.contains(
                "# HELP hookgate_events_ingested_total Events accepted by the ingestion API.\n\
                 # TYPE hookgate_events_ingested_total counter\n\
                 hookgate_events_ingested_total 1\n"
            ),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
        let open = metrics.render_openmetrics();
        assert!(
            open.contains("# TYPE hookgate_events_ingested counter"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn hosts_past_the_cap_are_counted_as_other() {
        let metrics = Metrics::new();
        let record = |host: &str| {
            metrics.record_attempt(AttemptRecord {
                event_type: "parse.success",
                outcome: AttemptLabel::Succeeded,
                plugin: None,
                host,
                duration: std::time::Duration::from_millis(3),
            })
        };
        for index in 0..MAX_HOST_LABELS + 5 {
            record(&format!("h{index}.example.com"));
        }
        record("h0.example.com");
        let text = metrics.render_prometheus();
        let host_series = text
            .lines()
            .filter(|line| line.starts_with("hookgate_destination_attempts_total{"))
            .count();
        assert_eq!(host_series, MAX_HOST_LABELS + 1, "{text}");
        assert!(
            text.contains(
                r#"hookgate_destination_attempts_total{host="other",outcome="succeeded"} 5"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hookgate_destination_attempts_total{host="h0.example.com",outcome="succeeded"} 2"#),
            "{text}"
        );
    }
}
