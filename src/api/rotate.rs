//! A new secret for an existing token, over JSON:
//!
//! - `POST /api/user/api-keys/{id}/regenerate` for the browser session (CSRF
//!   header, like the other session JSON routes), for the member's own token
//!   or, as a superuser, a member's token;
//! - `POST /api/v2/tokens/self/rotate` with the token itself as the bearer
//!   credential: a token can only ever rotate itself.
//!
//! Both answer 201 with the new `plaintext` (shown this once), the same id.

// The `Err` of the helpers here is the response itself, returned as is.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api_keys::{self, KeyJson};
use super::bearer::{self, BearerError};
use crate::app::AppState;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::rotation::{self, GraceSeconds, NewExpiry, RotationError};
use crate::verify::Use;
use crate::web::format::iso;
use crate::web::pages::no_store;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegenerateBody {
    grace_seconds: Option<i64>,
}

/// The grace period a body asks for, or the 422 that says what to fix.
fn grace_of(raw: Option<i64>) -> Result<GraceSeconds, String> {
    raw.map_or(Ok(GraceSeconds::default()), GraceSeconds::parse)
}

/// An optional JSON body: nothing (or only whitespace) means the defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    api_keys::parse_body(headers, body)
}

fn rotation_error(e: RotationError) -> Response {
    match e {
        RotationError::NotFound => api_keys::error(StatusCode::NOT_FOUND, "No such token."),
        RotationError::Expired | RotationError::Changed => {
            api_keys::error(StatusCode::CONFLICT, &e.to_string())
        }
        RotationError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "Some fields need attention.", "errors": errors })),
        )
            .into_response(),
        RotationError::NotCurrent => api_keys::error(StatusCode::FORBIDDEN, &e.to_string()),
        RotationError::Store(e) => AppError::from(e).into_response(),
    }
}

/// `POST /api/user/api-keys/{id}/regenerate`.
pub async fn regenerate(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let who = match api_keys::session(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let id = match api_keys::parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: RegenerateBody = match optional_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let grace = match grace_of(body.grace_seconds) {
        Ok(g) => g,
        Err(message) => return api_keys::error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    match rotation::regenerate(&state, &who, &meta, id, grace).await {
        Ok(rotated) => {
            let mut key = KeyJson::from(&rotated.record);
            key.plaintext = Some(rotated.plain.expose_secret().to_string());
            no_store((StatusCode::CREATED, Json(key)).into_response())
        }
        Err(e) => rotation_error(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelfRotateBody {
    grace_seconds: Option<i64>,
    /// RFC 3339; absent or null: as long as the current secret was issued
    /// for, within the organization's policy.
    expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rotated {
    id: i64,
    label: String,
    token_prefix: String,
    scopes: Vec<String>,
    created_at: String,
    plaintext: String,
    expires_at: Option<String>,
}

/// A refusal in the bearer routes' JSON shape.
fn invalid_request(status: StatusCode, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({ "error": "invalid_request", "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /api/v2/tokens/self/rotate`: the bearer token replaces its own
/// secret. It counts as a write against the token's budget.
#[tracing::instrument(name = "self_rotate", skip_all)]
pub async fn self_rotate(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let used = Use {
        method: "POST",
        path: PATH,
        ip: meta.ip,
        user_agent: bearer::user_agent(&headers),
    };
    let (info, digest) = match bearer::authenticate_with_digest(&state, &headers, used).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let decision = match bearer::admit(&state, &info, used) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let body: SelfRotateBody = match optional_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let grace = match grace_of(body.grace_seconds) {
        Ok(g) => g,
        Err(message) => return invalid_request(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    let expiry = body.expires_at.map_or(NewExpiry::SameLength, NewExpiry::At);
    let rotated =
        match rotation::self_rotate(&state, info.token_id, &digest, &meta, grace, &expiry).await {
            Ok(r) => r,
            // Revoked between the check and the write: a dead token.
            Err(RotationError::NotFound) => return BearerError::InvalidToken.into_response(),
            Err(RotationError::Invalid(errors)) => {
                let description = errors
                    .get("expiresAt")
                    .unwrap_or("Some fields need attention.")
                    .to_string();
                return invalid_request(StatusCode::UNPROCESSABLE_ENTITY, &description);
            }
            Err(RotationError::NotCurrent) => {
                return invalid_request(
                    StatusCode::FORBIDDEN,
                    &RotationError::NotCurrent.to_string(),
                );
            }
            Err(e) => return rotation_error(e),
        };
    let t = &rotated.record;
    let body = Rotated {
        id: t.id,
        label: t.label.clone(),
        token_prefix: t.display_prefix.clone(),
        scopes: t.scopes.names(),
        created_at: iso(t.created_at),
        plaintext: rotated.plain.expose_secret().to_string(),
        expires_at: t.expires_at.map(iso),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let h = response.headers_mut();
    h.extend(bearer::rate_limit_headers(&decision));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The self-rotation route.
pub const PATH: &str = "/api/v2/tokens/self/rotate";
