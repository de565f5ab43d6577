//! Per-call cost of transform plugins on a 1 KB event, in the isolation mode the gateway uses
//! (a fresh instance per call from a pre-linked `InstancePre`), beside native Rust doing the
//! same transform, measured in the same run. Prints median and p99.
//!
//! Two parts: the bundled `inngest` plugin; then the example plugin of `plugins/examples` in
//! each language (Rust always; JavaScript and Python when their `my_plugin.wasm` has been
//! built with the example's `build.sh`), with each component's first load (Cranelift, no
//! cache) and its load from the compiled cache.
//!
//! `cargo bench --bench plugin_call [-- LANGUAGE...]`: naming languages (`rust`,
//! `javascript`, `python`) runs only those examples, e.g. under a profiler.

use hookgate::plugin::runtime::{self, CallLimits, CallOutcome, wit};
use hookgate::plugin::{PluginHost, TransformInput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 20_000;

fn payload_1kb() -> String {
    let filler = "x".repeat(880);
    let payload = serde_json::json!({
        "event_id": "0c2a9a36-31f3-4b9f-9a1e-5b1b8f0f4e21",
        "event_type": "parse.success",
        "timestamp": 1753985275.1154444,
        "data": {"id": "job-1", "job_id": "job-1", "status": "SUCCESS", "pages": 12, "notes": filler},
    });
    let text = payload.to_string();
    assert!(
        (1000..1100).contains(&text.len()),
        "payload is {} bytes",
        text.len()
    );
    text
}

/// The same transform as the plugin, in native Rust.
fn native_inngest(
    payload: &str,
    request: &mut hookgate::domain::OutgoingRequest,
) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|error| error.to_string())?;
    let event_type = value["event_type"].as_str().ok_or("event_type")?;
    let timestamp = value["timestamp"].as_f64().ok_or("timestamp")?;
    let ts = ((timestamp * 1e6).round() as i64) / 1000;
    let body = serde_json::json!({
        "name": format!("Llamacloud/{event_type}"),
        "id": value["event_id"].clone(),
        "ts": ts,
        "data": value,
    });
    request.body = serde_json::to_vec(&body)
        .map_err(|error| error.to_string())?
        .into();
    request.set_header("Content-Type", "application/json");
    Ok(())
}

fn summarize(name: &str, mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let median = micros(samples[samples.len() / 2]);
    let p99 = micros(samples[samples.len() * 99 / 100]);
    println!("{name:<34} median {median:>8.2} µs   p99 {p99:>8.2} µs");
    (median, p99)
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| arg.to_lowercase())
        .collect();
    if only.is_empty() {
        inngest();
    }
    languages(&only);
}

fn inngest() {
    let payload = payload_1kb();
    let request = hookgate::domain::OutgoingRequest {
        url: "https://inn.gs/e/key".into(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), "llamaindex-webhook-service/1.0".into()),
            (
                "X-Webhook-Event-ID".into(),
                "0c2a9a36-31f3-4b9f-9a1e-5b1b8f0f4e21".into(),
            ),
            ("X-Webhook-Event-Type".into(), "parse.success".into()),
        ],
        body: bytes::Bytes::from(payload.clone()),
    };

    let mut native = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let mut copy = request.clone();
        let started = Instant::now();
        native_inngest(black_box(&payload), &mut copy).unwrap();
        native.push(started.elapsed());
        black_box(copy);
    }

    let wasm = hookgate::plugin::bundled_component("inngest").expect("inngest is bundled");
    let compiled = runtime::compile("inngest", wasm, "bench-inngest", None).unwrap();
    let limits = CallLimits {
        timeout: Duration::from_millis(100),
        max_memory_bytes: 64 << 20,
        max_output_bytes: 4 << 20,
    };
    let event = wit::Event {
        id: "0c2a9a36-31f3-4b9f-9a1e-5b1b8f0f4e21".into(),
        event_type: "parse.success".into(),
        timestamp: 1753985275.1154444,
        payload: payload.clone(),
    };
    let to_wit = |request: &hookgate::domain::OutgoingRequest| wit::OutgoingRequest {
        url: request.url.clone(),
        headers: request
            .headers
            .iter()
            .map(|(name, value)| wit::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body: request.body.to_vec(),
    };
    // Calls run on a fiber inside the async runtime, as they do in the gateway.
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let in_wasm = executor.block_on(async {
        let mut in_wasm = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let wit_request = to_wit(&request);
            let started = Instant::now();
            let outcome = runtime::call(&compiled, limits, &event, &wit_request, "null")
                .await
                .unwrap();
            in_wasm.push(started.elapsed());
            assert!(matches!(outcome, CallOutcome::Send(_)));
        }
        in_wasm
    });

    let reused = executor
        .block_on(runtime::time_reused_instance(
            &compiled,
            &event,
            &to_wit(&request),
            "null",
            CALLS,
        ))
        .unwrap();

    // The whole path a delivery takes: registry look-up, pool slot, instance, call.
    let host_samples = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let host = PluginHost::start(dir.path().to_owned(), None, &Default::default())
            .await
            .unwrap();
        let payload: Arc<str> = Arc::from(payload.as_str());
        let mut samples = Vec::with_capacity(CALLS / 4);
        for _ in 0..CALLS / 4 {
            let input = TransformInput {
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                timestamp: event.timestamp,
                payload: payload.clone(),
                request: request.clone(),
                config_json: "null".into(),
            };
            let started = Instant::now();
            black_box(host.transform("inngest", input).await.unwrap());
            samples.push(started.elapsed());
        }
        samples
    });

    println!("inngest transform of a 1 KB event, {CALLS} calls each:");
    let (native_median, native_p99) = summarize("native Rust", native);
    let (wasm_median, wasm_p99) = summarize("wasm, fresh instance per call", in_wasm);
    summarize("wasm, one reused instance", reused);
    summarize("wasm via PluginHost (async path)", host_samples);
    println!(
        "wasm ÷ native: median {:.2}×, p99 {:.2}×",
        wasm_median / native_median,
        wasm_p99 / native_p99
    );
}

