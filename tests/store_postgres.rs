//! The PostgreSQL store against a real server: migrations, the queue's guarantees (leases,
//! concurrent claims by two stores, the per-destination budget, duplicates, redelivery),
//! saved configurations, and a gateway serving from it end to end.
//!
//! Each test works in a schema of its own with a random name, chosen through the URL's
//! `search_path` option, and drops it at the end, in the database `test` of the suite's
//! server (`HOOKGATE_TEST_PG`, default `postgres://root@127.0.0.1:5432`).

mod common;

use hookgate::domain::{
    Attempt, ConfigId, DeliveryId, DeliveryStatus, Destination, DestinationSource, EventId,
    LeaseToken, OutputFormat, RetryOverride, now_millis,
};
use hookgate::store::{
    AttemptOutcome, ClaimBatch, ClaimBudget, ClaimedDelivery, DueLeft, Lease, NewDelivery,
    NewEvent, PgSettings, PgStore, SavedConfig, Store,
};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn server_url() -> String {
    format!("{}/test", common::postgres::server_url())
}

/// A schema of the test's own, dropped (with everything in it) when this goes away.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Schema {
        Schema {
            name: format!("hg_test_{}", Uuid::new_v4().simple()),
        }
    }

    /// The store URL putting everything in this schema.
    fn url(&self) -> String {
        let base = server_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-c%20search_path%3D{}", self.name)
    }

    fn settings(&self) -> PgSettings {
        PgSettings::parse(&self.url()).expect("test URL parses")
    }

    async fn open(&self) -> Store {
        Store::Postgres(PgStore::open(&self.settings()).await.expect("store opens"))
    }

    /// A plain connection with this schema first on its search path.
    async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(connection);
        client
    }
}

/// Tests run on a multi-threaded runtime: this blocks one worker while the DROP waits for
/// the test's connections to end, which their tasks do on the other.
impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs outside async (and on panics too): a thread with a runtime of its own.
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&statement).await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test schema {}: {error}", self.name);
        }
    }
}

fn destination(url: &str) -> Destination {
    Destination {
        url: url.to_owned(),
        headers: vec![("x-test".into(), "1".into())],
        output_format: OutputFormat::Json,
        signing_secret: None,
        previous_signing_secret: None,
        transform: None,
        transform_config: None,
        retry: RetryOverride::default(),
        source: DestinationSource::Inline,
    }
}

/// An event with one delivery per URL.
fn event(urls: &[&str]) -> NewEvent {
    let id = EventId::generate();
    NewEvent {
        payload: json!({"event_id": id, "event_type": "parse.success", "data": {"n": 1}})
            .to_string(),
        id,
        event_type: "parse.success".into(),
        project_id: Some("project-1".into()),
        timestamp: 1_753_985_275.115_444_4,
        deliveries: urls
            .iter()
            .map(|url| NewDelivery {
                id: DeliveryId::generate(),
                destination: destination(url),
                lease: None,
            })
            .collect(),
    }
}

fn budget(per_destination: usize) -> ClaimBudget {
    ClaimBudget {
        in_flight: HashMap::new(),
        per_destination,
        scan_rows: 10_000,
        ..ClaimBudget::default()
    }
}

fn attempt(number: u32, status: Option<u16>) -> Attempt {
    Attempt {
        number,
        started_at: now_millis(),
        duration_ms: 12,
        response_status: status,
        error: status
            .filter(|code| *code >= 400)
            .map(|code| format!("HTTP {code}")),
        response_body: Some("ok".into()),
        exchange: None,
    }
}

/// Record a first, successful attempt; whether the lease still held.
async fn succeed(store: &Store, delivery: &ClaimedDelivery) -> bool {
    store
        .finish_attempt(delivery, attempt(1, Some(200)), AttemptOutcome::Succeeded)
        .await
        .expect("finish")
}

