//! Ingestion (SPEC 8): every bad input answered with a 4xx naming the field, the API key
//! check, idempotent event ids, batches, and the egress guard at ingest.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn expect_error(app: &TestApp, path: &str, body: Value, status: u16, field: &str) {
    let (got, answer) = app.post(path, &body).await;
    assert_eq!(got, status, "{body} answered {got}: {answer}");
    let detail = answer["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {answer}"));
    assert!(
        detail.contains(field),
        "detail {detail:?} does not name {field:?}"
    );
}

#[tokio::test]
async fn every_bad_input_is_a_4xx_naming_the_field() {
    let app = spawn_app().await;
    let hook = "http://127.0.0.1:9/hook";
    let with = |webhook: Value| json!({"event_type": "parse.success", "data": {}, "webhook_configurations": [webhook]});
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"data": {}}), 422, "event_type"),
        (
            json!({"event_type": "parse.done", "data": {}}),
            422,
            "event_type",
        ),
        (json!({"event_type": 7, "data": {}}), 422, "event_type"),
        (
            json!({"event_type": "parse.success", "data": [1]}),
            422,
            "data",
        ),
        (
            json!({"event_type": "parse.success", "event_id": "nope"}),
            422,
            "event_id",
        ),
        (
            // Stored as text; PostgreSQL's text cannot even hold a NUL.
            json!({"event_type": "parse.success", "project_id": "a\u{0}b"}),
            422,
            "project_id",
        ),
        (
            with(json!({"webhook_events": []})),
            422,
            "webhook_configurations[0]",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_events": []})),
            422,
            "webhook_configurations[0].webhook_events",
        ),
        (
            with(json!({"webhook_url": "http://127.0.0.1:9/a\u{0}b"})),
            422,
            "webhook_configurations[0].webhook_url",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_signing_secret": "s\u{0}"})),
            422,
            "webhook_configurations[0].webhook_signing_secret",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_events": ["parse.success", "parse.nope"]})),
            422,
            "webhook_events[1]",
        ),
        (
            with(json!({"webhook_url": "ftp://example.com/x"})),
            422,
            "webhook_configurations[0].webhook_url",
        ),
        (
            with(json!({"webhook_url": "not a url"})),
            422,
            "webhook_url",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_headers": {"X-A": "1\r\nX-Injected: 2"}})),
            422,
            "webhook_headers.X-A",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_headers": {"Bad Name": "1"}})),
            422,
            "webhook_headers.Bad Name",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_output_format": "xml"})),
            422,
            "webhook_output_format",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_transform": "nonexistent"})),
            422,
            "webhook_transform",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_signing_secret": "whsec_!!"})),
            422,
            "webhook_signing_secret",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_retry": {"max_attempts": 0}})),
            422,
            "webhook_retry.max_attempts",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_retry": {"timeout_ms": 600_000}})),
            422,
            "webhook_retry.timeout_ms",
        ),
        (
            with(json!({"webhook_url": hook, "webhook_retry": {"max_delay_ms": u64::MAX}})),
            422,
            "webhook_retry.max_delay_ms",
        ),
        (
            json!({"event_type": "parse.success", "webhook_configuration_ids": ["no-such-id"]}),
            422,
            "webhook_configuration_ids[0]",
        ),
    ];
    for (body, status, field) in cases {
        expect_error(&app, "/api/v1/events", body, status, field).await;
    }
    let (status, answer) = app.post_raw("/api/v1/events", "{\"event_type\": ").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("JSON"));
    // Nothing above was stored.
    let (_, deliveries) = app.get("/api/v1/deliveries").await;
    assert_eq!(deliveries["items"], json!([]));
}

#[tokio::test]
async fn oversized_bodies_are_413_naming_the_body() {
    let app = spawn_app_with(|config| config.limits.max_event_bytes = 4_096).await;
    let big = "x".repeat(8_000);
    let (status, answer) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.success", "data": {"blob": big}}),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().starts_with("body"),
        "{answer}"
    );
    // A batch whose request fits but one event's payload does not names that event.
    let (status, answer) = app
        .post(
            "/api/v1/events/batch",
            &json!({"events": [{"event_type": "parse.success", "data": {}}, {"event_type": "parse.success", "data": {"blob": big}}]}),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("events[1].data"),
        "{answer}"
    );
}

