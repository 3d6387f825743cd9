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
use utoipa::ToSchema;

use super::api_keys::{self, BodyError, KeyJson, SessionError};
use super::bearer::{self, BearerError};
use crate::app::AppState;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::rotation::{self, GraceSeconds, NewExpiry, RotationError};
use crate::verify::Use;
use crate::web::format::iso;
use crate::web::pages::no_store;

/// Optional: an empty body means a grace period of 0.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = RegenerateApiKey)]
pub struct RegenerateBody {
    /// How long the replaced secret keeps working, 0–86400 seconds.
    #[schema(minimum = 0, maximum = 86400)]
    grace_seconds: Option<i64>,
}

/// The grace period a body asks for, or the 422 that says what to fix.
fn grace_of(raw: Option<i64>) -> Result<GraceSeconds, String> {
    raw.map_or(Ok(GraceSeconds::default()), GraceSeconds::parse)
}

/// An optional JSON body: nothing (or only whitespace), or `null`, means
/// the defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
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
        RotationError::Invalid(errors) => api_keys::field_errors(&errors),
        RotationError::NotCurrent => api_keys::error(StatusCode::FORBIDDEN, &e.to_string()),
        RotationError::Store(e) => AppError::from(e).into_response(),
    }
}

/// `POST /api/user/api-keys/{id}/regenerate`.
#[utoipa::path(
    post,
    path = "/api/user/api-keys/{id}/regenerate",
    operation_id = "regenerateApiKey",
    tag = "session",
    summary = "A new secret for a key (the member's own, or as a superuser a member's); same id",
    params(("id" = i64, Path, description = "The key's id.")),
    request_body(content = Option<RegenerateBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new secret, in `plaintext`, shown this once.", body = KeyJson),
        (status = 400, description = "The body is not JSON.", body = SessionError),
        (status = 401, description = "No browser session, or an `Authorization` header.", body = SessionError),
        (status = 403, description = "The CSRF token or origin was refused, or the key is not the member's to regenerate.", body = SessionError),
        (status = 404, description = "No such live key.", body = SessionError),
        (status = 409, description = "The key expired or changed meanwhile.", body = SessionError),
        (status = 415, description = "A body was sent, but not as `application/json`.", body = SessionError),
        (status = 422, description = "`graceSeconds` is out of range, or a field needs attention.", body = SessionError),
    ),
    security(("session" = [], "csrf" = [])),
)]
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
        Err(e) => return e.into_session_response(),
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

/// Optional: an empty body means a grace period of 0 and the same
/// lifetime as before.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = SelfRotate)]
pub struct SelfRotateBody {
    /// How long the replaced secret keeps working, 0–86400 seconds.
    #[schema(minimum = 0, maximum = 86400)]
    grace_seconds: Option<i64>,
    /// RFC 3339; absent or null: as long as the current secret was issued
    /// for, within the organization's policy.
    expires_at: Option<String>,
}

/// The rotated token: the create shape, with the new secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    id: i64,
    label: String,
    token_prefix: String,
    scopes: Vec<String>,
    /// RFC 3339, UTC: when the token (not this secret) was created.
    created_at: String,
    /// The new secret, shown this once.
    plaintext: String,
    /// RFC 3339, UTC; null for a token that does not expire.
    expires_at: Option<String>,
}

/// A refusal in the bearer routes' JSON shape.
fn invalid_request(status: StatusCode, description: &str) -> Response {
    let mut r = (
        status,
        Json(bearer::BearerErrorBody {
            error: "invalid_request".into(),
            error_description: description.to_string(),
            scope: None,
        }),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /api/v2/tokens/self/rotate`: the bearer token replaces its own
/// secret. It counts as a write against the token's budget.
#[utoipa::path(
    post,
    path = "/api/v2/tokens/self/rotate",
    operation_id = "rotateSelf",
    tag = "bearer",
    summary = "The bearer token replaces its own secret; same id",
    request_body(content = Option<SelfRotateBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new secret, in `plaintext`, shown this once.", body = Rotated, headers(
            ("ratelimit-policy" = String, description = "The token's write budget (IETF ratelimit-headers draft)."),
            ("ratelimit" = String, description = "What is left of it."),
        )),
        (status = 400, description = "The request is malformed (`invalid_request`), e.g. the body is not JSON or the Authorization header is repeated.", body = bearer::BearerErrorBody),
        (status = 401, description = "No bearer token, or one that cannot be used (`invalid_token`).", body = bearer::BearerErrorBody),
        (status = 403, description = "The presented secret is one already replaced (in its grace period).", body = bearer::BearerErrorBody),
        (status = 409, description = "The token expired or changed meanwhile.", body = bearer::BearerErrorBody),
        (status = 415, description = "A body was sent, but not as `application/json`.", body = bearer::BearerErrorBody),
        (status = 422, description = "`graceSeconds` or `expiresAt` is not acceptable (`error_description` says why).", body = bearer::BearerErrorBody),
        (status = 429, description = "The token's write budget is spent.", body = bearer::BearerErrorBody, headers(("retry-after" = i64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
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
    let decision = match bearer::admit(&state, &info, used).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let body: SelfRotateBody = match optional_body(&headers, &body) {
        Ok(b) => b,
        Err(e) => return invalid_request(e.status, &e.message),
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
            Err(e @ (RotationError::Expired | RotationError::Changed)) => {
                return invalid_request(StatusCode::CONFLICT, &e.to_string());
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
