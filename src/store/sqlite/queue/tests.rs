//! The SQLite queue's own verbs: in-memory leases, attempts kept across the move into the
//! delivery row, event ranges, and the plans of the list queries.

use super::*;
use crate::store::ClaimBudget;
use crate::store::sqlite::fixtures::one_delivery;

fn budget() -> ClaimBudget {
    ClaimBudget {
        per_destination: 10,
        scan_rows: 100,
        ..ClaimBudget::default()
    }
}

fn attempt(number: u32, status: u16) -> Attempt {
    Attempt {
        number,
        started_at: 1_000 * i64::from(number),
        duration_ms: 5,
        response_status: Some(status),
        error: (status >= 300).then(|| format!("receiver answered {status}")),
        response_body: Some(format!("body {number}")),
        exchange: None,
    }
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("leases.sqlite3-wal")).map_or(0, |meta| meta.len())
}

/// A claim writes nothing to the file, yet a second claim does not take what the first
/// holds and the API shows it in flight. A lease that ended is claimed again, and the
/// old holder's result is refused.
#[tokio::test]
async fn claims_hold_rows_in_memory_until_the_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
    let stored = store
        .enqueue(vec![
            one_delivery("http://127.0.0.1:9/a", None),
            one_delivery("http://127.0.0.1:9/b", None),
        ])
        .await
        .unwrap();
    let before = wal_bytes(dir.path());
    let first = store.claim_due(1, 60_000, budget()).await.unwrap();
    assert_eq!(first.deliveries.len(), 1);
    let held = &first.deliveries[0];
    assert_eq!(held.id, stored[0].deliveries[0].id, "oldest first");
    // The second delivery; the first is held.
    let second = store.claim_due(10, 60_000, budget()).await.unwrap();
    assert_eq!(second.deliveries.len(), 1);
    assert_eq!(second.deliveries[0].id, stored[1].deliveries[0].id);
    assert!(
        store
            .claim_due(10, 60_000, budget())
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    assert_eq!(wal_bytes(dir.path()), before, "claims wrote to the file");
    let view = store.delivery(held.id.clone()).await.unwrap().unwrap();
    assert_eq!(view.status, DeliveryStatus::InFlight);
    let listed = store
        .deliveries(Some(DeliveryStatus::InFlight), 10, None)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    let queued = store
        .deliveries(Some(DeliveryStatus::Queued), 10, None)
        .await
        .unwrap();
    assert!(queued.items.is_empty());

    // Handed back due now: the lease goes, nothing is written, and it is claimable.
    let lease = vec![(held.id.clone(), held.lease_token.clone())];
    store
        .release_until(lease, now_millis(), None)
        .await
        .unwrap();
    assert_eq!(wal_bytes(dir.path()), before, "a plain hand-back wrote");
    // Claimed under a lease that ends at once, then taken over by the next claim.
    let ended = store.claim_due(10, -1, budget()).await.unwrap();
    assert_eq!(ended.deliveries.len(), 1);
    let old = &ended.deliveries[0];
    let renewed = vec![(old.id.clone(), old.lease_token.clone())];
    assert_eq!(store.renew_leases(renewed, 0).await.unwrap(), 1);
    let taken_over = store.claim_due(10, 60_000, budget()).await.unwrap();
    assert_eq!(taken_over.deliveries.len(), 1);
    let current = &taken_over.deliveries[0];
    assert_eq!(current.id, old.id);
    let late = store
        .finish_attempt(
            old.id.clone(),
            old.lease_token.clone(),
            attempt(1, 200),
            AttemptOutcome::Succeeded,
        )
        .await
        .unwrap();
    assert!(!late, "the old holder's result is refused");
    assert!(
        store
            .finish_attempt(
                current.id.clone(),
                current.lease_token.clone(),
                attempt(1, 200),
                AttemptOutcome::Succeeded,
            )
            .await
            .unwrap()
    );
    let done = store.delivery(current.id.clone()).await.unwrap().unwrap();
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    store.close();
}

