//! Test harness: the real gateway in-process on port 0 with a temp data folder, real
//! receivers on port 0 that record what arrives, and typed helpers for the API.
//!
//! The store is SQLite in each gateway's temp folder, or PostgreSQL when
//! `HOOKGATE_TEST_STORE=postgres`: then each test binary makes a fresh database on the
//! server at `HOOKGATE_TEST_PG` (default `postgres://root@127.0.0.1:5432`) and each gateway
//! gets a fresh schema in it, so the whole suite runs unchanged on either store.
#![allow(dead_code, unused_imports)] // each test file uses its own subset

pub mod binary;
pub mod browser;
pub mod plugins;
pub mod postgres;
pub mod python;
pub mod receiver;

use hookgate::app::App;
use hookgate::config::Config;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use postgres::test_store;
pub use receiver::Receiver;

pub const API_KEY: &str = "test-key";

/// A running gateway.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// The store URL it was started with (`None`: SQLite in the data folder), for a restart.
    pub store: Option<String>,
    _temp: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Defaults for tests: loopback allowed, fast retries, a shared plugin compile cache.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_owned(),
        api_keys: vec![API_KEY.into()],
        egress_allow: vec!["127.0.0.0/8".into()],
        ..Config::default()
    };
    config.retry.base_delay_ms = 50;
    config.retry.max_delay_ms = 1_000;
    config.retry.request_timeout_ms = 5_000;
    config.delivery.poll_interval_ms = 200;
    config.plugins.reload_interval_ms = 100;
    config.plugins.cache_dir = Some(plugin_cache_dir());
    // Many tests fail hundreds of deliveries to one receiver on purpose; the breaker's own
    // tests turn it on.
    config.delivery.breaker_after_failures = 0;
    config
}

pub fn plugin_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// The folder holding every plugin of plugins/ built for wasm32-wasip2 (test ones too).
pub fn built_plugin(stem: &str) -> PathBuf {
    PathBuf::from(env!("HOOKGATE_BUILT_PLUGINS_DIR")).join(format!("{stem}.wasm"))
}

/// Install the built test or bundled plugin `built` as `<dir>/<name>.wasm`, atomically.
pub fn install_plugin(dir: &Path, built: &str, name: &str) {
    install_plugin_bytes(dir, name, &std::fs::read(built_plugin(built)).unwrap());
}

pub fn install_plugin_bytes(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let partial = dir.join(format!("{name}.wasm.part"));
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, dir.join(format!("{name}.wasm"))).unwrap();
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(temp.path());
    config.store = test_store().await;
    adjust(&mut config);
    let data_dir = config.data_dir.clone();
    let mut app = start(config).await;
    app._temp = Some(temp);
    app.data_dir = data_dir;
    app
}

pub async fn start(config: Config) -> TestApp {
    let data_dir = config.data_dir.clone();
    let store = config.store.clone();
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        data_dir,
        store,
        _temp: None,
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shut down gracefully and wait until the gateway has stopped; keeps the data folder.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app ran cleanly");
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(API_KEY)
                .json(body),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(API_KEY))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .put(self.url(path))
                .bearer_auth(API_KEY)
                .json(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(self.url(path)).bearer_auth(API_KEY))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("gateway answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Post one event; asserts 202 and returns the answer.
    pub async fn ingest(&self, event: Value) -> Value {
        let (status, body) = self.post("/api/v1/events", &event).await;
        assert_eq!(status, 202, "ingest answered {status}: {body}");
        body
    }

    /// The value of the unlabelled metric `name` (e.g. `hookgate_deliveries_handed_off_total`).
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200);
        let text = text.as_str().expect("metrics are text").to_owned();
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
    }

    pub async fn delivery(&self, delivery_id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/deliveries/{delivery_id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Post one event and wait until its first delivery reaches `status`; returns that
    /// delivery's id.
    pub async fn ingest_until(&self, event: Value, status: &str, within: Duration) -> String {
        let accepted = self.ingest(event).await;
        let delivery_id = delivery_id(&accepted, 0);
        self.wait_for_status(&delivery_id, status, within).await;
        delivery_id
    }

    /// Wait until the delivery reaches `status`; panics with its state after `within`.
    pub async fn wait_for_status(
        &self,
        delivery_id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let delivery = self.delivery(delivery_id).await;
            if delivery["status"] == status {
                return delivery;
            }
            assert!(
                Instant::now() < deadline,
                "delivery never became {status}: {delivery:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An event for `webhook_url` with the given extra configuration fields.
pub fn event_to(event_type: &str, webhook: Value) -> Value {
    json!({
        "event_type": event_type,
        "data": {"id": "job-1", "job_id": "job-1", "pages": 3},
        "webhook_configurations": [webhook],
    })
}

/// The id of the `index`th delivery in an ingest answer.
pub fn delivery_id(accepted: &Value, index: usize) -> String {
    accepted["deliveries"][index]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no delivery {index} in {accepted}"))
        .to_owned()
}

/// `program` with only the variables a nested build needs (the tools' homes, the path): the
/// test's own cargo variables would point a nested cargo at the gateway's target and flags.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_clear();
    const KEPT: &[&str] = &[
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    // Proxies and the package managers' own settings, so npm and pip reach their registry
    // the way they do outside the test.
    const KEPT_PREFIXES: &[&str] = &[
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "NPM_CONFIG_",
        "PIP_",
    ];
    for (name, value) in std::env::vars_os() {
        let Some(text) = name.to_str() else {
            continue;
        };
        let upper = text.to_ascii_uppercase();
        if KEPT.contains(&text) || KEPT_PREFIXES.iter().any(|prefix| upper.starts_with(prefix)) {
            command.env(&name, value);
        }
    }
    command
}

/// An API timestamp (ISO 8601 UTC, `2026-11-30T23:54:16.123Z`) as epoch milliseconds;
/// `None` when it is not a string in that form.
pub fn iso_millis(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    if !text.ends_with('Z') {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_millis())
}
