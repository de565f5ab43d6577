//! The operations API (SPEC 9): event and delivery look-ups, the delivery search,
//! redelivery, the plugin listing and node list, and health, readiness and metrics.

use super::{ApiError, ApiState};
use crate::cluster::Node;
use crate::domain::{
    ConfigId, DeliveryId, DeliveryStatus, EventId, EventType, UnixMillis, host_filter, iso_millis,
    now_millis,
};
use crate::store::{DeliveryFilter, DeliveryView, EventView};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub async fn event(
    State(state): State<Arc<ApiState>>,
    Path(event_id): Path<EventId>,
) -> Result<Json<EventView>, ApiError> {
    state
        .store
        .event(&event_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("event {:?} not found", event_id.as_str())))
}

pub async fn delivery(
    State(state): State<Arc<ApiState>>,
    Path(delivery_id): Path<DeliveryId>,
) -> Result<Json<DeliveryView>, ApiError> {
    state
        .store
        .delivery(&delivery_id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("delivery {:?} not found", delivery_id.as_str()))
        })
}

/// A misspelt parameter is refused rather than ignored: ignored, it would widen a search to
/// everything the rest matches.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub(super) status: Option<String>,
    pub(super) event_type: Option<String>,
    pub(super) event_id: Option<String>,
    pub(super) host: Option<String>,
    pub(super) url: Option<String>,
    pub(super) config_id: Option<String>,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) limit: Option<usize>,
    pub(super) page_token: Option<String>,
    /// The live stream's filter on how an attempt ended; the list has `status` instead.
    pub(super) outcome: Option<String>,
}

/// A query parameter that is absent or empty is no filter.
fn given(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// An ISO 8601 (RFC 3339) time parameter as epoch milliseconds.
fn time_param(name: &str, value: &Option<String>) -> Result<Option<UnixMillis>, ApiError> {
    given(value)
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| at.timestamp_millis())
                .map_err(|_| {
                    ApiError::unprocessable(format!(
                        "{name}: {text:?} is not an ISO 8601 time such as 2026-11-30T23:54:16Z"
                    ))
                })
        })
        .transpose()
}

impl DeliveryQuery {
    pub(super) fn filter(&self) -> Result<DeliveryFilter, ApiError> {
        let status = given(&self.status)
            .map(|text| {
                DeliveryStatus::parse(text).ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "status: {text:?} is not one of queued, in_flight, succeeded, failed, skipped"
                    ))
                })
            })
            .transpose()?;
        let event_type = given(&self.event_type)
            .map(|text| {
                EventType::parse(text)
                    .map_err(|error| ApiError::unprocessable(format!("event_type: {error}")))
            })
            .transpose()?;
        let host = given(&self.host)
            .map(|text| {
                host_filter(text).ok_or_else(|| {
                    ApiError::unprocessable(format!(
                        "host: {text:?} is not a host, or host:port, such as hooks.example.com"
                    ))
                })
            })
            .transpose()?;
        Ok(DeliveryFilter {
            status,
            event_type,
            event_id: given(&self.event_id).map(EventId::from),
            host,
            url_prefix: given(&self.url).map(str::to_owned),
            config_id: given(&self.config_id).map(ConfigId::from),
            created_from: time_param("since", &self.since)?,
            created_before: time_param("until", &self.until)?,
        })
    }
}

/// A query string that does not parse, as a 422 `{"detail"}` naming the parameter like every
/// other validation error; axum's own rejection is a plain-text 400.
pub(super) fn query_error(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    ApiError::unprocessable(detail)
}

pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let filter = query.filter()?;
    if given(&query.outcome).is_some() {
        return Err(ApiError::unprocessable(
            "outcome: the list filters deliveries by status; outcome filters the live stream",
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("limit: must be between 1 and 1000"));
    }
    let before = match query.page_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(token.parse::<i64>().map_err(|_| {
            ApiError::unprocessable(format!(
                "page_token: {token:?} is not a token this API issued"
            ))
        })?),
    };
    let page = state
        .store
        .search_deliveries(&filter, limit, before, state.config.limits.search_scan_rows)
        .await?;
    Ok(Json(serde_json::json!({
        "items": page.items,
        "next_page_token": page.next_cursor.map(|seq| seq.to_string()),
    })))
}

pub async fn redeliver(
    State(state): State<Arc<ApiState>>,
    Path(delivery_id): Path<DeliveryId>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let view = state.store.redeliver(&delivery_id).await?.ok_or_else(|| {
        ApiError::not_found(format!("delivery {:?} not found", delivery_id.as_str()))
    })?;
    state
        .ingest
        .engine
        .committed(crate::deliver::Handover::requeued(), &[]);
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub async fn plugins(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "plugins": state.plugins.list() }))
}

/// The gateway processes sharing this store, and which one answered.
pub async fn nodes(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alive_within = Node::alive_within_ms(Duration::from_millis(
        state.config.delivery.node_heartbeat_ms,
    ));
    let now = now_millis();
    let nodes: Vec<serde_json::Value> = state
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|node| {
            serde_json::json!({
                "id": node.id,
                "listen": node.listen,
                "version": node.version,
                "started_at": iso_millis(node.started_at),
                "last_heartbeat_at": iso_millis(node.heartbeat_at),
                "alive": now - node.heartbeat_at <= alive_within,
                "this_node": node.id == state.node_id,
                "in_flight": node.in_flight,
                "destination_share": node.destination_share,
                "plugins": node.plugins,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "nodes": nodes })))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    if let Err(error) = state.ingest.check_writes().await {
        tracing::warn!(%error, "the store still cannot commit writes");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store cannot commit writes (a full disk, an I/O error or a read-only database); ingest answers 503 until it can",
        ));
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// `/metrics`: the classic Prometheus text format unless the scraper asks for OpenMetrics
/// (Prometheus itself does, by `Accept`).
pub async fn metrics(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    match state.store.queue_by_state().await {
        Ok((queued, in_flight)) => state.metrics.set_queue(queued, in_flight),
        Err(error) => tracing::warn!(%error, "queue depth unavailable for /metrics"),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    match openmetrics {
        true => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render_openmetrics(),
        ),
        false => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render_prometheus(),
        ),
    }
}
