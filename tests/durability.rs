//! Durability: the real `hookgate` binary killed with SIGKILL while deliveries are pending
//! loses nothing after a restart; SIGTERM finishes in-flight deliveries before exiting.

mod common;

use common::binary::{free_port, wait_ready};
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    base: String,
}

/// A failing test must not leave its gateway running (it would hold the test's output open).
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary on `data_dir` and the suite's store (`store`: `None` for SQLite in the
/// data folder).
async fn launch(data_dir: &Path, store: &Option<String>, port: u16) -> Gateway {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir);
    if let Some(store) = store {
        command.args(["--store", store]);
    }
    let child = command
        .env("HOOKGATE_API_KEY", API_KEY)
        .env("HOOKGATE_EGRESS_ALLOW", "127.0.0.0/8")
        .env("HOOKGATE_RETRY_MAX_ATTEMPTS", "50")
        // Failures to one receiver are the point here, not something to pause for.
        .env("HOOKGATE_BREAKER_AFTER_FAILURES", "0")
        .env("HOOKGATE_RETRY_BASE_DELAY_MS", "50")
        .env("HOOKGATE_RETRY_MAX_DELAY_MS", "200")
        .env("HOOKGATE_REQUEST_TIMEOUT_MS", "10000")
        // On PostgreSQL a restarted node takes its killed predecessor's deliveries when their
        // leases end (SQLite requeues them at open).
        .env("HOOKGATE_LEASE_MS", "3000")
        .env("HOOKGATE_PLUGIN_CACHE_DIR", plugin_cache_dir())
        .env("HOOKGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hookgate binary starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    Gateway { child, base }
}

async fn post_batch(base: &str, events: Vec<Value>) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/events/batch"))
        .bearer_auth(API_KEY)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

fn distinct_event_ids(receiver: &Receiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .filter_map(|request| request.header("x-webhook-event-id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_pending_deliveries_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let store = test_store().await;
    let port = free_port();
    let receiver = Receiver::start().await;
    // Slow answers keep deliveries in flight; some fail and wait in backoff.
    receiver.always(Answer::status(200).delay(Duration::from_secs(30)));
    receiver.script((0..40).map(|_| Answer::status(500)));
    let mut gateway = launch(data.path(), &store, port).await;
    let events: Vec<Value> = (0..300)
        .map(|n| {
            event_to(
                "parse.success",
                json!({"webhook_url": receiver.url(&format!("/k/{n}"))}),
            )
        })
        .collect();
    let accepted = post_batch(&gateway.base, events).await;
    let expected: BTreeSet<String> = accepted["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 300);
    receiver.wait_for(50, Duration::from_secs(20)).await;
    gateway.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    gateway.child.wait().unwrap();
    let before_restart = distinct_event_ids(&receiver);
    assert!(
        before_restart.len() < 300,
        "the kill must leave work pending"
    );

    receiver.always(Answer::status(200));
    let mut gateway = launch(data.path(), &store, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = distinct_event_ids(&receiver);
        if delivered == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart {} of 300 events delivered",
            delivered.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every event has reached the receiver; the deliveries whose first request the kill cut
    // off are sent again, and each ends succeeded.
    let client = reqwest::Client::new();
    loop {
        let response = client
            .get(format!(
                "{}/api/v1/deliveries?status=succeeded&limit=1000",
                gateway.base
            ))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let succeeded = body["items"].as_array().unwrap().len();
        if succeeded == 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every delivery ends succeeded: {succeeded} of 300"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_deliveries_before_exiting() {
    let data = tempfile::tempdir().unwrap();
    let store = test_store().await;
    let port = free_port();
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(200).delay(Duration::from_millis(800)));
    let gateway = launch(data.path(), &store, port).await;
    let events: Vec<Value> = (0..5)
        .map(|_| event_to("parse.success", json!({"webhook_url": receiver.url("/t")})))
        .collect();
    post_batch(&gateway.base, events).await;
    receiver.wait_for(5, Duration::from_secs(10)).await;
    let pid = gateway.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Wait off the runtime: the receiver must keep answering while the gateway drains.
    let (gateway, status) = tokio::task::spawn_blocking(move || {
        let mut gateway = gateway;
        let status = gateway.child.wait().unwrap();
        (gateway, status)
    })
    .await
    .unwrap();
    drop(gateway);
    assert!(status.success(), "graceful exit, got {status}");

    // Restarted, the gateway has nothing left to send: all five were recorded as done.
    receiver.always(Answer::status(200));
    let mut gateway = launch(data.path(), &store, port).await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/deliveries?status=succeeded",
            gateway.base
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 5, "{body:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 5, "nothing was sent twice");
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
}

/// Under continuous writes the WAL must keep starting over (the writer checkpoints between
/// its own groups, when nothing else can commit), so the file stays bounded. SQLite's own
/// file, so on SQLite whichever store the suite runs on.
#[tokio::test]
async fn the_wal_starts_over_under_continuous_writes() {
    let app = spawn_app_with(|config| config.store = None).await;
    let receiver = Receiver::start().await;
    let wal = app.data_dir.join("hookgate.sqlite3-wal");
    let padding = "x".repeat(2_000);
    let destination = json!({"webhook_url": receiver.url("/wal")});
    let started = Instant::now();
    let mut sent = 0;
    // About 14 MB of events over three seconds and more, never pausing long.
    while started.elapsed() < Duration::from_secs(3) || sent < 6_000 {
        let events: Vec<Value> = (0..100)
            .map(|index| {
                json!({"event_type": "parse.success",
                       "data": {"index": index, "padding": padding},
                       "webhook_configurations": [destination]})
            })
            .collect();
        let (status, body) = app
            .post("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(status, 202, "{body}");
        sent += 100;
    }
    receiver.wait_for(sent, Duration::from_secs(60)).await;
    let wal_size = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    let written = (sent * 2_000) as u64;
    assert!(
        wal_size < written / 2,
        "WAL is {wal_size} bytes after {written} bytes of payloads: it never started over"
    );
}

/// A lease much shorter than the attempt: the engine renews it while the receiver takes its
/// time, so the delivery is not claimed again and sent twice.
#[tokio::test]
async fn leases_are_renewed_while_a_slow_attempt_runs() {
    let app = spawn_app_with(|config| config.delivery.lease_ms = 500).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(200).delay(Duration::from_millis(2_000)));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/slow")}),
        ))
        .await;
    let delivery = app
        .wait_for_status(
            &delivery_id(&accepted, 0),
            "succeeded",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivery["attempt_count"], 1, "{delivery:#}");
    assert_eq!(receiver.count(), 1, "the slow attempt was sent again");
}
