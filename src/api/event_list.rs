//! `GET /api/v1/events`: the events accepted, newest first, filtered by their own facts
//! (type, id, project, time) and by their deliveries (status, host, URL, saved config: an
//! event with at least one matching delivery), in keyset pages.

use super::ops::{DeliveryQuery, query_error};
use super::{ApiError, ApiState};
use crate::domain::{EventId, EventType};
use crate::store::{DeliveryFilter, EventCursor, EventFilter};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use std::sync::Arc;

/// A misspelt parameter is refused rather than ignored (it would widen the search).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    event_type: Option<String>,
    event_id: Option<String>,
    project_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    host: Option<String>,
    url: Option<String>,
    config_id: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

/// A position as a page token: `created_at.id.rowid`, which either store reads its part of.
fn token(cursor: &EventCursor) -> String {
    let id = cursor.id.as_ref().map_or("", |id| id.as_str());
    format!("{}.{id}.{}", cursor.created_at, cursor.rowid)
}

fn cursor(token: &str) -> Option<EventCursor> {
    let mut parts = token.splitn(3, '.');
    let created_at = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    let rowid = parts.next()?.parse().ok()?;
    Some(EventCursor {
        created_at,
        id: (!id.is_empty()).then(|| EventId::from(id)),
        rowid,
    })
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    // The shared parameters parse as the delivery search parses them.
    let parsed = DeliveryQuery {
        status: query.status.clone(),
        event_type: query.event_type.clone(),
        event_id: query.event_id.clone(),
        host: query.host.clone(),
        url: query.url.clone(),
        config_id: query.config_id.clone(),
        since: query.since.clone(),
        until: query.until.clone(),
        ..DeliveryQuery::default()
    }
    .filter()?;
    let by_delivery = DeliveryFilter {
        status: parsed.status,
        host: parsed.host.clone(),
        url_prefix: parsed.url_prefix.clone(),
        config_id: parsed.config_id.clone(),
        ..DeliveryFilter::default()
    };
    let filter = EventFilter {
        event_type: parsed.event_type.map(|event_type: EventType| event_type),
        event_id: parsed.event_id.clone(),
        project_id: query
            .project_id
            .as_deref()
            .map(str::trim)
            .filter(|project| !project.is_empty())
            .map(str::to_owned),
        created_from: parsed.created_from,
        created_before: parsed.created_before,
        deliveries: (by_delivery != DeliveryFilter::default()).then_some(by_delivery),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("limit: must be between 1 and 1000"));
    }
    let before = match query.page_token.as_deref() {
        None | Some("") => None,
        Some(text) => Some(cursor(text).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "page_token: {text:?} is not a token this API issued"
            ))
        })?),
    };
    let page = state
        .store
        .search_events(&filter, limit, before, state.config.limits.search_scan_rows)
        .await?;
    Ok(Json(serde_json::json!({
        "items": page.items,
        "next_page_token": page.next.as_ref().map(token),
    })))
}
