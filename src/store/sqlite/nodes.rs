//! The node list on SQLite. One process owns the file, so the list holds just that process:
//! opening the store forgets whatever earlier runs left in it.

use super::SqliteStore;
use crate::domain::{NodeId, now_millis};
use crate::store::{LiveNodes, NodeRecord, StoreError};
use rusqlite::params;

/// Nodes silent for this long are dropped from the list.
pub(crate) const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;

impl SqliteStore {
    pub async fn heartbeat_node(
        &self,
        node: NodeRecord,
        alive_within_ms: i64,
    ) -> Result<LiveNodes, StoreError> {
        let plugins = serde_json::to_string(&node.plugins)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.write_relaxed(move |conn| {
            let now = now_millis();
            conn.prepare_cached(
                "INSERT INTO nodes (id, listen, version, started_at, heartbeat_at, in_flight, \
                 destination_share, plugins) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
                 in_flight = excluded.in_flight, destination_share = excluded.destination_share, \
                 plugins = excluded.plugins",
            )?
            .execute(params![
                node.id.as_str(),
                node.listen,
                node.version,
                node.started_at,
                now,
                node.in_flight,
                node.destination_share,
                plugins
            ])?;
            conn.prepare_cached("DELETE FROM nodes WHERE heartbeat_at < ?1")?
                .execute([now - FORGET_AFTER_MS])?;
            let (others, before): (i64, i64) = conn
                .prepare_cached(
                    "SELECT count(*), count(*) FILTER (WHERE started_at < ?2 \
                     OR (started_at = ?2 AND id < ?3)) \
                     FROM nodes WHERE heartbeat_at >= ?1 AND id <> ?3",
                )?
                .query_row(
                    params![now - alive_within_ms, node.started_at, node.id.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
            Ok(LiveNodes {
                count: usize::try_from(others).unwrap_or(0) + 1,
                rank: usize::try_from(before).unwrap_or(0),
            })
        })
        .await
    }

    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), StoreError> {
        self.write_relaxed(move |conn| {
            conn.execute("DELETE FROM nodes WHERE id = ?1", [node_id.as_str()])?;
            Ok(())
        })
        .await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, listen, version, started_at, heartbeat_at, in_flight, \
                 destination_share, plugins FROM nodes ORDER BY started_at, id",
            )?;
            let rows = statement
                .query_map([], |row| {
                    let plugins: String = row.get(7)?;
                    Ok(NodeRecord {
                        id: NodeId::from(row.get::<_, String>(0)?),
                        listen: row.get(1)?,
                        version: row.get(2)?,
                        started_at: row.get(3)?,
                        heartbeat_at: row.get(4)?,
                        in_flight: row.get(5)?,
                        destination_share: row.get(6)?,
                        plugins: serde_json::from_str(&plugins).unwrap_or_default(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
