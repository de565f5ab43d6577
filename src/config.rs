//! The configuration tree: built-in defaults, then the TOML file, then `HOOKGATE_*`
//! environment variables, then command-line flags; validated before anything starts.
//!
//! Plain data with documented defaults; `app` turns it into live components.

use crate::routing::WebhookConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API binds to.
    pub listen: String,
    /// Folder for the SQLite database, the generated API key and the plugin compile cache.
    pub data_dir: PathBuf,
    /// Folder watched for `.wasm` transform plugins; defaults to `<data_dir>/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// Where the queue lives: `sqlite:PATH`, or `postgres://USER@HOST:PORT/DB[?options]`
    /// (also `postgresql://`) to share it between nodes; SQLite `hookgate.sqlite3` in
    /// `data_dir` when absent. The PostgreSQL URL may add `pool_size=N` (default 16) and
    /// libpq settings such as `options=-c%20search_path%3DSCHEMA`; no TLS yet.
    pub store: Option<String>,
    /// Accepted API keys (`Authorization: Bearer <key>`). When empty, a key is generated once
    /// and kept in `<data_dir>/api_key` (SQLite) or in the database for every node
    /// (PostgreSQL).
    pub api_keys: Vec<String>,
    /// `api_keys` came from `HOOKGATE_API_KEY` (for the start-up log; not a setting).
    #[serde(skip)]
    pub api_keys_from_env: bool,
    /// CIDRs destinations may resolve into despite being loopback/private/link-local, or `*`.
    pub egress_allow: Vec<String>,
    /// `User-Agent` on every request; LlamaCloud's by default, for receivers that check it.
    pub user_agent: String,
    /// How long a saved configuration's replaced signing secret keeps signing beside the
    /// new one; 0 ends it at once.
    pub secret_rotation_window_ms: u64,
    pub retry: RetryConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub plugins: PluginLimitsConfig,
    pub retention: RetentionConfig,
    /// Operator routes: destinations that receive every matching event.
    pub routes: Vec<RouteConfig>,
    /// Settings per destination host (as logs name it: lower case, port only when not the
    /// scheme's default), e.g. `[destinations."api.example.com"] rate_per_second = 10`.
    pub destinations: std::collections::BTreeMap<String, DestinationConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationConfig {
    /// Requests a second this host receives at most, from all nodes together.
    pub rate_per_second: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before retry n is `base_delay_ms * 2^(n-1)`...
    pub base_delay_ms: u64,
    /// ...never more than this; also the cap on a receiver's `Retry-After`.
    pub max_delay_ms: u64,
    /// Per-request timeout, connect to last body byte.
    pub request_timeout_ms: u64,
    /// Spread each wait uniformly over [wait/2, wait] so retries from one outage do not
    /// arrive together.
    pub jitter: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Requests in flight across all destinations.
    pub max_in_flight: usize,
    /// Requests in flight to one destination (scheme, host and port), so a slow receiver
    /// cannot take every worker.
    pub max_in_flight_per_destination: usize,
    /// Most deliveries claimed per store round trip.
    pub claim_batch: usize,
    /// Idle poll interval; new events wake the dispatcher at once regardless.
    pub poll_interval_ms: u64,
    /// Bytes of a response body kept on the attempt record.
    pub response_body_bytes: usize,
    /// How long a claim or hand-over holds a delivery. The holder renews it every quarter of
    /// this while the delivery runs or waits for a slot, so it bounds only how soon a dead
    /// process's deliveries are taken up again, not how long an attempt may take.
    pub lease_ms: u64,
    /// How often this process reports itself in the store's node list. Nodes not heard from
    /// for three of these are not counted when the destination caps are shared out.
    pub node_heartbeat_ms: u64,
    /// Sent attempts in a row to one destination that fail before it is paused (its
    /// deliveries wait without spending attempts, one probe after the pause); 0 never
    /// pauses.
    pub breaker_after_failures: u32,
    /// A destination's first pause; each failed probe doubles it, up to the maximum.
    pub breaker_first_pause_ms: u64,
    pub breaker_max_pause_ms: u64,
    /// Where `hookgate.destination.paused` and `hookgate.destination.resumed` events go
    /// when a destination is paused or resumed; none when unset.
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body on `POST /api/v1/events`.
    pub max_event_bytes: usize,
    /// Largest request body on `POST /api/v1/events/batch`.
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Deliveries queued or in flight past which ingest answers 429 with `Retry-After`
    /// instead of letting the backlog grow without bound; 0 for no cap. Counted every
    /// second (on SQLite every 10 s while below a quarter of it) and kept current from this
    /// node's own ingest in between, so other nodes' ingest can overshoot it by what they
    /// accept in that second.
    pub max_queued: u64,
    /// Rows a delivery search reads for one page at most: a page with fewer matches than
    /// asked for, and a next page token, means the search goes on further back.
    pub search_scan_rows: usize,
    /// Most deliveries one bulk replay queues again.
    pub replay_max_deliveries: usize,
    /// A bulk replay waits while more deliveries than this are queued or in flight, so it
    /// feeds the engine no faster than it drains.
    pub replay_queue_ceiling: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimitsConfig {
    /// Wall-clock CPU budget of one plugin call, enforced by epoch interruption.
    pub timeout_ms: u64,
    /// Linear memory one plugin instance may grow to.
    pub max_memory_bytes: usize,
    /// Largest request (body plus headers and URL) a plugin may return. Also bounds what the
    /// host copies out of the guest for one result, error or skip reason.
    pub max_output_bytes: usize,
    /// Plugin calls running at once across all plugins (at most 128). With the memory and
    /// output caps this bounds the host memory plugins can hold.
    pub max_concurrent_calls: usize,
    /// Calls of one plugin running at once, so one plugin cannot hold every call slot.
    pub max_concurrent_per_plugin: usize,
    /// Consecutive calls that exhaust their CPU budget before a plugin is paused: its
    /// deliveries wait in the queue (no attempt spent) while one probe call is let through
    /// after a pause that doubles from 1 s up to `max_pause_ms`.
    pub pause_after_overruns: u32,
    pub max_pause_ms: u64,
    /// How often the plugins folder is checked for added, changed or removed files.
    pub reload_interval_ms: u64,
    /// Where compiled plugins are cached by content hash; `<data_dir>/plugin-cache` when
    /// absent, which holds only the versions served (others are deleted). A folder set here
    /// may be shared by several gateways (or test runs) and is never pruned.
    pub cache_dir: Option<PathBuf>,
}

/// How long finished work is kept. Finished deliveries (succeeded, failed, skipped), their
/// attempts, and events left without deliveries are deleted once they finished more than
/// `max_age_ms` ago; queued and in-flight work and saved configurations never are.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Age past which finished work is deleted, counted from when it finished (an event
    /// with no deliveries: from when it was accepted). 0 keeps everything forever.
    pub max_age_ms: u64,
    /// How often to look for work past that age.
    pub interval_ms: u64,
    /// Most deliveries (or events scanned) deleted in one transaction; sweeps run batch
    /// after batch so that ingest and claims go on in between.
    pub batch: usize,
}

