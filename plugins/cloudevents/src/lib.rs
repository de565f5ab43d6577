//! `cloudevents` transform plugin: re-expresses a delivery as a CloudEvents 1.0 event over
//! HTTP (protocol binding 1.0.2), for receivers that speak CloudEvents rather than LlamaCloud
//! webhooks. The attributes are `specversion` `1.0`, `id` (the event id), `source`, `type`
//! (the event type), `time` (RFC 3339, milliseconds) and `datacontenttype`
//! `application/json`; the data is the payload's `data`.
//!
//! Config (`null` or an object):
//! - `source`: non-empty string, the CloudEvents `source`; default `"hookgate"`.
//! - `mode`: `"structured"` (default) sends the whole event as the JSON body with
//!   `Content-Type: application/cloudevents+json`; `"binary"` sends the data as the body with
//!   `Content-Type: application/json` and the other attributes as `ce-*` headers.
//!
//! Any other key or value is refused.

use hookgate_plugin::{
    ConfigError, Event, Outcome, Payload, Plugin, Request, config_str, parse_config, set_header,
};
use serde_json::{Value, json};

const DEFAULT_SOURCE: &str = "hookgate";
const SPEC_VERSION: &str = "1.0";
/// The media type of the event's data: the payload's `data` is JSON.
const DATA_CONTENT_TYPE: &str = "application/json";
/// Structured mode is signalled by this media type alone.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The config keys, shared by the parser and the schema test so they cannot drift apart.
const CONFIG_KEYS: &[&str] = &["source", "mode"];

const CONFIG_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "cloudevents plugin config",
  "type": ["object", "null"],
  "properties": {
    "source": {
      "description": "The CloudEvents `source` attribute.",
      "type": ["string", "null"],
      "minLength": 1,
      "default": "hookgate"
    },
    "mode": {
      "description": "HTTP content mode: `structured` sends the whole event as an application/cloudevents+json body; `binary` sends the data as an application/json body and the attributes as ce-* headers.",
      "enum": ["structured", "binary", null],
      "default": "structured"
    }
  },
  "additionalProperties": false
}"#;

/// How the event is laid out on the HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The whole event as a JSON document in the body.
    Structured,
    /// The data as the body, the attributes as `ce-*` headers.
    Binary,
}

/// The destination's config, checked; `validate_config` and `transform` both parse with it so
/// they cannot disagree on what is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: String,
    pub mode: Mode,
}

impl Config {
    pub fn parse(config: &str) -> Result<Self, ConfigError> {
        let config = parse_config(config, CONFIG_KEYS)?;
        let source = config_str(&config, "source")?.unwrap_or(DEFAULT_SOURCE);
        if source.is_empty() {
            // CloudEvents requires a non-empty source.
            return Err(ConfigError::field("source", "must not be empty"));
        }
        let mode = match config_str(&config, "mode")? {
            None | Some("structured") => Mode::Structured,
            Some("binary") => Mode::Binary,
            Some(_) => {
                return Err(ConfigError::field(
                    "mode",
                    r#"must be "structured" or "binary""#,
                ));
            }
        };
        Ok(Self {
            source: source.to_owned(),
            mode,
        })
    }
}

/// The event's attributes and data, computed once so both modes carry identical values.
struct CloudEvent {
    id: String,
    source: String,
    event_type: String,
    time: String,
    data: Value,
}

impl CloudEvent {
    fn new(payload: &str, config: &Config) -> Result<Self, String> {
        let payload = Payload::parse(payload)?;
        Ok(Self {
            time: hookgate_plugin::rfc3339_millis(payload.timestamp)?,
            id: payload.event_id,
            source: config.source.clone(),
            event_type: payload.event_type,
            data: payload.data,
        })
    }

    /// Every attribute except `datacontenttype` and `data`, which binary mode carries as
    /// `Content-Type` and the body rather than as `ce-*` headers.
    fn header_attributes(&self) -> [(&'static str, &str); 5] {
        [
            ("specversion", SPEC_VERSION),
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.event_type),
            ("time", &self.time),
        ]
    }

    fn structured_body(self) -> Result<Vec<u8>, String> {
        let body = json!({
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.event_type,
            "time": self.time,
            "datacontenttype": DATA_CONTENT_TYPE,
            "data": self.data,
        });
        serde_json::to_vec(&body).map_err(|e| e.to_string())
    }
}

/// Builds the structured-mode body (the whole event as JSON) from the canonical payload text.
pub fn cloudevent_body(payload: &str, config: &Config) -> Result<Vec<u8>, String> {
    CloudEvent::new(payload, config)?.structured_body()
}

/// Percent-encodes an attribute value for a `ce-*` header as the HTTP binding requires:
/// every UTF-8 byte of space, `"`, `%` and anything outside printable ASCII becomes `%XY`,
/// so any attribute yields a valid header value and decodes back to itself.
pub fn header_value(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if matches!(byte, b'!'..=b'~') && byte != b'"' && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    encoded
}

