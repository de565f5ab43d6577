//! Retention: finished work (succeeded, failed and skipped deliveries, their attempts, and
//! events left without deliveries) is deleted once past its age, through the real gateway;
//! queued, retrying, in-flight and redelivered work is kept; and under repeated
//! fill-and-drain the SQLite file stops growing. The store's purge verbs are also tested
//! directly, on whichever store the suite runs on.

mod common;

use axum::extract::State;
use common::receiver::Answer;
use common::*;
use hookgate::domain::{
    Attempt, DeliveryId, DeliveryStatus, Destination, DestinationSource, EventId, OutputFormat,
    RetryOverride, now_millis,
};
use hookgate::store::{
    AttemptOutcome, ClaimBudget, EventCursor, NewDelivery, NewEvent, PgSettings, PgStore,
    PurgeCounts, SqliteStore, Store,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

/// Held open far past the test, with a per-destination timeout longer still, so the attempt
/// stays in flight instead of timing out into a retry.
fn black_hole(receiver: &Receiver, path: &str) -> Value {
    receiver.always(Answer::status(200).delay(Duration::from_secs(600)));
    json!({"webhook_url": receiver.url(path), "webhook_retry": {"timeout_ms": 120_000}})
}

/// Poll `path` until it answers 404; panics with the last answer after `within`.
async fn wait_until_gone(app: &TestApp, path: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = app.get(path).await;
        if status == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} was never deleted: {status} {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn found(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path).await;
    assert_eq!(status, 200, "{path} should have been kept: {body}");
    body
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.rsplit_once(' ')?;
            (metric == name).then(|| value.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_work_is_deleted_after_its_age_and_pending_work_is_kept() {
    let app = spawn_app_with(|config| {
        config.retention.max_age_ms = 1_000;
        config.retention.interval_ms = 100;
        // Several batches per sweep, even for this handful of rows.
        config.retention.batch = 2;
    })
    .await;
    let ok = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.always(Answer::status(500));
    let hole = Receiver::start().await;
    let hole_config = black_hole(&hole, "/hole");
    let flaky = Receiver::start().await;
    flaky.always(Answer::status(500));
    let again = Receiver::start().await;
    again.script([Answer::status(200)]);
    let again_config = black_hole(&again, "/again");

    // The work to keep comes first, so it is older than the finished work whose deletion
    // the test waits for: once that is gone, a sweep has passed the kept work's age too.
    let in_flight = app
        .ingest(event_to("parse.success", hole_config.clone()))
        .await;
    let retrying = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": flaky.url("/flaky"),
                   "webhook_retry": {"max_attempts": 5, "base_delay_ms": 600_000,
                                     "max_delay_ms": 600_000}}),
        ))
        .await;
    // One event, one delivery done and one in flight: the event stays, the done one goes.
    let mixed = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {"id": "job-1"},
            "webhook_configurations": [{"webhook_url": ok.url("/mixed")}, hole_config],
        }))
        .await;
    let redelivered = app.ingest(event_to("parse.success", again_config)).await;
    let redelivered_id = delivery_id(&redelivered, 0);
    app.wait_for_status(&redelivered_id, "succeeded", WAIT)
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{redelivered_id}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    hole.wait_for(2, WAIT).await;
    again.wait_for(2, WAIT).await;
    let retrying_id = delivery_id(&retrying, 0);
    flaky.wait_for(1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    loop {
        // Its failed attempt recorded, its retry ten minutes away.
        let waiting = app.delivery(&retrying_id).await;
        if waiting["status"] == "queued" && waiting["attempt_count"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{waiting:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for_status(&delivery_id(&mixed, 0), "succeeded", WAIT)
        .await;

    // Finished work: delivered, dead-lettered, and an event routed nowhere.
    let succeeded = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": ok.url("/ok")}),
        ))
        .await;
    let failed = app
        .ingest(event_to(
            "extract.error",
            json!({"webhook_url": broken.url("/broken"), "webhook_retry": {"max_attempts": 1}}),
        ))
        .await;
    let nowhere = app
        .ingest(json!({"event_type": "sheets.success", "data": {}}))
        .await;
    assert_eq!(nowhere["deliveries"], json!([]));
    let succeeded_id = delivery_id(&succeeded, 0);
    let failed_id = delivery_id(&failed, 0);
    let done = app.wait_for_status(&succeeded_id, "succeeded", WAIT).await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1);
    app.wait_for_status(&failed_id, "failed", WAIT).await;

    let event_path =
        |accepted: &Value| format!("/api/v1/events/{}", accepted["event_id"].as_str().unwrap());
    for path in [
        format!("/api/v1/deliveries/{succeeded_id}"),
        event_path(&succeeded),
        format!("/api/v1/deliveries/{failed_id}"),
        event_path(&failed),
        event_path(&nowhere),
        format!("/api/v1/deliveries/{}", delivery_id(&mixed, 0)),
    ] {
        wait_until_gone(&app, &path, WAIT).await;
    }

    // Kept: in flight, waiting for a retry (with its attempt), the event still being
    // delivered, and the redelivered one (with the attempt from before).
    let kept = found(
        &app,
        &format!("/api/v1/deliveries/{}", delivery_id(&in_flight, 0)),
    )
    .await;
    assert!(
        kept["status"] == "queued" || kept["status"] == "in_flight",
        "{kept:#}"
    );
    found(&app, &event_path(&in_flight)).await;
    let kept = found(&app, &format!("/api/v1/deliveries/{retrying_id}")).await;
    assert_eq!(kept["status"], "queued", "{kept:#}");
    assert_eq!(kept["attempts"].as_array().unwrap().len(), 1, "{kept:#}");
    found(&app, &event_path(&retrying)).await;
    let event = found(&app, &event_path(&mixed)).await;
    let left: Vec<&Value> = event["deliveries"].as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "{event:#}");
    assert_eq!(left[0]["id"], delivery_id(&mixed, 1), "{event:#}");
    let kept = found(&app, &format!("/api/v1/deliveries/{redelivered_id}")).await;
    assert!(
        kept["status"] == "queued" || kept["status"] == "in_flight",
        "{kept:#}"
    );
    assert_eq!(kept["attempts"].as_array().unwrap().len(), 1, "{kept:#}");
    found(&app, &event_path(&redelivered)).await;

    // Counted: at least the three deliveries and the three events above (another sweep may
    // have come between, never fewer).
    let deleted =
        |table: &str| format!("hookgate_retention_deleted_rows_total{{table=\"{table}\"}}");
    assert!(metric(&app, &deleted("deliveries")).await >= 3.0);
    assert!(metric(&app, &deleted("attempts")).await >= 3.0);
    assert!(metric(&app, &deleted("events")).await >= 3.0);
}

