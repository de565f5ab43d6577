//! `POST /api/v1/plugins/preview`: the console's plugin playground. Resolves the destination
//! (a saved configuration, or just a URL, with the chosen plugin and config) and the event,
//! then `deliver::prepare::preview` answers with the request the engine would send (after
//! the plugin, header normalisation and signing), the plugin's skip, or why nothing would
//! leave. Nothing is sent and nothing is stored.

use super::{ApiError, ApiState, parse_json};
use crate::deliver::prepare::{self, Preview};
use crate::domain::{ConfigId, DestinationSource, RecordedRequest};
use crate::routing::{Checks, FieldError, WebhookConfig};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::Deserialize;
use std::sync::Arc;

/// Where the request goes when neither a saved configuration nor `webhook_url` says.
const DEFAULT_PREVIEW_URL: &str = "https://receiver.example/webhook";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// The plugin to run; with `config_id`, in place of the configuration's own.
    plugin: Option<String>,
    /// The plugin's config; with `config_id`, in place of the configuration's own.
    plugin_config: Option<serde_json::Value>,
    /// A saved configuration: its URL, headers, output format, secret and plugin.
    config_id: Option<ConfigId>,
    /// Without `config_id`: where the request would go.
    webhook_url: Option<String>,
    event: PreviewEvent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewEvent {
    event_type: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    event_id: Option<String>,
}

pub async fn preview(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = state.config.limits.max_event_bytes;
    let body = body.map_err(|rejection| super::body_rejection(rejection, limit))?;
    let body: PreviewBody = parse_json(&body)?;
    let (event_type, event_id, data) = crate::ingest::event_fields(
        &body.event.event_type,
        body.event.event_id.as_deref(),
        body.event.data.clone(),
        "event.",
    )?;

    let (config, previous_secret, source) = match &body.config_id {
        Some(_) if body.webhook_url.is_some() => {
            return Err(ApiError::unprocessable(
                "webhook_url: give a saved configuration (config_id) or a URL, not both",
            ));
        }
        Some(config_id) => {
            let saved = state.store.config(config_id).await?.ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "config_id: no saved configuration {:?}",
                    config_id.as_str()
                ))
            })?;
            let config =
                WebhookConfig::from_saved(&saved.settings, saved.signing_secret.as_deref())
                    .map_err(|message| ApiError::unprocessable(format!("config_id: {message}")))?;
            let source = DestinationSource::Saved {
                config_id: saved.id.clone(),
            };
            (config, saved.previous_secret, source)
        }
        None => {
            let config = WebhookConfig {
                webhook_url: body
                    .webhook_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PREVIEW_URL.to_owned()),
                ..WebhookConfig::default()
            };
            (config, None, DestinationSource::Inline)
        }
    };
    // Another plugin than the configuration's does not get its config, which was written
    // for that one.
    let switched = body.plugin.is_some() && body.plugin != config.webhook_transform;
    let saved_config = match switched {
        true => None,
        false => config.webhook_transform_config.clone(),
    };
    let config = WebhookConfig {
        webhook_transform: body.plugin.clone().or(config.webhook_transform),
        webhook_transform_config: body.plugin_config.clone().or(saved_config),
        ..config
    };
    let mut destination = {
        let plugin_missing = |name: &str| state.plugins.missing(name);
        let checks = Checks {
            egress: &state.egress,
            plugin_missing: &plugin_missing,
            allow_patterns: false,
        };
        config
            .validate("", &checks, source)
            .map_err(|error| ApiError::from(body_field(error, body.config_id.is_some())))?
            .destination
    };
    destination.previous_signing_secret = previous_secret;

    let timestamp = crate::ingest::unix_seconds_now();
    let payload =
        crate::ingest::bounded_payload(&event_id, event_type, timestamp, &data, "event.", limit)?;
    let plugin = destination.transform.clone();
    let delivery = prepare::preview_delivery(event_id, event_type, timestamp, payload, destination);
    let preview = prepare::preview(
        &state.plugins,
        &state.config.user_agent,
        &delivery,
        "plugin_config",
    )
    .await;
    Ok(Json(match preview {
        Preview::Send(request) => serde_json::json!({
            "outcome": "send",
            "plugin": plugin,
            "method": "POST",
            "request": RecordedRequest::of(&request, request.body.len()),
        }),
        Preview::Skip(reason) => serde_json::json!({
            "outcome": "skip",
            "plugin": plugin,
            "reason": reason,
        }),
        Preview::Unsent(error) => serde_json::json!({
            "outcome": "error",
            "plugin": plugin,
            "error": error,
        }),
    }))
}

/// A configuration field's error in the words of this endpoint's body: a saved
/// configuration's own fields are named under `config_id`.
fn body_field(error: FieldError, saved: bool) -> FieldError {
    let field = match error.field.as_str() {
        "webhook_transform" => "plugin".to_owned(),
        "webhook_transform_config" => "plugin_config".to_owned(),
        other => match other.strip_prefix("webhook_transform_config") {
            Some(rest) => format!("plugin_config{rest}"),
            None if saved => format!("config_id ({other})"),
            None => other.to_owned(),
        },
    };
    FieldError {
        field,
        message: error.message,
    }
}
