//! One attempt of one delivery: build the request, run the transform plugin, normalise the
//! headers, sign, send, let the retry policy decide, and record the attempt with its outcome
//! in one store write. When the plugin is paused by its breaker nothing is attempted: the
//! delivery goes back to the queue until the pause ends, with no attempt recorded.

use super::DeliveryContext;
use super::breaker::Admission;
use super::client::SendError;
use super::feed::FinishedAttempt;
use super::pauses::{self, PAUSED_REASON_PREFIX};
use super::prepare::{self, PluginCall, Unsent};
use super::rate::{MAX_TURN_WAIT, Turn};
use super::retry::{AttemptResult, RetryAction, RetryPolicy, parse_retry_after};
use crate::domain::{
    Attempt, DeliveryStatus, Exchange, RecordedRequest, UnixMillis, display_host, iso_millis,
    now_millis,
};
use crate::metrics::{AttemptLabel, AttemptRecord};
use crate::store::{AttemptOutcome, ClaimedDelivery};
use std::time::Instant;

/// How the attempt ended before the retry policy looks at it.
struct Ended {
    result: AttemptResult,
    response_status: Option<u16>,
    error: Option<String>,
    response_body: Option<String>,
    /// What was sent and the response's headers, once a request left.
    exchange: Option<Exchange>,
    skipped: bool,
    /// Not attempted: the plugin is paused, so the delivery goes back to the queue until
    /// this time without spending an attempt.
    deferred_until: Option<UnixMillis>,
}

