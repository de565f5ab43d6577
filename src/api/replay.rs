//! Bulk replay over the API: `POST /api/v1/deliveries/redeliver` starts a job that queues
//! again every finished delivery a search matches; `GET /api/v1/deliveries/redeliver` lists
//! this node's jobs and `GET /api/v1/deliveries/redeliver/{job_id}` shows one's progress.

use super::ops::DeliveryQuery;
use super::{ApiError, ApiState, parse_json};
use crate::domain::DeliveryStatus;
use crate::replay::{ReplayJob, ReplayRequest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The job's search: the delivery list's filters. Unknown fields are refused: a misspelt
/// filter would otherwise widen the replay to everything the rest matches.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing)]
    max_deliveries: Option<usize>,
    #[serde(default, skip_serializing)]
    dry_run: bool,
}

pub async fn start(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReplayJob>), ApiError> {
    let body: ReplayBody = parse_json(&body)?;
    let filter = DeliveryQuery {
        status: body.status.clone(),
        event_type: body.event_type.clone(),
        event_id: body.event_id.clone(),
        host: body.host.clone(),
        url: body.url.clone(),
        config_id: body.config_id.clone(),
        since: body.since.clone(),
        until: body.until.clone(),
        ..DeliveryQuery::default()
    }
    .filter()?;
    if !matches!(
        filter.status,
        Some(DeliveryStatus::Failed | DeliveryStatus::Succeeded | DeliveryStatus::Skipped)
    ) {
        return Err(ApiError::unprocessable(
            "status: a replay queues finished deliveries: give failed, succeeded or skipped",
        ));
    }
    let ceiling = state.config.limits.replay_max_deliveries;
    let max_deliveries = body.max_deliveries.unwrap_or(ceiling);
    if !(1..=ceiling).contains(&max_deliveries) {
        return Err(ApiError::unprocessable(format!(
            "max_deliveries: must be between 1 and {ceiling} (limits.replay_max_deliveries)"
        )));
    }
    let described = serde_json::to_value(&body).unwrap_or_default();
    let job = state
        .replays
        .start(ReplayRequest {
            filter,
            described,
            max_deliveries,
            dry_run: body.dry_run,
        })
        .map_err(|running| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a replay is running ({}); read its progress at GET /api/v1/deliveries/redeliver/{} and start this one when it ends",
                    running, running
                ),
            )
        })?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn jobs(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "jobs": state.replays.jobs() }))
}

pub async fn job(
    State(state): State<Arc<ApiState>>,
    Path(job_id): Path<String>,
) -> Result<Json<ReplayJob>, ApiError> {
    state.replays.job(&job_id).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "replay job {job_id:?} not found on this node (jobs are kept by the node that runs them)"
        ))
    })
}
