//! Per-destination rate limits: an operator caps how many requests a second a destination
//! host receives (`[destinations."host"] rate_per_second`), and every attempt to it waits for
//! its turn before it is sent.
//!
//! Turns are spaced evenly (one every `1 / rate` seconds, no bursts), each attempt taking the
//! next free one, so the limit holds over any stretch of time. An attempt waits holding its
//! destination slot and lease (renewed as always), so the destination's concurrency cap
//! bounds how many wait. On a cluster each node spaces its own attempts at the rate divided by
//! the live nodes, as it does the concurrency cap.

use crate::domain::display_host;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

pub struct RateLimits {
    /// Requests per second, by host as `display_host` names it.
    rates: HashMap<String, f64>,
    /// When each limited host's next turn is.
    next_turn: Mutex<HashMap<String, Instant>>,
    live_nodes: AtomicUsize,
}

impl RateLimits {
    /// `rates` by host, already normalised by `config`.
    pub fn new(rates: HashMap<String, f64>) -> Self {
        RateLimits {
            rates,
            next_turn: Mutex::new(HashMap::new()),
            live_nodes: AtomicUsize::new(1),
        }
    }

    /// The configured rate of `host` (in `display_host` form), if it has one.
    pub fn rate_of(&self, host: &str) -> Option<f64> {
        self.rates.get(host).copied()
    }

    pub fn set_live_nodes(&self, nodes: usize) {
        self.live_nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// Wait for the next turn of `url`'s host, if it is limited.
    pub async fn wait_turn(&self, url: &str) {
        if self.rates.is_empty() {
            return;
        }
        let host = display_host(url);
        let Some(rate) = self.rate_of(&host) else {
            return;
        };
        let nodes = self.live_nodes.load(Ordering::Relaxed) as f64;
        let spacing = Duration::from_secs_f64(nodes / rate);
        let turn = {
            let Ok(mut next_turn) = self.next_turn.lock() else {
                return;
            };
            let now = Instant::now();
            let turn = next_turn
                .get(&host)
                .copied()
                .filter(|at| *at > now)
                .unwrap_or(now);
            next_turn.insert(host, turn + spacing);
            turn
        };
        tokio::time::sleep_until(turn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_are_spaced_by_the_rate_and_unlimited_hosts_never_wait() {
        let limits = RateLimits::new(HashMap::from([("a.example".to_owned(), 4.0)]));
        let start = Instant::now();
        for _ in 0..5 {
            limits.wait_turn("https://a.example/x").await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(1000),
            "turns at 0, 250 … 1000 ms"
        );
        limits.wait_turn("https://b.example/x").await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        limits.set_live_nodes(2);
        limits.wait_turn("https://a.example/x").await;
        limits.wait_turn("https://a.example/x").await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(1750),
            "two nodes: each takes a turn every 500 ms"
        );
    }
}
