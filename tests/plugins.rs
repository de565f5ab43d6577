//! Transform plugins (SPEC 6) through the real gateway: the bundled plugins on the wire,
//! misbehaving plugins failing alone, broken files, hot reload, and `hookgate plugin run`.

mod common;

use common::receiver::{Answer, Received};
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::plugins::*;

// ---------------------------------------------------------------------------------------
// 1. Inngest end to end

#[tokio::test]
async fn inngest_route_feeds_an_inngest_event_api() {
    let inngest = Receiver::start().await;
    inngest.always(Answer::status(200).body(r#"{"ids":["01JINNGESTID"],"status":200}"#));
    let route_url = inngest.url("/e/route-key");
    let (app, _) = gateway(&[], |config| {
        let route = json!({
            "name": "inngest",
            "webhook_url": route_url,
            "webhook_events": ["parse.*"],
            "webhook_transform": "inngest",
        });
        config.routes = vec![serde_json::from_value(route).unwrap()];
    })
    .await;

    // Through the operator route, default prefix, default ("string") output format: the
    // plugin builds the body from the payload, not from the string-encoded request body.
    let data = json!({"job_id": "job-9", "pages": 12, "nested": {"a": [1, 2]}});
    let accepted = app
        .ingest(json!({"event_type": "parse.success", "data": data}))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["deliveries"][0]["webhook_url"], route_url);
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    assert_eq!(attempts(&delivery).len(), 1);
    assert_eq!(attempts(&delivery)[0]["response_status"], 200);
    assert!(
        attempts(&delivery)[0]["response_body"]
            .as_str()
            .unwrap()
            .contains("01JINNGESTID")
    );

    let (_, event) = app.get(&format!("/api/v1/events/{event_id}")).await;
    let payload = event["payload"].clone();
    assert_eq!(payload["data"], data, "{event}");
    let timestamp = event["timestamp"].as_f64().unwrap();
    let request = &inngest.wait_for(1, WAIT).await[0];
    assert_eq!(request.path, "/e/route-key");
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = request.json();
    assert_eq!(
        body,
        json!({
            "name": "Llamacloud/parse.success",
            "data": payload,
            "id": event_id,
            "ts": millis(timestamp),
        })
    );
    assert!(body["ts"].is_i64(), "ts is an integer: {body}");
    assert!((body["ts"].as_f64().unwrap() - timestamp * 1000.0).abs() < 1.0);
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert!((now_ms - body["ts"].as_i64().unwrap()).abs() < 60_000);

    // Inline, with a prefix: the route still gets its copy with the default name.
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {"job_id": "job-10"},
            "webhook_configurations": [{
                "webhook_url": inngest.url("/e/acme-key"),
                "webhook_transform": "inngest",
                "webhook_transform_config": {"prefix": "Acme/"},
            }],
        }))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    assert_eq!(accepted["deliveries"].as_array().unwrap().len(), 2);
    for index in 0..2 {
        app.wait_for_status(&delivery_id(&accepted, index), "succeeded", WAIT)
            .await;
    }
    let received = inngest.wait_for(3, WAIT).await;
    let name_at = |path: &str| {
        let request = received
            .iter()
            .find(|request| {
                request.path == path
                    && request.header("x-webhook-event-id").as_deref() == Some(event_id)
            })
            .unwrap_or_else(|| panic!("nothing at {path}: {received:#?}"));
        let body = request.json();
        assert_eq!(body["id"], event_id);
        assert_eq!(body["data"]["data"], json!({"job_id": "job-10"}));
        body["name"].as_str().unwrap().to_owned()
    };
    assert_eq!(name_at("/e/acme-key"), "Acme/parse.success");
    assert_eq!(name_at("/e/route-key"), "Llamacloud/parse.success");
}

// ---------------------------------------------------------------------------------------
// 2. The other bundled plugins on the wire

