//! Wiring: builds the store, the plugin host, the HTTP client and the API from a `Config`,
//! binds the listener, and runs the API, the delivery engine and the background tasks
//! (plugin folder watch, node heartbeat, retention, the queue cap's recount) until shutdown.

use crate::api::{self, ApiState};
use crate::cluster::Node;
use crate::config::Config;
use crate::deliver::feed::AttemptFeed;
use crate::deliver::{DeliveryContext, Engine, Handover, client::HttpClient};
use crate::domain::DestinationSource;
use crate::egress::EgressGuard;
use crate::ingest::{Ingest, QueueCap, Route};
use crate::metrics::Metrics;
use crate::plugin::{PluginCache, PluginHost};
use crate::replay::Replays;
use crate::routing::Checks;
use crate::store::{PgStore, SqliteStore, Store, StoreUrl};
use anyhow::{Context, Result, bail};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long open HTTP connections may take to finish once shutdown begins.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct App {
    listener: TcpListener,
    state: Arc<ApiState>,
    engine: Arc<Engine>,
    node: Node,
    /// Held for the app's life: one process per data folder and per store file.
    _locks: (std::fs::File, Option<std::fs::File>),
    /// The API key clients must present (the first configured one, or the generated one).
    pub api_key: String,
    /// Cancelled when shutdown begins: bulk replays stop between pages.
    replays_stop: CancellationToken,
}

impl App {
    /// Build everything and bind `config.listen` (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<App> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
        let data_lock = lock_data_dir(&config.data_dir)?;
        // So an operator's first `cp my_plugin.wasm data/plugins/` has somewhere to go.
        if let Err(error) = std::fs::create_dir_all(config.plugins_dir()) {
            tracing::warn!(folder = %config.plugins_dir().display(), %error, "cannot create the plugins folder");
        }
        let egress = EgressGuard::new(&config.egress_allow).map_err(anyhow::Error::msg)?;
        let (store, store_lock) = open_store(&config).await?;
        let (api_keys, key_source) = match config.api_keys.is_empty() {
            false => (
                config.api_keys.clone(),
                match config.api_keys_from_env {
                    true => "HOOKGATE_API_KEY".to_owned(),
                    false => "the config file".to_owned(),
                },
            ),
            true => {
                let (key, kept) = generated_key(&store, &config.data_dir).await?;
                (vec![key], format!("generated, kept {kept}"))
            }
        };
        let cache = match &config.plugins.cache_dir {
            Some(dir) => PluginCache {
                dir: dir.clone(),
                owned: false,
            },
            None => PluginCache {
                dir: config.data_dir.join("plugin-cache"),
                owned: true,
            },
        };
        let plugins = PluginHost::start(config.plugins_dir(), Some(cache), &config.plugins)
            .await
            .context("starting the plugin host")?;
        let routes = validate_routes(&config, &egress, &plugins)?;
        check_route_plugin_configs(&config, &plugins).await?;
        let metrics = Arc::new(Metrics::new());
        let client = HttpClient::new(egress.clone(), config.delivery.response_body_bytes)
            .context("building the HTTP client")?;
        let config = Arc::new(config);
        let feed = AttemptFeed::default();
        let engine = Engine::new(Arc::new(DeliveryContext {
            store: store.clone(),
            client,
            plugins: plugins.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            feed: feed.clone(),
        }));
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let node = Node::new(
            listener.local_addr()?.to_string(),
            Duration::from_millis(config.delivery.node_heartbeat_ms),
            store.clone(),
            engine.clone(),
            plugins.clone(),
        );
        // Known before the first claim: this node's share of every destination's cap.
        node.beat()
            .await
            .context("registering this node in the store")?;
        let queue_cap = Arc::new(QueueCap::new(
            config.limits.max_queued,
            matches!(store, Store::Postgres(_)),
        ));
        if queue_cap.enabled() {
            queue_cap
                .count(&store)
                .await
                .context("counting the delivery queue")?;
        }
        let ingest = Ingest {
            store: store.clone(),
            engine: engine.clone(),
            plugins: plugins.clone(),
            egress: egress.clone(),
            metrics: metrics.clone(),
            routes: routes.into(),
            limits: config.limits.clone(),
            queue_cap: queue_cap.clone(),
            write_failing: Default::default(),
        };
        log_summary(&config, listener.local_addr()?, &key_source, &plugins);
        let store_for_replays = store.clone();
        let search_scan_rows = config.limits.search_scan_rows;
        let replay_queue_ceiling = config.limits.replay_queue_ceiling;
        // Replays stop when the app's shutdown begins (see `run`).
        let replays_stop = CancellationToken::new();
        let state = Arc::new(ApiState {
            config,
            store,
            plugins,
            egress,
            metrics,
            ingest,
            node_id: node.id.clone(),
            api_keys: api_keys.clone(),
            feed,
            replays: Replays::new(
                store_for_replays,
                engine.clone(),
                search_scan_rows,
                replay_queue_ceiling,
                replays_stop.clone(),
            ),
        });
        Ok(App {
            listener,
            state,
            engine,
            node,
            _locks: (data_lock, store_lock),
            api_key: api_keys[0].clone(),
            replays_stop,
        })
    }

    pub fn plugins(&self) -> &PluginHost {
        &self.state.plugins
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serve until `shutdown` fires, then drain: stop accepting, let in-flight deliveries
    /// finish (or hand their leases back), and close the store.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let state = self.state.clone();
        let replays_stop = self.replays_stop.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            replays_stop.cancel();
        });
        state.plugins.watch(
            Duration::from_millis(state.config.plugins.reload_interval_ms),
            shutdown.clone(),
        );
        // The engine stops after the HTTP server: a request still being served may hand
        // deliveries over, and they must start before the engine drains.
        let engine_shutdown = CancellationToken::new();
        // Work another node queued (or handed back) wakes this one's dispatcher at once.
        let woken = self.engine.clone();
        state.store.watch_queued(
            move || woken.committed(Handover::requeued(), &[]),
            engine_shutdown.clone(),
        );
        let engine = tokio::spawn(self.engine.run(engine_shutdown.clone()));
        if state.ingest.queue_cap.enabled() {
            tokio::spawn(recount_queue(state.clone(), shutdown.clone()));
        }
        crate::retention::Retention::start(
            &state.store,
            &state.config.retention,
            &state.metrics,
            shutdown.clone(),
        );
        let node_shutdown = CancellationToken::new();
        let node = tokio::spawn(self.node.run(node_shutdown.clone()));
        let router = api::router(state.clone());
        let serve = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut served = tokio::spawn(serve.into_future());
        shutdown.cancelled().await;
        // Connections still open past the grace period are no longer waited for (they end
        // with the process); the server stops accepting.
        let served = match tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut served).await {
            Ok(joined) => joined.context("HTTP server panicked")?,
            Err(_) => {
                tracing::warn!("HTTP connections still open after the grace period; closing them");
                served.abort();
                Ok(())
            }
        };
        engine_shutdown.cancel();
        engine.await.context("delivery engine panicked")?;
        node_shutdown.cancel();
        node.await.context("node heartbeat panicked")?;
        state.store.close();
        served.context("HTTP server failed")
    }
}

