//! `hookgate plugin run`: try a plugin on an event file and print what it would send, so an
//! operator can check a plugin before routing traffic through it.

use super::{PluginHost, TransformInput, TransformOutcome};
use crate::config::PluginLimitsConfig;
use crate::deliver::request;
use crate::domain::{
    DeliveryId, Destination, DestinationSource, EventId, EventType, LeaseToken, OutputFormat,
};
use crate::store::ClaimedDelivery;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(
    name: &str,
    event_file: &Path,
    config: Option<&str>,
    url: &str,
    plugins_dir: Option<PathBuf>,
) -> Result<()> {
    let text = std::fs::read_to_string(event_file)
        .with_context(|| format!("reading {}", event_file.display()))?;
    let event: crate::ingest::IngestEvent = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an event", event_file.display()))?;
    let event_type = EventType::parse(&event.event_type)?;
    let config_json = match config {
        Some(text) => serde_json::from_str::<serde_json::Value>(text)
            .context("--config is not JSON")?
            .to_string(),
        None => "null".to_owned(),
    };
    let event_id = event
        .event_id
        .clone()
        .map_or_else(EventId::generate, EventId::from);
    let data = event.data.clone().unwrap_or_else(|| serde_json::json!({}));
    let timestamp = crate::ingest::unix_seconds_now();
    let payload = crate::ingest::payload_json(&event_id, event_type, timestamp, &data)?;
    let plugins_dir = plugins_dir
        .or_else(|| std::env::var_os("HOOKGATE_PLUGINS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data/plugins"));
    let host = PluginHost::start(plugins_dir, None, &PluginLimitsConfig::default()).await?;
    if !host.exists(name) {
        let names: Vec<String> = host.list().into_iter().map(|info| info.name).collect();
        bail!("no plugin named {name:?}; installed: {}", names.join(", "));
    }
    let delivery = ClaimedDelivery {
        id: DeliveryId::from("preview"),
        lease_token: LeaseToken::from(""),
        event_id: event_id.clone(),
        event_type: event_type.as_str().into(),
        timestamp,
        payload: Arc::from(payload),
        destination: Destination {
            url: url.into(),
            headers: Vec::new(),
            output_format: OutputFormat::String,
            signing_secret: None,
            transform: Some(name.into()),
            transform_config: None,
            retry: Default::default(),
            source: DestinationSource::Inline,
        },
        attempts_made: 0,
        budget_start: 0,
    };
    let outgoing = request::build(&delivery, "llamaindex-webhook-service/1.0");
    let input = TransformInput {
        event_id: event_id.to_string(),
        event_type: event_type.as_str().into(),
        timestamp,
        payload: delivery.payload.clone(),
        request: outgoing,
        config_json,
    };
    match host.transform(name, input).await {
        Ok(TransformOutcome::Send(mut request)) => {
            // As the engine would send it: headers normalised (signing needs a secret, and
            // this preview has none).
            crate::domain::headers::normalise(&mut request, event_id.as_str(), event_type.as_str())
                .with_context(|| format!("the request from plugin {name} would not be sent"))?;
            println!("SEND POST {}", crate::domain::redacted_url(&request.url));
            for (header, value) in &request.headers {
                println!("{header}: {value}");
            }
            println!();
            println!("{}", String::from_utf8_lossy(&request.body));
            Ok(())
        }
        Ok(TransformOutcome::Skip(reason)) => {
            println!("SKIP {reason}");
            Ok(())
        }
        Err(error) => bail!("plugin {name} {error}"),
    }
}
