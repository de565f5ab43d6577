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

mod bindings {
    wasmtime::component::bindgen!({
        world: "transformer",
        path: "wit",
        exports: { default: async },
    });
}

use bindings::TransformerPre;
pub use bindings::hookgate::plugin::types as wit;

/// Epoch ticks are this long; a call's CPU budget is counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Concurrent instances the pooling allocator holds; calls beyond this wait their turn.
pub const POOL_INSTANCES: u32 = 128;
/// Linear memory per pooled slot kept mapped between calls (zeroed, not released).
const KEEP_RESIDENT_BYTES: usize = 256 << 10;
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
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 4)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 4)
                .max_memory_size(POOL_MAX_MEMORY)
                // Resetting a slot by zeroing what a call touched beats madvise plus a page
                // fault per page on the next call; plugins touch about this much.
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
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
    pre: TransformerPre<CallState>,
}

/// Compile (or fetch from cache) and link `wasm`. `cache_dir` holds serialised artifacts
/// keyed by content hash so a restart skips Cranelift.
pub fn compile(wasm: &[u8], hash: &str, cache_dir: Option<&Path>) -> Result<Compiled, PluginError> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let memory = COMPILED.get_or_init(Default::default);
    if let Some(hit) = memory
        .lock()
        .ok()
        .and_then(|cache| cache.get(hash).cloned())
    {
        return Ok(hit);
    }
    let engine = engine()?;
    let component = load_or_compile(engine, wasm, hash, cache_dir)?;
    let mut linker = Linker::<CallState>::new(engine);
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(|error| PluginError::Load(format!("{error:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|error| PluginError::Load(format!("{error:#}")))?;
    let pre = TransformerPre::new(pre).map_err(|error| {
        PluginError::Load(format!(
            "does not implement the hookgate:plugin/transformer world: {error:#}"
        ))
    })?;
    let compiled = Compiled { pre };
    if let Ok(mut cache) = memory.lock() {
        cache.insert(hash.to_owned(), compiled.clone());
    }
    Ok(compiled)
}

fn load_or_compile(
    engine: &Engine,
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
    let component =
        Component::new(engine, wasm).map_err(|error| PluginError::Load(format!("{error:#}")))?;
    if let Some(path) = &cached_path
        && let Ok(artifact) = component.serialize()
    {
        let partial = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&partial, artifact))
            .and_then(|()| std::fs::rename(&partial, path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write plugin cache entry");
        }
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

/// Run one transform in a fresh instance, yielding to the executor every epoch tick.
pub async fn call(
    compiled: &Compiled,
    limits: CallLimits,
    event: &wit::Event,
    request: &wit::OutgoingRequest,
    config_json: &str,
) -> Result<CallOutcome, PluginError> {
    let engine = compiled.pre.engine();
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
    let result = match compiled.pre.instantiate_async(&mut store).await {
        Ok(instance) => {
            instance
                .call_transform(&mut store, event, request, config_json)
                .await
        }
        Err(error) => Err(error),
    };
    let answer = match result {
        Ok(answer) => answer,
        Err(error) => {
            return Err(match error.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => PluginError::Timeout(limits.timeout),
                _ if store.data().memory_refused => {
                    PluginError::MemoryLimit(limits.max_memory_bytes)
                }
                // wasmtime's error type for this is private; its message is the contract.
                None if format!("{error:#}").contains("fuel allocated for hostcalls") => {
                    PluginError::ResultTooLarge {
                        limit: limits.max_output_bytes,
                    }
                }
                Some(trap) => PluginError::Trap(trap.to_string()),
                // With a guest backtrace attached this can be long.
                None => {
                    PluginError::Trap(clip_text(&format!("{error:#}"), MAX_RECORDED_TEXT_BYTES))
                }
            });
        }
    };
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
        compiled.pre.engine(),
        CallState {
            max_memory_bytes: usize::MAX,
            memory_refused: false,
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = compiled
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|error| PluginError::Trap(format!("{error:#}")))?;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = std::time::Instant::now();
        instance
            .call_transform(&mut store, event, request, config_json)
            .await
            .map_err(|error| PluginError::Trap(format!("{error:#}")))?
            .map_err(PluginError::Failed)?;
        times.push(started.elapsed());
    }
    Ok(times)
}
