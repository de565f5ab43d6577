//! `/metrics` read by the official Prometheus Python client's parsers, in the classic text
//! format served by default and in OpenMetrics when asked: every family typed as what it is,
//! the labelled counts right.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

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
