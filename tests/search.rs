//! Searching deliveries through the real API over a few thousand of them: each filter alone
//! and together, paged to the end with the keyset token, against what the test itself sent;
//! the oldest deliveries reached behind thousands of newer ones over short pages; bad
//! filters answered 422 naming the parameter.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const EVENT_TYPES: [&str; 3] = ["parse.success", "extract.error", "classify.success"];

/// One delivery the test sent, with the facts a filter looks at.
#[derive(Debug, Clone)]
struct Sent {
    delivery_id: String,
    event_id: String,
    event_type: &'static str,
    url: String,
    host: String,
    saved: bool,
    batch: usize,
}

/// Every page of `query` followed to the end: the ids in the order served, and how many
/// pages it took.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    for pages in 1..=1_000 {
        let path = match &token {
            Some(token) => format!("/api/v1/deliveries?{query}&limit=100&page_token={token}"),
            None => format!("/api/v1/deliveries?{query}&limit=100"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return (ids, pages),
        }
    }
    panic!("{query}: the pages never ended");
}

/// `query` finds exactly `expected`, each once, newest first; returns the pages it took.
async fn assert_finds<'a>(
    app: &TestApp,
    query: &str,
    expected: impl Iterator<Item = &'a Sent>,
) -> usize {
    let (found, pages) = all_pages(app, query).await;
    let expected: Vec<&String> = expected.map(|sent| &sent.delivery_id).collect();
    assert!(!expected.is_empty(), "{query}: the test expects nothing");
    let unique: BTreeSet<&String> = found.iter().collect();
    assert_eq!(
        unique.len(),
        found.len(),
        "{query}: a delivery served twice"
    );
    assert_eq!(
        unique,
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "{query}"
    );
    pages
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_find_exactly_the_matching_deliveries_over_every_page() {
    // A small scan per page, so the searches below run over many short pages.
    let app = spawn_app_with(|config| {
        config.limits.search_scan_rows = 700;
        config.retry.max_attempts = 1;
    })
    .await;
    let receivers = [
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    ];
    // The third receiver refuses everything: its deliveries fail on their one attempt.
    receivers[2].always(Answer::status(500));
    let (status, saved) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": receivers[1].url("/saved")}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let config_id = saved["id"].as_str().unwrap().to_owned();

    // 2,400 deliveries: six batches of 200 events, each event to one inline destination
    // and to the saved configuration.
    let mut sent: Vec<Sent> = Vec::new();
    let started = chrono::Utc::now();
    let mut after_first_batch = started;
    for batch in 0..6 {
        let events: Vec<Value> = (0..200)
            .map(|index| {
                let n = batch * 200 + index;
                json!({
                    "event_type": EVENT_TYPES[n % 3],
                    "data": {"n": n},
                    "webhook_configurations": [{"webhook_url": receivers[(n / 7) % 3].url(&format!("/e/{n}"))}],
                    "webhook_configuration_ids": [config_id],
                })
            })
            .collect();
        let (status, accepted) = app
            .post("/api/v1/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(status, 202, "{accepted}");
        for (index, event) in accepted["events"].as_array().unwrap().iter().enumerate() {
            let n = batch * 200 + index;
            for delivery in event["deliveries"].as_array().unwrap() {
                let url = delivery["webhook_url"].as_str().unwrap().to_owned();
                sent.push(Sent {
                    delivery_id: delivery["id"].as_str().unwrap().to_owned(),
                    event_id: event["event_id"].as_str().unwrap().to_owned(),
                    event_type: EVENT_TYPES[n % 3],
                    host: host_of(&url),
                    saved: url.ends_with("/saved"),
                    url,
                    batch,
                });
            }
        }
        if batch == 0 {
            after_first_batch = chrono::Utc::now();
            // The next batch's deliveries are created in a later millisecond.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(sent.len(), 2_400);
    let failing_host = host_of(&receivers[2].url("/"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (failed, _) = all_pages(&app, "status=failed").await;
        let (succeeded, _) = all_pages(&app, "status=succeeded").await;
        if failed.len() + succeeded.len() == sent.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} failed and {} succeeded of {}",
            failed.len(),
            succeeded.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_finds(
        &app,
        "event_type=extract.error",
        sent.iter().filter(|s| s.event_type == "extract.error"),
    )
    .await;
    // The filter is normalised as logs and metrics name hosts (unit-tested in domain for
    // names, punycode and default ports); here, typed in upper case.
    assert_finds(
        &app,
        &format!("host={}", failing_host.to_uppercase()),
        sent.iter().filter(|s| s.host == failing_host),
    )
    .await;
    assert_finds(
        &app,
        &format!("config_id={config_id}"),
        sent.iter().filter(|s| s.saved),
    )
    .await;
    assert_finds(
        &app,
        &format!("status=failed&event_type=parse.success&host={failing_host}"),
        sent.iter()
            .filter(|s| s.host == failing_host && s.event_type == "parse.success"),
    )
    .await;
    let prefix = receivers[0].url("/e/1");
    assert_finds(
        &app,
        &format!("url={}", encoded(&prefix)),
        sent.iter().filter(|s| s.url.starts_with(&prefix)),
    )
    .await;
    let one = &sent[1_234];
    assert_finds(
        &app,
        &format!("event_id={}&host={}", one.event_id, one.host),
        sent.iter()
            .filter(|s| s.event_id == one.event_id && s.host == one.host),
    )
    .await;
    let since = started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_finds(&app, &format!("since={}", encoded(&since)), sent.iter()).await;
    // Nothing was created before the test started: every page to the end is empty.
    let (before_start, _) = all_pages(&app, &format!("until={}", encoded(&since))).await;
    assert_eq!(before_start, Vec::<String>::new());

    // The first batch's 400 deliveries, behind 2,000 newer ones: each page reads at most
    // 700 rows, so the first two pages (rows 2,400 to 1,001) come back empty with a token to
    // go on, the third holds the first matches, and the pages together hold exactly the
    // first batch.
    let until = (after_first_batch + chrono::Duration::milliseconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut token = String::new();
    let mut empty_pages = 0;
    loop {
        let (status, page) = app
            .get(&format!(
                "/api/v1/deliveries?until={}&limit=100{token}",
                encoded(&until)
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        if !page["items"].as_array().unwrap().is_empty() {
            break;
        }
        empty_pages += 1;
        token = format!("&page_token={}", page["next_page_token"].as_str().unwrap());
    }
    assert_eq!(empty_pages, 2, "700-row pages over 2,000 newer rows");
    assert_finds(
        &app,
        &format!("until={}", encoded(&until)),
        sent.iter().filter(|s| s.batch == 0),
    )
    .await;
}

#[tokio::test]
async fn bad_filters_are_a_422_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, field) in [
        ("event_type=parse.nope", "event_type"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("host=a/b", "host"),
        ("status=lost", "status"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/deliveries?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{query}: {body}"
        );
    }
}
