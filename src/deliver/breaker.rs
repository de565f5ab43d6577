//! The circuit breaker per destination (the concurrency key): after `after_failures` sent
//! attempts in a row fail, the destination is paused, and its deliveries wait in the queue
//! without spending attempts until the pause ends. Then one attempt goes through as a probe:
//! if it fails too, the next pause is twice as long (up to `max_pause`); any success closes
//! the breaker. An operator may pause a destination until resumed, and resume any pause.
//!
//! Only attempts that sent a request count: a plugin's failure says nothing about the
//! receiver. A breaker's state is this node's, in memory: on a cluster each node trips on
//! what it sees (each holds a share of the destination's traffic). An operator's pauses are
//! kept in the store and taken up by every node at its heartbeat (see
//! `Engine::sync_operator_pauses`).

use crate::domain::{UnixMillis, now_millis};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failed attempts in a row that pause a destination; 0 never does.
    pub after_failures: u32,
    pub first_pause: Duration,
    pub max_pause: Duration,
}

/// May an attempt to a destination run now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; `probe` when it is the one attempt that ends a pause.
    Run { probe: bool },
    /// No: hand the delivery back until this time.
    Paused { until: UnixMillis },
}

/// What an attempt or an operator changed, for logs, metrics and notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Paused {
        pause: Duration,
        by_operator: bool,
        failures_in_a_row: u32,
    },
    Resumed {
        by_operator: bool,
    },
}

/// A destination's pause, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseView {
    /// `None` for an operator's pause, which lasts until resumed.
    pub until: Option<UnixMillis>,
    pub by_operator: bool,
}

pub struct Breakers {
    policy: BreakerPolicy,
    by_destination: Mutex<HashMap<String, Breaker>>,
}

#[derive(Default)]
struct Breaker {
    failures_in_a_row: u32,
    open: Option<Open>,
}

struct Open {
    until: UnixMillis,
    pause: Duration,
    by_operator: bool,
    probe_running: bool,
}

/// Destinations whose breaker state is kept.
const MAX_DESTINATIONS: usize = 10_000;

