//! What the nodes of a cluster share besides the queue, on PostgreSQL: the node list, the
//! generated API key, lease renewal, and the wake-up that tells the other nodes work was
//! queued.
//!
//! The wake-up is `NOTIFY` on a channel named after the schema (several gateways' schemas
//! may share a database), sent inside the transactions that queue work, so it arrives only
//! once that work is committed. Each node listens on one connection of its own outside the
//! pool and reconnects by itself; after a reconnect it wakes its engine once, since a
//! notification may have been missed meanwhile. A notification carries the sending store's
//! origin (a random name given at open), and a store ignores its own: its engine
//! learns of the work it queues without one, knowing which destinations it queued for,
//! whereas a wake-up only says "something", which stops hand-over to every destination until
//! the next claim.

use super::migrate::quote_identifier;
use super::{PgStore, RELAXED_COMMIT, parse_id};
use crate::domain::{DeliveryId, LeaseToken, NodeId, UnixMillis, now_millis};
use crate::store::{LiveNodes, NodeRecord, StoreError};
use deadpool_postgres::GenericClient;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Nodes silent for this long are dropped from the list.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;
/// The cluster setting holding the generated API key.
const API_KEY: &str = "api_key";
/// The longest wait between attempts to listen again after the connection failed.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

const HEARTBEAT: &str = "WITH beat AS ( \
         INSERT INTO nodes (id, listen, version, started_at, heartbeat_at, in_flight, \
             destination_share, plugins) \
         VALUES ($1, $2, $3, $4, $5, $6, $10, $7) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             in_flight = excluded.in_flight, destination_share = excluded.destination_share, \
             plugins = excluded.plugins, listen = excluded.listen, version = excluded.version), \
     forgotten AS (DELETE FROM nodes WHERE heartbeat_at < $8) \
     SELECT count(*), count(*) FILTER (WHERE (started_at, id) < ($4, $1)) \
     FROM nodes WHERE heartbeat_at >= $9 AND id <> $1";

/// Rows another transaction holds (an attempt record or a hand-back being written) are
/// skipped rather than waited for: they are about to stop needing the lease, and waiting
/// would let renewals and grouped writes lock the same rows in different orders.
const RENEW: &str = "WITH held AS ( \
         SELECT d.seq FROM deliveries d \
         JOIN unnest($2::uuid[], $3::uuid[]) AS l(id, lease_token) \
             ON d.id = l.id AND d.lease_token = l.lease_token \
         WHERE d.status = 'in_flight' FOR UPDATE OF d SKIP LOCKED) \
     UPDATE deliveries d SET due_at = $1 FROM held WHERE d.seq = held.seq";

/// The notification channel of the schema the connection's search path names; hashed,
/// since a channel name is at most 63 bytes and a schema name may be as long.
const CHANNEL: &str = "'hookgate_' || md5(current_schema())";
/// How long the listening connection may be silent before TCP checks on it: a peer that
/// vanished without closing must not leave this node waiting for wake-ups that never come.
const LISTEN_KEEPALIVE: Duration = Duration::from_secs(30);

/// Tell every other node, once `client`'s transaction commits, that deliveries were queued.
/// Notifications of one transaction are folded into one by the server.
/// The payload is `origin`, the sending store's name.
pub(super) async fn notify_queued(
    client: &impl GenericClient,
    origin: &str,
) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(&format!("SELECT pg_notify({CHANNEL}, $1::text)"))
        .await?;
    client.query_one(&statement, &[&origin]).await?;
    Ok(())
}