fn new_event(urls: &[String]) -> NewEvent {
    let id = EventId::generate();
    NewEvent {
        payload: json!({"event_id": id, "event_type": "parse.success", "data": {}}).to_string(),
        id,
        event_type: "parse.success".into(),
        project_id: None,
        timestamp: 1_753_985_275.0,
        deliveries: urls
            .iter()
            .map(|url| NewDelivery {
                id: DeliveryId::generate(),
                destination: Destination {
                    url: url.clone(),
                    headers: Vec::new(),
                    output_format: OutputFormat::Json,
                    signing_secret: None,
                    previous_signing_secret: None,
                    transform: None,
                    transform_config: None,
                    retry: RetryOverride::default(),
                    source: DestinationSource::Inline,
                },
                lease: None,
            })
            .collect(),
    }
}

/// The suite's store (SQLite in a temp folder, or a fresh PostgreSQL schema), opened alone.
async fn open_store(dir: &Path) -> Store {
    match test_store().await {
        None => Store::Sqlite(SqliteStore::open(&dir.join("hookgate.sqlite3")).unwrap()),
        Some(url) => Store::Postgres(
            PgStore::open(&PgSettings::parse(&url).unwrap())
                .await
                .unwrap(),
        ),
    }
}

/// The purge verbs directly, one row per batch: exactly the finished deliveries go, with
/// their attempts and the events they leave empty, and events that never had a delivery;
/// in-flight, retrying, queued and redelivered work stays, and so does anything that
/// finished after the cut-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_verbs_delete_exactly_the_finished_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let url = |path: &str| format!("http://198.51.100.7{path}");
    let events = vec![
        new_event(&[url("/succeeded")]),
        new_event(&[url("/failed"), url("/in-flight")]),
        new_event(&[url("/retrying")]),
        new_event(&[url("/redelivered")]),
        new_event(&[url("/skipped")]),
        new_event(&[]),
    ];
    let ids: Vec<EventId> = events.iter().map(|event| event.id.clone()).collect();
    store.enqueue(events).await.unwrap();
    let budget = ClaimBudget {
        per_destination: 10,
        scan_rows: 100,
        ..ClaimBudget::default()
    };
    let claimed = store
        .claim_due(100, 60_000, budget)
        .await
        .unwrap()
        .deliveries;
    assert_eq!(claimed.len(), 6);
    let by_path = |path: &str| {
        claimed
            .iter()
            .find(|delivery| delivery.destination.url.ends_with(path))
            .unwrap()
    };
    let record = |number| Attempt {
        number,
        started_at: now_millis(),
        duration_ms: 1,
        response_status: Some(200),
        error: None,
        response_body: None,
        exchange: None,
    };
    let before_finishing = now_millis() - 1;
    for (path, outcome) in [
        ("/succeeded", AttemptOutcome::Succeeded),
        ("/failed", AttemptOutcome::Failed),
        (
            "/retrying",
            AttemptOutcome::Retry {
                due_at: now_millis() + 600_000,
            },
        ),
        ("/redelivered", AttemptOutcome::Succeeded),
        ("/skipped", AttemptOutcome::Skipped),
    ] {
        assert!(
            store
                .finish_attempt(by_path(path), record(1), outcome)
                .await
                .unwrap()
        );
    }
    store.redeliver(&by_path("/redelivered").id).await.unwrap();
    // Queued, never claimed.
    let queued = new_event(&[url("/queued")]);
    let queued_id = queued.id.clone();
    store.enqueue(vec![queued]).await.unwrap();

    // Nothing had finished before this.
    let none = store.purge_finished(before_finishing, 1).await.unwrap();
    assert!(none.is_empty(), "{none:?}");

    let cutoff = now_millis() + 1;
    let mut total = PurgeCounts::default();
    let mut batches = 0;
    loop {
        let batch = store.purge_finished(cutoff, 1).await.unwrap();
        assert!(batch.deliveries <= 1, "{batch:?}");
        total += batch;
        batches += 1;
        if batch.deliveries < 1 {
            break;
        }
    }
    assert_eq!(
        total,
        PurgeCounts {
            deliveries: 3,
            attempts: 3,
            events: 2
        },
        "succeeded, failed and skipped; the failed one's event keeps its in-flight delivery"
    );
    assert_eq!(batches, 4);

    let mut cursor = EventCursor::default();
    let mut without_deliveries = 0;
    loop {
        let scan = store
            .purge_events_without_deliveries(cursor.clone(), cutoff, 2)
            .await
            .unwrap();
        without_deliveries += scan.deleted;
        cursor = scan.next;
        if scan.scanned < 2 {
            break;
        }
    }
    assert_eq!(without_deliveries, 1);

    for (index, kept) in [false, true, true, true, false, false]
        .into_iter()
        .enumerate()
    {
        let event = store.event(&ids[index]).await.unwrap();
        assert_eq!(event.is_some(), kept, "event {index}: {event:?}");
    }
    let mixed = store.event(&ids[1]).await.unwrap().unwrap();
    assert_eq!(mixed.deliveries.len(), 1);
    assert_eq!(mixed.deliveries[0].id, by_path("/in-flight").id);
    for path in ["/succeeded", "/failed", "/skipped"] {
        assert!(
            store.delivery(&by_path(path).id).await.unwrap().is_none(),
            "{path}"
        );
    }
    for (path, status) in [
        ("/in-flight", DeliveryStatus::InFlight),
        ("/retrying", DeliveryStatus::Queued),
        ("/redelivered", DeliveryStatus::Queued),
    ] {
        let delivery = store.delivery(&by_path(path).id).await.unwrap().unwrap();
        assert_eq!(delivery.status, status, "{path}");
        let attempts = delivery.attempts.unwrap().len();
        assert_eq!(attempts, usize::from(path != "/in-flight"), "{path}");
    }
    assert!(store.event(&queued_id).await.unwrap().is_some());

    // The scan resumes past what it saw: an event routed nowhere later is found from there.
    let later = new_event(&[]);
    let later_id = later.id.clone();
    store.enqueue(vec![later]).await.unwrap();
    let scan = store
        .purge_events_without_deliveries(cursor, now_millis() + 1, 100)
        .await
        .unwrap();
    assert_eq!((scan.scanned, scan.deleted), (1, 1), "{scan:?}");
    assert!(store.event(&later_id).await.unwrap().is_none());
    store.close();
}

