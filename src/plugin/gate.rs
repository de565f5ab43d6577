//! Per-plugin admission: how many calls of one plugin may run at once, and a breaker that
//! pauses a plugin whose calls keep exhausting their CPU budget.
//!
//! The CPU budget bounds one call, not a plugin's share of the machine: a plugin that spins
//! on every call, at a real share of traffic, keeps the async workers busy with its fibers
//! and every other delivery waits behind them. So after `pause_after` overruns in a row the
//! plugin is paused; callers are told how long, and the delivery engine hands their
//! deliveries back to the queue until then without spending an attempt. When the pause
//! ends, one call goes through as a probe: if it overruns too, the next pause is twice as
//! long (up to `max_pause`); any other outcome of the probe, or of a call admitted before
//! the pause that ends after it, closes the breaker. A new version of the plugin (another
//! sha256) starts with a closed breaker, and calls of the old one no longer count.
//!
//! Side calls (`validate-config`, admitted with [`Gates::admit_side`]) share the slots and
//! count their overruns, but never take the probe and never close the breaker: a plugin
//! whose `transform` spins must not be let off by a cheap config check. Nor do they run
//! between the end of a pause and its probe's verdict: once a pause has started, only a
//! `transform` probe can show the plugin well again, and until then a side call is turned
//! away (its config is then accepted unchecked, as for any failed check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock, so tests can move it; the same as std's outside paused tests.
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const FIRST_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct GatePolicy {
    pub per_plugin: usize,
    pub pause_after: u32,
    pub max_pause: Duration,
}

/// The gates of every plugin that has been called, by name.
pub struct Gates {
    policy: GatePolicy,
    by_name: Mutex<HashMap<String, Arc<Gate>>>,
}

struct Gate {
    permits: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Breaker {
    /// The plugin version this state is about; a different one resets it.
    sha256: String,
    overruns_in_a_row: u32,
    paused_until: Option<Instant>,
    last_pause: Option<Duration>,
    probe_running: bool,
}

/// May this call run now?
pub enum Admission {
    /// Yes; hold the pass while the call runs and report how it ended.
    Run(Pass),
    /// No: the plugin is paused for about this long.
    Paused(Duration),
}

/// One admitted call: its concurrency permit, the version it runs, and whether it is the
/// probe of a pause. Dropped without [`Pass::finish`] (an error before the call, a
/// cancelled task), a probe hands its turn to the next caller.
pub struct Pass {
    gate: Arc<Gate>,
    policy: GatePolicy,
    sha256: String,
    probe: bool,
    /// A `transform` call: its success closes the breaker. A side call's does not.
    closes: bool,
    finished: bool,
    _permit: OwnedSemaphorePermit,
}

impl Gates {
    pub fn new(policy: GatePolicy) -> Self {
        Gates {
            policy,
            by_name: Mutex::new(HashMap::new()),
        }
    }

    /// Ask `name`'s breaker, wait for one of its call slots, then ask again: a paused
    /// plugin's callers are turned away at once instead of queueing for slots, so a backlog
    /// coming due at the end of a pause passes straight back to the queue.
    pub async fn admit(&self, name: &str, sha256: &str) -> Admission {
        self.admit_call(name, sha256, true).await
    }

    /// Admit a side call: turned away while paused like any call, but it never probes and
    /// its success leaves the breaker as it is.
    pub async fn admit_side(&self, name: &str, sha256: &str) -> Admission {
        self.admit_call(name, sha256, false).await
    }

    async fn admit_call(&self, name: &str, sha256: &str, transform: bool) -> Admission {
        let gate = self.gate(name);
        if let Err(left) = gate.verdict(sha256, false, !transform, self.policy) {
            return Admission::Paused(left);
        }
        let Ok(permit) = gate.permits.clone().acquire_owned().await else {
            // The semaphore is never closed; a closed one would mean the host is gone.
            return Admission::Paused(FIRST_PAUSE);
        };
        match gate.verdict(sha256, transform, !transform, self.policy) {
            Ok(probe) => Admission::Run(Pass {
                gate,
                policy: self.policy,
                sha256: sha256.to_owned(),
                probe,
                closes: transform,
                finished: false,
                _permit: permit,
            }),
            Err(left) => Admission::Paused(left),
        }
    }

