//! The wasmtime side of plugins: one engine per process, components compiled once per
//! content hash (in memory, and on disk beside the data), and a fresh, limited instance
//! for every call.
//!
//! Isolation: each call gets a new `Store` and a new instance from a pre-linked
//! `InstancePre`, out of the pooling allocator. Nothing survives a call: no memory, no
//! globals, so one delivery can never see another's data and a trapped instance is gone
//! with its store. Plugins get no capabilities: every import they declare (any WASI
//! interface) is linked to a trap.
//!
//! What a call can make the host hold is bounded too: copying its result out of the guest
//! stops at the output cap (wasmtime's hostcall fuel), however the result's lists alias.
//!
//! Calls run on the async workers themselves, on a fiber: every epoch tick the guest yields
//! back to the executor, so a spinning plugin shares a worker instead of holding it, and a
//! call costs no thread hop (the blocking pool's hop was twice the call itself).

use super::PluginError;
use crate::domain::{MAX_RECORDED_TEXT_BYTES, OutgoingRequest, clip_text};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, ResourceLimiter, Store};

/// The two plugin contracts a component may implement: `hookgate:plugin@0.2.0`
/// (`wit/transformer.wit`) and the first one, `@0.1.0` (`wit/v0.1.0`), which lacks
/// `describe` and `validate-config`. Their shared types are one set of Rust types: the
/// records are the same shape, and the component model checks shapes, not names.
mod bindings {
    pub mod current {
        wasmtime::component::bindgen!({
            world: "transformer",
            path: "wit",
            exports: { default: async },
        });
    }
    pub mod first {
        wasmtime::component::bindgen!({
            world: "transformer",
            path: "wit/v0.1.0",
            exports: { default: async },
            with: { "hookgate:plugin/types": super::current::hookgate::plugin::types },
        });
    }
}

pub use bindings::current::hookgate::plugin::types as wit;

/// The contract version a component implements, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Contract {
    #[serde(rename = "0.2.0")]
    Current,
    #[serde(rename = "0.1.0")]
    First,
}

#[derive(Clone)]
enum Linked {
    Current(bindings::current::TransformerPre<CallState>),
    First(bindings::first::TransformerPre<CallState>),
}

/// The two contracts' instances, for the calls they share.
enum Instance {
    Current(bindings::current::Transformer),
    First(bindings::first::Transformer),
}

impl Linked {
    fn engine(&self) -> &Engine {
        match self {
            Linked::Current(pre) => pre.engine(),
            Linked::First(pre) => pre.engine(),
        }
    }

    async fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Linked::Current(pre) => Instance::Current(pre.instantiate_async(store).await?),
            Linked::First(pre) => Instance::First(pre.instantiate_async(store).await?),
        })
    }
}

impl Instance {
    async fn transform(
        &self,
        store: &mut Store<CallState>,
        event: &wit::Event,
        request: &wit::OutgoingRequest,
        config_json: &str,
    ) -> wasmtime::Result<Result<wit::Outcome, String>> {
        match self {
            Instance::Current(instance) => {
                instance
                    .call_transform(store, event, request, config_json)
                    .await
            }
            Instance::First(instance) => {
                instance
                    .call_transform(store, event, request, config_json)
                    .await
            }
        }
    }
}

