//! `slack` transform plugin: turns a delivery into a Slack incoming-webhook message, so a
//! destination can point straight at a Slack webhook URL and get a readable notification.

use hookgate_plugin::{Event, Outcome, Payload, Plugin, Request, parse_config, set_header};
use serde_json::{Map, Value, json};

/// Emoji shortcode for the outcome named by the event type's last segment.
fn emoji(event_type: &str) -> &'static str {
    let outcome = event_type.rsplit('.').next().unwrap_or_default();
    match outcome {
        "success" => ":white_check_mark:",
        "error" => ":x:",
        o if o.starts_with("partial") => ":warning:",
        _ => ":information_source:",
    }
}

/// Job id as text; producers may send it as a string or a number.
fn job_id(data: &Value) -> Option<String> {
    ["job_id", "id"]
        .iter()
        .filter_map(|k| data.get(k))
        .find_map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// Slack treats `&`, `<` and `>` as control characters in mrkdwn and plain text alike.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Builds the Slack message body from the canonical payload text and the plugin config.
pub fn slack_body(payload: &str, config: &str) -> Result<Vec<u8>, String> {
    let config = parse_config(config, &["channel", "username"])?;
    let channel = hookgate_plugin::config_str(&config, "channel")?;
    let username = hookgate_plugin::config_str(&config, "username")?;
    let payload = Payload::parse(payload)?;
    let time = hookgate_plugin::rfc3339_millis(payload.timestamp)?;
    let emoji = emoji(&payload.event_type);
    let event_type = escape(&payload.event_type);
    let job = job_id(&payload.data).map(|j| escape(&j));

    let text = match &job {
        Some(j) => format!("{emoji} {event_type}: job {j}"),
        None => format!("{emoji} {event_type}"),
    };
    let section = match &job {
        Some(j) => format!("{emoji} *{event_type}*\nJob `{j}`"),
        None => format!("{emoji} *{event_type}*"),
    };
    let context = format!("Event `{}` · {time}", escape(&payload.event_id));

    let mut body = Map::new();
    body.insert("text".into(), text.into());
    body.insert(
        "blocks".into(),
        json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ]),
    );
    if let Some(c) = channel {
        body.insert("channel".into(), c.into());
    }
    if let Some(u) = username {
        body.insert("username".into(), u.into());
    }
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

pub struct Slack;

impl Plugin for Slack {
    fn transform(event: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        request.body = slack_body(&event.payload, config)?;
        set_header(&mut request.headers, "Content-Type", "application/json");
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    fn body(event_type: &str, data: &str, config: &str) -> Result<Value, String> {
        let payload = format!(
            r#"{{"event_id":"7f0c","event_type":"{event_type}","timestamp":1753985275.1154444,"data":{data}}}"#
        );
        slack_body(&payload, config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn success_message() {
        let b = body("parse.success", r#"{"job_id":"j1","id":"other"}"#, "null").unwrap();
        assert_eq!(b["text"], ":white_check_mark: parse.success: job j1");
        assert_eq!(b["blocks"][0]["type"], "section");
        assert_eq!(b["blocks"][0]["text"]["type"], "mrkdwn");
        assert!(
            b["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("j1")
        );
        assert_eq!(b["blocks"][1]["type"], "context");
        let ctx = b["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(ctx.contains("7f0c") && ctx.contains("2025-07-31T18:07:55.115Z"));
        assert!(b.get("channel").is_none() && b.get("username").is_none());
    }

    #[test]
    fn emoji_by_outcome_and_id_fallback() {
        let b = body("extract.error", r#"{"id":42}"#, "null").unwrap();
        assert_eq!(b["text"], ":x: extract.error: job 42");
        let b = body("parse.partial_success", "{}", "null").unwrap();
        assert_eq!(b["text"], ":warning: parse.partial_success");
        let b = body("parse.pending", "{}", "null").unwrap();
        assert_eq!(b["text"], ":information_source: parse.pending");
    }

    #[test]
    fn escapes_control_characters() {
        let b = body("parse.success", r#"{"job_id":"<a&b>"}"#, "null").unwrap();
        assert_eq!(
            b["text"],
            ":white_check_mark: parse.success: job &lt;a&amp;b&gt;"
        );
    }

    #[test]
    fn channel_and_username() {
        let b = body(
            "parse.success",
            "{}",
            r##"{"channel":"#x","username":"y"}"##,
        )
        .unwrap();
        assert_eq!(b["channel"], "#x");
        assert_eq!(b["username"], "y");
    }

    #[test]
    fn bad_config() {
        assert!(
            body("parse.success", "{}", r#"{"channel":1}"#)
                .unwrap_err()
                .contains("channel")
        );
        assert!(
            body("parse.success", "{}", r#"{"icon":"x"}"#)
                .unwrap_err()
                .contains("icon")
        );
    }
}
