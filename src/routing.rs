//! Routing: turning webhook configurations into validated destinations, and an event into
//! the destinations that want it. Pure and synchronous; the API layer feeds it configs and
//! knows nothing of how they are checked.

use crate::domain::{
    Destination, DestinationSource, EventType, OutputFormat, RetryOverride, headers as header_rules,
};
use crate::egress::EgressGuard;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Headers the gateway sets itself; a configured value for one of these is ignored, as
/// SPEC 4 says of `Content-Type`, so signatures and event ids cannot be spoofed.
/// Headers every request carries before a destination's own: `Content-Type`, `User-Agent`
/// and the two event identity headers. A destination's headers must leave room for them.
const STANDARD_HEADERS: usize = 4;

/// Upper bounds of per-destination retry overrides.
pub const MAX_ATTEMPTS: u64 = 100;
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
pub const MAX_TIMEOUT_MS: u64 = 120_000;

/// The write-only field of a configuration, stored apart from the others.
pub const SECRET_FIELD: &str = "webhook_signing_secret";

/// A webhook configuration as LlamaCloud names its fields, plus hookgate's extensions.
/// Unknown fields are ignored, as LlamaCloud's API does.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct WebhookConfig {
    pub webhook_url: String,
    #[serde(default)]
    pub webhook_events: Option<Vec<String>>,
    #[serde(default)]
    pub webhook_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub webhook_output_format: Option<OutputFormat>,
    #[serde(default)]
    pub webhook_signing_secret: Option<String>,
    #[serde(default)]
    pub webhook_transform: Option<String>,
    #[serde(default)]
    pub webhook_transform_config: Option<serde_json::Value>,
    #[serde(default)]
    pub webhook_retry: Option<RetryOverride>,
}

/// Which events a destination receives.
#[derive(Debug, Clone, PartialEq)]
pub enum EventFilter {
    All,
    /// Exact types, or `family.*` patterns for operator routes.
    Matching(Vec<String>),
}

impl EventFilter {
    pub fn accepts(&self, event_type: EventType) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Matching(patterns) => patterns
                .iter()
                .any(|pattern| event_type.matches_pattern(pattern)),
        }
    }
}

/// A validated configuration: the filter and the destination snapshot.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub filter: EventFilter,
    pub destination: Destination,
}

/// A validation failure naming the offending field by its JSON path.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What validation needs from the rest of the gateway.
pub struct Checks<'a> {
    pub egress: &'a EgressGuard,
    /// Why the named plugin cannot be used (not installed, still compiling, failed to
    /// load); `None` when it is installed.
    pub plugin_missing: &'a dyn Fn(&str) -> Option<String>,
    /// Operator routes may use `family.*` patterns; API configurations name exact types.
    pub allow_patterns: bool,
}

impl WebhookConfig {
    /// A saved configuration as ingest validates it: the stored settings with the secret,
    /// which the store keeps apart, put back.
    pub fn from_saved(
        settings: &serde_json::Value,
        signing_secret: Option<&str>,
    ) -> Result<WebhookConfig, String> {
        let mut fields = settings.clone();
        if let (Some(secret), Some(object)) = (signing_secret, fields.as_object_mut()) {
            object.insert(SECRET_FIELD.into(), secret.into());
        }
        serde_json::from_value(fields)
            .map_err(|error| format!("stored configuration is unreadable: {error}"))
    }

