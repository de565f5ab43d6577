//! The request an attempt sends, made ready before it leaves: built in the destination's
//! format, passed through its transform plugin, its headers normalised, then signed. The
//! engine sends what this returns; the console's playground and `hookgate plugin run` show
//! it and send nothing, so what an operator previews is what a receiver would get.

use super::request;
use crate::domain::{
    DeliveryId, Destination, EventId, EventType, LeaseToken, OutgoingRequest, headers, now_millis,
};
use crate::plugin::{PluginError, PluginHost, TransformInput, TransformOutcome};
use crate::store::ClaimedDelivery;
use std::sync::Arc;
use std::time::Duration;

/// Whose call the plugin makes: a delivery's goes through the plugin's breaker; a preview's
/// bypasses it (see `PluginHost::preview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginCall {
    Delivery,
    Preview,
}

/// Why no request leaves.
#[derive(Debug, thiserror::Error)]
pub enum Unsent {
    /// The plugin chose not to deliver this event.
    #[error("skipped by plugin {plugin}: {reason}")]
    Skipped { plugin: String, reason: String },
    /// The plugin's breaker has it paused for this long.
    #[error("plugin {plugin} is paused: its calls kept exhausting their CPU budget")]
    PluginPaused { plugin: String, left: Duration },
    /// The plugin failed.
    #[error("plugin {plugin}: {error}")]
    Plugin { plugin: String, error: PluginError },
    /// The headers (a plugin's, since ingest bounds a destination's own) cannot be sent.
    #[error("{sender} not sent: {error}")]
    Headers { sender: String, error: String },
}

/// The request `delivery` would send now, exactly as it would leave: signed at the end, so
/// the signature's timestamp is the send time, not the time before a plugin call that may
/// have waited for a slot or a compile.
pub async fn prepare(
    plugins: &PluginHost,
    user_agent: &str,
    delivery: &ClaimedDelivery,
    call: PluginCall,
) -> Result<OutgoingRequest, Unsent> {
    let destination = &delivery.destination;
    let mut outgoing = request::build(delivery, user_agent);
    if let Some(plugin) = &destination.transform {
        let input = TransformInput {
            event_id: delivery.event_id.to_string(),
            event_type: delivery.event_type.clone(),
            timestamp: delivery.timestamp,
            payload: delivery.payload.clone(),
            request: outgoing,
            config_json: crate::routing::transform_config_json(
                destination.transform_config.as_ref(),
            ),
        };
        let called = match call {
            PluginCall::Delivery => plugins.transform(plugin, input).await,
            PluginCall::Preview => plugins.preview(plugin, input).await,
        };
        outgoing = match called {
            Ok(TransformOutcome::Send(changed)) => changed,
            Ok(TransformOutcome::Skip(reason)) => {
                return Err(Unsent::Skipped {
                    plugin: plugin.clone(),
                    reason,
                });
            }
            Err(PluginError::Paused(left)) => {
                return Err(Unsent::PluginPaused {
                    plugin: plugin.clone(),
                    left,
                });
            }
            Err(error) => {
                return Err(Unsent::Plugin {
                    plugin: plugin.clone(),
                    error,
                });
            }
        };
    }
    if let Err(error) = headers::normalise(
        &mut outgoing,
        delivery.event_id.as_str(),
        &delivery.event_type,
    ) {
        let sender = match destination.transform.as_deref() {
            Some(plugin) => format!("request from plugin {plugin}"),
            None => "request".to_owned(),
        };
        return Err(Unsent::Headers {
            sender,
            error: error.to_string(),
        });
    }
    request::sign(
        &mut outgoing,
        destination,
        delivery.event_id.as_str(),
        now_millis(),
    );
    Ok(outgoing)
}

/// A delivery that exists only to be prepared and shown: the first attempt of `event` to
/// `destination`, with no row or lease behind it.
pub fn preview_delivery(
    event_id: EventId,
    event_type: EventType,
    timestamp: f64,
    payload: String,
    destination: Destination,
) -> ClaimedDelivery {
    ClaimedDelivery {
        id: DeliveryId::from("preview"),
        lease_token: LeaseToken::from(""),
        event_id,
        event_type: event_type.as_str().into(),
        timestamp,
        payload: Arc::from(payload),
        destination,
        attempts_made: 0,
        budget_start: 0,
    }
}

/// What a preview found.
#[derive(Debug)]
pub enum Preview {
    /// The request, exactly as it would leave.
    Send(OutgoingRequest),
    /// The plugin's reason for not delivering this event.
    Skip(String),
    /// Why nothing would leave: the plugin refuses its config, fails, or makes headers that
    /// cannot be sent.
    Unsent(String),
}

/// Prepare `delivery` as its first attempt would be, asking the plugin about its config
/// first as ingest does (a refusal names the config's place as `config_field`). Nothing is
/// sent.
pub async fn preview(
    plugins: &PluginHost,
    user_agent: &str,
    delivery: &ClaimedDelivery,
    config_field: &str,
) -> Preview {
    let destination = &delivery.destination;
    if let Some(plugin) = &destination.transform {
        let config_json =
            crate::routing::transform_config_json(destination.transform_config.as_ref());
        match plugins.preview_config(plugin, &config_json).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                return Preview::Unsent(format!(
                    "plugin {plugin} refuses the config: {}: {}",
                    refused.field(config_field),
                    refused.message
                ));
            }
            Err(error) => {
                return Preview::Unsent(format!(
                    "plugin {plugin} could not check the config: {error}"
                ));
            }
        }
    }
    match prepare(plugins, user_agent, delivery, PluginCall::Preview).await {
        Ok(request) => Preview::Send(request),
        Err(Unsent::Skipped { reason, .. }) => Preview::Skip(reason),
        Err(unsent) => Preview::Unsent(unsent.to_string()),
    }
}