/// Run one attempt; `sent` is called once the request is done with (answered, failed or
/// skipped), before the result is written to the store.
pub async fn run(context: &DeliveryContext, delivery: ClaimedDelivery, sent: impl FnOnce()) {
    let number = delivery.attempts_made + 1;
    let destination = delivery.destination.concurrency_key();
    let probe = match context.breakers.admit(&destination) {
        Admission::Run { probe } => probe,
        Admission::Paused { until } => {
            sent();
            context.metrics.destination_deferrals.inc();
            let reason = format!(
                "{PAUSED_REASON_PREFIX}: {destination} is paused (its attempts kept failing, or an operator paused it); waiting without spending an attempt"
            );
            hand_back(context, &delivery, spread(until), reason).await;
            // Resumed meanwhile (the probe succeeded, or an operator): the resume's wake-up
            // may have run before this hand-back was written.
            if !context.breakers.is_paused(&destination)
                && let Err(error) = context
                    .store
                    .wake_paused(&destination, PAUSED_REASON_PREFIX)
                    .await
            {
                tracing::warn!(%destination, %error, "waking deliveries held by a pause failed; they go when they come due");
            }
            return;
        }
    };
    // A rate-limited host's turn comes first; the wait is not part of the attempt.
    match context
        .rates
        .take_turn(&delivery.destination.url, MAX_TURN_WAIT)
    {
        Turn::After(wait) => tokio::time::sleep(wait).await,
        Turn::Later(wait) => {
            if probe {
                context.breakers.abandon_probe(&destination);
            }
            sent();
            let due_at = now_millis().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(0));
            let reason = format!(
                "rate limited: {destination}'s next turn is in {} ms; waiting without spending an attempt",
                wait.as_millis()
            );
            hand_back(context, &delivery, spread(due_at), reason).await;
            return;
        }
    }
    let started_at = now_millis();
    let clock = Instant::now();
    let policy = RetryPolicy::new(&context.config.retry, &delivery.destination.retry);
    let ended = send_once(context, &delivery, &policy).await;
    let duration = clock.elapsed();
    sent();
    // Only a request that left says anything about the receiver, and of its answers only a
    // 2xx (well) or a 5xx, 429, timeout or refused connection (unwell): another 4xx is one
    // tenant's URL or credentials, on a host other tenants share.
    let health = match (
        ended.exchange.is_some() && !ended.skipped,
        ended.response_status,
    ) {
        (false, _) => None,
        (true, Some(200..=299)) => Some(true),
        (true, Some(status)) if status >= 500 || status == 429 => Some(false),
        (true, Some(_)) => None,
        (true, None) => Some(false),
    };
    let change = match health {
        Some(well) => context.breakers.finish(&destination, well, probe),
        None => {
            if probe {
                context.breakers.abandon_probe(&destination);
            }
            None
        }
    };
    if let Some(change) = change {
        pauses::announce(context, &destination, change).await;
    }
    if let Some(due_at) = ended.deferred_until {
        context.metrics.plugin_deferrals.inc();
        let reason = ended.error.unwrap_or_default();
        hand_back(context, &delivery, due_at, reason).await;
        return;
    }
    let outcome = if ended.skipped {
        context.metrics.deliveries_skipped.inc();
        AttemptOutcome::Skipped
    } else {
        match policy.decide(&ended.result, number - delivery.budget_start) {
            RetryAction::Succeeded => {
                context.metrics.deliveries_delivered.inc();
                AttemptOutcome::Succeeded
            }
            RetryAction::RetryAfter(wait) => {
                context.metrics.delivery_retries.inc();
                AttemptOutcome::Retry {
                    due_at: now_millis()
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                }
            }
            RetryAction::GiveUp => {
                context.metrics.deliveries_failed.inc();
                AttemptOutcome::Failed
            }
        }
    };
    let host = display_host(&delivery.destination.url);
    let label = match outcome {
        AttemptOutcome::Succeeded => AttemptLabel::Succeeded,
        AttemptOutcome::Retry { .. } => AttemptLabel::Retry,
        AttemptOutcome::Failed => AttemptLabel::Failed,
        AttemptOutcome::Skipped => AttemptLabel::Skipped,
    };
    let attempt = Attempt {
        number,
        started_at,
        duration_ms: duration.as_millis() as u64,
        response_status: ended.response_status,
        error: ended.error,
        response_body: ended.response_body,
        exchange: ended.exchange,
    };
    // What the log line needs once the attempt has moved into the store.
    let (response_status, error) = (attempt.response_status, attempt.error.clone());
    let recorded_outcome = outcome.clone();
    // Built before the attempt moves into the store, and only for a watcher.
    let finished = context.feed.watched().then(|| {
        let (status, due_at) = outcome.next_state(now_millis());
        FinishedAttempt {
            delivery_id: delivery.id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            webhook_url: delivery.destination.url.clone(),
            source: delivery.destination.source.clone(),
            attempt: number,
            outcome: label.as_str(),
            status,
            response_status: attempt.response_status,
            error: attempt.error.clone(),
            started_at,
            duration_ms: attempt.duration_ms,
            next_attempt_at: (status == DeliveryStatus::Queued).then_some(due_at),
        }
    });
    match context
        .store
        .finish_attempt(&delivery, attempt, outcome)
        .await
    {
        Ok(true) => {
            // Counted and logged once recorded: a lost lease's attempt is the next holder's
            // to count.
            context.metrics.record_attempt(AttemptRecord {
                event_type: &delivery.event_type,
                outcome: label,
                plugin: delivery.destination.transform.as_deref(),
                host: &host,
                duration,
            });
            if label != AttemptLabel::Skipped {
                context.health.record(
                    &delivery.destination.concurrency_key(),
                    label == AttemptLabel::Succeeded,
                    duration,
                    error.as_deref(),
                );
            }
            let logged = Logged {
                host: &host,
                number,
                response_status,
                error: error.as_deref().unwrap_or(""),
                duration,
            };
            log_attempt(&delivery, &logged, &recorded_outcome);
            if let Some(finished) = finished {
                context.feed.publish(finished);
            }
        }
        Ok(false) => {
            tracing::warn!(delivery_id = %delivery.id, "lease lost before the attempt was recorded")
        }
        Err(error) => {
            tracing::error!(delivery_id = %delivery.id, %error, "recording an attempt failed; the lease will expire and the delivery run again")
        }
    }
}

async fn send_once(
    context: &DeliveryContext,
    delivery: &ClaimedDelivery,
    policy: &RetryPolicy,
) -> Ended {
    let prepared = prepare::prepare(
        &context.plugins,
        &context.config.user_agent,
        delivery,
        PluginCall::Delivery,
    )
    .await;
    let outgoing = match prepared {
        Ok(outgoing) => outgoing,
        Err(unsent) => return unsent_ended(context, unsent),
    };
    let request = RecordedRequest::of(&outgoing, context.config.delivery.response_body_bytes);
    let sent = context.client.send(outgoing, policy.request_timeout).await;
    let nothing_left = matches!(
        sent,
        Err(SendError::EgressDenied(_) | SendError::Invalid(_))
    );
    let mut ended = match sent {
        Ok(response) => {
            let retry_after = response
                .retry_after
                .as_deref()
                .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
            let success = (200..300).contains(&response.status);
            Ended {
                result: AttemptResult::Response {
                    status: response.status,
                    retry_after,
                },
                response_status: Some(response.status),
                error: (!success).then(|| format!("receiver answered {}", response.status)),
                response_body: Some(response.body_prefix),
                exchange: Some(Exchange {
                    request: RecordedRequest::default(),
                    response_headers: response.headers,
                }),
                skipped: false,
                deferred_until: None,
            }
        }
        Err(error @ (SendError::EgressDenied(_) | SendError::Invalid(_))) => {
            failed(AttemptResult::Permanent, error.to_string())
        }
        Err(error) => failed(AttemptResult::Error, error.to_string()),
    };
    // Recorded whether or not the receiver answered (a timeout's request was sent too), but
    // not when the request never left: refused by the egress guard, or not a valid request.
    if !nothing_left {
        ended.exchange.get_or_insert_with(Exchange::default).request = request;
    }
    ended
}

