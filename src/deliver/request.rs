//! Building the request for one attempt (SPEC 3–4) and signing it after any transform.

use crate::domain::{Destination, OutgoingRequest, OutputFormat, UnixMillis};
use crate::store::ClaimedDelivery;

use super::sign;

/// The request as LlamaCloud would send it: body in the destination's output format, the
/// standard headers, then the destination's own headers.
pub fn build(delivery: &ClaimedDelivery, user_agent: &str) -> OutgoingRequest {
    let destination = &delivery.destination;
    let body = match destination.output_format {
        OutputFormat::Json => bytes::Bytes::copy_from_slice(delivery.payload.as_bytes()),
        OutputFormat::String => {
            // A JSON string of the payload text: serialising a &str cannot fail.
            let encoded = serde_json::to_vec(&*delivery.payload).unwrap_or_default();
            bytes::Bytes::from(encoded)
        }
    };
    let mut headers = Vec::with_capacity(4 + destination.headers.len());
    headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    headers.push(("User-Agent".to_owned(), user_agent.to_owned()));
    headers.push((
        "X-Webhook-Event-ID".to_owned(),
        delivery.event_id.to_string(),
    ));
    headers.push((
        "X-Webhook-Event-Type".to_owned(),
        delivery.event_type.clone(),
    ));
    let mut request = OutgoingRequest {
        url: destination.url.clone(),
        headers,
        body,
    };
    for (name, value) in &destination.headers {
        request.set_header(name, value.clone());
    }
    request
}

/// Add signature headers over the final body. `now_millis` is the attempt's time.
///
/// During a secret rotation's window the Standard Webhooks header carries a signature with
/// each secret (`v1,<new> v1,<previous>`, space-separated as the spec allows), so a receiver
/// verifies with whichever it holds; `LC-Signature` has room for one and carries the new.
pub fn sign(
    request: &mut OutgoingRequest,
    destination: &Destination,
    event_id: &str,
    now_millis: UnixMillis,
) {
    let Some(secret) = &destination.signing_secret else {
        return;
    };
    request.set_header("LC-Signature", sign::lc_signature(secret, &request.body));
    let now_seconds = now_millis / 1000;
    let previous = destination
        .previous_signing_secret
        .as_ref()
        .and_then(|previous| previous.valid_at(now_millis));
    let signatures: Vec<String> = std::iter::once(secret.as_str())
        .chain(previous)
        .filter_map(sign::standard_webhooks_key)
        .map(|key| sign::standard_webhooks_signature(&key, event_id, now_seconds, &request.body))
        .collect();
    if sign::standard_webhooks_key(secret).is_some() {
        request.set_header("webhook-id", event_id);
        request.set_header("webhook-timestamp", now_seconds.to_string());
        request.set_header("webhook-signature", signatures.join(" "));
    }
}
