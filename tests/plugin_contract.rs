//! The plugin contract 0.2.0 through the real gateway: plugins describe themselves, a
//! config a plugin refuses is a 422 naming the field, 0.1.0 components still deliver,
//! failures retrying cannot fix are dead-lettered at once, the owned compile cache keeps
//! only what is served, and `hookgate plugin check` and `plugin run`.

mod common;

use common::plugins::*;
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};

//    cannot fix

#[tokio::test]
async fn plugins_describe_themselves_and_a_0_1_0_component_still_delivers() {
    let (app, _) = gateway(&[("legacy", "legacy"), ("panicker", "panicker")], |_| {}).await;
    let receiver = Receiver::start().await;
    // Bundled plugins compile, and describe themselves, in the background at start.
    deliver_through(&app, &receiver, "inngest").await;
    let rows = plugin_rows(&app).await;
    let row = |name: &str| {
        rows.iter()
            .find(|row| row["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {rows:#?}"))
            .clone()
    };
    let inngest = row("inngest");
    assert_eq!(inngest["contract"], "0.2.0", "{inngest:#}");
    assert_eq!(inngest["about"]["name"], "inngest");
    assert!(
        inngest["about"]["description"]
            .as_str()
            .is_some_and(|text| text.contains("Inngest")),
        "{inngest:#}"
    );
    assert_eq!(
        inngest["about"]["config_schema"]["properties"]["prefix"]["type"]
            .as_array()
            .map(|types| types.contains(&json!("string"))),
        Some(true),
        "{inngest:#}"
    );
    // Rust's std imports WASI interfaces it never calls in a well-behaved plugin; each is
    // listed, and the contract's own type-only interface is not.
    let trapping = inngest["trapping_imports"].as_array().unwrap();
    assert!(
        trapping
            .iter()
            .any(|import| import.as_str().unwrap().starts_with("wasi:cli/environment")),
        "{inngest:#}"
    );
    assert!(
        !trapping
            .iter()
            .any(|import| import.as_str().unwrap().starts_with("hookgate:")),
        "{inngest:#}"
    );
    let legacy = row("legacy");
    assert_eq!(legacy["contract"], "0.1.0", "{legacy:#}");
    assert!(legacy["about"].is_null(), "{legacy:#}");
    assert_eq!(row("panicker")["about"]["version"], "0.1.0");

    // A 0.1.0 plugin cannot check its config, so any config is accepted and tried.
    let request = deliver_through(&app, &receiver, "legacy").await;
    assert_eq!(
        request.header("x-plugin-contract").as_deref(),
        Some("0.1.0")
    );
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/refused"), "webhook_transform": "legacy",
                   "webhook_transform_config": "refuse",
                   "webhook_retry": {"max_attempts": 2, "base_delay_ms": 10}}),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    assert_eq!(attempts(&delivery).len(), 2, "retried: {delivery:#}");
}