/// A time past `until` by up to half the wait again, so the deliveries a pause held back do
/// not all come due, and through claims, at the moment it ends.
fn spread(until: UnixMillis) -> UnixMillis {
    let left_ms = until.saturating_sub(now_millis()).max(0);
    until.saturating_add(fastrand::i64(0..=left_ms / 2))
}

/// Give a delivery back to the queue until `due_at`, no attempt spent, saying why.
async fn hand_back(
    context: &DeliveryContext,
    delivery: &ClaimedDelivery,
    due_at: UnixMillis,
    reason: String,
) {
    let lease = vec![(delivery.id.clone(), delivery.lease_token.clone())];
    if let Err(error) = context
        .store
        .release_until(lease, due_at, Some(reason))
        .await
    {
        tracing::error!(delivery_id = %delivery.id, %error, "handing back a paused delivery failed; its lease will expire");
    }
}

/// What an attempt's log line says besides the delivery.
struct Logged<'a> {
    host: &'a str,
    number: u32,
    response_status: Option<u16>,
    error: &'a str,
    duration: std::time::Duration,
}

/// One line per finished attempt: a failure is a WARN an operator sees at the default level,
/// with what to look up and when the next try is; a success or skip only at debug. The host
/// alone is logged, never the URL: paths and queries carry tokens.
fn log_attempt(delivery: &ClaimedDelivery, logged: &Logged<'_>, outcome: &AttemptOutcome) {
    let duration_ms = logged.duration.as_millis() as u64;
    let (host, number, status, error) = (
        logged.host,
        logged.number,
        logged.response_status,
        logged.error,
    );
    match outcome {
        AttemptOutcome::Retry { due_at } => tracing::warn!(
            event_id = %delivery.event_id,
            delivery_id = %delivery.id,
            %host,
            attempt = number,
            status,
            error,
            duration_ms,
            next_attempt_at = %iso_millis(*due_at),
            "attempt failed; will retry"
        ),
        AttemptOutcome::Failed => tracing::warn!(
            event_id = %delivery.event_id,
            delivery_id = %delivery.id,
            %host,
            attempt = number,
            status,
            error,
            duration_ms,
            "delivery failed for good (dead letter): no attempts left or the failure is permanent"
        ),
        AttemptOutcome::Succeeded => tracing::debug!(
            event_id = %delivery.event_id,
            delivery_id = %delivery.id,
            %host,
            attempt = number,
            status,
            duration_ms,
            "delivered"
        ),
        AttemptOutcome::Skipped => tracing::debug!(
            event_id = %delivery.event_id,
            delivery_id = %delivery.id,
            %host,
            attempt = number,
            reason = error,
            "skipped by its plugin"
        ),
    }
}

/// An attempt that sent nothing: a plugin's skip is final, its pause defers without spending
/// the attempt, its permanent failures dead-letter, and the rest are retried.
fn unsent_ended(context: &DeliveryContext, unsent: Unsent) -> Ended {
    let error = unsent.to_string();
    match unsent {
        Unsent::Skipped { .. } => Ended {
            skipped: true,
            ..failed(AttemptResult::Permanent, error)
        },
        Unsent::PluginPaused { left, .. } => {
            let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX / 2);
            Ended {
                deferred_until: Some(spread(now_millis().saturating_add(left_ms))),
                ..failed(
                    AttemptResult::Error,
                    format!("{error}; waiting without spending an attempt"),
                )
            }
        }
        Unsent::Plugin { error: cause, .. } => {
            context.metrics.plugin_errors.inc();
            let result = match cause.is_permanent() {
                true => AttemptResult::Permanent,
                false => AttemptResult::Error,
            };
            failed(result, error)
        }
        Unsent::Headers { .. } => failed(AttemptResult::Error, error),
    }
}

fn failed(result: AttemptResult, error: String) -> Ended {
    Ended {
        result,
        response_status: None,
        error: Some(error),
        response_body: None,
        exchange: None,
        skipped: false,
        deferred_until: None,
    }
}
