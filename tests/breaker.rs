//! The destination circuit breaker against a receiver that fails and then recovers: after a
//! run of failures the destination is paused, its deliveries wait without spending attempts,
//! a failed probe doubles the pause, a good one resumes it, and every delivery arrives; the
//! pause and the resume are announced to the notification URL. An operator's pause holds,
//! across a restart, until resumed.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn destination_row(app: &TestApp, destination: &str) -> Value {
    let (status, listing) = app.get("/api/v1/destinations").await;
    assert_eq!(status, 200, "{listing}");
    listing["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["destination"] == destination)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_is_paused_probed_and_resumed_without_burning_retries() {
    let notified = Receiver::start().await;
    let notify_url = notified.url("/ops");
    let app = spawn_app_with(move |config| {
        config.delivery.breaker_after_failures = 3;
        config.delivery.breaker_first_pause_ms = 400;
        config.delivery.breaker_max_pause_ms = 2_000;
        config.delivery.max_in_flight_per_destination = 1;
        config.delivery.notify_url = Some(notify_url);
        config.retry.max_attempts = 10;
        config.retry.base_delay_ms = 20;
        config.retry.jitter = false;
    })
    .await;
    let receiver = Receiver::start().await;
    let destination = receiver.host();
    // Three failures open the breaker; the first probe fails too; then it recovers.
    receiver.script((0..4).map(|_| Answer::status(500)));
    let events: Vec<Value> = (0..5)
        .map(|n| {
            event_to(
                "parse.success",
                json!({"webhook_url": receiver.url(&format!("/d{n}"))}),
            )
        })
        .collect();
    let (status, accepted) = app
        .post("/api/v1/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let ids: Vec<String> = accepted["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["deliveries"][0]["id"].as_str().unwrap().to_owned())
        .collect();

    // The pause shows in the destination listing while it lasts.
    let deadline = std::time::Instant::now() + WAIT;
    let paused = loop {
        let row = destination_row(&app, &destination).await;
        if row["state"] == "paused" {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "never paused: {row}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(paused["paused_by"], "breaker", "{paused}");
    assert!(iso_millis(&paused["paused_until"]).is_some(), "{paused}");

    let mut attempts = 0;
    for id in &ids {
        let delivery = app.wait_for_status(id, "succeeded", WAIT).await;
        attempts += delivery["attempt_count"].as_u64().unwrap();
    }
    // Four failures and five successes: no attempt was spent while the destination was
    // paused.
    assert_eq!(receiver.count(), 9);
    assert_eq!(attempts, 9);
    let row = destination_row(&app, &destination).await;
    assert_eq!(row["state"], "healthy", "{row}");

    // Paused twice (the first pause, then the doubled one after the failed probe) and
    // resumed once, each announced.
    let announced: Vec<Value> = notified
        .wait_for(3, WAIT)
        .await
        .iter()
        .map(|request| request.json())
        .collect();
    let kinds: Vec<&str> = announced
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "hookgate.destination.paused",
            "hookgate.destination.paused",
            "hookgate.destination.resumed"
        ],
        "{announced:#?}"
    );
    let first = &announced[0]["data"];
    assert_eq!(first["destination"], destination);
    assert_eq!(first["failures_in_a_row"], 3);
    assert_eq!(first["pause_ms"], 400);
    assert_eq!(announced[1]["data"]["pause_ms"], 800);
    assert_eq!(announced[2]["data"]["by_operator"], false);
    let text = app.get("/metrics").await.1;
    assert!(
        text.as_str()
            .unwrap()
            .contains("hookgate_destination_pauses_total 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_holds_deliveries_until_resumed() {
    let mut before_restart = spawn_app().await;
    let receiver = Receiver::start().await;
    let destination = receiver.host();
    let (status, paused) = before_restart
        .post(
            &format!("/api/v1/destinations/{destination}/pause"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["changed"], true);
    let accepted = before_restart
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/held")}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let deadline = std::time::Instant::now() + WAIT;
    let held = loop {
        let delivery = before_restart.delivery(&id).await;
        if delivery["last_error"]
            .as_str()
            .is_some_and(|error| error.starts_with("destination paused"))
        {
            break delivery;
        }
        assert!(std::time::Instant::now() < deadline, "{delivery:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(held["status"], "queued", "{held:#}");
    assert_eq!(held["attempt_count"], 0, "no attempt spent: {held:#}");
    let row = destination_row(&before_restart, &destination).await;
    assert_eq!(
        (&row["state"], &row["paused_by"], &row["paused_until"]),
        (&json!("paused"), &json!("operator"), &Value::Null),
        "{row}"
    );

    // Kept across a restart: the pause is in the store. The first app, stopped, is kept
    // alive: it owns the temporary data folder.
    before_restart.stop().await;
    let mut config = test_config(&before_restart.data_dir);
    config.store = before_restart.store.clone();
    let app = start(config).await;
    let row = destination_row(&app, &destination).await;
    assert_eq!(row["paused_by"], "operator", "{row}");
    // A new event after the restart is held too.
    let after = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/after")}),
        ))
        .await;
    let after_id = delivery_id(&after, 0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let delivery = app.delivery(&after_id).await;
        if delivery["last_error"]
            .as_str()
            .is_some_and(|error| error.starts_with("destination paused"))
        {
            assert_eq!(delivery["attempt_count"], 0, "{delivery:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{delivery:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(receiver.count(), 0, "held before and after the restart");

    let (status, resumed) = app
        .post(
            &format!("/api/v1/destinations/{destination}/resume"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &resumed["changed"]),
        (200, &json!(true)),
        "{resumed}"
    );
    // Sent at once, not after the minute a held delivery waits before it looks again.
    for held in [&id, &after_id] {
        let delivered = app
            .wait_for_status(held, "succeeded", Duration::from_secs(5))
            .await;
        assert_eq!(delivered["attempt_count"], 1);
    }
    for junk in ["a%2Fb", "%00x", &"a".repeat(300)] {
        let (status, body) = app
            .post(&format!("/api/v1/destinations/{junk}/pause"), &json!({}))
            .await;
        assert_eq!(status, 422, "{junk}: {body}");
        assert!(
            body["detail"].as_str().unwrap().starts_with("destination:"),
            "{body}"
        );
    }
}
