//! Several gateways on one PostgreSQL database, as real `hookgate` processes: they share the
//! queue, take over a killed node's deliveries, survive a rolling restart, keep a
//! destination's cap across the cluster, and wake each other when work is queued.
//!
//! These always run on PostgreSQL (`HOOKGATE_TEST_PG`, default the server on
//! 127.0.0.1:5432), whichever store the rest of the suite uses.

mod common;

use common::binary::{free_port, wait_ready};
use common::postgres::{admin, schema_url, server_url};
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One gateway process.
struct Node {
    child: Child,
    port: u16,
    base: String,
    _data: tempfile::TempDir,
}

/// What every node of a test's cluster shares.
struct Cluster {
    store: String,
    settings: Vec<(&'static str, String)>,
}

impl Cluster {
    async fn new(settings: &[(&'static str, &str)]) -> Cluster {
        let schema = format!("cluster_{}", uuid::Uuid::new_v4().simple());
        Cluster {
            store: schema_url(&schema).await,
            settings: settings
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned()))
                .collect(),
        }
    }

    async fn launch(&self) -> Node {
        self.launch_on(free_port()).await
    }

    async fn launch_on(&self, port: u16) -> Node {
        self.launch_with(port, Some(API_KEY), Stdio::inherit())
            .await
    }

    /// A node with `api_key` configured (or none, to use the cluster's generated one),
    /// logging to `stderr`.
    async fn launch_with(&self, port: u16, api_key: Option<&str>, stderr: Stdio) -> Node {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--store"])
            .arg(&self.store)
            .arg("--data-dir")
            .arg(data.path())
            .env("HOOKGATE_EGRESS_ALLOW", "127.0.0.0/8")
            .env("HOOKGATE_RETRY_MAX_ATTEMPTS", "50")
            // Black holes and failing receivers are the point here, not something to pause for.
            .env("HOOKGATE_BREAKER_AFTER_FAILURES", "0")
            .env("HOOKGATE_RETRY_BASE_DELAY_MS", "50")
            .env("HOOKGATE_RETRY_MAX_DELAY_MS", "200")
            .env("HOOKGATE_PLUGIN_CACHE_DIR", plugin_cache_dir())
            .env("HOOKGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        match api_key {
            Some(key) => command.env("HOOKGATE_API_KEY", key),
            None => command.env_remove("HOOKGATE_API_KEY"),
        };
        for (name, value) in &self.settings {
            command.env(name, value);
        }
        let child = command.spawn().expect("hookgate binary starts");
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base).await;
        Node {
            child,
            port,
            base,
            _data: data,
        }
    }
}