/// An operator route: a webhook configuration plus a name and an optional project scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Only events of this project; every project when absent.
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(flatten)]
    pub webhook: WebhookConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            plugins_dir: None,
            store: None,
            api_keys: Vec::new(),
            api_keys_from_env: false,
            egress_allow: Vec::new(),
            user_agent: "llamaindex-webhook-service/1.0".into(),
            secret_rotation_window_ms: 24 * 60 * 60 * 1000,
            retry: RetryConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            plugins: PluginLimitsConfig::default(),
            retention: RetentionConfig::default(),
            routes: Vec::new(),
            destinations: Default::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 60_000,
            request_timeout_ms: 30_000,
            jitter: false,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_in_flight: 512,
            max_in_flight_per_destination: 64,
            claim_batch: 256,
            poll_interval_ms: 1_000,
            response_body_bytes: 1_024,
            lease_ms: 20_000,
            node_heartbeat_ms: 5_000,
            breaker_after_failures: 20,
            breaker_first_pause_ms: 10_000,
            breaker_max_pause_ms: 600_000,
            notify_url: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: 1 << 20,
            max_batch_bytes: 32 << 20,
            max_batch_events: 1_000,
            max_queued: 1_000_000,
            search_scan_rows: 5_000,
            replay_max_deliveries: 100_000,
            replay_queue_ceiling: 10_000,
        }
    }
}

