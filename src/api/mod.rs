//! The HTTP API (axum): routers, authentication, request parsing, and the one mapping from
//! errors to `{"detail": ...}` responses. Handlers are thin; the work is in plain functions
//! (`Ingest::accept`, the store's verbs) that tests and the benchmark can call too.

mod activity;
mod configs;
mod console;
mod destinations;
mod event_list;
mod events;
mod ops;
mod playground;
mod replay;
mod stream;

use crate::config::Config;
use crate::deliver::feed::AttemptFeed;
use crate::domain::NodeId;
use crate::egress::EgressGuard;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::replay::Replays;
use crate::store::{Store, StoreError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// What every handler shares.
pub struct ApiState {
    pub config: Arc<Config>,
    pub store: Store,
    pub plugins: PluginHost,
    pub egress: EgressGuard,
    pub metrics: Arc<Metrics>,
    /// Accepts events: validates, routes, commits, and tells the engine.
    pub ingest: Ingest,
    /// This process in the node list.
    pub node_id: NodeId,
    pub api_keys: Vec<String>,
    /// Finished attempts of this node, for `GET /api/v1/stream`.
    pub feed: AttemptFeed,
    /// Bulk replay jobs this node runs.
    pub replays: Arc<Replays>,
    /// Cancelled when shutdown begins: live streams end then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Each destination's recent attempts on this node.
    pub health: Arc<crate::deliver::health::DestinationHealth>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let limits = &state.config.limits;
    let authenticated = Router::new()
        .route(
            "/api/v1/events",
            post(events::ingest_one)
                .get(event_list::list)
                .layer(DefaultBodyLimit::max(limits.max_event_bytes)),
        )
        .route(
            "/api/v1/events/batch",
            post(events::ingest_batch).layer(DefaultBodyLimit::max(limits.max_batch_bytes)),
        )
        .route("/api/v1/events/{event_id}", get(ops::event))
        .route("/api/v1/deliveries", get(ops::deliveries))
        .route(
            "/api/v1/deliveries/redeliver",
            post(replay::start).get(replay::jobs),
        )
        .route("/api/v1/deliveries/redeliver/{job_id}", get(replay::job))
        .route("/api/v1/deliveries/{delivery_id}", get(ops::delivery))
        .route(
            "/api/v1/deliveries/{delivery_id}/redeliver",
            post(ops::redeliver),
        )
        .route("/api/v1/plugins", get(ops::plugins))
        .route(
            "/api/v1/plugins/preview",
            post(playground::preview).layer(DefaultBodyLimit::max(limits.max_event_bytes)),
        )
        .route("/api/v1/activity", get(activity::activity))
        .route("/api/v1/nodes", get(ops::nodes))
        .route("/api/v1/destinations", get(destinations::list))
        .route(
            "/api/v1/destinations/{destination}/pause",
            post(destinations::pause),
        )
        .route(
            "/api/v1/destinations/{destination}/resume",
            post(destinations::resume),
        )
        .route("/api/v1/stream", get(stream::attempts))
        .merge(configs::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(console::router())
        .merge(authenticated)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// An API error: a status and a `detail` that says what is wrong, naming the field.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        // Store internals stay in the log; the client learns only that it may retry.
        tracing::error!(%error, "store error while serving a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; retry later",
        )
    }
}

impl From<crate::routing::FieldError> for ApiError {
    fn from(error: crate::routing::FieldError) -> Self {
        ApiError::unprocessable(error.to_string())
    }
}

/// How long a client should wait before retrying after a 503: the store is usually back
/// (a reconnect, a failover) within a few seconds.
const RETRY_AFTER_SECONDS: &str = "2";
/// After a 429 for a full queue: the queue is recounted every second while it drains.
const QUEUE_FULL_RETRY_AFTER_SECONDS: &str = "1";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response();
        let retry_after = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_SECONDS),
            StatusCode::TOO_MANY_REQUESTS => Some(QUEUE_FULL_RETRY_AFTER_SECONDS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}

/// Parse a JSON body; errors name the field path (`events[2].event_type: ...`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("body is not valid JSON: {inner}"),
                )
            }
            _ => at_path(&path, &message),
        }
    })
}

/// Deserialise an already-parsed JSON value; errors name the field path as `parse_json`'s do.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        at_path(&path, &strip_position(&error.into_inner().to_string()))
    })
}

/// A 422 for the field at `path` (`.` is the body itself).
fn at_path(path: &str, message: &str) -> ApiError {
    let field = if path == "." { "body" } else { path };
    ApiError::unprocessable(format!("{field}: {message}"))
}

/// serde_json appends "at line 1 column 37"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A body the size limit or the transport rejected, as a `{"detail"}` error.
pub fn body_rejection(
    rejection: axum::extract::rejection::BytesRejection,
    limit: usize,
) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("body: request body is larger than the limit of {limit} bytes"),
        )
    } else {
        ApiError::new(status, format!("body: {}", rejection.body_text()))
    }
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key: send Authorization: Bearer <key>",
        )
        .into_response(),
        Some(key)
            if state
                .api_keys
                .iter()
                .any(|known| constant_time_eq(known.as_bytes(), key.as_bytes())) =>
        {
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").into_response(),
    }
}

/// Comparison whose time does not depend on where the inputs first differ.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
