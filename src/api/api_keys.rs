//! `/api/user/api-keys`: the JSON twin of the settings page, for the browser
//! session (CSRF header required). Bearer tokens are refused: a token cannot
//! mint or manage tokens.

// The `Err` of the helpers here is the response itself, returned as is;
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::session::{AuthRejection, SignedIn};
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::tokens::{
    self as ops, ExpiryInput, FieldErrors, NewTokenInput, TokenChanges, TokenOpError,
};
use crate::store::tokens::{self as store_tokens, TokenQuery, TokenRecord};
use crate::web::format::iso;
use crate::web::pages::no_store;

/// A key as the API shows it (camelCase). `plaintext` only in the creation response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub struct KeyJson {
    pub id: i64,
    pub label: String,
    /// The first characters of the token, to recognize it by.
    pub token_prefix: String,
    /// The scopes granted (not their closure).
    pub scopes: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC; null for a token that does not expire.
    pub expires_at: Option<String>,
    /// RFC 3339, UTC; null until the token is first used.
    pub last_used_at: Option<String>,
    /// False while the token is disabled (paused).
    pub enabled: bool,
    /// The token itself: only in the answer that created (or regenerated)
    /// it, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub plaintext: Option<String>,
}

/// The session API's error body: what went wrong, and for a form that
/// needs attention, a message per field (by its JSON name).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<std::collections::BTreeMap<String, String>>,
}

impl KeyJson {
    pub(crate) fn from(t: &TokenRecord) -> KeyJson {
        KeyJson {
            id: t.id,
            label: t.label.clone(),
            token_prefix: t.display_prefix.clone(),
            scopes: t.scopes.names(),
            created_at: iso(t.created_at),
            expires_at: t.expires_at.map(iso),
            last_used_at: t.last_used_at.map(iso),
            enabled: t.disabled_at.is_none(),
            plaintext: None,
        }
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = SessionError {
        error: message.to_string(),
        errors: None,
    };
    (status, Json(body)).into_response()
}

/// The 422 for fields that need attention, one message each.
pub(crate) fn field_errors(errors: &FieldErrors) -> Response {
    let body = SessionError {
        error: "Some fields need attention.".to_string(),
        errors: Some(
            errors
                .0
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        ),
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn op_error(e: TokenOpError) -> Response {
    match e {
        TokenOpError::Invalid(errors) => field_errors(&errors),
        TokenOpError::NotFound => error(StatusCode::NOT_FOUND, "No such token."),
        TokenOpError::NotAllowed | TokenOpError::Locked(_) => {
            error(StatusCode::FORBIDDEN, &e.to_string())
        }
        TokenOpError::TooManyLive(_) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        TokenOpError::CreatingTooFast { retry_after, .. } => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
            r
        }
        TokenOpError::Store(e) => AppError::from(e).into_response(),
    }
}

/// Tokens cannot manage tokens: any `Authorization` header is refused
/// before the session is even looked at. (Bearer tokens are already turned
/// away by the browser routes' guard; this also covers other schemes.)
fn refuse_bearer(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key(header::AUTHORIZATION) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "API tokens cannot create or manage API tokens. Use the settings page or a browser session.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Cookie"),
        );
        return Err(r);
    }
    Ok(())
}

/// The browser session behind the request, or the JSON 401.
pub(crate) async fn session(state: &AppState, headers: &HeaderMap) -> Result<SignedIn, Response> {
    refuse_bearer(headers)?;
    let jar = axum_extra::extract::cookie::CookieJar::from_headers(headers);
    match crate::auth::session::current_session(state, &jar).await {
        Ok(Some(who)) => Ok(who),
        Ok(None) => Err(AuthRejection::Json.into_response()),
        Err(e) => Err(AppError::from(e).into_response()),
    }
}

/// Why a JSON body was not taken: the status and what to fix. Each API
/// answers it in its own error shape.
pub(crate) struct BodyError {
    pub status: StatusCode,
    pub message: String,
}

