//! Retries (SPEC 5): count, spacing and give-up, 410, Retry-After, redirects, and
//! redelivery of dead-lettered deliveries.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn gaps(received: &[common::receiver::Received]) -> Vec<Duration> {
    received
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .collect()
}

#[tokio::test]
async fn retries_back_off_exponentially_then_dead_letter() {
    let app = spawn_app_with(|config| {
        config.retry.max_attempts = 4;
        config.retry.base_delay_ms = 100;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(500).body("boom"));
    let accepted = app
        .ingest(event_to(
            "parse.error",
            json!({"webhook_url": receiver.url("/r")}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let delivery = app.wait_for_status(&id, "failed", WAIT).await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "exactly max_attempts requests");
    let gaps = gaps(&received);
    for (index, gap) in gaps.iter().enumerate() {
        let expected = Duration::from_millis(100 << index);
        assert!(
            *gap >= expected && *gap < expected + Duration::from_millis(400),
            "gap {index} was {gap:?}, expected about {expected:?}"
        );
    }
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[3]["number"], 4);
    assert_eq!(attempts[3]["response_status"], 500);
    assert_eq!(attempts[3]["response_body"], "boom");
    assert!(attempts[3]["error"].as_str().unwrap().contains("500"));
    // Every retry carries the same event id, so receivers can de-duplicate.
    let ids: Vec<_> = received
        .iter()
        .map(|request| request.header("x-webhook-event-id"))
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]));
}

#[tokio::test]
async fn default_policy_spaces_retries_one_then_two_seconds() {
    let app =
        spawn_app_with(|config| config.retry = hookgate::config::RetryConfig::default()).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(503));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/d")}),
        ))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    let received = receiver.received();
    assert_eq!(received.len(), 3, "three attempts by default");
    let gaps = gaps(&received);
    assert!(
        gaps[0] >= Duration::from_millis(1_000) && gaps[0] < Duration::from_millis(1_500),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(2_000) && gaps[1] < Duration::from_millis(2_500),
        "{gaps:?}"
    );
}

#[tokio::test]
async fn gone_stops_at_once() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 5).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(410));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/g")}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_cap() {
    let app = spawn_app_with(|config| {
        config.retry.base_delay_ms = 10;
        config.retry.max_delay_ms = 5_000;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(429).header("retry-after", "1"),
        Answer::status(200),
    ]);
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/ra")}),
        ))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let gap = gaps(&receiver.received())[0];
    assert!(
        gap >= Duration::from_millis(1_000) && gap < Duration::from_millis(1_600),
        "waited {gap:?}"
    );

    // A Retry-After beyond the cap waits only the cap.
    let capped = spawn_app_with(|config| {
        config.retry.base_delay_ms = 10;
        config.retry.max_delay_ms = 300;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(503).header("retry-after", "3600"),
        Answer::status(204),
    ]);
    let accepted = capped
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/cap")}),
        ))
        .await;
    capped
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let gap = gaps(&receiver.received())[0];
    assert!(
        gap >= Duration::from_millis(300) && gap < Duration::from_millis(900),
        "waited {gap:?}"
    );
}

#[tokio::test]
async fn redirects_are_failures_not_followed() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 2).await;
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    receiver.always(Answer::status(302).header("location", &elsewhere.url("/moved")));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/old")}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    assert_eq!(delivery["attempts"][0]["response_status"], 302);
    assert_eq!(elsewhere.count(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn per_destination_policy_and_timeouts() {
    let app = spawn_app().await;
    let slow = Receiver::start().await;
    slow.always(Answer::status(200).delay(Duration::from_secs(3)));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": slow.url("/slow"), "webhook_retry": {"max_attempts": 2, "timeout_ms": 200, "base_delay_ms": 20}}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("timed out"),
        "{delivery:#}"
    );
    assert!(attempts[0]["duration_ms"].as_u64().unwrap() < 1_500);
}

#[tokio::test]
async fn a_failed_delivery_can_be_redelivered_with_a_fresh_budget() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 2).await;
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500), Answer::status(500)]);
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/re")}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    app.wait_for_status(&id, "failed", WAIT).await;
    let (status, _) = app
        .post(&format!("/api/v1/deliveries/{id}/redeliver"), &json!({}))
        .await;
    assert_eq!(status, 202);
    let delivery = app.wait_for_status(&id, "succeeded", WAIT).await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2]["number"], 3);
    assert_eq!(attempts[2]["response_status"], 200);
    let (status, _) = app
        .post("/api/v1/deliveries/nope/redeliver", &json!({}))
        .await;
    assert_eq!(status, 404);
}