    /// Validate every field; `path` prefixes field names in errors (`webhook_configurations[2]`).
    pub fn validate(
        &self,
        path: &str,
        checks: &Checks<'_>,
        source: DestinationSource,
    ) -> Result<Subscription, FieldError> {
        let field = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        validate_url(&self.webhook_url, checks.egress)
            .map_err(|message| FieldError::new(field("webhook_url"), message))?;
        let filter = match &self.webhook_events {
            None => EventFilter::All,
            Some(events) if events.is_empty() => {
                return Err(FieldError::new(
                    field("webhook_events"),
                    "must not be empty: omit it or send null to receive every event",
                ));
            }
            Some(events) => {
                for (index, name) in events.iter().enumerate() {
                    let known = if checks.allow_patterns {
                        EventType::pattern_is_known(name)
                    } else {
                        EventType::parse(name).is_ok()
                    };
                    if !known {
                        let error = EventType::parse(name).err().map(|e| e.to_string());
                        return Err(FieldError::new(
                            format!("{}[{index}]", field("webhook_events")),
                            error.unwrap_or_else(|| format!("unknown event type {name:?}")),
                        ));
                    }
                }
                EventFilter::Matching(events.clone())
            }
        };
        let mut headers = Vec::new();
        for (name, value) in self.webhook_headers.iter().flatten() {
            let header_field = format!("{}.{name}", field("webhook_headers"));
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(FieldError::new(
                    header_field,
                    "is not a valid HTTP header name",
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(FieldError::new(
                    header_field,
                    "value is not a valid HTTP header value (control characters such as CR or LF)",
                ));
            }
            // SPEC 4: a configured Content-Type does not override the gateway's.
            if !header_rules::is_gateway_managed(name) && !name.eq_ignore_ascii_case("content-type")
            {
                headers.push((name.clone(), value.clone()));
            }
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        if headers.len() + STANDARD_HEADERS > header_rules::MAX_HEADERS
            || bytes > header_rules::MAX_HEADER_BYTES / 2
        {
            return Err(FieldError::new(
                field("webhook_headers"),
                format!(
                    "{} headers of {bytes} bytes are over the limit of {} headers and {} bytes",
                    headers.len(),
                    header_rules::MAX_HEADERS - STANDARD_HEADERS,
                    header_rules::MAX_HEADER_BYTES / 2
                ),
            ));
        }
        if let Some(secret) = &self.webhook_signing_secret {
            validate_secret(secret)
                .map_err(|message| FieldError::new(field(SECRET_FIELD), message))?;
        }
        if let Some(plugin) = &self.webhook_transform
            && let Some(reason) = (checks.plugin_missing)(plugin)
        {
            return Err(FieldError::new(field("webhook_transform"), reason));
        }
        if self.webhook_transform_config.is_some() && self.webhook_transform.is_none() {
            return Err(FieldError::new(
                field("webhook_transform_config"),
                "is set but webhook_transform names no plugin",
            ));
        }
        let retry = self.webhook_retry.clone().unwrap_or_default();
        if retry.max_attempts == Some(0) {
            return Err(FieldError::new(
                field("webhook_retry.max_attempts"),
                "must be at least 1",
            ));
        }
        let bounds: [(&str, Option<u64>, u64, u64); 4] = [
            (
                "max_attempts",
                retry.max_attempts.map(u64::from),
                1,
                MAX_ATTEMPTS,
            ),
            ("base_delay_ms", retry.base_delay_ms, 0, MAX_DELAY_MS),
            ("max_delay_ms", retry.max_delay_ms, 0, MAX_DELAY_MS),
            // Beyond this an attempt could outlive its lease and be sent twice.
            ("timeout_ms", retry.timeout_ms, 1, MAX_TIMEOUT_MS),
        ];
        for (name, value, low, high) in bounds {
            if let Some(value) = value
                && !(low..=high).contains(&value)
            {
                return Err(FieldError::new(
                    field(&format!("webhook_retry.{name}")),
                    format!("must be between {low} and {high}"),
                ));
            }
        }
        Ok(Subscription {
            filter,
            destination: Destination {
                url: self.webhook_url.clone(),
                headers,
                output_format: self.webhook_output_format.unwrap_or_default(),
                signing_secret: self.webhook_signing_secret.clone(),
                previous_signing_secret: None,
                transform: self.webhook_transform.clone(),
                transform_config: self.webhook_transform_config.clone(),
                retry,
                source,
            },
        })
    }
}

impl WebhookConfig {
    /// `webhook_transform_config` as the JSON text a plugin receives (`null` when absent).
    pub fn transform_config_json(&self) -> String {
        transform_config_json(self.webhook_transform_config.as_ref())
    }
}

/// A transform config as the JSON text a plugin receives: the same text at validation and
/// at delivery, so a cached `validate-config` answer is the one for this config.
pub fn transform_config_json(config: Option<&serde_json::Value>) -> String {
    config.map_or_else(|| "null".to_owned(), serde_json::Value::to_string)
}

/// A destination URL must be absolute http(s) with a host the egress guard allows.
pub fn validate_url(text: &str, egress: &EgressGuard) -> Result<url::Url, String> {
    // The URL is stored and sent as given; the parser would quietly percent-encode these.
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters (CR, LF, NUL, ...)".into());
    }
    // Errors do not echo the URL: its userinfo may hold a password.
    let url = url::Url::parse(text).map_err(|error| format!("is not a valid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not allowed; use http or https",
            url.scheme()
        ));
    }
    let host = url.host().ok_or_else(|| "has no host".to_owned())?;
    egress
        .check_host(&host)
        .map_err(|denied| denied.to_string())?;
    Ok(url)
}

