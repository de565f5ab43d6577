//! The operations API (SPEC 9): event and delivery look-ups with every attempt, the delivery
//! list with its status filter and cursor, redelivery, health, readiness and metrics.

mod common;

use common::receiver::Answer;
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Poll the delivery until `done` holds; panics with its last state after WAIT.
async fn wait_until(app: &TestApp, delivery_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let delivery = app.delivery(delivery_id).await;
        if done(&delivery) {
            return delivery;
        }
        assert!(
            Instant::now() < deadline,
            "delivery never reached the expected state: {delivery:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(accepted: &Value) -> Vec<String> {
    accepted["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_names_field(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "expected 422 naming {field}: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(field),
        "detail should name {field}: {body}"
    );
}

/// Every page of `GET /api/v1/deliveries?{query}&limit={limit}`: the items and the page count.
async fn walk(app: &TestApp, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/deliveries?limit={limit}&{query}");
        if let Some(token) = &token {
            path.push_str(&format!("&page_token={token}"));
        }
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {page}");
        pages += 1;
        let page_items = page["items"].as_array().expect("items").clone();
        assert!(page_items.len() <= limit, "page over the limit: {page}");
        items.extend(page_items);
        match &page["next_page_token"] {
            Value::Null => return (items, pages),
            Value::String(next) => token = Some(next.clone()),
            other => panic!("next_page_token is {other}"),
        }
        assert!(pages <= 100, "pagination does not end");
    }
}

