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
mod gate;
pub mod new;
mod registry;
pub mod runtime;

pub use registry::{About, PluginInfo, PluginSource};

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
    #[error("called `{0}`, which hookgate does not provide to plugins")]
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

/// A config a plugin's `validate-config` refuses: `pointer` (RFC 6901) names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRefused {
    pub pointer: String,
    pub message: String,
}

impl ConfigRefused {
    /// The field as the API names fields: `webhook_transform_config.channels[0]` for the
    /// pointer `/channels/0` under `config_field`.
    pub fn field(&self, config_field: &str) -> String {
        let mut field = config_field.to_owned();
        let tokens: Vec<&str> = match self.pointer.as_str() {
            "" => Vec::new(),
            // A pointer without its leading `/` (an easy slip) names one key, not its tail.
            pointer => match pointer.strip_prefix('/') {
                Some(path) => path.split('/').collect(),
                None => vec![pointer],
            },
        };
        for token in tokens {
            let token = token.replace("~1", "/").replace("~0", "~");
            if token.is_empty() {
                field.push_str("[\"\"]");
            } else if token.bytes().all(|byte| byte.is_ascii_digit()) {
                // An array index, or an object key of digits: RFC 6901 does not tell them
                // apart, and neither can this.
                field.push_str(&format!("[{token}]"));
            } else {
                field.push('.');
                field.push_str(&token);
            }
        }
        field
    }
}

impl std::fmt::Display for ConfigRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pointer.as_str() {
            "" => f.write_str(&self.message),
            pointer => write!(f, "{pointer}: {}", self.message),
        }
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

/// How many `validate-config` answers are kept before the cache starts over.
const VALIDATED_ANSWERS: usize = 4096;

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
        host.warm_bundled_in_background();
        Ok(host)
    }

    /// Compile the bundled plugins off the request path, so no first delivery waits for
    /// Cranelift and the listing shows what each one is.
    fn warm_bundled_in_background(&self) {
        let host = self.clone();
        tokio::spawn(async move {
            for plugin in host.registry.bundled() {
                if let Err(error) = host.ready(&plugin).await {
                    tracing::error!(plugin = %plugin.info.name, %error, "a bundled plugin failed to compile");
                }
            }
        });
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
        let Ok(slot) = self.slot().await else {
            return;
        };
        let described = runtime::describe(compiled, self.limits).await;
        drop(slot);
        let about = match described {
            Ok(about) => about.map(registry::About::from),
            Err(error) => {
                // Asked once per version: a plugin whose describe fails is listed without
                // a description rather than asked again on every call.
                tracing::warn!(plugin = %plugin.info.name, %error, "the plugin's describe call failed");
                None
            }
        };
        plugin.set_about(about);
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

    /// Poll the plugins folder every `interval` until `shutdown`.
    pub fn watch(&self, interval: Duration, shutdown: CancellationToken) {
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
    pub fn missing(&self, name: &str) -> Option<String> {
        if self.exists(name) {
            return None;
        }
        let unknown = format!("no transform plugin named {name:?} is installed");
        Some(if self.registry.is_loading(name) {
            format!("{unknown}: its file is being compiled, and it serves in a few seconds")
        } else if let Some(error) = self.registry.load_error(name) {
            format!("{unknown}: its file {error}")
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

    /// Ask `name`'s `validate-config` whether it accepts `config_json`. Answers are cached
    /// per version and config. A plugin that is not installed, a 0.1.0 plugin, and a call
    /// that fails (trap, timeout) accept: the config is then tried at delivery, where the
    /// failure is recorded.
    pub async fn validate_config(
        &self,
        name: &str,
        config_json: &str,
    ) -> Result<(), ConfigRefused> {
        let Some(plugin) = self.registry.get(name) else {
            return Ok(());
        };
        let key = format!("{}\n{config_json}", plugin.info.sha256);
        if let Some(answer) = self
            .validated
            .lock()
            .ok()
            .and_then(|answers| answers.get(&key).cloned())
        {
            return answer;
        }
        let answer = match self.check_config(&plugin, config_json).await {
            Ok(answer) => answer,
            Err(error) => {
                // Not cached: a timeout on a busy machine or a paused plugin may answer
                // next time.
                tracing::warn!(plugin = %name, %error, "the plugin's validate-config call failed; the config is accepted unchecked");
                return Ok(());
            }
        };
        if let Ok(mut answers) = self.validated.lock() {
            // Configs are few and repeat; a flood of distinct ones only restarts the cache.
            if answers.len() >= VALIDATED_ANSWERS {
                answers.clear();
            }
            answers.insert(key, answer.clone());
        }
        answer
    }

    async fn check_config(
        &self,
        plugin: &Arc<Plugin>,
        config_json: &str,
    ) -> Result<Result<(), ConfigRefused>, PluginError> {
        let compiled = self.ready(plugin).await?;
        // Through the plugin's gate like any call: a spinning validate-config counts
        // toward its breaker, and a paused plugin is not called.
        let pass = match self
            .gates
            .admit(&plugin.info.name, &plugin.info.sha256)
            .await
        {
            gate::Admission::Run(pass) => pass,
            gate::Admission::Paused(left) => return Err(PluginError::Paused(left)),
        };
        let slot = self.slot().await?;
        let checked = runtime::validate_config(&compiled, self.limits, config_json).await;
        drop(slot);
        pass.finish(matches!(checked, Err(PluginError::Timeout(_))));
        Ok(match checked? {
            None | Some(Ok(())) => Ok(()),
            Some(Err(refused)) => Err(ConfigRefused {
                pointer: refused.pointer,
                message: refused.message,
            }),
        })
    }

    /// One of the slots bounding calls at once across plugins.
    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PluginError> {
        self.slots
            .acquire()
            .await
            .map_err(|_| PluginError::Internal("plugin host is shut down".into()))
    }

    pub async fn transform(
        &self,
        name: &str,
        input: TransformInput,
    ) -> Result<TransformOutcome, PluginError> {
        let plugin = self.plugin(name)?;
        let pass = match self.gates.admit(name, &plugin.info.sha256).await {
            gate::Admission::Run(pass) => pass,
            gate::Admission::Paused(left) => return Err(PluginError::Paused(left)),
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
        if let Some(pause) = pass.finish(matches!(called, Err(PluginError::Timeout(_)))) {
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
                match self.validate_config(name, &input.config_json).await {
                    Err(refused) => Err(PluginError::BadConfig(format!(
                        "{refused} (the call answered: {message})"
                    ))),
                    Ok(()) => Err(PluginError::Failed(message)),
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

#[cfg(test)]
mod tests {
    use super::ConfigRefused;

    fn field(pointer: &str) -> String {
        ConfigRefused {
            pointer: pointer.into(),
            message: String::new(),
        }
        .field("config")
    }

    #[test]
    fn pointers_name_fields_as_the_api_does() {
        assert_eq!(field(""), "config");
        assert_eq!(field("/prefix"), "config.prefix");
        assert_eq!(field("/fields/0/name"), "config.fields[0].name");
        assert_eq!(field("/in/~1event_type"), "config.in./event_type");
        assert_eq!(field("/a~0b"), "config.a~b");
        assert_eq!(field("/"), "config[\"\"]");
        assert_eq!(field("prefix"), "config.prefix");
        assert_eq!(field("fields/0"), "config.fields/0");
    }
}
