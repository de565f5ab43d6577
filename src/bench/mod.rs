//! `hookgate bench`: a self-contained benchmark. Each scenario starts a fresh gateway (its
//! real HTTP API and SQLite store in a temp folder, or a fresh schema on PostgreSQL with
//! `--store postgres://…`), real receivers, and load generators in this process, then
//! reports throughput, ingest and end-to-end latency, peak RSS and loss.
//!
//! Figures: `events_per_sec` counts deliveries acknowledged by receivers per second of wall
//! time (for `fanout`, deliveries, ten per event; for `backlog`, the drain rate);
//! `e2e_*` run from the accept timestamp in the payload to the receiver; `peak_rss_mb` is this
//! whole process (gateway, receivers and load), sampled every 50 ms.

mod receiver;

use crate::app::App;
use crate::config::Config;
use anyhow::{Context, Result, bail};
use receiver::BenchReceiver;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const SCENARIOS: &[&str] = &[
    "direct",
    "single",
    "batch",
    "plugin",
    "fanout",
    "backlog",
    "noisy-plugin",
    "noisy-plugin-unpaused",
];
/// The `spin` test plugin, for the noisy-plugin scenarios: every call burns its whole CPU
/// budget.
const SPIN_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("HOOKGATE_BUILT_PLUGINS_DIR"), "/spin.wasm"));
/// Events per second each side sends in the noisy-plugin scenarios unless `--rate` is given.
const NOISY_DEFAULT_RATE: u64 = 200;
const API_KEY: &str = "bench-key";
const BATCH_SIZE: usize = 100;
const FANOUT: usize = 10;

/// What to run; also the `hookgate bench` command line.
#[derive(clap::Args)]
pub struct BenchOptions {
    /// Scenarios to run (repeatable; all when none): direct, single, batch, plugin, fanout,
    /// backlog, noisy-plugin (a healthy destination beside one whose plugin spins, both at
    /// `--rate`, default 200/s), noisy-plugin-unpaused (the same with the plugin breaker off).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Events per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Deliveries queued in the backlog scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog_events: usize,
    /// Fixed event rate per second instead of saturation.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Concurrent producers.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The gateway's store: SQLite in a temp folder when absent, or `postgres://…`, where
    /// each scenario runs in a fresh schema that is dropped after it.
    #[arg(long)]
    pub store: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub events_per_sec: f64,
    pub ingest_p50_ms: f64,
    pub ingest_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_max_ms: f64,
    pub peak_rss_mb: f64,
    pub lost: u64,
    pub ratio_to_direct: Option<f64>,
    pub events: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_queued_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_events_per_sec: Option<f64>,
}

pub async fn run(options: BenchOptions) -> Result<BTreeMap<String, Figures>> {
    for name in &options.scenarios {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!(
                "unknown scenario {name:?}; choose from {}",
                SCENARIOS.join(", ")
            );
        }
    }
    let mut results = BTreeMap::new();
    // `direct` runs first so every other scenario can be put beside it.
    let mut ordered = if options.scenarios.is_empty() {
        SCENARIOS.iter().map(|name| (*name).to_owned()).collect()
    } else {
        options.scenarios.clone()
    };
    ordered.sort_by_key(|name| name != "direct");
    for name in ordered {
        eprintln!("bench: running {name} ...");
        let figures = match name.as_str() {
            "direct" => direct(&options).await?,
            "backlog" => backlog(&options).await?,
            "noisy-plugin" => noisy_plugin(&options, true).await?,
            "noisy-plugin-unpaused" => noisy_plugin(&options, false).await?,
            other => through_gateway(other, &options).await?,
        };
        results.insert(name, figures);
    }
    if let Some(direct) = results.get("direct").map(|figures| figures.events_per_sec) {
        for (name, figures) in results.iter_mut() {
            if name != "direct" && direct > 0.0 {
                figures.ratio_to_direct = Some(figures.events_per_sec / direct);
            }
        }
    }
    print_table(&results);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results)
}

struct Gateway {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    /// A PostgreSQL store's URL, its schema dropped once the gateway stops.
    postgres: Option<String>,
    _dir: tempfile::TempDir,
}