impl PgStore {
    pub async fn heartbeat_node(
        &self,
        node: NodeRecord,
        alive_within_ms: i64,
    ) -> Result<LiveNodes, StoreError> {
        let id = node_uuid(&node.id)?;
        let plugins = serde_json::to_string(&node.plugins)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let now = now_millis();
        let client = self.client().await?;
        let statement = client.prepare_cached(HEARTBEAT).await?;
        let in_flight = i32::try_from(node.in_flight).unwrap_or(i32::MAX);
        let share = i32::try_from(node.destination_share).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                &statement,
                &[
                    &id,
                    &node.listen,
                    &node.version,
                    &node.started_at,
                    &now,
                    &in_flight,
                    &plugins,
                    &(now - FORGET_AFTER_MS),
                    &(now - alive_within_ms),
                    &share,
                ],
            )
            .await?;
        let (others, before): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        // The statement's snapshot predates its own insert: count this node apart.
        Ok(LiveNodes {
            count: usize::try_from(others).unwrap_or(0) + 1,
            rank: usize::try_from(before).unwrap_or(0),
        })
    }

    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), StoreError> {
        let id = node_uuid(&node_id)?;
        let client = self.client().await?;
        client
            .execute("DELETE FROM nodes WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, listen, version, started_at, heartbeat_at, in_flight, \
                 destination_share, plugins FROM nodes ORDER BY started_at, id",
            )
            .await?;
        client
            .query(&statement, &[])
            .await?
            .into_iter()
            .map(|row| {
                let id: Uuid = row.try_get(0)?;
                let in_flight: i32 = row.try_get(5)?;
                let share: i32 = row.try_get(6)?;
                let plugins: String = row.try_get(7)?;
                Ok(NodeRecord {
                    id: NodeId::from(id.to_string()),
                    listen: row.try_get(1)?,
                    version: row.try_get(2)?,
                    started_at: row.try_get(3)?,
                    heartbeat_at: row.try_get(4)?,
                    in_flight: u32::try_from(in_flight).unwrap_or(0),
                    destination_share: u32::try_from(share).unwrap_or(0),
                    plugins: serde_json::from_str(&plugins).unwrap_or_default(),
                })
            })
            .collect()
    }

    pub async fn renew_leases(
        &self,
        leases: Vec<(DeliveryId, LeaseToken)>,
        until: UnixMillis,
    ) -> Result<usize, StoreError> {
        let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = leases
            .iter()
            .filter_map(|(id, token)| Some((parse_id(id.as_str())?, parse_id(token.as_str())?)))
            .unzip();
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(RELAXED_COMMIT).await?;
        let statement = transaction.prepare_cached(RENEW).await?;
        let renewed = transaction
            .execute(&statement, &[&until, &ids, &tokens])
            .await?;
        transaction.commit().await?;
        Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
    }

    /// The API key every node accepts when none is configured: the one stored, or
    /// `candidate` if none is yet. Returns the key and whether `candidate` became it.
    pub async fn shared_api_key(&self, candidate: String) -> Result<(String, bool), StoreError> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO cluster_settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&API_KEY, &candidate],
            )
            .await?;
        let stored: String = client
            .query_one(
                "SELECT value FROM cluster_settings WHERE name = $1",
                &[&API_KEY],
            )
            .await?
            .try_get(0)?;
        Ok((stored, inserted == 1))
    }

    /// Call `on_queued` whenever another node commits queued work, until `shutdown`.
    pub fn watch_queued(
        &self,
        on_queued: impl Fn() + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) {
        let origin = self.inner.origin.to_string();
        let mut settings = self.inner.connect.clone();
        settings.keepalives(true).keepalives_idle(LISTEN_KEEPALIVE);
        tokio::spawn(async move {
            let first_retry = Duration::from_millis(100);
            let mut retry = first_retry;
            loop {
                let started = tokio::time::Instant::now();
                let listened = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    listened = listen(&settings, &origin, &on_queued) => listened,
                };
                if let Err(error) = listened {
                    tracing::warn!(%error, "postgres: listening for queued work failed; retrying");
                }
                // A connection that lasted starts the back-off over.
                if started.elapsed() > LISTEN_RETRY_MAX {
                    retry = first_retry;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(LISTEN_RETRY_MAX);
            }
        });
    }
}

/// Listen on a connection of its own until it fails.
async fn listen(
    settings: &tokio_postgres::Config,
    origin: &str,
    on_queued: &(impl Fn() + Send + Sync),
) -> Result<(), StoreError> {
    let (client, mut connection) = settings.connect(tokio_postgres::NoTls).await?;
    let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection delivers notifications only while it is polled.
    let origin = origin.to_owned();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(notification))) => {
                    if notification.payload() == origin {
                        continue;
                    }
                    if sender.send(()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            }
        }
    });
    let channel: String = client
        .query_one(&format!("SELECT {CHANNEL}"), &[])
        .await?
        .try_get(0)?;
    client
        .batch_execute(&format!("LISTEN {}", quote_identifier(&channel)))
        .await?;
    // Work queued before this connection listened (at start, or while it was down) has
    // sent its notification already: look once now.
    on_queued();
    while notifications.recv().await.is_some() {
        on_queued();
    }
    drop(client);
    match driver.await {
        Ok(Err(error)) => Err(error.into()),
        _ => Err(StoreError::Corrupt(
            "the listening connection closed".into(),
        )),
    }
}

fn node_uuid(id: &NodeId) -> Result<Uuid, StoreError> {
    parse_id(id.as_str()).ok_or_else(|| StoreError::Corrupt(format!("node id {id} is not a UUID")))
}
