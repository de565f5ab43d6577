//! Watching live: `GET /api/v1/stream` sends this node's attempts as server-sent events,
//! filtered like the delivery search; `hookgate tail` prints them, and `hookgate deliveries
//! list|show|redeliver` finds and replays a delivery, all against the real gateway.

mod common;

use common::binary::Killed;
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The next `attempt` event on an open stream, as JSON.
async fn next_attempt(stream: &mut reqwest::Response, buffer: &mut String) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|line| line == "event: attempt") {
                let data = block
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .expect("an attempt event has data");
                return serde_json::from_str(data).unwrap();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("an attempt arrives on the stream")
            .unwrap()
            .expect("the stream stays open");
        // The test's events are ASCII, so a chunk boundary cannot split a character.
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_stream_sends_finished_attempts_that_match_its_filters() {
    let app = spawn_app().await;
    let watched = Receiver::start().await;
    let other = Receiver::start().await;
    let mut stream = app
        .http
        .get(app.url(&format!(
            "/api/v1/stream?host={}&outcome=succeeded",
            watched.host()
        )))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // Another host's attempt, and a failed one on the watched host, finish first and are
    // not sent; the watched host's success is.
    let skipped = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": other.url("/o")}),
        ))
        .await;
    app.wait_for_status(&delivery_id(&skipped, 0), "succeeded", WAIT)
        .await;
    watched.script([Answer::status(410)]);
    let refused = app
        .ingest(event_to(
            "parse.error",
            json!({"webhook_url": watched.url("/gone")}),
        ))
        .await;
    app.wait_for_status(&delivery_id(&refused, 0), "failed", WAIT)
        .await;
    let wanted = app
        .ingest(event_to(
            "extract.success",
            json!({"webhook_url": watched.url("/w")}),
        ))
        .await;
    let mut buffer = String::new();
    let attempt = next_attempt(&mut stream, &mut buffer).await;
    assert_eq!(attempt["delivery_id"], delivery_id(&wanted, 0), "{attempt}");
    assert_eq!(attempt["event_id"], wanted["event_id"]);
    assert_eq!(attempt["event_type"], "extract.success");
    assert_eq!(attempt["outcome"], "succeeded");
    assert_eq!(attempt["status"], "succeeded");
    assert_eq!(attempt["response_status"], 200);
    assert_eq!(attempt["attempt"], 1);
    assert!(iso_millis(&attempt["started_at"]).is_some(), "{attempt}");

    // Bad filters and a missing key are refused before the stream starts.
    for (query, field) in [
        ("outcome=lost", "outcome"),
        ("since=2026-01-01T00:00:00Z", "since"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/stream?{query}")).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{body}"
        );
    }
    let anonymous = app
        .http
        .get(app.url("/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

fn hookgate(app: &TestApp) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .env("HOOKGATE_URL", app.url(""))
        .env("HOOKGATE_API_KEY", API_KEY)
        .env("HOOKGATE_LOG", "warn");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookgate_tail_prints_a_failed_attempt_and_deliveries_finds_and_replays_it() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let broken = Receiver::start().await;
    broken.script([Answer::status(500)]);

    let mut tail = Killed(
        hookgate(&app)
            .args(["tail", "--outcome", "failed"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = tail.0.stderr.take().unwrap();
    // Read off the runtime's workers: the in-process gateway needs them meanwhile.
    let watching = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(watching.starts_with("watching attempts on"), "{watching}");
    let stdout = tail.0.stdout.take().unwrap();
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    let accepted = app
        .ingest(event_to(
            "parse.error",
            json!({"webhook_url": broken.url("/down")}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let line = tokio::task::spawn_blocking(move || printed.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("tail printed the attempt");
    for part in [
        "failed",
        " 500 ",
        "attempt 1",
        "parse.error",
        id.as_str(),
        "receiver answered 500",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    drop(tail);

    let output = hookgate(&app)
        .args([
            "deliveries",
            "list",
            "--status",
            "failed",
            "--event-type",
            "parse.error",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8(output.stdout).unwrap();
    assert!(
        listed.starts_with(&id) && listed.contains("failed"),
        "{listed}"
    );

    let output = hookgate(&app)
        .args(["deliveries", "show", &id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["attempts"][0]["response_status"], 500, "{shown}");

    // The receiver answers 200 now: the replayed delivery succeeds.
    let output = hookgate(&app)
        .args(["deliveries", "redeliver", &id])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{id} queued\n")
    );
    app.wait_for_status(&id, "succeeded", WAIT).await;

    // The replay command follows its job to the end; nothing failed is left to replay.
    let output = hookgate(&app)
        .args([
            "deliveries",
            "replay",
            "--status",
            "failed",
            "--event-type",
            "parse.error",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let progress = String::from_utf8(output.stdout).unwrap();
    assert!(
        progress.trim_end().ends_with("done matched 0 queued 0"),
        "{progress}"
    );

    let output = hookgate(&app)
        .args(["deliveries", "show", "no-such-delivery"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("404") && error.contains("not found"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_at_shutdown_without_holding_it() {
    let mut app = spawn_app().await;
    let mut stream = app
        .http
        .get(app.url("/api/v1/stream"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = std::time::Instant::now();
    app.stop().await;
    // The HTTP server's grace for open connections is 10 s; the stream ends well before.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
}
