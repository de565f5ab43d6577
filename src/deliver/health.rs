//! Destination health, as this node has seen it: per destination (the concurrency key:
//! scheme-less host and port), the outcomes and durations of its recent attempts, the run of
//! failures it is on, and its last error. `GET /api/v1/destinations` joins it with what is in
//! flight and queued.
//!
//! Kept in memory and bounded: the last [`WINDOW`] attempts per destination, and at most
//! [`MAX_DESTINATIONS`] destinations (the least recently attempted is forgotten first), so a
//! gateway sending to many tenants holds a fixed amount.

use crate::domain::{UnixMillis, now_millis};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Attempts per destination the rates and latencies are computed over.
pub const WINDOW: usize = 100;
/// Destinations remembered.
pub const MAX_DESTINATIONS: usize = 10_000;

#[derive(Default)]
pub struct DestinationHealth {
    by_destination: Mutex<HashMap<String, Record>>,
}

#[derive(Default, Clone)]
struct Record {
    /// Recent attempts, oldest first: whether each succeeded, and how long it took.
    recent: VecDeque<(bool, u32)>,
    failures_in_a_row: u32,
    last_attempt_at: UnixMillis,
    last_success_at: Option<UnixMillis>,
    last_error: Option<String>,
}

/// One destination's health, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthView {
    pub attempts: usize,
    pub succeeded: usize,
    /// Of the recent attempts, the share that succeeded (0 to 1).
    pub success_rate: f64,
    pub latency_ms_p50: u32,
    pub latency_ms_p99: u32,
    pub failures_in_a_row: u32,
    #[serde(serialize_with = "crate::domain::serialize_iso_millis")]
    pub last_attempt_at: UnixMillis,
    #[serde(serialize_with = "crate::domain::serialize_optional_iso_millis")]
    pub last_success_at: Option<UnixMillis>,
    pub last_error: Option<String>,
}

impl DestinationHealth {
    /// Record a finished attempt to `destination`; skipped attempts sent nothing and are not
    /// recorded.
    pub fn record(&self, destination: &str, succeeded: bool, took: Duration, error: Option<&str>) {
        let Ok(mut by_destination) = self.by_destination.lock() else {
            return;
        };
        if !by_destination.contains_key(destination) && by_destination.len() >= MAX_DESTINATIONS {
            let stalest = by_destination
                .iter()
                .min_by_key(|(_, record)| record.last_attempt_at)
                .map(|(key, _)| key.clone());
            if let Some(stalest) = stalest {
                by_destination.remove(&stalest);
            }
        }
        let record = by_destination.entry(destination.to_owned()).or_default();
        if record.recent.len() == WINDOW {
            record.recent.pop_front();
        }
        let took_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
        record.recent.push_back((succeeded, took_ms));
        let now = now_millis();
        record.last_attempt_at = now;
        if succeeded {
            record.failures_in_a_row = 0;
            record.last_success_at = Some(now);
        } else {
            record.failures_in_a_row = record.failures_in_a_row.saturating_add(1);
            record.last_error = error.map(str::to_owned);
        }
    }

    /// Every destination remembered, with its health.
    pub fn snapshot(&self) -> Vec<(String, HealthView)> {
        let Ok(by_destination) = self.by_destination.lock() else {
            return Vec::new();
        };
        by_destination
            .iter()
            .map(|(destination, record)| (destination.clone(), record.view()))
            .collect()
    }
}

impl Record {
    fn view(&self) -> HealthView {
        let attempts = self.recent.len();
        let succeeded = self.recent.iter().filter(|(ok, _)| *ok).count();
        let mut latencies: Vec<u32> = self.recent.iter().map(|(_, took)| *took).collect();
        latencies.sort_unstable();
        let percentile = |share: f64| -> u32 {
            match latencies.len() {
                0 => 0,
                len => latencies[((len as f64 * share).ceil() as usize).clamp(1, len) - 1],
            }
        };
        HealthView {
            attempts,
            succeeded,
            success_rate: match attempts {
                0 => 0.0,
                _ => succeeded as f64 / attempts as f64,
            },
            latency_ms_p50: percentile(0.5),
            latency_ms_p99: percentile(0.99),
            failures_in_a_row: self.failures_in_a_row,
            last_attempt_at: self.last_attempt_at,
            last_success_at: self.last_success_at,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_attempts_give_rates_latencies_and_the_run_of_failures() {
        let health = DestinationHealth::default();
        for took in 1..=10 {
            health.record("a.example", true, Duration::from_millis(took), None);
        }
        health.record(
            "a.example",
            false,
            Duration::from_millis(50),
            Some("receiver answered 500"),
        );
        health.record(
            "a.example",
            false,
            Duration::from_millis(60),
            Some("timed out"),
        );
        let (_, view) = health.snapshot().pop().unwrap();
        assert_eq!((view.attempts, view.succeeded), (12, 10));
        assert_eq!(view.failures_in_a_row, 2);
        assert_eq!(view.latency_ms_p50, 6);
        assert_eq!(view.latency_ms_p99, 60);
        assert_eq!(view.last_error.as_deref(), Some("timed out"));
        for _ in 0..WINDOW {
            health.record("a.example", true, Duration::from_millis(1), None);
        }
        let (_, view) = health.snapshot().pop().unwrap();
        assert_eq!(
            (view.attempts, view.success_rate, view.failures_in_a_row),
            (WINDOW, 1.0, 0)
        );
    }
}