#[tokio::test]
async fn cloudevents_structured_mode_on_the_wire_and_signed_after_transform() {
    let (app, _) = gateway(&[], |_| {}).await;
    let receiver = Receiver::start().await;
    let data = json!({"job_id": "job-3", "pages": 3});
    let accepted = app
        .ingest(json!({
            "event_type": "extract.partial_success",
            "data": data,
            "webhook_configurations": [{
                "webhook_url": receiver.url("/ce"),
                "webhook_headers": {"Authorization": "Bearer t"},
                "webhook_signing_secret": "ce-secret",
                "webhook_transform": "cloudevents",
                "webhook_transform_config": {"source": "/acme/parser"},
            }],
        }))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let (_, event) = app.get(&format!("/api/v1/events/{event_id}")).await;
    let timestamp = event["timestamp"].as_f64().unwrap();
    let request = &receiver.wait_for(1, WAIT).await[0];
    let content_types: Vec<_> = request.headers.get_all("content-type").iter().collect();
    assert_eq!(content_types, ["application/cloudevents+json"]);
    assert_eq!(request.header("authorization").as_deref(), Some("Bearer t"));
    assert_eq!(
        request.header("x-webhook-event-id").as_deref(),
        Some(event_id)
    );
    let body = request.json();
    let time = body["time"].as_str().expect("time is a string");
    let parsed = chrono::DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|error| panic!("time {time:?} is not RFC 3339: {error}"));
    assert_eq!(parsed.timestamp_millis(), millis(timestamp));
    assert_eq!(
        body,
        json!({
            "specversion": "1.0",
            "id": event_id,
            "source": "/acme/parser",
            "type": "extract.partial_success",
            "time": time,
            "datacontenttype": "application/json",
            "data": data,
        })
    );
    // The signature covers the bytes the plugin produced, not the original body.
    assert_eq!(
        request.header("lc-signature"),
        Some(format!("sha256={}", hmac_hex(b"ce-secret", &request.body)))
    );
}

#[tokio::test]
async fn slack_message_has_text_and_blocks() {
    let (app, _) = gateway(&[], |_| {}).await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(json!({
            "event_type": "parse.error",
            "data": {"job_id": "job-<42>"},
            "webhook_configurations": [{
                "webhook_url": receiver.url("/services/T/B/x"),
                "webhook_transform": "slack",
                "webhook_transform_config": {"channel": "#alerts"},
            }],
        }))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = request.json();
    assert_eq!(body["text"], ":x: parse.error: job job-&lt;42&gt;");
    assert_eq!(body["channel"], "#alerts");
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2, "{body}");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*parse.error*")
    );
    assert_eq!(blocks[1]["type"], "context");
    assert!(
        blocks[1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(event_id)
    );
}

#[tokio::test]
async fn filter_sends_matches_unchanged_and_skips_the_rest() {
    let (app, _) = gateway(&[], |_| {}).await;
    let plain = Receiver::start().await;
    let matching = Receiver::start().await;
    let mismatching = Receiver::start().await;
    let destination = |receiver: &Receiver, filter: Option<Value>| {
        let mut config = json!({
            "webhook_url": receiver.url("/f"),
            "webhook_headers": {"X-Route": "r"},
            "webhook_signing_secret": "s",
        });
        if let Some(filter) = filter {
            config["webhook_transform"] = json!("filter");
            config["webhook_transform_config"] = filter;
        }
        config
    };
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {"job_id": "j", "tier": "fast"},
            "webhook_configurations": [
                destination(&plain, None),
                destination(&matching, Some(json!({"equals": {"/data/tier": "fast"}, "exists": ["/data/job_id"]}))),
                destination(&mismatching, Some(json!({"equals": {"/data/tier": "agentic"}}))),
            ],
        }))
        .await;
    app.wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    app.wait_for_status(&delivery_id(&accepted, 1), "succeeded", WAIT)
        .await;
    let skipped = app
        .wait_for_status(&delivery_id(&accepted, 2), "skipped", WAIT)
        .await;

    // A match is sent exactly as it would be without the plugin.
    let unfiltered = &plain.wait_for(1, WAIT).await[0];
    let filtered = &matching.wait_for(1, WAIT).await[0];
    assert_eq!(filtered.body, unfiltered.body);
    let headers = |request: &Received| {
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| *name != "host")
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        headers
    };
    assert_eq!(headers(filtered), headers(unfiltered));

    // A mismatch ends the delivery as skipped, with the reason, and sends nothing.
    let reason = r#"skipped by plugin filter: /data/tier is "fast", want "agentic""#;
    assert_eq!(skipped["attempt_count"], 1, "{skipped:#}");
    assert_eq!(attempts(&skipped)[0]["error"], reason, "{skipped:#}");
    assert!(attempts(&skipped)[0]["response_status"].is_null());
    assert_eq!(skipped["last_error"], reason, "{skipped:#}");
    assert_eq!(mismatching.count(), 0, "a skipped delivery sends nothing");
}