/// Rewrites `request` into the event in the configured mode.
pub fn cloudevent_request(
    payload: &str,
    config: &Config,
    mut request: Request,
) -> Result<Request, String> {
    let event = CloudEvent::new(payload, config)?;
    match config.mode {
        Mode::Structured => {
            request.body = event.structured_body()?;
            set_header(&mut request.headers, "Content-Type", CONTENT_TYPE);
        }
        Mode::Binary => {
            for (attribute, value) in event.header_attributes() {
                let name = format!("ce-{attribute}");
                set_header(&mut request.headers, &name, &header_value(value));
            }
            // The binding forbids this header in binary mode: `Content-Type` is the
            // attribute, and a destination's custom headers might have set it.
            request
                .headers
                .retain(|(name, _)| !name.eq_ignore_ascii_case("ce-datacontenttype"));
            set_header(&mut request.headers, "Content-Type", DATA_CONTENT_TYPE);
            request.body = serde_json::to_vec(&event.data).map_err(|e| e.to_string())?;
        }
    }
    Ok(request)
}

pub struct CloudEvents;

impl Plugin for CloudEvents {
    const CONFIG_SCHEMA: Option<&'static str> = Some(CONFIG_SCHEMA);

    fn validate_config(config: &str) -> Result<(), ConfigError> {
        Config::parse(config).map(drop)
    }

    fn transform(event: Event, request: Request, config: &str) -> Result<Outcome, String> {
        let config = Config::parse(config)?;
        cloudevent_request(&event.payload, &config, request).map(Outcome::Send)
    }
}

