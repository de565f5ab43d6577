//! Saved webhook configurations (SPEC 7): the LlamaCloud-shaped v1 beta CRUD and v2 cursor
//! list, the write-only signing secret, project scoping, validation, authentication, and
//! events that reference saved configurations by id, checked at a real receiver.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const V1: &str = "/api/v1/beta/webhook-configs";
const V2: &str = "/api/v2/webhook-configs";

fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

fn one(id: &str) -> String {
    format!("{V1}/{id}")
}

/// A request with the raw response text, so tests can search it byte for byte.
async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, created) = app.post(path, &body).await;
    assert!(
        status == 200 || status == 201,
        "create answered {status}: {created}"
    );
    created
}

fn id_of(config: &Value) -> String {
    config["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {config}"))
        .to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

fn timestamp(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp string"))
        .unwrap_or_else(|error| panic!("{value} is not ISO 8601: {error}"))
}

/// A 422 whose `detail` starts by naming `field`.
fn assert_names_field(status: u16, body: &Value, field: &str) {
    assert_eq!(
        status, 422,
        "expected 422 naming {field}, got {status}: {body}"
    );
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"));
    assert!(
        detail.starts_with(field),
        "detail should name {field}: {detail:?}"
    );
}

#[tokio::test]
async fn create_read_list_update_delete() {
    let app = spawn_app().await;
    let first = create(
        &app,
        V1,
        json!({
            "webhook_url": "https://hooks.example.com/first",
            "webhook_events": ["parse.success", "extract.error"],
            "webhook_headers": {"X-Route": "r1"},
            "webhook_output_format": "json",
            "webhook_signing_secret": "first-secret",
        }),
    )
    .await;
    uuid::Uuid::parse_str(&id_of(&first)).expect("id is a UUID");
    assert_eq!(first["has_secret"], true);
    assert_eq!(first["tenant_id"], "default");
    assert_eq!(first["tenant_type"], "project");
    assert_eq!(first["webhook_url"], "https://hooks.example.com/first");
    assert_eq!(
        first["webhook_events"],
        json!(["parse.success", "extract.error"])
    );
    assert_eq!(first["webhook_headers"], json!({"X-Route": "r1"}));
    assert_eq!(first["webhook_output_format"], "json");
    assert_eq!(
        timestamp(&first["created_at"]),
        timestamp(&first["updated_at"])
    );
    let age = chrono::Utc::now().fixed_offset() - timestamp(&first["created_at"]);
    assert!(age.num_seconds().abs() < 60, "created_at is now: {first}");

    // Defaults: all events, no headers, the "string" output format, no secret.
    let second = create(
        &app,
        V1,
        json!({"webhook_url": "https://hooks.example.com/second"}),
    )
    .await;
    assert_eq!(second["has_secret"], false);
    assert_eq!(second["webhook_events"], Value::Null);
    assert_eq!(second["webhook_headers"], json!({}));
    assert_eq!(second["webhook_output_format"], "string");

    let (status, read) = app.get(&one(&id_of(&first))).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, first);

    let (status, list) = app.get(V1).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        ids(&list),
        vec![id_of(&second), id_of(&first)],
        "newest first"
    );
    assert_eq!(list[1], first);

    // Partial update: only the fields sent change; the secret stays set.
    let (status, updated) = app
        .put(
            &one(&id_of(&first)),
            &json!({"webhook_headers": {"X-Route": "r2"}}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["webhook_headers"], json!({"X-Route": "r2"}));
    assert_eq!(updated["webhook_url"], first["webhook_url"]);
    assert_eq!(updated["webhook_events"], first["webhook_events"]);
    assert_eq!(updated["webhook_output_format"], "json");
    assert_eq!(updated["has_secret"], true);
    assert_eq!(updated["created_at"], first["created_at"]);
    assert!(timestamp(&updated["updated_at"]) >= timestamp(&first["updated_at"]));
    let (_, read) = app.get(&one(&id_of(&first))).await;
    assert_eq!(read, updated, "the update is stored");

    // Sending a secret sets it; sending null clears it.
    let (status, second_with_secret) = app
        .put(
            &one(&id_of(&second)),
            &json!({"webhook_signing_secret": "now-signed"}),
        )
        .await;
    assert_eq!(status, 200, "{second_with_secret}");
    assert_eq!(second_with_secret["has_secret"], true);
    assert_eq!(
        second_with_secret["webhook_url"],
        "https://hooks.example.com/second"
    );
    let (status, cleared) = app
        .put(
            &one(&id_of(&first)),
            &json!({"webhook_signing_secret": null}),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["has_secret"], false);
    assert_eq!(cleared["webhook_headers"], json!({"X-Route": "r2"}));

    // Delete: 204 with no body, then 404 for every verb; the other config remains.
    let (status, text) = raw(
        &app,
        reqwest::Method::DELETE,
        &one(&id_of(&first)),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(text, "");
    for (status, body) in [
        app.get(&one(&id_of(&first))).await,
        app.delete(&one(&id_of(&first))).await,
        app.put(
            &one(&id_of(&first)),
            &json!({"webhook_url": "https://x.example.com"}),
        )
        .await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(&id_of(&first)));
    }
    let (_, list) = app.get(V1).await;
    assert_eq!(ids(&list), vec![id_of(&second)]);
}