// ---------------------------------------------------------------------------------------
// 3. Misbehaving plugins fail alone

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_fail_their_delivery_and_nothing_else() {
    let (app, _) = gateway(
        &[
            ("spin", "spin"),
            ("memhog", "memhog"),
            ("trap", "trap"),
            ("bigout", "bigout"),
            ("failer", "failer"),
        ],
        |config| {
            // Small, so hitting it is quick: the budget is wall-clock, and under the
            // burners' load a slow hog would run into the timeout first.
            config.plugins.max_memory_bytes = 4 << 20;
            // Small, so building the oversized output stays far inside the CPU budget
            // even in an unoptimised build under the burners' load.
            config.plugins.max_output_bytes = 64 << 10;
            // This test is about one call's budget and fibers sharing the workers: every
            // burner runs all its attempts, none paused by the breaker (tests/hardening.rs).
            config.plugins.pause_after_overruns = u32::MAX;
            config.plugins.max_concurrent_per_plugin = 8;
        },
    )
    .await;
    for row in plugin_rows(&app).await {
        assert!(row["last_error"].is_null(), "all load fine: {row}");
    }
    let bad = Receiver::start().await;
    let healthy = Receiver::start().await;

    // Burners: spin again and again, each attempt running into the CPU budget. They share
    // the async workers with everything else, yielding every epoch tick: 8 × 10 × 50 ms of
    // CPU keeps both cores burning for about two seconds.
    const BURNERS: usize = 8;
    const BURN_ATTEMPTS: u64 = 10;
    let burner = json!({
        "webhook_url": bad.url("/burn"),
        "webhook_transform": "spin",
        "webhook_retry": {"max_attempts": BURN_ATTEMPTS, "base_delay_ms": 1, "max_delay_ms": 5},
    });
    let burners = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": vec![burner; BURNERS],
        }))
        .await;
    let burner_ids: Vec<String> = (0..BURNERS)
        .map(|index| delivery_id(&burners, index))
        .collect();

    // One of each kind of misbehaviour, failing at once.
    let cases = [
        ("spin", json!(null), "exceeded its CPU budget of 50ms"),
        (
            "memhog",
            json!(null),
            "exceeded its memory limit of 4194304 bytes",
        ),
        ("trap", json!(null), "`unreachable` instruction executed"),
        (
            "bigout",
            json!({"bytes": 100_000}),
            "over the limit of 65536 bytes",
        ),
        (
            "failer",
            json!(null),
            "returned an error: failer plugin refuses: parse.success",
        ),
    ];
    let configs: Vec<Value> = cases
        .iter()
        .map(|(plugin, config, _)| {
            let mut destination = through(bad.url(&format!("/{plugin}")), plugin);
            if !config.is_null() {
                destination["webhook_transform_config"] = config.clone();
            }
            destination
        })
        .collect();
    let failing = app
        .ingest(
            json!({"event_type": "parse.success", "data": {}, "webhook_configurations": configs}),
        )
        .await;

    // Meanwhile a healthy destination, through a plugin too, keeps delivering quickly.
    let mut latencies = Vec::new();
    let mut still_burning = true;
    while still_burning {
        let started = Instant::now();
        let accepted = app
            .ingest(event_to(
                "parse.success",
                json!({"webhook_url": healthy.url("/ok"), "webhook_transform": "inngest"}),
            ))
            .await;
        let event_id = accepted["event_id"].as_str().unwrap();
        let received = healthy.wait_for(latencies.len() + 1, WAIT).await;
        let request = received
            .iter()
            .find(|request| request.header("x-webhook-event-id").as_deref() == Some(event_id))
            .expect("the healthy event arrived");
        assert_eq!(request.json()["id"], event_id);
        latencies.push(request.at - started);
        still_burning = false;
        for id in &burner_ids {
            still_burning |= app.delivery(id).await["status"] != "failed";
        }
        assert!(latencies.len() < 10_000);
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    eprintln!(
        "healthy e2e during misbehaviour: {} samples, median {:?}, worst {worst:?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(
        latencies.len() >= 5,
        "too few healthy samples while spin burned: {latencies:?}"
    );
    // A healthy delivery stuck behind the burners would wait seconds (their CPU budgets in
    // a row); the bound leaves room for one slow commit on a loaded 2-core machine.
    assert!(
        worst < Duration::from_secs(1),
        "healthy deliveries slowed down: {latencies:?}"
    );

    for id in &burner_ids {
        let delivery = app.delivery(id).await;
        assert_eq!(delivery["status"], "failed");
        assert_eq!(
            attempts(&delivery).len() as u64,
            BURN_ATTEMPTS,
            "{delivery:#}"
        );
        for attempt in attempts(&delivery) {
            assert_eq!(
                attempt["error"], "plugin spin: exceeded its CPU budget of 50ms",
                "{attempt}"
            );
            assert!(
                attempt["duration_ms"].as_u64().unwrap() < 1_000,
                "the budget cuts a call short: {attempt}"
            );
        }
    }
    for (index, (plugin, _, cause)) in cases.iter().enumerate() {
        let delivery = app
            .wait_for_status(&delivery_id(&failing, index), "failed", WAIT)
            .await;
        let attempts = attempts(&delivery);
        assert_eq!(attempts.len(), 1, "{delivery:#}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("plugin {plugin}: ")) && error.contains(cause),
            "{plugin}: expected {cause:?} in {error:?}"
        );
        assert!(attempts[0]["response_status"].is_null());
        assert_eq!(delivery["last_error"], error);
    }
    assert_eq!(bad.count(), 0, "no misbehaving plugin sent anything");
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_plugin_error_is_retried_like_any_failure() {
    let (app, _) = gateway(&[("failer", "failer")], |_| {}).await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "extract.error",
            json!({
                "webhook_url": receiver.url("/x"),
                "webhook_transform": "failer",
                "webhook_retry": {"max_attempts": 3, "base_delay_ms": 10},
            }),
        ))
        .await;
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "failed", WAIT)
        .await;
    let attempts = attempts(&delivery);
    assert_eq!(attempts.len(), 3, "{delivery:#}");
    for attempt in attempts {
        assert_eq!(
            attempt["error"],
            "plugin failer: returned an error: failer plugin refuses: extract.error"
        );
    }
    assert_eq!(receiver.count(), 0);
}