/// Epoch ticks are this long; a call's CPU budget is counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Concurrent instances the pooling allocator holds; calls beyond this wait their turn.
pub const POOL_INSTANCES: u32 = 128;
/// Memory per pooled slot kept mapped between calls and reset in place, where the kernel
/// can say which pages a call dirtied (`PAGEMAP_SCAN`, Linux 6.7+): only those are reset,
/// so a large component's next call finds its pages resident instead of faulting them in
/// again (JavaScript 0.71 → 0.31 ms a call, Python 1.35 → 1.07 ms; `benches/plugin_call.rs`).
const KEEP_RESIDENT_SCANNED_BYTES: usize = 32 << 20;
/// Without the scan the kept region is zeroed whole after every call: enough for a small
/// plugin's stack and heap, cheap to zero.
const KEEP_RESIDENT_ZEROED_BYTES: usize = 256 << 10;
/// Host stack for a call's fiber: wasm frames (capped at wasmtime's default 512 KiB
/// `max_wasm_stack`) plus the host functions they reach.
const ASYNC_STACK_BYTES: usize = 1 << 20;
/// The engine-wide ceiling on one linear memory; the per-app cap is enforced per store.
const POOL_MAX_MEMORY: usize = 1 << 30;
/// Host bytes a result may take beyond the output cap while it is copied out of the guest:
/// wasmtime charges each lifted list element its host size (48 bytes per header record),
/// which the output cap, counting only the bytes of names, values, URL and body, does not.
const LIFT_OVERHEAD_BYTES: usize = 64 << 10;

/// The process's engine. One engine serves every app in the process, so a component
/// compiled for one gateway (or one test) is reused by all.
pub fn engine() -> Result<&'static Engine, PluginError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let keep_resident = match wasmtime::PoolingAllocationConfig::is_pagemap_scan_available()
            {
                true => KEEP_RESIDENT_SCANNED_BYTES,
                false => KEEP_RESIDENT_ZEROED_BYTES,
            };
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 4)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 4)
                .max_memory_size(POOL_MAX_MEMORY)
                // Resetting a slot in place beats madvise plus a page fault per page on
                // the next call.
                .linear_memory_keep_resident(keep_resident)
                .table_keep_resident(keep_resident)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .async_stack_keep_resident(ASYNC_STACK_BYTES);
            let mut config = wasmtime::Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                // Transforms are small; the default 2 MiB fiber stack per pooled instance
                // would only be address space to reserve.
                .async_stack_size(ASYNC_STACK_BYTES)
                .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
            let engine = Engine::new(&config).map_err(|error| format!("{error:#}"))?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("hookgate-epoch".into())
                .spawn(move || {
                    while let Some(engine) = ticker.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })
                .map_err(|error| error.to_string())?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|message| PluginError::Internal(format!("wasm engine: {message}")))
}

/// A compiled, linked and type-checked plugin, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    component: Component,
    linked: Linked,
    trapped_imports: Arc<[String]>,
}

impl Compiled {
    pub fn contract(&self) -> Contract {
        match self.linked {
            Linked::Current(_) => Contract::Current,
            Linked::First(_) => Contract::First,
        }
    }

    /// The component's imports that run code (interfaces with functions, and functions),
    /// every one linked to a trap: hookgate provides plugins no imports.
    pub fn trapped_imports(&self) -> &[String] {
        &self.trapped_imports
    }
}

type CompileCell = Arc<OnceLock<Result<Compiled, PluginError>>>;

/// Compiled versions by content hash, shared by every app in the process.
static COMPILED: OnceLock<Mutex<HashMap<String, CompileCell>>> = OnceLock::new();

/// Compile (or fetch from cache) and link `wasm`. `cache_dir` holds serialised artifacts
/// keyed by content hash so a restart skips Cranelift. Callers compiling the same bytes at
/// once wait for one compile.
pub fn compile(
    name: &str,
    wasm: &[u8],
    hash: &str,
    cache_dir: Option<&Path>,
) -> Result<Compiled, PluginError> {
    let cell: CompileCell = COMPILED
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| PluginError::Internal("plugin compile cache poisoned".into()))?
        .entry(hash.to_owned())
        .or_default()
        .clone();
    let compiled = cell
        .get_or_init(|| compile_uncached(name, wasm, hash, cache_dir))
        .clone()?;
    // Compiled earlier for another app in this process (tests, the bench) with another
    // cache folder: this folder gets its copy too.
    if let Some(dir) = cache_dir {
        let path = dir.join(format!("{hash}.cwasm"));
        if !path.exists() {
            write_artifact(&compiled.component, &path);
        }
    }
    Ok(compiled)
}

