//! The set of installed plugins and the folder scan that keeps it current.

use super::info::{About, PluginInfo, PluginSource};
use super::runtime::{self, Compiled};
use super::{PluginCache, PluginError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

/// A plugin version. Bundled plugins compile after start, in the background (they are known
/// good, so nothing waits to admit them); files compile before they are admitted.
pub struct Plugin {
    pub info: PluginInfo,
    wasm: Arc<[u8]>,
    cache_dir: Option<PathBuf>,
    compiled: OnceLock<Result<Compiled, PluginError>>,
    /// What `describe` answered (`None` for a 0.1.0 plugin or a failed call), once asked:
    /// callers racing to describe a new version wait for the one call.
    about: tokio::sync::OnceCell<Option<About>>,
}

impl Plugin {
    /// Compile (blocking) on first use; every later call gets the same answer.
    pub fn compiled(&self) -> Result<Compiled, PluginError> {
        self.compiled
            .get_or_init(|| {
                runtime::compile(
                    &self.info.name,
                    &self.wasm,
                    &self.info.sha256,
                    self.cache_dir.as_deref(),
                )
            })
            .clone()
    }

    /// The compiled component if compiling is already done, without blocking.
    pub fn compiled_if_ready(&self) -> Option<Result<Compiled, PluginError>> {
        self.compiled.get().cloned()
    }

    pub fn is_described(&self) -> bool {
        self.about.initialized()
    }

    /// Run `ask` to describe this version unless it has been (or is being) described.
    pub async fn describe_once<F>(&self, ask: impl FnOnce() -> F)
    where
        F: Future<Output = Option<About>>,
    {
        self.about.get_or_init(ask).await;
    }

    /// The listing row: the version's facts, and what compiling and `describe` found.
    fn row(&self) -> PluginInfo {
        let mut row = self.info.clone();
        if let Some(Ok(compiled)) = self.compiled.get() {
            row.contract = Some(compiled.contract());
            row.trapping_imports = compiled.trapped_imports().to_vec();
        }
        row.about = self.about.get().cloned().flatten();
        row
    }
}

/// What the scan last saw of a file, so unchanged files are not re-read.
#[derive(Clone, PartialEq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    /// A file renamed into place is a new inode even when its size and mtime match the
    /// old one's (timestamps preserved or normalised by the deploy tool).
    inode: u64,
}

pub struct Registry {
    plugins_dir: PathBuf,
    cache: Option<PluginCache>,
    bundled: BTreeMap<String, Arc<Plugin>>,
    files: RwLock<BTreeMap<String, Arc<Plugin>>>,
    errors: RwLock<BTreeMap<String, PluginError>>,
    stamps: RwLock<HashMap<PathBuf, FileStamp>>,
    /// Names whose file is being read and compiled right now.
    loading: RwLock<BTreeSet<String>>,
}

