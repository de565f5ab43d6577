//! Event ingestion (SPEC 8): validate, resolve destinations, and enqueue the event with all
//! its deliveries in one store transaction before answering 202.

use super::{ApiError, ApiState, body_rejection, parse_json};
use crate::deliver::Slot;
use crate::domain::{DestinationSource, EventType, Payload};
use crate::routing::{Checks, Subscription, WebhookConfig, route};
use crate::store::{
    ClaimedDelivery, DeliverySummary, EnqueueOutcome, NewDelivery, NewEvent, StoreError,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One event as a producer submits it.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestEvent {
    pub event_type: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub webhook_configurations: Option<Vec<WebhookConfig>>,
    #[serde(default)]
    pub webhook_configuration_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct IngestBatch {
    events: Vec<IngestEvent>,
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: String,
    pub deliveries: Vec<DeliverySummary>,
    /// Present and true when the event id had been accepted before: nothing new was queued.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

pub async fn ingest_one(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body =
        body.map_err(|rejection| body_rejection(rejection, state.config.limits.max_event_bytes))?;
    let event: IngestEvent = parse_json(&body)?;
    let mut accepted = accept_events(&state, vec![event], false).await?;
    let first = accepted
        .pop()
        .ok_or_else(|| ApiError::unprocessable("no event accepted"))?;
    Ok((StatusCode::ACCEPTED, Json(first)))
}

pub async fn ingest_batch(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body =
        body.map_err(|rejection| body_rejection(rejection, state.config.limits.max_batch_bytes))?;
    let batch: IngestBatch = parse_json(&body)?;
    let max_events = state.config.limits.max_batch_events;
    if batch.events.is_empty() {
        return Err(ApiError::unprocessable(
            "events: must hold at least one event",
        ));
    }
    if batch.events.len() > max_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "events: {} events is over the limit of {max_events} per batch",
                batch.events.len()
            ),
        ));
    }
    let accepted = accept_events(&state, batch.events, true).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "events": accepted })),
    ))
}

/// Validate and enqueue `events` atomically: either every event is stored with its
/// deliveries, or none is and the error names the first bad field.
pub async fn accept_events(
    state: &ApiState,
    events: Vec<IngestEvent>,
    in_batch: bool,
) -> Result<Vec<Accepted>, ApiError> {
    let saved = load_saved_configs(state, &events, in_batch).await?;
    let timestamp = unix_seconds_now();
    let mut prepared = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let prefix = if in_batch {
            format!("events[{index}].")
        } else {
            String::new()
        };
        prepared.push(prepare(state, event, &prefix, &saved, timestamp)?);
    }
    let handoffs = hand_over(state, &mut prepared);
    // Stored and started in a task of its own: if the producer hangs up while the commit
    // is pending, the handler is dropped, but deliveries committed in flight must still start.
    let (store, engine, metrics) = (
        state.store.clone(),
        state.engine.clone(),
        state.metrics.clone(),
    );
    let outcomes = tokio::spawn(async move {
        let outcomes = store.enqueue(prepared).await?;
        metrics
            .events_ingested
            .inc_by(outcomes.iter().filter(|outcome| !outcome.duplicate).count() as u64);
        let mut stored_queued = false;
        for (outcome, handoff) in outcomes.iter().zip(handoffs) {
            if outcome.duplicate {
                continue; // its slots go back unused
            }
            stored_queued |= handoff.stored_queued;
            metrics
                .deliveries_handed_off
                .inc_by(handoff.started.len() as u64);
            for (delivery, slot) in handoff.started {
                engine.start(delivery, slot);
            }
        }
        if stored_queued {
            engine.queued_in_store();
        }
        Ok::<_, StoreError>(outcomes)
    })
    .await
    .map_err(|error| StoreError::Corrupt(format!("the store task failed: {error}")))??;
    Ok(outcomes.into_iter().map(accepted).collect())
}

/// One event's deliveries the engine takes straight from ingest, and whether others of its
/// deliveries wait queued in the store.
struct Handoff {
    started: Vec<(ClaimedDelivery, Slot)>,
    stored_queued: bool,
}

