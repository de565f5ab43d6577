//! `hookgate plugin run` and `hookgate plugin check`: try a plugin on an event file and print
//! what it would send, or load a component file and say what it is, so an author or operator
//! can check a plugin before routing traffic through it.

use super::{PluginHost, runtime};
use crate::config::PluginLimitsConfig;
use crate::deliver::prepare::{self, Preview};
use crate::domain::{Destination, DestinationSource, EventId, EventType, OutputFormat};
use anyhow::{Context, Result, bail};
use sha2::Digest;
use std::path::{Path, PathBuf};

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
    let transform_config = config
        .map(|text| serde_json::from_str::<serde_json::Value>(text).context("--config is not JSON"))
        .transpose()?;
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
    let host = PluginHost::start_one(plugins_dir, name, &PluginLimitsConfig::default()).await?;
    if !host.exists(name) {
        if let Some(error) = host
            .list()
            .into_iter()
            .find_map(|info| (info.name == name).then_some(info.last_error).flatten())
        {
            bail!("plugin {name} failed to load: {error}");
        }
        let names: Vec<String> = host.list().into_iter().map(|info| info.name).collect();
        bail!(
            "no plugin named {name:?}; bundled: {} (files in the plugins folder are named by \
             their file stem)",
            names.join(", ")
        );
    }
    let destination = Destination {
        url: url.into(),
        headers: Vec::new(),
        output_format: OutputFormat::String,
        signing_secret: None,
        previous_signing_secret: None,
        transform: Some(name.into()),
        transform_config,
        retry: Default::default(),
        source: DestinationSource::Inline,
    };
    let delivery = prepare::preview_delivery(event_id, event_type, timestamp, payload, destination);
    // As the engine would send it; signing needs a secret, and this preview has none.
    let user_agent = crate::config::Config::default().user_agent;
    match prepare::preview(&host, &user_agent, &delivery, "config").await {
        Preview::Send(request) => {
            println!("SEND POST {}", crate::domain::redacted_url(&request.url));
            for (header, value) in &request.headers {
                println!("{header}: {value}");
            }
            println!();
            println!("{}", String::from_utf8_lossy(&request.body));
            Ok(())
        }
        Preview::Skip(reason) => {
            println!("SKIP {reason}");
            Ok(())
        }
        Preview::Unsent(why) => bail!("{why}"),
    }
}

/// Load `file` as the gateway would and print what it is; fails when it would not load, or
/// when its `validate-config` refuses `config`.
pub async fn check(file: &Path, config: Option<&str>) -> Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .context("the file has no name")?
        .to_owned();
    let hash = hex::encode(sha2::Sha256::digest(&wasm));
    let limits = runtime::CallLimits::from(&PluginLimitsConfig::default());
    let started = std::time::Instant::now();
    let compiled = {
        let (name, hash) = (name.clone(), hash.clone());
        tokio::task::spawn_blocking(move || runtime::compile(&name, &wasm, &hash, None)).await?
    }
    .map_err(|error| anyhow::anyhow!("{} would not load: {error}", file.display()))?;
    println!("plugin:    {name} (destinations name it \"{name}\" in webhook_transform)");
    println!("sha256:    {hash}");
    println!("compiled:  {:.2} s", started.elapsed().as_secs_f64());
    let contract = match compiled.contract() {
        runtime::Contract::Current => "hookgate:plugin/transformer@0.2.0",
        runtime::Contract::First => {
            "hookgate:plugin/transformer@0.1.0 (no describe or validate-config)"
        }
    };
    println!("contract:  {contract}");
    match runtime::describe(&compiled, limits).await {
        Ok(Some(about)) => {
            println!(
                "describes: {} {}: {}",
                about.name, about.version, about.description
            );
            if let Some(schema) = about.config_schema {
                println!("config schema: {schema}");
            }
        }
        Ok(None) => {}
        Err(error) => println!("describe:  failed: {error}"),
    }
    if compiled.trapped_imports().is_empty() {
        println!("imports:   none that run code");
    } else {
        println!(
            "imports hookgate does not provide (each traps if called, and the delivery that called it is dead-lettered):"
        );
        for import in compiled.trapped_imports() {
            println!("  {import}");
        }
    }
    if let Some(text) = config {
        let config_json = serde_json::from_str::<serde_json::Value>(text)
            .context("--config is not JSON")?
            .to_string();
        match runtime::validate_config(&compiled, limits, &config_json).await {
            Ok(None) => println!("config:    not checked (a 0.1.0 plugin cannot say)"),
            Ok(Some(Ok(()))) => println!("config:    accepted"),
            Ok(Some(Err(refused))) => {
                let refused = super::ConfigRefused {
                    pointer: refused.pointer,
                    message: refused.message,
                };
                bail!(
                    "config refused: {}: {}",
                    refused.field("config"),
                    refused.message
                )
            }
            Err(error) => bail!("validate-config failed: {error}"),
        }
    }
    Ok(())
}