impl BodyError {
    /// The answer in the session API's shape.
    pub(crate) fn into_session_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// Parses a JSON body with messages that say what to fix.
pub(crate) fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, BodyError> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(BodyError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "Send the body as JSON with Content-Type: application/json.".to_string(),
        });
    }
    let not_taken = |e: serde_json::Error| BodyError {
        status: if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        },
        message: format!("The body is not what this endpoint takes: {e}."),
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(not_taken)?;
    // Every body here is an object; serde would also read a struct from
    // an array of its fields in order (`[null, 60]`), which no client means.
    if !value.is_object() {
        return Err(BodyError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "The body must be a JSON object ({…}).".to_string(),
        });
    }
    T::deserialize(value).map_err(not_taken)
}

pub(crate) fn parse_id(raw: &str) -> Result<i64, Response> {
    raw.parse()
        .map_err(|_| error(StatusCode::NOT_FOUND, "No such token."))
}

/// Keys per page when `limit` is not given, and the most a page holds.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

/// The list's paging: `limit` (1..=100) and the opaque `cursor` a previous
/// page's `X-Next-Cursor` header (or `Link: …; rel="next"`) gave.
struct Paging {
    limit: i64,
    offset: i64,
}

/// A cursor is the position of the next key in the list, in a form clients
/// treat as opaque (so it may become a keyset later without breaking them).
fn encode_cursor(offset: i64) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("o:{offset}"),
    )
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("o:")?
        .parse::<i64>()
        .ok()
        .filter(|o| (0..=i64::from(u32::MAX)).contains(o))
}

fn parse_paging(query: Option<&str>) -> Result<Paging, Response> {
    let mut paging = Paging {
        limit: DEFAULT_LIMIT,
        offset: 0,
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => {
                paging.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            &format!("limit must be a whole number from 1 to {MAX_LIMIT}."),
                        )
                    })?;
            }
            "cursor" => {
                paging.offset = decode_cursor(&value).ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "cursor is not one this API gave out: pass the X-Next-Cursor of the previous page as is.",
                    )
                })?;
            }
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Unknown query parameter “{other}”: this list takes limit and cursor."
                    ),
                ));
            }
        }
    }
    Ok(paging)
}