/// Give every delivery whose destination has a free slot a lease, so it is stored in flight
/// and started as soon as the event is committed, without a claim reading it back.
fn hand_over(state: &ApiState, events: &mut [NewEvent]) -> Vec<Handoff> {
    let mut lease = None;
    events
        .iter_mut()
        .map(|event| {
            let mut handoff = Handoff {
                started: Vec::new(),
                stored_queued: false,
            };
            let mut payload: Option<Arc<str>> = None;
            for delivery in &mut event.deliveries {
                let key = delivery.destination.concurrency_key();
                let Some(slot) = state.engine.slot_for_handoff(&key) else {
                    handoff.stored_queued = true;
                    continue;
                };
                let lease = lease.get_or_insert_with(|| state.engine.new_lease());
                delivery.lease = Some(lease.clone());
                let payload = payload.get_or_insert_with(|| Arc::from(event.payload.as_str()));
                handoff.started.push((
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
            handoff
        })
        .collect()
}

fn accepted(outcome: EnqueueOutcome) -> Accepted {
    Accepted {
        event_id: outcome.event_id,
        deliveries: outcome.deliveries,
        duplicate: outcome.duplicate,
    }
}

/// Every saved configuration the events name, fetched in one store read.
async fn load_saved_configs(
    state: &ApiState,
    events: &[IngestEvent],
    in_batch: bool,
) -> Result<BTreeMap<String, crate::store::SavedConfig>, ApiError> {
    let mut ids: Vec<String> = events
        .iter()
        .flat_map(|event| event.webhook_configuration_ids.iter().flatten().cloned())
        .collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    ids.sort();
    ids.dedup();
    let found = state.store.configs_by_id(ids).await?;
    let found: BTreeMap<_, _> = found
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
                let prefix = if in_batch {
                    format!("events[{index}].")
                } else {
                    String::new()
                };
                return Err(ApiError::unprocessable(format!(
                    "{prefix}webhook_configuration_ids[{position}]: no webhook configuration with id {id:?}"
                )));
            }
        }
    }
    Ok(found)
}

fn prepare(
    state: &ApiState,
    event: IngestEvent,
    prefix: &str,
    saved: &BTreeMap<String, crate::store::SavedConfig>,
    timestamp: f64,
) -> Result<NewEvent, ApiError> {
    let event_type = EventType::parse(&event.event_type)
        .map_err(|error| ApiError::unprocessable(format!("{prefix}event_type: {error}")))?;
    let event_id = match &event.event_id {
        Some(given) => uuid::Uuid::parse_str(given)
            .map_err(|_| {
                ApiError::unprocessable(format!("{prefix}event_id: {given:?} is not a UUID"))
            })?
            .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let data = event
        .data
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !data.is_object() {
        return Err(ApiError::unprocessable(format!(
            "{prefix}data: must be a JSON object"
        )));
    }
    let plugin_exists = |name: &str| state.plugins.exists(name);
    let checks = Checks {
        egress: &state.egress,
        plugin_exists: &plugin_exists,
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
            return Err(ApiError::unprocessable(format!(
                "{path}: no webhook configuration with id {id:?}"
            )));
        };
        let config = super::configs::to_webhook_config(stored)
            .map_err(|message| ApiError::unprocessable(format!("{path}: {message}")))?;
        let source = DestinationSource::Saved {
            config_id: stored.id.clone(),
        };
        let subscription = config.validate("", &checks, source).map_err(|error| {
            ApiError::unprocessable(format!(
                "{path}: saved configuration is no longer valid: {error}"
            ))
        })?;
        subscriptions.push(subscription);
    }
    let mut destinations = route(event_type, &subscriptions);
    for (scope, subscription) in &state.routes {
        let in_scope = scope
            .as_ref()
            .is_none_or(|project| event.project_id.as_ref() == Some(project));
        if in_scope && subscription.filter.accepts(event_type) {
            destinations.push(subscription.destination.clone());
        }
    }
    let payload = serde_json::to_string(&Payload {
        event_id: &event_id,
        event_type,
        timestamp,
        data: &data,
    })
    .map_err(|error| ApiError::unprocessable(format!("{prefix}data: {error}")))?;
    if payload.len() > state.config.limits.max_event_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{prefix}data: the event payload is {} bytes, over the limit of {} bytes",
                payload.len(),
                state.config.limits.max_event_bytes
            ),
        ));
    }
    Ok(NewEvent {
        id: event_id,
        event_type: event_type.as_str().to_owned(),
        project_id: event.project_id,
        timestamp,
        payload,
        deliveries: destinations
            .into_iter()
            .map(|destination| NewDelivery {
                id: uuid::Uuid::now_v7().to_string(),
                destination,
                lease: None,
            })
            .collect(),
    })
}

fn unix_seconds_now() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}
