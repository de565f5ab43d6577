//! The embedded SQLite store: one file in WAL mode in the data folder.
//!
//! Every write goes to a single writer thread that drains whatever is waiting and applies it
//! in one transaction (group commit): under load one fsync covers hundreds of events and
//! attempt records, while an idle gateway still commits each write at once.
//! Durable writes (accepted events, configuration) run inside their own savepoint, so one
//! failing never undoes its neighbours. The engine's own writes (attempt records, releases)
//! share one savepoint per run of them instead: a savepoint copies every page a
//! write touches into a sub-journal, which per write was a tenth of the writer's time. When
//! one of them fails, its run is undone and every write in it answered with the error; their
//! callers recover (an unrecorded attempt runs again after its lease).
//! Leases are kept in memory, not in the file (`leases`): claims write no lease, but still
//! run on the writer thread, so a claim sees every write before it and none runs beside it.
//! Reads use a small pool of separate connections, which WAL lets run beside the writer.
//! Retention deletes finished work as a run of small engine writes (`retention`), so it never
//! holds the writer for long.

mod activity;
mod claim;
mod configs;
mod destinations;
#[cfg(test)]
pub(crate) mod fixtures;
mod leases;
mod nodes;
mod queue;
mod retention;

use super::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// Writes waiting beyond this many are left for the next transaction, bounding the time any
/// one caller waits behind a commit.
const MAX_WRITES_PER_COMMIT: usize = 1024;
const READ_POOL_SIZE: usize = 4;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    project_id  TEXT,
    timestamp   REAL NOT NULL,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    -- An event's deliveries are inserted together, so their `seq`s are consecutive: this
    -- range finds them without an index on `deliveries.event_id`, one B-tree write less
    -- per delivery. Empty (NULL, 0) for an event routed nowhere.
    first_delivery_seq INTEGER,
    delivery_count     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    event_id     TEXT NOT NULL REFERENCES events(id),
    dest_key     TEXT NOT NULL,
    webhook_url  TEXT NOT NULL,
    destination  TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    budget_start INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    lease_token  TEXT,  -- unused: leases are held in memory; kept for files that have it
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- The latest attempt (number `attempts`) lives in the row: the common delivery, one
    -- attempt that succeeds, is finished by one update. Earlier attempts move to `attempts`.
    latest_started_at  INTEGER,
    latest_duration_ms INTEGER,
    latest_status      INTEGER,
    latest_error       TEXT,
    latest_body        TEXT,
    -- The request as sent and the response's headers, as JSON (`domain::Exchange`).
    latest_exchange    TEXT
);
-- Covers the claim scan: due time and destination, without touching the table.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(due_at, dest_key)
    WHERE status IN ('queued', 'in_flight');
-- Finished deliveries by status, for the operations list. Queued and in-flight rows stay out:
-- their status changes on the hot path, and they are the newest rows anyway, which a scan
-- from the newest end finds first.
DROP INDEX IF EXISTS deliveries_status;
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries(status, seq)
    WHERE status IN ('succeeded', 'failed', 'skipped');
-- Retention walks `deliveries_finished` and the events' rowids (see retention.rs); the
-- indexes of its own that an earlier build made cost a B-tree write per delivery each.
DROP INDEX IF EXISTS deliveries_retention;
DROP INDEX IF EXISTS events_created;
-- Every attempt but a delivery's latest (see `deliveries`). A file written before the latest
-- attempt moved into the row holds every attempt here, and its rows' `latest_*` are empty.
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id     TEXT NOT NULL,
    number          INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    response_status INTEGER,
    error           TEXT,
    response_body   TEXT,
    exchange        TEXT,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_configs (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL,
    settings       TEXT NOT NULL,
    signing_secret TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    -- The secret a rotation replaced, and when it stops signing (epoch milliseconds).
    previous_secret       TEXT,
    previous_secret_until INTEGER
);
CREATE INDEX IF NOT EXISTS webhook_configs_tenant ON webhook_configs(tenant_id, seq);
CREATE TABLE IF NOT EXISTS nodes (
    id           TEXT PRIMARY KEY,
    listen       TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    in_flight    INTEGER NOT NULL,
    destination_share INTEGER NOT NULL,
    plugins      TEXT NOT NULL
);
-- Destinations an operator paused, until resumed: kept so a restart keeps them paused.
CREATE TABLE IF NOT EXISTS destination_pauses (
    destination TEXT PRIMARY KEY,
    paused_at   INTEGER NOT NULL
);
-- Always empty: /readyz writes and deletes a row here to learn whether writing works again
-- after a write failed (a full disk, an I/O error).
CREATE TABLE IF NOT EXISTS write_probe (data BLOB NOT NULL);
"#;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;

