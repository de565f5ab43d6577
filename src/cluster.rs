//! This process as a node of the gateway: it reports itself in the store's node list (listen
//! address, version, attempts running, its share of the caps, the plugins it serves) every
//! heartbeat, and from the live nodes and its rank among them takes its share of each
//! destination's cap; the shares add up to the cap. With SQLite it is the only live node;
//! with PostgreSQL every process on the same database is listed and counted. Each heartbeat
//! also takes up the destinations operators have paused or resumed through other nodes.

use crate::deliver::Engine;
use crate::domain::{NodeId, UnixMillis, now_millis};
use crate::plugin::PluginHost;
use crate::store::{LiveNodes, NodePlugin, NodeRecord, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A node not heard from for this many heartbeats no longer counts as alive.
const ALIVE_HEARTBEATS: u64 = 3;

/// This process's place in the node list.
pub struct Node {
    pub id: NodeId,
    listen: String,
    started_at: UnixMillis,
    heartbeat: Duration,
    store: Store,
    engine: Arc<Engine>,
    plugins: PluginHost,
}

impl Node {
    pub fn new(
        listen: String,
        heartbeat: Duration,
        store: Store,
        engine: Arc<Engine>,
        plugins: PluginHost,
    ) -> Self {
        Node {
            id: NodeId::generate(),
            listen,
            started_at: now_millis(),
            heartbeat,
            store,
            engine,
            plugins,
        }
    }

    /// How recent a heartbeat must be for its node to count as alive.
    pub fn alive_within_ms(heartbeat: Duration) -> i64 {
        i64::try_from(heartbeat.as_millis()).unwrap_or(i64::MAX / 4) * ALIVE_HEARTBEATS as i64
    }

    /// Report once and take this node's share of the destination caps.
    pub async fn beat(&self) -> Result<LiveNodes, StoreError> {
        let record = NodeRecord {
            id: self.id.clone(),
            listen: self.listen.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            heartbeat_at: now_millis(),
            in_flight: u32::try_from(self.engine.running()).unwrap_or(u32::MAX),
            destination_share: u32::try_from(self.engine.destination_share()).unwrap_or(u32::MAX),
            plugins: self
                .plugins
                .list()
                .into_iter()
                .map(|plugin| NodePlugin {
                    name: plugin.name,
                    sha256: plugin.sha256,
                })
                .collect(),
        };
        let alive = self
            .store
            .heartbeat_node(record, Self::alive_within_ms(self.heartbeat))
            .await?;
        self.engine.set_live_nodes(alive);
        self.engine.sync_operator_pauses().await?;
        Ok(alive)
    }

    /// Heartbeat until `shutdown`, then leave the list. A failed heartbeat keeps the last
    /// share: the store is unreachable for everyone then, and nothing is claimed anyway.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.beat().await {
                tracing::warn!(%error, node_id = %self.id, "node heartbeat failed");
            }
        }
        if let Err(error) = self.store.remove_node(&self.id).await {
            tracing::warn!(%error, "could not take this node off the node list");
        }
    }
}