/// Start a gateway in a temp folder, with `plugin` (if any) compiled before the clock starts,
/// as it is in a gateway whose plugin cache is warm.
async fn start_gateway(plugin: Option<&str>, options: &BenchOptions) -> Result<Gateway> {
    start_gateway_with(plugin, options, |_| Ok(())).await
}

async fn start_gateway_with(
    plugin: Option<&str>,
    options: &BenchOptions,
    adjust: impl FnOnce(&mut Config) -> Result<()>,
) -> Result<Gateway> {
    let dir = tempfile::tempdir()?;
    let postgres = match options.store.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            Some(crate::store::with_fresh_schema(url, "bench")?)
        }
        Some(other) => bail!("--store {other:?}: only postgres://… (SQLite is the default)"),
        None => None,
    };
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        api_keys: vec![API_KEY.into()],
        egress_allow: vec!["127.0.0.0/8".into()],
        ..Config::default()
    };
    config.limits.max_batch_events = BATCH_SIZE;
    // The backlog scenario queues more than the default cap on purpose.
    config.limits.max_queued = 0;
    config.store = postgres.clone();
    adjust(&mut config)?;
    let app = App::build(config).await?;
    if let Some(name) = plugin {
        app.plugins().warm(name).await?;
    }
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    Ok(Gateway {
        base,
        shutdown,
        task,
        postgres,
        _dir: dir,
    })
}

impl Gateway {
    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        if let Some(url) = &self.postgres {
            crate::store::drop_schema(url).await?;
        }
        Ok(())
    }
}

fn event(seq: usize, destinations: &[Value]) -> Value {
    json!({
        "event_type": "parse.success",
        "data": {
            "id": format!("job-{seq}"), "job_id": format!("job-{seq}"), "seq": seq,
            "status": "SUCCESS", "pages": 12, "tier": "agentic",
            "result_url": "https://files.example.com/results/0f5e3c1b-7e2a-4a4b-9d55-3a8f6c1e2b77.json"
        },
        "webhook_configurations": destinations,
    })
}

