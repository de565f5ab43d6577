//! `GET /api/v1/destinations`: each destination's health as this node sees it (recent
//! success rate, latencies, the run of failures, last error), its pause, what it has in
//! flight, what waits for it in the store, and its configured rate limit; paused and failing
//! destinations first. `POST /api/v1/destinations/{destination}/pause` and `/resume` are an
//! operator's hand on the breaker.

use super::{ApiError, ApiState};
use crate::deliver::health::HealthView;
use crate::domain::host_filter;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The longest destination name a pause accepts: a DNS name and a port.
const MAX_DESTINATION_BYTES: usize = 260;

/// Failures in a row from which a destination is shown as failing.
const FAILING_AFTER: u32 = 3;

#[derive(Debug, Serialize)]
pub struct DestinationView {
    /// The destination as the engine counts it: host and port as the URLs give them.
    pub destination: String,
    /// `paused` (by its breaker or an operator), `failing` (its last attempts failed),
    /// `healthy`, or `idle` (no attempt seen by this node since it started).
    pub state: &'static str,
    /// While paused by its breaker: when its probe may go (ISO 8601).
    #[serde(serialize_with = "crate::domain::serialize_optional_iso_millis")]
    pub paused_until: Option<crate::domain::UnixMillis>,
    /// While paused: `breaker` or `operator`.
    pub paused_by: Option<&'static str>,
    /// Attempts running on this node.
    pub in_flight: usize,
    /// Deliveries queued or in flight for it, on every node.
    pub waiting: u64,
    pub rate_per_second: Option<f64>,
    /// This node's view of its recent attempts; `null` when it has seen none.
    pub health: Option<HealthView>,
}

pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut rows: BTreeMap<String, DestinationView> = BTreeMap::new();
    let blank = |destination: &str| DestinationView {
        destination: destination.to_owned(),
        state: "idle",
        paused_until: None,
        paused_by: None,
        in_flight: 0,
        waiting: 0,
        rate_per_second: None,
        health: None,
    };
    for (destination, waiting) in state.store.waiting_by_destination().await? {
        rows.entry(destination.clone())
            .or_insert_with(|| blank(&destination))
            .waiting = waiting;
    }
    for (destination, running) in state.ingest.engine.running_by_destination() {
        rows.entry(destination.clone())
            .or_insert_with(|| blank(&destination))
            .in_flight = running;
    }
    for (destination, health) in state.health.snapshot() {
        rows.entry(destination.clone())
            .or_insert_with(|| blank(&destination))
            .health = Some(health);
    }
    for (destination, pause) in state.ingest.engine.paused_destinations() {
        let row = rows
            .entry(destination.clone())
            .or_insert_with(|| blank(&destination));
        row.paused_until = pause.until;
        row.paused_by = Some(if pause.by_operator {
            "operator"
        } else {
            "breaker"
        });
    }
    let rates = state.config.rate_limits();
    let mut views: Vec<DestinationView> = rows
        .into_values()
        .map(|mut view| {
            view.state = match &view.health {
                _ if view.paused_by.is_some() => "paused",
                None => "idle",
                Some(health) if health.failures_in_a_row >= FAILING_AFTER => "failing",
                Some(_) => "healthy",
            };
            view.rate_per_second =
                host_filter(&view.destination).and_then(|host| rates.get(&host).copied());
            view
        })
        .collect();
    views.sort_by_key(|view| {
        std::cmp::Reverse((
            view.paused_by.is_some(),
            view.health
                .as_ref()
                .map_or(0, |health| health.failures_in_a_row),
        ))
    });
    Ok(Json(serde_json::json!({ "destinations": views })))
}

/// The destination named in a path, as the engine keys it (lower case). Anything but a
/// host with an optional port is refused: the name is stored and shown to every node.
fn destination_key(destination: &str) -> Result<String, ApiError> {
    if destination.len() > MAX_DESTINATION_BYTES
        || destination.chars().any(char::is_control)
        || host_filter(destination).is_none()
    {
        return Err(ApiError::unprocessable(format!(
            "destination: {destination:?} is not a host or host:port as GET /api/v1/destinations lists them"
        )));
    }
    Ok(destination.to_ascii_lowercase())
}

/// An operator's pause, until resumed, on every node (the others at their next heartbeat).
pub async fn pause(
    State(state): State<Arc<ApiState>>,
    Path(destination): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let destination = destination_key(&destination)?;
    let changed = state.ingest.engine.pause_destination(&destination).await?;
    Ok(Json(
        serde_json::json!({"destination": destination, "paused": true, "changed": changed}),
    ))
}

/// An operator's resume of any pause: an operator's pause on every node (the others at
/// their next heartbeat), a breaker's on the node that answers.
pub async fn resume(
    State(state): State<Arc<ApiState>>,
    Path(destination): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let destination = destination_key(&destination)?;
    let changed = state.ingest.engine.resume_destination(&destination).await?;
    Ok(Json(
        serde_json::json!({"destination": destination, "paused": false, "changed": changed}),
    ))
}