fn item_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn event_lookup_lists_its_deliveries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let data = json!({"id": "job-3", "job_id": "job-3", "pages": 12});
    let accepted = app
        .ingest(json!({
            "event_type": "extract.success",
            "project_id": "proj-ops",
            "data": data,
            "webhook_configurations": [
                {"webhook_url": receiver.url("/a")},
                {"webhook_url": receiver.url("/b"), "webhook_output_format": "json"},
            ],
        }))
        .await;
    let event_id = accepted["event_id"].as_str().unwrap();
    let (status, event) = app.get(&format!("/api/v1/events/{event_id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["event_id"], event_id);
    assert_eq!(event["event_type"], "extract.success");
    assert_eq!(event["project_id"], "proj-ops");
    assert!(event["timestamp"].is_f64(), "{event}");
    assert_eq!(event["payload"]["event_id"], event_id);
    assert_eq!(event["payload"]["timestamp"], event["timestamp"]);
    let accepted_at = iso_millis(&event["accepted_at"]).expect("accepted_at in ISO 8601 UTC");
    assert_eq!(
        accepted_at,
        (event["timestamp"].as_f64().unwrap() * 1000.0) as i64,
        "{event}"
    );
    for delivery in event["deliveries"].as_array().unwrap() {
        assert!(iso_millis(&delivery["created_at"]).is_some(), "{delivery}");
        assert!(iso_millis(&delivery["updated_at"]).is_some(), "{delivery}");
    }
    assert_eq!(event["payload"]["data"], data);
    let listed: Vec<String> = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids(&accepted));
    assert_eq!(event["deliveries"][0]["webhook_url"], receiver.url("/a"));
    assert_eq!(event["deliveries"][1]["webhook_url"], receiver.url("/b"));
    for delivery in ids(&accepted) {
        app.wait_for_status(&delivery, "succeeded", WAIT).await;
    }
    let (_, event) = app.get(&format!("/api/v1/events/{event_id}")).await;
    for delivery in event["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["status"], "succeeded", "{event}");
        assert_eq!(delivery["attempt_count"], 1, "{event}");
        assert_eq!(delivery["event_id"], event_id);
        assert_eq!(delivery["event_type"], "extract.success");
    }
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app.get(&format!("/api/v1/events/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );
    let (status, body) = app.get(&format!("/api/v1/deliveries/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn delivery_shows_every_attempt() {
    // A one-second backoff leaves time to see the delivery waiting between its attempts.
    let app = spawn_app_with(|config| config.retry.base_delay_ms = 1_000).await;
    let receiver = Receiver::start().await;
    let long_error = format!("upstream exploded: {}", "E".repeat(3_000));
    receiver.script([Answer::status(500).body(&long_error)]);
    receiver.always(Answer::status(200).body("accepted-ok"));
    let before = chrono::Utc::now().timestamp_millis();
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/flaky")}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);

    let waiting = wait_until(&app, &id, |delivery| delivery["attempt_count"] == 1).await;
    assert_eq!(waiting["status"], "queued", "{waiting:#}");
    let next_attempt_at = iso_millis(&waiting["next_attempt_at"])
        .unwrap_or_else(|| panic!("a queued retry has next_attempt_at: {waiting:#}"));
    assert!(
        waiting["last_error"].as_str().unwrap().contains("500"),
        "{waiting:#}"
    );
    assert_eq!(waiting["attempts"].as_array().unwrap().len(), 1);

    let done = app.wait_for_status(&id, "succeeded", WAIT).await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(done["id"], id);
    assert_eq!(done["event_id"], accepted["event_id"]);
    assert_eq!(done["webhook_url"], receiver.url("/flaky"));
    assert_eq!(done["attempt_count"], 2);
    assert_eq!(done["next_attempt_at"], Value::Null);
    assert_eq!(done["last_error"], Value::Null);
    assert_eq!(done["source"], json!({"kind": "inline"}));
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{done:#}");

    let first = &attempts[0];
    assert_eq!(first["number"], 1);
    let first_start = iso_millis(&first["started_at"]).unwrap();
    assert!((before..=after).contains(&first_start), "{first}");
    assert!(first["duration_ms"].is_u64(), "{first}");
    assert_eq!(first["response_status"], 500);
    assert!(first["error"].as_str().unwrap().contains("500"), "{first}");
    let body = first["response_body"].as_str().unwrap();
    let (prefix, marker) = body.split_at(1_024);
    assert!(
        long_error.starts_with(prefix),
        "the first bytes of the body"
    );
    assert_eq!(
        marker,
        format!("… [truncated: {} bytes in all]", long_error.len()),
        "cut at the configured prefix length, and says so"
    );

    let second = &attempts[1];
    assert_eq!(second["number"], 2);
    let second_start = iso_millis(&second["started_at"]).unwrap();
    assert!(
        second_start >= next_attempt_at && second_start <= after,
        "attempt 2 ran when due: {second} (due {next_attempt_at})"
    );
    assert!(
        second_start >= first_start + first["duration_ms"].as_i64().unwrap(),
        "{done:#}"
    );
    assert_eq!(second["response_status"], 200);
    assert_eq!(second["error"], Value::Null);
    assert_eq!(second["response_body"], "accepted-ok");
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn delivery_list_filters_by_status_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let ok = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.always(Answer::status(500));
    let good: Vec<Value> = (0..7)
        .map(|index| json!({"webhook_url": ok.url(&format!("/ok{index}"))}))
        .collect();
    let bad: Vec<Value> = (0..5)
        .map(|index| {
            json!({"webhook_url": broken.url(&format!("/bad{index}")), "webhook_retry": {"max_attempts": 1}})
        })
        .collect();
    let first = app
        .ingest(json!({"event_type": "parse.success", "data": {}, "webhook_configurations": good}))
        .await;
    let second = app
        .ingest(json!({"event_type": "parse.error", "data": {}, "webhook_configurations": bad}))
        .await;
    let succeeded = ids(&first);
    let failed = ids(&second);
    for id in &succeeded {
        app.wait_for_status(id, "succeeded", WAIT).await;
    }
    for id in &failed {
        app.wait_for_status(id, "failed", WAIT).await;
    }
    // Newest first: the later event's deliveries, then the earlier one's, each in reverse.
    let newest_first = |ids: &[String]| ids.iter().rev().cloned().collect::<Vec<_>>();
    let mut everything = newest_first(&failed);
    everything.extend(newest_first(&succeeded));

    let (items, pages) = walk(&app, "status=succeeded", 3).await;
    assert_eq!(pages, 3);
    assert_eq!(item_ids(&items), newest_first(&succeeded));
    assert!(items.iter().all(|item| item["status"] == "succeeded"));
    assert!(
        items.iter().all(|item| item.get("attempts").is_none()),
        "the list leaves attempts to the look-up"
    );

    let (items, pages) = walk(&app, "status=failed", 2).await;
    assert_eq!(pages, 3);
    assert_eq!(item_ids(&items), newest_first(&failed));
    assert!(
        items.iter().all(|item| item["status"] == "failed"
            && item["last_error"].as_str().unwrap().contains("500"))
    );

    let (items, pages) = walk(&app, "", 5).await;
    assert_eq!(pages, 3);
    let seen = item_ids(&items);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        12,
        "no duplicates"
    );
    assert_eq!(seen, everything);

    // An exact fit is one page; statuses with nothing in them are empty.
    let (items, pages) = walk(&app, "", 12).await;
    assert_eq!((item_ids(&items), pages), (everything.clone(), 1));
    let (items, pages) = walk(&app, "", 1).await;
    assert_eq!((item_ids(&items), pages), (everything, 12));
    for status in ["queued", "in_flight", "skipped"] {
        let (items, _) = walk(&app, &format!("status={status}"), 10).await;
        assert!(items.is_empty(), "{status}: {items:?}");
    }

    let (status, body) = app.get("/api/v1/deliveries?status=done").await;
    assert_names_field(status, &body, "status");
    let (status, body) = app.get("/api/v1/deliveries?status=SUCCEEDED").await;
    assert_names_field(status, &body, "status");
    let (status, body) = app.get("/api/v1/deliveries?limit=0").await;
    assert_names_field(status, &body, "limit");
    let (status, body) = app.get("/api/v1/deliveries?limit=1001").await;
    assert_names_field(status, &body, "limit");
    let (status, body) = app.get("/api/v1/deliveries?limit=ten").await;
    assert_names_field(status, &body, "limit");
    let (status, body) = app.get("/api/v1/deliveries?page_token=abc").await;
    assert_names_field(status, &body, "page_token");
}

#[tokio::test]
async fn redelivery_sends_again_with_the_next_attempt_number() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let accepted = app
        .ingest(event_to(
            "classify.success",
            json!({"webhook_url": receiver.url("/again"), "webhook_signing_secret": "again"}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let done = app.wait_for_status(&id, "succeeded", WAIT).await;
    assert_eq!(done["attempt_count"], 1);

    let (status, queued) = app
        .post(&format!("/api/v1/deliveries/{id}/redeliver"), &json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["id"], id);
    assert!(
        queued["status"] == "queued" || queued["status"] == "in_flight",
        "redelivery queues it: {queued}"
    );
    let again = wait_until(&app, &id, |d| {
        d["status"] == "succeeded" && d["attempt_count"] == 2
    })
    .await;
    let numbers: Vec<&Value> = again["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| &attempt["number"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2)]);
    assert_eq!(again["attempts"][1]["response_status"], 200);
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same payload again");
    assert_eq!(
        requests[1].header("x-webhook-event-id").as_deref(),
        accepted["event_id"].as_str()
    );

    // A dead-lettered delivery gets a fresh budget and carries on numbering.
    let recovering = Receiver::start().await;
    recovering.always(Answer::status(503));
    let accepted = app
        .ingest(event_to(
            "parse.error",
            json!({"webhook_url": recovering.url("/dead"), "webhook_retry": {"max_attempts": 2}}),
        ))
        .await;
    let id = delivery_id(&accepted, 0);
    let dead = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(dead["attempt_count"], 2, "{dead:#}");
    recovering.always(Answer::status(204));
    let (status, _) = app
        .post(&format!("/api/v1/deliveries/{id}/redeliver"), &json!({}))
        .await;
    assert_eq!(status, 202);
    let revived = app.wait_for_status(&id, "succeeded", WAIT).await;
    let statuses: Vec<(i64, i64)> = revived["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| {
            (
                attempt["number"].as_i64().unwrap(),
                attempt["response_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(1, 503), (2, 503), (3, 204)]);

    let (status, body) = app
        .post(
            &format!("/api/v1/deliveries/{}/redeliver", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn health_and_readiness_need_no_auth_but_the_api_does() {
    let app = spawn_app().await;
    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], expected, "{path}");
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path} ignores keys");
    }
    let some_id = uuid::Uuid::new_v4();
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/events/{some_id}")),
        (reqwest::Method::GET, "/api/v1/deliveries".to_owned()),
        (
            reqwest::Method::GET,
            format!("/api/v1/deliveries/{some_id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/deliveries/{some_id}/redeliver"),
        ),
    ] {
        for key in [None, Some("wrong")] {
            let mut request = app.http.request(method.clone(), app.url(&path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path} {key:?}");
        }
    }
}

/// The value of the sample `name` (exact, no labels) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// The sum of every series of `name` whose labels contain `labels` (`key="value"` pairs as
/// written, e.g. `le="+Inf"`), or of all its series with `""`.
fn sum_samples(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (metric, value) = line.rsplit_once(' ')?;
            let (metric_name, metric_labels) = metric.split_once('{').unwrap_or((metric, ""));
            (metric_name == name && metric_labels.contains(labels))
                .then(|| value.trim().parse::<f64>().unwrap())
        })
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let app = spawn_app().await;
    let text = scrape(&app).await;
    for name in [
        "hookgate_events_ingested_total",
        "hookgate_deliveries_delivered_total",
        "hookgate_deliveries_failed_total",
        "hookgate_delivery_retries_total",
        "hookgate_queue_depth",
    ] {
        assert_eq!(sample(&text, name), 0.0, "{name} starts at 0");
    }
    assert_eq!(
        sample(
            &text,
            "hookgate_delivery_attempt_duration_seconds_count{outcome=\"succeeded\"}"
        ),
        0.0
    );
    assert!(text.contains("# TYPE hookgate_delivery_attempt_duration_seconds histogram"));
    assert!(
        !text.contains("# EOF"),
        "the classic text format by default"
    );

    let ok = Receiver::start().await;
    let broken = Receiver::start().await;
    broken.always(Answer::status(500));
    let mut delivered = Vec::new();
    for index in 0..3 {
        let accepted = app
            .ingest(event_to(
                "parse.success",
                json!({"webhook_url": ok.url(&format!("/m{index}"))}),
            ))
            .await;
        delivered.push(delivery_id(&accepted, 0));
    }
    // Accepted with no destination still counts as ingested.
    let quiet = app
        .ingest(json!({"event_type": "sheets.success", "data": {}}))
        .await;
    assert_eq!(quiet["deliveries"], json!([]));
    let doomed = app
        .ingest(event_to(
            "extract.error",
            json!({"webhook_url": broken.url("/x"), "webhook_retry": {"max_attempts": 2}}),
        ))
        .await;
    // A producer retrying an accepted event, and a rejected event, count for nothing.
    let (status, again) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "sheets.success", "data": {}, "event_id": quiet["event_id"]}),
        )
        .await;
    assert_eq!(
        (status, &again["duplicate"]),
        (202, &json!(true)),
        "{again}"
    );
    let (status, _) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.nope", "data": {}}),
        )
        .await;
    assert_eq!(status, 422);
    for id in &delivered {
        app.wait_for_status(id, "succeeded", WAIT).await;
    }
    app.wait_for_status(&delivery_id(&doomed, 0), "failed", WAIT)
        .await;

    let response = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "metrics ignore keys");
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "hookgate_events_ingested_total"), 5.0);
    assert_eq!(sample(&text, "hookgate_deliveries_delivered_total"), 3.0);
    assert_eq!(sample(&text, "hookgate_deliveries_failed_total"), 1.0);
    assert_eq!(sample(&text, "hookgate_delivery_retries_total"), 1.0);
    assert_eq!(
        sum_samples(
            &text,
            "hookgate_delivery_attempt_duration_seconds_count",
            ""
        ),
        5.0,
        "three successes and two failed attempts"
    );
    for (outcome, count) in [("succeeded", 3.0), ("retry", 1.0), ("failed", 1.0)] {
        let labels = format!("outcome=\"{outcome}\"");
        assert_eq!(
            sum_samples(
                &text,
                "hookgate_delivery_attempt_duration_seconds_count",
                &labels
            ),
            count,
            "{outcome}"
        );
        assert_eq!(
            sum_samples(&text, "hookgate_delivery_attempts_total", &labels),
            count,
            "{outcome}"
        );
    }
    assert!(sum_samples(&text, "hookgate_delivery_attempt_duration_seconds_sum", "") > 0.0);
    assert_eq!(
        sum_samples(
            &text,
            "hookgate_delivery_attempt_duration_seconds_bucket",
            "le=\"+Inf\""
        ),
        5.0
    );
    assert_eq!(
        sum_samples(
            &text,
            "hookgate_delivery_attempts_total",
            "event_type=\"extract.error\",outcome=\"failed\",plugin=\"none\""
        ),
        1.0
    );
    assert_eq!(sample(&text, "hookgate_queue_depth"), 0.0);
}