/// Handing back with a reason, or a later due time, is written; a hand-over's row, in
/// flight in the file, is written back to queued.
#[tokio::test]
async fn hand_backs_that_change_the_row_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
    let lease = Lease {
        token: LeaseToken::generate(),
        until: now_millis() + 60_000,
    };
    let handed_over = one_delivery("http://127.0.0.1:9/h", Some(lease.clone()));
    let handed_id = handed_over.deliveries[0].id.clone();
    store
        .enqueue(vec![
            handed_over,
            one_delivery("http://127.0.0.1:9/c", None),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .delivery(handed_id.clone())
            .await
            .unwrap()
            .unwrap()
            .status,
        DeliveryStatus::InFlight
    );
    let claimed = store.claim_due(10, 60_000, budget()).await.unwrap();
    assert_eq!(claimed.deliveries.len(), 1, "the hand-over is held");
    let claimed = &claimed.deliveries[0];
    let later = now_millis() + 60_000;
    store
        .release_until(
            vec![(claimed.id.clone(), claimed.lease_token.clone())],
            later,
            Some("paused".into()),
        )
        .await
        .unwrap();
    let waiting = store.delivery(claimed.id.clone()).await.unwrap().unwrap();
    assert_eq!(waiting.status, DeliveryStatus::Queued);
    assert_eq!(waiting.next_attempt_at, Some(later));
    assert_eq!(waiting.last_error.as_deref(), Some("paused"));

    store
        .release_until(
            vec![(handed_id.clone(), lease.token.clone())],
            now_millis(),
            None,
        )
        .await
        .unwrap();
    let queued = store.delivery(handed_id.clone()).await.unwrap().unwrap();
    assert_eq!(queued.status, DeliveryStatus::Queued);
    let again = store.claim_due(10, 60_000, budget()).await.unwrap();
    let ids: Vec<&DeliveryId> = again.deliveries.iter().map(|d| &d.id).collect();
    assert_eq!(ids, [&handed_id]);
    store.close();
}

/// What is left due behind a full destination is due now, although later rows follow.
#[tokio::test]
async fn the_next_due_time_is_the_earliest_row_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("leases.sqlite3")).unwrap();
    store
        .enqueue(vec![
            one_delivery("http://127.0.0.1:9/a", None),
            one_delivery("http://127.0.0.1:9/b", None),
        ])
        .await
        .unwrap();
    // A third, of another destination, retrying in a minute.
    store
        .enqueue(vec![one_delivery("http://127.0.0.2:9/later", None)])
        .await
        .unwrap();
    let first_full = ClaimBudget {
        in_flight: [("127.0.0.1:9".to_owned(), 10)].into(),
        ..budget()
    };
    let third = store.claim_due(10, 60_000, first_full).await.unwrap();
    assert_eq!(third.deliveries.len(), 1);
    let later = now_millis() + 60_000;
    let leases = third
        .deliveries
        .iter()
        .map(|d| (d.id.clone(), d.lease_token.clone()))
        .collect();
    store.release_until(leases, later, None).await.unwrap();
    let one_slot = ClaimBudget {
        per_destination: 1,
        ..budget()
    };
    let batch = store.claim_due(10, 60_000, one_slot).await.unwrap();
    assert_eq!(batch.deliveries.len(), 1, "one slot for 127.0.0.1:9");
    let due = batch.next_due_at.expect("something is left");
    assert!(
        due <= now_millis(),
        "the full destination's row is due now: {due}"
    );
    store.close();
}