fn compile_uncached(
    name: &str,
    wasm: &[u8],
    hash: &str,
    cache_dir: Option<&Path>,
) -> Result<Compiled, PluginError> {
    let engine = engine()?;
    let component = load_or_compile(engine, name, wasm, hash, cache_dir)?;
    let trapped_imports = trapped_imports(engine, &component);
    let mut linker = Linker::<CallState>::new(engine);
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(|error| PluginError::Load(format!("{error:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|error| PluginError::Load(format!("{error:#}")))?;
    let linked = match bindings::current::TransformerPre::new(pre.clone()) {
        Ok(pre) => Linked::Current(pre),
        Err(current) => match bindings::first::TransformerPre::new(pre) {
            Ok(pre) => Linked::First(pre),
            Err(first) => {
                return Err(PluginError::Load(format!(
                    "does not implement the hookgate:plugin/transformer world: \
                     not 0.2.0 ({current:#}), nor 0.1.0 ({first:#})"
                )));
            }
        },
    };
    Ok(Compiled {
        component,
        linked,
        trapped_imports: trapped_imports.into(),
    })
}

/// Save `component` compiled at `path`, atomically, so a restart skips Cranelift.
fn write_artifact(component: &Component, path: &Path) {
    let written = component
        .serialize()
        .map_err(|error| std::io::Error::other(format!("{error:#}")))
        .and_then(|artifact| {
            // Unique per writer: gateways sharing a cache folder may write the same entry.
            let partial = path.with_extension(format!("tmp{:016x}", fastrand::u64(..)));
            path.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&partial, artifact))
                .and_then(|()| std::fs::rename(&partial, path))
        });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot write plugin cache entry");
    }
}

/// Drop a version no longer served: from the memory cache, and its artifact from
/// `cache_dir`. Versions still held by in-flight calls live on in those calls' handles.
pub fn forget(hash: &str, cache_dir: Option<&Path>) {
    if let Some(cache) = COMPILED.get()
        && let Ok(mut cache) = cache.lock()
    {
        cache.remove(hash);
    }
    if let Some(dir) = cache_dir {
        let _ = std::fs::remove_file(dir.join(format!("{hash}.cwasm")));
    }
}

/// Delete artifacts in `cache_dir` of versions not in `served` (content hashes): left by
/// files since replaced or removed, or by an older build.
pub fn prune_cache(cache_dir: &Path, served: &[String]) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".cwasm"))
            .is_some_and(|hash| !served.iter().any(|served| served == hash));
        if stale {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a compiled plugin no longer served")
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a stale compiled plugin")
                }
            }
        }
    }
}

/// The imports that would run code if called. Type-only imports (the contract's own
/// `types` interface) are left out: nothing can call them.
fn trapped_imports(engine: &Engine, component: &Component) -> Vec<String> {
    use wasmtime::component::types::ComponentItem;
    component
        .component_type()
        .imports(engine)
        .filter(|(_, import)| match &import.ty {
            ComponentItem::ComponentInstance(instance) => instance
                .exports(engine)
                .any(|(_, export)| matches!(export.ty, ComponentItem::ComponentFunc(_))),
            ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => true,
            _ => false,
        })
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn load_or_compile(
    engine: &Engine,
    name: &str,
    wasm: &[u8],
    hash: &str,
    cache_dir: Option<&Path>,
) -> Result<Component, PluginError> {
    let cached_path: Option<PathBuf> = cache_dir.map(|dir| dir.join(format!("{hash}.cwasm")));
    if let Some(path) = &cached_path
        && path.exists()
    {
        // SAFETY: the file was written by `Component::serialize` of this same wasmtime
        // build into the gateway's own cache folder; wasmtime also checks its header and
        // refuses artifacts from another version or engine configuration.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => return Ok(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring stale plugin cache entry")
            }
        }
    }
    // Cranelift takes seconds for a large component (an interpreter inside), so say so.
    tracing::info!(plugin = %name, bytes = wasm.len(), "compiling plugin");
    let started = std::time::Instant::now();
    let component =
        Component::new(engine, wasm).map_err(|error| PluginError::Load(format!("{error:#}")))?;
    tracing::info!(
        plugin = %name,
        bytes = wasm.len(),
        seconds = started.elapsed().as_secs_f64(),
        "plugin compiled"
    );
    if let Some(path) = &cached_path {
        write_artifact(&component, path);
    }
    Ok(component)
}

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub timeout: Duration,
    pub max_memory_bytes: usize,
    pub max_output_bytes: usize,
}

