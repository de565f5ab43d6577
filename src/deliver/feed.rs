//! The live feed of finished attempts: every attempt this node records is published here
//! once it is stored, for the API's server-sent event stream (`GET /api/v1/stream`) and so
//! for `hookgate tail`.
//!
//! A broadcast channel with a bounded backlog per subscriber: a watcher that falls behind
//! loses the oldest attempts and is told how many, and never slows delivery down. With no
//! subscriber, publishing builds nothing.

use crate::domain::{
    DeliveryId, DeliveryStatus, DestinationSource, EventId, UnixMillis, serialize_iso_millis,
    serialize_optional_iso_millis, serialize_redacted_url,
};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Attempts a subscriber may fall behind by before it misses some.
const BACKLOG: usize = 4096;

/// One attempt as it finished, as the stream shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedAttempt {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    #[serde(serialize_with = "serialize_redacted_url")]
    pub webhook_url: String,
    pub source: DestinationSource,
    pub attempt: u32,
    /// `succeeded`, `retry`, `failed` (dead-lettered) or `skipped`.
    pub outcome: &'static str,
    /// The delivery's status after the attempt (`queued` when it will retry).
    pub status: DeliveryStatus,
    pub response_status: Option<u16>,
    pub error: Option<String>,
    #[serde(serialize_with = "serialize_iso_millis")]
    pub started_at: UnixMillis,
    pub duration_ms: u64,
    #[serde(serialize_with = "serialize_optional_iso_millis")]
    pub next_attempt_at: Option<UnixMillis>,
}

#[derive(Clone)]
pub struct AttemptFeed {
    sender: broadcast::Sender<Arc<FinishedAttempt>>,
}

impl Default for AttemptFeed {
    fn default() -> Self {
        AttemptFeed {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl AttemptFeed {
    /// Whether anyone watches: callers skip building the attempt when nobody does.
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, attempt: FinishedAttempt) {
        // No subscriber is not an error: the attempt is stored either way.
        let _ = self.sender.send(Arc::new(attempt));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FinishedAttempt>> {
        self.sender.subscribe()
    }
}