async fn claim(store: &Store, limit: usize, lease_ms: i64) -> ClaimBatch {
    store
        .claim_due(limit, lease_ms, budget(1_000))
        .await
        .expect("claim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_applied_once_when_two_stores_open_an_empty_schema_together() {
    let schema = Schema::new();
    let settings = schema.settings();
    let (first, second) = tokio::join!(PgStore::open(&settings), PgStore::open(&settings));
    let (first, second) = (first.expect("first opens"), second.expect("second opens"));
    let client = schema.sql().await;
    let rows = client
        .query(
            "SELECT version, name FROM hookgate_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let applied: Vec<(i32, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let known: Vec<(i32, String)> = hookgate::store::postgres::MIGRATIONS
        .iter()
        .map(|migration| (migration.version, migration.name.to_owned()))
        .collect();
    assert_eq!(applied, known);
    // Both work on the one schema.
    let store = Store::Postgres(first);
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    assert_eq!(Store::Postgres(second).queue_depth().await.unwrap(), 1);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_hookgate_is_refused_naming_both_versions() {
    let schema = Schema::new();
    schema.open().await.close();
    let known = hookgate::store::postgres::MIGRATIONS.len() as i32;
    schema
        .sql()
        .await
        .execute(
            "INSERT INTO hookgate_schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&(known + 41)],
        )
        .await
        .unwrap();
    let error = PgStore::open(&schema.settings())
        .await
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(
        error.contains(&format!("version {}", known + 41))
            && error.contains(&format!("up to {known}"))
            && error.contains("upgrade hookgate"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_command_applies_the_migrations_and_is_idempotent() {
    let schema = Schema::new();
    let run = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["migrate", "--store", &schema.url()])
            .env_remove("HOOKGATE_STORE")
            .env("HOOKGATE_LOG", "warn")
            .output()
            .expect("hookgate runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}{stderr}");
        stdout
    };
    let first = run();
    for migration in hookgate::store::postgres::MIGRATIONS {
        let line = format!("applied {:04} {}", migration.version, migration.name);
        assert!(first.contains(&line), "{first}");
    }
    let second = run();
    assert!(!second.contains("applied"), "{second}");
    let newest = hookgate::store::postgres::MIGRATIONS.len();
    assert!(
        second.contains(&format!("up to date at version {newest}")),
        "{second}"
    );
    // A store opens on the migrated schema without applying anything.
    schema.open().await.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_goes_from_enqueue_through_claim_to_finish() {
    let schema = Schema::new();
    let store = schema.open().await;
    let new = event(&["http://a.test/hook", "http://b.test/hook"]);
    let outcome = store.enqueue(vec![new.clone()]).await.unwrap().remove(0);
    assert!(!outcome.duplicate);
    assert_eq!(outcome.event_id, new.id);
    let ids: Vec<DeliveryId> = outcome.deliveries.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        ids,
        vec![new.deliveries[0].id.clone(), new.deliveries[1].id.clone()]
    );
    assert_eq!(store.queue_depth().await.unwrap(), 2);

    let batch = claim(&store, 10, 60_000).await;
    assert_eq!(batch.deliveries.len(), 2);
    let first = &batch.deliveries[0];
    assert_eq!(first.event_id, new.id);
    assert_eq!(first.event_type, "parse.success");
    assert_eq!(&*first.payload, new.payload);
    assert_eq!(first.timestamp, new.timestamp);
    assert_eq!(first.destination, new.deliveries[0].destination);
    assert_eq!((first.attempts_made, first.budget_start), (0, 0));
    // Claimed deliveries are in flight until their lease ends.
    assert!(batch.next_due_at.unwrap() > now_millis() + 50_000);
    assert!(claim(&store, 10, 60_000).await.deliveries.is_empty());

    let succeeded = attempt(1, Some(200));
    assert!(
        store
            .finish_attempt(first, succeeded.clone(), AttemptOutcome::Succeeded)
            .await
            .unwrap()
    );
    let retry_at = now_millis() + 3_600_000;
    let second = &batch.deliveries[1];
    assert!(
        store
            .finish_attempt(
                second,
                attempt(1, Some(503)),
                AttemptOutcome::Retry { due_at: retry_at }
            )
            .await
            .unwrap()
    );
    let view = store.delivery(&first.id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Succeeded);
    assert_eq!(view.attempt_count, 1);
    assert_eq!(view.attempts.as_deref(), Some(&[succeeded][..]));
    assert_eq!(view.webhook_url, "http://a.test/hook");
    let view = store.delivery(&second.id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Queued);
    assert_eq!(view.next_attempt_at, Some(retry_at));
    assert_eq!(view.last_error.as_deref(), Some("HTTP 503"));

    let event_view = store.event(&new.id).await.unwrap().unwrap();
    assert_eq!(event_view.project_id.as_deref(), Some("project-1"));
    assert_eq!(event_view.payload["data"]["n"], 1);
    let listed: Vec<DeliveryId> = event_view.deliveries.iter().map(|d| d.id.clone()).collect();
    assert_eq!(listed, ids);
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    // Not found, and ids that are not UUIDs, are simply absent.
    assert!(store.event(&EventId::generate()).await.unwrap().is_none());
    assert!(
        store
            .delivery(&DeliveryId::from("not-a-uuid"))
            .await
            .unwrap()
            .is_none()
    );
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_answers_the_original_deliveries_and_queues_nothing() {
    let schema = Schema::new();
    let store = schema.open().await;
    let original = event(&["http://a.test/", "http://b.test/"]);
    let first = store
        .enqueue(vec![original.clone()])
        .await
        .unwrap()
        .remove(0);
    // Retried with fresh delivery ids, as the API would make them.
    let retried = NewEvent {
        deliveries: original
            .deliveries
            .iter()
            .map(|delivery| NewDelivery {
                id: DeliveryId::generate(),
                ..delivery.clone()
            })
            .collect(),
        ..original.clone()
    };
    let again = store.enqueue(vec![retried]).await.unwrap().remove(0);
    assert!(again.duplicate);
    assert_eq!(again.deliveries, first.deliveries);
    assert_eq!(store.queue_depth().await.unwrap(), 2);

    // Concurrent submissions of one new id (sharing group commits or not): one is new.
    let fresh = event(&["http://c.test/"]);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, fresh) = (store.clone(), fresh.clone());
            tokio::spawn(async move { store.enqueue(vec![fresh]).await })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap().remove(0);
        new += usize::from(!outcome.duplicate);
        assert_eq!(outcome.deliveries.len(), 1);
        assert_eq!(outcome.deliveries[0].id, fresh.deliveries[0].id);
    }
    assert_eq!(new, 1);
    // Twice in one call: the second is a duplicate of the first.
    let twice = event(&["http://d.test/"]);
    let outcomes = store.enqueue(vec![twice.clone(), twice]).await.unwrap();
    assert!(!outcomes[0].duplicate && outcomes[1].duplicate);
    assert_eq!(outcomes[0].deliveries, outcomes[1].deliveries);
    assert_eq!(store.queue_depth().await.unwrap(), 4);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_database_refuses_fails_alone_in_its_group() {
    let schema = Schema::new();
    let store = schema.open().await;
    let tasks: Vec<_> = (0..40)
        .map(|index| {
            let store = store.clone();
            let mut new = event(&["http://a.test/"]);
            if index == 17 {
                // `text` cannot hold NUL: the server refuses this event.
                new.project_id = Some("bad\0project".into());
            }
            tokio::spawn(async move { (index, store.enqueue(vec![new]).await) })
        })
        .collect();
    for task in tasks {
        let (index, result) = task.await.unwrap();
        assert_eq!(result.is_err(), index == 17, "event {index}: {result:?}");
    }
    assert_eq!(store.queue_depth().await.unwrap(), 39);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_claiming_together_never_share_a_delivery_and_get_them_all() {
    let schema = Schema::new();
    let (one, two) = (schema.open().await, schema.open().await);
    let hosts: Vec<String> = (0..5).map(|n| format!("http://host{n}.test/")).collect();
    let urls: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let events: Vec<NewEvent> = (0..100).map(|_| event(&urls)).collect();
    let expected: HashSet<DeliveryId> = events
        .iter()
        .flat_map(|event| event.deliveries.iter().map(|d| d.id.clone()))
        .collect();
    assert_eq!(expected.len(), 500);
    one.enqueue(events).await.unwrap();

    let claimer = |store: Store| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = claim(&store, 7, 600_000).await;
                if batch.deliveries.is_empty()
                    && batch.next_due_at.is_none_or(|due| due > now_millis())
                {
                    return got;
                }
                got.extend(batch.deliveries.into_iter().map(|d| d.id));
            }
        })
    };
    let (a, b) = (claimer(one.clone()), claimer(two.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let (set_a, set_b): (HashSet<_>, HashSet<_>) =
        (a.iter().cloned().collect(), b.iter().cloned().collect());
    assert_eq!(set_a.len(), a.len(), "store one claimed a delivery twice");
    assert_eq!(set_b.len(), b.len(), "store two claimed a delivery twice");
    assert!(
        set_a.is_disjoint(&set_b),
        "both stores claimed one delivery"
    );
    assert_eq!(&set_a | &set_b, expected);
    assert!(!a.is_empty() && !b.is_empty(), "{} / {}", a.len(), b.len());
    one.close();
    two.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_token_can_neither_finish_nor_release() {
    let schema = Schema::new();
    let store = schema.open().await;
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    let held = claim(&store, 1, 60_000).await.deliveries.remove(0);
    let mut forged = held.clone();
    forged.lease_token = LeaseToken::generate();
    assert!(!succeed(&store, &forged).await);
    store
        .release(vec![(forged.id.clone(), forged.lease_token.clone())])
        .await
        .unwrap();
    let view = store.delivery(&held.id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::InFlight);
    assert_eq!(view.attempts.unwrap().len(), 0);
    // The real lease still works: released, it is due again at once.
    store
        .release(vec![(held.id.clone(), held.lease_token.clone())])
        .await
        .unwrap();
    let again = claim(&store, 1, 60_000).await.deliveries.remove(0);
    assert_eq!(again.id, held.id);
    assert_ne!(again.lease_token, held.lease_token);
    // The first lease is gone now.
    assert!(!succeed(&store, &held).await);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_sharing_a_group_count_only_under_the_current_lease() {
    let schema = Schema::new();
    let store = schema.open().await;
    let events: Vec<NewEvent> = (0..50).map(|_| event(&["http://a.test/"])).collect();
    store.enqueue(events).await.unwrap();
    let held = claim(&store, 50, 60_000).await.deliveries;
    assert_eq!(held.len(), 50);
    // Every delivery finished twice at once: with a forged token and with its own.
    let mut tasks = Vec::new();
    for delivery in &held {
        let mut forged = delivery.clone();
        forged.lease_token = LeaseToken::generate();
        for (candidate, real) in [(forged, false), (delivery.clone(), true)] {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let status = if real { 200 } else { 500 };
                let recorded = store
                    .finish_attempt(
                        &candidate,
                        attempt(1, Some(status)),
                        AttemptOutcome::Succeeded,
                    )
                    .await
                    .unwrap();
                (recorded, real)
            }));
        }
    }
    for task in tasks {
        let (recorded, real) = task.await.unwrap();
        assert_eq!(recorded, real);
    }
    for delivery in &held {
        let view = store.delivery(&delivery.id).await.unwrap().unwrap();
        assert_eq!(view.status, DeliveryStatus::Succeeded);
        let attempts = view.attempts.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].response_status, Some(200));
    }
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_claimable_again_and_the_old_holder_loses_it() {
    let schema = Schema::new();
    let store = schema.open().await;
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    let first = claim(&store, 1, 30).await.deliveries.remove(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        if let Some(delivery) = claim(&store, 1, 60_000).await.deliveries.pop() {
            break delivery;
        }
        assert!(
            Instant::now() < deadline,
            "the expired lease never became claimable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(second.id, first.id);
    assert!(!succeed(&store, &first).await);
    assert!(succeed(&store, &second).await);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_delivery_is_stored_in_flight_under_its_lease() {
    let schema = Schema::new();
    let store = schema.open().await;
    let mut new = event(&["http://a.test/", "http://b.test/"]);
    let lease = Lease {
        token: LeaseToken::generate(),
        until: now_millis() + 60_000,
    };
    new.deliveries[0].lease = Some(lease.clone());
    let outcome = store.enqueue(vec![new.clone()]).await.unwrap().remove(0);
    // To the producer both are queued.
    assert!(
        outcome
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Queued)
    );
    let view = store
        .delivery(&new.deliveries[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, DeliveryStatus::InFlight);
    let batch = claim(&store, 10, 60_000).await;
    let claimed: Vec<&str> = batch.deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(claimed, vec![new.deliveries[1].id.as_str()]);
    let mut handed = batch.deliveries[0].clone();
    handed.id = new.deliveries[0].id.clone();
    handed.lease_token = lease.token;
    assert!(succeed(&store, &handed).await);
    store.close();
}

/// The latest attempt is kept in the delivery's row, earlier ones in `attempts`: a lookup
/// shows them all in order, and the history holds only those before the latest. An attempt
/// recorded by a node of the build before (during a rolling upgrade: straight into
/// `attempts`) takes its place among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_kept_in_order_across_the_row_and_the_history() {
    let schema = Schema::new();
    let store = schema.open().await;
    let sql = schema.sql().await;
    let new = event(&["http://a.test/"]);
    let id = new.deliveries[0].id.clone();
    store.enqueue(vec![new]).await.unwrap();
    for (number, status) in [(1, 503), (2, 503), (3, 200)] {
        let batch = claim(&store, 10, 60_000).await;
        assert_eq!(batch.deliveries.len(), 1, "attempt {number}");
        let claimed = &batch.deliveries[0];
        if number == 2 {
            // What the previous build's finish writes.
            let uuid = Uuid::parse_str(claimed.id.as_str()).unwrap();
            sql.batch_execute(&format!(
                "UPDATE deliveries SET status = 'queued', due_at = 0, attempts = 2, \
                 lease_token = NULL WHERE id = '{uuid}'; \
                 INSERT INTO attempts (delivery_id, number, started_at, duration_ms, \
                 response_status) VALUES ('{uuid}', 2, 2000, 5, 503)"
            ))
            .await
            .unwrap();
            continue;
        }
        let outcome = if status == 200 {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Retry { due_at: 0 }
        };
        assert!(
            store
                .finish_attempt(claimed, attempt(number, Some(status)), outcome)
                .await
                .unwrap()
        );
    }
    let view = store.delivery(&id).await.unwrap().unwrap();
    let seen: Vec<(u32, Option<u16>)> = view
        .attempts
        .unwrap()
        .iter()
        .map(|attempt| (attempt.number, attempt.response_status))
        .collect();
    assert_eq!(seen, [(1, Some(503)), (2, Some(503)), (3, Some(200))]);
    let history: i64 = sql
        .query_one("SELECT count(*) FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 2, "the latest attempt is in the row only");
    store.close();
}

/// A store's own queued work does not wake it (its engine is told directly, with the
/// destinations); another store's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_work_wakes_the_other_stores_but_not_its_own() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let schema = Schema::new();
    let listening = schema.open().await;
    let other = schema.open().await;
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = wakes.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    listening.watch_queued(
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
        },
        shutdown.clone(),
    );
    // Once listening, it wakes once for what it may have missed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wakes.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listening
        .enqueue(vec![event(&["http://own.test/"])])
        .await
        .unwrap();
    // Handing a claimed delivery back queues it again: also its own.
    let claimed = claim(&listening, 10, 60_000).await;
    assert_eq!(claimed.deliveries.len(), 1);
    let leases = claimed
        .deliveries
        .iter()
        .map(|d| (d.id.clone(), d.lease_token.clone()))
        .collect();
    listening.release(leases).await.unwrap();
    // Nothing arriving has no event to wait on; a wake-up on this loopback server takes a
    // few milliseconds, so half a second is ample (a slower one could only hide a failure).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "its own work woke it");
    other
        .enqueue(vec![event(&["http://other.test/"])])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while wakes.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "another store's work did not wake it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    listening.close();
    other.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_honours_the_per_destination_budget() {
    let schema = Schema::new();
    let store = schema.open().await;
    let events: Vec<NewEvent> = (0..10)
        .map(|_| event(&["http://busy.test/a", "http://idle.test/b"]))
        .collect();
    store.enqueue(events).await.unwrap();
    let busy = ClaimBudget {
        // Two already in flight here to busy.test (the key is the authority).
        in_flight: HashMap::from([("busy.test".to_owned(), 2)]),
        per_destination: 3,
        scan_rows: 100,
        ..ClaimBudget::default()
    };
    let batch = store.claim_due(100, 60_000, busy).await.unwrap();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for delivery in &batch.deliveries {
        *per_host
            .entry(delivery.destination.concurrency_key())
            .or_default() += 1;
    }
    assert_eq!(per_host.get("busy.test"), Some(&1));
    assert_eq!(per_host.get("idle.test"), Some(&3));
    // Every due row was seen: what is left is the full destinations' alone.
    assert_eq!(
        batch.due_left,
        DueLeft::Held(["busy.test".to_owned(), "idle.test".to_owned()].into())
    );
    // The limit caps the claim across destinations.
    let batch = store.claim_due(2, 60_000, budget(10)).await.unwrap();
    assert_eq!(
        batch.due_left,
        DueLeft::Unknown,
        "the claim stopped at its limit"
    );
    assert_eq!(batch.deliveries.len(), 2);
    assert_eq!(store.queue_depth().await.unwrap(), 20);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_requeues_finished_deliveries_with_a_fresh_budget() {
    let schema = Schema::new();
    let store = schema.open().await;
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    let held = claim(&store, 1, 60_000).await.deliveries.remove(0);
    store
        .finish_attempt(&held, attempt(1, Some(500)), AttemptOutcome::Failed)
        .await
        .unwrap();
    let failed = store
        .deliveries(Some(DeliveryStatus::Failed), 10, None)
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);
    let view = store.redeliver(&held.id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::Queued);
    assert_eq!(view.last_error, None);
    let again = claim(&store, 1, 60_000).await.deliveries.remove(0);
    assert_eq!((again.attempts_made, again.budget_start), (1, 1));
    // In flight: left as it is.
    let view = store.redeliver(&held.id).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::InFlight);
    assert!(
        store
            .redeliver(&DeliveryId::from("nope"))
            .await
            .unwrap()
            .is_none()
    );
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_lists_page_newest_first_by_status() {
    let schema = Schema::new();
    let store = schema.open().await;
    let events: Vec<NewEvent> = (0..5).map(|_| event(&["http://a.test/"])).collect();
    let mut ids: Vec<DeliveryId> = events.iter().map(|e| e.deliveries[0].id.clone()).collect();
    store.enqueue(events).await.unwrap();
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .deliveries(Some(DeliveryStatus::Queued), 2, cursor)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|item| item.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let all = store.deliveries(None, 10, None).await.unwrap();
    assert_eq!(all.items.len(), 5);
    assert!(all.next_cursor.is_none());
    let none = store
        .deliveries(Some(DeliveryStatus::Succeeded), 10, None)
        .await
        .unwrap();
    assert!(none.items.is_empty());
    store.close();
}

fn saved(tenant: &str, n: usize) -> SavedConfig {
    SavedConfig {
        id: ConfigId::generate(),
        tenant_id: tenant.to_owned(),
        settings: json!({"webhook_url": format!("https://example.com/{n}")}),
        signing_secret: n.is_multiple_of(2).then(|| format!("secret-{n}")),
        previous_secret: None,
        created_at: "2026-11-30T10:00:00Z".into(),
        updated_at: "2026-11-30T10:00:00Z".into(),
        seq: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_connections_are_killed_reports_errors_and_recovers() {
    let schema = Schema::new();
    let url = format!("{}&application_name={}", schema.url(), schema.name);
    let store = Store::Postgres(
        PgStore::open(&PgSettings::parse(&url).unwrap())
            .await
            .unwrap(),
    );
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    store.ping().await.unwrap();
    let killed: i64 = schema
        .sql()
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0);
    // Each pooled connection fails at most once (an error, not a panic), then is replaced.
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.queue_depth().await {
            Ok(depth) => {
                assert_eq!(depth, 1);
                break;
            }
            Err(error) => {
                failures += 1;
                assert!(error.to_string().contains("postgres"), "{error}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "never recovered after {failures} failures"
        );
    }
    store
        .enqueue(vec![event(&["http://a.test/"])])
        .await
        .unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_configurations_round_trip_and_page() {
    let schema = Schema::new();
    let store = schema.open().await;
    let mut inserted = Vec::new();
    for n in 0..7 {
        let tenant = if n < 5 { "tenant-a" } else { "tenant-b" };
        inserted.push(store.insert_config(saved(tenant, n)).await.unwrap());
    }
    assert!(inserted.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    let first = &inserted[0];
    assert_eq!(store.config(&first.id).await.unwrap().as_ref(), Some(first));
    assert!(
        store
            .config(&ConfigId::from("not-a-uuid"))
            .await
            .unwrap()
            .is_none()
    );
    let asked = vec![inserted[3].id.clone(), "x".into(), inserted[1].id.clone()];
    let found: Vec<ConfigId> = store
        .configs_by_id(asked)
        .await
        .unwrap()
        .into_iter()
        .map(|config| config.id)
        .collect();
    assert_eq!(found, vec![inserted[3].id.clone(), inserted[1].id.clone()]);

    let mut changed = first.clone();
    changed.settings = json!({"webhook_url": "https://example.com/changed"});
    changed.signing_secret = None;
    changed.updated_at = "2026-11-30T11:00:00Z".into();
    let updated = store.update_config(changed.clone()).await.unwrap().unwrap();
    assert_eq!(updated, changed);
    let mut missing = saved("tenant-a", 99);
    missing.id = ConfigId::generate();
    assert!(store.update_config(missing).await.unwrap().is_none());

    // Pages of two, newest first, for one tenant, with the total.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .configs(Some("tenant-a".into()), 2, cursor, true)
            .await
            .unwrap();
        assert_eq!(page.total, Some(5));
        seen.extend(page.items.into_iter().map(|config| config.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<ConfigId> = inserted[..5].iter().rev().map(|c| c.id.clone()).collect();
    assert_eq!(seen, expected);
    let all = store.configs(None, 100, None, true).await.unwrap();
    assert_eq!((all.items.len(), all.total), (7, Some(7)));
    assert_eq!(all.items[0].id, inserted[6].id);
    let page = store.configs(None, 3, None, false).await.unwrap();
    assert_eq!((page.items.len(), page.total), (3, None));

    assert!(store.delete_config(&first.id).await.unwrap());
    assert!(!store.delete_config(&first.id).await.unwrap());
    assert!(
        !store
            .delete_config(&ConfigId::from("not-a-uuid"))
            .await
            .unwrap()
    );
    assert!(store.config(&first.id).await.unwrap().is_none());
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_schema_deliver_every_event() {
    let schema = Schema::new();
    let receiver = common::Receiver::start().await;
    let url = schema.url();
    let one = common::spawn_app_with(|config| config.store = Some(url.clone())).await;
    let two = common::spawn_app_with(|config| config.store = Some(url.clone())).await;
    let mut accepted = Vec::new();
    for n in 0..20 {
        let app = if n % 2 == 0 { &one } else { &two };
        let body = app
            .ingest(common::event_to(
                "parse.success",
                json!({"webhook_url": receiver.url("/hook"), "webhook_output_format": "json"}),
            ))
            .await;
        accepted.push(common::delivery_id(&body, 0));
    }
    for id in &accepted {
        let view = one
            .wait_for_status(id, "succeeded", Duration::from_secs(20))
            .await;
        assert_eq!(view["attempt_count"], 1, "{view}");
    }
    let received = receiver.wait_for(20, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 20);
    let (status, ready) = two.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");

    // Either node answers look-ups and pages over the shared store.
    let mut listed = Vec::new();
    let mut path = "/api/v1/deliveries?status=succeeded&limit=7".to_owned();
    loop {
        let (status, page) = two.get(&path).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].clone()),
        );
        match page["next_page_token"].as_str() {
            Some(token) => {
                path = format!("/api/v1/deliveries?status=succeeded&limit=7&page_token={token}")
            }
            None => break,
        }
    }
    let mut newest_first: Vec<serde_json::Value> = accepted.iter().map(|id| json!(id)).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    // A redelivery asked of one node is sent by either, as attempt 2.
    let first = &accepted[0];
    let (status, queued) = one
        .post(&format!("/api/v1/deliveries/{first}/redeliver"), &json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = two.delivery(first).await;
        if view["status"] == "succeeded" && view["attempt_count"] == 2 {
            assert_eq!(view["attempts"].as_array().unwrap().len(), 2, "{view}");
            break;
        }
        assert!(Instant::now() < deadline, "never redelivered: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.wait_for(21, Duration::from_secs(5)).await;
}

/// Not a check: figures for the README and reviews. `cargo test --test store_postgres
/// throughput -- --ignored --nocapture` prints events/s through group commit (64 concurrent
/// producers, one event with one delivery each), then claims and finishes per second, on
/// PostgreSQL and, for comparison, SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    const EVENTS: usize = 20_000;
    const PRODUCERS: usize = 64;
    let schema = Schema::new();
    let temp = tempfile::tempdir().unwrap();
    let stores = [
        ("postgres", schema.open().await),
        (
            "sqlite",
            Store::Sqlite(
                hookgate::store::SqliteStore::open(&temp.path().join("t.sqlite3")).unwrap(),
            ),
        ),
    ];
    for (name, store) in stores {
        let started = Instant::now();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..EVENTS / PRODUCERS {
                        store
                            .enqueue(vec![event(&["http://a.test/"])])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await.unwrap();
        }
        let enqueue = started.elapsed();
        let started = Instant::now();
        let mut finished = 0;
        loop {
            let batch = store.claim_due(256, 60_000, budget(10_000)).await.unwrap();
            if batch.deliveries.is_empty() {
                break;
            }
            let finishes: Vec<_> = batch
                .deliveries
                .into_iter()
                .map(|delivery| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .finish_attempt(
                                &delivery,
                                attempt(1, Some(200)),
                                AttemptOutcome::Succeeded,
                            )
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for finish in finishes {
                finished += usize::from(finish.await.unwrap());
            }
        }
        let drain = started.elapsed();
        let per_second = |count: usize, elapsed: Duration| count as f64 / elapsed.as_secs_f64();
        println!(
            "{name}: enqueue {:.0} events/s ({PRODUCERS} producers); claim+finish {:.0} deliveries/s ({finished})",
            per_second(EVENTS - EVENTS % PRODUCERS, enqueue),
            per_second(finished, drain),
        );
        store.close();
    }
}