fn validate_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("must not be empty".into());
    }
    if secret.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if let Some(encoded) = secret.strip_prefix("whsec_") {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a whsec_ secret must be base64 after the prefix".to_owned())?;
        if key.len() < 16 {
            return Err("a whsec_ secret must hold at least 16 bytes of key".into());
        }
    }
    Ok(())
}

/// The destinations of `subscriptions` that want `event_type`, in order.
pub fn route(event_type: EventType, subscriptions: &[Subscription]) -> Vec<Destination> {
    subscriptions
        .iter()
        .filter(|subscription| subscription.filter.accepts(event_type))
        .map(|subscription| subscription.destination.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(egress: &EgressGuard) -> Checks<'_> {
        Checks {
            egress,
            plugin_missing: &|name| (name != "inngest").then(|| format!("no plugin {name}")),
            allow_patterns: false,
        }
    }

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            webhook_url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_filter_null_means_all_and_empty_is_an_error() {
        let egress = EgressGuard::default();
        let all = config("https://example.com/h")
            .validate("", &checks(&egress), DestinationSource::Inline)
            .unwrap();
        assert_eq!(all.filter, EventFilter::All);
        let empty = WebhookConfig {
            webhook_events: Some(vec![]),
            ..config("https://example.com/h")
        };
        let error = empty
            .validate(
                "webhook_configurations[1]",
                &checks(&egress),
                DestinationSource::Inline,
            )
            .unwrap_err();
        assert_eq!(error.field, "webhook_configurations[1].webhook_events");
    }

    #[test]
    fn rejects_bad_urls_headers_and_plugins_by_field() {
        let egress = EgressGuard::default();
        let check = |config: WebhookConfig| {
            config
                .validate("", &checks(&egress), DestinationSource::Inline)
                .unwrap_err()
                .field
        };
        assert_eq!(check(config("ftp://example.com")), "webhook_url");
        assert_eq!(check(config("http://127.0.0.1:9/x")), "webhook_url");
        assert_eq!(check(config("http://localhost/x")), "webhook_url");
        let mut headers = BTreeMap::new();
        headers.insert("X-Evil".to_owned(), "a\r\nInjected: 1".to_owned());
        let bad_header = WebhookConfig {
            webhook_headers: Some(headers),
            ..config("https://example.com")
        };
        assert_eq!(check(bad_header), "webhook_headers.X-Evil");
        let unknown_plugin = WebhookConfig {
            webhook_transform: Some("nope".into()),
            ..config("https://example.com")
        };
        assert_eq!(check(unknown_plugin), "webhook_transform");
        let bad_type = WebhookConfig {
            webhook_events: Some(vec!["parse.success".into(), "parse.done".into()]),
            ..config("https://example.com")
        };
        assert_eq!(check(bad_type), "webhook_events[1]");
    }

    #[test]
    fn managed_headers_are_dropped_and_routing_filters() {
        let egress = EgressGuard::default();
        let mut headers = BTreeMap::new();
        headers.insert("Content-Type".to_owned(), "text/plain".to_owned());
        headers.insert("Authorization".to_owned(), "Bearer x".to_owned());
        let subscription = WebhookConfig {
            webhook_headers: Some(headers),
            webhook_events: Some(vec!["parse.success".into()]),
            ..config("https://example.com")
        }
        .validate("", &checks(&egress), DestinationSource::Inline)
        .unwrap();
        assert_eq!(
            subscription.destination.headers,
            vec![("Authorization".to_owned(), "Bearer x".to_owned())]
        );
        let too_many: BTreeMap<String, String> = (0..61)
            .map(|n| (format!("X-H{n}"), "v".to_owned()))
            .collect();
        let refused = WebhookConfig {
            webhook_headers: Some(too_many),
            ..config("https://example.com")
        }
        .validate("", &checks(&egress), DestinationSource::Inline)
        .unwrap_err();
        assert_eq!(refused.field, "webhook_headers");
        let parse_success = EventType::parse("parse.success").unwrap();
        let parse_error = EventType::parse("parse.error").unwrap();
        let subscriptions = vec![subscription];
        assert_eq!(route(parse_success, &subscriptions).len(), 1);
        assert!(route(parse_error, &subscriptions).is_empty());
    }
}
