//! Operating hookgate: what the real binary logs (a WARN line per failed attempt and per dead
//! letter, a start-up summary, no colour into a file, JSON lines on request, never a secret),
//! and `/metrics` read by the official Prometheus Python client's parsers in both formats.

mod common;

use common::binary::{free_port, wait_ready};
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
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
/// that always answers 500 (two attempts in all) and one to a receiver that accepts it, wait
/// for both to finish, stop the gateway and return what it wrote to stderr.
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
    let mut child = command.spawn().expect("hookgate starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    let broken_url = broken.url(&format!("/hook?token={QUERY_TOKEN}"));
    let with_password = broken_url.replacen("http://", &format!("http://ops:{URL_PASSWORD}@"), 1);
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
    for (id, status) in [(&failing_id, "failed"), (&ok_id, "succeeded")] {
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
    let _ = child.kill();
    let _ = child.wait();
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

fn line_with<'a>(log: &'a str, message: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(message))
        .unwrap_or_else(|| panic!("no line with {message:?} in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_and_dead_letters_are_warn_lines_without_secrets() {
    let logged = failing_delivery_logged(None).await;
    let log = &logged.log;
    assert!(!log.contains('\u{1b}'), "colour codes in a file:\n{log}");
    assert_no_secrets(log);

    let retry = line_with(log, "attempt failed; will retry");
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
    let dead = line_with(log, "dead letter");
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

    let summary = line_with(log, "hookgate is serving");
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
        .find(|line| line["message"] == "attempt failed; will retry")
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
        .arg("--version")
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

/// The families the official parser reads from `text`: name → (type, samples as
/// `[name, labels, value]`).
fn parse_with_prometheus_client(python: &Path, format: &str, text: &str) -> Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = classic if sys.argv[1] == "classic" else openmetrics
families = {}
for family in parse(open(sys.argv[2]).read()):
    if family.name in families:
        raise SystemExit("family %s appears twice" % family.name)
    families[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(families))
"#;
    let output = clean_command(python)
        .args(["-c", script, format])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the {format} parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn sample_value(families: &Value, family: &str, sample: &str, labels: Value) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families:#}"))
        .iter()
        .find(|row| row[0] == sample && row[1] == labels)
        .unwrap_or_else(|| panic!("no {sample} {labels} in {:#}", families[family]))[2]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn metrics_parse_with_the_official_client_in_both_formats() {
    let python =
        tokio::task::spawn_blocking(|| common::python::python_with(&["prometheus-client==0.21.1"]))
            .await
            .unwrap();
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let fine = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.always(Answer::status(503));
    let accepted = app
        .ingest(json!({
            "event_type": "extract.success",
            "data": {},
            "webhook_configurations": [
                {"webhook_url": fine.url("/a"), "webhook_transform": "inngest"},
                {"webhook_url": broken.url("/b")},
            ],
        }))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    app.wait_for_status(&delivery_id(&accepted, 1), "failed", WAIT)
        .await;

    for (format, accept, content_type) in [
        ("classic", None, "text/plain; version=0.0.4"),
        (
            "openmetrics",
            Some("application/openmetrics-text; version=1.0.0,text/plain;q=0.5"),
            "application/openmetrics-text; version=1.0.0",
        ),
    ] {
        let mut request = app.http.get(app.url("/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        let served = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(served.starts_with(content_type), "{format}: {served}");
        let text = response.text().await.unwrap();
        let families = parse_with_prometheus_client(&python, format, &text);
        for (name, family) in families.as_object().unwrap() {
            assert!(
                !matches!(family["type"].as_str(), Some("untyped" | "unknown")),
                "{format}: {name} was not recognised as what it is: {family}"
            );
        }
        assert_eq!(families["hookgate_events_ingested"]["type"], "counter");
        assert_eq!(
            sample_value(
                &families,
                "hookgate_events_ingested",
                "hookgate_events_ingested_total",
                json!({})
            ),
            1.0,
            "{format}"
        );
        assert_eq!(
            sample_value(
                &families,
                "hookgate_delivery_attempts",
                "hookgate_delivery_attempts_total",
                json!({"event_type": "extract.success", "outcome": "succeeded", "plugin": "inngest"})
            ),
            1.0,
            "{format}"
        );
        assert_eq!(
            sample_value(
                &families,
                "hookgate_delivery_attempts",
                "hookgate_delivery_attempts_total",
                json!({"event_type": "extract.success", "outcome": "failed", "plugin": "none"})
            ),
            1.0,
            "{format}"
        );
        let broken_host = broken
            .url("/")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        assert_eq!(
            sample_value(
                &families,
                "hookgate_destination_attempts",
                "hookgate_destination_attempts_total",
                json!({"host": broken_host, "outcome": "failed"})
            ),
            1.0,
            "{format}"
        );
        assert_eq!(
            families["hookgate_delivery_attempt_duration_seconds"]["type"],
            "histogram"
        );
        assert_eq!(
            sample_value(
                &families,
                "hookgate_delivery_attempt_duration_seconds",
                "hookgate_delivery_attempt_duration_seconds_count",
                json!({"outcome": "failed"})
            ),
            1.0,
            "{format}"
        );
        for state in ["queued", "in_flight"] {
            assert_eq!(
                sample_value(
                    &families,
                    "hookgate_queue_deliveries",
                    "hookgate_queue_deliveries",
                    json!({"state": state})
                ),
                0.0,
                "{format}"
            );
        }
    }
}