impl From<&crate::config::PluginLimitsConfig> for CallLimits {
    fn from(limits: &crate::config::PluginLimitsConfig) -> Self {
        CallLimits {
            timeout: Duration::from_millis(limits.timeout_ms),
            max_memory_bytes: limits.max_memory_bytes,
            max_output_bytes: limits.max_output_bytes,
        }
    }
}

/// A store's data: the memory limiter, which remembers a refused growth so the failure can
/// be reported as what it was rather than as the allocator's abort.
pub struct CallState {
    max_memory_bytes: usize,
    memory_refused: bool,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory_bytes;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

pub enum CallOutcome {
    Send(OutgoingRequest),
    Skip(String),
}

/// A store for one call: the memory limiter, the output bound and the CPU budget, yielding
/// to the executor every epoch tick.
fn call_store(engine: &Engine, limits: CallLimits) -> Store<CallState> {
    let mut store = Store::new(
        engine,
        CallState {
            max_memory_bytes: limits.max_memory_bytes,
            memory_refused: false,
        },
    );
    store.limiter(|state| state);
    // Bounds what the host allocates while lifting the result, before the result exists to
    // be measured: a guest can return many list elements that all point at one buffer, so
    // its lifted size is not bounded by its own memory.
    store.set_hostcall_fuel(limits.max_output_bytes.saturating_add(LIFT_OVERHEAD_BYTES));
    // The budget counts time the call actually ran: from each resumption to the next tick,
    // not the time it spent queued behind other tasks after yielding, so a busy gateway does
    // not turn a well-behaved plugin's wait into a timeout.
    let resumed_at = Arc::new(Mutex::new(std::time::Instant::now()));
    let budget = limits.timeout;
    let mut ran_for = Duration::ZERO;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if let Ok(at) = resumed_at.lock() {
            ran_for += at.elapsed();
        }
        if ran_for >= budget {
            return Ok(wasmtime::UpdateDeadline::Interrupt);
        }
        let resumed_at = resumed_at.clone();
        Ok(wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Ok(mut at) = resumed_at.lock() {
                    *at = std::time::Instant::now();
                }
            }),
        ))
    });
    store
}

/// What a failed instantiation or call was, in the words attempt records use.
fn call_error(
    error: &wasmtime::Error,
    store: &Store<CallState>,
    limits: CallLimits,
) -> PluginError {
    let message = format!("{error:#}");
    if let Some(import) = unknown_import(&message) {
        return PluginError::MissingImport(clip_text(import, MAX_RECORDED_TEXT_BYTES));
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => PluginError::Timeout(limits.timeout),
        _ if store.data().memory_refused => PluginError::MemoryLimit(limits.max_memory_bytes),
        // wasmtime's error types for these are private; their messages are the contract.
        None if message.contains("fuel allocated for hostcalls") => PluginError::ResultTooLarge {
            limit: limits.max_output_bytes,
        },
        Some(trap) => PluginError::Trap(trap.to_string()),
        // With a guest backtrace attached this can be long.
        None => PluginError::Trap(clip_text(&message, MAX_RECORDED_TEXT_BYTES)),
    }
}

/// The import named by the trap `define_unknown_imports_as_traps` links in:
/// ``unknown import: `wasi:cli/environment@0.2.0#get-environment` has not been defined``.
fn unknown_import(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("unknown import: `")?;
    rest.split_once('`').map(|(import, _)| import)
}

