//! What a hostile plugin, a hostile URL and a full queue can still do (issue 9), through the
//! real gateway and real receivers: plugins of `plugins/testing/hostile` try each trick with
//! headers and strings, a spinning plugin is paused beside healthy traffic, credentials in
//! URLs are never shown, addresses that embed an internal IPv4 are refused, and a full queue
//! answers 429.

mod common;

use common::receiver::Answer;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// A gateway serving the `hostile` test plugin (and `spin`) from its plugins folder.
async fn gateway(adjust: impl FnOnce(&mut hookgate::config::Config)) -> (TestApp, PathBuf) {
    let mut dir = PathBuf::new();
    let app = spawn_app_with(|config| {
        dir = config.data_dir.join("plugins");
        install_plugin(&dir, "hostile", "hostile");
        install_plugin(&dir, "spin", "spin");
        config.plugins_dir = Some(dir.clone());
        adjust(config);
    })
    .await;
    (app, dir)
}

fn hostile(url: String, mode: &str) -> Value {
    json!({
        "webhook_url": url,
        "webhook_transform": "hostile",
        "webhook_transform_config": {"mode": mode},
        "webhook_signing_secret": "not-a-whsec-secret",
        "webhook_retry": {"max_attempts": 1},
    })
}

fn attempts(delivery: &Value) -> &Vec<Value> {
    delivery["attempts"].as_array().expect("attempts")
}

#[tokio::test]
async fn plugin_headers_are_normalised_before_signing() {
    let (app, _) = gateway(|_| {}).await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "parse.success",
            hostile(receiver.url("/forged"), "forge_headers"),
        ))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    let delivered = app
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let request = receiver.wait_for(1, WAIT).await.remove(0);
    let all = |name: &str| -> Vec<String> {
        request
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all("x-webhook-event-id"), [event_id], "{delivered:#}");
    assert_eq!(all("x-webhook-event-type"), ["parse.success"]);
    // A plugin may set these, once.
    assert_eq!(all("content-type"), ["text/forged"]);
    assert_eq!(all("user-agent"), ["forged-agent"]);
    assert_eq!(all("x-plugin"), ["kept"]);
    // Framing is the client's: the body arrived whole, with its own length.
    assert_eq!(all("content-length"), [request.body.len().to_string()]);
    assert!(all("transfer-encoding").is_empty());
    assert_ne!(all("host"), ["internal.invalid"]);
    for dropped in [
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "expect",
        "proxy-authorization",
        "webhook-id",
        "webhook-signature",
    ] {
        assert!(all(dropped).is_empty(), "{dropped} reached the receiver");
    }
    // The one signature is the gateway's, over the bytes that arrived.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"not-a-whsec-secret").unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(all("lc-signature"), [expected]);

    // A long Content-Length would have hung the request until its timeout and failed it.
    let accepted = app
        .ingest(event_to(
            "parse.success",
            hostile(receiver.url("/long"), "long_content_length"),
        ))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let long = receiver.wait_for(2, WAIT).await.remove(1);
    // The default `string` format: the payload as a JSON string.
    let payload: Value = serde_json::from_str(long.json().as_str().unwrap()).unwrap();
    assert_eq!(payload["event_id"], event_id, "the whole body arrived");
}

#[tokio::test]
async fn too_many_headers_and_long_strings_fail_with_a_named_reason() {
    let (app, _) = gateway(|_| {}).await;
    let receiver = Receiver::start().await;
    let modes = ["many_headers", "big_error", "big_skip", "giant_error"];
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": modes
                .iter()
                .map(|mode| hostile(receiver.url(&format!("/{mode}")), mode))
                .collect::<Vec<_>>(),
        }))
        .await;
    let ended = |index: usize, status: &'static str| {
        let id = delivery_id(&accepted, index);
        let app = &app;
        async move { app.wait_for_status(&id, status, WAIT).await }
    };
    let many = ended(0, "failed").await;
    assert_eq!(
        attempts(&many)[0]["error"],
        "request from plugin hostile not sent: 10004 headers are over the limit of 64"
    );
    let big_error = ended(1, "failed").await;
    let error = attempts(&big_error)[0]["error"].as_str().unwrap();
    assert!(error.len() < 5_000, "{} bytes stored", error.len());
    assert!(
        error.starts_with("plugin hostile: returned an error: eee")
            && error.ends_with("[truncated: 1048576 bytes in all]"),
        "{}",
        error.chars().rev().take(80).collect::<String>()
    );
    let big_skip = ended(2, "skipped").await;
    let reason = big_skip["last_error"].as_str().unwrap();
    assert!(reason.len() < 5_000, "{} bytes stored", reason.len());
    assert!(reason.ends_with("[truncated: 1048576 bytes in all]"));
    let giant = ended(3, "failed").await;
    assert_eq!(
        attempts(&giant)[0]["error"],
        "plugin hostile: result is over the output limit of 4194304 bytes"
    );
    assert_eq!(receiver.count(), 0);

    // A receiver's long answer is kept as a prefix that says it is one.
    receiver.always(Answer::status(200).body(&"r".repeat(100_000)));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/long-answer")}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let body = attempts(&delivery)[0]["response_body"].as_str().unwrap();
    assert!(
        body.starts_with("rrrr") && body.contains("[truncated"),
        "{body}"
    );
    assert!(body.len() < 1_200, "{} bytes kept", body.len());
}

