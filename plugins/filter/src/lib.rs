//! `filter` transform plugin: lets a destination receive only the events whose payload
//! matches the configured conditions, skipping (not failing) the rest so nothing is retried.

use hookgate_plugin::{Event, Outcome, Plugin, Request, parse_config};
use serde_json::Value;

/// The validated config. Conditions are checked in the order equals, in, exists, and within
/// each part in pointer order, so the reported failure is deterministic.
#[derive(Debug, Default)]
pub struct Conditions {
    equals: Vec<(String, Value)>,
    one_of: Vec<(String, Vec<Value>)>,
    exists: Vec<String>,
}

fn check_pointer(field: &str, pointer: &str) -> Result<(), String> {
    // RFC 6901: the empty pointer is the whole document; anything else starts with '/'.
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "config field `{field}`: {pointer:?} is not a JSON pointer (must start with '/')"
        ))
    }
}

impl Conditions {
    /// Validates the whole config up front, so a bad condition is reported as an error even
    /// when an earlier condition would already have skipped the event.
    pub fn parse(config: &str) -> Result<Self, String> {
        let config = parse_config(config, &["equals", "in", "exists"])?;
        let mut out = Self::default();
        match config.get("equals") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (pointer, want) in map {
                    check_pointer("equals", pointer)?;
                    out.equals.push((pointer.clone(), want.clone()));
                }
            }
            Some(_) => {
                return Err("config field `equals` must be an object of pointer: value".into());
            }
        }
        match config.get("in") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (pointer, allowed) in map {
                    check_pointer("in", pointer)?;
                    let Value::Array(allowed) = allowed else {
                        return Err(format!(
                            "config field `in`: {pointer:?} must map to an array"
                        ));
                    };
                    out.one_of.push((pointer.clone(), allowed.clone()));
                }
            }
            Some(_) => return Err("config field `in` must be an object of pointer: array".into()),
        }
        match config.get("exists") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for pointer in list {
                    let Value::String(pointer) = pointer else {
                        return Err("config field `exists` must be an array of strings".into());
                    };
                    check_pointer("exists", pointer)?;
                    out.exists.push(pointer.clone());
                }
            }
            Some(_) => return Err("config field `exists` must be an array of pointers".into()),
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

/// Decides the outcome from the canonical payload text and the plugin config: `None` to send,
/// `Some(reason)` to skip.
pub fn filter(payload: &str, config: &str) -> Result<Option<String>, String> {
    let conditions = Conditions::parse(config)?;
    let payload: Value =
        serde_json::from_str(payload).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    Ok(conditions.first_mismatch(&payload))
}

pub struct Filter;

impl Plugin for Filter {
    fn transform(event: Event, request: Request, config: &str) -> Result<Outcome, String> {
        Ok(match filter(&event.payload, config)? {
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

    #[test]
    fn empty_config_matches() {
        assert_eq!(filter(PAYLOAD, "null").unwrap(), None);
        assert_eq!(filter(PAYLOAD, "{}").unwrap(), None);
    }

    #[test]
    fn all_conditions_match() {
        let config = r#"{"equals":{"/data/tier":"fast","/data/a~1b":1},"in":{"/event_type":["parse.success","parse.error"]},"exists":["/data/job_id"]}"#;
        assert_eq!(filter(PAYLOAD, config).unwrap(), None);
    }

    #[test]
    fn equals_mismatch() {
        let r = filter(PAYLOAD, r#"{"equals":{"/data/tier":"agentic"}}"#).unwrap();
        assert_eq!(
            r.as_deref(),
            Some(r#"/data/tier is "fast", want "agentic""#)
        );
        let r = filter(PAYLOAD, r#"{"equals":{"/data/x":1}}"#).unwrap();
        assert_eq!(r.as_deref(), Some("/data/x is missing, want 1"));
        // Types matter: the number 2 is not the string "2".
        assert!(
            filter(PAYLOAD, r#"{"equals":{"/data/n":"2"}}"#)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn in_mismatch() {
        let r = filter(PAYLOAD, r#"{"in":{"/event_type":["parse.error"]}}"#).unwrap();
        assert_eq!(
            r.as_deref(),
            Some(r#"/event_type is "parse.success", want one of ["parse.error"]"#)
        );
    }

    #[test]
    fn exists_mismatch() {
        let r = filter(PAYLOAD, r#"{"exists":["/data/job_id","/data/nope"]}"#).unwrap();
        assert_eq!(r.as_deref(), Some("/data/nope is missing"));
    }

    #[test]
    fn bad_config() {
        assert!(
            filter(PAYLOAD, r#"{"equal":{}}"#)
                .unwrap_err()
                .contains("`equal`")
        );
        assert!(
            filter(PAYLOAD, r#"{"equals":[]}"#)
                .unwrap_err()
                .contains("`equals`")
        );
        assert!(
            filter(PAYLOAD, r#"{"in":{"/a":"x"}}"#)
                .unwrap_err()
                .contains("`in`")
        );
        assert!(
            filter(PAYLOAD, r#"{"exists":[1]}"#)
                .unwrap_err()
                .contains("`exists`")
        );
        assert!(
            filter(PAYLOAD, r#"{"exists":["data"]}"#)
                .unwrap_err()
                .contains("`exists`")
        );
        assert!(filter(PAYLOAD, "3").is_err());
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
