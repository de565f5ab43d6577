//! Saved webhook configurations on SQLite.

use super::SqliteStore;
use crate::domain::{ConfigId, PreviousSecret};
use crate::store::{Page, SavedConfig, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

const CONFIG_COLUMNS: &str = "seq, id, tenant_id, settings, signing_secret, created_at, updated_at, \
     previous_secret, previous_secret_until";

impl SqliteStore {
    pub async fn insert_config(&self, config: SavedConfig) -> Result<SavedConfig, StoreError> {
        self.write(move |conn| {
            let settings = config.settings.to_string();
            conn.execute(
                "INSERT INTO webhook_configs (id, tenant_id, settings, signing_secret, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    config.id.as_str(),
                    config.tenant_id,
                    settings,
                    config.signing_secret,
                    config.created_at,
                    config.updated_at
                ],
            )?;
            Ok(SavedConfig {
                seq: conn.last_insert_rowid(),
                ..config
            })
        })
        .await
    }

    pub async fn update_config(
        &self,
        config: SavedConfig,
    ) -> Result<Option<SavedConfig>, StoreError> {
        self.write(move |conn| {
            let settings = config.settings.to_string();
            let updated = conn.execute(
                "UPDATE webhook_configs SET settings = ?1, signing_secret = ?2, updated_at = ?3, \
                 previous_secret = ?5, previous_secret_until = ?6 WHERE id = ?4",
                params![
                    settings,
                    config.signing_secret,
                    config.updated_at,
                    config.id.as_str(),
                    config
                        .previous_secret
                        .as_ref()
                        .map(|previous| &previous.secret),
                    config
                        .previous_secret
                        .as_ref()
                        .map(|previous| previous.until),
                ],
            )?;
            if updated == 0 {
                return Ok(None);
            }
            config_by_id(conn, config.id.as_str())
        })
        .await
    }

    pub async fn config(&self, config_id: ConfigId) -> Result<Option<SavedConfig>, StoreError> {
        self.read(move |conn| config_by_id(conn, config_id.as_str()))
            .await
    }

    pub async fn configs_by_id(&self, ids: Vec<ConfigId>) -> Result<Vec<SavedConfig>, StoreError> {
        self.read(move |conn| {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(config) = config_by_id(conn, id.as_str())? {
                    found.push(config);
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn delete_config(&self, config_id: ConfigId) -> Result<bool, StoreError> {
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM webhook_configs WHERE id = ?1",
                [config_id.as_str()],
            )? > 0)
        })
        .await
    }

    pub async fn configs(
        &self,
        tenant_id: Option<String>,
        limit: usize,
        before_seq: Option<i64>,
        with_total: bool,
    ) -> Result<Page<SavedConfig>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM webhook_configs \
                 WHERE (?1 IS NULL OR tenant_id = ?1) AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let items = statement
                .query_map(
                    params![
                        tenant_id,
                        before_seq.unwrap_or(i64::MAX),
                        (limit as i64).saturating_add(1)
                    ],
                    saved_config,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let total = if with_total {
                let count: i64 = conn.query_row(
                    "SELECT count(*) FROM webhook_configs WHERE (?1 IS NULL OR tenant_id = ?1)",
                    [&tenant_id],
                    |row| row.get(0),
                )?;
                Some(count as u64)
            } else {
                None
            };
            Ok(Page::from_rows(items, limit, |item| item.seq, total))
        })
        .await
    }
}

fn config_by_id(conn: &Connection, config_id: &str) -> Result<Option<SavedConfig>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {CONFIG_COLUMNS} FROM webhook_configs WHERE id = ?1"),
            [config_id],
            saved_config,
        )
        .optional()?)
}

fn saved_config(row: &Row<'_>) -> rusqlite::Result<SavedConfig> {
    let settings: String = row.get(3)?;
    Ok(SavedConfig {
        seq: row.get(0)?,
        id: ConfigId::from(row.get::<_, String>(1)?),
        tenant_id: row.get(2)?,
        settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
        signing_secret: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        previous_secret: match (row.get::<_, Option<String>>(7)?, row.get(8)?) {
            (Some(secret), Some(until)) => Some(PreviousSecret { secret, until }),
            _ => None,
        },
    })
}
