//! Which headers the gateway owns, and the one normalisation step between the transform
//! plugin and the signer: whatever headers a plugin returned, the request that leaves has
//! valid, bounded headers in which the gateway alone decides framing, identity and
//! signatures. Ingest uses the same list to ignore a destination's own copies of them.
//!
//! In: the request after the plugin (or straight from the builder) and the delivery's event
//! id and type. Out: the same request with its headers rewritten, or the reason it cannot be
//! sent, which fails the attempt. Pure: `http`'s header grammar only.

use super::OutgoingRequest;
use http::{HeaderName, HeaderValue};

/// Headers a request may carry before signing; hyper-based receivers refuse more than 100.
pub const MAX_HEADERS: usize = 64;
/// Bytes of all header names and values together (plus 4 per header for `: ` and CRLF),
/// under the 32 KiB that common servers accept in a request's header section.
pub const MAX_HEADER_BYTES: usize = 24 * 1024;

/// Set by the HTTP client from the body and the connection; a plugin's value would lie
/// about the framing (a short `Content-Length` truncates the body the receiver reads, a long
/// one hangs the request, `Expect` waits for an interim answer) or reach a proxy hop that
/// does not exist.
const FRAMING_AND_HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "expect",
];

/// Added by the signer after this step, from the secret; a plugin's copy would be a forgery.
const SIGNER_OWNED: &[&str] = &["lc-signature"];
const SIGNER_OWNED_PREFIX: &str = "webhook-";

/// Identity headers the gateway sets to exactly one value of its own (SPEC 4).
const EVENT_ID: &str = "X-Webhook-Event-ID";
const EVENT_TYPE: &str = "X-Webhook-Event-Type";

/// Headers a plugin may set that must reach the receiver once: the last value wins.
const SINGLE_VALUED: &[&str] = &["content-type", "user-agent"];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeaderError {
    #[error("header {name:?} is not a valid HTTP header name")]
    InvalidName { name: String },
    #[error("header {name:?} has a value that is not valid in HTTP (control characters?)")]
    InvalidValue { name: String },
    #[error("{count} headers are over the limit of {MAX_HEADERS}")]
    TooMany { count: usize },
    #[error("headers of {bytes} bytes are over the limit of {MAX_HEADER_BYTES} bytes")]
    TooLarge { bytes: usize },
}

/// Rewrite `request`'s headers: framing, hop-by-hop and signature headers dropped; the
/// event id and type set to the gateway's values; single-valued headers sent once; every
/// name and value valid; count and size bounded.
pub fn normalise(
    request: &mut OutgoingRequest,
    event_id: &str,
    event_type: &str,
) -> Result<(), HeaderError> {
    let offered = request.headers.len();
    let mut kept: Vec<(String, String)> = Vec::with_capacity(offered.min(16));
    // On every delivery's path: names are compared in place, never lowercased into copies.
    for (name, value) in std::mem::take(&mut request.headers) {
        if is_gateway_managed(&name) {
            continue;
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(HeaderError::InvalidName { name: clip(&name) });
        }
        if HeaderValue::from_str(&value).is_err() {
            return Err(HeaderError::InvalidValue { name: clip(&name) });
        }
        if one_of(&name, SINGLE_VALUED) {
            kept.retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
        }
        kept.push((name, value));
        // Checked as the list grows so a plugin's ten thousand headers cost no more than
        // the limit to refuse.
        if kept.len() > MAX_HEADERS {
            return Err(HeaderError::TooMany { count: offered });
        }
    }
    kept.push((EVENT_ID.to_owned(), event_id.to_owned()));
    kept.push((EVENT_TYPE.to_owned(), event_type.to_owned()));
    if kept.len() > MAX_HEADERS {
        return Err(HeaderError::TooMany { count: kept.len() });
    }
    let bytes: usize = kept
        .iter()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge { bytes });
    }
    request.headers = kept;
    Ok(())
}