impl Default for PluginLimitsConfig {
    fn default() -> Self {
        PluginLimitsConfig {
            timeout_ms: 100,
            max_memory_bytes: 64 << 20,
            max_output_bytes: 4 << 20,
            max_concurrent_calls: 16,
            max_concurrent_per_plugin: 4,
            pause_after_overruns: 5,
            max_pause_ms: 60_000,
            reload_interval_ms: 1_000,
            cache_dir: None,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_ms: 7 * 24 * 3_600_000,
            interval_ms: 60_000,
            // About 10 ms of SQLite's writer thread per batch (debug build, 2 shared cores),
            // 4 ms of a PostgreSQL transaction.
            batch: 200,
        }
    }
}

impl RetentionConfig {
    /// Whether anything is ever deleted.
    pub fn enabled(&self) -> bool {
        self.max_age_ms > 0
    }
}

/// A human duration in milliseconds: a whole number with a unit, `500ms`, `90s`, `30m`,
/// `12h` or `7d`; `0` and `off` mean zero.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d (e.g. 7d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit; use ms, s, m, h or d (e.g. 7d)"
            ));
        }
    };
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file at `path` if any, then the environment as `lookup` sees it.
    pub fn load(
        path: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(lookup)?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn number<T: std::str::FromStr>(
            name: &'static str,
            value: String,
        ) -> Result<T, ConfigError> {
            value.trim().parse().map_err(|_| ConfigError::Env {
                name,
                message: format!("{value:?} is not a valid number"),
            })
        }
        fn list(value: &str) -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        }
        if let Some(value) = lookup("HOOKGATE_LISTEN") {
            self.listen = value;
        }
        if let Some(value) = lookup("HOOKGATE_DATA_DIR") {
            self.data_dir = value.into();
        }
        if let Some(value) = lookup("HOOKGATE_PLUGINS_DIR") {
            self.plugins_dir = Some(value.into());
        }
        if let Some(value) = lookup("HOOKGATE_STORE") {
            self.store = Some(value);
        }
        if let Some(value) = lookup("HOOKGATE_API_KEY") {
            self.api_keys = list(&value);
            self.api_keys_from_env = true;
        }
        if let Some(value) = lookup("HOOKGATE_EGRESS_ALLOW") {
            self.egress_allow = list(&value);
        }
        if let Some(value) = lookup("HOOKGATE_USER_AGENT") {
            self.user_agent = value;
        }
        if let Some(value) = lookup("HOOKGATE_SECRET_ROTATION_WINDOW") {
            self.secret_rotation_window_ms =
                parse_duration_ms(&value).map_err(|message| ConfigError::Env {
                    name: "HOOKGATE_SECRET_ROTATION_WINDOW",
                    message,
                })?;
        }
        if let Some(value) = lookup("HOOKGATE_RETRY_MAX_ATTEMPTS") {
            self.retry.max_attempts = number("HOOKGATE_RETRY_MAX_ATTEMPTS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_RETRY_BASE_DELAY_MS") {
            self.retry.base_delay_ms = number("HOOKGATE_RETRY_BASE_DELAY_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_RETRY_MAX_DELAY_MS") {
            self.retry.max_delay_ms = number("HOOKGATE_RETRY_MAX_DELAY_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_RETRY_JITTER") {
            self.retry.jitter = matches!(value.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(value) = lookup("HOOKGATE_REQUEST_TIMEOUT_MS") {
            self.retry.request_timeout_ms = number("HOOKGATE_REQUEST_TIMEOUT_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_MAX_IN_FLIGHT") {
            self.delivery.max_in_flight = number("HOOKGATE_MAX_IN_FLIGHT", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_MAX_IN_FLIGHT_PER_DESTINATION") {
            self.delivery.max_in_flight_per_destination =
                number("HOOKGATE_MAX_IN_FLIGHT_PER_DESTINATION", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_POLL_INTERVAL_MS") {
            self.delivery.poll_interval_ms = number("HOOKGATE_POLL_INTERVAL_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_LEASE_MS") {
            self.delivery.lease_ms = number("HOOKGATE_LEASE_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_BREAKER_AFTER_FAILURES") {
            self.delivery.breaker_after_failures =
                number("HOOKGATE_BREAKER_AFTER_FAILURES", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_BREAKER_FIRST_PAUSE_MS") {
            self.delivery.breaker_first_pause_ms =
                number("HOOKGATE_BREAKER_FIRST_PAUSE_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_BREAKER_MAX_PAUSE_MS") {
            self.delivery.breaker_max_pause_ms = number("HOOKGATE_BREAKER_MAX_PAUSE_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_NOTIFY_URL") {
            self.delivery.notify_url = Some(value);
        }
        if let Some(value) = lookup("HOOKGATE_NODE_HEARTBEAT_MS") {
            self.delivery.node_heartbeat_ms = number("HOOKGATE_NODE_HEARTBEAT_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_PLUGIN_RELOAD_MS") {
            self.plugins.reload_interval_ms = number("HOOKGATE_PLUGIN_RELOAD_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_PLUGIN_CACHE_DIR") {
            self.plugins.cache_dir = Some(value.into());
        }
        if let Some(value) = lookup("HOOKGATE_PLUGIN_TIMEOUT_MS") {
            self.plugins.timeout_ms = number("HOOKGATE_PLUGIN_TIMEOUT_MS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_MAX_QUEUED") {
            self.limits.max_queued = number("HOOKGATE_MAX_QUEUED", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_REPLAY_MAX_DELIVERIES") {
            self.limits.replay_max_deliveries = number("HOOKGATE_REPLAY_MAX_DELIVERIES", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_REPLAY_QUEUE_CEILING") {
            self.limits.replay_queue_ceiling = number("HOOKGATE_REPLAY_QUEUE_CEILING", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_RATE_LIMITS") {
            for pair in list(&value) {
                let (host, rate) = pair.split_once('=').ok_or_else(|| ConfigError::Env {
                    name: "HOOKGATE_RATE_LIMITS",
                    message: format!("{pair:?} is not HOST=REQUESTS_PER_SECOND"),
                })?;
                let rate = number("HOOKGATE_RATE_LIMITS", rate.to_owned())?;
                self.destinations
                    .entry(host.trim().to_owned())
                    .or_default()
                    .rate_per_second = Some(rate);
            }
        }
        if let Some(value) = lookup("HOOKGATE_SEARCH_SCAN_ROWS") {
            self.limits.search_scan_rows = number("HOOKGATE_SEARCH_SCAN_ROWS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_PLUGIN_MAX_CONCURRENT_CALLS") {
            self.plugins.max_concurrent_calls =
                number("HOOKGATE_PLUGIN_MAX_CONCURRENT_CALLS", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_PLUGIN_MAX_CONCURRENT_PER_PLUGIN") {
            self.plugins.max_concurrent_per_plugin =
                number("HOOKGATE_PLUGIN_MAX_CONCURRENT_PER_PLUGIN", value)?;
        }
        if let Some(value) = lookup("HOOKGATE_RETENTION") {
            self.retention.max_age_ms =
                parse_duration_ms(&value).map_err(|message| ConfigError::Env {
                    name: "HOOKGATE_RETENTION",
                    message,
                })?;
        }
        Ok(())
    }

    /// The configured rates by host, in the form logs and the engine name hosts.
    pub fn rate_limits(&self) -> std::collections::HashMap<String, f64> {
        self.destinations
            .iter()
            .filter_map(|(host, destination)| {
                Some((
                    crate::domain::host_filter(host)?,
                    destination.rate_per_second?,
                ))
            })
            .collect()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// Checks that need no I/O; route URLs and plugins are checked when the app is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts must be at least 1");
        }
        if self.retry.request_timeout_ms == 0 {
            return invalid("retry.request_timeout_ms must be positive");
        }
        if self.delivery.max_in_flight == 0 || self.delivery.max_in_flight_per_destination == 0 {
            return invalid(
                "delivery.max_in_flight and max_in_flight_per_destination must be positive",
            );
        }
        if self.delivery.claim_batch == 0 {
            return invalid("delivery.claim_batch must be positive");
        }
        if self.delivery.lease_ms < 100 {
            return invalid("delivery.lease_ms must be at least 100");
        }
        if self.delivery.node_heartbeat_ms < 10 {
            return invalid("delivery.node_heartbeat_ms must be at least 10");
        }
        if !(1..=crate::plugin::runtime::POOL_INSTANCES as usize)
            .contains(&self.plugins.max_concurrent_calls)
        {
            return invalid("plugins.max_concurrent_calls must be between 1 and 128");
        }
        if self.plugins.max_concurrent_per_plugin == 0 {
            return invalid("plugins.max_concurrent_per_plugin must be at least 1");
        }
        if self.plugins.pause_after_overruns == 0 || self.plugins.max_pause_ms < 1_000 {
            return invalid(
                "plugins.pause_after_overruns must be at least 1 and plugins.max_pause_ms at least 1000",
            );
        }
        if self.retention.interval_ms < 10 {
            return invalid("retention.interval_ms must be at least 10");
        }
        if self.retention.batch == 0 {
            return invalid("retention.batch must be positive");
        }
        if self.limits.search_scan_rows == 0 {
            return invalid("limits.search_scan_rows must be at least 1");
        }
        for (host, destination) in &self.destinations {
            if crate::domain::host_filter(host).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "destinations.{host:?}: is not a host, or host:port"
                )));
            }
            if let Some(rate) = destination.rate_per_second
                && !(rate.is_finite() && rate >= crate::deliver::rate::MIN_RATE_PER_SECOND)
            {
                return Err(ConfigError::Invalid(format!(
                    "destinations.{host:?}.rate_per_second: must be at least {}",
                    crate::deliver::rate::MIN_RATE_PER_SECOND
                )));
            }
        }
        if let Some(url) = &self.delivery.notify_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("delivery.notify_url must be an http(s) URL");
        }
        if self.limits.replay_max_deliveries == 0 {
            return invalid("limits.replay_max_deliveries must be at least 1");
        }
        crate::store::StoreUrl::parse(self.store.as_deref(), &self.data_dir)
            .map_err(|error| ConfigError::Invalid(format!("store: {error}")))?;
        let mut names = std::collections::BTreeSet::new();
        for route in &self.routes {
            if !names.insert(route.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "route name {:?} is used twice",
                    route.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_values() {
        let env = |name: &str| match name {
            "HOOKGATE_RETRY_MAX_ATTEMPTS" => Some("5".to_owned()),
            "HOOKGATE_EGRESS_ALLOW" => Some("127.0.0.0/8, ::1/128".to_owned()),
            _ => None,
        };
        let mut config =
            Config::from_toml("[retry]\nmax_attempts = 2\nbase_delay_ms = 10\n").unwrap();
        config.apply_env(env).unwrap();
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.retry.base_delay_ms, 10);
        assert_eq!(config.egress_allow, vec!["127.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn a_bad_number_in_the_environment_names_the_variable() {
        let env = |name: &str| (name == "HOOKGATE_REQUEST_TIMEOUT_MS").then(|| "soon".to_owned());
        let error = Config::load(None, env).unwrap_err().to_string();
        assert!(error.contains("HOOKGATE_REQUEST_TIMEOUT_MS"), "{error}");
    }

    #[test]
    fn retention_takes_a_human_duration() {
        for (text, ms) in [
            ("7d", 7 * 86_400_000),
            ("12h", 12 * 3_600_000),
            ("30m", 1_800_000),
            ("90s", 90_000),
            ("500ms", 500),
            (" 1s ", 1_000),
            ("0", 0),
            ("off", 0),
        ] {
            let env = |name: &str| (name == "HOOKGATE_RETENTION").then(|| text.to_owned());
            let config = Config::load(None, env).unwrap();
            assert_eq!(config.retention.max_age_ms, ms, "{text}");
            assert_eq!(config.retention.enabled(), ms > 0, "{text}");
        }
        assert_eq!(Config::default().retention.max_age_ms, 7 * 86_400_000);
    }

    #[test]
    fn a_bad_retention_names_the_variable() {
        for text in ["7", "7 days", "d", "-1d", "1.5h", "99999999999999999d", ""] {
            let env = |name: &str| (name == "HOOKGATE_RETENTION").then(|| text.to_owned());
            let error = Config::load(None, env).unwrap_err().to_string();
            assert!(error.contains("HOOKGATE_RETENTION"), "{text}: {error}");
        }
    }

    #[test]
    fn an_unknown_store_scheme_fails_validation() {
        let config = Config {
            store: Some("redis://localhost".to_owned()),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("store") && error.contains("redis"),
            "{error}"
        );
        let config = Config {
            store: Some("postgres://root@localhost/hookgate".to_owned()),
            ..Config::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../hookgate.example.toml");
        let config = Config::from_toml(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.rate_limits().get("inn.gs"), Some(&50.0));
        assert!(
            config
                .routes
                .iter()
                .any(|route| route.webhook.webhook_transform.as_deref() == Some("inngest"))
        );
    }
}