/// `GET /api/user/api-keys`: the live keys, newest first, one page at a
/// time. The body stays a plain array (as before paging); the next page is
/// in `X-Next-Cursor` and `Link: <…>; rel="next"`, absent on the last page.
#[utoipa::path(
    get,
    path = "/api/user/api-keys",
    operation_id = "listApiKeys",
    tag = "session",
    summary = "The signed-in member's live keys, newest first, a page at a time",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Keys per page (default 50)."),
        ("cursor" = Option<String>, Query, description = "The `X-Next-Cursor` of the previous page, as is."),
    ),
    responses(
        (status = 200, description = "One page of keys.", body = [KeyJson], headers(
            ("x-next-cursor" = String, description = "The cursor of the next page; absent on the last page."),
            ("link" = String, description = "`<…>; rel=\"next\"`: the next page's URL; absent on the last page."),
        )),
        (status = 400, description = "A query parameter is out of range, unknown, or a cursor this API did not give out.", body = SessionError),
        (status = 401, description = "No browser session, or an `Authorization` header (tokens cannot manage tokens).", body = SessionError),
        (status = 403, description = "The member may not hold tokens.", body = SessionError),
    ),
    security(("session" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let who = match session(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !who.membership.may_manage_tokens() {
        return op_error(TokenOpError::NotAllowed);
    }
    let paging = match parse_paging(query.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // One more than asked for tells whether there is a next page.
    let q = TokenQuery {
        offset: paging.offset,
        limit: paging.limit + 1,
        ..TokenQuery::default()
    };
    let mut tokens = match store_tokens::list_page(
        &state.db,
        who.organization_id(),
        who.user_id,
        &q,
        state.clock.unix(),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return AppError::from(e).into_response(),
    };
    let more = tokens.len() as i64 > paging.limit;
    tokens.truncate(paging.limit as usize);
    let mut response = Json(tokens.iter().map(KeyJson::from).collect::<Vec<_>>()).into_response();
    if more {
        let cursor = encode_cursor(paging.offset + paging.limit);
        let link = format!(
            "</api/user/api-keys?limit={}&cursor={cursor}>; rel=\"next\"",
            paging.limit
        );
        for (name, value) in [("x-next-cursor", cursor), ("link", link)] {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    response
}

/// A new key. Scopes default to `["read"]`; no `expiresAt` means it does
/// not expire (where the organization's policy allows that).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = CreateApiKey)]
pub struct CreateBody {
    /// 1–100 characters after trimming, unique among the owner's live keys.
    #[schema(min_length = 1, max_length = 100)]
    label: String,
    /// Scope names from the deployment's catalogue.
    scopes: Option<Vec<String>>,
    /// RFC 3339 date-time, or a date (`YYYY-MM-DD`), in the future.
    expires_at: Option<String>,
    /// Ids of projects of the organization to restrict the key to.
    projects: Option<Vec<i64>>,
}

#[utoipa::path(
    post,
    path = "/api/user/api-keys",
    operation_id = "createApiKey",
    tag = "session",
    summary = "Create a key; its plaintext is in this answer only",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `plaintext` is shown this once.", body = KeyJson),
        (status = 400, description = "The body is not JSON.", body = SessionError),
        (status = 401, description = "No browser session, or an `Authorization` header.", body = SessionError),
        (status = 403, description = "The CSRF token or origin was refused, or the member may not hold tokens.", body = SessionError),
        (status = 415, description = "The body is not sent as `application/json`.", body = SessionError),
        (status = 422, description = "A field needs attention (`errors` names it), or the member holds too many keys.", body = SessionError),
        (status = 429, description = "Keys are being created too fast.", body = SessionError, headers(("retry-after" = i64, description = "Seconds to wait."))),
    ),
    security(("session" = [], "csrf" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match session(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let body: CreateBody = match parse_body(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_session_response(),
    };
    let input = NewTokenInput {
        label: body.label,
        scopes: body.scopes.unwrap_or_else(|| vec!["read".into()]),
        expiry: body
            .expires_at
            .map(ExpiryInput::At)
            .unwrap_or(ExpiryInput::Never),
        projects: body
            .projects
            .unwrap_or_default()
            .iter()
            .map(i64::to_string)
            .collect(),
    };
    match ops::create(&state, &who, &meta, &input).await {
        Ok((plain, record)) => {
            let mut key = KeyJson::from(&record);
            key.plaintext = Some(plain.expose_secret().to_string());
            no_store((StatusCode::CREATED, Json(key)).into_response())
        }
        Err(e) => op_error(e),
    }
}

/// What to change: at least one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateApiKey, min_properties = 1)]
pub struct PatchBody {
    /// The new label (1–100 characters after trimming, unique).
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    label: Option<String>,
    /// False disables (pauses) the key, true enables it again.
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

#[utoipa::path(
    patch,
    path = "/api/user/api-keys/{id}",
    operation_id = "updateApiKey",
    tag = "session",
    summary = "Rename a key, or disable or enable it",
    params(("id" = i64, Path, description = "The key's id.")),
    request_body(content = PatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The key as it is now.", body = KeyJson),
        (status = 400, description = "The body is not JSON.", body = SessionError),
        (status = 401, description = "No browser session, or an `Authorization` header.", body = SessionError),
        (status = 403, description = "The CSRF token or origin was refused, or the member may not manage tokens.", body = SessionError),
        (status = 404, description = "No such live key of the member.", body = SessionError),
        (status = 415, description = "The body is not sent as `application/json`.", body = SessionError),
        (status = 422, description = "Neither field was sent, or one needs attention.", body = SessionError),
    ),
    security(("session" = [], "csrf" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let who = match session(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let body: PatchBody = match parse_body(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_session_response(),
    };
    if body.label.is_none() && body.enabled.is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Send label and/or enabled.",
        );
    }
    match ops::update(
        &state,
        &who,
        &meta,
        id,
        &TokenChanges {
            label: body.label,
            enabled: body.enabled,
        },
    )
    .await
    {
        Ok(record) => Json(KeyJson::from(&record)).into_response(),
        Err(e) => op_error(e),
    }
}

#[utoipa::path(
    delete,
    path = "/api/user/api-keys/{id}",
    operation_id = "revokeApiKey",
    tag = "session",
    summary = "Revoke a key, for good",
    params(("id" = i64, Path, description = "The key's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No browser session, or an `Authorization` header.", body = SessionError),
        (status = 403, description = "The CSRF token or origin was refused, or the member may not manage tokens.", body = SessionError),
        (status = 404, description = "No such live key of the member.", body = SessionError),
    ),
    security(("session" = [], "csrf" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match session(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match ops::revoke_own(&state, &who, &meta, id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => op_error(e),
    }
}
