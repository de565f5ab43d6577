//! The retry policy: the one place that decides, from an attempt's result, whether a
//! delivery succeeded, waits for another attempt, or gives up. Pure, so tests need no sleep.

use crate::config::RetryConfig;
use crate::domain::RetryOverride;
use std::time::Duration;

/// The policy in force for one destination: global settings with its overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
    pub jitter: bool,
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The receiver answered with this status.
    Response {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No usable response (connect error, timeout, plugin failure...).
    Error,
    /// Retrying cannot help (the egress guard refused the address, for instance).
    Permanent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryAction {
    Succeeded,
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    pub fn new(global: &RetryConfig, overrides: &RetryOverride) -> Self {
        RetryPolicy {
            max_attempts: overrides.max_attempts.unwrap_or(global.max_attempts).max(1),
            base_delay: Duration::from_millis(
                overrides.base_delay_ms.unwrap_or(global.base_delay_ms),
            ),
            max_delay: Duration::from_millis(overrides.max_delay_ms.unwrap_or(global.max_delay_ms)),
            request_timeout: Duration::from_millis(
                overrides.timeout_ms.unwrap_or(global.request_timeout_ms),
            ),
            jitter: overrides.jitter.unwrap_or(global.jitter),
        }
    }

    /// `attempts_in_budget` counts this attempt: 1 after the first attempt of a budget.
    pub fn decide(&self, result: &AttemptResult, attempts_in_budget: u32) -> RetryAction {
        let retry_after = match result {
            AttemptResult::Response { status, .. } if (200..300).contains(status) => {
                return RetryAction::Succeeded;
            }
            AttemptResult::Response { status: 410, .. } | AttemptResult::Permanent => {
                return RetryAction::GiveUp;
            }
            AttemptResult::Response {
                status: 429 | 503,
                retry_after,
            } => *retry_after,
            _ => None,
        };
        if attempts_in_budget >= self.max_attempts {
            return RetryAction::GiveUp;
        }
        let wait = match retry_after {
            Some(wait) => wait.min(self.max_delay),
            None => self.backoff(attempts_in_budget),
        };
        RetryAction::RetryAfter(wait)
    }

    /// The wait before retry `n` (n = 1 after the first failed attempt).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let wait = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        if self.jitter {
            wait.mul_f64(0.5 + fastrand::f64() * 0.5)
        } else {
            wait
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig::default(), &RetryOverride::default())
    }

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Response {
            status: code,
            retry_after: None,
        }
    }

    #[test]
    fn defaults_are_three_attempts_one_then_two_seconds() {
        let policy = policy();
        assert_eq!(
            policy.decide(&status(500), 1),
            RetryAction::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            policy.decide(&AttemptResult::Error, 2),
            RetryAction::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(policy.decide(&status(500), 3), RetryAction::GiveUp);
        assert_eq!(policy.decide(&status(204), 1), RetryAction::Succeeded);
        assert_eq!(
            policy.decide(&status(302), 1),
            RetryAction::RetryAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 20,
            ..policy()
        };
        let waits: Vec<u64> = (1..=8).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(200), Duration::from_secs(60));
    }

    #[test]
    fn gone_stops_and_retry_after_is_capped() {
        let policy = policy();
        assert_eq!(policy.decide(&status(410), 1), RetryAction::GiveUp);
        let throttled = AttemptResult::Response {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            policy.decide(&throttled, 1),
            RetryAction::RetryAfter(Duration::from_secs(7))
        );
        let far = AttemptResult::Response {
            status: 503,
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            policy.decide(&far, 1),
            RetryAction::RetryAfter(Duration::from_secs(60))
        );
    }

    #[test]
    fn jitter_stays_within_half_to_full_wait() {
        let policy = RetryPolicy {
            jitter: true,
            ..policy()
        };
        for _ in 0..100 {
            let wait = policy.backoff(3);
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