impl Registry {
    pub fn new(
        plugins_dir: PathBuf,
        cache: Option<PluginCache>,
        bundled: &[(&str, &[u8])],
    ) -> Self {
        let cache_dir = cache.as_ref().map(|cache| cache.dir.clone());
        let loaded_at = now_rfc3339();
        let bundled = bundled
            .iter()
            .map(|(name, wasm)| {
                let plugin = Plugin {
                    info: PluginInfo {
                        name: (*name).to_owned(),
                        source: PluginSource::Bundled,
                        sha256: sha256_hex(wasm),
                        paused_for_ms: None,
                        loaded_at: loaded_at.clone(),
                        path: None,
                        last_error: None,
                        loading: false,
                        contract: None,
                        about: None,
                        trapping_imports: Vec::new(),
                    },
                    wasm: Arc::from(*wasm),
                    cache_dir: cache_dir.clone(),
                    compiled: OnceLock::new(),
                    about: tokio::sync::OnceCell::new(),
                };
                ((*name).to_owned(), Arc::new(plugin))
            })
            .collect();
        Registry {
            plugins_dir,
            cache,
            bundled,
            files: RwLock::default(),
            errors: RwLock::default(),
            stamps: RwLock::default(),
            loading: RwLock::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        let from_file = self
            .files
            .read()
            .ok()
            .and_then(|files| files.get(name).cloned());
        from_file.or_else(|| self.bundled.get(name).cloned())
    }

    /// Why the newest file of `name` failed to load, if it did.
    pub fn load_error(&self, name: &str) -> Option<PluginError> {
        self.errors
            .read()
            .ok()
            .and_then(|errors| errors.get(name).cloned())
    }

    /// A file of this name serves instead of the bundled plugin.
    pub fn overridden(&self, name: &str) -> bool {
        self.files
            .read()
            .is_ok_and(|files| files.contains_key(name))
    }

    pub fn bundled(&self) -> Vec<Arc<Plugin>> {
        self.bundled.values().cloned().collect()
    }

    /// Every serving version, bundled ones a file overrides included.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        let mut all: Vec<Arc<Plugin>> = self.bundled.values().cloned().collect();
        if let Ok(files) = self.files.read() {
            all.extend(files.values().cloned());
        }
        all
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let mut rows: BTreeMap<String, PluginInfo> = self
            .bundled
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.row()))
            .collect();
        if let Ok(files) = self.files.read() {
            for (name, plugin) in files.iter() {
                rows.insert(name.clone(), plugin.row());
            }
        }
        if let Ok(errors) = self.errors.read() {
            for (name, error) in errors.iter() {
                self.file_row(&mut rows, name).last_error = Some(error.to_string());
            }
        }
        if let Ok(loading) = self.loading.read() {
            for name in loading.iter() {
                self.file_row(&mut rows, name).loading = true;
            }
        }
        rows.into_values().collect()
    }

    /// The listing row of the file plugin `name`, made for a file that serves no version.
    fn file_row<'a>(
        &self,
        rows: &'a mut BTreeMap<String, PluginInfo>,
        name: &str,
    ) -> &'a mut PluginInfo {
        rows.entry(name.to_owned()).or_insert_with(|| PluginInfo {
            name: name.to_owned(),
            source: PluginSource::File,
            sha256: String::new(),
            loaded_at: String::new(),
            path: Some(
                self.plugins_dir
                    .join(format!("{name}.wasm"))
                    .display()
                    .to_string(),
            ),
            last_error: None,
            paused_for_ms: None,
            loading: false,
            contract: None,
            about: None,
            trapping_imports: Vec::new(),
        })
    }

    /// Bring the registry in line with the folder: admit new or changed files that load,
    /// drop removed ones, record failures. Blocking.
    pub fn rescan(&self) {
        let mut seen = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.plugins_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "wasm")
                    && let Some(name) = path.file_stem().and_then(|stem| stem.to_str())
                    // Follows symlinks (`entry.metadata()` does not), so a plugin linked
                    // into the folder, e.g. from a Kubernetes ConfigMap volume, is a file.
                    && let Ok(meta) = std::fs::metadata(&path)
                    && meta.is_file()
                {
                    let stamp = FileStamp {
                        modified: meta.modified().ok(),
                        len: meta.len(),
                        inode: std::os::unix::fs::MetadataExt::ino(&meta),
                    };
                    seen.insert(name.to_owned(), (path, stamp));
                }
            }
        }
        let removed: Vec<String> = self
            .files
            .read()
            .map(|files| {
                files
                    .keys()
                    .filter(|name| !seen.contains_key(*name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(mut errors) = self.errors.write() {
            errors.retain(|name, _| seen.contains_key(name));
        }
        // Forget removed files, so one put back unchanged (same mtime and size, as after
        // `mv` out and back) is loaded again instead of being taken as already seen.
        if let Ok(mut stamps) = self.stamps.write() {
            stamps.retain(|path, _| seen.values().any(|(seen_path, _)| seen_path == path));
        }
        let changed: Vec<(String, PathBuf, FileStamp)> = seen
            .into_iter()
            .filter(|(_, (path, stamp))| {
                self.stamps
                    .read()
                    .map(|stamps| stamps.get(path) != Some(stamp))
                    .unwrap_or(true)
            })
            .map(|(name, (path, stamp))| (name, path, stamp))
            .collect();
        // Every changed file is marked before the first compiles, so while a folder of
        // large components compiles one by one, each of them is reported as loading, not
        // as missing.
        let mut marked = LoadingMarks::new(
            &self.loading,
            changed.iter().map(|(name, _, _)| name.clone()),
        );
        for (name, path, stamp) in changed {
            self.load_file_marked(&name, &path);
            marked.unmark(&name);
            if let Ok(mut stamps) = self.stamps.write() {
                stamps.insert(path, stamp);
            }
        }
        drop(marked);
        // After the loads: a file renamed (`mv a.wasm b.wasm`) is served under its new name
        // by then, so its compiled version is kept rather than dropped and compiled again.
        for name in removed {
            tracing::info!(plugin = %name, "plugin file removed");
            let gone = self
                .files
                .write()
                .ok()
                .and_then(|mut files| files.remove(&name));
            if let Some(gone) = gone {
                self.forget_unless_served(&gone.info.sha256);
            }
        }
    }

    /// Drop a compiled version that no plugin serves any more (another name may serve the
    /// same bytes): from memory, and from the cache folder if this gateway owns it.
    fn forget_unless_served(&self, hash: &str) {
        if !self.served_hashes().iter().any(|served| served == hash) {
            runtime::forget(hash, self.owned_cache_dir());
        }
    }

    /// Delete compiled versions no plugin serves from the cache folder, if this gateway
    /// owns it.
    pub fn prune_cache(&self) {
        if let Some(dir) = self.owned_cache_dir() {
            runtime::prune_cache(dir, &self.served_hashes());
        }
    }

    fn served_hashes(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|plugin| plugin.info.sha256.clone())
            .collect()
    }

    fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|cache| cache.dir.as_path())
    }

    fn owned_cache_dir(&self) -> Option<&Path> {
        self.cache
            .as_ref()
            .filter(|cache| cache.owned)
            .map(|cache| cache.dir.as_path())
    }

    /// Load only the file of `name`, if there is one, leaving the rest of the folder alone
    /// (for `hookgate plugin run`, which needs one plugin, not every one compiled).
    pub fn scan_one(&self, name: &str) {
        let path = self.plugins_dir.join(format!("{name}.wasm"));
        if path.is_file() {
            self.load_file(name, &path);
        }
    }

    pub fn is_loading(&self, name: &str) -> bool {
        self.loading
            .read()
            .is_ok_and(|loading| loading.contains(name))
    }

    fn load_file(&self, name: &str, path: &Path) {
        let _marked = LoadingMarks::new(&self.loading, [name.to_owned()]);
        self.load_file_marked(name, path);
    }

    fn load_file_marked(&self, name: &str, path: &Path) {
        let result = std::fs::read(path)
            .map_err(|error| PluginError::Load(format!("cannot read {}: {error}", path.display())))
            .and_then(|wasm| {
                let hash = sha256_hex(&wasm);
                let same = self
                    .files
                    .read()
                    .ok()
                    .and_then(|files| files.get(name).map(|plugin| plugin.info.sha256 == hash))
                    .unwrap_or(false);
                if same {
                    return Ok(None);
                }
                let compiled = runtime::compile(name, &wasm, &hash, self.cache_dir())?;
                let plugin = Plugin {
                    info: PluginInfo {
                        name: name.to_owned(),
                        source: PluginSource::File,
                        sha256: hash,
                        loaded_at: now_rfc3339(),
                        path: Some(path.display().to_string()),
                        last_error: None,
                        paused_for_ms: None,
                        loading: false,
                        contract: None,
                        about: None,
                        trapping_imports: Vec::new(),
                    },
                    wasm: Arc::from(wasm),
                    cache_dir: self.cache_dir().map(Path::to_owned),
                    compiled: OnceLock::from(Ok(compiled)),
                    about: tokio::sync::OnceCell::new(),
                };
                Ok(Some(plugin))
            });
        match result {
            Ok(None) => {
                // The file is the version already serving (e.g. a good file put back
                // after a broken one): nothing to load, and no longer any error.
                if let Ok(mut errors) = self.errors.write() {
                    errors.remove(name);
                }
            }
            Ok(Some(plugin)) => {
                let row = plugin.row();
                tracing::info!(
                    plugin = %name,
                    sha256 = %row.sha256,
                    contract = ?row.contract,
                    trapping_imports = %row.trapping_imports.join(", "),
                    "plugin loaded"
                );
                let replaced = self
                    .files
                    .write()
                    .ok()
                    .and_then(|mut files| files.insert(name.to_owned(), Arc::new(plugin)));
                if let Some(replaced) = replaced {
                    self.forget_unless_served(&replaced.info.sha256);
                }
                if let Ok(mut errors) = self.errors.write() {
                    errors.remove(name);
                }
            }
            Err(error) => {
                tracing::error!(plugin = %name, path = %path.display(), %error, "plugin failed to load; the previous version keeps serving");
                if let Ok(mut errors) = self.errors.write() {
                    errors.insert(name.to_owned(), error);
                }
            }
        }
    }
}

/// Names marked as loading until each is unmarked or the marks are dropped, so a load that
/// panics does not leave its plugin reported as loading for ever.
struct LoadingMarks<'a> {
    loading: &'a RwLock<BTreeSet<String>>,
    names: Vec<String>,
}

impl<'a> LoadingMarks<'a> {
    fn new(loading: &'a RwLock<BTreeSet<String>>, names: impl IntoIterator<Item = String>) -> Self {
        let names: Vec<String> = names.into_iter().collect();
        if let Ok(mut set) = loading.write() {
            set.extend(names.iter().cloned());
        }
        LoadingMarks { loading, names }
    }

    fn unmark(&mut self, name: &str) {
        self.names.retain(|marked| marked != name);
        if let Ok(mut set) = self.loading.write() {
            set.remove(name);
        }
    }
}

impl Drop for LoadingMarks<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.loading.write() {
            for name in &self.names {
                set.remove(name);
            }
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
