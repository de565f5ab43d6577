//! `inngest` transform plugin: reshapes a delivery into an Inngest event
//! (`{"name", "data", "id", "ts"}`) so an operator route can feed Inngest's event API directly.

use hookgate_plugin::{Event, Outcome, Payload, Plugin, Request, parse_config, set_header};
use serde_json::json;

const DEFAULT_PREFIX: &str = "Llamacloud/";

/// Builds the Inngest event body from the canonical payload text and the plugin config.
pub fn inngest_body(payload: &str, config: &str) -> Result<Vec<u8>, String> {
    let config = parse_config(config, &["prefix"])?;
    let prefix = hookgate_plugin::config_str(&config, "prefix")?.unwrap_or(DEFAULT_PREFIX);
    let payload = Payload::parse(payload)?;
    let ts = hookgate_plugin::timestamp_millis(payload.timestamp)?;
    let body = json!({
        "name": format!("{prefix}{}", payload.event_type),
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
    fn transform(event: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        request.body = inngest_body(&event.payload, config)?;
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
        inngest_body(PAYLOAD, config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn default_prefix() {
        let b = body("null").unwrap();
        assert_eq!(b["name"], "Llamacloud/parse.success");
        assert_eq!(b["id"], "7f0c");
        assert_eq!(b["ts"], 1753985275115i64);
        assert_eq!(b["data"], serde_json::from_str::<Value>(PAYLOAD).unwrap());
    }

    #[test]
    fn custom_prefix() {
        assert_eq!(
            body(r#"{"prefix":"Acme/"}"#).unwrap()["name"],
            "Acme/parse.success"
        );
    }

    #[test]
    fn bad_config() {
        assert!(body(r#"{"prefix":3}"#).unwrap_err().contains("prefix"));
        assert!(body(r#"{"prefx":"a"}"#).unwrap_err().contains("prefx"));
        assert!(body("[1]").is_err());
    }

    #[test]
    fn bad_payload() {
        assert!(inngest_body("{}", "null").unwrap_err().contains("event_id"));
    }

    #[test]
    fn request_keeps_url_and_headers() {
        let event = Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1753985275.1154444,
            payload: PAYLOAD.into(),
        };
        let request = Request {
            url: "https://inn.gs/e/key".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("X-Webhook-Event-ID".into(), "7f0c".into()),
            ],
            body: b"\"...\"".to_vec(),
        };
        let Outcome::Send(out) = Inngest::transform(event, request, "null").unwrap() else {
            panic!("expected send");
        };
        assert_eq!(out.url, "https://inn.gs/e/key");
        assert_eq!(out.headers[0].1, "application/json");
        assert_eq!(out.headers[1].0, "X-Webhook-Event-ID");
        assert_eq!(out.headers.len(), 2);
    }
}