#[tokio::test]
async fn a_spinning_plugin_is_paused_without_spending_attempts_and_a_new_version_resumes() {
    let (app, dir) = gateway(|config| {
        config.plugins.timeout_ms = 20;
        config.plugins.pause_after_overruns = 3;
    })
    .await;
    let receiver = Receiver::start().await;
    let spinning = |path: &str| {
        json!({
            "webhook_url": receiver.url(path),
            "webhook_transform": "spin",
            "webhook_retry": {"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 5},
        })
    };
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": (0..12).map(|n| spinning(&format!("/{n}"))).collect::<Vec<_>>(),
        }))
        .await;
    // The breaker opens after three overruns in a row; the listing shows the pause.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, plugins) = app.get("/api/v1/plugins").await;
        let spin = plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == "spin")
            .cloned()
            .unwrap();
        if spin["paused_for_ms"].is_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "spin never paused: {spin}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While paused, the deliveries wait queued; attempts are spent only by overruns that
    // started the pause and by probes, not by every delivery.
    let mut spent = 0;
    for index in 0..12 {
        let delivery = app.delivery(&delivery_id(&accepted, index)).await;
        spent += attempts(&delivery).len();
    }
    assert!(spent < 12, "{spent} attempts spent by 12 paused deliveries");
    // A look-up says why they wait.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, queued) = app.get("/api/v1/deliveries?status=queued").await;
        let waiting = queued["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|delivery| {
                delivery["last_error"]
                    .as_str()
                    .is_some_and(|error| error.starts_with("plugin spin is paused"))
            })
            .count();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no queued delivery says it waits: {queued:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deferrals = app.metric("hookgate_plugin_deferrals_total").await;
    assert!(deferrals > 0.0);

    // The operator replaces the plugin: the new version starts with a closed breaker, and
    // every waiting delivery goes out through it.
    install_plugin(&dir, "inngest", "spin");
    for index in 0..12 {
        let id = delivery_id(&accepted, index);
        let delivery = app.wait_for_status(&id, "succeeded", WAIT * 2).await;
        assert!(attempts(&delivery).len() <= 3, "{delivery:#}");
    }
    assert_eq!(receiver.count(), 12);
}

#[tokio::test]
async fn credentials_in_a_webhook_url_are_never_shown() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let url = format!("http://hook-user:s3cret-pass@{}/in", receiver.addr);
    let accepted = app
        .ingest(event_to("parse.success", json!({"webhook_url": url})))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    let delivery_id = delivery_id(&accepted, 0);
    app.wait_for_status(&delivery_id, "succeeded", WAIT).await;
    // The receiver gets the credentials the standard way: Basic auth, not in the path.
    let request = receiver.wait_for(1, WAIT).await.remove(0);
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("hook-user:s3cret-pass");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {basic}"))
    );
    let (_, config) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": url, "webhook_events": ["parse.success"]}),
        )
        .await;
    let config_id = config["id"].as_str().expect("config saved").to_owned();
    // A client that saves back what it was shown keeps the credentials it cannot see.
    let (status, shown) = app
        .get(&format!("/api/v1/beta/webhook-configs/{config_id}"))
        .await;
    assert_eq!(status, 200, "{shown}");
    let (status, saved_back) = app
        .put(
            &format!("/api/v1/beta/webhook-configs/{config_id}"),
            &json!({"webhook_url": shown["webhook_url"], "webhook_events": ["parse.success"]}),
        )
        .await;
    assert_eq!(status, 200, "{saved_back}");
    let accepted_by_id = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configuration_ids": [config_id],
        }))
        .await;
    app.wait_for_status(&common::delivery_id(&accepted_by_id, 0), "succeeded", WAIT)
        .await;
    let again = receiver.wait_for(2, WAIT).await.remove(1);
    assert_eq!(
        again.header("authorization"),
        Some(format!("Basic {basic}"))
    );
    let mut shown = vec![accepted, config];
    for path in [
        format!("/api/v1/events/{event_id}"),
        format!("/api/v1/deliveries/{delivery_id}"),
        "/api/v1/deliveries".to_owned(),
        format!("/api/v1/beta/webhook-configs/{config_id}"),
        "/api/v1/beta/webhook-configs".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.push(body);
    }
    for view in shown {
        let text = view.to_string();
        assert!(!text.contains("s3cret-pass"), "password shown: {text}");
        assert!(text.contains("***@"), "no redacted URL in {text}");
    }
}

#[tokio::test]
async fn urls_that_embed_an_internal_ipv4_are_refused_at_ingest() {
    // The test gateway allows 127.0.0.0/8 only; metadata addresses stay refused.
    let app = spawn_app().await;
    for host in [
        "[::169.254.169.254]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]",
        "[::10.0.0.1]",
        "[fec0::1]",
    ] {
        let (status, body) = app
            .post(
                "/api/v1/events",
                &event_to(
                    "parse.success",
                    json!({"webhook_url": format!("http://{host}/hook")}),
                ),
            )
            .await;
        assert_eq!(status, 422, "{host}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("webhook_configurations[0].webhook_url"),
            "{host}: {detail}"
        );
    }
}

#[tokio::test]
async fn past_the_queue_cap_ingest_answers_429_until_the_queue_drains() {
    let app = spawn_app_with(|config| config.limits.max_queued = 4).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(200).delay(Duration::from_millis(1_500)));
    let event = event_to(
        "parse.success",
        json!({"webhook_url": receiver.url("/slow")}),
    );
    for _ in 0..4 {
        app.ingest(event.clone()).await;
    }
    let response = app
        .http
        .post(app.url("/api/v1/events"))
        .bearer_auth(API_KEY)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().starts_with(
            "the delivery queue is full (4 deliveries queued or in flight, the cap is 4)"
        ),
        "{body}"
    );
    // Once the slow receiver has answered, the next count lets events in again.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app.post("/api/v1/events", &event).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "the queue never reopened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.wait_for(5, WAIT).await;
}
