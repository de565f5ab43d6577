//! Attempts record the request as it was sent: the URL (credentials hidden), every header
//! including the signature (credentials masked), and the body after any plugin; and the
//! response's headers. The stored signature verifies over the stored body, and the stored
//! body is the one the receiver read.

mod common;

use common::receiver::Answer;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn header<'a>(pairs: &'a Value, name: &str) -> Option<&'a str> {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap())
}

#[tokio::test]
async fn attempts_record_the_request_as_sent_and_the_response_headers() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500)
        .header("X-Receiver-Trace", "t-1")
        .header("Set-Cookie", "session=cookie-secret")]);
    let url = receiver
        .url("/in?tenant=acme")
        .replacen("http://", "http://ops:url-secret@", 1);
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": url, "webhook_output_format": "json",
                   "webhook_signing_secret": "lc-secret-1",
                   "webhook_headers": {"Authorization": "Bearer header-secret", "X-Tenant": "acme"},
                   "webhook_transform": "inngest"}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let delivery = app.wait_for_status(&id, "succeeded", WAIT).await;
    let text = delivery.to_string();
    for secret in [
        "url-secret",
        "header-secret",
        "lc-secret-1",
        "cookie-secret",
    ] {
        assert!(!text.contains(secret), "{secret} in {delivery:#}");
    }
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{delivery:#}");
    let received = receiver.received();
    // The first attempt's record is in the history, the second's in the delivery's row:
    // both hold what was sent.
    for (attempt, sent) in attempts.iter().zip(&received) {
        let request = &attempt["request"];
        assert_eq!(
            request["url"],
            receiver
                .url("/in?tenant=acme")
                .replacen("http://", "http://***@", 1),
            "{attempt:#}"
        );
        let headers = &request["headers"];
        assert_eq!(header(headers, "Authorization"), Some("Bearer ***"));
        assert_eq!(header(headers, "X-Tenant"), Some("acme"));
        assert_eq!(
            header(headers, "X-Webhook-Event-ID"),
            accepted["event_id"].as_str()
        );
        // The body after the plugin, byte for byte as the receiver read it.
        let body = request["body"].as_str().unwrap();
        assert_eq!(body.as_bytes(), &sent.body[..], "{attempt:#}");
        assert!(
            body.contains("\"name\":\"Llamacloud/parse.success\""),
            "the inngest plugin's body: {body}"
        );
        // The stored signature verifies over the stored body, with the secret the test holds.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"lc-secret-1").unwrap();
        mac.update(body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(headers, "LC-Signature"), Some(expected.as_str()));
        assert_eq!(
            sent.header("lc-signature").as_deref(),
            Some(expected.as_str())
        );
    }
    let refused = &attempts[0];
    assert_eq!(refused["response_status"], 500);
    assert_eq!(
        header(&refused["response_headers"], "x-receiver-trace"),
        Some("t-1")
    );
    assert_eq!(
        header(&refused["response_headers"], "set-cookie"),
        Some("***")
    );
}

#[tokio::test]
async fn an_attempt_that_sent_nothing_records_no_request() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/x"), "webhook_transform": "filter",
                   "webhook_transform_config": {"equals": {"/data/tier": "none"}}}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "skipped", WAIT)
        .await;
    let attempt = &delivery["attempts"][0];
    assert!(attempt.get("request").is_none(), "{attempt:#}");
    assert_eq!(receiver.count(), 0);
}
