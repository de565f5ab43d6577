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

/// One event the list test sent, with the facts its filters look at.
struct SentEvent {
    id: String,
    event_type: &'static str,
    to_failing: bool,
    in_p3: bool,
}

/// Every page of the event list for `query`: the event ids in the order served.
async fn all_event_pages(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = event_pages_in_order(app, query).await;
    ids.sort();
    ids
}

/// Every page of the event list for `query`, as served.
async fn event_pages_in_order(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..1_000 {
        let (status, page) = app
            .get(&format!("/api/v1/events?{query}&limit=7{token}"))
            .await;
        assert_eq!(status, 200, "{query}: {page}");
        for item in page["items"].as_array().unwrap() {
            assert!(iso_millis(&item["accepted_at"]).is_some(), "{item}");
            ids.push(item["event_id"].as_str().unwrap().to_owned());
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = format!("&page_token={next}"),
            None => return ids,
        }
    }
    panic!("{query}: the pages never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_list_filters_by_the_events_and_by_their_deliveries() {
    // Ten events a page at most: the searches below go over several short pages.
    let app = spawn_app_with(|config| {
        config.limits.search_scan_rows = 10;
        config.retry.max_attempts = 1;
    })
    .await;
    let (fine, failing) = (Receiver::start().await, Receiver::start().await);
    failing.always(Answer::status(500));
    // 40 events: even ones to the failing receiver too, every third in project "p3".
    let mut sent: Vec<SentEvent> = Vec::new();
    for n in 0..40 {
        let event_type = EVENT_TYPES[n % 3];
        let mut configs = vec![json!({"webhook_url": fine.url("/e")})];
        if n % 2 == 0 {
            configs.push(json!({"webhook_url": failing.url("/e")}));
        }
        let mut event = json!({"event_type": event_type, "data": {"n": n},
                               "webhook_configurations": configs});
        if n % 3 == 0 {
            event["project_id"] = json!("p3");
        }
        let accepted = app.ingest(event).await;
        sent.push(SentEvent {
            id: accepted["event_id"].as_str().unwrap().to_owned(),
            event_type,
            to_failing: n % 2 == 0,
            in_p3: n % 3 == 0,
        });
    }
    let deadline = std::time::Instant::now() + WAIT;
    while all_pages(&app, "status=failed").await.0.len() < 20 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Newest first; on PostgreSQL events of the same millisecond come in no set order, so
    // both sides are compared sorted, and the order is checked by acceptance time below.
    let newest_first = |keep: fn(&SentEvent) -> bool| -> Vec<String> {
        let mut ids: Vec<String> = sent
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.id.clone())
            .collect();
        ids.sort();
        ids
    };
    let (_, page) = app.get("/api/v1/events?limit=40").await;
    let accepted: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| iso_millis(&item["accepted_at"]).unwrap())
        .collect();
    assert!(
        accepted.windows(2).all(|pair| pair[0] >= pair[1]),
        "{accepted:?}"
    );
    assert_eq!(all_event_pages(&app, "").await, newest_first(|_| true));
    assert_eq!(
        all_event_pages(&app, "event_type=extract.error").await,
        newest_first(|s| s.event_type == "extract.error")
    );
    assert_eq!(
        all_event_pages(&app, "project_id=p3").await,
        newest_first(|s| s.in_p3)
    );
    let failing_host = host_of(&failing.url("/"));
    assert_eq!(
        all_event_pages(&app, &format!("host={failing_host}")).await,
        newest_first(|s| s.to_failing)
    );
    assert_eq!(
        all_event_pages(&app, "status=failed&project_id=p3").await,
        newest_first(|s| s.to_failing && s.in_p3)
    );
    let one = &sent[17];
    assert_eq!(
        all_event_pages(&app, &format!("event_id={}", one.id)).await,
        vec![one.id.clone()]
    );
    for (query, field) in [
        ("status=lost", "status"),
        ("colour=red", "colour"),
        ("page_token=nope", "page_token"),
        ("since=soon", "since"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}
