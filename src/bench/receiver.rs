//! The benchmark's receiver: a real axum server on port 0 that acknowledges every POST,
//! marks the event's sequence number, and records end-to-end latency from the payload's
//! accept timestamp. It can black-hole requests (accept, never answer) until opened.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub struct Tally {
    /// One bit per event sequence number: distinct events received.
    seen: Mutex<Vec<u64>>,
    pub distinct: AtomicU64,
    pub requests: AtomicU64,
    /// End-to-end latencies, microseconds.
    pub latencies_us: Mutex<Vec<u32>>,
    open: AtomicBool,
    opened: Notify,
}

#[derive(Clone)]
pub struct BenchReceiver {
    pub addr: SocketAddr,
    pub tally: Arc<Tally>,
}

impl BenchReceiver {
    pub async fn start(capacity: usize, open: bool) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally {
            seen: Mutex::new(vec![0; capacity.div_ceil(64)]),
            distinct: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::with_capacity(capacity.min(2_000_000))),
            open: AtomicBool::new(open),
            opened: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(tally.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(BenchReceiver { addr, tally })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Start answering, including the requests held while black-holed.
    pub fn open(&self) {
        self.tally.open.store(true, Ordering::SeqCst);
        self.tally.opened.notify_waiters();
    }
}

async fn receive(State(tally): State<Arc<Tally>>, body: Bytes) -> StatusCode {
    while !tally.open.load(Ordering::SeqCst) {
        let opened = tally.opened.notified();
        if tally.open.load(Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    let now_us = chrono::Utc::now().timestamp_micros();
    tally.requests.fetch_add(1, Ordering::Relaxed);
    if let Some((seq, accepted_us)) = parse(&body) {
        if let Ok(mut seen) = tally.seen.lock()
            && let Some(word) = seen.get_mut((seq / 64) as usize)
        {
            let bit = 1u64 << (seq % 64);
            if *word & bit == 0 {
                *word |= bit;
                tally.distinct.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Ok(mut latencies) = tally.latencies_us.lock() {
            latencies.push((now_us - accepted_us).clamp(0, u32::MAX as i64) as u32);
        }
    }
    StatusCode::OK
}

/// Only the fields the tally needs; serde skips the rest without building values, so the
/// receiver costs the machine as little as it can.
#[derive(serde::Deserialize)]
struct Received {
    /// Inngest-shaped bodies: milliseconds.
    ts: Option<i64>,
    /// Plain payloads: seconds.
    timestamp: Option<f64>,
    data: Option<ReceivedData>,
}

#[derive(serde::Deserialize)]
struct ReceivedData {
    /// Plain payloads: `data.seq`.
    seq: Option<u64>,
    /// Inngest-shaped bodies carry the payload under `data`: `data.data.seq`.
    data: Option<ReceivedSeq>,
}

#[derive(serde::Deserialize)]
struct ReceivedSeq {
    seq: Option<u64>,
}

/// The event's `seq` and accept time, from a plain payload (`timestamp`, seconds) or an
/// Inngest-shaped body (`ts`, milliseconds, with the payload under `data`).
fn parse(body: &[u8]) -> Option<(u64, i64)> {
    let received: Received = serde_json::from_slice(body).ok()?;
    let data = received.data?;
    match received.ts {
        Some(ms) => Some((data.data?.seq?, ms * 1_000)),
        None => Some((data.seq?, (received.timestamp? * 1e6) as i64)),
    }
}
