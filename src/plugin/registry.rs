//! The set of installed plugins and the folder scan that keeps it current.

use super::PluginError;
use super::runtime::{self, Compiled};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginSource {
    Bundled,
    File,
}

/// One row of `GET /api/v1/plugins`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub source: PluginSource,
    /// SHA-256 of the component bytes, hex.
    pub sha256: String,
    /// When the serving version was loaded (RFC 3339).
    pub loaded_at: String,
    pub path: Option<String>,
    /// Why the newest file failed to load, while an older version (or none) serves.
    pub last_error: Option<String>,
    /// Set while the plugin's breaker has it paused: milliseconds until its probe call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_for_ms: Option<u64>,
}

/// A plugin version. Bundled plugins compile on first use (they are known good and most
/// gateways use few of them); files compile before they are admitted.
pub struct Plugin {
    pub info: PluginInfo,
    wasm: Arc<[u8]>,
    cache_dir: Option<PathBuf>,
    compiled: OnceLock<Result<Compiled, PluginError>>,
}

impl Plugin {
    pub fn compiled(&self) -> Result<Compiled, PluginError> {
        self.compiled
            .get_or_init(|| {
                runtime::compile(&self.wasm, &self.info.sha256, self.cache_dir.as_deref())
            })
            .clone()
    }

    /// The compiled component if compiling is already done, without blocking.
    pub fn compiled_if_ready(&self) -> Option<Result<Compiled, PluginError>> {
        self.compiled.get().cloned()
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
    cache_dir: Option<PathBuf>,
    bundled: BTreeMap<String, Arc<Plugin>>,
    files: RwLock<BTreeMap<String, Arc<Plugin>>>,
    errors: RwLock<BTreeMap<String, String>>,
    stamps: RwLock<HashMap<PathBuf, FileStamp>>,
}

impl Registry {
    pub fn new(
        plugins_dir: PathBuf,
        cache_dir: Option<PathBuf>,
        bundled: &[(&str, &[u8])],
    ) -> Self {
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
                    },
                    wasm: Arc::from(*wasm),
                    cache_dir: cache_dir.clone(),
                    compiled: OnceLock::new(),
                };
                ((*name).to_owned(), Arc::new(plugin))
            })
            .collect();
        Registry {
            plugins_dir,
            cache_dir,
            bundled,
            files: RwLock::default(),
            errors: RwLock::default(),
            stamps: RwLock::default(),
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

    pub fn list(&self) -> Vec<PluginInfo> {
        let mut rows: BTreeMap<String, PluginInfo> = self
            .bundled
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.info.clone()))
            .collect();
        if let Ok(files) = self.files.read() {
            for (name, plugin) in files.iter() {
                rows.insert(name.clone(), plugin.info.clone());
            }
        }
        if let Ok(errors) = self.errors.read() {
            for (name, error) in errors.iter() {
                let row = rows.entry(name.clone()).or_insert_with(|| PluginInfo {
                    name: name.clone(),
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
                });
                row.last_error = Some(error.clone());
            }
        }
        rows.into_values().collect()
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
        for name in removed {
            tracing::info!(plugin = %name, "plugin file removed");
            if let Ok(mut files) = self.files.write() {
                files.remove(&name);
            }
        }
        if let Ok(mut errors) = self.errors.write() {
            errors.retain(|name, _| seen.contains_key(name));
        }
        // Forget removed files, so one put back unchanged (same mtime and size, as after
        // `mv` out and back) is loaded again instead of being taken as already seen.
        if let Ok(mut stamps) = self.stamps.write() {
            stamps.retain(|path, _| seen.values().any(|(seen_path, _)| seen_path == path));
        }
        for (name, (path, stamp)) in seen {
            let unchanged = self
                .stamps
                .read()
                .map(|stamps| stamps.get(&path) == Some(&stamp))
                .unwrap_or(false);
            if !unchanged {
                self.load_file(&name, &path);
                if let Ok(mut stamps) = self.stamps.write() {
                    stamps.insert(path, stamp);
                }
            }
        }
    }

    fn load_file(&self, name: &str, path: &Path) {
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
                let compiled = runtime::compile(&wasm, &hash, self.cache_dir.as_deref())?;
                let plugin = Plugin {
                    info: PluginInfo {
                        name: name.to_owned(),
                        source: PluginSource::File,
                        sha256: hash,
                        loaded_at: now_rfc3339(),
                        path: Some(path.display().to_string()),
                        last_error: None,
                        paused_for_ms: None,
                    },
                    wasm: Arc::from(wasm),
                    cache_dir: self.cache_dir.clone(),
                    compiled: OnceLock::from(Ok(compiled)),
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
                tracing::info!(plugin = %name, sha256 = %plugin.info.sha256, "plugin loaded");
                if let Ok(mut files) = self.files.write() {
                    files.insert(name.to_owned(), Arc::new(plugin));
                }
                if let Ok(mut errors) = self.errors.write() {
                    errors.remove(name);
                }
            }
            Err(error) => {
                tracing::error!(plugin = %name, path = %path.display(), %error, "plugin failed to load; the previous version keeps serving");
                if let Ok(mut errors) = self.errors.write() {
                    errors.insert(name.to_owned(), error.to_string());
                }
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