/// A file from before the latest attempt moved into the row and events knew their
/// deliveries' range: its attempts stay in the history table, later attempts follow them
/// in order, and events find their deliveries.
#[tokio::test]
async fn attempts_recorded_before_the_move_are_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE events (id TEXT PRIMARY KEY, event_type TEXT NOT NULL, \
             project_id TEXT, timestamp REAL NOT NULL, payload TEXT NOT NULL, \
             created_at INTEGER NOT NULL);
             CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL, dest_key TEXT NOT NULL, \
             webhook_url TEXT NOT NULL, destination TEXT NOT NULL, status TEXT NOT NULL, \
             attempts INTEGER NOT NULL DEFAULT 0, budget_start INTEGER NOT NULL DEFAULT 0, \
             due_at INTEGER NOT NULL, lease_token TEXT, last_error TEXT, \
             created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE attempts (delivery_id TEXT NOT NULL, number INTEGER NOT NULL, \
             started_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL, \
             response_status INTEGER, error TEXT, response_body TEXT, \
             PRIMARY KEY (delivery_id, number)) WITHOUT ROWID;
             INSERT INTO events VALUES ('e1', 'parse.success', NULL, 1.0, '{}', 0);
             INSERT INTO deliveries (id, event_id, dest_key, webhook_url, destination, \
             status, attempts, due_at, last_error, created_at, updated_at) VALUES \
             ('d1', 'e1', 'k', 'http://127.0.0.1:9/', \
             '{\"url\":\"http://127.0.0.1:9/\",\"source\":{\"kind\":\"inline\"}}', 'queued', 1, 0, 'x', 0, 0);
             INSERT INTO attempts VALUES ('d1', 1, 1000, 5, 500, 'receiver answered 500', 'old');
             CREATE INDEX deliveries_event ON deliveries(event_id);
             INSERT INTO events VALUES ('e2', 'parse.success', NULL, 1.0, '{}', 0);
             INSERT INTO deliveries (seq, id, event_id, dest_key, webhook_url, destination, \
             status, due_at, created_at, updated_at) VALUES \
             (2, 'd2', 'e2', 'k', 'http://127.0.0.1:9/', '{}', 'succeeded', 0, 0, 0), \
             (4, 'd4', 'e2', 'k', 'http://127.0.0.1:9/', '{}', 'succeeded', 0, 0, 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    for (number, status) in [(2, 503), (3, 200)] {
        let claim = store.claim_due(10, 60_000, budget()).await.unwrap();
        let claimed = &claim.deliveries[0];
        assert_eq!(claimed.attempts_made, number - 1);
        let outcome = if status == 200 {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Retry { due_at: 0 }
        };
        assert!(
            store
                .finish_attempt(
                    claimed.id.clone(),
                    claimed.lease_token.clone(),
                    attempt(number, status),
                    outcome,
                )
                .await
                .unwrap()
        );
    }
    let view = store
        .delivery(DeliveryId::from("d1"))
        .await
        .unwrap()
        .unwrap();
    let attempts = view.attempts.unwrap();
    let seen: Vec<(u32, Option<u16>, Option<String>)> = attempts
        .into_iter()
        .map(|attempt| {
            (
                attempt.number,
                attempt.response_status,
                attempt.response_body,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Some(500), Some("old".to_owned())),
            (2, Some(503), Some("body 2".to_owned())),
            (3, Some(200), Some("body 3".to_owned())),
        ]
    );
    assert_eq!(view.status, DeliveryStatus::Succeeded);
    // The event finds its delivery by the range worked out when the file was opened.
    let event = store.event(EventId::from("e1")).await.unwrap().unwrap();
    let ids: Vec<&str> = event.deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d1"]);
    // Retention had deleted the delivery between this event's two: the range spans it.
    let event = store.event(EventId::from("e2")).await.unwrap().unwrap();
    let ids: Vec<&str> = event.deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d2", "d4"]);
    store.close();
}

/// The finished-status lists must walk the partial index, not the whole table.
#[test]
fn finished_status_lists_use_the_partial_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("plan.sqlite3")).unwrap();
    let conn = Connection::open(dir.path().join("plan.sqlite3")).unwrap();
    for status in [
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(Some(status))))
            .unwrap()
            .query_map(params![i64::MAX, 10], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("deliveries_finished")),
            "{status:?}: {plan:?}"
        );
    }
    store.close();
}