#[tokio::test]
async fn the_secret_never_appears_in_any_response() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let secret = "sekrit-7f3a9c-never-shown";
    let rotated = "sekrit-b81e44-rotated";
    let rejected = "sekrit-0d5e21-rejected";
    let mut texts: Vec<(String, String)> = Vec::new();
    let key = Some(API_KEY);
    use reqwest::Method;

    let body = json!({"webhook_url": receiver.url("/s"), "webhook_signing_secret": secret});
    let (status, text) = raw(&app, Method::POST, V1, key, Some(&body)).await;
    assert!(status == 200 || status == 201, "{text}");
    let id = id_of(&serde_json::from_str(&text).unwrap());
    texts.push(("create".into(), text));
    for path in [
        one(&id),
        V1.to_owned(),
        V2.to_owned(),
        format!("{V2}?include_total=true&page_size=1"),
    ] {
        let (status, text) = raw(&app, Method::GET, &path, key, None).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        assert!(text.contains(&id), "GET {path} shows the config: {text}");
        texts.push((format!("GET {path}"), text));
    }
    let change = json!({"webhook_url": receiver.url("/s2")});
    let (status, text) = raw(&app, Method::PUT, &one(&id), key, Some(&change)).await;
    assert_eq!(status, 200, "{text}");
    texts.push(("update".into(), text));
    let rotate = json!({"webhook_signing_secret": rotated});
    let (status, text) = raw(&app, Method::PUT, &one(&id), key, Some(&rotate)).await;
    assert_eq!(status, 200, "{text}");
    texts.push(("rotate".into(), text));
    // Rejected writes carrying a secret must not echo it in the error either.
    for (label, path, method, body) in [
        (
            "create with bad events",
            V1.to_owned(),
            Method::POST,
            json!({"webhook_url": receiver.url("/s"), "webhook_events": [], "webhook_signing_secret": rejected}),
        ),
        (
            "create with bad whsec",
            V1.to_owned(),
            Method::POST,
            json!({"webhook_url": receiver.url("/s"), "webhook_signing_secret": format!("whsec_{rejected}")}),
        ),
        (
            "update with bad url",
            one(&id),
            Method::PUT,
            json!({"webhook_url": "ftp://nowhere", "webhook_signing_secret": rejected}),
        ),
    ] {
        let (status, text) = raw(&app, method, &path, key, Some(&body)).await;
        assert_eq!(status, 422, "{label}: {text}");
        texts.push((label.into(), text));
    }
    // The event and delivery look-ups of an event that used the saved config.
    let accepted = app
        .ingest(
            json!({"event_type": "parse.success", "data": {}, "webhook_configuration_ids": [id]}),
        )
        .await;
    let delivery = delivery_id(&accepted, 0);
    app.wait_for_status(&delivery, "succeeded", WAIT).await;
    for path in [
        format!("/api/v1/events/{}", accepted["event_id"].as_str().unwrap()),
        format!("/api/v1/deliveries/{delivery}"),
        "/api/v1/deliveries".to_owned(),
    ] {
        let (status, text) = raw(&app, Method::GET, &path, key, None).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        texts.push((format!("GET {path}"), text));
    }
    let (_, metrics) = raw(&app, Method::GET, "/metrics", None, None).await;
    texts.push(("metrics".into(), metrics));

    for (label, text) in &texts {
        for needle in [secret, rotated, rejected] {
            assert!(
                !text.contains(needle),
                "{label} leaks the signing secret {needle:?}: {text}"
            );
        }
    }
    // The rotated secret is what signs now (it was stored, just never shown).
    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(
        request.header("lc-signature"),
        Some(format!(
            "sha256={}",
            hmac_hex(rotated.as_bytes(), &request.body)
        ))
    );
}