/// A job's answer, and whether it failed outside a savepoint of its own (leaving changes
/// that only rolling back its run of engine writes undoes).
struct Ran {
    reply: Reply,
    failed_unprotected: bool,
}

/// A write for the writer thread. `durable` writes (accepted events, configuration changes,
/// redeliveries) are fsynced before they are acknowledged. Claims (which run here for their
/// ordering, though they write no lease), attempt results and releases are not: they survive a process crash either way (the WAL is in the OS page
/// cache), and losing them to power loss only means a delivery is sent again, which
/// at-least-once delivery allows. The next durable commit syncs them too.
struct WriteJob {
    durable: bool,
    run: Box<dyn FnOnce(&Connection) -> Ran + Send>,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// Who holds which delivery: in memory only (see `leases`).
    leases: Arc<leases::Leases>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`. Deliveries left in flight by a
    /// previous process are queued again at once: this file has one owner at a time.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let writer = open_connection(path, false)?;
        writer.execute_batch(SCHEMA)?;
        writer.execute_batch("BEGIN IMMEDIATE")?;
        let migrated = add_latest_attempt_columns(&writer)
            .and_then(|()| add_delivery_ranges(&writer))
            .and_then(|()| add_exchange_columns(&writer))
            .and_then(|()| add_previous_secret_columns(&writer));
        match migrated {
            // The migrations apply together or not at all.
            Ok(()) => writer.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = writer.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
        queue::requeue_orphans(&writer)?;
        // Likewise any node listed is a previous run of this one: it must not take a share
        // of the destination caps while its heartbeat ages out.
        writer.execute("DELETE FROM nodes", [])?;
        // A WAL that grew under a burst is cut back to this size once it starts over.
        writer.execute_batch("PRAGMA journal_size_limit = 67108864")?;
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("hookgate-sqlite-writer".into())
            .spawn(move || run_writer(writer, receiver))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writes: Mutex::new(Some(sender)),
                leases: Arc::default(),
                readers: Mutex::new(Vec::new()),
                path: path.to_owned(),
            }),
        })
    }

    /// Stop accepting writes; the writer thread finishes what is queued and exits.
    pub fn close(&self) {
        if let Ok(mut writes) = self.inner.writes.lock() {
            writes.take();
        }
    }

    /// Run `write` on the writer thread inside the next group commit; resolves once
    /// committed and fsynced.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(true, write).await
    }

    /// Like `write`, but acknowledged once committed, without waiting for an fsync, and run
    /// without a savepoint of its own (see the module comment).
    async fn write_relaxed<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(false, write).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        durable: bool,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply_to, reply) = oneshot::channel();
        let run = Box::new(move |conn: &Connection| -> Ran {
            let result = if durable {
                in_savepoint(conn, write)
            } else {
                write(conn)
            };
            let failed_unprotected = !durable && result.is_err();
            Ran {
                reply: Box::new(move |commit_error: Option<String>| {
                    let result = match commit_error {
                        Some(message) => {
                            Err(StoreError::Corrupt(format!("commit failed: {message}")))
                        }
                        None => result,
                    };
                    let _ = reply_to.send(result);
                }),
                failed_unprotected,
            }
        });
        let job = WriteJob { durable, run };
        {
            let writes = self.inner.writes.lock().map_err(|_| StoreError::Closed)?;
            let sender = writes.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job).map_err(|_| StoreError::Closed)?;
        }
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `read` on a pooled read connection on the blocking thread pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path, true)?,
            };
            let result = read(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < READ_POOL_SIZE
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// A durable write big enough to need new pages in the WAL, so it fails where ingest
    /// would: on a full disk, an I/O error or a read-only file.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO write_probe (data) VALUES (zeroblob(?1))",
                [WRITE_PROBE_BYTES],
            )?;
            conn.execute("DELETE FROM write_probe", [])?;
            Ok(())
        })
        .await
    }
}

const WRITE_PROBE_BYTES: i64 = 64 * 1024;

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])?)
}

/// A file made before events knew their deliveries' range gets it, worked out through the
/// index on `deliveries.event_id` it has, which then goes. The index is the sign: a file
/// opened by an older hookgate again gets it back, with events it accepted meanwhile and
/// their ranges unset, and attempts it recorded only in `attempts` (so a row's `latest_*`
/// attempt, when that table has its number too, is the stale one and is cleared). A range
/// spans from an event's first delivery to its last, so that deliveries retention deleted
/// from between them leave no gap in it.
fn add_delivery_ranges(conn: &Connection) -> Result<(), StoreError> {
    let has_index = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'deliveries_event'")?
        .exists([])?;
    if !has_column(conn, "events", "first_delivery_seq")? {
        conn.execute_batch(
            "ALTER TABLE events ADD COLUMN first_delivery_seq INTEGER; \
             ALTER TABLE events ADD COLUMN delivery_count INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    if has_index {
        conn.execute_batch(
            "UPDATE events SET \
                 first_delivery_seq = (SELECT min(seq) FROM deliveries WHERE event_id = events.id), \
                 delivery_count = coalesce((SELECT max(seq) - min(seq) + 1 FROM deliveries \
                     WHERE event_id = events.id), 0) \
             WHERE first_delivery_seq IS NULL; \
             UPDATE deliveries SET latest_started_at = NULL, latest_duration_ms = NULL, \
                 latest_status = NULL, latest_error = NULL, latest_body = NULL \
             WHERE latest_started_at IS NOT NULL AND EXISTS (SELECT 1 FROM attempts \
                 WHERE delivery_id = deliveries.id AND number = deliveries.attempts); \
             DROP INDEX deliveries_event;",
        )?;
    }
    Ok(())
}

/// A file made before the latest attempt moved into the delivery row gets its columns; its
/// attempts stay where they are, and `delivery` reads both places.
fn add_latest_attempt_columns(conn: &Connection) -> Result<(), StoreError> {
    if !has_column(conn, "deliveries", "latest_started_at")? {
        conn.execute_batch(
            "ALTER TABLE deliveries ADD COLUMN latest_started_at INTEGER; \
             ALTER TABLE deliveries ADD COLUMN latest_duration_ms INTEGER; \
             ALTER TABLE deliveries ADD COLUMN latest_status INTEGER; \
             ALTER TABLE deliveries ADD COLUMN latest_error TEXT; \
             ALTER TABLE deliveries ADD COLUMN latest_body TEXT;",
        )?;
    }
    Ok(())
}

/// Files from before attempts recorded their request get the columns that hold it.
fn add_exchange_columns(conn: &Connection) -> Result<(), StoreError> {
    if !has_column(conn, "deliveries", "latest_exchange")? {
        conn.execute_batch("ALTER TABLE deliveries ADD COLUMN latest_exchange TEXT;")?;
    }
    if !has_column(conn, "attempts", "exchange")? {
        conn.execute_batch("ALTER TABLE attempts ADD COLUMN exchange TEXT;")?;
    }
    Ok(())
}

/// Files from before secret rotation get the columns of a replaced secret.
fn add_previous_secret_columns(conn: &Connection) -> Result<(), StoreError> {
    if !has_column(conn, "webhook_configs", "previous_secret")? {
        conn.execute_batch(
            "ALTER TABLE webhook_configs ADD COLUMN previous_secret TEXT; \
             ALTER TABLE webhook_configs ADD COLUMN previous_secret_until INTEGER;",
        )?;
    }
    Ok(())
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Without the planner stability guarantee, SQLite re-prepares a cached statement whenever
    // a bound value it planned with changes (a LIMIT, a due time): the claim query was
    // re-parsed on every call.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    if !read_only {
        // FULL: a 202 promises the event survives power loss, not just a process crash.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
             PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
        )?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Run a statement from the connection's cache: the writer issues these few for every
/// group, and parsing them each time showed in profiles.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn in_savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    run_cached(conn, "SAVEPOINT write_job")?;
    match write(conn) {
        Ok(value) => {
            run_cached(conn, "RELEASE write_job")?;
            Ok(value)
        }
        Err(error) => {
            run_cached(conn, "ROLLBACK TO write_job")?;
            run_cached(conn, "RELEASE write_job")?;
            Err(error)
        }
    }
}

/// Run one group's jobs inside the open transaction. Consecutive engine writes share one
/// savepoint: when one fails, that run is undone and each of its writes marked rolled back,
/// while durable writes, each in its own savepoint, stand. Returns every job's answer with
/// that mark, and whether SQLite ended the transaction itself (an I/O error, a full disk):
/// then the rest are not run, so they cannot commit one by one outside it.
fn run_jobs(conn: &Connection, batch: Vec<WriteJob>) -> (Vec<(Ran, bool)>, bool) {
    let mut ran: Vec<(Ran, bool)> = Vec::with_capacity(batch.len());
    let mut relaxed_run_from: Option<usize> = None;
    for job in batch {
        if conn.is_autocommit() {
            // Dropping the job drops its reply channel: its caller sees the store fail.
            return (ran, true);
        }
        if job.durable {
            if relaxed_run_from.take().is_some() {
                let _ = run_cached(conn, "RELEASE relaxed_run");
            }
        } else if relaxed_run_from.is_none() {
            if let Err(error) = run_cached(conn, "SAVEPOINT relaxed_run") {
                tracing::error!(%error, "sqlite: cannot open a savepoint");
                return (ran, true);
            }
            relaxed_run_from = Some(ran.len());
        }
        let result = (job.run)(conn);
        let failed = result.failed_unprotected;
        ran.push((result, false));
        if failed && let Some(from) = relaxed_run_from.take() {
            tracing::error!("sqlite: an engine write failed; undoing the writes run beside it");
            let _ = conn.execute_batch("ROLLBACK TO relaxed_run; RELEASE relaxed_run");
            for (_, rolled_back) in &mut ran[from..] {
                *rolled_back = true;
            }
        }
    }
    if relaxed_run_from.is_some() {
        let _ = run_cached(conn, "RELEASE relaxed_run");
    }
    let aborted = conn.is_autocommit();
    (ran, aborted)
}

fn run_writer(conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    let mut synchronous_full = true;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|job| job.durable);
        if durable != synchronous_full {
            let pragma = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            // Not from the statement cache: SQLite applies this pragma when it is prepared.
            match conn.execute_batch(pragma) {
                Ok(()) => synchronous_full = durable,
                Err(error) => tracing::error!(%error, "sqlite: cannot set synchronous"),
            }
        }
        if let Err(error) = run_cached(&conn, "BEGIN IMMEDIATE") {
            let message = error.to_string();
            tracing::error!(%message, "sqlite: cannot begin a transaction");
            for job in batch {
                // Each job still needs an answer; run none of them.
                drop(job);
            }
            continue;
        }
        let jobs = batch.len();
        let started = std::time::Instant::now();
        let (ran, aborted) = run_jobs(&conn, batch);
        let executed = started.elapsed();
        let commit_error = if aborted {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::error!("sqlite: the transaction ended early; group rolled back");
            Some("the transaction was rolled back by SQLite".to_owned())
        } else {
            run_cached(&conn, "COMMIT").err().map(|error| {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(%error, "sqlite: group commit failed");
                error.to_string()
            })
        };
        tracing::trace!(jobs, durable, ?executed, total = ?started.elapsed(), "sqlite: group commit");
        for (ran, rolled_back) in ran {
            let error = commit_error.clone().or_else(|| {
                rolled_back.then(|| "rolled back with a failed write beside it".to_owned())
            });
            (ran.reply)(error);
        }
    }
    tracing::debug!("sqlite writer stopped");
}
