//! Per-destination rate limits: an operator caps how many requests a second a destination
//! host receives (`[destinations."host"] rate_per_second`), and every attempt to it waits for
//! its turn before it is sent.
//!
//! Turns are spaced evenly (one every `1 / rate` seconds, no bursts), each attempt taking the
//! next free one, so the limit holds over any stretch of time. An attempt whose turn is near
//! waits for it holding its slot; one whose turn is further off than [`MAX_TURN_WAIT`] goes
//! back to the queue until then, so a slow host's backlog does not hold the engine's slots
//! asleep. On a cluster each node spaces its own attempts at the rate divided by the live
//! nodes, as it does the concurrency cap.

use crate::domain::display_host;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The longest an attempt waits for its turn holding its slot.
pub const MAX_TURN_WAIT: Duration = Duration::from_millis(250);

/// The slowest rate configurable: one request in about 17 minutes.
pub const MIN_RATE_PER_SECOND: f64 = 0.001;

/// When an attempt may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Now, or after waiting this long (at most [`MAX_TURN_WAIT`]); the turn is taken.
    After(Duration),
    /// Not before this long from now: no turn is taken.
    Later(Duration),
}

pub struct RateLimits {
    /// Requests per second, by host as `display_host` names it.
    per_second: HashMap<String, f64>,
    /// When each limited host's next turn is.
    next_turn: Mutex<HashMap<String, Instant>>,
    live_nodes: AtomicUsize,
}

impl RateLimits {
    /// `rates` by host, already normalised by `config`.
    pub fn new(per_second: HashMap<String, f64>) -> Self {
        RateLimits {
            per_second,
            next_turn: Mutex::new(HashMap::new()),
            live_nodes: AtomicUsize::new(1),
        }
    }

    /// The configured rate of `host` (in `display_host` form), if it has one.
    pub fn rate_of(&self, host: &str) -> Option<f64> {
        self.per_second.get(host).copied()
    }

    pub fn set_live_nodes(&self, nodes: usize) {
        self.live_nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// Take the next turn of `url`'s host if it comes within `max_wait`.
    pub fn take_turn(&self, url: &str, max_wait: Duration) -> Turn {
        if self.per_second.is_empty() {
            return Turn::After(Duration::ZERO);
        }
        let host = display_host(url);
        let Some(rate) = self.rate_of(&host) else {
            return Turn::After(Duration::ZERO);
        };
        let nodes = self.live_nodes.load(Ordering::Relaxed) as f64;
        // Config validation keeps the rate at or above the minimum; the clamp keeps a bad
        // value from overflowing the conversion.
        let spacing = Duration::try_from_secs_f64(nodes / rate.max(MIN_RATE_PER_SECOND))
            .unwrap_or(Duration::from_secs(3600));
        let Ok(mut next_turn) = self.next_turn.lock() else {
            return Turn::After(Duration::ZERO);
        };
        let now = Instant::now();
        let turn = next_turn
            .get(&host)
            .copied()
            .filter(|at| *at > now)
            .unwrap_or(now);
        let wait = turn - now;
        if wait > max_wait {
            return Turn::Later(wait);
        }
        next_turn.insert(host, turn + spacing);
        Turn::After(wait)
    }

    /// Wait for the next turn of `url`'s host, however far off it is.
    pub async fn wait_turn(&self, url: &str) {
        if let Turn::After(wait) = self.take_turn(url, Duration::MAX) {
            tokio::time::sleep(wait).await;
        }
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
        assert_eq!(
            limits.take_turn("https://a.example/x", Duration::from_millis(100)),
            Turn::Later(Duration::from_millis(500)),
            "a turn further off than the wait is not taken"
        );
        assert_eq!(
            limits.take_turn("https://a.example/x", Duration::from_millis(500)),
            Turn::After(Duration::from_millis(500))
        );
    }
}
