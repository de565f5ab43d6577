//! Bulk replay through the real API: `POST /api/v1/deliveries/redeliver` with a search queues
//! exactly the finished deliveries it matches, with fresh retry budgets, as a job whose
//! progress is read back; a dry run counts without queueing; a job waits for the queue to
//! drain below its ceiling; bad requests are refused naming the field.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Every delivery id a search finds, over all its pages.
async fn search(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = app
            .get(&format!("/api/v1/deliveries?{query}&limit=1000{token}"))
            .await;
        assert_eq!(status, 200, "{page}");
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned()),
        );
        match page["next_page_token"].as_str() {
            Some(next) => token = format!("&page_token={next}"),
            None => return ids,
        }
    }
}

/// Send `count` events in batches to `receiver`, returning their delivery ids.
async fn send(app: &TestApp, receiver: &Receiver, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..count.div_ceil(250) {
        let events: Vec<Value> = (0..250.min(count - chunk * 250))
            .map(|_| event_to("extract.error", json!({"webhook_url": receiver.url("/r")})))
            .collect();
        let (status, accepted) = app
            .post("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(status, 202, "{accepted}");
        for event in accepted["events"].as_array().unwrap() {
            ids.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

async fn wait_for_job(app: &TestApp, job_id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, job) = app
            .get(&format!("/api/v1/deliveries/redeliver/{job_id}"))
            .await;
        assert_eq!(status, 200, "{job}");
        if job["state"] != "running" {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_found(app: &TestApp, query: &str, count: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = search(app, query).await.len();
        if found == count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{query}: {found} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_queues_exactly_the_failed_deliveries_of_one_host() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let (recovering, still_down, healthy) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    recovering.always(Answer::status(500));
    still_down.always(Answer::status(500));
    let to_replay = send(&app, &recovering, 1_000).await;
    let left_failed = send(&app, &still_down, 300).await;
    let succeeded = send(&app, &healthy, 500).await;
    let recovering_host = recovering.host();
    wait_until_found(&app, "status=failed", 1_300).await;
    wait_until_found(&app, "status=succeeded", 500).await;

    // A dry run counts what would be queued and queues nothing.
    let (status, job) = app
        .post(
            "/api/v1/deliveries/redeliver",
            &json!({"status": "failed", "host": recovering_host, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = wait_for_job(&app, job["id"].as_str().unwrap()).await;
    assert_eq!(
        (&job["state"], &job["matched"], &job["queued"]),
        (&json!("done"), &json!(1_000), &json!(0)),
        "{job}"
    );
    assert_eq!(search(&app, "status=failed").await.len(), 1_300);

    recovering.always(Answer::status(200));
    let (status, started) = app
        .post(
            "/api/v1/deliveries/redeliver",
            &json!({"status": "failed", "host": recovering_host}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["state"], "running");
    assert_eq!(
        started["filter"],
        json!({"status": "failed", "host": recovering_host})
    );
    let job = wait_for_job(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(
        (&job["state"], &job["matched"], &job["queued"]),
        (&json!("done"), &json!(1_000), &json!(1_000)),
        "{job}"
    );
    assert!(iso_millis(&job["finished_at"]).is_some(), "{job}");
    wait_until_found(
        &app,
        &format!("status=succeeded&host={recovering_host}"),
        1_000,
    )
    .await;
    // Each replayed delivery got a fresh budget (one more attempt under max_attempts = 1);
    // the others were not touched.
    for id in to_replay.iter().step_by(97) {
        let delivery = app.delivery(id).await;
        assert_eq!(delivery["attempt_count"], 2, "{delivery:#}");
    }
    for id in left_failed.iter().chain(&succeeded).step_by(53) {
        let delivery = app.delivery(id).await;
        assert_eq!(delivery["attempt_count"], 1, "{delivery:#}");
    }
    assert_eq!(search(&app, "status=failed").await.len(), 300);
    let (_, listed) = app.get("/api/v1/deliveries/redeliver").await;
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{listed}");
    assert_eq!(jobs[0]["id"], started["id"], "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_the_queue_and_stops_at_its_maximum() {
    let app = spawn_app_with(|config| {
        config.retry.max_attempts = 1;
        config.limits.replay_queue_ceiling = 20;
        config.delivery.max_in_flight_per_destination = 4;
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(500));
    send(&app, &receiver, 700).await;
    wait_until_found(&app, "status=failed", 700).await;
    // Slow answers: the first page of 500 takes a while to drain below the ceiling.
    receiver.always(Answer::status(200).delay(Duration::from_millis(5)));
    let (status, started) = app
        .post(
            "/api/v1/deliveries/redeliver",
            &json!({"status": "failed", "max_deliveries": 600}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let job = wait_for_job(&app, started["id"].as_str().unwrap()).await;
    assert_eq!(
        (&job["matched"], &job["queued"]),
        (&json!(600), &json!(600)),
        "{job}"
    );
    assert!(
        job["waits"].as_u64().unwrap() > 0,
        "the second page waited for the first to drain: {job}"
    );
    wait_until_found(&app, "status=succeeded", 600).await;
    assert_eq!(search(&app, "status=failed").await.len(), 100);
}

#[tokio::test]
async fn bad_replays_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"status": "failed", "hsot": "a.example"}), "hsot"),
        (json!({"host": "a.example"}), "status:"),
        (json!({"status": "queued"}), "status:"),
        (
            json!({"status": "failed", "max_deliveries": 0}),
            "max_deliveries:",
        ),
        (json!({"status": "failed", "since": "yesterday"}), "since:"),
    ] {
        let (status, answer) = app.post("/api/v1/deliveries/redeliver", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(field),
            "{body}: {answer}"
        );
    }
    let (status, answer) = app.get("/api/v1/deliveries/redeliver/no-such-job").await;
    assert_eq!(status, 404, "{answer}");
}