#[tokio::test]
async fn the_api_key_is_required() {
    let app = spawn_app().await;
    let body = json!({"event_type": "parse.success", "data": {}});
    for (path, auth) in [
        ("/api/v1/events", None),
        ("/api/v1/events", Some("Bearer wrong")),
        ("/api/v1/deliveries", Some("Basic dGVzdA==")),
    ] {
        let mut request = app.http.post(app.url(path)).json(&body);
        if path == "/api/v1/deliveries" {
            request = app.http.get(app.url(path));
        }
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} with {auth:?}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["detail"].as_str().unwrap().contains("API key"));
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            app.http.get(app.url(open)).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
}

#[tokio::test]
async fn a_generated_key_is_kept_in_the_data_folder() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path());
    config.api_keys.clear();
    let app = hookgate::app::App::build(config.clone()).await.unwrap();
    let key = app.api_key.clone();
    assert!(key.len() >= 32);
    drop(app);
    let saved = std::fs::read_to_string(temp.path().join("api_key")).unwrap();
    assert_eq!(saved.trim(), key);
    let again = hookgate::app::App::build(config).await.unwrap();
    assert_eq!(again.api_key, key, "a restart reuses the generated key");
}

#[tokio::test]
async fn a_repeated_event_id_is_not_queued_twice() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut event = event_to(
        "parse.success",
        json!({"webhook_url": receiver.url("/once")}),
    );
    event["event_id"] = json!(event_id);
    let first = app.ingest(event.clone()).await;
    let second = app.ingest(event).await;
    assert_eq!(first["event_id"], event_id);
    assert_eq!(second["event_id"], event_id);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["deliveries"][0]["id"], second["deliveries"][0]["id"]);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_batch_is_accepted_whole_or_not_at_all() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let event = |n: u32| json!({"event_type": "extract.success", "data": {"n": n}, "webhook_configurations": [{"webhook_url": receiver.url("/b"), "webhook_output_format": "json"}]});
    let (status, answer) = app
        .post(
            "/api/v1/events/batch",
            &json!({"events": [event(1), {"event_type": "bogus"}]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("events[1].event_type"),
        "{answer}"
    );
    let (status, answer) = app
        .post(
            "/api/v1/events/batch",
            &json!({"events": (0..50).map(event).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"].as_array().unwrap().len(), 50);
    let received = receiver.wait_for(50, Duration::from_secs(20)).await;
    let mut seen: Vec<u64> = received
        .iter()
        .map(|request| request.json()["data"]["n"].as_u64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..50).collect::<Vec<_>>(),
        "only the good batch was delivered, each once"
    );
    let (status, answer) = app
        .post("/api/v1/events/batch", &json!({"events": []}))
        .await;
    assert_eq!(status, 422);
    assert!(answer["detail"].as_str().unwrap().contains("events"));
}

#[tokio::test]
async fn egress_to_internal_addresses_is_refused_unless_allowed() {
    let app = spawn_app_with(|config| config.egress_allow.clear()).await;
    for url in [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://192.168.1.10/x",
    ] {
        let (status, answer) = app
            .post(
                "/api/v1/events",
                &event_to("parse.success", json!({"webhook_url": url})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.contains("webhook_url") && detail.contains("egress"),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn the_delivery_client_checks_resolved_addresses() {
    // Host names pass ingest (no DNS there); the client refuses what they resolve to.
    use hookgate::deliver::client::{HttpClient, SendError};
    let guard = hookgate::egress::EgressGuard::new(&[]).unwrap();
    let client = HttpClient::new(guard, 64).unwrap();
    let request = hookgate::domain::OutgoingRequest {
        url: "http://ip6-localhost:9/x".into(),
        headers: vec![],
        body: bytes::Bytes::from_static(b"{}"),
    };
    let loopback_name = if tokio::net::lookup_host(("ip6-localhost", 0)).await.is_ok() {
        request
    } else {
        hookgate::domain::OutgoingRequest {
            url: "http://localhost.:9/x".into(),
            ..request
        }
    };
    match client.send(loopback_name, Duration::from_secs(2)).await {
        Err(SendError::EgressDenied(denied)) => assert!(denied.ip.is_loopback(), "{denied}"),
        other => panic!("expected an egress refusal, got {other:?}"),
    }
}
