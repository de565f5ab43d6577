//! `inngest` transform plugin: reshapes a delivery into an Inngest event
//! (`{"name", "data", "id", "ts"}`) so a destination can feed Inngest's event API directly.
//! The event is named `<prefix><event_type>`; `data` is the whole webhook payload, `id` the
//! event id (Inngest de-duplicates on it) and `ts` the event time in milliseconds.
//!
//! Config (`null` or an object): `prefix`, a string put before the event type in `name`,
//! default `"Llamacloud/"`. Any other key is refused.

use hookgate_plugin::{
    ConfigError, Event, Outcome, Payload, Plugin, Request, config_str, parse_config, set_header,
};
use serde_json::json;

const DEFAULT_PREFIX: &str = "Llamacloud/";

/// The config keys, shared by the parser and the schema test so they cannot drift apart.
const CONFIG_KEYS: &[&str] = &["prefix"];

const CONFIG_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "inngest plugin config",
  "type": ["object", "null"],
  "properties": {
    "prefix": {
      "description": "Put before the event type to form the Inngest event name.",
      "type": ["string", "null"],
      "default": "Llamacloud/"
    }
  },
  "additionalProperties": false
}"#;

/// The destination's config, checked; `validate_config` and `transform` both parse with it so
/// they cannot disagree on what is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub prefix: String,
}

impl Config {
    pub fn parse(config: &str) -> Result<Self, ConfigError> {
        let config = parse_config(config, CONFIG_KEYS)?;
        let prefix = config_str(&config, "prefix")?.unwrap_or(DEFAULT_PREFIX);
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }
}

/// Builds the Inngest event body from the canonical payload text.
pub fn inngest_body(payload: &str, config: &Config) -> Result<Vec<u8>, String> {
    let payload = Payload::parse(payload)?;
    let ts = hookgate_plugin::timestamp_millis(payload.timestamp)?;
    let body = json!({
        "name": format!("{}{}", config.prefix, payload.event_type),
        // The whole payload, not just `data`: receivers written for the webhook keep working.
        "data": payload.raw,
        // Inngest de-duplicates on `id`, which makes gateway retries idempotent.
        "id": payload.event_id,
        "ts": ts,
    });
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

pub struct Inngest;

impl Plugin for Inngest {
    const CONFIG_SCHEMA: Option<&'static str> = Some(CONFIG_SCHEMA);

    fn validate_config(config: &str) -> Result<(), ConfigError> {
        Config::parse(config).map(drop)
    }

    fn transform(event: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        let config = Config::parse(config)?;
        request.body = inngest_body(&event.payload, &config)?;
        // The request may carry a string-encoded body's headers; Inngest wants plain JSON.
        set_header(&mut request.headers, "Content-Type", "application/json");
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(Inngest);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PAYLOAD: &str = r#"{"event_id":"7f0c","event_type":"parse.success","timestamp":1753985275.1154444,"data":{"job_id":"j1"}}"#;

    fn body(config: &str) -> Result<Value, String> {
        let config = Config::parse(config)?;
        inngest_body(PAYLOAD, &config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn event() -> Event {
        Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1753985275.1154444,
            payload: PAYLOAD.into(),
        }
    }

    #[test]
    fn default_prefix() {
        let b = body("null").unwrap();
        assert_eq!(b["name"], "Llamacloud/parse.success");
        assert_eq!(b["id"], "7f0c");
        assert_eq!(b["ts"], 1753985275115i64);
        assert_eq!(b["data"], serde_json::from_str::<Value>(PAYLOAD).unwrap());
        assert_eq!(body("{}").unwrap()["name"], "Llamacloud/parse.success");
        assert_eq!(
            body(r#"{"prefix":null}"#).unwrap()["name"],
            "Llamacloud/parse.success"
        );
    }

    #[test]
    fn custom_prefix() {
        assert_eq!(
            body(r#"{"prefix":"Acme/"}"#).unwrap()["name"],
            "Acme/parse.success"
        );
        assert_eq!(body(r#"{"prefix":""}"#).unwrap()["name"], "parse.success");
    }

    #[test]
    fn bad_config() {
        assert!(body(r#"{"prefix":3}"#).unwrap_err().contains("`prefix`"));
        assert!(body(r#"{"prefx":"a"}"#).unwrap_err().contains("`prefx`"));
        assert!(body("[1]").is_err());
    }

    #[test]
    fn validate_config_names_the_field() {
        assert_eq!(Inngest::validate_config("null"), Ok(()));
        assert_eq!(Inngest::validate_config(r#"{"prefix":"Acme/"}"#), Ok(()));
        let pointer = |config: &str| Inngest::validate_config(config).unwrap_err().pointer;
        assert_eq!(pointer(r#"{"prefx":"a"}"#), "/prefx");
        assert_eq!(pointer(r#"{"prefix":3}"#), "/prefix");
        assert_eq!(pointer("[1]"), "");
        assert_eq!(pointer("\"Acme/\""), "");
        assert_eq!(pointer("{"), "");
    }

    #[test]
    fn transform_refuses_what_validate_refuses() {
        for config in [r#"{"prefx":"a"}"#, r#"{"prefix":3}"#, "[1]", "{"] {
            let refusal = Inngest::validate_config(config).unwrap_err();
            let request = Request {
                url: "https://inn.gs/e/key".into(),
                headers: Vec::new(),
                body: Vec::new(),
            };
            let error = Inngest::transform(event(), request, config).unwrap_err();
            assert_eq!(error, refusal.to_string());
        }
    }

    #[test]
    fn schema_lists_exactly_the_config_keys() {
        let schema: Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert_eq!(
            hookgate_plugin::closed_schema_keys(CONFIG_SCHEMA),
            Some(hookgate_plugin::sorted(CONFIG_KEYS))
        );
        assert_eq!(schema["properties"]["prefix"]["default"], DEFAULT_PREFIX);
    }

    #[test]
    fn bad_payload() {
        let config = Config::parse("null").unwrap();
        assert!(
            inngest_body("{}", &config)
                .unwrap_err()
                .contains("event_id")
        );
    }

    #[test]
    fn request_keeps_url_and_headers() {
        let request = Request {
            url: "https://inn.gs/e/key".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("X-Webhook-Event-ID".into(), "7f0c".into()),
            ],
            body: b"\"...\"".to_vec(),
        };
        let Outcome::Send(out) = Inngest::transform(event(), request, "null").unwrap() else {
            panic!("expected send");
        };
        assert_eq!(out.url, "https://inn.gs/e/key");
        assert_eq!(out.headers[0].1, "application/json");
        assert_eq!(out.headers[1].0, "X-Webhook-Event-ID");
        assert_eq!(out.headers.len(), 2);
    }
}
