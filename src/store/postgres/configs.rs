//! Saved webhook configurations on PostgreSQL. Every write is durable (synchronous commit).

use super::{DURABLE_COMMIT, PgStore, parse_id};
use crate::domain::{ConfigId, PreviousSecret};
use crate::store::{Page, SavedConfig, StoreError};
use std::collections::HashMap;
use tokio_postgres::Row;
use uuid::Uuid;

const CONFIG_COLUMNS: &str = "seq, id, tenant_id, settings, signing_secret, created_at, updated_at, \
     previous_secret, previous_secret_until";

impl PgStore {
    pub async fn insert_config(&self, config: SavedConfig) -> Result<SavedConfig, StoreError> {
        let id = parse_id(&config.id).ok_or_else(|| {
            StoreError::Corrupt(format!("configuration id {:?} is not a UUID", config.id))
        })?;
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
        transaction.execute(&durable, &[]).await?;
        let insert = transaction
            .prepare_cached(
                "INSERT INTO webhook_configs (id, tenant_id, settings, signing_secret, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            )
            .await?;
        let row = transaction
            .query_one(
                &insert,
                &[
                    &id,
                    &config.tenant_id,
                    &config.settings.to_string(),
                    &config.signing_secret,
                    &config.created_at,
                    &config.updated_at,
                ],
            )
            .await?;
        let seq = row.try_get(0)?;
        transaction.commit().await?;
        Ok(SavedConfig { seq, ..config })
    }

    pub async fn update_config(
        &self,
        config: SavedConfig,
    ) -> Result<Option<SavedConfig>, StoreError> {
        let Some(id) = parse_id(&config.id) else {
            return Ok(None);
        };
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
        transaction.execute(&durable, &[]).await?;
        let update = transaction
            .prepare_cached(&format!(
                "UPDATE webhook_configs SET settings = $1, signing_secret = $2, updated_at = $3, \
                 previous_secret = $5, previous_secret_until = $6 \
                 WHERE id = $4 RETURNING {CONFIG_COLUMNS}"
            ))
            .await?;
        let row = transaction
            .query_opt(
                &update,
                &[
                    &config.settings.to_string(),
                    &config.signing_secret,
                    &config.updated_at,
                    &id,
                    &config
                        .previous_secret
                        .as_ref()
                        .map(|previous| &previous.secret),
                    &config
                        .previous_secret
                        .as_ref()
                        .map(|previous| previous.until),
                ],
            )
            .await?;
        let updated = row.as_ref().map(saved_config).transpose()?;
        transaction.commit().await?;
        Ok(updated)
    }

    pub async fn config(&self, config_id: ConfigId) -> Result<Option<SavedConfig>, StoreError> {
        Ok(self.configs_by_id(vec![config_id]).await?.pop())
    }

    /// The configurations with these ids, in the order asked; unknown ids are left out.
    pub async fn configs_by_id(&self, ids: Vec<ConfigId>) -> Result<Vec<SavedConfig>, StoreError> {
        let wanted: Vec<Uuid> = ids.iter().filter_map(parse_id).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let lookup = client
            .prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM webhook_configs WHERE id = ANY($1::uuid[])"
            ))
            .await?;
        let found: HashMap<ConfigId, SavedConfig> = client
            .query(&lookup, &[&wanted])
            .await?
            .iter()
            .map(|row| saved_config(row).map(|config| (config.id.clone(), config)))
            .collect::<Result<_, _>>()?;
        Ok(wanted
            .iter()
            .filter_map(|id| found.get(&ConfigId::from(id.to_string())).cloned())
            .collect())
    }

    pub async fn delete_config(&self, config_id: ConfigId) -> Result<bool, StoreError> {
        let Some(id) = parse_id(&config_id) else {
            return Ok(false);
        };
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let durable = transaction.prepare_cached(DURABLE_COMMIT).await?;
        transaction.execute(&durable, &[]).await?;
        let delete = transaction
            .prepare_cached("DELETE FROM webhook_configs WHERE id = $1")
            .await?;
        let deleted = transaction.execute(&delete, &[&id]).await?;
        transaction.commit().await?;
        Ok(deleted > 0)
    }

    /// Configurations of a tenant (all tenants when `None`), newest first. Two statements
    /// rather than `$1 IS NULL OR tenant_id = $1`, whose one cached plan cannot use the
    /// tenant index.
    pub async fn configs(
        &self,
        tenant_id: Option<String>,
        limit: usize,
        before_seq: Option<i64>,
        with_total: bool,
    ) -> Result<Page<SavedConfig>, StoreError> {
        let client = self.client().await?;
        let before = before_seq.unwrap_or(i64::MAX);
        let fetch = (limit as i64).saturating_add(1);
        let rows = match &tenant_id {
            Some(tenant) => {
                let list = client
                    .prepare_cached(&format!(
                        "SELECT {CONFIG_COLUMNS} FROM webhook_configs \
                         WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                    ))
                    .await?;
                client.query(&list, &[tenant, &before, &fetch]).await?
            }
            None => {
                let list = client
                    .prepare_cached(&format!(
                        "SELECT {CONFIG_COLUMNS} FROM webhook_configs \
                         WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
                    ))
                    .await?;
                client.query(&list, &[&before, &fetch]).await?
            }
        };
        let items = rows
            .iter()
            .map(saved_config)
            .collect::<Result<Vec<_>, _>>()?;
        let total = if with_total {
            let count: i64 = match &tenant_id {
                Some(tenant) => {
                    let count = client
                        .prepare_cached("SELECT count(*) FROM webhook_configs WHERE tenant_id = $1")
                        .await?;
                    client.query_one(&count, &[tenant]).await?.try_get(0)?
                }
                None => {
                    let count = client
                        .prepare_cached("SELECT count(*) FROM webhook_configs")
                        .await?;
                    client.query_one(&count, &[]).await?.try_get(0)?
                }
            };
            Some(u64::try_from(count).unwrap_or(0))
        } else {
            None
        };
        Ok(Page::from_rows(items, limit, |item| item.seq, total))
    }
}

fn saved_config(row: &Row) -> Result<SavedConfig, tokio_postgres::Error> {
    let settings: String = row.try_get(3)?;
    Ok(SavedConfig {
        seq: row.try_get(0)?,
        id: ConfigId::from(row.try_get::<_, Uuid>(1)?.to_string()),
        tenant_id: row.try_get(2)?,
        settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
        signing_secret: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        previous_secret: match (row.try_get::<_, Option<String>>(7)?, row.try_get(8)?) {
            (Some(secret), Some(until)) => Some(PreviousSecret { secret, until }),
            _ => None,
        },
    })
}
