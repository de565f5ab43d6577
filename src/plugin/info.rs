//! What the plugin listing (`GET /api/v1/plugins`) says about each plugin: where it came
//! from, which version serves, what compiling found and what the plugin says about itself.

use super::runtime::{self, Contract};
use serde::Serialize;

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
    /// Set while a new or changed file of this name is being read and compiled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub loading: bool,
    /// The contract the serving version implements (`0.2.0` or `0.1.0`); `null` until it
    /// is compiled (bundled plugins compile in the background at start).
    pub contract: Option<Contract>,
    /// What a 0.2.0 plugin says about itself.
    pub about: Option<About>,
    /// Imports the component declares that run code: hookgate provides none, so each traps
    /// if called, and the delivery that called it is dead-lettered with the import's name.
    pub trapping_imports: Vec<String>,
}

/// A 0.2.0 plugin's own description (WIT `plugin-info`).
#[derive(Debug, Clone, Serialize)]
pub struct About {
    pub name: String,
    pub version: String,
    pub description: String,
    /// A JSON Schema of its config (the plugin's text, when that is not JSON).
    pub config_schema: Option<serde_json::Value>,
}

impl From<runtime::wit::PluginInfo> for About {
    fn from(info: runtime::wit::PluginInfo) -> Self {
        About {
            name: info.name,
            version: info.version,
            description: info.description,
            config_schema: info
                .config_schema
                .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))),
        }
    }
}
