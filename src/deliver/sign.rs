//! Request signing: pure functions over the exact bytes sent.
//!
//! `LC-Signature: sha256=<hex>` is LlamaCloud's HMAC-SHA256 of the body keyed by the secret's
//! bytes. Standard Webhooks (`whsec_` secrets) signs `{id}.{timestamp}.{body}` with the
//! base64-decoded key and sends one `v1,<base64>` per valid secret, space-separated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `LC-Signature` header value.
pub fn lc_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// The Standard Webhooks key of a `whsec_` secret, or `None` for other secrets.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix("whsec_")?).ok()
}

/// One `v1,<base64>` signature of a Standard Webhooks message.
pub fn standard_webhooks_signature(
    key: &[u8],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    let signature = hmac_sha256(
        key,
        &[
            message_id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", BASE64.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        let key = standard_webhooks_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = standard_webhooks_signature(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn lc_signature_is_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let signature = lc_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(standard_webhooks_key("plain-secret").is_none());
    }
}
