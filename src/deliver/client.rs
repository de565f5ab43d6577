//! The outbound HTTP client: one shared reqwest client (connection reuse), redirects off,
//! a per-request timeout, and a resolver that applies the egress guard to every address a
//! host name resolves to.

use crate::domain::{MAX_RECORDED_RESPONSE_HEADERS, OutgoingRequest, shown_value};
use crate::egress::{EgressDenied, EgressGuard};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    EgressDenied(EgressDenied),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

/// What came back from the receiver.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The first headers, as attempt records keep them (credentials masked, values cut).
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body, lossily decoded.
    pub body_prefix: String,
}

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    guard: Arc<EgressGuard>,
    body_prefix_bytes: usize,
}

/// Bytes of a response read after the kept prefix before giving up on reusing the
/// connection: small bodies are drained so keep-alive survives, large ones are dropped.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024;

impl HttpClient {
    pub fn new(guard: EgressGuard, body_prefix_bytes: usize) -> Result<Self, reqwest::Error> {
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve host names itself, around the egress guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(HttpClient {
            client,
            guard,
            body_prefix_bytes,
        })
    }

    pub async fn send(
        &self,
        request: OutgoingRequest,
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let mut url = reqwest::Url::parse(&request.url)
            .map_err(|error| SendError::Invalid(format!("url: {error}")))?;
        // reqwest sends URL credentials as a Basic `Authorization` header beside any given
        // one; a header set by the destination or its plugin is the more specific, and wins.
        let has_userinfo = !url.username().is_empty() || url.password().is_some();
        if has_userinfo && request.header("authorization").is_some() {
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::Invalid(format!(
                "scheme {:?} is not http(s)",
                url.scheme()
            )));
        }
        // IP literals never reach the resolver, so they are checked here.
        if let Some(host) = url.host() {
            self.guard
                .check_host(&host)
                .map_err(SendError::EgressDenied)?;
        }
        let mut builder = self.client.post(url).timeout(timeout).body(request.body);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
            .send()
            .await
            .map_err(|error| classify(error, timeout))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let headers = response
            .headers()
            .iter()
            .take(MAX_RECORDED_RESPONSE_HEADERS)
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (name.as_str().to_owned(), shown_value(name.as_str(), &value))
            })
            .collect();
        let mut prefix = Vec::new();
        let mut read = 0usize;
        let mut read_whole = true;
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    if prefix.len() < self.body_prefix_bytes {
                        let room = self.body_prefix_bytes - prefix.len();
                        prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    if read > self.body_prefix_bytes + DRAIN_LIMIT_BYTES {
                        read_whole = false;
                        break;
                    }
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is only recorded as such.
                Err(_) => {
                    read_whole = false;
                    break;
                }
            }
        }
        let cut = read > prefix.len();
        if cut {
            // A character cut in half by the prefix would be decoded as U+FFFD.
            let whole_chars = match std::str::from_utf8(&prefix) {
                Ok(_) => prefix.len(),
                Err(error) if error.error_len().is_none() => error.valid_up_to(),
                Err(_) => prefix.len(),
            };
            prefix.truncate(whole_chars);
        }
        let mut body_prefix = String::from_utf8_lossy(&prefix).into_owned();
        // Say that the record holds a prefix, and of how much.
        if cut || !read_whole {
            let more = if read_whole { "" } else { "at least " };
            body_prefix.push_str(&format!("… [truncated: {more}{read} bytes in all]"));
        }
        Ok(Response {
            status,
            retry_after,
            headers,
            body_prefix,
        })
    }
}

fn classify(error: reqwest::Error, timeout: Duration) -> SendError {
    // The URL is on the delivery already, and its userinfo may hold a password.
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(denied) = cause.downcast_ref::<EgressDenied>() {
            return SendError::EgressDenied(denied.clone());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        SendError::Timeout(timeout)
    } else if error.is_connect() {
        SendError::Connect(error_chain(&error))
    } else {
        SendError::Other(error_chain(&error))
    }
}

/// The error and its causes on one line: reqwest's own message alone rarely says what broke.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct GuardedResolver {
    guard: Arc<EgressGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let mut denied = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match guard.check_ip(address.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        denied.get_or_insert(refusal);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), denied) {
                (true, Some(refusal)) => {
                    Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