// ---------------------------------------------------------------------------------------
// 4. Broken files

#[tokio::test]
async fn broken_files_are_listed_with_their_error_and_unusable() {
    let (app, dir) = gateway(&[("wrongworld", "wrongworld")], |_| {}).await;
    install_bytes(&dir, "x", &random_bytes(4096));
    let wrong = wait_plugin(&app, "wrongworld", "refused", |row| {
        row.is_some_and(|row| !row["last_error"].is_null())
    })
    .await
    .unwrap();
    let error = wrong["last_error"]
        .as_str()
        .expect("wrongworld has an error");
    assert!(
        error.contains("hookgate:plugin/transformer"),
        "names the expected world: {error}"
    );
    assert_eq!(wrong["source"], "file");
    // Listed as loading first, then with its error.
    let corrupt = wait_plugin(&app, "x", "refused", |row| {
        row.is_some_and(|row| !row["last_error"].is_null())
    })
    .await
    .unwrap();
    assert!(
        !corrupt["last_error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{corrupt}"
    );
    assert!(
        corrupt["path"]
            .as_str()
            .unwrap()
            .ends_with("plugins/x.wasm"),
        "{corrupt}"
    );
    assert_unknown_plugin(&app, "wrongworld").await;
    assert_unknown_plugin(&app, "x").await;
}

#[tokio::test]
async fn corrupt_replacement_keeps_the_previous_version_serving() {
    let (app, dir) = gateway(&[("tag_a", "tagger")], |_| {}).await;
    let receiver = Receiver::start().await;
    let sha_a = built_sha("tag_a");
    wait_serving(&app, "tagger", &sha_a).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "a"
    );

    install_bytes(&dir, "tagger", &random_bytes(44_866));
    let row = wait_plugin(&app, "tagger", "reported the corrupt file", |row| {
        row.is_some_and(|row| !row["last_error"].is_null())
    })
    .await
    .unwrap();
    assert_eq!(row["sha256"], sha_a, "the previous version still serves");
    assert_eq!(row["source"], "file");
    for _ in 0..3 {
        assert_eq!(
            version(&deliver_through(&app, &receiver, "tagger").await),
            "a"
        );
    }

    // Putting the good file back clears the error...
    install(&dir, "tag_a", "tagger");
    wait_serving(&app, "tagger", &sha_a).await;
    // ...and a good new version replaces it.
    install(&dir, "tag_b", "tagger");
    wait_serving(&app, "tagger", &built_sha("tag_b")).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "b"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Hot reload

/// Send events through `tagger` (tag_a) continuously, run `swap` to turn it into tag_b
/// mid-stream, and check nothing is lost and only b serves once b is listed.
async fn hot_reload(swap: impl AsyncFnOnce(&Path)) {
    let (app, dir) = gateway(&[("tag_a", "tagger")], |_| {}).await;
    let receiver = Receiver::start().await;
    let sha_b = built_sha("tag_b");
    wait_serving(&app, "tagger", &built_sha("tag_a")).await;

    let stop = AtomicBool::new(false);
    let sent: Mutex<Vec<(String, Instant)>> = Mutex::default();
    let sender = async {
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        while !stop.load(Ordering::SeqCst) {
            pace.tick().await;
            let started = Instant::now();
            let accepted = app
                .ingest(event_to(
                    "parse.success",
                    through(receiver.url("/t"), "tagger"),
                ))
                .await;
            let id = accepted["event_id"].as_str().unwrap().to_owned();
            sent.lock().unwrap().push((id, started));
        }
    };
    let swapper = async {
        receiver.wait_for(10, WAIT).await;
        swap(&dir).await;
        let row = wait_serving(&app, "tagger", &sha_b).await;
        let listed_at = Instant::now();
        assert_eq!(row["source"], "file");
        // Keep the stream going a while after the new version is listed.
        let deadline = Instant::now() + WAIT;
        while sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > listed_at)
            .count()
            < 20
        {
            assert!(Instant::now() < deadline, "the sender stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::SeqCst);
        listed_at
    };
    let ((), listed_at) = tokio::join!(sender, swapper);

    let sent = sent.into_inner().unwrap();
    let received = receiver.wait_for(sent.len(), WAIT).await;
    let (status, failed) = app.get("/api/v1/deliveries?status=failed").await;
    assert_eq!(status, 200);
    assert_eq!(failed["items"], json!([]), "no delivery failed");
    assert_eq!(received.len(), sent.len(), "each event delivered once");
    let mut by_event = std::collections::HashMap::new();
    for request in &received {
        let id = request.header("x-webhook-event-id").unwrap();
        let version = version(request);
        assert!(version == "a" || version == "b", "{version:?}");
        assert!(by_event.insert(id, version).is_none(), "delivered twice");
    }
    let mut versions = (0, 0);
    for (id, started) in &sent {
        let version = by_event.get(id).expect("every event arrived");
        if *started > listed_at {
            assert_eq!(version, "b", "an event sent after the swap was served by a");
        }
        match version.as_str() {
            "a" => versions.0 += 1,
            _ => versions.1 += 1,
        }
    }
    eprintln!(
        "hot reload: {} events, {} through a, {} through b",
        sent.len(),
        versions.0,
        versions.1
    );
    assert!(versions.0 >= 10 && versions.1 >= 20, "{versions:?}");
}

#[tokio::test]
async fn hot_reload_by_rename_loses_nothing() {
    hot_reload(async |dir: &Path| install(dir, "tag_b", "tagger")).await;
}

#[tokio::test]
async fn hot_reload_by_slow_in_place_write_loses_nothing() {
    hot_reload(async |dir: &Path| {
        // A slow writer: the scan sees (and must refuse) half-written files for a while.
        let bytes = std::fs::read(built_plugin("tag_b")).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.join("tagger.wasm"))
            .unwrap();
        for chunk in bytes.chunks(4096) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn removing_a_file_unloads_it_and_moving_it_back_reloads_it() {
    let (app, dir) = gateway(&[("tag_a", "tagger")], |_| {}).await;
    let receiver = Receiver::start().await;
    let sha_a = built_sha("tag_a");
    wait_serving(&app, "tagger", &sha_a).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "a"
    );

    // Removed: unknown at ingest.
    let aside = app.data_dir.join("aside.wasm");
    std::fs::rename(dir.join("tagger.wasm"), &aside).unwrap();
    wait_plugin(&app, "tagger", "unloaded", |row| row.is_none()).await;
    assert_unknown_plugin(&app, "tagger").await;

    // Moved back (same bytes, same modification time): served again.
    std::fs::rename(&aside, dir.join("tagger.wasm")).unwrap();
    wait_serving(&app, "tagger", &sha_a).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "a"
    );
}

/// Point `link` at `target` atomically (a new link renamed over the old), the way
/// Kubernetes swaps the `..data` link of a ConfigMap volume.
fn relink(target: &Path, link: &Path) {
    let partial = link.with_extension("link.part");
    let _ = std::fs::remove_file(&partial);
    std::os::unix::fs::symlink(target, &partial).unwrap();
    std::fs::rename(&partial, link).unwrap();
}

#[tokio::test]
async fn symlinked_plugins_load_and_follow_a_swapped_link() {
    let (app, dir) = gateway(&[], |_| {}).await;
    let receiver = Receiver::start().await;
    let store = app.data_dir.join("store");
    install(&store, "tag_a", "v1");
    install(&store, "tag_b", "v2");
    relink(&store.join("v1.wasm"), &dir.join("tagger.wasm"));
    let row = wait_serving(&app, "tagger", &built_sha("tag_a")).await;
    assert_eq!(row["source"], "file");
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "a"
    );

    relink(&store.join("v2.wasm"), &dir.join("tagger.wasm"));
    wait_serving(&app, "tagger", &built_sha("tag_b")).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "b"
    );
}

