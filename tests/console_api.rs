//! The APIs the console adds, and how it is served: `GET /api/v1/activity` counts a window's
//! events and deliveries; `POST /api/v1/plugins/preview` shows the exact request a plugin
//! and a destination would make, sends nothing and names bad fields; `/console` and its
//! files are served with a strict Content Security Policy and revalidated by ETag.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_counts_the_windows_events_and_deliveries_by_status() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let (ok, failing) = (Receiver::start().await, Receiver::start().await);
    failing.always(Answer::status(500));
    let (status, empty) = app.get("/api/v1/activity").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["events_accepted"], 0);
    assert_eq!(empty["window_seconds"], 3600);

    for _ in 0..3 {
        let event = event_to("parse.success", json!({"webhook_url": ok.url("/ok")}));
        app.ingest_until(event, "succeeded", WAIT).await;
    }
    for _ in 0..2 {
        let event = event_to("parse.error", json!({"webhook_url": failing.url("/f")}));
        app.ingest_until(event, "failed", WAIT).await;
    }
    // Routed nowhere: an event in, no delivery.
    app.ingest(json!({"event_type": "extract.success", "data": {"id": "x"}}))
        .await;
    // Due in a minute: still waiting.
    app.ingest(event_to(
        "parse.pending",
        json!({"webhook_url": failing.url("/later"),
               "webhook_retry": {"max_attempts": 2, "base_delay_ms": 60_000}}),
    ))
    .await;
    let accepted_waiting = failing.wait_for(3, WAIT).await;
    assert_eq!(accepted_waiting.len(), 3);

    let (status, activity) = app.get("/api/v1/activity").await;
    assert_eq!(status, 200, "{activity}");
    assert_eq!(activity["events_accepted"], 7, "{activity:#}");
    assert_eq!(
        activity["deliveries"],
        json!({"waiting": 1, "succeeded": 3, "failed": 2, "skipped": 0}),
        "{activity:#}"
    );
    assert_eq!(
        activity["queue"]["queued"].as_u64().unwrap()
            + activity["queue"]["in_flight"].as_u64().unwrap(),
        1,
        "{activity:#}"
    );

    // A one-second window, a second after the last event: empty, though the store is not.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, later) = app.get("/api/v1/activity?window_seconds=1").await;
    assert_eq!(status, 200);
    assert_eq!(later["events_accepted"], 0, "{later:#}");
    assert_eq!(
        later["deliveries"],
        json!({"waiting": 0, "succeeded": 0, "failed": 0, "skipped": 0}),
        "{later:#}"
    );

    for bad in ["window_seconds=0", "window_seconds=999999999", "window=5"] {
        let (status, body) = app.get(&format!("/api/v1/activity?{bad}")).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("window"),
            "{bad}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_request_a_saved_destination_would_get_and_sends_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, saved) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({
                "webhook_url": receiver.url("/inngest"),
                "webhook_output_format": "json",
                "webhook_headers": {"X-Team": "parsing"},
                "webhook_signing_secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
                "webhook_transform": "inngest",
                "webhook_transform_config": {"prefix": "Saved/"},
            }),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let config_id = saved["id"].as_str().unwrap();
    let event_id = "5f7a3c1e-8d2b-4c6a-9e0f-1a2b3c4d5e6f";
    let (status, preview) = app
        .post(
            "/api/v1/plugins/preview",
            &json!({
                "config_id": config_id,
                "plugin_config": {"prefix": "Acme/"},
                "event": {"event_type": "parse.success", "event_id": event_id,
                          "data": {"job_id": "job-7"}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["outcome"], "send", "{preview:#}");
    assert_eq!(preview["plugin"], "inngest");
    assert_eq!(preview["method"], "POST");
    let request = &preview["request"];
    assert_eq!(request["url"], receiver.url("/inngest"));
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "Acme/parse.success", "{body:#}");
    assert_eq!(body["data"]["data"]["job_id"], "job-7");
    assert_eq!(body["id"], event_id);
    let header = |name: &str| {
        request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|pair| pair[1].as_str().unwrap().to_owned())
    };
    assert_eq!(header("X-Team").as_deref(), Some("parsing"));
    assert_eq!(
        header("X-Webhook-Event-Type").as_deref(),
        Some("parse.success")
    );
    assert_eq!(header("X-Webhook-Event-ID").as_deref(), Some(event_id));
    assert_eq!(header("webhook-id").as_deref(), Some(event_id));
    assert!(
        header("webhook-signature").is_some_and(|value| value.starts_with("v1,")),
        "signed with the saved secret: {preview:#}"
    );
    assert!(header("LC-Signature").is_some(), "{preview:#}");

    // The saved configuration's own plugin and config when the body gives none.
    let (_, own) = app
        .post(
            "/api/v1/plugins/preview",
            &json!({"config_id": config_id, "event": {"event_type": "extract.error"}}),
        )
        .await;
    let body: Value = serde_json::from_str(own["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "Saved/extract.error", "{own:#}");

    // Another plugin than the configuration's runs without the config written for that one
    // (cloudevents refuses a `prefix`).
    let (_, switched) = app
        .post(
            "/api/v1/plugins/preview",
            &json!({"config_id": config_id, "plugin": "cloudevents",
                    "event": {"event_type": "parse.success"}}),
        )
        .await;
    assert_eq!(switched["outcome"], "send", "{switched:#}");
    assert_eq!(switched["plugin"], "cloudevents");

    // Nothing reached the receiver, and nothing was stored.
    let (_, listed) = app.get("/api/v1/deliveries").await;
    assert_eq!(listed["items"], json!([]), "{listed:#}");
    assert_eq!(receiver.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reports_skips_errors_and_bad_fields() {
    let app = spawn_app().await;
    let skip = |config: Value| {
        json!({
            "plugin": "filter",
            "plugin_config": config,
            "webhook_url": "https://hooks.example.com/in",
            "event": {"event_type": "parse.success", "data": {"pages": 3}},
        })
    };
    let (status, skipped) = app
        .post(
            "/api/v1/plugins/preview",
            &skip(json!({"equals": {"/data/pages": 4}})),
        )
        .await;
    assert_eq!(status, 200, "{skipped}");
    assert_eq!(skipped["outcome"], "skip", "{skipped:#}");
    assert!(skipped["reason"].as_str().unwrap().contains("/data/pages"));

    let (status, refused) = app
        .post("/api/v1/plugins/preview", &skip(json!({"nonsense": 1})))
        .await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["outcome"], "error", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("refuses the config"),
        "{refused:#}"
    );

    // Without a plugin: the request as LlamaCloud would send it.
    let (status, plain) = app
        .post(
            "/api/v1/plugins/preview",
            &json!({"event": {"event_type": "parse.success", "data": {"id": "j"}}}),
        )
        .await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["outcome"], "send");
    assert_eq!(plain["plugin"], Value::Null);
    assert_eq!(plain["request"]["url"], "https://receiver.example/webhook");

    let bad = [
        (
            json!({"event": {"event_type": "parse.nope"}}),
            "event.event_type",
        ),
        (
            json!({"event": {"event_type": "parse.success", "data": [1]}}),
            "event.data",
        ),
        (
            json!({"event": {"event_type": "parse.success", "event_id": "seven"}}),
            "event.event_id",
        ),
        (
            json!({"plugin": "no-such-plugin", "event": {"event_type": "parse.success"}}),
            "plugin",
        ),
        (
            json!({"config_id": "missing", "event": {"event_type": "parse.success"}}),
            "config_id",
        ),
        (
            json!({"webhook_url": "ftp://x", "event": {"event_type": "parse.success"}}),
            "webhook_url",
        ),
        (
            json!({"event": {"event_type": "parse.success"}, "plugins": "x"}),
            "plugins",
        ),
        (
            json!({"config_id": "c", "webhook_url": "https://a.example/",
                   "event": {"event_type": "parse.success"}}),
            "webhook_url",
        ),
        (json!({}), "event"),
    ];
    for (body, field) in bad {
        let (status, answer) = app.post("/api/v1/plugins/preview", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(field),
            "{body}: {answer} should name {field}"
        );
    }
    let (status, answer) = app.post_raw("/api/v1/plugins/preview", "{not json").await;
    assert_eq!(status, 400, "{answer}");
    let huge = json!({"event": {"event_type": "parse.success",
                                "data": {"text": "x".repeat(2 << 20)}}});
    let (status, answer) = app.post("/api/v1/plugins/preview", &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().starts_with("body:"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_etags() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let page = client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("\"parse.success\""), "event types written in");
    assert!(!html.contains("{{"), "every placeholder filled");

    let script = client
        .get(app.url("/console/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    let again = client
        .get(app.url("/console/assets/app.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Every module the page imports is served.
    let app_js = script.text().await.unwrap();
    for line in app_js.lines().filter(|line| line.starts_with("import ")) {
        let module = line
            .split("'./")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        let served = client
            .get(app.url(&format!("/console/assets/{module}")))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{module}");
    }
    let missing = client
        .get(app.url("/console/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
    let detail: Value = missing.json().await.unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("nope.js"),
        "{detail}"
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    // The data stays behind the key.
    let anonymous = client
        .get(app.url("/api/v1/activity"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
