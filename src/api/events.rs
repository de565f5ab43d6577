//! Event ingestion endpoints (SPEC 8): parse the body, enforce the batch limits, call
//! [`Ingest::accept`](crate::ingest::Ingest::accept), and answer 202 once it has committed.

use super::{ApiError, ApiState, body_rejection, parse_json};
use crate::ingest::{Accepted, IngestError, IngestEvent};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
struct IngestBatch {
    events: Vec<IngestEvent>,
}

/// Serialised as it is, not through a `serde_json::Value` (a copy of every event's answer).
#[derive(Serialize)]
pub struct BatchAccepted {
    events: Vec<Accepted>,
}

pub async fn ingest_one(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body =
        body.map_err(|rejection| body_rejection(rejection, state.config.limits.max_event_bytes))?;
    let event: IngestEvent = parse_json(&body)?;
    let mut accepted = state.ingest.accept(vec![event], false).await?;
    let first = accepted
        .pop()
        .ok_or_else(|| ApiError::unprocessable("no event accepted"))?;
    Ok((StatusCode::ACCEPTED, Json(first)))
}

pub async fn ingest_batch(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
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
    let events = state.ingest.accept(batch.events, true).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchAccepted { events })))
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Invalid(field) => field.into(),
            IngestError::TooLarge(field) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, field.to_string())
            }
            error @ IngestError::QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
            }
            IngestError::Store(error) => error.into(),
        }
    }
}
