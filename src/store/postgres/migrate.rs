//! Schema migrations, embedded in the binary and applied in order at start (or alone by
//! `hookgate migrate`).
//!
//! Applied versions are recorded in `hookgate_schema_migrations`. The whole run is one
//! transaction holding a transaction-level advisory lock, so nodes starting together do not
//! race: the second waits, then finds the migrations applied. A database migrated by a newer
//! hookgate is refused rather than written with an older idea of its schema.
//!
//! Every statement names its tables unqualified, so the search path (settable through the
//! URL's `options`) decides the schema; the migrator creates that schema when it is missing.

use crate::store::StoreError;
use tokio_postgres::Client;

/// One migration: its number, a short name, and its SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    sql: &'static str,
}

/// Every migration this build knows, oldest first, numbered from 1 without gaps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "cluster",
        sql: include_str!("migrations/0002_cluster.sql"),
    },
    Migration {
        version: 3,
        name: "retention",
        sql: include_str!("migrations/0003_retention.sql"),
    },
    Migration {
        version: 4,
        name: "latest_attempt",
        sql: include_str!("migrations/0004_latest_attempt.sql"),
    },
    Migration {
        version: 5,
        name: "exchange",
        sql: include_str!("migrations/0005_exchange.sql"),
    },
    Migration {
        version: 6,
        name: "previous_secret",
        sql: include_str!("migrations/0006_previous_secret.sql"),
    },
    Migration {
        version: 7,
        name: "destination_pauses",
        sql: include_str!("migrations/0007_destination_pauses.sql"),
    },
];

/// Taken with `pg_advisory_xact_lock` for the length of a migration run. Any constant will
/// do as long as nothing else in the database uses it: "hookgate" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x686f_6f6b_6761_7465;

/// What a migration run found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationReport {
    /// The schema version before the run (0 for an empty schema).
    pub from_version: i32,
    /// The migrations this run applied, oldest first.
    pub applied: Vec<(i32, &'static str)>,
}

impl MigrationReport {
    pub fn version(&self) -> i32 {
        self.applied
            .last()
            .map_or(self.from_version, |(version, _)| *version)
    }
}

fn newest_known() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Bring the schema the search path names up to this build's newest version.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, StoreError> {
    let transaction = client.transaction().await?;
    // `IF NOT EXISTS` on an existing table answers with a NOTICE, which the driver logs.
    transaction
        .batch_execute("SET LOCAL client_min_messages TO warning")
        .await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    // Under the lock, so that two nodes do not both try to create it.
    let search_path: String = transaction
        .query_one("SELECT current_setting('search_path')", &[])
        .await?
        .try_get(0)?;
    if let Some(schema) = schema_to_create(&search_path) {
        let exists: bool = transaction
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await?
            .try_get(0)?;
        if !exists {
            tracing::info!(%schema, "postgres: creating the schema");
            transaction
                .batch_execute(&format!("CREATE SCHEMA {}", quote_identifier(&schema)))
                .await?;
        }
    }
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hookgate_schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let from_version: i32 = transaction
        .query_one(
            "SELECT coalesce(max(version), 0) FROM hookgate_schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let known = newest_known();
    if from_version > known {
        // Roll back now rather than on drop, which only queues it: the advisory lock and the
        // schema's locks go at once, even if the caller's runtime stops next.
        transaction.rollback().await?;
        return Err(StoreError::SchemaTooNew {
            database: from_version,
            known,
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|migration| migration.version > from_version)
    {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "postgres: applying a migration"
        );
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "INSERT INTO hookgate_schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await?;
        applied.push((migration.version, migration.name));
    }
    transaction.commit().await?;
    Ok(MigrationReport {
        from_version,
        applied,
    })
}

/// The first entry of a search path, unquoted, when it names a schema the migrator should
/// create if missing: not the per-user entry, `public`, or a system schema.
fn schema_to_create(search_path: &str) -> Option<String> {
    let first = first_entry(search_path)?;
    let reserved =
        first == "$user" || first == "public" || first.starts_with("pg_") || first.is_empty();
    (!reserved).then_some(first)
}

fn first_entry(search_path: &str) -> Option<String> {
    let text = search_path.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        // A quoted identifier: `""` stands for one `"`.
        let mut name = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        // Unquoted identifiers are folded to lower case, as PostgreSQL does.
        let name = text.split(',').next()?.trim();
        Some(name.to_lowercase())
    }
}

pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
    }

    #[test]
    fn the_first_search_path_entry_decides_the_schema() {
        assert_eq!(schema_to_create("hg_test_1"), Some("hg_test_1".into()));
        assert_eq!(schema_to_create("Hg, public"), Some("hg".into()));
        assert_eq!(
            schema_to_create("\"My \"\"Schema\"\"\", public"),
            Some("My \"Schema\"".into())
        );
        assert_eq!(schema_to_create("\"$user\", public"), None);
        assert_eq!(schema_to_create("public"), None);
        assert_eq!(schema_to_create("pg_catalog"), None);
        assert_eq!(schema_to_create(""), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
