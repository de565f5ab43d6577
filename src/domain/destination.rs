//! A destination: where and how one delivery is sent. Ingest resolves every inline, saved or
//! operator-routed configuration into this snapshot and stores it with the delivery, so a
//! queued delivery is sent as its destination was when the event was accepted.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// The body is the payload object.
    Json,
    /// The body is the payload serialised to JSON, then encoded again as a JSON string.
    #[default]
    String,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::String => "string",
        }
    }
}

/// Per-destination overrides of the global retry policy; `None` keeps the global value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

/// Which kind of configuration produced a destination; shown in delivery look-ups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationSource {
    Inline,
    Saved { config_id: super::ConfigId },
    Route { name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub url: String,
    /// Custom headers in configuration order; validated as HTTP at ingest.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub output_format: OutputFormat,
    /// HMAC key. A `whsec_` secret also turns on Standard Webhooks signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// The secret a rotation replaced, still signing beside the current one until its
    /// window ends (saved configurations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_secret: Option<PreviousSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_config: Option<serde_json::Value>,
    #[serde(default)]
    pub retry: RetryOverride,
    pub source: DestinationSource,
}

/// A signing secret that was replaced and stays valid until `until`, so receivers can move
/// to the new one without refusing deliveries signed with the old one meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: super::UnixMillis,
}

impl PreviousSecret {
    /// The secret, if its window has not ended at `now`.
    pub fn valid_at(&self, now: super::UnixMillis) -> Option<&str> {
        (now < self.until).then_some(self.secret.as_str())
    }
}

impl Destination {
    /// The key that per-destination concurrency limits are counted under: scheme, host and
    /// port, so every path on one receiver shares its budget.
    pub fn concurrency_key(&self) -> String {
        concurrency_key(&self.url)
    }
}

pub fn concurrency_key(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or(after_scheme);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    authority.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_key_is_the_authority() {
        assert_eq!(concurrency_key("http://A.example:80/x?y"), "a.example:80");
        assert_eq!(concurrency_key("https://u:p@host/p"), "host");
        assert_eq!(concurrency_key("http://[::1]:9/"), "[::1]:9");
    }
}