/// The example plugin in each language that has been built, beside the same header added
/// natively.
fn languages(only: &[String]) {
    let payload = payload_1kb();
    let request = wit::OutgoingRequest {
        url: "https://example.com/hook".into(),
        headers: vec![wit::Header {
            name: "Content-Type".into(),
            value: "application/json".into(),
        }],
        body: payload.clone().into_bytes(),
    };
    let event = wit::Event {
        id: "0c2a9a36-31f3-4b9f-9a1e-5b1b8f0f4e21".into(),
        event_type: "parse.success".into(),
        timestamp: 1753985275.1154444,
        payload,
    };
    let config = r#"{"header":"X-Team","value":"docs"}"#;
    let limits = CallLimits {
        timeout: Duration::from_millis(1000),
        max_memory_bytes: 64 << 20,
        max_output_bytes: 4 << 20,
    };
    println!();
    println!("the example plugin (adds one header) on a 1 KB event:");
    let mut native = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let mut copy = request.clone();
        let parsed: serde_json::Value = serde_json::from_str(black_box(config)).unwrap();
        copy.headers.push(wit::Header {
            name: parsed["header"].as_str().unwrap().to_owned(),
            value: parsed["value"].as_str().unwrap().to_owned(),
        });
        black_box(copy);
        native.push(started.elapsed());
    }
    let (native_median, _) = summarize("native Rust", native);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/examples");
    let built = [
        (
            "Rust",
            std::path::Path::new(env!("HOOKGATE_BUILT_PLUGINS_DIR")).join("my_plugin.wasm"),
        ),
        ("JavaScript", examples.join("js/my_plugin.wasm")),
        ("Python", examples.join("python/my_plugin.wasm")),
    ];
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (language, path) in built {
        if !only.is_empty() && !only.contains(&language.to_lowercase()) {
            continue;
        }
        let Ok(wasm) = std::fs::read(&path) else {
            println!("{language:<10} not built ({}): skipped", path.display());
            continue;
        };
        let cache = tempfile::tempdir().unwrap();
        let hash = format!("bench-{language}-{}", wasm.len());
        let started = Instant::now();
        let compiled = runtime::compile(language, &wasm, &hash, Some(cache.path())).unwrap();
        let first_load = started.elapsed();
        runtime::forget(&hash, None);
        let started = Instant::now();
        runtime::compile(language, &wasm, &hash, Some(cache.path())).unwrap();
        let cached_load = started.elapsed();
        let calls = if wasm.len() > 1 << 20 {
            CALLS / 10
        } else {
            CALLS
        };
        let samples = executor.block_on(async {
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let started = Instant::now();
                let outcome = runtime::call(&compiled, limits, &event, &request, config)
                    .await
                    .unwrap();
                samples.push(started.elapsed());
                assert!(matches!(outcome, CallOutcome::Send(_)));
            }
            samples
        });
        println!(
            "{language:<10} {:>6.1} MB: first load {:>6.2} s, from the compiled cache {:>6.1} ms",
            wasm.len() as f64 / 1e6,
            first_load.as_secs_f64(),
            cached_load.as_secs_f64() * 1e3
        );
        let (median, _) = summarize(&format!("  {language}, {calls} calls"), samples);
        println!(
            "  {language} ÷ native: median {:.1}×",
            median / native_median
        );
    }
}
