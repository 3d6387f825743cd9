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
use serde_json::json;

use crate::app::AppState;
use crate::auth::session::{AuthRejection, SignedIn};
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::tokens::{self as ops, ExpiryInput, NewTokenInput, TokenChanges, TokenOpError};
use crate::store::tokens::{self as store_tokens, TokenQuery, TokenRecord};
use crate::web::format::iso;
use crate::web::pages::no_store;

/// A key as the API shows it (camelCase). `plaintext` only in the creation response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyJson {
    pub id: i64,
    pub label: String,
    pub token_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
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
    (status, Json(json!({ "error": message }))).into_response()
}

fn op_error(e: TokenOpError) -> Response {
    match e {
        TokenOpError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "Some fields need attention.", "errors": errors })),
        )
            .into_response(),
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

/// Parses a JSON body with messages that say what to fix.
pub(crate) fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send the body as JSON with Content-Type: application/json.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        error(
            status,
            &format!("The body is not what this endpoint takes: {e}."),
        )
    })
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    label: String,
    scopes: Option<Vec<String>>,
    expires_at: Option<String>,
    projects: Option<Vec<i64>>,
}

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
        Err(r) => return r,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    label: Option<String>,
    enabled: Option<bool>,
}

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
        Err(r) => return r,
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