/// Samples this process's resident set every 50 ms; the peak since the last reset.
struct RssSampler {
    peak_bytes: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl RssSampler {
    fn start() -> Self {
        let peak_bytes = Arc::new(AtomicU64::new(current_rss()));
        let stop = CancellationToken::new();
        let (peak, token) = (peak_bytes.clone(), stop.clone());
        tokio::spawn(async move {
            while !token.is_cancelled() {
                peak.fetch_max(current_rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { peak_bytes, stop }
    }

    fn take_peak_mb(&self) -> f64 {
        let peak = self.peak_bytes.swap(current_rss(), Ordering::Relaxed);
        peak as f64 / (1024.0 * 1024.0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| {
            text.split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// What every producer task shares.
struct Producer {
    client: reqwest::Client,
    url: String,
    authorized: bool,
    /// Request bodies, serialised before the clock starts.
    requests: Vec<bytes::Bytes>,
    events_per_request: usize,
    accepted: AtomicU64,
    latencies: std::sync::Mutex<Vec<u32>>,
}

impl Producer {
    async fn send(&self, index: usize) {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.requests[index].clone());
        if self.authorized {
            request = request.bearer_auth(API_KEY);
        }
        let started = Instant::now();
        let response = request.send().await;
        let elapsed = started.elapsed().as_micros() as u32;
        if let Ok(response) = response {
            let ok = response.status().is_success();
            let _ = response.bytes().await;
            if ok {
                self.accepted
                    .fetch_add(self.events_per_request as u64, Ordering::Relaxed);
            }
        }
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.push(elapsed);
        }
    }
}

/// Send `requests` bodies with `concurrency` workers (or at `rate` events/s); returns the
/// POST latencies in microseconds and the number of events the answers accepted.
async fn produce(
    url: String,
    authorized: bool,
    requests: Vec<bytes::Bytes>,
    events_per_request: usize,
    concurrency: usize,
    rate: Option<u64>,
) -> Result<(Vec<u32>, u64)> {
    let total = requests.len();
    let producer = Arc::new(Producer {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency * 2)
            .build()?,
        url,
        authorized,
        requests,
        events_per_request,
        accepted: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::with_capacity(total)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    match rate {
        Some(events_per_sec) => {
            let per_request =
                Duration::from_secs_f64(events_per_request as f64 / events_per_sec.max(1) as f64);
            let mut ticker = tokio::time::interval(per_request);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for index in 0..total {
                ticker.tick().await;
                let producer = producer.clone();
                tasks.spawn(async move { producer.send(index).await });
            }
        }
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..concurrency {
                let (producer, next) = (producer.clone(), next.clone());
                tasks.spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= total {
                            break;
                        }
                        producer.send(index).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let latencies = std::mem::take(
        &mut *producer
            .latencies
            .lock()
            .map_err(|_| anyhow::anyhow!("latency log poisoned"))?,
    );
    Ok((latencies, producer.accepted.load(Ordering::Relaxed)))
}

/// Request bodies as bytes, built before the clock starts.
fn serialise(requests: &[Value]) -> Result<Vec<bytes::Bytes>> {
    Ok(requests
        .iter()
        .map(|body| serde_json::to_vec(body).map(bytes::Bytes::from))
        .collect::<Result<Vec<_>, _>>()?)
}

async fn wait_until(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

fn fill_latencies(figures: &mut Figures, mut ingest: Vec<u32>, receivers: &[BenchReceiver]) {
    ingest.sort_unstable();
    figures.ingest_p50_ms = percentile(&ingest, 0.5);
    figures.ingest_p99_ms = percentile(&ingest, 0.99);
    let mut e2e: Vec<u32> = receivers
        .iter()
        .flat_map(|receiver| {
            receiver
                .tally
                .latencies_us
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default()
        })
        .collect();
    e2e.sort_unstable();
    figures.e2e_p50_ms = percentile(&e2e, 0.5);
    figures.e2e_p99_ms = percentile(&e2e, 0.99);
    figures.e2e_max_ms = percentile(&e2e, 1.0);
}

async fn direct(options: &BenchOptions) -> Result<Figures> {
    let receiver = BenchReceiver::start(options.events, true).await?;
    let sampler = RssSampler::start();
    let bodies: Vec<Value> = (0..options.events)
        .map(|seq| {
            let mut payload = event(seq, &[]);
            let object = payload.as_object_mut().expect("event is an object");
            object.remove("webhook_configurations");
            object.insert("event_id".into(), json!(uuid::Uuid::new_v4().to_string()));
            object.insert("timestamp".into(), json!(0.0));
            payload
        })
        .collect();
    let bodies = serialise(&bodies)?;
    let started = Instant::now();
    let (latencies, accepted) = produce(
        receiver.url("/direct"),
        false,
        bodies,
        1,
        options.concurrency,
        options.rate,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut figures = Figures {
        events_per_sec: accepted as f64 / seconds,
        peak_rss_mb: sampler.take_peak_mb(),
        lost: options.events as u64 - receiver.tally.distinct.load(Ordering::Relaxed),
        events: accepted,
        seconds,
        ..Figures::default()
    };
    fill_latencies(&mut figures, latencies.clone(), &[]);
    // Direct: the POST is the delivery, so its latency is the end-to-end one.
    let mut sorted = latencies;
    sorted.sort_unstable();
    figures.e2e_p50_ms = percentile(&sorted, 0.5);
    figures.e2e_p99_ms = percentile(&sorted, 0.99);
    figures.e2e_max_ms = percentile(&sorted, 1.0);
    Ok(figures)
}

async fn through_gateway(scenario: &str, options: &BenchOptions) -> Result<Figures> {
    let receiver_count = if scenario == "fanout" { FANOUT } else { 1 };
    let mut receivers = Vec::new();
    for _ in 0..receiver_count {
        receivers.push(BenchReceiver::start(options.events, true).await?);
    }
    let destinations: Vec<Value> = receivers
        .iter()
        .map(|receiver| {
            let mut destination =
                json!({"webhook_url": receiver.url("/hook"), "webhook_output_format": "json"});
            if scenario == "plugin" {
                destination["webhook_transform"] = json!("inngest");
            }
            destination
        })
        .collect();
    let gateway = start_gateway((scenario == "plugin").then_some("inngest"), options).await?;
    let (path, per_request) = if scenario == "single" {
        ("/api/v1/events", 1)
    } else {
        ("/api/v1/events/batch", BATCH_SIZE)
    };
    let events: Vec<Value> = (0..options.events)
        .map(|seq| event(seq, &destinations))
        .collect();
    let requests: Vec<Value> = if per_request == 1 {
        events
    } else {
        events
            .chunks(per_request)
            .map(|chunk| json!({ "events": chunk }))
            .collect()
    };
    let requests = serialise(&requests)?;
    let tallies: Vec<_> = receivers
        .iter()
        .map(|receiver| receiver.tally.clone())
        .collect();
    let _progress = Progress::start(
        scenario,
        (options.events * receiver_count) as u64,
        move || {
            tallies
                .iter()
                .map(|tally| tally.distinct.load(Ordering::Relaxed))
                .sum()
        },
    );
    let sampler = RssSampler::start();
    let started = Instant::now();
    let (latencies, accepted) = produce(
        format!("{}{path}", gateway.base),
        true,
        requests,
        per_request,
        options.concurrency,
        options.rate,
    )
    .await?;
    let expected = accepted * receiver_count as u64;
    let delivered = || {
        receivers
            .iter()
            .map(|receiver| receiver.tally.distinct.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    wait_until(|| delivered() >= expected, Duration::from_secs(300)).await;
    let seconds = started.elapsed().as_secs_f64();
    let delivered = delivered();
    let mut figures = Figures {
        events_per_sec: delivered as f64 / seconds,
        peak_rss_mb: sampler.take_peak_mb(),
        lost: expected.saturating_sub(delivered),
        events: accepted,
        seconds,
        ..Figures::default()
    };
    fill_latencies(&mut figures, latencies, &receivers);
    gateway.stop().await?;
    Ok(figures)
}

async fn backlog(options: &BenchOptions) -> Result<Figures> {
    let total = options.backlog_events;
    let receiver = BenchReceiver::start(total, false).await?;
    let destinations =
        vec![json!({"webhook_url": receiver.url("/backlog"), "webhook_output_format": "json"})];
    let gateway = start_gateway(None, options).await?;
    let sampler = RssSampler::start();
    let started = Instant::now();
    // Built per chunk so the load generator does not hold a million events at once.
    let mut accepted_total = 0;
    let mut latencies = Vec::new();
    let mut last_report = Instant::now();
    for chunk_start in (0..total).step_by(BATCH_SIZE * 100) {
        let chunk_end = (chunk_start + BATCH_SIZE * 100).min(total);
        let requests: Vec<Value> = (chunk_start..chunk_end)
            .collect::<Vec<_>>()
            .chunks(BATCH_SIZE)
            .map(|seqs| json!({"events": seqs.iter().map(|seq| event(*seq, &destinations)).collect::<Vec<_>>()}))
            .collect();
        let requests = serialise(&requests)?;
        let (chunk_latencies, accepted) = produce(
            format!("{}/api/v1/events/batch", gateway.base),
            true,
            requests,
            BATCH_SIZE,
            options.concurrency,
            None,
        )
        .await?;
        accepted_total += accepted;
        latencies.extend(chunk_latencies);
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            eprintln!("bench: backlog ingest: {accepted_total} of {total} accepted");
        }
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    let peak_queued = sampler.take_peak_mb();
    let opened = Instant::now();
    let tally = receiver.tally.clone();
    let _progress = Progress::start("backlog drain", accepted_total, move || {
        tally.distinct.load(Ordering::Relaxed)
    });
    receiver.open();
    let drained = wait_until(
        || receiver.tally.distinct.load(Ordering::Relaxed) >= accepted_total,
        Duration::from_secs(900),
    )
    .await;
    let drain_seconds = opened.elapsed().as_secs_f64();
    let delivered = receiver.tally.distinct.load(Ordering::Relaxed);
    if !drained {
        eprintln!("bench: backlog did not drain: {delivered} of {accepted_total}");
    }
    let peak_draining = sampler.take_peak_mb();
    let mut figures = Figures {
        events_per_sec: delivered as f64 / drain_seconds,
        peak_rss_mb: peak_queued.max(peak_draining),
        peak_rss_queued_mb: Some(peak_queued),
        ingest_events_per_sec: Some(accepted_total as f64 / ingest_seconds),
        lost: accepted_total.saturating_sub(delivered),
        events: accepted_total,
        seconds: drain_seconds,
        ..Figures::default()
    };
    fill_latencies(&mut figures, latencies, &[]);
    gateway.stop().await?;
    Ok(figures)
}

/// A healthy destination at `--rate` events/s beside another at the same rate whose plugin
/// spins through its CPU budget on every call: the healthy side's e2e latency is the figure.
/// `breaker` off sets the pause threshold out of reach, for the before/after comparison.
async fn noisy_plugin(options: &BenchOptions, breaker: bool) -> Result<Figures> {
    let rate = options.rate.unwrap_or(NOISY_DEFAULT_RATE);
    let healthy = BenchReceiver::start(options.events, true).await?;
    let noisy = BenchReceiver::start(options.events, true).await?;
    let gateway = start_gateway_with(None, options, |config| {
        let plugins_dir = config.data_dir.join("plugins");
        std::fs::create_dir_all(&plugins_dir)?;
        std::fs::write(plugins_dir.join("spin.wasm"), SPIN_PLUGIN)?;
        if !breaker {
            config.plugins.pause_after_overruns = u32::MAX;
        }
        Ok(())
    })
    .await?;
    let healthy_destination =
        [json!({"webhook_url": healthy.url("/hook"), "webhook_output_format": "json"})];
    let noisy_destination =
        [json!({"webhook_url": noisy.url("/hook"), "webhook_transform": "spin"})];
    let healthy_requests = serialise(
        &(0..options.events)
            .map(|seq| event(seq, &healthy_destination))
            .collect::<Vec<_>>(),
    )?;
    let noisy_requests = serialise(
        &(0..options.events)
            .map(|seq| event(seq, &noisy_destination))
            .collect::<Vec<_>>(),
    )?;
    let url = format!("{}/api/v1/events", gateway.base);
    let sampler = RssSampler::start();
    let started = Instant::now();
    let noise = tokio::spawn(produce(
        url.clone(),
        true,
        noisy_requests,
        1,
        options.concurrency,
        Some(rate),
    ));
    let (latencies, accepted) = produce(
        url,
        true,
        healthy_requests,
        1,
        options.concurrency,
        Some(rate),
    )
    .await?;
    let delivered = || healthy.tally.distinct.load(Ordering::Relaxed);
    wait_until(|| delivered() >= accepted, Duration::from_secs(300)).await;
    let seconds = started.elapsed().as_secs_f64();
    noise.await??;
    let mut figures = Figures {
        events_per_sec: delivered() as f64 / seconds,
        peak_rss_mb: sampler.take_peak_mb(),
        lost: accepted.saturating_sub(delivered()),
        events: accepted,
        seconds,
        ..Figures::default()
    };
    fill_latencies(&mut figures, latencies, &[healthy]);
    gateway.stop().await?;
    Ok(figures)
}

/// How often a long scenario reports how far it has come.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Prints `bench: LABEL: N of TOTAL delivered (R/s)` to stderr every [`PROGRESS_EVERY`]
/// until dropped, so a long run shows it is moving; runs shorter than that print nothing.
struct Progress {
    stop: CancellationToken,
}

impl Progress {
    fn start(label: &str, total: u64, done: impl Fn() -> u64 + Send + 'static) -> Progress {
        let stop = CancellationToken::new();
        let (label, stopped) = (label.to_owned(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(PROGRESS_EVERY) => {}
                }
                let count = done();
                eprintln!(
                    "bench: {label}: {count} of {total} delivered ({:.0}/s)",
                    count as f64 / started.elapsed().as_secs_f64()
                );
            }
        });
        Progress { stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The machine the figures came from: cores and CPU model, for the table's heading.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

fn print_table(results: &BTreeMap<String, Figures>) {
    println!(
        "hookgate {} on {}; latencies in ms, peak RSS in MB",
        env!("CARGO_PKG_VERSION"),
        machine()
    );
    println!(
        "{:<21} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>5} {:>7}",
        "scenario",
        "events/s",
        "ingest p50",
        "ingest p99",
        "e2e p50",
        "e2e p99",
        "e2e max",
        "RSS MB",
        "lost",
        "÷direct"
    );
    for (name, figures) in results {
        println!(
            "{:<21} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.1} {:>5} {:>7}",
            name,
            figures.events_per_sec,
            figures.ingest_p50_ms,
            figures.ingest_p99_ms,
            figures.e2e_p50_ms,
            figures.e2e_p99_ms,
            figures.e2e_max_ms,
            figures.peak_rss_mb,
            figures.lost,
            figures
                .ratio_to_direct
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}")),
        );
    }
}
