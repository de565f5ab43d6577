//! Secret rotation on saved configurations: a new `whsec_` secret keeps the one it replaced
//! signing beside it for the rotation window, so Standard Webhooks receivers holding either
//! verify (checked with the official `standardwebhooks` Python library); after the window
//! only the new one verifies. `LC-Signature` carries the new secret; the configuration view
//! shows when the window ends, never a secret.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The window this test runs with: long enough for a delivery inside it, short to wait out.
const WINDOW_MS: u64 = 4_000;

/// Which of `secrets` verify `request` with the `standardwebhooks` library.
fn verified_by(request: &common::receiver::Received, secrets: &[&str]) -> Vec<bool> {
    let python = common::python::python_with(&["standardwebhooks==1.1.0"]);
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    json!(request.header(name).unwrap_or_default()),
                )
            })
            .collect();
    let body = String::from_utf8(request.body.to_vec()).unwrap();
    let cases: Vec<Value> = secrets
        .iter()
        .map(|secret| json!({"secret": secret, "body": body, "headers": headers}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&cases).unwrap()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_standard_webhooks.py");
    let output = clean_command(&python)
        .arg(script)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn lc_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver_one(
    app: &TestApp,
    receiver: &Receiver,
    config_id: &str,
) -> common::receiver::Received {
    let before = receiver.count();
    app.ingest(json!({"event_type": "parse.success", "data": {"n": before},
                      "webhook_configuration_ids": [config_id]}))
        .await;
    receiver.wait_for(before + 1, WAIT).await.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_window_ends() {
    let app = spawn_app_with(|config| config.secret_rotation_window_ms = WINDOW_MS).await;
    let receiver = Receiver::start().await;
    let (status, created) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": receiver.url("/sw"), "webhook_signing_secret": OLD}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["previous_secret_expires_at"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();

    let before_rotation = deliver_one(&app, &receiver, &id).await;
    assert_eq!(verified_by(&before_rotation, &[OLD, NEW]), [true, false]);

    let rotated_at = chrono::Utc::now().timestamp_millis();
    let (status, rotated) = app
        .put(
            &format!("/api/v1/beta/webhook-configs/{id}"),
            &json!({"webhook_signing_secret": NEW}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let expires = iso_millis(&rotated["previous_secret_expires_at"])
        .unwrap_or_else(|| panic!("the window's end is shown: {rotated}"));
    assert!(
        (rotated_at + WINDOW_MS as i64..rotated_at + WINDOW_MS as i64 + 2_000).contains(&expires),
        "{rotated}"
    );
    assert!(!rotated.to_string().contains("whsec_"), "{rotated}");
    // A change that leaves the secret alone keeps the window running.
    let (status, edited) = app
        .put(
            &format!("/api/v1/beta/webhook-configs/{id}"),
            &json!({"webhook_events": ["parse.success"]}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        edited["previous_secret_expires_at"],
        rotated["previous_secret_expires_at"]
    );

    let during = deliver_one(&app, &receiver, &id).await;
    let signatures = during.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(verified_by(&during, &[OLD, NEW]), [true, true]);
    assert_eq!(
        during.header("lc-signature").unwrap(),
        lc_signature(NEW, &during.body),
        "LC-Signature carries the new secret"
    );

    // After the window only the new secret signs.
    let left = expires - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0) + 50)).await;
    let after = deliver_one(&app, &receiver, &id).await;
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert_eq!(verified_by(&after, &[OLD, NEW]), [false, true]);
    let (_, view) = app.get(&format!("/api/v1/beta/webhook-configs/{id}")).await;
    assert_eq!(view["previous_secret_expires_at"], Value::Null, "{view}");
}
