//! The web console at `/console`: a small front end (plain ES modules, no framework, no build
//! step) embedded in the binary at compile time and served from memory. It holds no state of
//! its own on the server: the browser keeps the API key for its session and every page reads
//! and writes through the same authenticated API as any other client.
//!
//! The pages are public (they are code, not data); every response carries a strict Content
//! Security Policy, so scripts come only from these files and no value the console shows
//! (a receiver's response body, an event's data) can run as one.

use super::ApiState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::Digest;
use std::sync::{Arc, OnceLock};

/// The modules, by the names the page and their imports use.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JAVASCRIPT, include_str!("app.js")),
    ("core.js", JAVASCRIPT, include_str!("core.js")),
    ("overview.js", JAVASCRIPT, include_str!("overview.js")),
    ("deliveries.js", JAVASCRIPT, include_str!("deliveries.js")),
    (
        "destinations.js",
        JAVASCRIPT,
        include_str!("destinations.js"),
    ),
    ("plugins.js", JAVASCRIPT, include_str!("plugins.js")),
    ("live.js", JAVASCRIPT, include_str!("live.js")),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
];
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const INDEX_TEMPLATE: &str = include_str!("index.html");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/console", get(index))
        .route(
            "/console/",
            get(|| async { with_policy(Redirect::permanent("/console").into_response()) }),
        )
        .route("/console/assets/{file}", get(asset))
}

/// The page, with the event types (for the search and the playground) written in as data.
fn index_html() -> &'static (String, String) {
    static INDEX: OnceLock<(String, String)> = OnceLock::new();
    INDEX.get_or_init(|| {
        let event_types: Vec<&str> = crate::domain::EventType::all()
            .map(|event_type| event_type.as_str())
            .collect();
        // A JSON array of fixed names: nothing in it can close the script element.
        let event_types = serde_json::to_string(&event_types).unwrap_or_else(|_| "[]".into());
        let page = INDEX_TEMPLATE.replace("{{EVENT_TYPES}}", &event_types);
        let etag = etag_of(&page);
        (page, etag)
    })
}

async fn index(request_headers: HeaderMap) -> Response {
    let (page, etag) = index_html();
    serve(&request_headers, "text/html; charset=utf-8", page, etag)
}

async fn asset(Path(file): Path<String>, request_headers: HeaderMap) -> Response {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| ASSETS.iter().map(|(_, _, body)| etag_of(body)).collect());
    match ASSETS.iter().position(|(name, _, _)| *name == file) {
        Some(index) => {
            let (_, content_type, body) = ASSETS[index];
            serve(&request_headers, content_type, body, &etags[index])
        }
        None => with_policy(
            super::ApiError::not_found(format!("no console file {file:?}")).into_response(),
        ),
    }
}

fn etag_of(body: &str) -> String {
    format!(
        "\"{}\"",
        &hex::encode(sha2::Sha256::digest(body.as_bytes()))[..16]
    )
}

/// Served with its ETag and revalidated on each load (`no-cache`): an upgraded gateway's
/// console is never mixed with an older one's cached modules, and an unchanged one costs a
/// 304 per file.
fn serve(
    request_headers: &HeaderMap,
    content_type: &'static str,
    body: &'static str,
    etag: &str,
) -> Response {
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = match fresh {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_policy(response)
}

/// Every console response, found or not, carries the same policy.
fn with_policy(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