#[tokio::test]
async fn queue_depth_counts_waiting_deliveries() {
    // A long backoff holds the delivery queued after its first failed attempt.
    let app = spawn_app_with(|config| config.retry.base_delay_ms = 60_000).await;
    let broken = Receiver::start().await;
    broken.always(Answer::status(500));
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {},
            "webhook_configurations": [
                {"webhook_url": broken.url("/q1")},
                {"webhook_url": broken.url("/q2")},
            ],
        }))
        .await;
    for id in ids(&accepted) {
        wait_until(&app, &id, |d| {
            d["attempt_count"] == 1 && d["status"] == "queued"
        })
        .await;
    }
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "hookgate_queue_depth"), 2.0);
    assert_eq!(
        sample(&text, "hookgate_queue_deliveries{state=\"queued\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "hookgate_queue_deliveries{state=\"in_flight\"}"),
        0.0
    );
    assert_eq!(sample(&text, "hookgate_delivery_retries_total"), 2.0);
    let (_, page) = app.get("/api/v1/deliveries?status=queued").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
}

/// A fresh event whose destination has a free slot starts at once, stored in flight, with no
/// claim reading it back; one that finds its destination full is stored queued and goes out
/// after the delivery ahead of it.
#[tokio::test]
async fn fresh_deliveries_are_handed_over_and_overflow_waits_in_the_store() {
    let app = spawn_app_with(|config| {
        config.delivery.max_in_flight_per_destination = 1;
        // No idle poll during the test: it would mark the store as possibly holding due work
        // and briefly stop hand-overs.
        config.delivery.poll_interval_ms = 60_000;
    })
    .await;
    let receiver = Receiver::start().await;
    let send = |path: &str| {
        app.ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url(path)}),
        ))
    };
    // Let the dispatcher's first claim find the store empty, as it does at startup.
    let warm = send("/warm").await;
    app.wait_for_status(&delivery_id(&warm, 0), "succeeded", WAIT)
        .await;
    let handed_off =
        || async { sample(&scrape(&app).await, "hookgate_deliveries_handed_off_total") };
    let before = handed_off().await;

    receiver.script([Answer::status(200).delay(Duration::from_millis(400))]);
    let first = send("/first").await;
    let first_id = delivery_id(&first, 0);
    assert_eq!(first["deliveries"][0]["status"], "queued", "{first}");
    // Committed already leased: the store shows it in flight before any claim could run.
    assert_eq!(app.delivery(&first_id).await["status"], "in_flight");
    assert_eq!(handed_off().await, before + 1.0);

    let second = send("/second").await;
    let second_id = delivery_id(&second, 0);
    assert_eq!(handed_off().await, before + 1.0, "its destination was full");

    app.wait_for_status(&second_id, "succeeded", WAIT).await;
    let paths: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(paths, ["/warm", "/first", "/second"]);

    // Once the store has nothing due, hand-overs resume.
    let third = send("/third").await;
    app.wait_for_status(&delivery_id(&third, 0), "succeeded", WAIT)
        .await;
    assert_eq!(handed_off().await, before + 2.0);
}