#[tokio::test]
async fn a_same_size_replacement_with_the_same_mtime_is_noticed() {
    // Deploy tools that normalise or preserve timestamps (reproducible builds, `cp -p`,
    // `rsync -a`) can install a new version whose size and mtime equal the old one's:
    // tag_a and tag_b are the same size.
    let (app, dir) = gateway(&[("tag_a", "tagger")], |_| {}).await;
    let receiver = Receiver::start().await;
    wait_serving(&app, "tagger", &built_sha("tag_a")).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "a"
    );

    let serving = dir.join("tagger.wasm");
    let mtime = std::fs::metadata(&serving).unwrap().modified().unwrap();
    let partial = dir.join("tagger.wasm.part");
    std::fs::copy(built_plugin("tag_b"), &partial).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        std::fs::metadata(&serving).unwrap().len()
    );
    std::fs::rename(&partial, &serving).unwrap();
    wait_serving(&app, "tagger", &built_sha("tag_b")).await;
    assert_eq!(
        version(&deliver_through(&app, &receiver, "tagger").await),
        "b"
    );
}

#[tokio::test]
async fn a_file_overrides_the_bundled_plugin_of_its_name_until_removed() {
    let (app, dir) = gateway(&[], |_| {}).await;
    let receiver = Receiver::start().await;
    let bundled = wait_plugin(&app, "inngest", "listed", |row| row.is_some())
        .await
        .unwrap();
    assert_eq!(bundled["source"], "bundled");
    assert!(bundled["path"].is_null());
    let bundled_sha = bundled["sha256"].as_str().unwrap().to_owned();

    install(&dir, "tag_b", "inngest");
    let row = wait_serving(&app, "inngest", &built_sha("tag_b")).await;
    assert_eq!(row["source"], "file");
    assert!(
        row["path"].as_str().unwrap().ends_with("inngest.wasm"),
        "{row}"
    );
    let overridden = deliver_through(&app, &receiver, "inngest").await;
    assert_eq!(version(&overridden), "b");
    let body = overridden.json();
    assert!(body.is_string(), "tag_b passes the body through: {body}");

    // Removing the file falls back to the bundled plugin, never to "unknown".
    std::fs::remove_file(dir.join("inngest.wasm")).unwrap();
    let row = wait_serving(&app, "inngest", &bundled_sha).await;
    assert_eq!(row["source"], "bundled");
    let request = deliver_through(&app, &receiver, "inngest").await;
    assert!(request.header("x-plugin-version").is_none());
    assert_eq!(request.json()["name"], "Llamacloud/parse.success");
}

