//! What happens when a destination is paused or resumed, by its breaker or an operator: a
//! log line, a count, and, when `delivery.notify_url` is set, an event
//! `hookgate.destination.paused` or `hookgate.destination.resumed` queued to it like any
//! delivery (durable, retried, signed by nothing).

use super::DeliveryContext;
use super::breaker::Change;
use crate::domain::{
    DeliveryId, Destination, DestinationSource, EventId, OutputFormat, RetryOverride, now_millis,
};
use crate::store::{NewDelivery, NewEvent};

/// How the last error of a delivery a pause handed back begins, so a resume can find them.
pub const PAUSED_REASON_PREFIX: &str = "destination paused";

/// Log, count and announce `change` of `destination`; on a resume, the deliveries the pause
/// handed back are made due at once.
pub async fn announce(context: &DeliveryContext, destination: &str, change: Change) {
    let (event_type, data) = match &change {
        Change::Paused {
            pause,
            by_operator,
            failures_in_a_row,
        } => {
            context.metrics.destination_pauses.inc();
            let pause_ms = (!*by_operator).then_some(pause.as_millis() as u64);
            tracing::warn!(
                %destination,
                by_operator,
                failures_in_a_row,
                pause_ms,
                "destination paused: its deliveries wait without spending attempts"
            );
            (
                "hookgate.destination.paused",
                serde_json::json!({
                    "destination": destination,
                    "by_operator": by_operator,
                    "failures_in_a_row": failures_in_a_row,
                    "pause_ms": pause_ms,
                }),
            )
        }
        Change::Resumed { by_operator } => {
            match context
                .store
                .wake_paused(destination, PAUSED_REASON_PREFIX)
                .await
            {
                Ok(woken) => {
                    tracing::info!(%destination, by_operator, woken, "destination resumed")
                }
                Err(error) => {
                    tracing::warn!(%destination, %error, "destination resumed; its held-back deliveries go when they come due")
                }
            }
            (
                "hookgate.destination.resumed",
                serde_json::json!({"destination": destination, "by_operator": by_operator}),
            )
        }
    };
    let Some(url) = &context.config.delivery.notify_url else {
        return;
    };
    if crate::domain::concurrency_key(url) == destination {
        // It would only wait behind the pause it announces.
        tracing::warn!(%destination, "not notifying: delivery.notify_url is on the paused destination");
        return;
    }
    let event_id = EventId::generate();
    let timestamp = now_millis() as f64 / 1000.0;
    let payload = serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": timestamp,
        "data": data,
    });
    let event = NewEvent {
        id: event_id,
        event_type: event_type.to_owned(),
        project_id: None,
        timestamp,
        payload: payload.to_string(),
        deliveries: vec![NewDelivery {
            id: DeliveryId::generate(),
            destination: Destination {
                url: url.clone(),
                headers: Vec::new(),
                output_format: OutputFormat::Json,
                signing_secret: None,
                previous_signing_secret: None,
                transform: None,
                transform_config: None,
                retry: RetryOverride::default(),
                source: DestinationSource::Route {
                    name: "notifications".to_owned(),
                },
            },
            lease: None,
        }],
    };
    if let Err(error) = context.store.enqueue(vec![event]).await {
        tracing::error!(%destination, %error, "queueing the pause notification failed");
    }
}