/// Run one transform in a fresh instance.
pub async fn call(
    compiled: &Compiled,
    limits: CallLimits,
    event: &wit::Event,
    request: &wit::OutgoingRequest,
    config_json: &str,
) -> Result<CallOutcome, PluginError> {
    let mut store = call_store(compiled.linked.engine(), limits);
    let result = match compiled.linked.instantiate(&mut store).await {
        Ok(instance) => {
            instance
                .transform(&mut store, event, request, config_json)
                .await
        }
        Err(error) => Err(error),
    };
    let answer = result.map_err(|error| call_error(&error, &store, limits))?;
    match answer {
        // A plugin's words end up on every attempt record and in API answers: kept short.
        Err(message) => Err(PluginError::Failed(clip_text(
            &message,
            MAX_RECORDED_TEXT_BYTES,
        ))),
        Ok(wit::Outcome::Skip(reason)) => Ok(CallOutcome::Skip(clip_text(
            &reason,
            MAX_RECORDED_TEXT_BYTES,
        ))),
        Ok(wit::Outcome::Send(request)) => {
            let size = request.body.len()
                + request.url.len()
                + request
                    .headers
                    .iter()
                    .map(|header| header.name.len() + header.value.len())
                    .sum::<usize>();
            if size > limits.max_output_bytes {
                return Err(PluginError::OutputTooLarge {
                    size,
                    limit: limits.max_output_bytes,
                });
            }
            Ok(CallOutcome::Send(OutgoingRequest {
                url: request.url,
                headers: request
                    .headers
                    .into_iter()
                    .map(|header| (header.name, header.value))
                    .collect(),
                body: request.body.into(),
            }))
        }
    }
}

/// Ask a 0.2.0 plugin to check `config_json`, in a fresh instance. `None` for a 0.1.0
/// plugin, which cannot say.
pub async fn validate_config(
    compiled: &Compiled,
    limits: CallLimits,
    config_json: &str,
) -> Result<Option<Result<(), wit::ConfigError>>, PluginError> {
    let Linked::Current(pre) = &compiled.linked else {
        return Ok(None);
    };
    let mut store = call_store(pre.engine(), limits);
    let result = match pre.instantiate_async(&mut store).await {
        Ok(instance) => instance.call_validate_config(&mut store, config_json).await,
        Err(error) => Err(error),
    };
    let answer = result.map_err(|error| call_error(&error, &store, limits))?;
    Ok(Some(answer.map_err(|error| wit::ConfigError {
        pointer: clip_text(&error.pointer, MAX_RECORDED_TEXT_BYTES),
        message: clip_text(&error.message, MAX_RECORDED_TEXT_BYTES),
    })))
}

/// Ask a 0.2.0 plugin to describe itself, in a fresh instance. `None` for a 0.1.0 plugin.
pub async fn describe(
    compiled: &Compiled,
    limits: CallLimits,
) -> Result<Option<wit::PluginInfo>, PluginError> {
    let Linked::Current(pre) = &compiled.linked else {
        return Ok(None);
    };
    let mut store = call_store(pre.engine(), limits);
    let result = match pre.instantiate_async(&mut store).await {
        Ok(instance) => instance.call_describe(&mut store).await,
        Err(error) => Err(error),
    };
    result
        .map(Some)
        .map_err(|error| call_error(&error, &store, limits))
}

/// For the benchmark that chose the isolation mode: the per-call times of `calls` calls into
/// one instance that is reused, which the gateway does not do.
pub async fn time_reused_instance(
    compiled: &Compiled,
    event: &wit::Event,
    request: &wit::OutgoingRequest,
    config_json: &str,
    calls: usize,
) -> Result<Vec<Duration>, PluginError> {
    let mut store = Store::new(
        compiled.linked.engine(),
        CallState {
            max_memory_bytes: usize::MAX,
            memory_refused: false,
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = compiled
        .linked
        .instantiate(&mut store)
        .await
        .map_err(|error| PluginError::Trap(format!("{error:#}")))?;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = std::time::Instant::now();
        instance
            .transform(&mut store, event, request, config_json)
            .await
            .map_err(|error| PluginError::Trap(format!("{error:#}")))?
            .map_err(PluginError::Failed)?;
        times.push(started.elapsed());
    }
    Ok(times)
}
