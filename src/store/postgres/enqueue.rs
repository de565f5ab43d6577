//! Accepting events on PostgreSQL: group commit (see `group`) of whole requests.
//!
//! A group is written with one multi-row insert per table and committed with
//! `synchronous_commit` on; each caller is answered after that COMMIT. One job (one
//! request's events) is all or nothing; a job the database refuses (a NUL character in a
//! project id, which `text` cannot hold) fails alone.

use super::cluster::notify_queued;
use super::group::GroupWrite;
use super::{DURABLE_COMMIT, PgStore, parse_id};
use crate::domain::{DeliveryId, DeliveryStatus, EventId, UnixMillis, now_millis};
use crate::store::{DeliverySummary, EnqueueOutcome, NewEvent, StoreError};
use deadpool_postgres::Pool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Group-commit writers of accepted events: one gathers while another waits for its flush.
pub(super) const WRITERS: usize = 2;

const INSERT_EVENTS: &str = "INSERT INTO events (id, event_type, project_id, timestamp, payload, created_at) \
     SELECT e.id, e.event_type, e.project_id, e.timestamp, e.payload, $6 \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[], $5::text[]) \
         AS e(id, event_type, project_id, timestamp, payload) \
     ON CONFLICT (id) DO NOTHING RETURNING id";

/// Handed-over deliveries (with a lease) are stored in flight until the lease ends; the
/// others queued and due now. `ORDER BY ord` keeps `seq` in the order routing made them.
const INSERT_DELIVERIES: &str = "INSERT INTO deliveries (id, event_id, dest_key, webhook_url, destination, \
         status, lease_token, due_at, created_at, updated_at) \
     SELECT d.id, d.event_id, d.dest_key, d.webhook_url, d.destination, \
         CASE WHEN d.lease_token IS NULL THEN 'queued' ELSE 'in_flight' END, \
         d.lease_token, d.due_at, $8, $8 \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::int8[]) \
         WITH ORDINALITY AS d(id, event_id, dest_key, webhook_url, destination, lease_token, due_at, ord) \
     ORDER BY d.ord";

const STORED_DELIVERIES: &str = "SELECT event_id, id, webhook_url, status FROM deliveries \
     WHERE event_id = ANY($1::uuid[]) ORDER BY seq";

/// One `enqueue` call's events, all or nothing.
pub(super) type Events = Vec<EventRow>;

/// An event ready for its INSERT.
pub(super) struct EventRow {
    id: Uuid,
    event_type: String,
    project_id: Option<String>,
    timestamp: f64,
    payload: String,
    deliveries: Vec<DeliveryRow>,
}

struct DeliveryRow {
    id: Uuid,
    dest_key: String,
    url: String,
    /// JSON of the destination.
    destination: String,
    /// Lease token and end, for a delivery the engine took straight from ingest.
    lease: Option<(Uuid, UnixMillis)>,
}

impl PgStore {
    pub async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Serialise on the caller's task: the writers only run SQL.
        let events = events
            .into_iter()
            .map(event_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.enqueues.submit(events).await
    }
}

