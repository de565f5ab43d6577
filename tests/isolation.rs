//! Isolation between destinations: a black-holed receiver (accepts, never answers) holds
//! only its own per-destination slots; a healthy receiver's deliveries keep their latency
//! and are still handed over at ingest while the black hole's backlog waits.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A receiver that never answers, sent `events` deliveries in one batch; returns once its
/// `in_flight` slots hold requests.
async fn black_hole_with_backlog(app: &TestApp, events: usize, in_flight: usize) -> Receiver {
    let black_hole = Receiver::start().await;
    black_hole.always(Answer::status(200).delay(Duration::from_secs(3600)));
    let stuck: Vec<_> = (0..events)
        .map(|n| json!({"event_type": "parse.success", "data": {"n": n}, "webhook_configurations": [{"webhook_url": black_hole.url("/void")}]}))
        .collect();
    let (status, _) = app
        .post("/api/v1/events/batch", &json!({"events": stuck}))
        .await;
    assert_eq!(status, 202);
    black_hole
        .wait_for(in_flight, Duration::from_secs(10))
        .await;
    black_hole
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_destination_does_not_slow_a_healthy_one() {
    let app = spawn_app_with(|config| {
        config.delivery.max_in_flight = 16;
        config.delivery.max_in_flight_per_destination = 4;
        config.retry.request_timeout_ms = 30_000;
    })
    .await;
    // Far more black-holed deliveries than the whole in-flight budget.
    let black_hole = black_hole_with_backlog(&app, 100, 4).await;
    let healthy = Receiver::start().await;

    let mut latencies = Vec::new();
    for n in 0..20 {
        let sent = Instant::now();
        app.ingest(event_to(
            "parse.success",
            json!({"webhook_url": healthy.url(&format!("/ok/{n}"))}),
        ))
        .await;
        healthy.wait_for(n + 1, Duration::from_secs(10)).await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    assert!(
        worst < Duration::from_millis(500),
        "healthy destination slowed: {latencies:?}"
    );
    // The black hole holds exactly its per-destination quota, never the global budget.
    assert_eq!(
        black_hole.count(),
        4,
        "only max_in_flight_per_destination requests to the black hole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destinations_backlog_does_not_stop_hand_over_to_others() {
    let app = spawn_app_with(|config| {
        config.delivery.max_in_flight = 16;
        config.delivery.max_in_flight_per_destination = 2;
    })
    .await;
    // Two in flight, more held in memory and queued behind them: due work for the black
    // hole, which its own new deliveries must not overtake.
    let black_hole = black_hole_with_backlog(&app, 8, 2).await;
    let healthy = Receiver::start().await;
    // Let the dispatcher claim what it can of the backlog and record what it left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, queued) = app.get("/api/v1/deliveries?status=queued").await;
        if queued["items"].as_array().unwrap().len() <= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog was never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let handed_off = app.metric("hookgate_deliveries_handed_off_total").await;
    // One at a time, so the healthy destination (2 slots too) never queues its own.
    for n in 0..20 {
        app.ingest(event_to(
            "parse.success",
            json!({"webhook_url": healthy.url(&format!("/ok/{n}"))}),
        ))
        .await;
        healthy.wait_for(n + 1, Duration::from_secs(10)).await;
    }
    let healthy_handed_off = app.metric("hookgate_deliveries_handed_off_total").await - handed_off;
    eprintln!("{healthy_handed_off} of 20 healthy deliveries handed over");
    // A timer wake-up (a lease or retry coming due) blocks hand-over until the next claim
    // has looked, so a few may go through the queue; before, none was handed over.
    assert!(
        healthy_handed_off >= 15.0,
        "only {healthy_handed_off} of 20 healthy deliveries were handed over"
    );
    // The black hole's own new delivery still queues behind its backlog.
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": black_hole.url("/void")}),
        ))
        .await;
    assert_eq!(
        app.delivery(&delivery_id(&accepted, 0)).await["status"],
        "queued"
    );
}
