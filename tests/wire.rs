//! The request on the wire (SPEC 3–4): payload, output formats, headers, signatures, and
//! event-type filtering, checked at a real receiver.

mod common;

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn string_format_is_the_default_and_headers_are_exact() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {"id": "job-7", "job_id": "job-7"},
            "webhook_configurations": [{
                "webhook_url": receiver.url("/hook"),
                "webhook_headers": {"Authorization": "Bearer abc", "Content-Type": "text/plain", "X-Route": "r1"}
            }]
        }))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(event_id).unwrap().get_version_num() == 4);
    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        request.header("user-agent").as_deref(),
        Some("llamaindex-webhook-service/1.0")
    );
    assert_eq!(
        request.header("x-webhook-event-id").as_deref(),
        Some(event_id)
    );
    assert_eq!(
        request.header("x-webhook-event-type").as_deref(),
        Some("parse.success")
    );
    assert_eq!(
        request.header("authorization").as_deref(),
        Some("Bearer abc")
    );
    assert_eq!(request.header("x-route").as_deref(), Some("r1"));
    assert_eq!(request.headers.get_all("content-type").iter().count(), 1);
    assert!(request.header("lc-signature").is_none());
    // "string": the payload serialised, then encoded again as a JSON string value.
    let outer: Value = request.json();
    let inner: Value =
        serde_json::from_str(outer.as_str().expect("body is a JSON string")).unwrap();
    assert_eq!(inner["event_id"], event_id);
    assert_eq!(inner["event_type"], "parse.success");
    assert_eq!(inner["data"], json!({"id": "job-7", "job_id": "job-7"}));
    let timestamp = inner["timestamp"].as_f64().unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - timestamp).abs() < 60.0,
        "timestamp {timestamp} is not the accept time"
    );
    assert_eq!(
        inner.as_object().unwrap().len(),
        4,
        "payload has exactly four fields: {inner}"
    );
}

#[tokio::test]
async fn json_format_sends_the_payload_object() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "extract.error",
            json!({"webhook_url": receiver.url("/j"), "webhook_output_format": "json"}),
        ))
        .await;
    let body = receiver.wait_for(1, WAIT).await[0].json();
    assert_eq!(body["event_id"], accepted["event_id"]);
    assert_eq!(body["event_type"], "extract.error");
    assert_eq!(body["data"]["job_id"], "job-1");
    assert!(body["timestamp"].is_f64());
}

#[tokio::test]
async fn lc_signature_is_hmac_sha256_of_the_exact_body() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    app.ingest(event_to(
        "parse.success",
        json!({"webhook_url": receiver.url("/s"), "webhook_signing_secret": "s3cr3t"}),
    ))
    .await;
    let request = &receiver.wait_for(1, WAIT).await[0];
    let expected = format!("sha256={}", hex::encode(hmac(b"s3cr3t", &request.body)));
    assert_eq!(request.header("lc-signature"), Some(expected));
    assert!(request.header("webhook-signature").is_none());
}

#[tokio::test]
async fn standard_webhooks_signature_for_whsec_secrets() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let accepted = app
        .ingest(event_to(
            "classify.success",
            json!({"webhook_url": receiver.url("/sw"), "webhook_signing_secret": secret, "webhook_output_format": "json"}),
        ))
        .await;
    let request = &receiver.wait_for(1, WAIT).await[0];
    let id = request.header("webhook-id").unwrap();
    let timestamp = request.header("webhook-timestamp").unwrap();
    assert_eq!(id, accepted["event_id"].as_str().unwrap());
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!(
        (0..60).contains(&age),
        "webhook-timestamp is the attempt time"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .unwrap();
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(&request.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac(&key, &message))
    );
    assert_eq!(request.header("webhook-signature"), Some(expected));
    // The LlamaCloud header is sent too, keyed by the secret string, so either check works.
    let lc = format!(
        "sha256={}",
        hex::encode(hmac(secret.as_bytes(), &request.body))
    );
    assert_eq!(request.header("lc-signature"), Some(lc));
}

#[tokio::test]
async fn event_filter_null_means_all_and_lists_select() {
    let app = spawn_app().await;
    let all = Receiver::start().await;
    let only_errors = Receiver::start().await;
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": [
                {"webhook_url": all.url("/all"), "webhook_events": null},
                {"webhook_url": only_errors.url("/err"), "webhook_events": ["parse.error", "extract.error"]}
            ]
        }))
        .await;
    assert_eq!(
        accepted["deliveries"].as_array().unwrap().len(),
        1,
        "{accepted}"
    );
    assert_eq!(accepted["deliveries"][0]["webhook_url"], all.url("/all"));
    app.ingest(json!({
        "event_type": "parse.error",
        "data": {},
        "webhook_configurations": [{"webhook_url": only_errors.url("/err"), "webhook_events": ["parse.error"]}]
    }))
    .await;
    all.wait_for(1, WAIT).await;
    let errors = only_errors.wait_for(1, WAIT).await;
    assert_eq!(
        errors[0].header("x-webhook-event-type").as_deref(),
        Some("parse.error")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        only_errors.count(),
        1,
        "the success event must not reach the errors-only destination"
    );
}

#[tokio::test]
async fn operator_routes_receive_matching_events_from_the_config() {
    let receiver = Receiver::start().await;
    let route_url = receiver.url("/route");
    let app = spawn_app_with(|config| {
        let text = format!(
            "[[routes]]\nname = \"ops\"\nwebhook_url = \"{route_url}\"\nwebhook_events = [\"extract.*\"]\nwebhook_output_format = \"json\"\n"
        );
        config.routes = hookgate::config::Config::from_toml(&text).unwrap().routes;
    })
    .await;
    let parse = app
        .ingest(json!({"event_type": "parse.success", "data": {}}))
        .await;
    assert_eq!(parse["deliveries"], json!([]));
    let extract = app
        .ingest(json!({"event_type": "extract.success", "data": {"job_id": "e1"}}))
        .await;
    assert_eq!(extract["deliveries"][0]["webhook_url"], route_url);
    let body = receiver.wait_for(1, WAIT).await[0].json();
    assert_eq!(body["event_type"], "extract.success");
}
