//! Terminal commands that talk to a running gateway through its API, as an operator would
//! with curl: `hookgate tail` watches attempts as they finish (the server-sent event stream)
//! and `hookgate deliveries list|show|redeliver|replay` finds and replays deliveries, one or
//! in bulk.
//!
//! They are HTTP clients of the public API, so they work against any node, local or not,
//! with the same key; nothing here opens the store. They use reqwest directly: the rule that
//! only `deliver` sends HTTP keeps destinations behind the egress guard, and these requests
//! go to the operator's own gateway, not to a destination.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where the gateway is and how to sign in.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The gateway's address.
    #[arg(long, env = "HOOKGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key [default: the first of HOOKGATE_API_KEY's comma-separated keys, else the key
    /// generated in the data folder of a SQLite gateway].
    #[arg(long, env = "HOOKGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Data folder whose generated key to use when no key is given.
    #[arg(long, env = "HOOKGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// The filters of `GET /api/v1/deliveries` and of the stream.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filters {
    /// queued, in_flight, succeeded, failed or skipped (after the attempt, for tail).
    #[arg(long)]
    pub status: Option<String>,
    /// An event type, e.g. parse.error.
    #[arg(long)]
    pub event_type: Option<String>,
    #[arg(long)]
    pub event_id: Option<String>,
    /// The destination's host (host:port when its URL names a port).
    #[arg(long)]
    pub host: Option<String>,
    /// A prefix of the destination URL.
    #[arg(long = "url-prefix")]
    pub url_prefix: Option<String>,
    /// A saved configuration's id.
    #[arg(long)]
    pub config_id: Option<String>,
}

/// A time range of creation, for the list (the stream has none).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Period {
    /// Created at or after this ISO 8601 time, e.g. 2026-11-30T22:00:00Z.
    #[arg(long)]
    pub since: Option<String>,
    /// Created before this ISO 8601 time.
    #[arg(long)]
    pub until: Option<String>,
}

/// Which page of a list.
pub struct Page {
    pub limit: usize,
    /// Where the previous page ended.
    pub page_token: Option<String>,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("status", &self.status),
            ("event_type", &self.event_type),
            ("event_id", &self.event_id),
            ("host", &self.host),
            ("url", &self.url_prefix),
            ("config_id", &self.config_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
        .collect()
    }
}

impl Target {
    fn key(&self) -> Result<String> {
        // The gateway reads HOOKGATE_API_KEY as a list (a rotation holds two keys).
        if let Some(key) = self
            .api_key
            .as_deref()
            .and_then(|keys| keys.split(',').map(str::trim).find(|key| !key.is_empty()))
        {
            return Ok(key.to_owned());
        }
        let path = self.data_dir.join("api_key");
        let key = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no API key: pass --api-key or set HOOKGATE_API_KEY (no generated key in {}; \
                 a PostgreSQL gateway keeps its generated key in the database)",
                path.display()
            )
        })?;
        Ok(key.trim().to_owned())
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// A client for one request and its answer, which a hung gateway cannot hold for ever.
    fn client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let response = self
            .client()?
            .get(self.endpoint(path))
            .bearer_auth(self.key()?)
            .query(query)
            .send()
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        answer(response).await
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A delivery id as one path segment, whatever the user typed.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The JSON of a 2xx answer, or the API's `detail` as the error.
async fn answer(response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    // reqwest's `json` feature is only for tests; the body is parsed here.
    let bytes = response.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        bail!("the gateway answered {status}: {detail}");
    }
    Ok(body)
}

/// `hookgate tail`: print attempts as they finish until interrupted.
pub async fn tail(
    target: &Target,
    filters: &Filters,
    outcome: Option<&str>,
    json: bool,
) -> Result<()> {
    let mut query = filters.pairs();
    if let Some(outcome) = outcome {
        query.push(("outcome", outcome.to_owned()));
    }
    // No overall timeout: the stream is meant to stay open.
    let mut response = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()?
        .get(target.endpoint("/api/v1/stream"))
        .bearer_auth(target.key()?)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("reaching {}", target.url))?;
    if !response.status().is_success() {
        answer(response).await?;
        bail!("the stream ended before it started");
    }
    eprintln!("watching attempts on {} (Ctrl-C to stop)", target.url);
    // Bytes until an event is whole: a character split between two chunks decodes right.
    let mut buffer: Vec<u8> = Vec::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response.chunk().await.context("reading the stream")? {
        buffer.extend_from_slice(&chunk);
        // Events end with a blank line.
        while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let (kind, data) = sse_event(&String::from_utf8_lossy(&block));
            let line = match (kind.as_str(), json) {
                ("attempt", true) => data,
                ("attempt", false) => match serde_json::from_str::<Value>(&data) {
                    Ok(attempt) => attempt_line(&attempt),
                    Err(_) => continue,
                },
                ("lagged", _) => {
                    let missed = serde_json::from_str::<Value>(&data)
                        .map(|lagged| lagged["missed"].to_string())
                        .unwrap_or(data);
                    format!("(fell behind: missed {missed} attempts)")
                }
                _ => continue,
            };
            writeln!(stdout, "{line}")?;
            stdout.flush()?;
        }
    }
    bail!("the gateway ended the stream (it is shutting down)")
}

