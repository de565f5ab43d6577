//! Saved webhook configurations (SPEC 7), shaped as LlamaCloud's API so its official client
//! can drive them: v1 beta CRUD and the v2 cursor-paginated list. The signing secret is
//! write-only: responses say only whether one is set.

use super::{ApiError, ApiState, parse_json};
use crate::domain::{ConfigId, DestinationSource, PreviousSecret, iso_millis, now_millis};
use crate::routing::{Checks, FieldError, SECRET_FIELD, WebhookConfig};
use crate::store::SavedConfig;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The tenant of configurations created without a `project_id`.
const DEFAULT_TENANT: &str = "default";
/// axum's default body limit, which these routes keep.
const CONFIG_BODY_LIMIT: usize = 2 << 20;
/// How many configurations the unpaginated v1 list reads from the store at a time.
const V1_READ_CHUNK: usize = 1000;

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/beta/webhook-configs", get(list_v1).post(create))
        .route(
            "/api/v1/beta/webhook-configs/{config_id}",
            get(read).put(update).delete(remove),
        )
        .route("/api/v2/webhook-configs", get(list_v2))
}

#[derive(Debug, Deserialize)]
pub struct Scope {
    #[serde(default, deserialize_with = "crate::domain::optional_project_id")]
    project_id: Option<String>,
    #[allow(dead_code)] // accepted for LlamaCloud compatibility; projects are the tenant here
    organization_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "crate::domain::optional_project_id")]
    project_id: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
    #[serde(default)]
    include_total: bool,
}

#[derive(Debug, Serialize)]
pub struct WebhookConfigResponse {
    id: ConfigId,
    has_secret: bool,
    tenant_id: String,
    tenant_type: &'static str,
    webhook_url: serde_json::Value,
    webhook_events: serde_json::Value,
    webhook_headers: serde_json::Value,
    webhook_output_format: serde_json::Value,
    webhook_transform: serde_json::Value,
    webhook_transform_config: serde_json::Value,
    webhook_retry: serde_json::Value,
    /// While a rotation's window lasts: when the replaced secret stops signing (ISO 8601).
    /// The secrets themselves are never shown.
    previous_secret_expires_at: Option<String>,
    created_at: String,
    updated_at: String,
}

