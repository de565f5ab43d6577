//! What the real binary logs: a WARN line per failed attempt and per dead letter, a start-up
//! summary, no colour into a file, JSON lines on request, and never a secret.

mod common;

use common::binary::{Killed, free_port, wait_ready};
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Secrets a destination carries; none may reach the log.
const URL_PASSWORD: &str = "url-password-6c1f";
const QUERY_TOKEN: &str = "query-token-9a2e";
const SIGNING_SECRET: &str = "signing-secret-51d0";
const HEADER_TOKEN: &str = "header-token-77b3";

struct Logged {
    log: String,
    event_id: String,
    delivery_id: String,
    host: String,
}

/// Run the real binary with `format` (`None` for the default), send one event to a receiver
/// that always answers 500 (two attempts in all), to a closed port and to a receiver that
/// accepts it, wait for all three to finish, stop the gateway and return what it wrote to
/// stderr. The failing destinations carry every kind of secret.
async fn failing_delivery_logged(format: Option<&str>) -> Logged {
    let data = tempfile::tempdir().unwrap();
    let store = common::postgres::test_store().await;
    let port = free_port();
    let broken = Receiver::start().await;
    broken.always(Answer::status(500));
    let fine = Receiver::start().await;
    let log_path = data.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path());
    if let Some(store) = &store {
        command.args(["--store", store]);
    }
    command
        .env("HOOKGATE_API_KEY", API_KEY)
        .env("HOOKGATE_EGRESS_ALLOW", "127.0.0.0/8")
        .env("HOOKGATE_RETRY_MAX_ATTEMPTS", "2")
        .env("HOOKGATE_RETRY_BASE_DELAY_MS", "50")
        .env("HOOKGATE_PLUGIN_CACHE_DIR", plugin_cache_dir())
        .env_remove("HOOKGATE_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    match format {
        Some(format) => command.env("HOOKGATE_LOG_FORMAT", format),
        None => command.env_remove("HOOKGATE_LOG_FORMAT"),
    };
    let child = Killed(command.spawn().expect("hookgate starts"));
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    let broken_url = broken.url(&format!("/hook?token={QUERY_TOKEN}"));
    let with_password = broken_url.replacen("http://", &format!("http://ops:{URL_PASSWORD}@"), 1);
    let closed = format!(
        "http://ops:{URL_PASSWORD}@127.0.0.1:{}/closed?token={QUERY_TOKEN}",
        free_port()
    );
    let client = reqwest::Client::new();
    let accepted: Value = client
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "event_type": "parse.error",
            "data": {"job_id": "j-1"},
            "webhook_configurations": [
                {"webhook_url": with_password, "webhook_signing_secret": SIGNING_SECRET,
                 "webhook_headers": {"Authorization": format!("Bearer {HEADER_TOKEN}")}},
                {"webhook_url": fine.url("/ok")},
                {"webhook_url": closed, "webhook_signing_secret": SIGNING_SECRET,
                 "webhook_headers": {"X-Api-Key": HEADER_TOKEN}},
            ],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ok_id = delivery_id(&accepted, 1);
    let failing_id = delivery_id(&accepted, 0);
    let closed_id = delivery_id(&accepted, 2);
    for (id, status) in [
        (&failing_id, "failed"),
        (&ok_id, "succeeded"),
        (&closed_id, "failed"),
    ] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let view: Value = client
                .get(format!("{base}/api/v1/deliveries/{id}"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if view["status"] == status {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{view:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The dead letter's line is written once its attempt is recorded, which the API may show
    // a moment before: wait for the line before stopping the gateway.
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("dead letter")
    {
        assert!(std::time::Instant::now() < deadline, "no dead-letter line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child);
    let host = broken_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    Logged {
        log: std::fs::read_to_string(&log_path).unwrap(),
        event_id: accepted["event_id"].as_str().unwrap().to_owned(),
        delivery_id: failing_id,
        host,
    }
}

fn assert_no_secrets(log: &str) {
    assert!(
        log.contains("connection failed"),
        "the closed port's refusal was logged:\n{log}"
    );
    for secret in [
        URL_PASSWORD,
        QUERY_TOKEN,
        SIGNING_SECRET,
        HEADER_TOKEN,
        API_KEY,
    ] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}

/// The first line holding every one of `parts`.
fn line_with<'a>(log: &'a str, parts: &[&str]) -> &'a str {
    log.lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_and_dead_letters_are_warn_lines_without_secrets() {
    let logged = failing_delivery_logged(None).await;
    let log = &logged.log;
    assert!(!log.contains('\u{1b}'), "colour codes in a file:\n{log}");
    assert_no_secrets(log);

    let failing = format!("delivery_id={}", logged.delivery_id);
    let retry = line_with(log, &["attempt failed; will retry", &failing]);
    for field in [
        " WARN ".to_owned(),
        format!("event_id={}", logged.event_id),
        format!("delivery_id={}", logged.delivery_id),
        format!("host={}", logged.host),
        "attempt=1".to_owned(),
        "status=500".to_owned(),
        "error=\"receiver answered 500\"".to_owned(),
        "next_attempt_at=20".to_owned(),
    ] {
        assert!(retry.contains(&field), "{field} missing: {retry}");
    }
    let dead = line_with(log, &["dead letter", &failing]);
    for field in [
        " WARN ".to_owned(),
        format!("delivery_id={}", logged.delivery_id),
        "attempt=2".to_owned(),
        "status=500".to_owned(),
    ] {
        assert!(dead.contains(&field), "{field} missing: {dead}");
    }
    assert!(
        !log.contains("delivered"),
        "a success is logged only at debug:\n{log}"
    );

    let summary = line_with(log, &["hookgate is serving"]);
    for field in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        "store=\"".to_owned(),
        "data_dir=\"".to_owned(),
        "api_key=\"HOOKGATE_API_KEY\"".to_owned(),
        "plugins_dir=\"".to_owned(),
        "egress_allow=\"127.0.0.0/8\"".to_owned(),
        "retry=\"2 attempts, 50 ms doubling".to_owned(),
    ] {
        assert!(summary.contains(&field), "{field} missing: {summary}");
    }
    assert!(
        summary.contains("inngest") && summary.contains("slack"),
        "the bundled plugins are named: {summary}"
    );
    if let Some(store) = common::postgres::test_store().await {
        // The PostgreSQL URL without its options; this suite's server has no password.
        let server = store.split('?').next().unwrap().to_owned();
        let database = server.rsplit('/').next().unwrap();
        assert!(summary.contains(database), "{summary}");
    } else {
        assert!(summary.contains("store=\"sqlite:"), "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let logged = failing_delivery_logged(Some("json")).await;
    assert_no_secrets(&logged.log);
    let lines: Vec<Value> = logged
        .log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let retry = lines
        .iter()
        .find(|line| {
            line["message"] == "attempt failed; will retry"
                && line["delivery_id"] == logged.delivery_id.as_str()
        })
        .unwrap_or_else(|| panic!("no retry line in {lines:#?}"));
    assert_eq!(retry["level"], "WARN", "{retry}");
    assert_eq!(retry["delivery_id"], logged.delivery_id.as_str(), "{retry}");
    assert_eq!(retry["event_id"], logged.event_id.as_str(), "{retry}");
    assert_eq!(retry["host"], logged.host.as_str(), "{retry}");
    assert_eq!(retry["attempt"], 1, "{retry}");
    assert_eq!(retry["status"], 500, "{retry}");
    assert!(iso_millis(&retry["next_attempt_at"]).is_some(), "{retry}");
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "hookgate is serving" && line["level"] == "INFO"),
        "{lines:#?}"
    );
}

#[test]
fn an_unknown_log_format_stops_the_start_naming_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "check", "/nonexistent.wasm"])
        .env("HOOKGATE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HOOKGATE_LOG_FORMAT: \"xml\" is not one of text, json"),
        "{stderr}"
    );
}
