//! The wasmtime side of plugin calls: one engine per process, the two contracts' bindings,
//! and a fresh, limited instance for every call (`transform`, `validate-config`,
//! `describe`). Compiling is `compile.rs`.
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::{Engine, ResourceLimiter, Store};

/// The two plugin contracts a component may implement: `hookgate:plugin@0.2.0`
/// (`wit/transformer.wit`) and the first one, `@0.1.0` (`wit/v0.1.0`), which lacks
/// `describe` and `validate-config`. Their shared types are one set of Rust types: the
/// records are the same shape, and the component model checks shapes, not names.
pub(super) mod bindings {
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

pub use super::compile::{Compiled, compile, forget, prune_cache};
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
pub(super) enum Linked {
    Current(bindings::current::TransformerPre<CallState>),
    First(bindings::first::TransformerPre<CallState>),
}

/// The two contracts' instances, for the calls they share.
enum Instance {
    Current(bindings::current::Transformer),
    First(bindings::first::Transformer),
}

impl Linked {
    pub(super) fn engine(&self) -> &Engine {
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
/// again (JavaScript 0.71 → 0.31 ms a call; `benches/plugin_call.rs`). More than 2 MiB won
/// nothing more.
const KEEP_RESIDENT_SCANNED_BYTES: usize = 2 << 20;
/// Without the scan the kept region is zeroed whole after every call: enough for a small
/// plugin's stack and heap, cheap to zero.
const KEEP_RESIDENT_ZEROED_BYTES: usize = 256 << 10;
/// Idle slots kept warm for the component that last used them: what bounds the memory kept
/// resident between calls (this many times the kept bytes, beyond the slots in use).
const WARM_SLOTS: u32 = 32;
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
                .max_unused_warm_slots(WARM_SLOTS)
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