    /// Names of the plugins paused now, with the time left; a pause that has ended and
    /// waits only for its probe's call is not listed.
    pub fn paused(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        let Ok(by_name) = self.by_name.lock() else {
            return Vec::new();
        };
        by_name
            .iter()
            .filter_map(|(name, gate)| {
                let breaker = gate.breaker.lock().ok()?;
                let until = breaker.paused_until.filter(|until| *until > now)?;
                Some((name.clone(), until - now))
            })
            .collect()
    }

    fn gate(&self, name: &str) -> Arc<Gate> {
        let mut by_name = match self.by_name.lock() {
            Ok(by_name) => by_name,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Every call comes here: look up before allocating the key for an insert.
        if let Some(gate) = by_name.get(name) {
            return gate.clone();
        }
        by_name
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Gate {
                    permits: Arc::new(Semaphore::new(self.policy.per_plugin)),
                    breaker: Mutex::new(Breaker::default()),
                })
            })
            .clone()
    }
}

impl Gate {
    /// May a call of version `sha256` run now? `Ok(true)` when it is the probe that ends a
    /// pause (taken only when `take_probe`), `Err` with the time left while paused. A `side`
    /// call is refused from the start of a pause until a probe closes the breaker.
    fn verdict(
        &self,
        sha256: &str,
        take_probe: bool,
        side: bool,
        policy: GatePolicy,
    ) -> Result<bool, Duration> {
        let mut breaker = match self.breaker.lock() {
            Ok(breaker) => breaker,
            Err(poisoned) => poisoned.into_inner(),
        };
        if breaker.sha256 != sha256 {
            *breaker = Breaker {
                sha256: sha256.to_owned(),
                ..Breaker::default()
            };
        }
        let now = Instant::now();
        match breaker.paused_until {
            None => Ok(false),
            Some(until) if now < until => Err(until - now),
            // Past the pause, waiting for a probe's verdict.
            Some(_) if side => Err(FIRST_PAUSE.min(policy.max_pause)),
            // The pause is over but its probe is still out. Most probes of a plugin that
            // was paused fail, so wait out the pause that would follow.
            Some(_) if breaker.probe_running => Err(breaker
                .last_pause
                .map_or(FIRST_PAUSE, |last| last * 2)
                .min(policy.max_pause)),
            Some(_) if take_probe => {
                breaker.probe_running = true;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}

impl Pass {
    /// Record how the call ended: `overran` when it exhausted its CPU budget. Returns the
    /// pause that starts now, if this call started one.
    pub fn finish(mut self, overran: bool) -> Option<Duration> {
        self.finished = true;
        let mut breaker = match self.gate.breaker.lock() {
            Ok(breaker) => breaker,
            Err(poisoned) => poisoned.into_inner(),
        };
        if breaker.sha256 != self.sha256 {
            return None;
        }
        if self.probe {
            breaker.probe_running = false;
        }
        if !overran && !self.closes {
            return None;
        }
        if !overran {
            breaker.overruns_in_a_row = 0;
            breaker.paused_until = None;
            breaker.last_pause = None;
            return None;
        }
        breaker.overruns_in_a_row = breaker.overruns_in_a_row.saturating_add(1);
        let pause = match (self.probe, breaker.last_pause) {
            (true, Some(last)) => (last * 2).min(self.policy.max_pause),
            _ if breaker.overruns_in_a_row >= self.policy.pause_after
                && breaker.paused_until.is_none() =>
            {
                FIRST_PAUSE.min(self.policy.max_pause)
            }
            _ => return None,
        };
        breaker.paused_until = Some(Instant::now() + pause);
        breaker.last_pause = Some(pause);
        Some(pause)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.finished || !self.probe {
            return;
        }
        let mut breaker = match self.gate.breaker.lock() {
            Ok(breaker) => breaker,
            Err(poisoned) => poisoned.into_inner(),
        };
        if breaker.sha256 == self.sha256 {
            breaker.probe_running = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(pause_after: u32) -> Gates {
        Gates::new(GatePolicy {
            per_plugin: 2,
            pause_after,
            max_pause: Duration::from_secs(4),
        })
    }

    async fn run_side(gates: &Gates, overran: bool) -> Option<Duration> {
        match gates.admit_side("spin", "v1").await {
            Admission::Run(pass) => pass.finish(overran),
            Admission::Paused(left) => panic!("paused for {left:?}"),
        }
    }

    async fn run(gates: &Gates, sha256: &str, overran: bool) -> Option<Duration> {
        match gates.admit("spin", sha256).await {
            Admission::Run(pass) => pass.finish(overran),
            Admission::Paused(left) => panic!("paused for {left:?}"),
        }
    }

    #[tokio::test]
    async fn overruns_in_a_row_pause_the_plugin_and_a_success_closes_it() {
        let gates = gates(3);
        assert_eq!(run(&gates, "v1", true).await, None);
        assert_eq!(
            run(&gates, "v1", false).await,
            None,
            "a success resets the run"
        );
        assert_eq!(run(&gates, "v1", true).await, None);
        assert_eq!(run(&gates, "v1", true).await, None);
        assert_eq!(run(&gates, "v1", true).await, Some(FIRST_PAUSE));
        assert!(matches!(
            gates.admit("spin", "v1").await,
            Admission::Paused(left) if left <= FIRST_PAUSE
        ));
        assert_eq!(gates.paused().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_pause_and_a_good_one_closes_it() {
        let gates = gates(1);
        assert_eq!(run(&gates, "v1", true).await, Some(FIRST_PAUSE));
        tokio::time::advance(FIRST_PAUSE).await;
        let Admission::Run(probe) = gates.admit("spin", "v1").await else {
            panic!("no probe after the pause");
        };
        assert!(
            matches!(gates.admit("spin", "v1").await, Admission::Paused(_)),
            "a second call ran beside the probe"
        );
        assert_eq!(probe.finish(true), Some(FIRST_PAUSE * 2));
        assert!(matches!(
            gates.admit("spin", "v1").await,
            Admission::Paused(_)
        ));
        tokio::time::advance(FIRST_PAUSE * 2).await;
        assert!(gates.paused().is_empty(), "an ended pause is not listed");
        assert_eq!(run(&gates, "v1", false).await, None, "the good probe");
        assert_eq!(run(&gates, "v1", false).await, None, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn side_calls_count_overruns_but_neither_probe_nor_close() {
        let gates = gates(3);
        assert_eq!(run(&gates, "v1", true).await, None);
        assert_eq!(run_side(&gates, false).await, None);
        assert_eq!(run(&gates, "v1", true).await, None);
        assert_eq!(
            run_side(&gates, true).await,
            Some(FIRST_PAUSE),
            "a good side call did not reset the run, and a spinning one counts"
        );
        assert!(matches!(
            gates.admit_side("spin", "v1").await,
            Admission::Paused(_)
        ));
        tokio::time::advance(FIRST_PAUSE).await;
        assert!(
            matches!(gates.admit_side("spin", "v1").await, Admission::Paused(_)),
            "no side call between the pause and its probe's verdict"
        );
        let Admission::Run(probe) = gates.admit("spin", "v1").await else {
            panic!("a side call took the probe");
        };
        assert!(probe.probe, "the transform after the pause is the probe");
        assert_eq!(probe.finish(false), None);
        assert_eq!(run_side(&gates, false).await, None, "closed by the probe");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_finishes_hands_its_turn_on() {
        let gates = gates(1);
        assert_eq!(run(&gates, "v1", true).await, Some(FIRST_PAUSE));
        tokio::time::advance(FIRST_PAUSE).await;
        let Admission::Run(probe) = gates.admit("spin", "v1").await else {
            panic!("no probe after the pause");
        };
        drop(probe);
        assert!(
            matches!(gates.admit("spin", "v1").await, Admission::Run(_)),
            "the next caller probes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_version_starts_closed_and_the_old_ones_calls_no_longer_count() {
        let gates = gates(1);
        let Admission::Run(old_call) = gates.admit("spin", "v1").await else {
            panic!("closed breaker refused a call");
        };
        assert_eq!(run(&gates, "v1", true).await, Some(FIRST_PAUSE));
        assert_eq!(
            run(&gates, "v2", false).await,
            None,
            "a new version starts closed"
        );
        assert_eq!(old_call.finish(true), None, "the old version's overrun");
        assert!(matches!(gates.admit("spin", "v2").await, Admission::Run(_)));
    }
}
