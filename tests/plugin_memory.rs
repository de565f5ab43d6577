//! Host memory under a plugin whose result lifts to far more than its own memory (issue 9):
//! the `alias` test plugin returns headers that all point at one 512 KiB buffer, so each
//! call would copy 96 MiB out of about 1 MiB of guest memory. Alone in its test binary, so
//! the process's peak RSS is this test's.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// The process's peak resident set so far (`VmHWM`), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

#[tokio::test]
async fn aliased_results_are_bounded_before_they_are_copied() {
    const CALLS: usize = 64;
    let app = spawn_app_with(|config| {
        let dir = config.data_dir.join("plugins");
        install_plugin(&dir, "alias", "alias");
        config.plugins_dir = Some(dir);
        // Every call at once: the worst case the limits allow.
        config.plugins.max_concurrent_per_plugin = CALLS;
        config.plugins.max_concurrent_calls = CALLS;
        config.plugins.pause_after_overruns = u32::MAX;
    })
    .await;
    let before = peak_rss_bytes();
    let destination = json!({
        "webhook_url": "http://127.0.0.1:9/never",
        "webhook_transform": "alias",
        "webhook_retry": {"max_attempts": 1},
    });
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": vec![destination; CALLS],
        }))
        .await;
    for index in 0..CALLS {
        let delivery = app
            .wait_for_status(
                &delivery_id(&accepted, index),
                "failed",
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(
            delivery["attempts"][0]["error"],
            "plugin alias: result is over the output limit of 4194304 bytes"
        );
    }
    let peak = peak_rss_bytes();
    eprintln!(
        "peak RSS {} MiB before, {} MiB after {CALLS} aliasing calls",
        before >> 20,
        peak >> 20
    );
    // Each call may lift up to the 4 MiB output cap (plus 64 KiB) before it is refused;
    // unbounded, each lifts all 96 MiB, and the allocator keeps much of it.
    assert!(
        peak - before < 96 << 20,
        "peak RSS grew by {} MiB",
        (peak - before) >> 20
    );
}
