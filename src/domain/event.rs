//! Event types and the canonical payload every destination receives.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every event type a producer may emit (SPEC 1), in a stable order for error messages.
const EVENT_TYPES: &[&str] = &[
    "extract.pending",
    "extract.success",
    "extract.error",
    "extract.partial_success",
    "extract.cancelled",
    "parse.pending",
    "parse.running",
    "parse.success",
    "parse.error",
    "parse.partial_success",
    "parse.cancelled",
    "classify.pending",
    "classify.running",
    "classify.success",
    "classify.error",
    "classify.partial_success",
    "classify.cancelled",
    "batch.pending",
    "batch.running",
    "batch.success",
    "batch.error",
    "batch.cancelled",
    "sheets.pending",
    "sheets.success",
    "sheets.error",
    "sheets.partial_success",
    "sheets.cancelled",
    "split.pending",
    "split.processing",
    "split.success",
    "split.error",
    "split.cancelled",
    "verify.pending",
    "verify.running",
    "verify.success",
    "verify.error",
    "verify.cancelled",
    "unmapped_event",
];

/// A validated event type. Holds a `'static` name so copying it is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType(&'static str);

#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown event type {given:?}; valid types are: {}", EVENT_TYPES.join(", "))]
pub struct UnknownEventType {
    pub given: String,
}

impl EventType {
    pub fn parse(name: &str) -> Result<Self, UnknownEventType> {
        EVENT_TYPES
            .iter()
            .find(|known| **known == name)
            .map(|known| EventType(known))
            .ok_or_else(|| UnknownEventType {
                given: name.to_owned(),
            })
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    pub fn all() -> impl Iterator<Item = EventType> {
        EVENT_TYPES.iter().map(|name| EventType(name))
    }

    /// Whether a route pattern matches: an exact type, `family.*`, or `*`.
    pub fn matches_pattern(self, pattern: &str) -> bool {
        match pattern.strip_suffix(".*") {
            _ if pattern == "*" => true,
            Some(family) => self.0.split('.').next() == Some(family) && self.0.contains('.'),
            None => self.0 == pattern,
        }
    }

    /// Whether a pattern can match any known type; used to reject typos in config.
    pub fn pattern_is_known(pattern: &str) -> bool {
        Self::all().any(|event_type| event_type.matches_pattern(pattern))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EventType::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The canonical payload (SPEC 3). Serialised once at ingest and stored as text, so every
/// destination and every retry sends byte-identical JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Payload<'a> {
    pub event_id: &'a str,
    pub event_type: EventType,
    pub timestamp: f64,
    pub data: &'a serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_families_only() {
        let parse_success = EventType::parse("parse.success").unwrap();
        assert!(parse_success.matches_pattern("parse.*"));
        assert!(parse_success.matches_pattern("*"));
        assert!(parse_success.matches_pattern("parse.success"));
        assert!(!parse_success.matches_pattern("extract.*"));
        assert!(!parse_success.matches_pattern("parse.error"));
        assert!(EventType::pattern_is_known("split.*"));
        assert!(!EventType::pattern_is_known("parse.done"));
        assert!(EventType::parse("parse.done").is_err());
    }
}