fn event_row(event: NewEvent) -> Result<EventRow, StoreError> {
    let id = parse_id(&event.id)
        .ok_or_else(|| StoreError::Corrupt(format!("event id {:?} is not a UUID", event.id)))?;
    let deliveries = event
        .deliveries
        .iter()
        .map(|delivery| {
            let delivery_id = parse_id(&delivery.id).ok_or_else(|| {
                StoreError::Corrupt(format!("delivery id {:?} is not a UUID", delivery.id))
            })?;
            let lease = match &delivery.lease {
                Some(lease) => Some((
                    parse_id(&lease.token).ok_or_else(|| {
                        StoreError::Corrupt("a lease token is not a UUID".to_owned())
                    })?,
                    lease.until,
                )),
                None => None,
            };
            Ok(DeliveryRow {
                id: delivery_id,
                dest_key: delivery.destination.concurrency_key(),
                url: delivery.destination.url.clone(),
                destination: serde_json::to_string(&delivery.destination)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                lease,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(EventRow {
        id,
        event_type: event.event_type,
        project_id: event.project_id,
        timestamp: event.timestamp,
        payload: event.payload,
        deliveries,
    })
}

/// The group-commit kind for accepted events.
pub(super) struct Enqueue;

impl GroupWrite for Enqueue {
    type Input = Events;
    type Output = Vec<EnqueueOutcome>;
    const KIND: &'static str = "enqueue";
    /// Bounds the time a caller waits behind one commit...
    const MAX_ITEMS: usize = 1024;
    /// ...and the size of one statement's parameters.
    const MAX_BYTES: usize = 16 << 20;

    fn size(events: &Events) -> (usize, usize) {
        let bytes = events.iter().map(|event| event.payload.len()).sum();
        (events.len(), bytes)
    }

    async fn write(
        pool: &Pool,
        origin: &str,
        jobs: &[&Events],
    ) -> Result<Vec<Vec<EnqueueOutcome>>, StoreError> {
        write_jobs(pool, origin, jobs).await
    }
}

/// Write the jobs' events in one transaction; one list of outcomes per job, in order.
async fn write_jobs(
    pool: &Pool,
    origin: &str,
    jobs: &[&Events],
) -> Result<Vec<Vec<EnqueueOutcome>>, StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
    transaction.execute(&durable, &[]).await?;
    let now = now_millis();

    // The first sight of an id is the one that may be new; a later one in the same group is
    // a duplicate of it, as when the jobs run one after another.
    let mut seen = HashSet::new();
    let mut candidates: Vec<&EventRow> = jobs
        .iter()
        .flat_map(|events| events.iter())
        .filter(|event| seen.insert(event.id))
        .collect();
    // One lock order for every writer: two groups inserting the same new ids wait for each
    // other instead of deadlocking.
    candidates.sort_by_key(|event| event.id);
    let insert_events = transaction.prepare_cached(INSERT_EVENTS).await?;
    let ids: Vec<Uuid> = candidates.iter().map(|event| event.id).collect();
    let types: Vec<&str> = candidates.iter().map(|e| e.event_type.as_str()).collect();
    let projects: Vec<Option<&str>> = candidates
        .iter()
        .map(|event| event.project_id.as_deref())
        .collect();
    let timestamps: Vec<f64> = candidates.iter().map(|event| event.timestamp).collect();
    let payloads: Vec<&str> = candidates.iter().map(|e| e.payload.as_str()).collect();
    let mut fresh: HashSet<Uuid> = transaction
        .query(
            &insert_events,
            &[&ids, &types, &projects, &timestamps, &payloads, &now],
        )
        .await?
        .iter()
        .map(|row| row.try_get::<_, Uuid>(0))
        .collect::<Result<_, _>>()?;

    let mut new_deliveries = DeliveryColumns::default();
    let mut duplicates = Vec::new();
    // Per job, per event: its deliveries if new, or `None` to be filled from the stored ones.
    let mut answers: Vec<Vec<(Uuid, Option<Vec<DeliverySummary>>)>> = Vec::new();
    for events in jobs {
        let mut answer = Vec::with_capacity(events.len());
        for event in events.iter() {
            if fresh.remove(&event.id) {
                answer.push((event.id, Some(new_deliveries.push(event, now))));
            } else {
                duplicates.push(event.id);
                answer.push((event.id, None));
            }
        }
        answers.push(answer);
    }
    if !new_deliveries.ids.is_empty() {
        let insert = transaction.prepare_cached(INSERT_DELIVERIES).await?;
        let columns = &new_deliveries;
        transaction
            .execute(
                &insert,
                &[
                    &columns.ids,
                    &columns.event_ids,
                    &columns.dest_keys,
                    &columns.urls,
                    &columns.destinations,
                    &columns.lease_tokens,
                    &columns.due_at,
                    &now,
                ],
            )
            .await?;
    }
    let mut stored: HashMap<Uuid, Vec<DeliverySummary>> = HashMap::new();
    if !duplicates.is_empty() {
        let lookup = transaction.prepare_cached(STORED_DELIVERIES).await?;
        for row in transaction.query(&lookup, &[&duplicates]).await? {
            let status: String = row.try_get(3)?;
            stored
                .entry(row.try_get(0)?)
                .or_default()
                .push(DeliverySummary {
                    id: DeliveryId::from(row.try_get::<_, Uuid>(1)?.to_string()),
                    webhook_url: row.try_get(2)?,
                    status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Queued),
                });
        }
    }
    if new_deliveries.lease_tokens.iter().any(Option::is_none) {
        // Work no node has taken yet: wake the others once this commits.
        notify_queued(&transaction, origin).await?;
    }
    transaction.commit().await?;
    Ok(answers
        .into_iter()
        .map(|answer| {
            answer
                .into_iter()
                .map(|(event_id, deliveries)| EnqueueOutcome {
                    event_id: EventId::from(event_id.to_string()),
                    duplicate: deliveries.is_none(),
                    deliveries: deliveries
                        .unwrap_or_else(|| stored.get(&event_id).cloned().unwrap_or_default()),
                })
                .collect()
        })
        .collect())
}

/// The deliveries of a group's new events, column by column for `unnest`.
#[derive(Default)]
struct DeliveryColumns<'a> {
    ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    dest_keys: Vec<&'a str>,
    urls: Vec<&'a str>,
    destinations: Vec<&'a str>,
    lease_tokens: Vec<Option<Uuid>>,
    due_at: Vec<UnixMillis>,
}

impl<'a> DeliveryColumns<'a> {
    /// Add an event's deliveries; returns what the API answers for them. A handed-over
    /// delivery is in flight under its lease, but to the producer it is still queued.
    fn push(&mut self, event: &'a EventRow, now: UnixMillis) -> Vec<DeliverySummary> {
        event
            .deliveries
            .iter()
            .map(|delivery| {
                self.ids.push(delivery.id);
                self.event_ids.push(event.id);
                self.dest_keys.push(&delivery.dest_key);
                self.urls.push(&delivery.url);
                self.destinations.push(&delivery.destination);
                self.lease_tokens
                    .push(delivery.lease.map(|(token, _)| token));
                self.due_at
                    .push(delivery.lease.map_or(now, |(_, until)| until));
                DeliverySummary {
                    id: DeliveryId::from(delivery.id.to_string()),
                    webhook_url: delivery.url.clone(),
                    status: DeliveryStatus::Queued,
                }
            })
            .collect()
    }
}