#[tokio::test]
async fn a_config_the_plugin_refuses_is_a_422_naming_the_field() {
    let (app, _) = gateway(&[], |_| {}).await;
    let receiver = Receiver::start().await;
    let destination = |plugin: &str, config: Value| {
        json!({"webhook_url": receiver.url("/x"), "webhook_transform": plugin,
               "webhook_transform_config": config})
    };
    let cases = [
        (
            destination("inngest", json!({"prefx": "Acme/"})),
            "webhook_configurations[0].webhook_transform_config.prefx",
            "is not recognised",
        ),
        (
            destination("inngest", json!({"prefix": 3})),
            "webhook_configurations[0].webhook_transform_config.prefix",
            "must be a string",
        ),
        (
            destination("cloudevents", json!({"mode": "binary2"})),
            "webhook_configurations[0].webhook_transform_config.mode",
            "",
        ),
        (
            destination("slack", json!(["not", "an", "object"])),
            "webhook_configurations[0].webhook_transform_config",
            "",
        ),
        (
            destination("filter", json!({"in": {"/event_type": "parse.success"}})),
            "webhook_configurations[0].webhook_transform_config.in./event_type",
            "array",
        ),
    ];
    for (webhook, field, words) in cases {
        let (status, body) = app
            .post(
                "/api/v1/events",
                &event_to("parse.success", webhook.clone()),
            )
            .await;
        assert_eq!(status, 422, "{webhook}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}: is refused by plugin "))
                && detail.contains(words),
            "{webhook}: {detail}"
        );
    }
    // In a batch the event is named; nothing of the batch is stored.
    let good = event_to(
        "parse.success",
        destination("inngest", json!({"prefix": "A/"})),
    );
    let bad = event_to(
        "parse.success",
        destination("inngest", json!({"prefx": "A/"})),
    );
    let (status, body) = app
        .post("/api/v1/events/batch", &json!({"events": [good, bad]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("events[1].webhook_configurations[0].webhook_transform_config.prefx: "),
        "{body}"
    );
    assert_eq!(receiver.count(), 0);
    let (_, listed) = app.get("/api/v1/deliveries").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    // Saving a configuration asks the plugin too.
    let (status, body) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": receiver.url("/saved"), "webhook_transform": "inngest",
                    "webhook_transform_config": {"prefx": "A/"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("webhook_transform_config.prefx: is refused by plugin inngest"),
        "{body}"
    );
    // A config the plugin accepts is delivered as before.
    let accepted = app
        .ingest(event_to(
            "parse.success",
            destination("inngest", json!({"prefix": "Acme/"})),
        ))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    assert_eq!(receiver.received()[0].json()["name"], "Acme/parse.success");
}

#[tokio::test]
async fn failures_retrying_cannot_fix_are_dead_lettered_at_once_with_the_reason() {
    let (app, dir) = gateway(
        &[
            ("panicker", "panicker"),
            ("panicker", "swapped"),
            ("panicker", "fragile"),
        ],
        |_| {},
    )
    .await;
    let receiver = Receiver::start().await;
    let with_retries = |plugin: &str, config: Value| {
        json!({"webhook_url": receiver.url("/x"), "webhook_transform": plugin,
               "webhook_transform_config": config,
               "webhook_retry": {"max_attempts": 5, "base_delay_ms": 10}})
    };
    // A WASI import the gateway does not provide, named; one attempt, not five.
    for (mode, import) in [("env", "wasi:cli/environment"), ("panic", "wasi:")] {
        let accepted = app
            .ingest(event_to(
                "parse.success",
                with_retries("panicker", json!({"mode": mode})),
            ))
            .await;
        let delivery = app
            .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
            .await;
        let attempts = attempts(&delivery);
        assert_eq!(attempts.len(), 1, "{delivery:#}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("plugin panicker: called `{import}"))
                && error.contains("which hookgate does not provide to plugins"),
            "{mode}: {error}"
        );
        if error.contains("#get-environment") {
            assert!(error.contains("when the plugin panics"), "{mode}: {error}");
        }
    }

    // A saved configuration the plugin accepted, then a new version of the plugin that
    // refuses it: the first failed attempt asks validate-config, which names the field.
    let (status, saved) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": receiver.url("/saved"), "webhook_transform": "swapped",
                    "webhook_transform_config": {"mode": "pass"},
                    "webhook_retry": {"max_attempts": 5, "base_delay_ms": 10}}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    install(&dir, "inngest", "swapped");
    wait_serving(&app, "swapped", &built_sha("inngest")).await;
    let accepted = app
        .ingest(json!({"event_type": "parse.success", "data": {},
                       "webhook_configuration_ids": [saved["id"]]}))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    let attempts = attempts(&delivery);
    assert_eq!(attempts.len(), 1, "{delivery:#}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("plugin swapped: refuses its config: /mode: is not recognised"),
        "{error}"
    );
    // A component that does not implement the contract, with nothing serving its name,
    // reached by a delivery already queued: its next attempt is its last.
    receiver.script([Answer::status(500)]);
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/fragile"), "webhook_transform": "fragile",
                   "webhook_transform_config": {"mode": "pass"},
                   "webhook_retry": {"max_attempts": 5, "base_delay_ms": 2000}}),
        ))
        .await;
    let delivery_id = delivery_id(&accepted, 0);
    wait_attempts(&app, &delivery_id, 1).await;
    std::fs::remove_file(dir.join("fragile.wasm")).unwrap();
    wait_plugin(&app, "fragile", "unloaded", |row| row.is_none()).await;
    install(&dir, "wrongworld", "fragile");
    wait_plugin(&app, "fragile", "refused", |row| {
        row.is_some_and(|row| !row["last_error"].is_null())
    })
    .await;
    let delivery = app.wait_for_status(&delivery_id, "failed", WAIT).await;
    let recorded = common::plugins::attempts(&delivery);
    // A retry that came due while the name served nothing (between the removal and the
    // new file) is one more attempt, and retryable; the one after the refused file is last.
    let last = recorded.last().unwrap();
    let error = last["error"].as_str().unwrap();
    assert!(
        error.starts_with("plugin fragile: failed to load: does not implement the hookgate:plugin/transformer world"),
        "{delivery:#}"
    );
    assert!(
        recorded.len() < 5,
        "dead-lettered before its budget ran out: {delivery:#}"
    );
    // New events naming it are refused at the door.
    let (status, body) = app
        .post(
            "/api/v1/events",
            &event_to("parse.success", with_retries("fragile", Value::Null)),
        )
        .await;
    assert_eq!(status, 422, "the broken plugin is not installed: {body}");
    // The tenant learns that the file failed, not the operator's paths or wasmtime's words.
    let detail = body.to_string();
    assert!(
        detail.contains("its file failed to load (see GET /api/v1/plugins)")
            && !detail.contains("transformer world")
            && !detail.contains(dir.to_str().unwrap()),
        "{body}"
    );
}

/// Wait until `delivery_id` has recorded `count` attempts.
async fn wait_attempts(app: &TestApp, delivery_id: &str, count: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let delivery = app.delivery(delivery_id).await;
        if attempts(&delivery).len() >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} attempts: {delivery:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_owned_compile_cache_keeps_only_the_versions_served() {
    // The default cache folder, inside the data folder, belongs to this gateway.
    let (app, dir) = gateway(&[("tag_a", "tagger")], |config| {
        config.plugins.cache_dir = None;
    })
    .await;
    let cache = app.data_dir.join("plugin-cache");
    let artifact = |built: &str| cache.join(format!("{}.cwasm", built_sha(built)));
    wait_serving(&app, "tagger", &built_sha("tag_a")).await;
    assert!(artifact("tag_a").exists(), "compiled version cached");
    install(&dir, "tag_b", "tagger");
    wait_serving(&app, "tagger", &built_sha("tag_b")).await;
    assert!(artifact("tag_b").exists());
    // The old version is dropped just after the new one serves.
    let deadline = std::time::Instant::now() + WAIT;
    while artifact("tag_a").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "replaced version dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A leftover of another version is pruned at the next start.
    std::fs::write(cache.join(format!("{}.cwasm", "0".repeat(64))), b"stale").unwrap();
    let mut app = app;
    app.stop().await;
    let restarted = spawn_app_with(|config| {
        config.data_dir = app.data_dir.clone();
        config.plugins_dir = Some(dir.clone());
        config.plugins.cache_dir = None;
    })
    .await;
    assert!(!cache.join(format!("{}.cwasm", "0".repeat(64))).exists());
    assert!(artifact("tag_b").exists(), "the served version stays");
    assert!(dir.exists());
    drop(restarted);
}

#[test]
fn cli_plugin_check_says_what_a_component_is() {
    let check = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["plugin", "check"])
            .args(args)
            .env("HOOKGATE_LOG", "error")
            .output()
            .expect("hookgate runs")
    };
    let path = |built: &str| built_plugin(built).to_str().unwrap().to_owned();
    let stdout = stdout_of(&check(&[
        &path("inngest"),
        "--config",
        r#"{"prefix": "A/"}"#,
    ]));
    assert!(
        stdout.contains("contract:  hookgate:plugin/transformer@0.2.0"),
        "{stdout}"
    );
    assert!(stdout.contains("describes: inngest 0.1.0: "), "{stdout}");
    assert!(stdout.contains("config:    accepted"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.trim_start().starts_with("wasi:cli/environment")),
        "{stdout}"
    );
    let stdout = stdout_of(&check(&[&path("legacy")]));
    assert!(
        stdout.contains("contract:  hookgate:plugin/transformer@0.1.0"),
        "{stdout}"
    );

    let refused = check(&[&path("inngest"), "--config", r#"{"prefx": "A/"}"#]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("config refused: config.prefx: is not recognised"),
        "{stderr}"
    );
    let wrong = check(&[&path("wrongworld")]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("would not load") && stderr.contains("hookgate:plugin/transformer"),
        "{stderr}"
    );
}

#[test]
fn cli_plugin_run_compiles_only_the_plugin_it_runs() {
    let temp = tempfile::tempdir().unwrap();
    let event = temp.path().join("event.json");
    std::fs::write(&event, r#"{"event_type": "parse.success", "data": {}}"#).unwrap();
    let dir = temp.path().join("plugins");
    install(&dir, "tag_a", "tagger");
    install_bytes(&dir, "garbage", b"not a component");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["plugin", "run", "tagger", "--event"])
        .arg(&event)
        .arg("--plugins-dir")
        .arg(&dir)
        .env("HOOKGATE_LOG", "info")
        .output()
        .expect("hookgate runs");
    let stdout = stdout_of(&output);
    assert!(stdout.contains("X-Plugin-Version: a"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("compiling plugin") || stderr.contains("tagger"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("garbage"),
        "the other file was not touched: {stderr}"
    );
    // The refusal comes before any call.
    let output = plugin_run(&[
        "inngest",
        "--event",
        event.to_str().unwrap(),
        "--config",
        r#"{"prefx": "A/"}"#,
        "--plugins-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("plugin inngest refuses the config: config.prefx: is not recognised"),
        "{stderr}"
    );
}