impl Node {
    async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Post a batch; the answer's status and body, or `None` when the node is not reachable.
    async fn post_batch(&self, events: &[Value]) -> Option<(u16, Value)> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/events/batch", self.base))
            .bearer_auth(API_KEY)
            .json(&json!({ "events": events }))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    /// Deliveries this node recorded as delivered, from its own metrics.
    async fn delivered(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|line| line.starts_with("hookgate_deliveries_delivered_total"))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `count` nodes are alive and their shares of a destination's cap add up to
/// `cap`: each has counted the others and taken its part.
async fn wait_for_shares(node: &Node, count: usize, cap: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = node.get("/api/v1/nodes").await;
        let alive: Vec<&Value> = listed["nodes"]
            .as_array()
            .map(|all| all.iter().filter(|n| n["alive"] == true).collect())
            .unwrap_or_default();
        let shares: u64 = alive
            .iter()
            .filter_map(|n| n["destination_share"].as_u64())
            .sum();
        if alive.len() == count && shares == cap {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} nodes never shared a cap of {cap}: {listed:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn events(count: usize, url: &str, tag: &str) -> Vec<Value> {
    (0..count)
        .map(|n| {
            json!({"event_type": "parse.success", "data": {"tag": tag, "n": n},
                   "webhook_configurations": [{"webhook_url": url}]})
        })
        .collect()
}

fn accepted_ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every request the receiver got, counted per event id.
fn sends_per_event(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut sends = BTreeMap::new();
    for request in receiver.received() {
        if let Some(id) = request.header("x-webhook-event-id") {
            *sends.entry(id).or_default() += 1;
        }
    }
    sends
}

/// Wait until the receiver has heard of every one of `ids`.
async fn wait_for_events(receiver: &Receiver, ids: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = sends_per_event(receiver);
        let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events never arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue() {
    let cluster = Cluster::new(&[]).await;
    let nodes = [
        cluster.launch().await,
        cluster.launch().await,
        cluster.launch().await,
    ];
    let receiver = Receiver::start().await;
    let mut ids = BTreeSet::new();
    for round in 0..60 {
        let node = &nodes[round % 3];
        let (status, body) = node
            .post_batch(&events(50, &receiver.url("/share"), "share"))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
        ids.extend(accepted_ids(&body));
    }
    assert_eq!(ids.len(), 3_000);
    wait_for_events(&receiver, &ids, Duration::from_secs(60)).await;
    let sends = sends_per_event(&receiver);
    let twice: Vec<_> = sends.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let mut shares = Vec::new();
    for node in &nodes {
        shares.push(node.delivered().await);
    }
    assert_eq!(shares.iter().sum::<u64>(), 3_000, "{shares:?}");
    assert!(shares.iter().all(|share| *share > 0), "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_deliveries_are_taken_over() {
    let cluster = Cluster::new(&[
        ("HOOKGATE_LEASE_MS", "2000"),
        ("HOOKGATE_NODE_HEARTBEAT_MS", "200"),
        ("HOOKGATE_MAX_IN_FLIGHT_PER_DESTINATION", "30"),
    ])
    .await;
    let mut doomed = cluster.launch().await;
    // The survivors take over; they only need to be running.
    let _survivors = [cluster.launch().await, cluster.launch().await];
    wait_for_shares(&doomed, 3, 30).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(200).delay(Duration::from_millis(300)));
    let (status, body) = doomed
        .post_batch(&events(300, &receiver.url("/kill"), "kill"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let ids: BTreeSet<String> = accepted_ids(&body).into_iter().collect();
    receiver.wait_for(20, Duration::from_secs(10)).await;
    doomed.kill_9();
    let killed_at = Instant::now();
    // Its leases (2 s) run out, then the survivors claim what it held.
    wait_for_events(&receiver, &ids, Duration::from_secs(30)).await;
    let took = killed_at.elapsed();
    let duplicates: usize = sends_per_event(&receiver)
        .values()
        .map(|count| count - 1)
        .sum();
    // The killed node ran at most its share (30 / 3) at once; only those can be sent twice.
    assert!(duplicates <= 10, "{duplicates} sent twice");
    assert!(took < Duration::from_secs(2 + 10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing() {
    let cluster = Cluster::new(&[("HOOKGATE_NODE_HEARTBEAT_MS", "200")]).await;
    let mut nodes = [
        cluster.launch().await,
        cluster.launch().await,
        cluster.launch().await,
    ];
    let ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let receiver = Receiver::start().await;
    let url = receiver.url("/rolling");
    let stop = Arc::new(AtomicBool::new(false));
    // A producer sending steadily round-robin, moving on to the next node when one is down.
    let producer = {
        let stop = stop.clone();
        let bases: Vec<String> = ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = BTreeSet::new();
            let mut turn = 0;
            while !stop.load(Ordering::SeqCst) {
                let base = &bases[turn % bases.len()];
                turn += 1;
                let sent = client
                    .post(format!("{base}/api/v1/events/batch"))
                    .bearer_auth(API_KEY)
                    .json(&json!({"events": events(5, &url, "rolling")}))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status() == 202
                {
                    let body: Value = response.json().await.unwrap();
                    accepted.extend(accepted_ids(&body));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            accepted
        })
    };
    for index in 0..nodes.len() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes[index].terminate();
        nodes[index] = cluster.launch_on(ports[index]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let accepted = producer.await.unwrap();
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());
    wait_for_events(&receiver, &accepted, Duration::from_secs(60)).await;
}

/// Three nodes sharing a destination cap of `cap`, settled, and a receiver that never
/// answers, sent `per_node` events through every node.
async fn three_nodes_and_a_black_hole(
    settings: &[(&'static str, &str)],
    cap: u64,
    per_node: usize,
) -> (Cluster, [Node; 3], Receiver) {
    let cap_setting = cap.to_string();
    let mut all = vec![
        (
            "HOOKGATE_MAX_IN_FLIGHT_PER_DESTINATION",
            cap_setting.as_str(),
        ),
        ("HOOKGATE_NODE_HEARTBEAT_MS", "200"),
        ("HOOKGATE_REQUEST_TIMEOUT_MS", "30000"),
    ];
    all.extend_from_slice(settings);
    let cluster = Cluster::new(&all).await;
    let nodes = [
        cluster.launch().await,
        cluster.launch().await,
        cluster.launch().await,
    ];
    wait_for_shares(&nodes[0], 3, cap).await;
    let black_hole = Receiver::start().await;
    black_hole.always(Answer::status(200).delay(Duration::from_secs(3600)));
    for node in &nodes {
        let (status, body) = node
            .post_batch(&events(per_node, &black_hole.url("/void"), "void"))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    (cluster, nodes, black_hole)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_holds_only_the_cluster_cap() {
    // Shared 4 + 3 + 3 by the three nodes.
    let (_cluster, nodes, black_hole) =
        three_nodes_and_a_black_hole(&[("HOOKGATE_MAX_IN_FLIGHT", "32")], 10, 100).await;
    let healthy = Receiver::start().await;
    black_hole.wait_for(10, Duration::from_secs(10)).await;
    let mut latencies = Vec::new();
    for n in 0..30 {
        let node = &nodes[n % 3];
        let sent = Instant::now();
        let (status, body) = node
            .post_batch(&events(1, &healthy.url(&format!("/ok/{n}")), "ok"))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
        healthy.wait_for(n + 1, Duration::from_secs(10)).await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    assert!(
        worst < Duration::from_millis(500),
        "healthy destination slowed: {latencies:?}"
    );
    assert_eq!(
        black_hole.max_concurrent(),
        10,
        "the black hole must hold exactly the cluster cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_on_one_node_wakes_another() {
    // Polling alone would take half a minute: only a wake-up through the database explains
    // a prompt delivery.
    let cluster = Cluster::new(&[
        ("HOOKGATE_POLL_INTERVAL_MS", "30000"),
        ("HOOKGATE_MAX_IN_FLIGHT", "1"),
        ("HOOKGATE_REQUEST_TIMEOUT_MS", "30000"),
    ])
    .await;
    let busy = cluster.launch().await;
    let idle = cluster.launch().await;
    // Both have claimed once at start and now sleep. `busy` fills its only slot.
    let black_hole = Receiver::start().await;
    black_hole.always(Answer::status(200).delay(Duration::from_secs(3600)));
    let (status, _) = busy
        .post_batch(&events(1, &black_hole.url("/void"), "void"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    black_hole.wait_for(1, Duration::from_secs(10)).await;
    let receiver = Receiver::start().await;
    let sent = Instant::now();
    let (status, body) = busy
        .post_batch(&events(1, &receiver.url("/woken"), "woken"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    // The receiver sees the request before the node has counted the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while idle.delivered().await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(idle.delivered().await, 1, "the idle node delivered it");
}

/// With no key configured, the first node generates one, prints it once and keeps it in the
/// database; every other node accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_is_shared_by_every_node() {
    let cluster = Cluster::new(&[]).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let first = cluster
        .launch_with(free_port(), None, Stdio::from(log.reopen().unwrap()))
        .await;
    let second = cluster.launch_with(free_port(), None, Stdio::null()).await;
    let printed = std::fs::read_to_string(log.path()).unwrap();
    let key = printed
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("hg_"))
        .unwrap_or_else(|| panic!("no key printed: {printed}"))
        .to_owned();
    let client = reqwest::Client::new();
    for node in [&first, &second] {
        let with_key = client
            .get(format!("{}/api/v1/nodes", node.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(with_key.status(), 200);
        let without = client
            .get(format!("{}/api/v1/nodes", node.base))
            .bearer_auth("hg_wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(without.status(), 401);
    }
}

/// PostgreSQL goes away under load (every connection terminated, new ones refused) and comes
/// back: ingest answers 503 with Retry-After meanwhile, never 202 without a commit, and
/// recovers by itself; everything accepted is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_postgres_answers_503_and_loses_nothing() {
    // A database of its own: refusing connections affects the whole database.
    let database = format!("hookgate_test_outage_{}", uuid::Uuid::new_v4().simple());
    admin(&format!("CREATE DATABASE {database}")).await;
    let store = format!("{}/{database}", server_url());
    let app = spawn_app_with(|config| config.store = Some(store)).await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/outage");
    let stop = Arc::new(AtomicBool::new(false));
    // What the producer has seen so far: 202s before the outage, 503s, 202s after it.
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let [before, unavailable, after] = [0, 1, 2];
    let producer = {
        let (stop, counts) = (stop.clone(), counts.clone());
        let endpoint = app.url("/api/v1/events/batch");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                let response = client
                    .post(&endpoint)
                    .bearer_auth(API_KEY)
                    .json(&json!({"events": events(5, &url, "outage")}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => {
                        let body: Value = response.json().await.unwrap();
                        accepted.extend(accepted_ids(&body));
                        let seen = match counts[unavailable].load(Ordering::SeqCst) {
                            0 => before,
                            _ => after,
                        };
                        counts[seen].fetch_add(1, Ordering::SeqCst);
                    }
                    503 => {
                        assert!(response.headers().contains_key("retry-after"));
                        counts[unavailable].fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("ingest answered {other}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            accepted
        })
    };
    let seen = |index: usize| counts[index].load(Ordering::SeqCst) > 0;
    wait_until(|| seen(before), "ingest never accepted before the outage").await;
    admin(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(|| seen(unavailable), "ingest never answered 503").await;
    admin(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(|| seen(after), "ingest never recovered").await;
    stop.store(true, Ordering::SeqCst);
    let accepted = producer.await.unwrap();
    wait_for_events(&receiver, &accepted, Duration::from_secs(60)).await;
    drop(app);
    admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await;
}

/// Two nodes starting at the same moment on an empty schema: one applies the migrations
/// under the advisory lock, the other finds them applied; both serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_together_migrate_once() {
    let cluster = Cluster::new(&[]).await;
    let (first, second) = tokio::join!(cluster.launch(), cluster.launch());
    let (client, connection) = tokio_postgres::connect(&cluster.store, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM hookgate_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known: Vec<i32> = hookgate::store::postgres::MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .collect();
    assert_eq!(applied, known);
    for node in [&first, &second] {
        assert!(node.get("/api/v1/nodes").await["nodes"].is_array());
    }
}

/// More nodes than the cap: the shares are 1, 1 and 0, so the third node runs none of the
/// destination's attempts, and the receiver still sees at most the cap at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_nodes_than_the_cap_still_hold_the_cap() {
    let (_cluster, nodes, black_hole) = three_nodes_and_a_black_hole(&[], 2, 10).await;
    black_hole.wait_for(2, Duration::from_secs(10)).await;
    // Let every node claim and try: the third has no share, the others are full.
    let healthy = Receiver::start().await;
    let (status, _) = nodes[2]
        .post_batch(&events(1, &healthy.url("/ok"), "ok"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    healthy.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(black_hole.max_concurrent(), 2);
    let shares: Vec<u64> = nodes[0].get("/api/v1/nodes").await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|node| node["destination_share"].as_u64())
        .collect();
    assert_eq!(shares, vec![1, 1, 0]);
}

/// Wait until `done`, checking every 20 ms; panics with `what` after 30 s.
async fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_through_one_node_holds_on_every_node() {
    let cluster = Cluster::new(&[("HOOKGATE_NODE_HEARTBEAT_MS", "200")]).await;
    let (first, second) = (cluster.launch().await, cluster.launch().await);
    let receiver = Receiver::start().await;
    let destination = receiver
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let client = reqwest::Client::new();
    let call = |node: &Node, action: &str| {
        client
            .post(format!(
                "{}/api/v1/destinations/{destination}/{action}",
                node.base
            ))
            .bearer_auth(API_KEY)
            .send()
    };
    let paused_on = |node: &Node| {
        let node_base = node.base.clone();
        let destination = destination.clone();
        async move {
            let listing: Value = reqwest::Client::new()
                .get(format!("{node_base}/api/v1/destinations"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            listing["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|row| row["destination"] == destination && row["state"] == "paused")
        }
    };
    assert_eq!(call(&first, "pause").await.unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !paused_on(&second).await {
        assert!(
            Instant::now() < deadline,
            "the other node never took up the pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Events through either node wait, handed back with no attempt spent.
    for node in [&first, &second] {
        let (_, accepted) = node
            .post_batch(&[event_to(
                "parse.success",
                json!({"webhook_url": receiver.url("/p")}),
            )])
            .await
            .expect("accepted");
        let id = accepted["events"][0]["deliveries"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let delivery = node.get(&format!("/api/v1/deliveries/{id}")).await;
            if delivery["last_error"]
                .as_str()
                .is_some_and(|error| error.starts_with("destination paused"))
            {
                assert_eq!(delivery["attempt_count"], 0, "{delivery:#}");
                break;
            }
            assert!(Instant::now() < deadline, "never held: {delivery:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        receiver.count(),
        0,
        "a paused destination received a request"
    );
    // Resumed through the other node: both deliveries go, from whichever node holds them.
    assert_eq!(call(&second, "resume").await.unwrap().status(), 200);
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while paused_on(&first).await {
        assert!(
            Instant::now() < deadline,
            "the first node never took up the resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
