//! Compiling plugins: Cranelift once per content hash, shared by every app in the process
//! and kept on disk as a compiled artifact so a restart skips Cranelift; linking against
//! whichever contract the component implements; and dropping versions no longer served.

use super::PluginError;
use super::runtime::{CallState, Contract, Linked, bindings, engine};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// A compiled, linked and type-checked plugin, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    component: Component,
    pub(super) linked: Linked,
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
                return Err(PluginError::WrongWorld(format!(
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
        let path = dir.join(format!("{hash}.cwasm"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove a compiled plugin no longer served")
            }
        }
    }
}

/// A half-written artifact older than this was left by a process that died writing it.
const ABANDONED_PARTIAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Delete artifacts in `cache_dir` of versions not in `served` (content hashes), left by
/// files since replaced or removed or by an older build, and partial artifacts a process
/// died writing.
pub fn prune_cache(cache_dir: &Path, served: &[String]) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let unserved = name
            .strip_suffix(".cwasm")
            .is_some_and(|hash| !served.iter().any(|served| served == hash));
        let abandoned = name.contains(".tmp")
            && entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > ABANDONED_PARTIAL);
        if unserved || abandoned {
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
