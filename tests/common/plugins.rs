//! Helpers for the plugin tests: a gateway with a plugins folder, the listing, waiting for a
//! version to serve, delivering through a plugin, and running the `hookgate plugin` CLI.

use super::receiver::Received;
use super::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::{install_plugin as install, install_plugin_bytes as install_bytes};

pub const WAIT: Duration = Duration::from_secs(10);

/// Copy the built test plugin `built` into `dir` as `<name>.wasm`, atomically: write a
/// temp file the scan ignores (wrong extension), then rename it over the target.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::new();
    (0..len).map(|_| rng.u8(..)).collect()
}

pub fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn built_sha(built: &str) -> String {
    sha256_of(&std::fs::read(built_plugin(built)).unwrap())
}

pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A gateway whose plugins folder (inside its data folder) starts with `installs`
/// (`(built plugin, installed name)`), fast reloads and short plugin limits.
pub async fn gateway(
    installs: &[(&str, &str)],
    adjust: impl FnOnce(&mut hookgate::config::Config),
) -> (TestApp, PathBuf) {
    let mut dir = PathBuf::new();
    let app = spawn_app_with(|config| {
        dir = config.data_dir.join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        for (built, name) in installs {
            install(&dir, built, name);
        }
        config.plugins_dir = Some(dir.clone());
        config.plugins.timeout_ms = 50;
        adjust(config);
    })
    .await;
    (app, dir)
}

pub async fn plugin_rows(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/api/v1/plugins").await;
    assert_eq!(status, 200, "{body}");
    body["plugins"].as_array().expect("plugins list").clone()
}

/// Poll the listing until `ok` holds for the row named `name` (None when absent).
pub async fn wait_plugin(
    app: &TestApp,
    name: &str,
    what: &str,
    ok: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = plugin_rows(app).await;
        let row = rows.iter().find(|row| row["name"] == name).cloned();
        if ok(row.as_ref()) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "plugin {name} never {what}: {:#}",
            Value::from(rows.clone())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `name` serves the component with hash `sha` and has no load error.
pub async fn wait_serving(app: &TestApp, name: &str, sha: &str) -> Value {
    wait_plugin(app, name, &format!("served {sha}"), |row| {
        row.is_some_and(|row| row["sha256"] == sha && row["last_error"].is_null())
    })
    .await
    .unwrap()
}

/// One destination using `plugin`, failing at the first failed attempt.
pub fn through(url: String, plugin: &str) -> Value {
    json!({"webhook_url": url, "webhook_transform": plugin, "webhook_retry": {"max_attempts": 1}})
}

pub async fn assert_unknown_plugin(app: &TestApp, name: &str) {
    let (status, body) = app
        .post(
            "/api/v1/events",
            &event_to(
                "parse.success",
                json!({"webhook_url": "http://127.0.0.1:9/x", "webhook_transform": name}),
            ),
        )
        .await;
    assert_eq!(status, 422, "plugin {name} must be unknown: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("webhook_configurations[0].webhook_transform") && detail.contains(name),
        "{body}"
    );
}

/// Ingest one event through `plugin` and return the request the receiver got for it.
pub async fn deliver_through(app: &TestApp, receiver: &Receiver, plugin: &str) -> Received {
    let accepted = app
        .ingest(event_to(
            "parse.success",
            through(receiver.url("/p"), plugin),
        ))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    receiver
        .received()
        .into_iter()
        .find(|request| request.header("x-webhook-event-id").as_deref() == Some(&event_id))
        .expect("the succeeded delivery reached the receiver")
}

/// The single `X-Plugin-Version` a request carries; panics on none or several.
pub fn version(request: &Received) -> String {
    let values: Vec<_> = request
        .headers
        .get_all("x-plugin-version")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(values.len(), 1, "exactly one X-Plugin-Version: {request:?}");
    values.into_iter().next().unwrap()
}

pub fn attempts(delivery: &Value) -> &Vec<Value> {
    delivery["attempts"].as_array().expect("attempts")
}

/// Integer milliseconds the way the plugins compute them from the payload's seconds.
pub fn millis(timestamp: f64) -> i64 {
    ((timestamp * 1e6).round() as i64).div_euclid(1000)
}

pub fn plugin_run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("plugin")
        .arg("run")
        .args(args)
        .env("HOOKGATE_LOG", "error")
        .env_remove("HOOKGATE_PLUGINS_DIR")
        .output()
        .expect("hookgate runs")
}

pub fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}
