//! Keeps the benchmark harness from rotting: every scenario runs briefly through the real
//! gateway and receivers, loses nothing, and writes the JSON figures. No timing assertions.

mod common;

use common::postgres::{database_url, on_postgres};
use hookgate::bench::{BenchOptions, SCENARIOS, run};

/// The suite's store for the bench's gateways: a fresh schema per scenario on PostgreSQL.
async fn bench_store() -> Option<String> {
    match on_postgres() {
        true => Some(database_url().await),
        false => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let results = run(BenchOptions {
        scenarios: SCENARIOS.iter().map(|name| (*name).to_owned()).collect(),
        events: 300,
        backlog_events: 500,
        rate: None,
        concurrency: 4,
        json: Some(json.clone()),
        store: bench_store().await,
    })
    .await
    .unwrap();
    for name in SCENARIOS {
        let figures = &results[*name];
        assert_eq!(figures.lost, 0, "{name} lost deliveries");
        assert!(figures.events_per_sec > 0.0, "{name}: {figures:?}");
        assert!(figures.events > 0, "{name}: {figures:?}");
        if *name != "direct" {
            assert!(figures.ratio_to_direct.is_some(), "{name} has no ratio");
        }
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    for key in [
        "events_per_sec",
        "ingest_p50_ms",
        "ingest_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "e2e_max_ms",
        "peak_rss_mb",
        "lost",
        "ratio_to_direct",
    ] {
        assert!(
            written["batch"].get(key).is_some(),
            "JSON lacks batch.{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_mode_runs() {
    let results = run(BenchOptions {
        scenarios: vec!["single".into()],
        events: 100,
        backlog_events: 0,
        rate: Some(500),
        concurrency: 4,
        json: None,
        store: bench_store().await,
    })
    .await
    .unwrap();
    assert_eq!(results["single"].lost, 0);
    assert!(
        results["single"].seconds >= 0.15,
        "100 events at 500/s take about 0.2 s"
    );
}
