//! Pure domain types shared by every layer: event types, events, destinations, deliveries
//! and attempts, with the rules that belong to them: which headers the gateway owns, how
//! recorded text is clipped and how URLs are shown without their credentials. No I/O and no
//! framework types live here, so the API, the store and the delivery engine can all depend
//! on this module without depending on each other.

mod destination;
mod event;
mod exchange;
pub mod headers;
mod ids;

pub use destination::{
    Destination, DestinationSource, OutputFormat, PreviousSecret, RetryOverride, concurrency_key,
};
pub use event::{EventType, Payload, UnknownEventType};
pub use exchange::{
    Exchange, MAX_RECORDED_HEADER_VALUE_BYTES, MAX_RECORDED_RESPONSE_HEADERS, RecordedRequest,
    shown_value,
};
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

/// Epoch milliseconds as ISO 8601 UTC with milliseconds (`2026-11-30T23:54:16.123Z`), the
/// form every API timestamp and log line uses.
pub fn iso_millis(millis: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Serialise epoch milliseconds through [`iso_millis`].
pub fn serialize_iso_millis<S: serde::Serializer>(
    millis: &UnixMillis,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&iso_millis(*millis))
}

/// Serialise optional epoch milliseconds through [`iso_millis`]; `None` stays `null`.
pub fn serialize_optional_iso_millis<S: serde::Serializer>(
    millis: &Option<UnixMillis>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match millis {
        Some(millis) => serializer.serialize_str(&iso_millis(*millis)),
        None => serializer.serialize_none(),
    }
}

/// Bytes kept of a plugin's error or skip reason on an attempt record (a receiver's response
/// body has its own setting, `delivery.response_body_bytes`).
pub const MAX_RECORDED_TEXT_BYTES: usize = 4 * 1024;

/// `text` cut to at most `max_bytes` (on a character boundary), with a marker saying how
/// long it was, so a stored prefix is never mistaken for the whole.
pub fn clip_text(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated: {} bytes in all]", &text[..end], text.len())
}

/// `url` as it may be shown: credentials in its userinfo (`https://user:secret@host/`)
/// become `***`, so views, logs and API answers never echo them. The stored URL keeps them;
/// the HTTP client turns them into a Basic `Authorization` header.
pub fn redacted_url(url: &str) -> std::borrow::Cow<'_, str> {
    // Userinfo ends with an `@`; without one there is nothing to hide, and nothing to parse
    // (every delivery in every ingest answer and list passes through here).
    if !url.contains('@') {
        return std::borrow::Cow::Borrowed(url);
    }
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Setting userinfo fails only for URLs that cannot have one (no host), which
            // the checks above rule out; the unredacted text is never the fallback.
            let redacted = parsed.set_password(None).is_ok() && parsed.set_username("***").is_ok();
            match redacted {
                true => std::borrow::Cow::Owned(parsed.into()),
                false => std::borrow::Cow::Borrowed("[url with credentials]"),
            }
        }
        _ => std::borrow::Cow::Borrowed(url),
    }
}

/// The host a URL points at, as logs, metric labels and the `host` search filter name it:
/// lower case, international names in punycode, IPv6 in brackets, and the port only when it
/// is not the scheme's default. Never credentials, path or query.
pub fn display_host(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "(no host)".to_owned(),
        },
        Err(_) => "(unparsable url)".to_owned(),
    }
}

/// A `host` filter as typed (`Hooks.Example.com`, `hooks.example.com:443`) in the form
/// [`display_host`] writes, or `None` when it is not a host with an optional port. Either
/// default port is dropped: the filter does not know the scheme.
pub fn host_filter(text: &str) -> Option<String> {
    if text.contains(['/', '?', '#', '@']) || text.chars().any(char::is_whitespace) {
        return None;
    }
    let parsed = url::Url::parse(&format!("http://{text}/")).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        None | Some(443) => host.to_owned(),
        Some(port) => format!("{host}:{port}"),
    })
}

/// Serialise a URL field through [`redacted_url`].
pub fn serialize_redacted_url<S: serde::Serializer>(
    url: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(url))
}

/// One delivery attempt as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub number: u32,
    #[serde(serialize_with = "serialize_iso_millis")]
    pub started_at: UnixMillis,
    pub duration_ms: u64,
    /// The receiver's status code, when it answered.
    pub response_status: Option<u16>,
    /// Why the attempt did not succeed (transport error, plugin failure, non-2xx...).
    pub error: Option<String>,
    /// The first bytes of the response body, lossily decoded.
    pub response_body: Option<String>,
    /// The request as sent and the response's headers; `None` when nothing was sent (the
    /// plugin failed or skipped) or the record predates them.
    #[serde(flatten)]
    pub exchange: Option<Exchange>,
}

impl Exchange {
    /// As stored: JSON text, with the number of the attempt it belongs to. The number is what
    /// tells a record apart from a stale one: a node of an older build finishing the next
    /// attempt leaves the row's record as it was.
    pub fn to_stored(&self, attempt: u32) -> String {
        let mut stored = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = stored.as_object_mut() {
            fields.insert("attempt".to_owned(), attempt.into());
        }
        stored.to_string()
    }

    /// From its stored text, if it belongs to attempt `attempt`; a record that does not parse
    /// or belongs to another attempt is shown as none.
    pub fn from_stored(text: Option<&str>, attempt: u32) -> Option<Exchange> {
        let stored: serde_json::Value = serde_json::from_str(text?).ok()?;
        if stored.get("attempt").and_then(serde_json::Value::as_u64) != Some(u64::from(attempt)) {
            return None;
        }
        serde_json::from_value(stored).ok()
    }
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

#[cfg(test)]
mod tests {
    use super::{clip_text, redacted_url};

    #[test]
    fn credentials_in_urls_are_never_shown() {
        assert_eq!(
            redacted_url("https://user:s3cret@hooks.example.com/in?x=1"),
            "https://***@hooks.example.com/in?x=1"
        );
        assert_eq!(
            redacted_url("https://token@hooks.example.com/"),
            "https://***@hooks.example.com/"
        );
        assert_eq!(
            redacted_url("https://:s3cret@hooks.example.com/"),
            "https://***@hooks.example.com/"
        );
        assert_eq!(
            redacted_url("https://hooks.example.com/a@b"),
            "https://hooks.example.com/a@b"
        );
    }

    #[test]
    fn hosts_are_named_one_way() {
        use super::{display_host, host_filter};
        assert_eq!(
            display_host("https://Hooks.Example.com:443/x?t=1"),
            "hooks.example.com"
        );
        assert_eq!(display_host("http://u:p@127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(display_host("http://[::1]:9/"), "[::1]:9");
        assert_eq!(
            display_host("https://bücher.example/"),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            host_filter("HOOKS.example.com:443").as_deref(),
            Some("hooks.example.com")
        );
        assert_eq!(
            host_filter("LocalHost:8080").as_deref(),
            Some("localhost:8080")
        );
        assert_eq!(
            host_filter("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(host_filter("a/b"), None);
        assert_eq!(host_filter("u@h"), None);
    }

    #[test]
    fn clipped_text_says_how_long_it_was() {
        assert_eq!(clip_text("short", 10), "short");
        assert_eq!(
            clip_text("abcdefghij", 4),
            "abcd… [truncated: 10 bytes in all]"
        );
        // Never cuts a character in half: "é" is two bytes.
        assert_eq!(clip_text("aé", 2), "a… [truncated: 3 bytes in all]");
    }
}