/// Keep the queue cap's count current until shutdown. A failed count keeps the last one:
/// ingest itself reports a store that cannot be reached.
async fn recount_queue(state: Arc<ApiState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(QueueCap::COUNT_EVERY_NEAR_CAP) => {}
        }
        if let Err(error) = state.ingest.queue_cap.count_if_due(&state.store).await {
            tracing::warn!(%error, "counting the delivery queue failed");
        }
    }
}

/// Open the configured store. A SQLite file outside the data folder gets its own owner
/// lock: opening it requeues in-flight work, which is only safe with one process per file.
/// PostgreSQL needs none: nodes share it, and expired leases hand work over between them.
async fn open_store(config: &Config) -> Result<(Store, Option<std::fs::File>)> {
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

fn validate_routes(
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
async fn check_route_plugin_configs(config: &Config, plugins: &PluginHost) -> Result<()> {
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

fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
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

/// The key to accept when none is configured, generated (and announced once) on first
/// start: kept in the store when it is shared by a cluster, so every node accepts it, or
/// else in `<data_dir>/api_key`.
/// One INFO line an operator reads first: what this gateway is, where it keeps things, and
/// what it may do. Secrets never appear: the store without its password, the key's source
/// without the key.
fn log_summary(config: &Config, listen: SocketAddr, key_source: &str, plugins: &PluginHost) {
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

/// The cluster's or this data folder's generated key, and where it is kept.
async fn generated_key(store: &Store, data_dir: &Path) -> Result<(String, String)> {
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
