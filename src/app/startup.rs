//! Starting up: opening the store and the locks that make a data folder and a SQLite file
//! one process's, checking operator routes and their plugin configs, the generated API key,
//! and the start-up summary line.

use crate::config::Config;
use crate::domain::DestinationSource;
use crate::egress::EgressGuard;
use crate::ingest::Route;
use crate::plugin::PluginHost;
use crate::routing::Checks;
use crate::store::{PgStore, SqliteStore, Store, StoreUrl};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;

/// Open the configured store. A SQLite file outside the data folder gets its own owner
/// lock: opening it requeues in-flight work, which is only safe with one process per file.
/// PostgreSQL needs none: nodes share it, and expired leases hand work over between them.
pub(super) async fn open_store(config: &Config) -> Result<(Store, Option<std::fs::File>)> {
    let url = StoreUrl::parse(config.store.as_deref(), &config.data_dir)?;
    Ok(match url {
        StoreUrl::Sqlite { path, in_data_dir } => {
            let lock = match in_data_dir {
                true => None,
                false => Some(lock_file(&path.with_extension("lock"), &path)?),
            };
            let store = SqliteStore::open(&path).context("opening the SQLite store")?;
            (Store::Sqlite(store), lock)
        }
        StoreUrl::Postgres(settings) => {
            let store = PgStore::open(&settings)
                .await
                .context("opening the PostgreSQL store")?;
            (Store::Postgres(store), None)
        }
    })
}

pub(super) fn validate_routes(
    config: &Config,
    egress: &EgressGuard,
    plugins: &PluginHost,
) -> Result<Vec<Route>> {
    let plugin_missing = |name: &str| plugins.missing(name);
    let checks = Checks {
        egress,
        plugin_missing: &plugin_missing,
        allow_patterns: true,
    };
    config
        .routes
        .iter()
        .map(|route| {
            let source = DestinationSource::Route {
                name: route.name.clone(),
            };
            let subscription = route
                .webhook
                .validate(&format!("routes.{}", route.name), &checks, source)
                .map_err(|error| anyhow::anyhow!("config: {error}"))?;
            Ok((route.project_id.clone(), subscription))
        })
        .collect()
}

/// A route whose plugin refuses its config would fail every delivery: refuse to start.
pub(super) async fn check_route_plugin_configs(
    config: &Config,
    plugins: &PluginHost,
) -> Result<()> {
    for route in &config.routes {
        if let Some(plugin) = &route.webhook.webhook_transform
            && let Err(refused) = plugins
                .validate_config(plugin, &route.webhook.transform_config_json())
                .await
        {
            anyhow::bail!(
                "config: {} is refused by plugin {plugin}: {}",
                refused.field(&format!("routes.{}.webhook_transform_config", route.name)),
                refused.message
            );
        }
    }
    Ok(())
}

pub(super) fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    lock_file(&data_dir.join("hookgate.lock"), data_dir)
}

/// Hold an exclusive lock on `path` for as long as the returned file lives.
fn lock_file(path: &Path, guarded: &Path) -> Result<std::fs::File> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another hookgate is using {}", guarded.display())
        }
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// One INFO line an operator reads first: what this gateway is, where it keeps things, and
/// what it may do. Secrets never appear: the store without its password, the key's source
/// without the key.
pub(super) fn log_summary(
    config: &Config,
    listen: SocketAddr,
    key_source: &str,
    plugins: &PluginHost,
) {
    let store = match StoreUrl::parse(config.store.as_deref(), &config.data_dir) {
        Ok(url) => url.to_string(),
        Err(_) => "(invalid)".to_owned(),
    };
    let loaded: Vec<String> = plugins
        .list()
        .into_iter()
        .filter(|plugin| !plugin.sha256.is_empty())
        .map(|plugin| match plugin.source {
            crate::plugin::PluginSource::Bundled => plugin.name,
            crate::plugin::PluginSource::File => format!("{} (file)", plugin.name),
        })
        .collect();
    let egress_allow = match config.egress_allow.is_empty() {
        true => "none: public addresses only".to_owned(),
        false => config.egress_allow.join(", "),
    };
    let retry = &config.retry;
    // Text with spaces is recorded as a string (quoted in text logs), so the line splits into
    // its fields unambiguously.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %listen,
        store = store.as_str(),
        data_dir = config.data_dir.display().to_string().as_str(),
        api_key = key_source,
        plugins_dir = config.plugins_dir().display().to_string().as_str(),
        plugins = loaded.join(", ").as_str(),
        egress_allow = egress_allow.as_str(),
        retry = format!(
            "{} attempts, {} ms doubling to {} ms, jitter {}, timeout {} ms",
            retry.max_attempts,
            retry.base_delay_ms,
            retry.max_delay_ms,
            if retry.jitter { "on" } else { "off" },
            retry.request_timeout_ms
        )
        .as_str(),
        "hookgate is serving"
    );
}

/// The key to accept when none is configured, generated (and announced once) on first
/// start: kept in the store when it is shared by a cluster, so every node accepts it, or
/// else in `<data_dir>/api_key`. Returns it and where it is kept.
pub(super) async fn generated_key(store: &Store, data_dir: &Path) -> Result<(String, String)> {
    let candidate = format!(
        "hg_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    if let Some((key, generated)) = store
        .shared_api_key(candidate.clone())
        .await
        .context("reading the cluster's API key")?
    {
        let kept = "in the database, shared by every node".to_owned();
        if generated {
            announce_key(&key, &kept);
        }
        return Ok((key, kept));
    }
    let path = data_dir.join("api_key");
    let kept = format!("in {}", path.display());
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_owned();
        if !key.is_empty() {
            return Ok((key, kept));
        }
    }
    write_private(&path, &candidate).with_context(|| format!("writing {}", path.display()))?;
    announce_key(&candidate, &kept);
    Ok((candidate, kept))
}

/// Printed once, to the operator's terminal, never to the log.
fn announce_key(key: &str, kept: &str) {
    eprintln!("hookgate: generated API key (kept {kept}):\n\n    {key}\n");
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