/// The node list shows this gateway with its address, version, heartbeat and plugins.
#[tokio::test]
async fn the_node_list_shows_this_gateway() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/nodes").await;
    assert_eq!(status, 200, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{body:#}");
    let node = &nodes[0];
    assert_eq!(node["listen"], app.addr.to_string());
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(node["alive"], true);
    assert_eq!(node["this_node"], true);
    assert!(
        node["last_heartbeat_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{node}"
    );
    let inngest = node["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == "inngest")
        .unwrap_or_else(|| panic!("inngest not listed: {node}"));
    assert_eq!(inngest["sha256"].as_str().map(str::len), Some(64));
}

/// A receiver's body is kept as text on every store, even when it holds bytes some cannot
/// store (NUL): the attempt is recorded, not retried forever.
#[tokio::test]
async fn a_response_body_holding_nul_is_recorded() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::status(200).body("ok\u{0}done"));
    let accepted = app
        .ingest(event_to(
            "parse.success",
            json!({"webhook_url": receiver.url("/nul")}),
        ))
        .await;
    let delivery = app
        .wait_for_status(
            &delivery_id(&accepted, 0),
            "succeeded",
            Duration::from_secs(10),
        )
        .await;
    let body = delivery["attempts"][0]["response_body"].as_str().unwrap();
    assert!(body.starts_with("ok") && body.ends_with("done"), "{body:?}");
    assert_eq!(receiver.count(), 1);
}