fn response(config: &SavedConfig) -> WebhookConfigResponse {
    let field = |name: &str| {
        config
            .settings
            .get(name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let output_format = match field("webhook_output_format") {
        serde_json::Value::Null => serde_json::Value::from("string"),
        given => given,
    };
    WebhookConfigResponse {
        id: config.id.clone(),
        has_secret: config.signing_secret.is_some(),
        tenant_id: config.tenant_id.clone(),
        tenant_type: "project",
        webhook_url: match field("webhook_url") {
            serde_json::Value::String(url) => {
                serde_json::Value::from(crate::domain::redacted_url(&url).into_owned())
            }
            other => other,
        },
        webhook_events: field("webhook_events"),
        webhook_headers: match field("webhook_headers") {
            serde_json::Value::Null => serde_json::json!({}),
            headers => headers,
        },
        webhook_output_format: output_format,
        webhook_transform: field("webhook_transform"),
        webhook_transform_config: field("webhook_transform_config"),
        webhook_retry: field("webhook_retry"),
        previous_secret_expires_at: config
            .previous_secret
            .as_ref()
            .filter(|previous| previous.valid_at(now_millis()).is_some())
            .map(|previous| iso_millis(previous.until)),
        created_at: config.created_at.clone(),
        updated_at: config.updated_at.clone(),
    }
}

/// Validate a full set of fields, asking the named plugin whether it accepts its config;
/// returns the settings to store and the secret apart.
async fn validate(
    state: &ApiState,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<(serde_json::Value, Option<String>), ApiError> {
    // Already parsed: deserialise the value itself rather than printing and re-parsing it.
    let config: WebhookConfig = super::from_value(serde_json::Value::Object(fields.clone()))?;
    {
        // Out of scope before the await below: the checks borrow a closure that is not Sync.
        let plugin_missing = |name: &str| state.plugins.missing(name);
        let checks = Checks {
            egress: &state.egress,
            plugin_missing: &plugin_missing,
            allow_patterns: false,
        };
        config.validate("", &checks, DestinationSource::Inline)?;
    }
    if let Some(plugin) = &config.webhook_transform
        && let Err(refused) = state
            .plugins
            .validate_config(plugin, &config.transform_config_json())
            .await
    {
        return Err(FieldError::new(
            refused.field("webhook_transform_config"),
            format!("is refused by plugin {plugin}: {}", refused.message),
        )
        .into());
    }
    let secret = fields
        .remove(SECRET_FIELD)
        .and_then(|value| value.as_str().map(str::to_owned));
    fields.retain(|_, value| !value.is_null());
    Ok((serde_json::Value::Object(fields), secret))
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match parse_json::<serde_json::Value>(body)? {
        serde_json::Value::Object(fields) => Ok(fields),
        _ => Err(ApiError::unprocessable("body: must be a JSON object")),
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn create(
    State(state): State<Arc<ApiState>>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookConfigResponse>, ApiError> {
    let Query(scope) = scope.map_err(super::ops::query_error)?;
    let body = body.map_err(|rejection| super::body_rejection(rejection, CONFIG_BODY_LIMIT))?;
    let fields = body_object(&body)?;
    let (settings, signing_secret) = validate(&state, fields).await?;
    let now = now_iso();
    let saved = state
        .store
        .insert_config(SavedConfig {
            id: ConfigId::generate(),
            tenant_id: scope.project_id.unwrap_or_else(|| DEFAULT_TENANT.into()),
            settings,
            signing_secret,
            previous_secret: None,
            created_at: now.clone(),
            updated_at: now,
            seq: 0,
        })
        .await?;
    Ok(Json(response(&saved)))
}

async fn list_v1(
    State(state): State<Arc<ApiState>>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<Vec<WebhookConfigResponse>>, ApiError> {
    let Query(scope) = scope.map_err(super::ops::query_error)?;
    // Every configuration, read in keyset pages: the store computes `limit + 1` as i64, so an
    // "unbounded" limit near usize::MAX overflows (a panic, hence 503, in debug builds).
    let mut configs = Vec::new();
    let mut before = None;
    loop {
        let page = state
            .store
            .configs(scope.project_id.clone(), V1_READ_CHUNK, before, false)
            .await?;
        configs.extend(page.items.iter().map(response));
        match page.next_cursor {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    Ok(Json(configs))
}

async fn list_v2(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(super::ops::query_error)?;
    let page_size = query.page_size.unwrap_or(50);
    if !(1..=1000).contains(&page_size) {
        return Err(ApiError::unprocessable(
            "page_size: must be between 1 and 1000",
        ));
    }
    let before = match &query.page_token {
        None => None,
        Some(token) if token.is_empty() => None,
        Some(token) => Some(token.parse::<i64>().map_err(|_| {
            ApiError::unprocessable(format!(
                "page_token: {token:?} is not a token this API issued"
            ))
        })?),
    };
    let page = state
        .store
        .configs(query.project_id, page_size, before, query.include_total)
        .await?;
    let mut body = serde_json::json!({
        "items": page.items.iter().map(response).collect::<Vec<_>>(),
        "next_page_token": page.next_cursor.map(|seq| seq.to_string()),
    });
    if let Some(total) = page.total {
        body["total_size"] = total.into();
    }
    Ok(Json(body))
}

async fn read(
    State(state): State<Arc<ApiState>>,
    Path(config_id): Path<ConfigId>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<WebhookConfigResponse>, ApiError> {
    let Query(scope) = scope.map_err(super::ops::query_error)?;
    let config = scoped_config(&state, &config_id, &scope).await?;
    Ok(Json(response(&config)))
}

/// The configuration `config_id`, if it exists and belongs to the requested project (any
/// project when none is named): another project's configuration is reported as not found,
/// so a project can neither read, change nor delete it, nor learn that it exists.
async fn scoped_config(
    state: &ApiState,
    config_id: &ConfigId,
    scope: &Scope,
) -> Result<SavedConfig, ApiError> {
    state
        .store
        .config(config_id)
        .await?
        .filter(|config| {
            scope
                .project_id
                .as_ref()
                .is_none_or(|project| *project == config.tenant_id)
        })
        .ok_or_else(|| not_found(config_id))
}

async fn update(
    State(state): State<Arc<ApiState>>,
    Path(config_id): Path<ConfigId>,
    scope: Result<Query<Scope>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookConfigResponse>, ApiError> {
    let Query(scope) = scope.map_err(super::ops::query_error)?;
    let body = body.map_err(|rejection| super::body_rejection(rejection, CONFIG_BODY_LIMIT))?;
    let changes = body_object(&body)?;
    let existing = scoped_config(&state, &config_id, &scope).await?;
    let mut fields = existing.settings.as_object().cloned().unwrap_or_default();
    if let Some(secret) = &existing.signing_secret {
        fields.insert(SECRET_FIELD.into(), secret.clone().into());
    }
    // Partial update: a field sent replaces the stored one; null clears it. A URL sent back
    // exactly as a view showed it (credentials as `***`) keeps the stored one.
    for (name, value) in changes {
        let shown_url_unchanged = name == "webhook_url"
            && matches!(
                (&value, fields.get("webhook_url")),
                (serde_json::Value::String(sent), Some(serde_json::Value::String(stored)))
                    if *sent != *stored && *sent == crate::domain::redacted_url(stored)
            );
        if !shown_url_unchanged {
            fields.insert(name, value);
        }
    }
    let (settings, signing_secret) = validate(&state, fields).await?;
    let previous_secret = rotated(
        &existing,
        signing_secret.as_deref(),
        state.config.secret_rotation_window_ms,
    );
    let updated = state
        .store
        .update_config(SavedConfig {
            settings,
            signing_secret,
            previous_secret,
            updated_at: now_iso(),
            ..existing
        })
        .await?
        .ok_or_else(|| not_found(&config_id))?;
    Ok(Json(response(&updated)))
}

async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(config_id): Path<ConfigId>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(scope) = scope.map_err(super::ops::query_error)?;
    scoped_config(&state, &config_id, &scope).await?;
    if state.store.delete_config(&config_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&config_id))
    }
}

/// The replaced secret to keep after an update: a new secret starts a rotation window for
/// the one it replaces; the same secret keeps any window running; no secret ends signing,
/// and with it any window.
fn rotated(
    existing: &SavedConfig,
    new_secret: Option<&str>,
    window_ms: u64,
) -> Option<PreviousSecret> {
    let now = now_millis();
    let new_secret = new_secret?;
    match existing.signing_secret.as_deref() {
        Some(old) if old != new_secret && window_ms > 0 => Some(PreviousSecret {
            secret: old.to_owned(),
            until: now.saturating_add(i64::try_from(window_ms).unwrap_or(i64::MAX)),
        }),
        Some(old) if old == new_secret => existing
            .previous_secret
            .clone()
            .filter(|previous| previous.valid_at(now).is_some() && previous.secret != new_secret),
        _ => None,
    }
}

fn not_found(config_id: &ConfigId) -> ApiError {
    ApiError::not_found(format!(
        "webhook configuration {:?} not found",
        config_id.as_str()
    ))
}