/// Whether the gateway alone sets `name` (any case): framing, hop-by-hop, signature and
/// event identity headers. A destination's own copies are ignored at ingest, a plugin's are
/// dropped by [`normalise`].
pub fn is_gateway_managed(name: &str) -> bool {
    one_of(name, FRAMING_AND_HOP_BY_HOP)
        || starts_with_ignoring_case(name, "proxy-")
        || one_of(name, SIGNER_OWNED)
        || starts_with_ignoring_case(name, SIGNER_OWNED_PREFIX)
        || name.eq_ignore_ascii_case(EVENT_ID)
        || name.eq_ignore_ascii_case(EVENT_TYPE)
}

fn one_of(name: &str, lowercase_names: &[&str]) -> bool {
    lowercase_names
        .iter()
        .any(|listed| name.eq_ignore_ascii_case(listed))
}

fn starts_with_ignoring_case(name: &str, lowercase_prefix: &str) -> bool {
    name.get(..lowercase_prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(lowercase_prefix))
}

/// A header name as it appears in an error: a hostile one can be long.
fn clip(name: &str) -> String {
    super::clip_text(name, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> OutgoingRequest {
        OutgoingRequest {
            url: "http://example.com/".into(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    fn values<'a>(request: &'a OutgoingRequest, name: &str) -> Vec<&'a str> {
        request
            .headers
            .iter()
            .filter(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    #[test]
    fn gateway_headers_win_and_framing_is_dropped() {
        let mut sent = request(&[
            ("Content-Type", "application/json"),
            ("X-Webhook-Event-ID", "forged"),
            ("x-webhook-event-id", "forged-too"),
            ("X-Webhook-Event-Type", "forged.type"),
            ("Host", "internal.example"),
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Proxy-Authorization", "Basic x"),
            ("LC-Signature", "forged"),
            ("webhook-id", "forged"),
            ("Webhook-Signature", "v1,forged"),
            ("content-type", "application/cloudevents+json"),
            ("User-Agent", "one"),
            ("user-agent", "two"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
        ]);
        normalise(&mut sent, "evt-1", "parse.success").unwrap();
        assert_eq!(values(&sent, "X-Webhook-Event-ID"), ["evt-1"]);
        assert_eq!(values(&sent, "X-Webhook-Event-Type"), ["parse.success"]);
        assert_eq!(
            values(&sent, "Content-Type"),
            ["application/cloudevents+json"]
        );
        assert_eq!(values(&sent, "User-Agent"), ["two"]);
        assert_eq!(values(&sent, "X-Custom"), ["a", "b"]);
        for gone in [
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Proxy-Authorization",
            "LC-Signature",
            "webhook-id",
            "webhook-signature",
        ] {
            assert!(values(&sent, gone).is_empty(), "{gone} was kept");
        }
    }

    #[test]
    fn a_request_without_identity_headers_gets_them() {
        let mut sent = request(&[]);
        normalise(&mut sent, "evt-2", "extract.error").unwrap();
        assert_eq!(values(&sent, "X-Webhook-Event-ID"), ["evt-2"]);
        assert_eq!(values(&sent, "X-Webhook-Event-Type"), ["extract.error"]);
    }

    #[test]
    fn invalid_and_oversized_headers_are_refused_by_name() {
        let mut bad_name = request(&[("X Bad", "1")]);
        assert_eq!(
            normalise(&mut bad_name, "e", "t"),
            Err(HeaderError::InvalidName {
                name: "X Bad".into()
            })
        );
        let mut bad_value = request(&[("X-Split", "a\r\nInjected: 1")]);
        assert_eq!(
            normalise(&mut bad_value, "e", "t"),
            Err(HeaderError::InvalidValue {
                name: "X-Split".into()
            })
        );
        let many: Vec<(String, String)> = (0..10_000)
            .map(|n| (format!("X-H{n}"), "v".to_owned()))
            .collect();
        let mut too_many = OutgoingRequest {
            headers: many,
            ..request(&[])
        };
        assert!(matches!(
            normalise(&mut too_many, "e", "t"),
            Err(HeaderError::TooMany { .. })
        ));
        let big = "v".repeat(MAX_HEADER_BYTES);
        let mut too_large = request(&[("X-Big", &big)]);
        assert!(matches!(
            normalise(&mut too_large, "e", "t"),
            Err(HeaderError::TooLarge { .. })
        ));
    }
}
