//! `slack` transform plugin: turns a delivery into a Slack incoming-webhook message, so a
//! destination can point straight at a Slack webhook URL and get a readable notification: a
//! summary `text`, a section block (outcome emoji, event type, job id) and a context block
//! (event id, time). Each text is cut to Slack's limit, ending in `…`, so long ids cannot
//! make Slack refuse the message.
//!
//! Config (`null` or an object), both optional strings copied into the message:
//! `channel` (the channel to post to, where the webhook allows overriding it) and
//! `username` (the name shown as the sender). Any other key is refused.

use hookgate_plugin::{
    ConfigError, Event, Outcome, Payload, Plugin, Request, config_str, parse_config, set_header,
};
use serde_json::{Map, Value, json};

/// Slack's limit on a section block's text.
pub const SECTION_TEXT_MAX: usize = 3_000;
/// Slack's limit on a context block element's text.
pub const CONTEXT_TEXT_MAX: usize = 3_000;
/// Slack's limit on a message's top-level `text`.
pub const MESSAGE_TEXT_MAX: usize = 40_000;

/// The config keys, shared by the parser and the schema test so they cannot drift apart.
const CONFIG_KEYS: &[&str] = &["channel", "username"];

const CONFIG_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "slack plugin config",
  "type": ["object", "null"],
  "properties": {
    "channel": {
      "description": "Sent as the message's `channel`, e.g. `#alerts`; omitted when absent.",
      "type": ["string", "null"]
    },
    "username": {
      "description": "Sent as the message's `username`; omitted when absent.",
      "type": ["string", "null"]
    }
  },
  "additionalProperties": false
}"#;

/// The destination's config, checked; `validate_config` and `transform` both parse with it so
/// they cannot disagree on what is acceptable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub channel: Option<String>,
    pub username: Option<String>,
}

impl Config {
    pub fn parse(config: &str) -> Result<Self, ConfigError> {
        let config = parse_config(config, CONFIG_KEYS)?;
        Ok(Self {
            channel: config_str(&config, "channel")?.map(str::to_owned),
            username: config_str(&config, "username")?.map(str::to_owned),
        })
    }
}

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

/// Cuts escaped `text` to at most `max` characters, the last one `…`, when it is longer.
///
/// Length is counted in UTF-16 code units, which is never less than the count of characters:
/// the text fits whether Slack counts code points or UTF-16 units. The cut is on a character
/// boundary, and moves back before an entity it would split (`&am`), which would otherwise
/// show as stray text; every `&` in `text` starts an entity, because `escape` made it.
pub fn within_limit(text: String, max: usize) -> String {
    if text.encode_utf16().count() <= max {
        return text;
    }
    let budget = max.saturating_sub('…'.len_utf16());
    let mut used = 0;
    let mut end = 0;
    for c in text.chars() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        end += c.len_utf8();
    }
    let mut kept = &text[..end];
    if let Some(entity) = kept.rfind('&')
        && !kept[entity..].contains(';')
    {
        kept = &kept[..entity];
    }
    format!("{kept}…")
}

/// Builds the Slack message body from the canonical payload text.
pub fn slack_body(payload: &str, config: &Config) -> Result<Vec<u8>, String> {
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
    body.insert("text".into(), within_limit(text, MESSAGE_TEXT_MAX).into());
    body.insert(
        "blocks".into(),
        json!([
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": within_limit(section, SECTION_TEXT_MAX)},
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": within_limit(context, CONTEXT_TEXT_MAX)},
                ],
            },
        ]),
    );
    if let Some(c) = &config.channel {
        body.insert("channel".into(), c.as_str().into());
    }
    if let Some(u) = &config.username {
        body.insert("username".into(), u.as_str().into());
    }
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

pub struct Slack;

impl Plugin for Slack {
    const CONFIG_SCHEMA: Option<&'static str> = Some(CONFIG_SCHEMA);

    fn validate_config(config: &str) -> Result<(), ConfigError> {
        Config::parse(config).map(drop)
    }