#[tokio::test]
async fn saved_config_delivers_with_its_headers_and_signature() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let config = create(
        &app,
        V1,
        json!({
            "webhook_url": receiver.url("/saved"),
            "webhook_events": ["parse.success"],
            "webhook_headers": {"Authorization": "Bearer downstream", "X-Route": "saved-1"},
            "webhook_output_format": "json",
            "webhook_signing_secret": "saved-secret-1",
        }),
    )
    .await;
    let id = id_of(&config);
    let accepted = app
        .ingest(json!({
            "event_type": "parse.success",
            "data": {"id": "job-9", "job_id": "job-9"},
            "webhook_configuration_ids": [id],
        }))
        .await;
    assert_eq!(accepted["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(
        accepted["deliveries"][0]["webhook_url"],
        receiver.url("/saved")
    );
    let request = &receiver.wait_for(1, WAIT).await[0];
    assert_eq!(request.path, "/saved");
    assert_eq!(
        request.header("authorization").as_deref(),
        Some("Bearer downstream")
    );
    assert_eq!(request.header("x-route").as_deref(), Some("saved-1"));
    assert_eq!(
        request.header("lc-signature"),
        Some(format!(
            "sha256={}",
            hmac_hex(b"saved-secret-1", &request.body)
        ))
    );
    let body = request.json();
    assert_eq!(body["event_id"], accepted["event_id"]);
    assert_eq!(body["data"]["job_id"], "job-9");
    let delivery = app
        .wait_for_status(&delivery_id(&accepted, 0), "succeeded", WAIT)
        .await;
    assert_eq!(
        delivery["source"],
        json!({"kind": "saved", "config_id": id}),
        "{delivery}"
    );

    // The saved event filter applies: a parse.error event gets no delivery from it.
    let filtered = app
        .ingest(json!({"event_type": "parse.error", "data": {}, "webhook_configuration_ids": [id]}))
        .await;
    assert_eq!(filtered["deliveries"], json!([]));

    // After an update, new events use the new URL, headers and secret.
    let (status, updated) = app
        .put(
            &one(&id),
            &json!({
                "webhook_url": receiver.url("/rotated"),
                "webhook_headers": {"X-Route": "saved-2"},
                "webhook_signing_secret": "saved-secret-2",
            }),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    app.ingest(
        json!({"event_type": "parse.success", "data": {}, "webhook_configuration_ids": [id]}),
    )
    .await;
    let request = &receiver.wait_for(2, WAIT).await[1];
    assert_eq!(request.path, "/rotated");
    assert_eq!(request.header("x-route").as_deref(), Some("saved-2"));
    assert!(request.header("authorization").is_none());
    assert_eq!(
        request.header("lc-signature"),
        Some(format!(
            "sha256={}",
            hmac_hex(b"saved-secret-2", &request.body)
        ))
    );
    assert_eq!(receiver.count(), 2, "the filtered event was not sent");
}

#[tokio::test]
async fn unknown_or_deleted_config_ids_are_rejected_by_position() {
    let app = spawn_app().await;
    let known = id_of(
        &create(
            &app,
            V1,
            json!({"webhook_url": "https://hooks.example.com/k"}),
        )
        .await,
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.success", "data": {}, "webhook_configuration_ids": [unknown]}),
        )
        .await;
    assert_names_field(status, &body, "webhook_configuration_ids[0]");
    assert!(body["detail"].as_str().unwrap().contains(&unknown));
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.success", "data": {}, "webhook_configuration_ids": [known, "nope"]}),
        )
        .await;
    assert_names_field(status, &body, "webhook_configuration_ids[1]");
    // Nothing was queued by the rejected events.
    let (_, deliveries) = app.get("/api/v1/deliveries").await;
    assert_eq!(deliveries["items"], json!([]));

    let (status, _) = app.delete(&one(&known)).await;
    assert_eq!(status, 204);
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.success", "data": {}, "webhook_configuration_ids": [known]}),
        )
        .await;
    assert_names_field(status, &body, "webhook_configuration_ids[0]");
}

