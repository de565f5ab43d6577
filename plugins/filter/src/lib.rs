//! `filter` transform plugin: lets a destination receive only the events whose payload
//! matches the configured conditions, sending those unchanged and skipping (not failing) the
//! rest so nothing is retried. The skip reason names the first condition that failed.
//!
//! Config (`null` or an object); every condition is keyed by an RFC 6901 JSON pointer into
//! the payload `{"event_id", "event_type", "timestamp", "data"}` (`""` is the whole payload,
//! anything else starts with `/`; `~1` stands for `/` and `~0` for `~` in a key):
//! - `equals`: object of pointer → JSON value; the payload's value there must equal it,
//!   type included (`2` is not `"2"`).
//! - `in`: object of pointer → array; the payload's value there must be one of its items.
//! - `exists`: array of pointers; the payload must have a value (even `null`) at each.
//!
//! Every part is optional (`null` means absent); an empty config sends everything. Any other
//! key, or a condition of the wrong shape, is refused.

use hookgate_plugin::{ConfigError, Event, Outcome, Plugin, Request, parse_config};
use serde_json::{Map, Value};

/// The config keys, shared by the parser and the schema test so they cannot drift apart.
const CONFIG_KEYS: &[&str] = &["equals", "in", "exists"];

// The pointer pattern is `^$|^/` rather than `^(/.*)?$` because `.` does not match a line
// break, and the plugin accepts any key starting with '/'.
const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "filter plugin config",
  "description": "Conditions on the payload, keyed by RFC 6901 JSON pointers into it; an event is sent only when it meets all of them.",
  "type": ["object", "null"],
  "properties": {
    "equals": {
      "description": "Pointer to the value the payload must hold there (types matter).",
      "type": ["object", "null"],
      "propertyNames": { "$ref": "#/$defs/pointer" }
    },
    "in": {
      "description": "Pointer to the values the payload's value there must be one of.",
      "type": ["object", "null"],
      "propertyNames": { "$ref": "#/$defs/pointer" },
      "additionalProperties": { "type": "array" }
    },
    "exists": {
      "description": "Pointers at which the payload must have a value.",
      "type": ["array", "null"],
      "items": { "$ref": "#/$defs/pointer" }
    }
  },
  "additionalProperties": false,
  "$defs": {
    "pointer": {
      "description": "An RFC 6901 JSON pointer: empty for the whole payload, else starting with '/'.",
      "type": "string",
      "pattern": "^$|^/"
    }
  }
}"##;

/// The validated config. Conditions are checked in the order equals, in, exists, and within
/// each part in pointer order, so the reported failure is deterministic.
#[derive(Debug, Default, PartialEq)]
pub struct Conditions {
    equals: Vec<(String, Value)>,
    one_of: Vec<(String, Vec<Value>)>,
    exists: Vec<String>,
}

/// A problem at `path` inside the config. The path segments are escaped here because the
/// filter's own keys are JSON pointers: `{"in": {"/a": 1}}` is wrong at `/in/~1a`.
fn error_at(path: &[&str], message: impl Into<String>) -> ConfigError {
    let pointer = path
        .iter()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect();
    ConfigError {
        pointer,
        message: message.into(),
    }
}

/// An optional part of the config that must be an object, if present.
fn object_part<'a>(
    config: &'a Map<String, Value>,
    key: &str,
    shape: &str,
) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(error_at(&[key], format!("must be an object of {shape}"))),
    }
}

/// `path` names where `pointer` sits in the config, for the error.
fn check_pointer(path: &[&str], pointer: &str) -> Result<(), ConfigError> {
    // RFC 6901: the empty pointer is the whole document; anything else starts with '/'.
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(error_at(
            path,
            format!("{pointer:?} is not a JSON pointer (must be empty or start with '/')"),
        ))
    }
}

