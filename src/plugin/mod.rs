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
//!
//! Configs are checked before use: ingest, config saves and start ask the plugin's
//! `validate-config` (answers cached per version and config text), and a `transform` error
//! after which the plugin refuses its config is a permanent failure. Each version describes
//! itself once, after it compiles, for the listing.

pub mod cli;
mod compile;
mod config_check;
mod gate;
mod info;
pub mod new;
mod registry;
pub mod runtime;

pub use config_check::ConfigRefused;
pub use info::{About, PluginInfo, PluginSource};

use crate::config::PluginLimitsConfig;
use crate::domain::OutgoingRequest;
use registry::{Plugin, Registry};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// The component does not implement either plugin contract.
    #[error("failed to load: {0}")]
    WrongWorld(String),
    /// The plugin called an import hookgate does not provide (e.g. a WASI interface).
    #[error("called `{0}`, which hookgate does not provide to plugins{hint}", hint = missing_import_hint(.0))]
    MissingImport(String),
    /// The call failed and the plugin's `validate-config` refuses the destination's config.
    #[error("refuses its config: {0}")]
    BadConfig(String),
    /// Paused by its breaker after calls in a row exhausted their CPU budget (see `gate`).
    #[error("paused for {0:?} after its calls kept exhausting their CPU budget")]
    Paused(Duration),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PluginError {
    /// A failure that would happen again on every retry: the same component, config and
    /// input fail the same way (plugins have no clock, randomness or I/O to differ on), so
    /// the delivery is dead-lettered at once with the reason. A file that could not be read
    /// or parsed is not one: it may have been caught half-copied, and the next scan reads it
    /// whole.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PluginError::WrongWorld(_) | PluginError::MissingImport(_) | PluginError::BadConfig(_)
        )
    }
}

/// What a missing import usually means, where it is known: a Rust plugin's panic handler
/// reads `RUST_BACKTRACE` before it prints the message, so a panic surfaces as this call.
fn missing_import_hint(import: &str) -> &'static str {
    if import.starts_with("wasi:cli/environment") && import.ends_with("#get-environment") {
        " (Rust's standard library makes this call when the plugin panics or reads an \
         environment variable: return Err instead of panicking)"
    } else {
        ""
    }
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

/// Where compiled plugins are kept across restarts.
#[derive(Debug, Clone)]
pub struct PluginCache {
    pub dir: PathBuf,
    /// Only this gateway uses the folder (the default one in its data folder), so versions
    /// it no longer serves are deleted from it. A folder set in the config may be shared by
    /// several gateways and is never pruned.
    pub owned: bool,
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
    /// `validate-config` answers by plugin version and config text.
    validated: Arc<Mutex<HashMap<String, Result<(), ConfigRefused>>>>,
}

impl PluginHost {
    /// Load the bundled plugins and every component in `plugins_dir`. Files that fail to
    /// load are reported in the listing, not fatal. Compiled versions no plugin serves are
    /// removed from an owned cache.
    pub async fn start(
        plugins_dir: PathBuf,
        cache: Option<PluginCache>,
        limits: &PluginLimitsConfig,
    ) -> Result<Self, PluginError> {
        let host = Self::new(plugins_dir, cache, limits)?;
        let registry = host.registry.clone();
        tokio::task::spawn_blocking(move || {
            registry.rescan();
            registry.prune_cache();
        })
        .await
        .map_err(|error| PluginError::Internal(error.to_string()))?;
        host.describe_loaded().await;
        Ok(host)
    }

    /// Compile the bundled plugins no file overrides, off the request path, so no first
    /// delivery waits for Cranelift and the listing shows what each one is.
    async fn warm_bundled(&self, shutdown: &CancellationToken) {
        for plugin in self.registry.bundled() {
            if self.registry.overridden(&plugin.info.name) {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ready = self.ready(&plugin) => if let Err(error) = ready {
                    tracing::error!(plugin = %plugin.info.name, %error, "a bundled plugin failed to compile");
                },
            }
        }
    }