#[tokio::test]
async fn v2_list_pages_with_cursor_and_total() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for index in 0..7 {
        let config = create(
            &app,
            V1,
            json!({"webhook_url": format!("https://hooks.example.com/{index}")}),
        )
        .await;
        created.push(id_of(&config));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            None => format!("{V2}?page_size=3&include_total=true"),
            Some(token) => format!("{V2}?page_size=3&include_total=true&page_token={token}"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        assert_eq!(page["total_size"], 7, "{page}");
        let items = ids(&page["items"]);
        assert!(items.len() <= 3, "{page}");
        seen.extend(items);
        match &page["next_page_token"] {
            Value::Null => break,
            Value::String(next) => token = Some(next.clone()),
            other => panic!("next_page_token is {other}"),
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first, "every config once, newest first");

    // Without include_total there is no total_size; an exact fit leaves no empty last page.
    let (status, page) = app.get(&format!("{V2}?page_size=7")).await;
    assert_eq!(status, 200);
    assert!(page.get("total_size").is_none(), "{page}");
    assert_eq!(ids(&page["items"]), newest_first);
    assert_eq!(page["next_page_token"], Value::Null);
    // The default page holds them all; the v1 list agrees.
    let (_, page) = app.get(V2).await;
    assert_eq!(ids(&page["items"]), newest_first);
    let (_, list) = app.get(V1).await;
    assert_eq!(ids(&list), newest_first);

    let (status, body) = app.get(&format!("{V2}?page_size=0")).await;
    assert_names_field(status, &body, "page_size");
    let (status, body) = app.get(&format!("{V2}?page_size=1001")).await;
    assert_names_field(status, &body, "page_size");
    let (status, body) = app.get(&format!("{V2}?page_token=not-a-token")).await;
    assert_names_field(status, &body, "page_token");
    // Parameters of the wrong type get the same JSON error, not a plain-text 400.
    let (status, body) = app.get(&format!("{V2}?page_size=ten")).await;
    assert_names_field(status, &body, "page_size");
    let (status, body) = app.get(&format!("{V2}?include_total=maybe")).await;
    assert_names_field(status, &body, "include_total");
    // Kept as text; PostgreSQL's text cannot even hold a NUL.
    let (status, body) = app.get(&format!("{V2}?project_id=a%00b")).await;
    assert_names_field(status, &body, "project_id");
    let (status, body) = app
        .post(
            &format!("{V1}?project_id=a%01b"),
            &json!({"webhook_url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_names_field(status, &body, "project_id");
}

#[tokio::test]
async fn configs_are_scoped_to_their_project() {
    let app = spawn_app().await;
    let alpha1 = create(
        &app,
        &format!("{V1}?project_id=alpha"),
        json!({"webhook_url": "https://hooks.example.com/a1"}),
    )
    .await;
    let alpha2 = create(
        &app,
        &format!("{V1}?project_id=alpha&organization_id=org-1"),
        json!({"webhook_url": "https://hooks.example.com/a2"}),
    )
    .await;
    let beta = create(
        &app,
        &format!("{V1}?project_id=beta"),
        json!({"webhook_url": "https://hooks.example.com/b"}),
    )
    .await;
    assert_eq!(alpha1["tenant_id"], "alpha");
    assert_eq!(alpha2["tenant_id"], "alpha");
    assert_eq!(beta["tenant_id"], "beta");

    let (_, list) = app.get(&format!("{V1}?project_id=alpha")).await;
    assert_eq!(ids(&list), vec![id_of(&alpha2), id_of(&alpha1)]);
    let (_, list) = app.get(&format!("{V1}?project_id=beta")).await;
    assert_eq!(ids(&list), vec![id_of(&beta)]);
    let (_, list) = app.get(&format!("{V1}?project_id=gamma")).await;
    assert_eq!(list, json!([]));
    let (_, page) = app
        .get(&format!(
            "{V2}?project_id=alpha&include_total=true&page_size=1"
        ))
        .await;
    assert_eq!(page["total_size"], 2);
    assert_eq!(ids(&page["items"]), vec![id_of(&alpha2)]);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!(
            "{V2}?project_id=alpha&page_size=1&page_token={token}"
        ))
        .await;
    assert_eq!(ids(&page["items"]), vec![id_of(&alpha1)]);
    assert_eq!(page["next_page_token"], Value::Null);

    // Another project can neither read, change nor delete alpha's configuration.
    let foreign = format!("{}?project_id=beta", one(&id_of(&alpha1)));
    let (status, body) = app.get(&foreign).await;
    assert_eq!(status, 404, "read across projects: {body}");
    let (status, body) = app
        .put(
            &foreign,
            &json!({"webhook_url": "https://evil.example.com"}),
        )
        .await;
    assert_eq!(status, 404, "update across projects: {body}");
    let (status, body) = app.delete(&foreign).await;
    assert_eq!(status, 404, "delete across projects: {body}");
    let (status, read) = app
        .get(&format!("{}?project_id=alpha", one(&id_of(&alpha1))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(read, alpha1, "alpha's config is untouched");

    // Events of one project cannot use another project's configuration.
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"event_type": "parse.success", "data": {}, "project_id": "beta",
                    "webhook_configuration_ids": [id_of(&alpha1)]}),
        )
        .await;
    assert_names_field(status, &body, "webhook_configuration_ids[0]");
    let accepted = app
        .ingest(
            json!({"event_type": "parse.success", "data": {}, "project_id": "alpha",
                        "webhook_configuration_ids": [id_of(&alpha1)]}),
        )
        .await;
    assert_eq!(accepted["deliveries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_configs_are_422_naming_the_field() {
    let app = spawn_app().await;
    let url = "https://hooks.example.com/v";
    let cases = [
        (
            json!({"webhook_url": url, "webhook_events": []}),
            "webhook_events",
        ),
        (
            json!({"webhook_url": "ftp://hooks.example.com/v"}),
            "webhook_url",
        ),
        (json!({"webhook_url": "not a url"}), "webhook_url"),
        (
            json!({"webhook_url": "http://10.0.0.8/internal"}),
            "webhook_url",
        ),
        (
            json!({"webhook_url": url, "webhook_events": ["parse.success", "parse.done"]}),
            "webhook_events[1]",
        ),
        (
            json!({"webhook_url": url, "webhook_headers": {"X-Evil": "a\r\nInjected: 1"}}),
            "webhook_headers.X-Evil",
        ),
        (
            json!({"webhook_url": url, "webhook_headers": {"X-Lf": "a\nb"}}),
            "webhook_headers.X-Lf",
        ),
        (
            json!({"webhook_url": url, "webhook_headers": {"Bad Name": "v"}}),
            "webhook_headers.Bad Name",
        ),
        (
            json!({"webhook_url": url, "webhook_output_format": "xml"}),
            "webhook_output_format",
        ),
        (
            json!({"webhook_url": url, "webhook_signing_secret": ""}),
            "webhook_signing_secret",
        ),
        (
            json!({"webhook_url": url, "webhook_transform": "no-such-plugin"}),
            "webhook_transform",
        ),
        (json!({"webhook_events": ["parse.success"]}), "body"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in &cases {
        let (status, answer) = app.post(V1, body).await;
        assert_names_field(status, &answer, field);
        if *field == "body" && body.is_object() {
            assert!(
                answer["detail"].as_str().unwrap().contains("webhook_url"),
                "a missing webhook_url is named: {answer}"
            );
        }
    }
    let (_, list) = app.get(V1).await;
    assert_eq!(list, json!([]), "no rejected config was stored");

    // The same checks on update; a rejected update changes nothing.
    let config = create(&app, V1, json!({"webhook_url": url})).await;
    let path = one(&id_of(&config));
    for (body, field) in cases.iter().take(11) {
        let mut changes = body.as_object().unwrap().clone();
        if changes.get("webhook_url") == Some(&json!(url)) {
            changes.remove("webhook_url");
        }
        let (status, answer) = app.put(&path, &Value::Object(changes)).await;
        assert_names_field(status, &answer, field);
    }
    let (status, answer) = app.put(&path, &json!({"webhook_url": null})).await;
    assert_names_field(status, &answer, "webhook_url");
    let (_, read) = app.get(&path).await;
    assert_eq!(read, config);
}

#[tokio::test]
async fn config_endpoints_need_a_valid_api_key() {
    let app = spawn_app().await;
    let config = create(
        &app,
        V1,
        json!({"webhook_url": "https://hooks.example.com/auth"}),
    )
    .await;
    let path = one(&id_of(&config));
    let body = json!({"webhook_url": "https://hooks.example.com/other"});
    use reqwest::Method;
    let calls: [(Method, &str, Option<&Value>); 6] = [
        (Method::POST, V1, Some(&body)),
        (Method::GET, V1, None),
        (Method::GET, &path, None),
        (Method::PUT, &path, Some(&body)),
        (Method::DELETE, &path, None),
        (Method::GET, V2, None),
    ];
    for key in [None, Some("wrong-key"), Some("")] {
        for (method, target, body) in &calls {
            let (status, text) = raw(&app, method.clone(), target, key, *body).await;
            assert_eq!(status, 401, "{method} {target} with key {key:?}: {text}");
            let answer: Value = serde_json::from_str(&text).expect("JSON error body");
            assert!(answer["detail"].is_string(), "{answer}");
        }
    }
    // A wrong scheme is not a key either.
    let response = app
        .http
        .get(app.url(V1))
        .header("authorization", format!("Basic {API_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Nothing the unauthenticated calls asked for happened.
    let (_, list) = app.get(V1).await;
    assert_eq!(list, json!([config]));
}