// ---------------------------------------------------------------------------------------
// 6. `hookgate plugin run`

#[test]
fn cli_plugin_run_shows_what_would_be_sent_or_skipped() {
    let temp = tempfile::tempdir().unwrap();
    let event_id = uuid::Uuid::new_v4().to_string();
    let event = temp.path().join("event.json");
    std::fs::write(
        &event,
        json!({"event_type": "parse.success", "event_id": event_id, "data": {"job_id": "j-1", "tier": "fast"}})
            .to_string(),
    )
    .unwrap();
    let event = event.to_str().unwrap();
    let empty = temp.path().join("no-plugins");
    let empty = empty.to_str().unwrap();

    let body_of = |stdout: &str| -> Value {
        let (head, body) = stdout
            .split_once("\n\n")
            .expect("headers, blank line, body");
        assert!(head.starts_with("SEND POST "), "{stdout}");
        serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("body is JSON: {stdout}"))
    };
    let stdout = stdout_of(&plugin_run(&[
        "inngest",
        "--event",
        event,
        "--plugins-dir",
        empty,
    ]));
    assert!(
        stdout.starts_with("SEND POST https://example.com/webhook\n"),
        "{stdout}"
    );
    let body = body_of(&stdout);
    assert_eq!(body["name"], "Llamacloud/parse.success");
    assert_eq!(body["id"], event_id);
    assert_eq!(body["data"]["event_id"], event_id);
    assert_eq!(
        body["data"]["data"],
        json!({"job_id": "j-1", "tier": "fast"})
    );
    assert!(body["ts"].is_i64(), "{body}");

    let stdout = stdout_of(&plugin_run(&[
        "inngest",
        "--event",
        event,
        "--config",
        r#"{"prefix": "Acme/"}"#,
        "--plugins-dir",
        empty,
    ]));
    assert_eq!(body_of(&stdout)["name"], "Acme/parse.success");

    let stdout = stdout_of(&plugin_run(&[
        "filter",
        "--event",
        event,
        "--config",
        r#"{"equals": {"/data/tier": "agentic"}}"#,
        "--plugins-dir",
        empty,
    ]));
    assert_eq!(
        stdout.trim_end(),
        r#"SKIP /data/tier is "fast", want "agentic""#
    );

    // Plugins from the folder, and a failing one.
    let dir = temp.path().join("plugins");
    install(&dir, "tag_a", "tagger");
    install(&dir, "failer", "failer");
    let dir = dir.to_str().unwrap();
    let stdout = stdout_of(&plugin_run(&[
        "tagger",
        "--event",
        event,
        "--plugins-dir",
        dir,
    ]));
    assert!(
        stdout.lines().any(|line| line == "X-Plugin-Version: a"),
        "{stdout}"
    );
    let output = plugin_run(&["failer", "--event", event, "--plugins-dir", dir]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failer") && stderr.contains("returned an error"),
        "{stderr}"
    );
    let output = plugin_run(&["nope", "--event", event, "--plugins-dir", dir]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no plugin named \"nope\""));
}
