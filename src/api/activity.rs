//! `GET /api/v1/activity`: what the last window (an hour unless `window_seconds` says) holds,
//! for the console's overview: events accepted, the deliveries created in it by where they
//! stand now, and the queue as it is.

use super::ops::query_error;
use super::{ApiError, ApiState};
use crate::domain::{iso_millis, now_millis};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use std::sync::Arc;

const DEFAULT_WINDOW_SECONDS: u64 = 3600;
const MAX_WINDOW_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    window_seconds: Option<u64>,
}

pub async fn activity(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ActivityQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let window_seconds = query.window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
    if !(1..=MAX_WINDOW_SECONDS).contains(&window_seconds) {
        return Err(ApiError::unprocessable(format!(
            "window_seconds: must be between 1 and {MAX_WINDOW_SECONDS} (a week)"
        )));
    }
    // At most a week of milliseconds: far inside i64.
    let since = now_millis() - (window_seconds as i64) * 1000;
    let activity = state.store.activity_since(since).await?;
    let (queued, in_flight) = state.store.queue_by_state().await?;
    Ok(Json(serde_json::json!({
        "window_seconds": window_seconds,
        "since": iso_millis(since),
        "events_accepted": activity.events_accepted,
        "deliveries": {
            "waiting": activity.waiting,
            "succeeded": activity.succeeded,
            "failed": activity.failed,
            "skipped": activity.skipped,
        },
        "queue": { "queued": queued, "in_flight": in_flight },
    })))
}