    /// The bundled plugins and only the file of `name`, if any: for trying one plugin
    /// without compiling the rest of the folder.
    pub async fn start_one(
        plugins_dir: PathBuf,
        name: &str,
        limits: &PluginLimitsConfig,
    ) -> Result<Self, PluginError> {
        let host = Self::new(plugins_dir, None, limits)?;
        let registry = host.registry.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || registry.scan_one(&name))
            .await
            .map_err(|error| PluginError::Internal(error.to_string()))?;
        Ok(host)
    }

    fn new(
        plugins_dir: PathBuf,
        cache: Option<PluginCache>,
        limits: &PluginLimitsConfig,
    ) -> Result<Self, PluginError> {
        runtime::engine()?;
        Ok(PluginHost {
            registry: Arc::new(Registry::new(plugins_dir, cache, bundled::BUNDLED)),
            limits: runtime::CallLimits::from(limits),
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
            validated: Arc::default(),
        })
    }

    /// Ask every compiled version that has not described itself yet to do so, so the
    /// listing shows what a newly loaded file says about itself.
    async fn describe_loaded(&self) {
        for plugin in self.registry.all() {
            if !plugin.is_described()
                && let Some(Ok(compiled)) = plugin.compiled_if_ready()
            {
                self.describe(&plugin, &compiled).await;
            }
        }
    }

    async fn describe(&self, plugin: &Plugin, compiled: &runtime::Compiled) {
        plugin
            .describe_once(|| async {
                let described = match self.slot().await {
                    Ok(_slot) => runtime::describe(compiled, self.limits).await,
                    Err(error) => Err(error),
                };
                match described {
                    Ok(about) => about.map(About::from),
                    Err(error) => {
                        // Asked once per version: a plugin whose describe fails is listed
                        // without a description rather than asked again on every call.
                        tracing::warn!(plugin = %plugin.info.name, %error, "the plugin's describe call failed");
                        None
                    }
                }
            })
            .await;
    }

    /// `plugin` compiled, on the blocking pool if this is its first use (bundled plugins
    /// compile then), and described once compiled.
    async fn ready(&self, plugin: &Arc<Plugin>) -> Result<runtime::Compiled, PluginError> {
        let compiled = match plugin.compiled_if_ready() {
            Some(compiled) => compiled?,
            None => {
                let compiling = plugin.clone();
                tokio::task::spawn_blocking(move || compiling.compiled())
                    .await
                    .map_err(|error| {
                        PluginError::Internal(format!("plugin compile panicked: {error}"))
                    })??
            }
        };
        if !plugin.is_described() {
            self.describe(plugin, &compiled).await;
        }
        Ok(compiled)
    }

    /// The serving version of `name`; with none serving, why its file failed to load, if it
    /// did (permanent only when the component implements no contract).
    fn plugin(&self, name: &str) -> Result<Arc<Plugin>, PluginError> {
        self.registry
            .get(name)
            .ok_or_else(|| match self.registry.load_error(name) {
                Some(error) => error,
                None => PluginError::NotFound(name.to_owned()),
            })
    }

    /// Compile the bundled plugins in the background and, beside that, poll the plugins
    /// folder every `interval`, until `shutdown`.
    pub fn watch(&self, interval: Duration, shutdown: CancellationToken) {
        let warming = self.clone();
        let warm_until = shutdown.clone();
        tokio::spawn(async move { warming.warm_bundled(&warm_until).await });
        let registry = self.registry.clone();
        let host = self.clone();
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
                host.describe_loaded().await;
            }
        });
    }

    pub fn exists(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// Why no version of `name` serves, for a 422 that says what to do; `None` when one
    /// does.
    /// A tenant sees only that a file failed, not why: the error names paths and
    /// wasmtime's words, which are the operator's to read in the listing.
    pub fn missing(&self, name: &str) -> Option<String> {
        // Asked before `exists`: a load that finishes between the two checks is then seen
        // as loading, never as a plugin that is not installed.
        let loading = self.registry.is_loading(name);
        if self.exists(name) {
            return None;
        }
        let unknown = format!("no transform plugin named {name:?} is installed");
        Some(if loading {
            format!("{unknown}: its file is being compiled, and it serves in a few seconds")
        } else if self.registry.load_error(name).is_some() {
            format!("{unknown}: its file failed to load (see GET /api/v1/plugins)")
        } else {
            unknown
        })
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
        let plugin = self.plugin(name)?;
        self.ready(&plugin).await.map(drop)
    }

    /// One of the slots bounding calls at once across plugins.
    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PluginError> {
        self.slots
            .acquire()
            .await
            .map_err(|_| PluginError::Internal("plugin host is shut down".into()))
    }

    /// Transform a delivery's request: the call counts toward the plugin's breaker in full.
    pub async fn transform(
        &self,
        name: &str,
        input: TransformInput,
    ) -> Result<TransformOutcome, PluginError> {
        self.call_transform(name, input, true).await
    }

    /// Transform a request nobody will send (the console's playground, `plugin run`). It
    /// bypasses the plugin's breaker, as `preview_config` does: an operator trying configs
    /// must neither pause the plugin for real traffic by its overruns nor let it off by a
    /// cheap call, and may look at a paused plugin to see why. The host's call slots and the
    /// per-call limits still bound it.
    pub async fn preview(
        &self,
        name: &str,
        input: TransformInput,
    ) -> Result<TransformOutcome, PluginError> {
        self.call_transform(name, input, false).await
    }

    async fn call_transform(
        &self,
        name: &str,
        input: TransformInput,
        through_breaker: bool,
    ) -> Result<TransformOutcome, PluginError> {
        let plugin = self.plugin(name)?;
        let pass = match through_breaker {
            true => match self.gates.admit(name, &plugin.info.sha256).await {
                gate::Admission::Run(pass) => Some(pass),
                gate::Admission::Paused(left) => return Err(PluginError::Paused(left)),
            },
            false => None,
        };
        // Ready first: describing a new version takes a slot of its own.
        let compiled = self.ready(&plugin).await?;
        let slot = self.slot().await?;
        let event = runtime::wit::Event {
            id: input.event_id,
            event_type: input.event_type,
            timestamp: input.timestamp,
            payload: input.payload.to_string(),
        };
        let request = to_wit(input.request);
        let called =
            runtime::call(&compiled, self.limits, &event, &request, &input.config_json).await;
        drop(slot);
        let overran = matches!(called, Err(PluginError::Timeout(_)));
        if let Some(pause) = pass.and_then(|pass| pass.finish(overran)) {
            tracing::warn!(
                plugin = %name,
                pause_ms = pause.as_millis() as u64,
                "plugin paused: its calls keep exhausting their CPU budget; its deliveries wait, one probe runs after the pause"
            );
        }
        match called {
            Ok(runtime::CallOutcome::Send(request)) => Ok(TransformOutcome::Send(request)),
            Ok(runtime::CallOutcome::Skip(reason)) => Ok(TransformOutcome::Skip(reason)),
            // An error may be the config's fault, which no retry mends.
            Err(PluginError::Failed(message)) => {
                let refused = match through_breaker {
                    true => self.validate_config(name, &input.config_json).await.err(),
                    false => self
                        .preview_config(name, &input.config_json)
                        .await
                        .ok()
                        .and_then(Result::err),
                };
                match refused {
                    Some(refused) => Err(PluginError::BadConfig(format!(
                        "{refused} (the call answered: {message})"
                    ))),
                    None => Err(PluginError::Failed(message)),
                }
            }
            Err(error) => Err(error),
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