    fn transform(event: Event, mut request: Request, config: &str) -> Result<Outcome, String> {
        let config = Config::parse(config)?;
        request.body = slack_body(&event.payload, &config)?;
        set_header(&mut request.headers, "Content-Type", "application/json");
        Ok(Outcome::Send(request))
    }
}

hookgate_plugin::plugin!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event_id: &str, event_type: &str, data: Value) -> String {
        json!({
            "event_id": event_id,
            "event_type": event_type,
            "timestamp": 1753985275.1154444,
            "data": data,
        })
        .to_string()
    }

    fn message(payload: &str, config: &str) -> Result<Value, String> {
        let config = Config::parse(config)?;
        slack_body(payload, &config).map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn body(event_type: &str, data: &str, config: &str) -> Result<Value, String> {
        let data = serde_json::from_str(data).unwrap();
        message(&payload("7f0c", event_type, data), config)
    }

    /// The three texts Slack limits, with their limits.
    fn limited_texts(message: &Value) -> [(&str, usize); 3] {
        [
            (message["text"].as_str().unwrap(), MESSAGE_TEXT_MAX),
            (
                message["blocks"][0]["text"]["text"].as_str().unwrap(),
                SECTION_TEXT_MAX,
            ),
            (
                message["blocks"][1]["elements"][0]["text"]
                    .as_str()
                    .unwrap(),
                CONTEXT_TEXT_MAX,
            ),
        ]
    }

    /// Every `&` starts a whole entity: no cut left half of one behind.
    fn entities_whole(text: &str) -> bool {
        text.match_indices('&').all(|(at, _)| {
            ["&amp;", "&lt;", "&gt;"]
                .iter()
                .any(|entity| text[at..].starts_with(entity))
        })
    }

    /// 10,000 characters mixing one-, two-, three- and four-byte UTF-8 (the last two UTF-16
    /// units long) with the characters Slack needs escaped.
    fn long_id() -> String {
        let id: String = ['a', 'é', '&', '漢', '<', '😀', '>', 'z']
            .iter()
            .cycle()
            .take(10_000)
            .collect();
        assert_eq!(id.chars().count(), 10_000);
        id
    }

    #[test]
    fn success_message() {
        let b = body("parse.success", r#"{"job_id":"j1","id":"other"}"#, "null").unwrap();
        assert_eq!(b["text"], ":white_check_mark: parse.success: job j1");
        assert_eq!(b["blocks"][0]["type"], "section");
        assert_eq!(b["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(
            b["blocks"][0]["text"]["text"],
            ":white_check_mark: *parse.success*\nJob `j1`"
        );
        assert_eq!(b["blocks"][1]["type"], "context");
        assert_eq!(
            b["blocks"][1]["elements"][0]["text"],
            "Event `7f0c` · 2025-07-31T18:07:55.115Z"
        );
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
        let b = body("parse.success", "{}", r#"{"channel":null}"#).unwrap();
        assert!(b.get("channel").is_none());
    }

    #[test]
    fn bad_config() {
        assert!(
            body("parse.success", "{}", r#"{"channel":1}"#)
                .unwrap_err()
                .contains("`channel`")
        );
        assert!(
            body("parse.success", "{}", r#"{"icon":"x"}"#)
                .unwrap_err()
                .contains("`icon`")
        );
    }

    #[test]
    fn validate_config_names_the_field() {
        assert_eq!(Slack::validate_config("null"), Ok(()));
        assert_eq!(
            Slack::validate_config(r##"{"channel":"#a","username":"b"}"##),
            Ok(())
        );
        let pointer = |config: &str| Slack::validate_config(config).unwrap_err().pointer;
        assert_eq!(pointer(r#"{"channel":1}"#), "/channel");
        assert_eq!(pointer(r#"{"username":["x"]}"#), "/username");
        assert_eq!(pointer(r#"{"icon":"x"}"#), "/icon");
        assert_eq!(pointer("\"#alerts\""), "");
    }

    #[test]
    fn transform_refuses_what_validate_refuses() {
        let event = Event {
            id: "7f0c".into(),
            event_type: "parse.success".into(),
            timestamp: 1753985275.1154444,
            payload: payload("7f0c", "parse.success", json!({})),
        };
        for config in [r#"{"channel":1}"#, r#"{"icon":"x"}"#, "[]"] {
            let refusal = Slack::validate_config(config).unwrap_err();
            let request = Request {
                url: "https://hooks.slack.com/services/T/B/x".into(),
                headers: Vec::new(),
                body: Vec::new(),
            };
            let error = Slack::transform(event.clone(), request, config).unwrap_err();
            assert_eq!(error, refusal.to_string());
        }
    }

    #[test]
    fn long_ids_stay_within_slack_limits() {
        let long = long_id();
        let cases = [
            payload("7f0c", "parse.success", json!({ "job_id": long })),
            payload(&long, "parse.success", json!({ "job_id": "j1" })),
            payload(&long, &long, json!({ "job_id": long })),
            // Escaping makes this 50,000 characters, past even the message limit.
            payload(
                &"&".repeat(10_000),
                "parse.error",
                json!({ "job_id": "&".repeat(10_000) }),
            ),
        ];
        for payload in &cases {
            let bytes = slack_body(payload, &Config::default()).unwrap();
            let message: Value = serde_json::from_slice(&bytes).expect("valid JSON");
            for (text, max) in limited_texts(&message) {
                assert!(
                    text.chars().count() <= max,
                    "{} > {max}",
                    text.chars().count()
                );
                assert!(text.encode_utf16().count() <= max);
                assert!(entities_whole(text), "split entity in {text:?}");
            }
        }
    }

    #[test]
    fn long_job_id_is_cut_with_an_ellipsis() {
        let long = long_id();
        let m = message(
            &payload("7f0c", "parse.success", json!({ "job_id": long })),
            "null",
        )
        .unwrap();
        let [(text, _), (section, _), (context, _)] = limited_texts(&m);
        assert!(section.starts_with(":white_check_mark: *parse.success*\nJob `a"));
        assert!(section.ends_with('…'));
        // Cut as late as the limit allows: at most a 5-character entity plus one unit short.
        assert!(section.encode_utf16().count() > SECTION_TEXT_MAX - 6);
        // The summary has room for all of it, escaped.
        assert_eq!(
            text,
            format!(":white_check_mark: parse.success: job {}", escape(&long))
        );
        assert_eq!(context, "Event `7f0c` · 2025-07-31T18:07:55.115Z");

        let m = message(
            &payload(
                &"&".repeat(10_000),
                "t",
                json!({ "job_id": "&".repeat(10_000) }),
            ),
            "null",
        )
        .unwrap();
        for (text, max) in limited_texts(&m) {
            assert!(text.ends_with("&amp;…"), "{}", &text[text.len() - 20..]);
            assert!(text.encode_utf16().count() <= max);
        }
    }

    #[test]
    fn cut_respects_characters_and_entities() {
        assert_eq!(within_limit("abc".into(), 3), "abc");
        assert_eq!(within_limit("abcd".into(), 3), "ab…");
        // Four-byte characters are two UTF-16 units: never half of one.
        assert_eq!(within_limit("😀😀😀".into(), 5), "😀😀…");
        assert_eq!(within_limit("😀😀😀".into(), 4), "😀…");
        assert_eq!(within_limit("éééé".into(), 3), "éé…");
        // A cut inside `&amp;` drops the whole entity.
        assert_eq!(within_limit("ab&amp;cd".into(), 6), "ab…");
        assert_eq!(within_limit("ab&amp;cd".into(), 8), "ab&amp;…");
        assert_eq!(within_limit("a;&lt;x".into(), 5), "a;…");
    }

    #[test]
    fn schema_lists_exactly_the_config_keys() {
        assert_eq!(
            hookgate_plugin::closed_schema_keys(CONFIG_SCHEMA),
            Some(hookgate_plugin::sorted(CONFIG_KEYS))
        );
    }
}
