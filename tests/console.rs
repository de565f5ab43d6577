//! The web console in a real headless Chromium against the real gateway and real receivers:
//! a wrong key is refused; sign in; the overview counts the hour; find a failed delivery by
//! search, open it, see its attempt's request and response, redeliver it and see it succeed;
//! count a bulk replay, then run it with a second click; pause and resume a destination;
//! create a destination with a plugin; run the playground on it and see the transformed,
//! signed request (and nothing sent); edit it keeping its secret; delete another; the
//! plugin list with a file that fails to load; the live tail; sign out; a key refused
//! mid-session and signing in back to the same page; the dark palette. Each page's
//! screenshot is written under `target/console-screenshots/`.

mod common;

use common::browser::Browser;
use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drives_the_console_end_to_end() {
    let app = spawn_app_with(|config| config.retry.max_attempts = 1).await;
    let (flaky, down, inngest) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    // The first answer fails; the redelivery's succeeds.
    flaky.script([Answer::status(500)
        .header("X-Receiver", "flaky")
        .body(r#"{"error": "database down", "html": "<img src=x id=injected>"}"#)]);
    down.always(Answer::status(503));
    let failed_id = app
        .ingest_until(
            event_to("parse.error", json!({"webhook_url": flaky.url("/hooks")})),
            "failed",
            WAIT,
        )
        .await;
    app.ingest_until(
        event_to("parse.success", json!({"webhook_url": inngest.url("/ok")})),
        "succeeded",
        WAIT,
    )
    .await;

    let browser = Browser::start().await;
    let console = app.url("/console");

    // A wrong key is refused, and nothing past the sign-in page is shown.
    browser.goto(&console).await;
    browser.fill("#api-key", "not-the-key").await;
    browser.click("#sign-in").await;
    browser.wait_for_text("#signin-error", "refused").await;
    assert!(browser.all("#overview").await.is_empty());
    browser.screenshot("01-sign-in-refused").await;

    browser.fill("#api-key", API_KEY).await;
    browser.click("#sign-in").await;
    browser
        .wait_for_exact_text("#card-failed .value", "1")
        .await;
    browser
        .wait_for_exact_text("#card-succeeded .value", "1")
        .await;
    browser
        .wait_for_exact_text("#card-events .value", "2")
        .await;
    browser
        .wait_for_exact_text("#card-waiting .value", "0")
        .await;
    browser.wait_for_text("#trouble", "None").await;
    browser.wait_for_text("#nodes", "this node").await;
    browser.screenshot("02-overview").await;

    // Find the failed delivery by search.
    browser.click("nav a[data-section=deliveries]").await;
    browser.select("#search-status", "failed").await;
    browser.select("#search-event_type", "parse.error").await;
    browser.click("#search").await;
    browser
        .find(&format!("tr.delivery-row[data-id='{failed_id}']"))
        .await;
    let rows = browser.all("tr.delivery-row").await;
    assert_eq!(rows.len(), 1, "only the failed delivery matches");
    browser.screenshot("03-deliveries-search").await;

    // Open it: the attempt's request as sent and the response as received.
    browser
        .click(&format!(
            "tr.delivery-row[data-id='{failed_id}'] a.open-delivery"
        ))
        .await;
    browser.wait_for_text(".response-status", "500").await;
    browser
        .wait_for_text(".response-body", "database down")
        .await;
    browser
        .wait_for_text(".attempt-response table", "flaky")
        .await;
    // A receiver's markup is shown as text, never made into elements.
    browser.wait_for_text(".response-body", "<img src=x").await;
    assert!(browser.all("#injected").await.is_empty());
    let request = browser.wait_for_text(".attempt-request", "POST").await;
    assert!(request.contains(&flaky.url("/hooks")), "{request}");
    assert!(request.contains("X-Webhook-Event-Type"), "{request}");
    // The default `string` format: the payload as a JSON string, shown as sent.
    browser
        .wait_for_text(".request-body", r#"\"event_type\":\"parse.error\""#)
        .await;
    browser.screenshot("04-delivery-failed").await;

    // Redeliver it and see it succeed.
    browser.click("#redeliver").await;
    browser
        .wait_for_text("#redeliver-status", "Redelivered")
        .await;
    let status = browser
        .find("#delivery")
        .await
        .attr("data-status")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("succeeded"));
    assert_eq!(browser.all(".attempt").await.len(), 2);
    assert_eq!(flaky.count(), 2);
    browser.screenshot("05-delivery-redelivered").await;

    // Bulk replay from a search: a dry run counts what would be queued.
    let dead_id = app
        .ingest_until(
            event_to("extract.error", json!({"webhook_url": down.url("/d")})),
            "failed",
            WAIT,
        )
        .await;
    browser
        .goto(&format!("{console}#/deliveries?status=failed"))
        .await;
    browser.click("#replay-count").await;
    browser
        .wait_for_exact_text("#replay-status", "Replay done: 1 deliveries match")
        .await;
    browser.screenshot("06-bulk-replay-count").await;
    // The replay itself takes a second click.
    browser.click("#replay-start").await;
    browser.wait_for_text("#replay-start", "Confirm").await;
    assert_eq!(down.count(), 1, "one click queues nothing");
    browser.click("#replay-start").await;
    browser
        .wait_for_exact_text(
            "#replay-status",
            "Replay done: 1 of 1 matched deliveries queued again",
        )
        .await;
    down.wait_for(2, WAIT).await;
    app.wait_for_status(&dead_id, "failed", WAIT).await;

    // Pause a destination and resume it.
    browser.click("nav a[data-section=destinations]").await;
    let row = format!("#destination-health tr[data-destination='{}']", down.host());
    browser.click(&format!("{row} button.pause")).await;
    browser
        .find(&format!("{row}[data-state=paused] button.resume"))
        .await;
    let (_, listing) = app.get("/api/v1/destinations").await;
    assert!(
        listing["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["destination"] == down.host() && row["state"] == "paused"),
        "{listing:#}"
    );
    browser.click(&format!("{row} button.resume")).await;
    browser.find(&format!("{row} button.pause")).await;

    // Create a destination with a plugin; the secret is written, never shown.
    browser.click("#new-destination").await;
    browser.fill("#webhook-url", &inngest.url("/inngest")).await;
    browser
        .click("#webhook-events input[value='parse.success']")
        .await;
    browser.select("#plugin", "inngest").await;
    browser
        .fill("#plugin-config", r#"{"prefix": "Acme/"}"#)
        .await;
    browser.fill("#signing-secret", "console-secret-123").await;
    browser.screenshot("07-destination-form").await;
    browser.click("#save-destination").await;
    let saved = browser.find("#config-list tbody tr[data-id]").await;
    let config_id = saved.attr("data-id").await.unwrap().unwrap();
    let (status, config) = app
        .get(&format!("/api/v1/beta/webhook-configs/{config_id}"))
        .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["webhook_transform"], "inngest");
    assert_eq!(
        config["webhook_transform_config"],
        json!({"prefix": "Acme/"})
    );
    assert_eq!(config["webhook_events"], json!(["parse.success"]));
    assert_eq!(config["has_secret"], true);
    let listed = browser.wait_for_text("#config-list", "inngest").await;
    assert!(listed.contains("set"), "{listed}");
    browser.screenshot("08-destinations").await;
    let source = browser.client.source().await.unwrap();
    assert!(
        !source.contains("console-secret-123"),
        "the secret is never shown"
    );

    // The playground runs the plugin on that configuration and shows the request.
    browser
        .goto(&format!("{console}#/playground?config_id={config_id}"))
        .await;
    browser.find("#playground-form").await;
    browser.click("#playground-run").await;
    browser
        .wait_for_text("#preview-body", "\"name\":\"Acme/parse.success\"")
        .await;
    browser
        .wait_for_text("#preview-line", &inngest.url("/inngest"))
        .await;
    browser
        .wait_for_text("#preview-headers", "LC-Signature")
        .await;
    assert_eq!(inngest.count(), 1, "the playground sends nothing");
    browser.screenshot("09-playground").await;

    // The playground shows a plugin's error too.
    browser
        .fill("#playground-plugin-config", r#"{"prefix": 7}"#)
        .await;
    browser.click("#playground-run").await;
    browser
        .wait_for_text("#preview-error", "refuses the config")
        .await;

    // Edit the configuration: the plugin config changes; a blank secret keeps the secret.
    browser
        .goto(&format!("{console}#/destinations/{config_id}/edit"))
        .await;
    browser.find("#destination-form").await;
    browser
        .fill("#plugin-config", r#"{"prefix": "Edited/"}"#)
        .await;
    browser.click("#save-destination").await;
    browser.find("#config-list tbody tr[data-id]").await;
    let (_, edited) = app
        .get(&format!("/api/v1/beta/webhook-configs/{config_id}"))
        .await;
    assert_eq!(
        edited["webhook_transform_config"],
        json!({"prefix": "Edited/"}),
        "{edited:#}"
    );
    assert_eq!(edited["has_secret"], true, "{edited:#}");
    assert_eq!(
        edited["previous_secret_expires_at"],
        Value::Null,
        "no rotation"
    );

    // A new secret starts a rotation: the list says until when the old one also signs.
    browser
        .goto(&format!("{console}#/destinations/{config_id}/edit"))
        .await;
    browser.find("#destination-form").await;
    browser.fill("#signing-secret", "console-secret-456").await;
    browser.click("#save-destination").await;
    browser
        .wait_for_text(
            &format!("#config-list tr[data-id='{config_id}']"),
            "the replaced one also signs until",
        )
        .await;
    let source = browser.client.source().await.unwrap();
    assert!(
        !source.contains("console-secret-456"),
        "the secret is never shown"
    );

    // Delete another: the first click asks, the second deletes.
    let (_, other) = app
        .post(
            "/api/v1/beta/webhook-configs",
            &json!({"webhook_url": down.url("/other")}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap();
    browser.goto(&format!("{console}#/destinations")).await;
    let delete = format!("#config-list tr[data-id='{other_id}'] .delete-config");
    browser.click(&delete).await;
    browser.wait_for_text(&delete, "Confirm delete").await;
    browser.click(&delete).await;
    browser.find("#config-list tbody tr[data-id]").await;
    browser
        .wait_until_gone(&format!("#config-list tr[data-id='{other_id}']"))
        .await;
    let (status, _) = app
        .get(&format!("/api/v1/beta/webhook-configs/{other_id}"))
        .await;
    assert_eq!(status, 404);

    // The plugin list, with a file that fails to load beside the bundled ones.
    install_plugin_bytes(&app.data_dir.join("plugins"), "broken", b"not a component");
    browser.click("nav a[data-section=plugins]").await;
    let inngest_row = browser
        .wait_for_text("#plugin-list tr[data-name=inngest]", "bundled")
        .await;
    assert!(inngest_row.contains("serving"), "{inngest_row}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let broken = browser
            .all("#plugin-list tr[data-name=broken] .load-error")
            .await;
        if !broken.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broken file never listed"
        );
        browser.client.refresh().await.unwrap();
        browser.find("#plugin-list").await;
    }
    browser
        .wait_for_text("#plugin-list tr[data-name=broken]", "load error")
        .await;
    browser.screenshot("10-plugins").await;

    // Live: attempts appear as they finish.
    browser.click("nav a[data-section=live]").await;
    browser.wait_for_text("#live-status", "Connected").await;
    app.ingest(event_to(
        "classify.success",
        json!({"webhook_url": inngest.url("/live")}),
    ))
    .await;
    browser
        .wait_for_text("#live-attempts", "classify.success")
        .await;
    browser.screenshot("11-live").await;

    // Signing out forgets the key: a reload shows only the sign-in page.
    browser.click("#sign-out").await;
    browser.find("#api-key").await;
    let kept = browser
        .client
        .execute("return sessionStorage.getItem('hookgate.api_key')", vec![])
        .await
        .unwrap();
    assert_eq!(kept, serde_json::Value::Null);
    browser.goto(&format!("{console}#/deliveries")).await;
    browser.client.refresh().await.unwrap();
    browser.find("#api-key").await;
    assert!(!browser.find("#nav").await.is_displayed().await.unwrap());
    assert!(browser.all("#deliveries").await.is_empty());

    // A key refused mid-session: the sign-in page says so, and signing in again returns to
    // the page whose call was refused.
    browser.fill("#api-key", API_KEY).await;
    browser.click("#sign-in").await;
    browser.find("#delivery-search").await;
    browser
        .client
        .execute(
            "sessionStorage.setItem('hookgate.api_key', 'revoked')",
            vec![],
        )
        .await
        .unwrap();
    browser.click("nav a[data-section=plugins]").await;
    browser
        .wait_for_text("#signin-error", "The key was refused: invalid API key")
        .await;
    browser.fill("#api-key", API_KEY).await;
    browser.click("#sign-in").await;
    browser
        .wait_for_text("#plugin-list tr[data-name=inngest]", "bundled")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_a_dark_system_scheme() {
    let app = spawn_app().await;
    let browser = Browser::start_dark().await;
    browser.goto(&app.url("/console")).await;
    browser.fill("#api-key", API_KEY).await;
    browser.click("#sign-in").await;
    browser.wait_for_text("#nodes", "this node").await;
    let background = browser
        .client
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        background, "rgb(15, 18, 22)",
        "the dark palette's background"
    );
    browser.screenshot("12-overview-dark").await;
    browser.close().await;
}