/// How long a delivery of an operator's pause waits before it looks again. The resume wakes
/// what the pause held, so this only bounds a wake-up that was missed.
const OPERATOR_PAUSE_RECHECK: Duration = Duration::from_secs(3600);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Breakers {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breakers {
            policy,
            by_destination: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, destination: &str, change: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut by_destination = match self.by_destination.lock() {
            Ok(by_destination) => by_destination,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !by_destination.contains_key(destination) {
            // Bounded: past the cap, a closed breaker's count of failures is forgotten first.
            if by_destination.len() >= MAX_DESTINATIONS {
                let closed = by_destination
                    .iter()
                    .find(|(_, breaker)| breaker.open.is_none())
                    .map(|(key, _)| key.clone());
                if let Some(closed) = closed {
                    by_destination.remove(&closed);
                }
            }
            by_destination.insert(destination.to_owned(), Breaker::default());
        }
        let Some(breaker) = by_destination.get_mut(destination) else {
            // Inserted just above, under the same lock.
            return change(&mut Breaker::default());
        };
        let answer = change(breaker);
        // A closed breaker with no failures holds nothing worth keeping.
        if breaker.open.is_none() && breaker.failures_in_a_row == 0 {
            by_destination.remove(destination);
        }
        answer
    }

    pub fn admit(&self, destination: &str) -> Admission {
        // Every attempt asks: a destination with no breaker state answers without an entry.
        let known = self
            .by_destination
            .lock()
            .is_ok_and(|by_destination| by_destination.contains_key(destination));
        if !known {
            return Admission::Run { probe: false };
        }
        let now = now_millis();
        self.with(destination, |breaker| match &mut breaker.open {
            None => Admission::Run { probe: false },
            Some(open) if open.by_operator => Admission::Paused {
                until: now.saturating_add(millis(OPERATOR_PAUSE_RECHECK)),
            },
            Some(open) if now < open.until => Admission::Paused { until: open.until },
            // The pause is over and its probe is out: wait out the pause that would follow
            // a failed probe.
            Some(open) if open.probe_running => Admission::Paused {
                until: now.saturating_add(millis(open.pause)),
            },
            Some(open) => {
                open.probe_running = true;
                Admission::Run { probe: true }
            }
        })
    }

    /// Whether `destination` is paused now (its probe's turn may have come).
    pub fn is_paused(&self, destination: &str) -> bool {
        self.by_destination.lock().is_ok_and(|by_destination| {
            by_destination
                .get(destination)
                .is_some_and(|breaker| breaker.open.is_some())
        })
    }

    /// Record how a sent attempt ended: `succeeded` when the receiver was well.
    pub fn finish(&self, destination: &str, succeeded: bool, probe: bool) -> Option<Change> {
        let policy = self.policy;
        self.with(destination, |breaker| {
            if succeeded {
                breaker.failures_in_a_row = 0;
                return match &breaker.open {
                    Some(open) if !open.by_operator => {
                        breaker.open = None;
                        Some(Change::Resumed { by_operator: false })
                    }
                    _ => None,
                };
            }
            breaker.failures_in_a_row = breaker.failures_in_a_row.saturating_add(1);
            let failures_in_a_row = breaker.failures_in_a_row;
            let pause = match &breaker.open {
                Some(open) if open.by_operator => return None,
                Some(open) if probe => (open.pause * 2).min(policy.max_pause),
                // A call admitted before the pause began, ending in it.
                Some(_) => return None,
                None if policy.after_failures > 0 && failures_in_a_row >= policy.after_failures => {
                    policy.first_pause.min(policy.max_pause)
                }
                None => return None,
            };
            breaker.open = Some(Open {
                until: now_millis().saturating_add(millis(pause)),
                pause,
                by_operator: false,
                probe_running: false,
            });
            Some(Change::Paused {
                pause,
                by_operator: false,
                failures_in_a_row,
            })
        })
    }

    /// A probe that sent nothing (its plugin was paused or skipped): the next attempt
    /// probes instead.
    pub fn abandon_probe(&self, destination: &str) {
        self.with(destination, |breaker| {
            if let Some(open) = &mut breaker.open {
                open.probe_running = false;
            }
        })
    }

    /// An operator's pause, until resumed.
    pub fn pause(&self, destination: &str) -> Option<Change> {
        self.with(destination, |breaker| {
            let already = breaker.open.as_ref().is_some_and(|open| open.by_operator);
            breaker.open = Some(Open {
                until: UnixMillis::MAX,
                pause: OPERATOR_PAUSE_RECHECK,
                by_operator: true,
                probe_running: false,
            });
            (!already).then_some(Change::Paused {
                pause: Duration::MAX,
                by_operator: true,
                failures_in_a_row: breaker.failures_in_a_row,
            })
        })
    }

    /// An operator's resume, of any pause.
    pub fn resume(&self, destination: &str) -> Option<Change> {
        self.with(destination, |breaker| {
            breaker.failures_in_a_row = 0;
            breaker
                .open
                .take()
                .map(|_| Change::Resumed { by_operator: true })
        })
    }

    /// Bring the operators' pauses in line with `paused` (what the store holds, set through
    /// any node): returns the destinations newly paused and newly resumed here.
    pub fn sync_operator_pauses(
        &self,
        paused: &std::collections::HashSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let here: Vec<String> = match self.by_destination.lock() {
            Ok(by_destination) => by_destination
                .iter()
                .filter(|(_, breaker)| breaker.open.as_ref().is_some_and(|open| open.by_operator))
                .map(|(destination, _)| destination.clone())
                .collect(),
            Err(_) => return (Vec::new(), Vec::new()),
        };
        let resumed: Vec<String> = here
            .iter()
            .filter(|destination| !paused.contains(*destination))
            .cloned()
            .collect();
        for destination in &resumed {
            self.resume(destination);
        }
        let newly: Vec<String> = paused
            .iter()
            .filter(|destination| self.pause(destination).is_some())
            .cloned()
            .collect();
        (newly, resumed)
    }

    /// The destinations paused now.
    pub fn paused(&self) -> HashMap<String, PauseView> {
        let Ok(by_destination) = self.by_destination.lock() else {
            return HashMap::new();
        };
        by_destination
            .iter()
            .filter_map(|(destination, breaker)| {
                let open = breaker.open.as_ref()?;
                Some((
                    destination.clone(),
                    PauseView {
                        until: (!open.by_operator).then_some(open.until),
                        by_operator: open.by_operator,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerPolicy {
            after_failures: 3,
            first_pause: Duration::from_millis(0),
            max_pause: Duration::from_millis(0),
        })
    }

    #[test]
    fn failures_in_a_row_pause_a_probe_decides_and_a_success_resumes() {
        let breakers = Breakers::new(BreakerPolicy {
            after_failures: 2,
            first_pause: Duration::from_secs(60),
            max_pause: Duration::from_secs(600),
        });
        assert_eq!(breakers.finish("a", false, false), None);
        assert_eq!(
            breakers.finish("a", true, false),
            None,
            "a success resets the run"
        );
        assert_eq!(breakers.finish("a", false, false), None);
        assert!(matches!(
            breakers.finish("a", false, false),
            Some(Change::Paused {
                failures_in_a_row: 2,
                by_operator: false,
                ..
            })
        ));
        assert!(matches!(breakers.admit("a"), Admission::Paused { .. }));
        assert!(breakers.paused().contains_key("a"));
        assert_eq!(breakers.admit("b"), Admission::Run { probe: false });
    }

    #[test]
    fn after_a_pause_one_probe_runs_and_its_failure_doubles_the_pause() {
        let breakers = breakers();
        breakers.finish("a", false, false);
        breakers.finish("a", false, false);
        assert!(breakers.finish("a", false, false).is_some());
        // The zero-length pause is over at once.
        assert_eq!(breakers.admit("a"), Admission::Run { probe: true });
        assert!(
            matches!(breakers.admit("a"), Admission::Paused { .. }),
            "one probe at a time"
        );
        assert!(matches!(
            breakers.finish("a", false, true),
            Some(Change::Paused { .. })
        ));
        breakers.abandon_probe("a");
        assert_eq!(breakers.admit("a"), Admission::Run { probe: true });
        assert_eq!(
            breakers.finish("a", true, true),
            Some(Change::Resumed { by_operator: false })
        );
        assert_eq!(breakers.admit("a"), Admission::Run { probe: false });
        assert!(breakers.paused().is_empty());
    }

    #[test]
    fn an_operators_pause_holds_until_resumed() {
        let breakers = breakers();
        assert!(matches!(
            breakers.pause("a"),
            Some(Change::Paused {
                by_operator: true,
                ..
            })
        ));
        assert_eq!(breakers.pause("a"), None, "pausing twice changes nothing");
        assert!(matches!(breakers.admit("a"), Admission::Paused { .. }));
        assert_eq!(
            breakers.finish("a", true, false),
            None,
            "only the operator resumes"
        );
        assert!(matches!(breakers.admit("a"), Admission::Paused { .. }));
        assert_eq!(
            breakers.resume("a"),
            Some(Change::Resumed { by_operator: true })
        );
        assert_eq!(breakers.resume("a"), None);
        assert_eq!(breakers.admit("a"), Admission::Run { probe: false });
    }
}
