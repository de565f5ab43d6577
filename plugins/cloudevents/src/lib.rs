//! `cloudevents` transform plugin: re-expresses a delivery as a CloudEvents 1.0 event in
//! structured-mode JSON, for receivers that speak CloudEvents rather than LlamaCloud webhooks.

use hookgate_plugin::{Event, Outcome, Payload, Plugin, Request, parse_config, set_header};
use serde_json::json;

const DEFAULT_SOURCE: &str = "hookgate";
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Builds the CloudEvents body from the canonical payload text and the plugin config.
pub fn cloudevent_body(payload: &str, config: &str) -> Result<Vec<u8>, String> {
    let config = parse_config(config, &["source"])?;
    let source = hookgate_plugin::config_str(&config, "source")?.unwrap_or(DEFAULT_SOURCE);
    if source.is_empty() {
        // CloudEvents requires a non-empty source.
        return Err("config field `source` must not be empty".into());
    }
    let payload = Payload::parse(payload)?;
    let body = json!({
        "specversion": "1.0",
        "id": payload.event_id,
        "source": source,
        "type": payload.event_type,
        "time": hookgate_plugin::rfc3339_millis(payload.timestamp)?,
        "datacontenttype": "application/json",
        "data": payload.data,
    });
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

pub struct CloudEvents;

impl Plugin for CloudEvents {
    fn transform(event: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        request.body = cloudevent_body(&event.payload, config)?;
        // Structured mode is signalled by this media type alone.
        set_header(&mut request.headers, "Content-Type", CONTENT_TYPE);
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(CloudEvents);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PAYLOAD: &str = r#"{"event_id":"7f0c","event_type":"parse.success","timestamp":1753985275.1154444,"data":{"job_id":"j1"}}"#;

    fn body(config: &str) -> Result<Value, String> {
        cloudevent_body(PAYLOAD, config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn structured_event() {
        assert_eq!(
            body("null").unwrap(),
            json!({
                "specversion": "1.0",
                "id": "7f0c",
                "source": "hookgate",
                "type": "parse.success",
                "time": "2025-07-31T18:07:55.115Z",
                "datacontenttype": "application/json",
                "data": {"job_id": "j1"},
            })
        );
    }

    #[test]
    fn custom_source() {
        assert_eq!(body(r#"{"source":"/acme"}"#).unwrap()["source"], "/acme");
    }

    #[test]
    fn bad_config() {
        assert!(body(r#"{"source":1}"#).unwrap_err().contains("source"));
        assert!(body(r#"{"source":""}"#).unwrap_err().contains("source"));
        assert!(body(r#"{"sauce":"x"}"#).unwrap_err().contains("sauce"));
    }

    #[test]
    fn content_type_replaced() {
        let event = Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1753985275.1154444,
            payload: PAYLOAD.into(),
        };
        let request = Request {
            url: "https://example.com/hook".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("Authorization".into(), "Bearer t".into()),
            ],
            body: Vec::new(),
        };
        let Outcome::Send(out) = CloudEvents::transform(event, request, "null").unwrap() else {
            panic!("expected send");
        };
        assert_eq!(
            out.headers,
            vec![
                ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
                ("Authorization".to_owned(), "Bearer t".to_owned()),
            ]
        );
        assert_eq!(out.url, "https://example.com/hook");
    }
}
