//! Transform plugins: the registry of installed plugins, their hot reload from the plugins
//! folder, and the async entry point the delivery engine calls, which admits each call
//! through its plugin's gate (calls at once per plugin, and the breaker that pauses a plugin
//! whose calls keep overrunning) and a bound on calls at once across plugins.
//!
//! Bundled plugins are compiled into the binary; a `.wasm` component in the plugins folder
//! is named by its file stem and overrides a bundled plugin of that name. The folder is
//! polled; a changed file is hashed and compiled off to the side, and only a component that
//! compiled and type-checked replaces the serving version, so a half-written or corrupt file
//! never serves a delivery. Calls hold their own handle to the version they started with.

pub mod cli;
mod gate;
mod registry;
pub mod runtime;

pub use registry::{PluginInfo, PluginSource};

use crate::config::PluginLimitsConfig;
use crate::domain::OutgoingRequest;
use registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PluginError {
    #[error("no transform plugin named {0:?} is installed")]
    NotFound(String),
    #[error("failed to load: {0}")]
    Load(String),
    #[error("exceeded its CPU budget of {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("output of {size} bytes is over the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    /// The result ran past the cap while it was being copied out, before its size was known.
    #[error("result is over the output limit of {limit} bytes")]
    ResultTooLarge { limit: usize },
    #[error("returned an error: {0}")]
    Failed(String),
    /// Paused by its breaker after calls in a row exhausted their CPU budget (see `gate`).
    #[error("paused for {0:?} after its calls kept exhausting their CPU budget")]
    Paused(Duration),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The component bytes of a bundled plugin, for tools and benchmarks.
pub fn bundled_component(name: &str) -> Option<&'static [u8]> {
    bundled::BUNDLED
        .iter()
        .find(|(bundled_name, _)| *bundled_name == name)
        .map(|(_, wasm)| *wasm)
}

/// What a plugin gets to see for one attempt.
pub struct TransformInput {
    pub event_id: String,
    pub event_type: String,
    pub timestamp: f64,
    pub payload: Arc<str>,
    pub request: OutgoingRequest,
    /// The destination's `webhook_transform_config` as JSON text, `null` when absent.
    pub config_json: String,
}

#[derive(Debug)]
pub enum TransformOutcome {
    Send(OutgoingRequest),
    Skip(String),
}

#[derive(Clone)]
pub struct PluginHost {
    registry: Arc<Registry>,
    limits: runtime::CallLimits,
    /// Each plugin's own bound on calls at once, and its breaker; taken before `slots`, so a
    /// plugin's queued calls never hold slots other plugins need.
    gates: Arc<gate::Gates>,
    /// Bounds calls at once across plugins, and so the host memory they can hold.
    slots: Arc<Semaphore>,
}

impl PluginHost {
    /// Load the bundled plugins and every component in `plugins_dir`. Files that fail to
    /// load are reported in the listing, not fatal.
    pub async fn start(
        plugins_dir: PathBuf,
        cache_dir: Option<PathBuf>,
        limits: &PluginLimitsConfig,
    ) -> Result<Self, PluginError> {
        runtime::engine()?;
        let registry = Arc::new(Registry::new(plugins_dir, cache_dir, bundled::BUNDLED));
        let scan = registry.clone();
        tokio::task::spawn_blocking(move || scan.rescan())
            .await
            .map_err(|error| PluginError::Internal(error.to_string()))?;
        Ok(PluginHost {
            registry,
            limits: runtime::CallLimits {
                timeout: Duration::from_millis(limits.timeout_ms),
                max_memory_bytes: limits.max_memory_bytes,
                max_output_bytes: limits.max_output_bytes,
            },
            gates: Arc::new(gate::Gates::new(gate::GatePolicy {
                per_plugin: limits.max_concurrent_per_plugin,
                pause_after: limits.pause_after_overruns,
                max_pause: Duration::from_millis(limits.max_pause_ms),
            })),
            slots: Arc::new(Semaphore::new(
                limits
                    .max_concurrent_calls
                    .min(runtime::POOL_INSTANCES as usize),
            )),
        })
    }

    /// Poll the plugins folder every `interval` until `shutdown`.
    pub fn watch(&self, interval: Duration, shutdown: CancellationToken) {
        let registry = self.registry.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let scan = registry.clone();
                if let Err(error) = tokio::task::spawn_blocking(move || scan.rescan()).await {
                    tracing::error!(%error, "plugin folder scan panicked");
                }
            }
        });
    }

    pub fn exists(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// Every plugin, with the pause its breaker holds it in, if any.
    pub fn list(&self) -> Vec<PluginInfo> {
        let paused = self.gates.paused();
        let mut rows = self.registry.list();
        for row in &mut rows {
            row.paused_for_ms = paused
                .iter()
                .find(|(name, _)| *name == row.name)
                .map(|(_, left)| left.as_millis() as u64);
        }
        rows
    }

    /// Compile `name` now (on the blocking pool) instead of at its first delivery.
    pub async fn warm(&self, name: &str) -> Result<(), PluginError> {
        let plugin = self
            .registry
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        tokio::task::spawn_blocking(move || plugin.compiled().map(drop))
            .await
            .map_err(|error| PluginError::Internal(format!("plugin compile panicked: {error}")))?
    }

    pub async fn transform(
        &self,
        name: &str,
        input: TransformInput,
    ) -> Result<TransformOutcome, PluginError> {
        let plugin = self
            .registry
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        let pass = match self.gates.admit(name, &plugin.info.sha256).await {
            gate::Admission::Run(pass) => pass,
            gate::Admission::Paused(left) => return Err(PluginError::Paused(left)),
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| PluginError::Internal("plugin host is shut down".into()))?;
        // Bundled plugins compile on first use: that one time, on the blocking pool.
        let compiled = match plugin.compiled_if_ready() {
            Some(compiled) => compiled?,
            None => tokio::task::spawn_blocking(move || plugin.compiled())
                .await
                .map_err(|error| {
                    PluginError::Internal(format!("plugin compile panicked: {error}"))
                })??,
        };
        let event = runtime::wit::Event {
            id: input.event_id,
            event_type: input.event_type,
            timestamp: input.timestamp,
            payload: input.payload.to_string(),
        };
        let request = to_wit(input.request);
        let called =
            runtime::call(&compiled, self.limits, &event, &request, &input.config_json).await;
        if let Some(pause) = pass.finish(matches!(called, Err(PluginError::Timeout(_)))) {
            tracing::warn!(
                plugin = %name,
                pause_ms = pause.as_millis() as u64,
                "plugin paused: its calls keep exhausting their CPU budget; its deliveries wait, one probe runs after the pause"
            );
        }
        match called? {
            runtime::CallOutcome::Send(request) => Ok(TransformOutcome::Send(request)),
            runtime::CallOutcome::Skip(reason) => Ok(TransformOutcome::Skip(reason)),
        }
    }
}

fn to_wit(request: OutgoingRequest) -> runtime::wit::OutgoingRequest {
    runtime::wit::OutgoingRequest {
        url: request.url,
        headers: request
            .headers
            .into_iter()
            .map(|(name, value)| runtime::wit::Header { name, value })
            .collect(),
        body: request.body.to_vec(),
    }
}
