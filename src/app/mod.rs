//! Wiring: builds the store, the plugin host, the HTTP client and the API from a `Config`,
//! binds the listener, and runs the API, the delivery engine and the background tasks
//! (plugin folder watch, node heartbeat, retention, the queue cap's recount) until shutdown.

use crate::api::{self, ApiState};
use crate::cluster::Node;
mod startup;

use startup::{
    check_route_plugin_configs, generated_key, lock_data_dir, log_summary, open_store,
    validate_routes,
};

use crate::config::Config;
use crate::deliver::breaker::{BreakerPolicy, Breakers};
use crate::deliver::feed::AttemptFeed;
use crate::deliver::health::DestinationHealth;
use crate::deliver::rate::RateLimits;
use crate::deliver::{DeliveryContext, Engine, Handover, client::HttpClient};
use crate::egress::EgressGuard;
use crate::ingest::{Ingest, QueueCap};
use crate::metrics::Metrics;
use crate::plugin::{PluginCache, PluginHost};
use crate::replay::Replays;
use crate::store::Store;
use anyhow::{Context, Result};
use std::future::IntoFuture;
use std::net::SocketAddr;
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
    /// Where the API key came from, for the start-up summary.
    key_source: String,
    /// Cancelled when shutdown begins: bulk replays stop between pages and live streams end,
    /// so open streams do not hold the HTTP server's graceful shutdown.
    stopping: CancellationToken,
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
        let health = Arc::new(DestinationHealth::default());
        let engine = Engine::new(Arc::new(DeliveryContext {
            store: store.clone(),
            client,
            plugins: plugins.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            feed: feed.clone(),
            health: health.clone(),
            rates: Arc::new(RateLimits::new(config.rate_limits())),
            breakers: Arc::new(Breakers::new(BreakerPolicy {
                after_failures: config.delivery.breaker_after_failures,
                first_pause: Duration::from_millis(config.delivery.breaker_first_pause_ms),
                max_pause: Duration::from_millis(config.delivery.breaker_max_pause_ms),
            })),
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
        let store_for_replays = store.clone();
        let search_scan_rows = config.limits.search_scan_rows;
        let replay_queue_ceiling = config.limits.replay_queue_ceiling;
        // Cancelled when the app's shutdown begins (see `run`).
        let stopping = CancellationToken::new();
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
                stopping.clone(),
            ),
            stopping: stopping.clone(),
            health,
        });
        Ok(App {
            listener,
            state,
            engine,
            node,
            _locks: (data_lock, store_lock),
            api_key: api_keys[0].clone(),
            key_source,
            stopping,
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
        log_summary(
            &state.config,
            self.local_addr(),
            &self.key_source,
            &state.plugins,
        );
        let stopping = self.stopping.clone();
        let begun = shutdown.clone();
        tokio::spawn(async move {
            begun.cancelled().await;
            stopping.cancel();
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
