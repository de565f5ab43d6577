//! What one attempt sent and what came back, as its record keeps it: the request as it left
//! (after the plugin, the header normalisation and the signer) and the receiver's headers.
//!
//! Records are shown to anyone with an API key and kept for the retention period, so what
//! could let someone else send as the destination is masked: URL credentials, and the values
//! of headers whose names say they carry credentials (`Authorization`, `Cookie`, anything
//! with `auth`, `token`, `secret`, `password`, `key`, `credential` or `session` in its name).
//! Signatures stay:
//! they are derived from the body and a timestamp, prove nothing on another body, and are
//! what a receiver's operator needs to check theirs.

use super::{OutgoingRequest, clip_text, redacted_url};
use serde::Serialize;

/// Headers kept of a response, and bytes of each value.
pub const MAX_RECORDED_RESPONSE_HEADERS: usize = 64;
pub const MAX_RECORDED_HEADER_VALUE_BYTES: usize = 512;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct Exchange {
    pub request: RecordedRequest,
    /// The receiver's headers in the order it sent them, when it answered.
    #[serde(default)]
    pub response_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct RecordedRequest {
    /// Where it went, credentials shown as `***`.
    pub url: String,
    /// The headers as sent, in order, signatures included, credentials masked.
    pub headers: Vec<(String, String)>,
    /// The body as sent, lossily decoded, cut at the recorded-body cap with a marker.
    pub body: String,
}

impl RecordedRequest {
    /// The record of `request` as it is about to be sent, its body kept up to `body_bytes`.
    pub fn of(request: &OutgoingRequest, body_bytes: usize) -> Self {
        RecordedRequest {
            url: redacted_url(&request.url).into_owned(),
            headers: request
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), shown_value(name, value)))
                .collect(),
            body: clip_text(&String::from_utf8_lossy(&request.body), body_bytes),
        }
    }
}

/// A header's value as a record shows it: masked when the name says it carries credentials,
/// keeping an authorization scheme (`Bearer ***`) so the record still says which was used.
pub fn shown_value(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    // The gateway's own signature and identity headers are derived, not credentials.
    let gateway_owned = lower == "lc-signature" || lower.starts_with("webhook-");
    let secret = !gateway_owned
        && (matches!(lower.as_str(), "cookie" | "set-cookie")
            || [
                "auth",
                "token",
                "secret",
                "password",
                "key",
                "credential",
                "session",
            ]
            .iter()
            .any(|part| lower.contains(part)));
    if !secret {
        return clip_text(value, MAX_RECORDED_HEADER_VALUE_BYTES);
    }
    match value.split_once(' ') {
        Some((scheme, _)) if lower.ends_with("authorization") => format!("{scheme} ***"),
        _ => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_signatures_kept() {
        assert_eq!(shown_value("Authorization", "Bearer abc"), "Bearer ***");
        assert_eq!(shown_value("authorization", "abc"), "***");
        assert_eq!(shown_value("X-Api-Key", "abc"), "***");
        assert_eq!(shown_value("X-Auth-Token", "abc"), "***");
        assert_eq!(shown_value("X-Access-Key", "abc"), "***");
        assert_eq!(shown_value("X-Credential", "abc"), "***");
        assert_eq!(shown_value("X-Tenant", "acme"), "acme");
        assert_eq!(shown_value("Cookie", "a=b"), "***");
        assert_eq!(shown_value("LC-Signature", "sha256=ab"), "sha256=ab");
        assert_eq!(shown_value("webhook-signature", "v1,x"), "v1,x");
        let request = OutgoingRequest {
            url: "https://u:p@hooks.example.com/in".into(),
            headers: vec![("Authorization".into(), "Basic Zm9v".into())],
            body: bytes::Bytes::from_static(b"0123456789"),
        };
        let recorded = RecordedRequest::of(&request, 4);
        assert_eq!(recorded.url, "https://***@hooks.example.com/in");
        assert_eq!(recorded.headers[0].1, "Basic ***");
        assert_eq!(recorded.body, "0123… [truncated: 10 bytes in all]");
    }
}
