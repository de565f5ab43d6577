//! Pure domain types shared by every layer: event types, events, destinations, deliveries
//! and attempts. No I/O and no framework types live here, so the API, the store and the
//! delivery engine can all depend on this module without depending on each other.

mod destination;
mod event;
mod ids;

pub use destination::{Destination, DestinationSource, OutputFormat, RetryOverride};
pub use event::{EventType, Payload, UnknownEventType};
pub use ids::{ConfigId, DeliveryId, EventId, LeaseToken, NodeId};

use serde::{Deserialize, Serialize};

/// Where a delivery stands. `InFlight` means a worker holds a lease on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    InFlight,
    Succeeded,
    Failed,
    Skipped,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        Self::Queued,
        Self::InFlight,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InFlight => "in_flight",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// Deserialise an optional `project_id`: text without control characters, at most 256
/// bytes. It is stored as text, and PostgreSQL's text cannot hold a NUL at all.
pub fn optional_project_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let project: Option<String> = Option::deserialize(deserializer)?;
    if let Some(project) = &project {
        if project.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(
                "must not contain control characters",
            ));
        }
        if project.len() > 256 {
            return Err(serde::de::Error::custom("must be at most 256 bytes"));
        }
    }
    Ok(project)
}

/// Milliseconds since the Unix epoch; the store's one clock unit.
pub type UnixMillis = i64;

pub fn now_millis() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

/// One delivery attempt as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub number: u32,
    pub started_at: UnixMillis,
    pub duration_ms: u64,
    /// The receiver's status code, when it answered.
    pub response_status: Option<u16>,
    /// Why the attempt did not succeed (transport error, plugin failure, non-2xx...).
    pub error: Option<String>,
    /// The first bytes of the response body, lossily decoded.
    pub response_body: Option<String>,
}

/// An HTTP POST about to be sent: what the request builder makes, plugins reshape and the
/// signer and client consume.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl OutgoingRequest {
    /// Set a header, replacing every existing one of that name (case-insensitively).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.into()));
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}