/// The event name and data of one server-sent event block.
fn sse_event(block: &str) -> (String, String) {
    let mut kind = "message".to_owned();
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (kind, data.join("\n"))
}

/// One attempt on one line: when, how it ended, what it was and where it went.
fn attempt_line(attempt: &Value) -> String {
    let text = |field: &str| attempt[field].as_str().unwrap_or("-").to_owned();
    let status = match &attempt["response_status"] {
        Value::Number(status) => status.to_string(),
        _ => "-".to_owned(),
    };
    let mut line = format!(
        "{}  {:<9}  {:>3}  attempt {}  {}  {}  delivery {}  event {}",
        text("started_at"),
        text("outcome"),
        status,
        attempt["attempt"],
        text("event_type"),
        text("webhook_url"),
        text("delivery_id"),
        text("event_id"),
    );
    if let Some(error) = attempt["error"].as_str() {
        line.push_str("  ");
        line.push_str(error);
    }
    if let Some(next) = attempt["next_attempt_at"].as_str() {
        line.push_str("  next ");
        line.push_str(next);
    }
    line
}

/// `hookgate deliveries list`: one page of the search, newest first.
pub async fn list(
    target: &Target,
    filters: &Filters,
    period: &Period,
    page: Page,
    json: bool,
) -> Result<()> {
    let mut query = filters.pairs();
    query.extend(
        [("since", &period.since), ("until", &period.until)]
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|value| (name, value))),
    );
    query.push(("limit", page.limit.to_string()));
    if let Some(token) = page.page_token {
        query.push(("page_token", token));
    }
    let page = target.get("/api/v1/deliveries", &query).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    for item in page["items"].as_array().into_iter().flatten() {
        let text = |field: &str| item[field].as_str().unwrap_or("-").to_owned();
        println!(
            "{}  {:<9}  {:>2} attempts  {}  {}  {}",
            text("id"),
            text("status"),
            item["attempt_count"],
            text("updated_at"),
            text("event_type"),
            text("webhook_url"),
        );
    }
    if let Some(token) = page["next_page_token"].as_str() {
        println!("more: --page-token {token}");
    }
    Ok(())
}

/// `hookgate deliveries replay`: start a bulk replay of what the filters match and print its
/// progress until it ends.
pub async fn replay(
    target: &Target,
    filters: &Filters,
    period: &Period,
    max_deliveries: Option<usize>,
    dry_run: bool,
) -> Result<()> {
    let mut body = serde_json::Map::new();
    for (name, value) in filters.pairs().into_iter().chain(
        [("since", &period.since), ("until", &period.until)]
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|value| (name, value))),
    ) {
        body.insert(name.to_owned(), Value::String(value));
    }
    if let Some(max) = max_deliveries {
        body.insert("max_deliveries".to_owned(), max.into());
    }
    body.insert("dry_run".to_owned(), dry_run.into());
    let response = target
        .client()?
        .post(target.endpoint("/api/v1/deliveries/redeliver"))
        .bearer_auth(target.key()?)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)
        .send()
        .await
        .with_context(|| format!("reaching {}", target.url))?;
    let mut job = answer(response).await?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    loop {
        println!(
            "replay {id}: {} matched {} queued {}",
            job["state"].as_str().unwrap_or("-"),
            job["matched"],
            job["queued"]
        );
        if job["state"] != "running" {
            return match job["state"].as_str() {
                Some("done") => Ok(()),
                _ => bail!("the replay ended {}", job["state"]),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = target
            .get(
                &format!("/api/v1/deliveries/redeliver/{}", segment(&id)),
                &[],
            )
            .await?;
    }
}

/// `hookgate deliveries show ID`: the delivery with every attempt, as JSON.
pub async fn show(target: &Target, delivery_id: &str) -> Result<()> {
    let delivery = target
        .get(&format!("/api/v1/deliveries/{}", segment(delivery_id)), &[])
        .await?;
    println!("{}", serde_json::to_string_pretty(&delivery)?);
    Ok(())
}

/// `hookgate deliveries redeliver ID`: queue it again with a fresh retry budget.
pub async fn redeliver(target: &Target, delivery_id: &str) -> Result<()> {
    let response = target
        .client()?
        .post(target.endpoint(&format!(
            "/api/v1/deliveries/{}/redeliver",
            segment(delivery_id)
        )))
        .bearer_auth(target.key()?)
        .send()
        .await
        .with_context(|| format!("reaching {}", target.url))?;
    let delivery = answer(response).await?;
    println!(
        "{} {}",
        delivery["id"].as_str().unwrap_or(delivery_id),
        delivery["status"].as_str().unwrap_or("-")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_read_as_the_spec_writes_them() {
        assert_eq!(
            sse_event("event: attempt\ndata: {\"a\":1}\n\n"),
            ("attempt".to_owned(), "{\"a\":1}".to_owned())
        );
        assert_eq!(
            sse_event(":keep-alive\n\n"),
            ("message".to_owned(), String::new())
        );
        assert_eq!(
            sse_event("data:one\ndata: two\n\n"),
            ("message".to_owned(), "one\ntwo".to_owned())
        );
    }
}