hookgate_plugin::plugin!(CloudEvents);

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"event_id":"7f0c","event_type":"parse.success","timestamp":1753985275.1154444,"data":{"job_id":"j1"}}"#;

    fn body(config: &str) -> Result<Value, String> {
        let config = Config::parse(config)?;
        cloudevent_body(PAYLOAD, &config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn event(payload: &str) -> Event {
        Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1753985275.1154444,
            payload: payload.into(),
        }
    }

    fn request() -> Request {
        Request {
            url: "https://example.com/hook".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("Authorization".into(), "Bearer t".into()),
            ],
            body: b"{\"original\":true}".to_vec(),
        }
    }

    fn send(payload: &str, request: Request, config: &str) -> Request {
        match CloudEvents::transform(event(payload), request, config).unwrap() {
            Outcome::Send(out) => out,
            Outcome::Skip(reason) => panic!("expected send, got skip: {reason}"),
        }
    }

    fn header<'a>(request: &'a Request, name: &str) -> Vec<&'a str> {
        request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn structured_event() {
        let expected = json!({
            "specversion": "1.0",
            "id": "7f0c",
            "source": "hookgate",
            "type": "parse.success",
            "time": "2025-07-31T18:07:55.115Z",
            "datacontenttype": "application/json",
            "data": {"job_id": "j1"},
        });
        assert_eq!(body("null").unwrap(), expected);
        assert_eq!(body(r#"{"mode":"structured"}"#).unwrap(), expected);
        assert_eq!(body(r#"{"mode":null}"#).unwrap(), expected);
    }

    #[test]
    fn custom_source() {
        assert_eq!(body(r#"{"source":"/acme"}"#).unwrap()["source"], "/acme");
    }

    #[test]
    fn bad_config() {
        assert!(body(r#"{"source":1}"#).unwrap_err().contains("`source`"));
        assert!(body(r#"{"source":""}"#).unwrap_err().contains("`source`"));
        assert!(body(r#"{"sauce":"x"}"#).unwrap_err().contains("`sauce`"));
        assert!(body(r#"{"mode":"raw"}"#).unwrap_err().contains("`mode`"));
    }

    #[test]
    fn validate_config_names_the_field() {
        for good in [
            "null",
            "{}",
            r#"{"source":"/acme","mode":"binary"}"#,
            r#"{"mode":"structured"}"#,
        ] {
            assert_eq!(CloudEvents::validate_config(good), Ok(()), "{good}");
        }
        let pointer = |config: &str| CloudEvents::validate_config(config).unwrap_err().pointer;
        assert_eq!(pointer(r#"{"mode":"Binary"}"#), "/mode");
        assert_eq!(pointer(r#"{"mode":"batched"}"#), "/mode");
        assert_eq!(pointer(r#"{"mode":1}"#), "/mode");
        assert_eq!(pointer(r#"{"source":""}"#), "/source");
        assert_eq!(pointer(r#"{"source":true}"#), "/source");
        assert_eq!(pointer(r#"{"sauce":"x"}"#), "/sauce");
        assert_eq!(pointer("[]"), "");
        assert_eq!(pointer("not json"), "");
    }

    #[test]
    fn transform_refuses_what_validate_refuses() {
        for config in [
            r#"{"mode":"Binary"}"#,
            r#"{"source":""}"#,
            r#"{"x":1}"#,
            "7",
        ] {
            let refusal = CloudEvents::validate_config(config).unwrap_err();
            let error = CloudEvents::transform(event(PAYLOAD), request(), config).unwrap_err();
            assert_eq!(error, refusal.to_string());
        }
    }

    #[test]
    fn structured_mode_replaces_content_type_only() {
        let out = send(PAYLOAD, request(), "null");
        assert_eq!(
            out.headers,
            vec![
                ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
                ("Authorization".to_owned(), "Bearer t".to_owned()),
            ]
        );
        assert_eq!(out.url, "https://example.com/hook");
        assert_eq!(
            out.body,
            cloudevent_body(PAYLOAD, &Config::parse("null").unwrap()).unwrap()
        );
    }

    #[test]
    fn binary_mode_puts_attributes_in_headers_and_data_in_body() {
        let out = send(PAYLOAD, request(), r#"{"mode":"binary","source":"/acme"}"#);
        assert_eq!(out.url, "https://example.com/hook");
        assert_eq!(
            out.headers,
            vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Authorization".to_owned(), "Bearer t".to_owned()),
                ("ce-specversion".to_owned(), "1.0".to_owned()),
                ("ce-id".to_owned(), "7f0c".to_owned()),
                ("ce-source".to_owned(), "/acme".to_owned()),
                ("ce-type".to_owned(), "parse.success".to_owned()),
                ("ce-time".to_owned(), "2025-07-31T18:07:55.115Z".to_owned()),
            ]
        );
        let data: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(data, json!({"job_id": "j1"}));
    }

    #[test]
    fn both_modes_carry_the_same_attributes() {
        let config = r#"{"source":"urn:acme parser/ü"}"#;
        let structured: Value =
            serde_json::from_slice(&send(PAYLOAD, request(), config).body).unwrap();
        let binary_config = r#"{"source":"urn:acme parser/ü","mode":"binary"}"#;
        let binary = send(PAYLOAD, request(), binary_config);
        for attribute in ["specversion", "id", "source", "type", "time"] {
            let encoded = header_value(structured[attribute].as_str().unwrap());
            assert_eq!(
                header(&binary, &format!("ce-{attribute}")),
                [encoded.as_str()],
                "{attribute}"
            );
        }
        assert_eq!(
            header(&binary, "content-type"),
            [structured["datacontenttype"].as_str().unwrap()]
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&binary.body).unwrap(),
            structured["data"]
        );
    }

    #[test]
    fn binary_mode_replaces_stale_ce_headers() {
        let mut stale = request();
        stale.headers.push(("CE-ID".into(), "old".into()));
        stale
            .headers
            .push(("ce-datacontenttype".into(), "text/plain".into()));
        let out = send(PAYLOAD, stale, r#"{"mode":"binary"}"#);
        assert_eq!(header(&out, "ce-id"), ["7f0c"]);
        assert!(header(&out, "ce-datacontenttype").is_empty());
        assert_eq!(header(&out, "content-type"), ["application/json"]);
    }

    #[test]
    fn binary_mode_body_is_any_json_data() {
        let payload = r#"{"event_id":"e","event_type":"t","timestamp":0,"data":[1,"two",null]}"#;
        let out = send(payload, request(), r#"{"mode":"binary"}"#);
        assert_eq!(out.body, br#"[1,"two",null]"#);
        let payload = r#"{"event_id":"e","event_type":"t","timestamp":0,"data":null}"#;
        assert_eq!(
            send(payload, request(), r#"{"mode":"binary"}"#).body,
            b"null"
        );
    }

    #[test]
    fn header_values_are_percent_encoded() {
        assert_eq!(header_value("parse.success"), "parse.success");
        assert_eq!(header_value("/a/b?c=d&e#f~"), "/a/b?c=d&e#f~");
        // The binding's own example.
        assert_eq!(
            header_value("Euro \u{20AC} \u{1F600}"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(header_value("a\"b%c"), "a%22b%25c");
        assert_eq!(header_value("a\r\nb\t\u{7f}"), "a%0D%0Ab%09%7F");
        let payload = r#"{"event_id":"id 1","event_type":"t\u00e9\n","timestamp":0,"data":{}}"#;
        let out = send(payload, request(), r#"{"mode":"binary","source":"s\"%"}"#);
        assert_eq!(header(&out, "ce-id"), ["id%201"]);
        assert_eq!(header(&out, "ce-type"), ["t%C3%A9%0A"]);
        assert_eq!(header(&out, "ce-source"), ["s%22%25"]);
        for (_, value) in &out.headers {
            assert!(
                value.bytes().all(|b| (b' '..=b'~').contains(&b)),
                "{value:?}"
            );
        }
    }

    #[test]
    fn schema_lists_exactly_the_config_keys() {
        let schema: Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert_eq!(
            hookgate_plugin::closed_schema_keys(CONFIG_SCHEMA),
            Some(hookgate_plugin::sorted(CONFIG_KEYS))
        );
        assert_eq!(schema["properties"]["source"]["default"], DEFAULT_SOURCE);
        assert_eq!(
            schema["properties"]["mode"]["enum"],
            json!(["structured", "binary", null])
        );
    }
}