/// The database file plus its WAL, in bytes.
fn store_size(data_dir: &Path) -> (u64, u64) {
    let size = |name: &str| std::fs::metadata(data_dir.join(name)).map_or(0, |meta| meta.len());
    (size("hookgate.sqlite3"), size("hookgate.sqlite3-wal"))
}

/// Pages in use and on the freelist, read beside the running gateway.
fn pages(data_dir: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("hookgate.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let pragma = |name: &str| -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .unwrap()
    };
    (pragma("page_count"), pragma("freelist_count"))
}

/// A receiver that holds every request until opened, then answers 200, so a cycle's events
/// all wait in the store before any is delivered: each cycle peaks at its whole size.
struct Gate {
    addr: std::net::SocketAddr,
    open: Arc<watch::Sender<bool>>,
    answered: Arc<AtomicUsize>,
}

impl Gate {
    async fn start() -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(watch::Sender::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let state = (open.clone(), answered.clone());
        let app =
            axum::Router::new()
                .fallback(
                    |State((open, answered)): State<(
                        Arc<watch::Sender<bool>>,
                        Arc<AtomicUsize>,
                    )>| async move {
                        // The sender lives as long as the gate, so waiting cannot fail.
                        let _ = open.subscribe().wait_for(|open| *open).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        axum::http::StatusCode::OK
                    },
                )
                .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Gate {
            addr,
            open,
            answered,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    async fn wait_answered(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.answered.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "expected {count} answers, got {}",
                self.answered.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Five cycles of a few MB each, each held back until it is all in the store, then
/// delivered and deleted by retention: after the first cycles the file reuses the pages
/// retention freed, so it stops growing. SQLite's own file, so on SQLite whichever store
/// the suite runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_stops_growing_under_fill_and_drain() {
    const CYCLES: usize = 5;
    const EVENTS_PER_CYCLE: usize = 3_000;
    const PER_REQUEST: usize = 500;
    let app = spawn_app_with(|config| {
        config.store = None;
        config.retention.max_age_ms = 100;
        config.retention.interval_ms = 50;
    })
    .await;
    let gate = Gate::start().await;
    // Held requests must not time out into retries while the cycle fills.
    let destination = json!({"webhook_url": format!("http://{}/fill", gate.addr),
                             "webhook_retry": {"timeout_ms": 60_000}});
    let padding = "x".repeat(1_024);
    let started = Instant::now();
    let mut sizes = Vec::new();
    for cycle in 1..=CYCLES {
        gate.set_open(false);
        let mut last_event = String::new();
        for chunk in 0..EVENTS_PER_CYCLE / PER_REQUEST {
            let events: Vec<Value> = (0..PER_REQUEST)
                .map(|index| {
                    json!({"event_type": "parse.success",
                           "data": {"cycle": cycle, "chunk": chunk, "index": index,
                                    "padding": padding},
                           "webhook_configurations": [destination]})
                })
                .collect();
            let (status, body) = app
                .post("/api/v1/events/batch", &json!({ "events": events }))
                .await;
            assert_eq!(status, 202, "{body}");
            last_event = body["events"][PER_REQUEST - 1]["event_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        let (filled, _) = store_size(&app.data_dir);
        gate.set_open(true);
        gate.wait_answered(cycle * EVENTS_PER_CYCLE, Duration::from_secs(60))
            .await;
        // Drained when the newest event is gone and no delivery is listed any more.
        wait_until_gone(&app, &format!("/api/v1/events/{last_event}"), WAIT).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, page) = app.get("/api/v1/deliveries?limit=1").await;
            if page["items"] == json!([]) {
                break;
            }
            assert!(Instant::now() < deadline, "deliveries left: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (db, wal) = store_size(&app.data_dir);
        let (page_count, free) = pages(&app.data_dir);
        println!(
            "cycle {cycle}: file {db} bytes (filled: {filled}) + WAL {wal} bytes = {} \
             ({page_count} pages, {free} free) at {:.1?}",
            db + wal,
            started.elapsed()
        );
        sizes.push(db + wal);
    }
    let deleted = metric(
        &app,
        "hookgate_retention_deleted_rows_total{table=\"deliveries\"}",
    )
    .await;
    assert_eq!(deleted, (CYCLES * EVENTS_PER_CYCLE) as f64);
    assert!(
        sizes[0] > 4 << 20,
        "a cycle should take several MB: {sizes:?}"
    );
    let bound = sizes[1] * 3 / 2;
    for (index, size) in sizes.iter().enumerate().skip(2) {
        assert!(
            *size <= bound,
            "after cycle {} the store is {size} bytes, over 1.5 × its {} bytes after cycle 2: \
             {sizes:?}",
            index + 1,
            sizes[1]
        );
    }
}