impl Conditions {
    /// Validates the whole config up front, so a bad condition is reported as an error even
    /// when an earlier condition would already have skipped the event.
    pub fn parse(config: &str) -> Result<Self, ConfigError> {
        let config = parse_config(config, CONFIG_KEYS)?;
        let mut out = Self::default();
        if let Some(map) = object_part(&config, "equals", "JSON pointer: value")? {
            for (pointer, want) in map {
                check_pointer(&["equals", pointer], pointer)?;
                out.equals.push((pointer.clone(), want.clone()));
            }
        }
        if let Some(map) = object_part(&config, "in", "JSON pointer: array of values")? {
            for (pointer, allowed) in map {
                check_pointer(&["in", pointer], pointer)?;
                let Value::Array(allowed) = allowed else {
                    return Err(error_at(&["in", pointer], "must be an array of values"));
                };
                out.one_of.push((pointer.clone(), allowed.clone()));
            }
        }
        match config.get("exists") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (index, pointer) in list.iter().enumerate() {
                    let index = index.to_string();
                    let Value::String(pointer) = pointer else {
                        return Err(error_at(
                            &["exists", &index],
                            "must be a string (a JSON pointer)",
                        ));
                    };
                    check_pointer(&["exists", &index], pointer)?;
                    out.exists.push(pointer.clone());
                }
            }
            Some(_) => {
                return Err(error_at(&["exists"], "must be an array of JSON pointers"));
            }
        }
        Ok(out)
    }

    /// `None` when the payload matches every condition, else why the first one failed.
    pub fn first_mismatch(&self, payload: &Value) -> Option<String> {
        let found = |pointer: &str| match payload.pointer(pointer) {
            Some(v) => format!("{pointer} is {v}"),
            None => format!("{pointer} is missing"),
        };
        for (pointer, want) in &self.equals {
            if payload.pointer(pointer) != Some(want) {
                return Some(format!("{}, want {want}", found(pointer)));
            }
        }
        for (pointer, allowed) in &self.one_of {
            if !payload
                .pointer(pointer)
                .is_some_and(|v| allowed.contains(v))
            {
                let allowed = Value::Array(allowed.clone());
                return Some(format!("{}, want one of {allowed}", found(pointer)));
            }
        }
        self.exists
            .iter()
            .find(|p| payload.pointer(p).is_none())
            .map(|p| format!("{p} is missing"))
    }
}

/// Decides the outcome from the canonical payload text: `None` to send, `Some(reason)` to
/// skip.
pub fn filter(payload: &str, conditions: &Conditions) -> Result<Option<String>, String> {
    let payload: Value =
        serde_json::from_str(payload).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    Ok(conditions.first_mismatch(&payload))
}

pub struct Filter;

impl Plugin for Filter {
    const CONFIG_SCHEMA: Option<&'static str> = Some(CONFIG_SCHEMA);

    fn validate_config(config: &str) -> Result<(), ConfigError> {
        Conditions::parse(config).map(drop)
    }

    fn transform(event: Event, request: Request, config: &str) -> Result<Outcome, String> {
        let conditions = Conditions::parse(config)?;
        Ok(match filter(&event.payload, &conditions)? {
            None => Outcome::Send(request),
            Some(reason) => Outcome::Skip(reason),
        })
    }
}

