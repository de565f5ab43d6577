//! The PostgreSQL store: several gateways on one database share the delivery queue.
//!
//! The same verbs and guarantees as the SQLite store, rendered for a server that many nodes
//! write at once:
//! - accepted events and attempt results go through group-commit writer tasks (`group`,
//!   `enqueue`, `finish`): concurrent callers share one transaction, and each is answered
//!   after its COMMIT (durable for events, relaxed for attempts);
//! - claims take due rows with `FOR UPDATE SKIP LOCKED`, so two nodes never claim one
//!   delivery; a lease token guards every later write, and a lease that ran out (its node
//!   died or stalled) makes the delivery claimable again by any node (`queue`);
//! - retention deletes finished work in batches that skip locked rows (`retention`);
//! - there is no start-up requeue of in-flight rows, as SQLite does: other nodes may own them.
//!
//! Driver: tokio-postgres through a deadpool pool, with statements from each connection's
//! cache. No TLS yet: `sslmode=require` is refused at start rather than quietly sent in plain
//! text. The schema comes from embedded migrations (`migrate`) applied at start.
//!
//! Times are each node's own clock in epoch milliseconds, as in SQLite: nodes sharing a
//! database read each other's lease ends and due times, so their clocks must be kept in step
//! (NTP); a skew shortens or lengthens leases by as much.

mod activity;
mod claim;
mod cluster;
mod configs;
mod destinations;
mod enqueue;
mod finish;
mod group;
mod migrate;
mod queue;
mod retention;
mod settings;

pub use migrate::{MIGRATIONS, Migration, MigrationReport};
pub use settings::{DEFAULT_POOL_SIZE, PgSettings};

use super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use group::Group;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How long a caller waits for a free connection before the store reports itself unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Connecting (TCP and start-up) to the database, per new connection.
const POOL_CREATE: Duration = Duration::from_secs(10);
/// Checking a pooled connection before reuse.
const POOL_RECYCLE: Duration = Duration::from_secs(5);

/// Raises the transaction's `synchronous_commit` to `on` when the server or session turned
/// it off, so COMMIT returns only once the WAL is flushed: an accepted event must survive a
/// crash of the database server. A stronger setting (`remote_apply`, …) is left as it is.
const DURABLE_COMMIT: &str = "SELECT set_config('synchronous_commit', 'on', true) \
     WHERE current_setting('synchronous_commit') = 'off'";

/// The engine's own writes (claims, attempt records, releases, dead-letters) commit without
/// waiting for the WAL flush. Losing one to a crash of the database server only means a
/// delivery is claimed and sent again once its lease ends, which at-least-once delivery
/// allows; waiting for a flush on each would cost a disk sync per attempt.
const RELAXED_COMMIT: &str = "SET LOCAL synchronous_commit TO off";

#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Where to connect, for the connection that listens for queued work.
    connect: tokio_postgres::Config,
    /// Names this store in the wake-ups it sends, so it ignores its own.
    origin: Arc<str>,
    /// Accepted events, written by group commit.
    enqueues: Group<enqueue::Enqueue>,
    /// Attempt results, written by group commit.
    finishes: Group<finish::Finish>,
}

impl PgStore {
    /// Connect, apply any pending migrations, and start the group-commit writers.
    pub async fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let origin: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let pool = build_pool(settings, settings.pool_size)?;
        let report = {
            let mut client = pool.get().await?;
            migrate::migrate(&mut client).await?
        };
        tracing::info!(
            version = report.version(),
            applied = report.applied.len(),
            pool_size = settings.pool_size,
            "postgres store open"
        );
        let running = Arc::new(AtomicUsize::new(enqueue::WRITERS + finish::WRITERS));
        Ok(PgStore {
            inner: Arc::new(Inner {
                enqueues: Group::start(&pool, &origin, enqueue::WRITERS, &running),
                finishes: Group::start(&pool, &origin, finish::WRITERS, &running),
                pool,
                connect: settings.config.clone(),
                origin,
            }),
        })
    }

    /// Stop accepting writes. The writers commit what is queued, then close the pool.
    pub fn close(&self) {
        self.inner.enqueues.close();
        self.inner.finishes.close();
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached("SELECT 1").await?;
        client.query_one(&statement, &[]).await?;
        Ok(())
    }

    /// A transaction that must be given an id and commit, so it fails where ingest would:
    /// a server that refuses writes (read-only, a standby, a full disk) refuses it too.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute("SELECT txid_current()").await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.inner.pool.get().await?)
    }
}

/// Apply pending migrations and return, without starting a store (`hookgate migrate`).
pub async fn migrate(settings: &PgSettings) -> Result<MigrationReport, StoreError> {
    let pool = build_pool(settings, 1)?;
    let report = async {
        let mut client = pool.get().await?;
        migrate::migrate(&mut client).await
    }
    .await;
    pool.close();
    report
}

/// `url` with a new schema of its own, `{prefix}_<random>`, first on its search path (the
/// store creates it at open): a scratch store, e.g. for one benchmark scenario.
pub fn with_fresh_schema(url: &str, prefix: &str) -> Result<String, StoreError> {
    if url.contains("options=") {
        return Err(StoreError::InvalidSetting(
            "the URL sets options already; give one without".to_owned(),
        ));
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// Drop the schema first on `url`'s search path, with everything in it.
pub async fn drop_schema(url: &str) -> Result<(), StoreError> {
    let settings = PgSettings::parse(url)?;
    let (client, connection) = settings.config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    let schema: String = client
        .query_one("SELECT current_schema()", &[])
        .await?
        .try_get(0)?;
    if schema == "public" {
        return Err(StoreError::InvalidSetting(
            "refusing to drop the public schema".to_owned(),
        ));
    }
    client
        .batch_execute(&format!(
            "DROP SCHEMA {} CASCADE",
            migrate::quote_identifier(&schema)
        ))
        .await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

fn build_pool(settings: &PgSettings, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        settings.config.clone(),
        NoTls,
        ManagerConfig {
            // A broken connection shows itself on its next query, which the caller sees as
            // a store error and retries; a round trip on every check-out would cost more.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_CREATE))
        .recycle_timeout(Some(POOL_RECYCLE))
        .build()
        .map_err(|error| StoreError::InvalidSetting(format!("connection pool: {error}")))
}

/// Ids are UUIDs in PostgreSQL and canonical (lower-case, hyphenated) strings at the
/// interface, as SQLite stores them. Any other spelling names nothing stored, as in SQLite.
fn parse_id(text: impl AsRef<str>) -> Option<uuid::Uuid> {
    let text = text.as_ref();
    uuid::Uuid::parse_str(text)
        .ok()
        .filter(|id| id.hyphenated().to_string() == text)
}

/// A stored count (attempts, numbers): non-negative by the schema's checks.
fn stored_count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A count to store; nothing real comes near `i32::MAX`.
fn count_to_store(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