hookgate_plugin::plugin!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"event_id":"7f0c","event_type":"parse.success","timestamp":1.5,"data":{"tier":"fast","job_id":"j1","a/b":1,"n":2}}"#;

    fn check(payload: &str, config: &str) -> Result<Option<String>, String> {
        filter(payload, &Conditions::parse(config)?)
    }

    fn refusal(config: &str) -> ConfigError {
        Filter::validate_config(config).unwrap_err()
    }

    #[test]
    fn empty_config_matches() {
        assert_eq!(check(PAYLOAD, "null").unwrap(), None);
        assert_eq!(check(PAYLOAD, "{}").unwrap(), None);
        let all_null = r#"{"equals":null,"in":null,"exists":null}"#;
        assert_eq!(check(PAYLOAD, all_null).unwrap(), None);
    }

    #[test]
    fn all_conditions_match() {
        let config = r#"{"equals":{"/data/tier":"fast","/data/a~1b":1},"in":{"/event_type":["parse.success","parse.error"]},"exists":["/data/job_id"]}"#;
        assert_eq!(check(PAYLOAD, config).unwrap(), None);
    }

    #[test]
    fn equals_mismatch() {
        let r = check(PAYLOAD, r#"{"equals":{"/data/tier":"agentic"}}"#).unwrap();
        assert_eq!(
            r.as_deref(),
            Some(r#"/data/tier is "fast", want "agentic""#)
        );
        let r = check(PAYLOAD, r#"{"equals":{"/data/x":1}}"#).unwrap();
        assert_eq!(r.as_deref(), Some("/data/x is missing, want 1"));
        // Types matter: the number 2 is not the string "2".
        assert!(
            check(PAYLOAD, r#"{"equals":{"/data/n":"2"}}"#)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn in_mismatch() {
        let r = check(PAYLOAD, r#"{"in":{"/event_type":["parse.error"]}}"#).unwrap();
        assert_eq!(
            r.as_deref(),
            Some(r#"/event_type is "parse.success", want one of ["parse.error"]"#)
        );
    }

    #[test]
    fn exists_mismatch() {
        let r = check(PAYLOAD, r#"{"exists":["/data/job_id","/data/nope"]}"#).unwrap();
        assert_eq!(r.as_deref(), Some("/data/nope is missing"));
    }

    #[test]
    fn bad_config() {
        assert!(
            check(PAYLOAD, r#"{"equal":{}}"#)
                .unwrap_err()
                .contains("`equal`")
        );
        assert!(
            check(PAYLOAD, r#"{"equals":[]}"#)
                .unwrap_err()
                .contains("`equals`")
        );
        assert!(
            check(PAYLOAD, r#"{"in":{"/a":"x"}}"#)
                .unwrap_err()
                .contains("`in/~1a`")
        );
        assert!(
            check(PAYLOAD, r#"{"exists":[1]}"#)
                .unwrap_err()
                .contains("`exists/0`")
        );
        assert!(
            check(PAYLOAD, r#"{"exists":["data"]}"#)
                .unwrap_err()
                .contains("`exists/0`")
        );
        assert!(check(PAYLOAD, "3").is_err());
    }

    #[test]
    fn validate_config_points_inside() {
        assert_eq!(refusal(r#"{"equal":{}}"#).pointer, "/equal");
        assert_eq!(refusal(r#"{"equals":[]}"#).pointer, "/equals");
        assert_eq!(
            refusal(r#"{"equals":{"data/x":1}}"#).pointer,
            "/equals/data~1x"
        );
        assert_eq!(refusal(r#"{"in":"x"}"#).pointer, "/in");
        assert_eq!(
            refusal(r#"{"in":{"/event_type":"parse.success"}}"#).pointer,
            "/in/~1event_type"
        );
        assert_eq!(refusal(r#"{"in":{"/a~b":null}}"#).pointer, "/in/~1a~0b");
        assert_eq!(refusal(r#"{"in":{"x":[]}}"#).pointer, "/in/x");
        assert_eq!(refusal(r#"{"exists":"/a"}"#).pointer, "/exists");
        assert_eq!(refusal(r#"{"exists":["/a",1]}"#).pointer, "/exists/1");
        assert_eq!(refusal(r#"{"exists":["/a","b"]}"#).pointer, "/exists/1");
        assert_eq!(refusal("3").pointer, "");
        assert_eq!(refusal("{").pointer, "");
        let error = refusal(r#"{"exists":["b"]}"#);
        assert_eq!(
            error.message,
            r#""b" is not a JSON pointer (must be empty or start with '/')"#
        );
        for good in [
            "null",
            r#"{"equals":{"":{},"/a":null},"in":{"/b":[]},"exists":[""]}"#,
        ] {
            assert_eq!(Filter::validate_config(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn transform_refuses_what_validate_refuses() {
        let event = Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1.5,
            payload: PAYLOAD.into(),
        };
        let request = Request {
            url: "https://example.com".into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        for config in [
            r#"{"equal":{}}"#,
            r#"{"in":{"/a":"x"}}"#,
            r#"{"exists":[null]}"#,
            "[]",
        ] {
            let error = Filter::transform(event.clone(), request.clone(), config).unwrap_err();
            assert_eq!(error, refusal(config).to_string());
        }
    }

    #[test]
    fn schema_lists_exactly_the_config_keys() {
        assert_eq!(
            hookgate_plugin::closed_schema_keys(CONFIG_SCHEMA),
            Some(hookgate_plugin::sorted(CONFIG_KEYS))
        );
    }

    #[test]
    fn send_and_skip() {
        let event = Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1.5,
            payload: PAYLOAD.into(),
        };
        let request = Request {
            url: "https://example.com".into(),
            headers: vec![("A".into(), "1".into())],
            body: b"{}".to_vec(),
        };
        let sent = Filter::transform(event.clone(), request.clone(), "null").unwrap();
        assert_eq!(sent, Outcome::Send(request.clone()));
        let skipped = Filter::transform(event, request, r#"{"exists":["/x"]}"#).unwrap();
        assert_eq!(skipped, Outcome::Skip("/x is missing".into()));
    }
}
