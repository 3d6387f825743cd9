//! `/auth/verify`: the forward-auth endpoint for reverse proxies (nginx
//! `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`).
//!
//! The proxy passes the original request's method and URI in
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy) or
//! `X-Original-Method`/`X-Original-URI` (the nginx convention). The method
//! decides which budget (reads or writes) the request uses; the URI's path,
//! without its query string, is recorded as the token's last use.
//! `?scope=a b` requires scopes, `?project=NAME` a project (by name) of the
//! token's organization. 200 carries `X-Keysmith-*` headers for the
//! upstream (the token's label and the owner's display name, or email
//! without one, percent-encoded, so any UTF-8 survives a header); 401/403/429 otherwise (429 becomes 403 with
//! `KEYSMITH_VERIFY_429_AS_403`, for nginx).

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::bearer::{self, BearerError, BearerErrorBody};
use crate::app::AppState;
use crate::request::ClientIp;
use crate::verify::{IDENTITY_HEADERS, TokenInfo, Use};

#[derive(Debug, Default, Deserialize)]
pub struct VerifyParams {
    /// Space-separated scopes the request needs.
    scope: Option<String>,
    /// The project (by name) the request is for.
    project: Option<String>,
}

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The value a header family reports: `Ok(None)` when the header is absent,
/// `Err` when it is there more than once or is not text (no proxy sends
/// that; a client adding its own copy might).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(|v| Some(v.trim())).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}

/// What the two header conventions say about one fact of the original
/// request. A proxy sets one family and passes the client's copy of the
/// other on untouched, so when both are present they must agree: otherwise
/// the client chose one of them, and which one is the proxy's cannot be
/// told. The answer is then a refusal, not a guess.
fn reported<'a>(
    headers: &'a HeaderMap,
    forwarded: &HeaderName,
    original: &HeaderName,
) -> Result<Option<&'a str>, BearerError> {
    const CONFLICT: &str = "The request's X-Forwarded-Method/-Uri and X-Original-Method/-URI headers \
         disagree or repeat: a client may have set one of them. Configure the proxy to set the \
         family it uses and to overwrite (or drop) the other.";
    let invalid = |_| BearerError::InvalidRequest(CONFLICT);
    match (
        single(headers, forwarded).map_err(invalid)?,
        single(headers, original).map_err(invalid)?,
    ) {
        (Some(a), Some(b)) if a != b => Err(BearerError::InvalidRequest(CONFLICT)),
        (a, b) => Ok(a.or(b).filter(|v| !v.is_empty())),
    }
}

/// The original request's method and path, as the proxy reports them. The
/// path has no query string or fragment (a query can carry secrets; it is
/// never stored).
fn original_request<'a>(
    headers: &'a HeaderMap,
    own: &'a Method,
) -> Result<(&'a str, &'a str), BearerError> {
    let method =
        reported(headers, &X_FORWARDED_METHOD, &X_ORIGINAL_METHOD)?.unwrap_or(own.as_str());
    let uri = reported(headers, &X_FORWARDED_URI, &X_ORIGINAL_URI)?.unwrap_or("/");
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    Ok((method, &uri[..end]))
}

/// A request that carries an identity header of ours (`X-Keysmith-User`,
/// or a `X_Keysmith_User` that CGI/WSGI upstreams merge with it) is refused:
/// only Keysmith's answer may set them, and a proxy that forgot to overwrite
/// one would pass the client's value on next to a valid token.
fn carries_identity_headers(headers: &HeaderMap) -> bool {
    const OURS: &[u8] = b"x-keysmith-";
    headers.keys().any(|name| {
        let name = name.as_str().as_bytes();
        name.len() >= OURS.len()
            && name[..OURS.len()]
                .iter()
                .zip(OURS)
                .all(|(&c, &o)| c == o || (c == b'_' && o == b'-'))
    })
}

/// The methods `/auth/verify` answers: those a forward-auth proxy uses
/// (Traefik and Caddy send GET; nginx `auth_request` passes the original
/// request's method on). Others (TRACE, CONNECT, extension methods) get 405.
pub const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The route: [`verify`] for each of [`METHODS`].
pub fn route() -> axum::routing::MethodRouter<AppState> {
    METHODS
        .iter()
        .filter_map(|m| axum::routing::MethodFilter::try_from(m.clone()).ok())
        .fold(axum::routing::MethodRouter::new(), |r, filter| {
            r.on(filter, verify)
        })
}

/// Documented for GET; the document repeats the operation for each of
/// [`METHODS`] (see `api::openapi`).
#[utoipa::path(
    get,
    path = "/auth/verify",
    operation_id = "verify",
    tag = "bearer",
    summary = "Forward auth: may this bearer token make the original request?",
    params(
        ("scope" = Option<String>, Query, description = "Space-separated scopes the request needs (all of them, through their closure)."),
        ("project" = Option<String>, Query, description = "The project, by name, the request is for."),
        ("x-forwarded-method" = Option<String>, Header, description = "The original request's method (Traefik, Caddy). Must agree with `X-Original-Method` when both are sent."),
        ("x-forwarded-uri" = Option<String>, Header, description = "The original request's URI (Traefik, Caddy). Must agree with `X-Original-URI` when both are sent."),
        ("x-original-method" = Option<String>, Header, description = "The original request's method (nginx)."),
        ("x-original-uri" = Option<String>, Header, description = "The original request's URI (nginx)."),
    ),
    responses(
        (status = 200, description = "Yes. The identity headers are for the upstream.", headers(
            ("x-keysmith-user" = String, description = "The owner's user id."),
            ("x-keysmith-email" = String, description = "The owner's email address."),
            ("x-keysmith-org" = String, description = "The organization's id."),
            ("x-keysmith-scopes" = String, description = "The token's effective scopes, space separated."),
            ("x-keysmith-token-id" = String, description = "The token's id."),
            ("x-keysmith-token-label" = String, description = "The token's label, percent-encoded UTF-8."),
            ("x-keysmith-user-name" = String, description = "The owner's display name (or email), percent-encoded UTF-8."),
            ("ratelimit-policy" = String, description = "The budget the original method uses."),
            ("ratelimit" = String, description = "What is left of it."),
            ("keysmith-token-expires" = String, description = "RFC 3339, UTC: when the presented secret stops working; only for a token that expires."),
        )),
        (status = 400, description = "`invalid_request`: the query string is not understood, the X-Forwarded-* and X-Original-* headers disagree, repeat or are not text (an empty value counts as absent, but still disagrees with a non-empty one of the other family), the request carries X-Keysmith-* headers, or the Authorization header is malformed or repeated.", body = BearerErrorBody),
        (status = 401, description = "No bearer token, or one that cannot be used (`invalid_token`).", body = BearerErrorBody),
        (status = 403, description = "`insufficient_scope`: the token lacks a scope or the project (or, with `KEYSMITH_VERIFY_429_AS_403`, it is rate limited).", body = BearerErrorBody),
        (status = 429, description = "The token's budget for the original method is spent.", body = BearerErrorBody, headers(("retry-after" = i64, description = "Seconds to wait."))),
        (status = 503, description = "The token store is not answering.", body = BearerErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(name = "verify", skip_all)]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
) -> Response {
    let rate_limited_status = if state.config.verify_429_as_403 {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    // The body is not needed (and is not `Sync`, so it cannot be borrowed
    // across an await).
    let (parts, _) = request.into_parts();
    match check(&state, ip, &parts).await {
        Ok(response) => response,
        Err(e) => e.into_response_with(rate_limited_status),
    }
}

async fn check(
    state: &AppState,
    ip: std::net::IpAddr,
    request: &Parts,
) -> Result<Response, BearerError> {
    // Most proxies ask without parameters: nothing to parse then.
    let params = match request.uri.query() {
        None => VerifyParams::default(),
        Some(_) => match Query::<VerifyParams>::try_from_uri(&request.uri) {
            Ok(Query(params)) => params,
            Err(_) => {
                return Err(BearerError::InvalidRequest(
                    "The query string is not understood (expected scope=… and/or project=…).",
                ));
            }
        },
    };
    let headers = &request.headers;
    // What the client could have forged is refused before anything counts.
    let (method, path) = original_request(headers, &request.method)?;
    if carries_identity_headers(headers) {
        return Err(BearerError::InvalidRequest(
            "The request carries X-Keysmith-* headers; only Keysmith's answer may set them.",
        ));
    }
    let used = Use {
        method,
        path,
        ip,
        user_agent: bearer::user_agent(headers),
    };
    let info = bearer::authenticate(state, headers, used).await?;
    // A request the token may not make is refused without spending its
    // budget or counting as a use.
    if let Some(scope) = params.scope.as_deref() {
        bearer::require_scopes(&info, scope)?;
    }
    if let Some(project) = params.project.as_deref()
        && !info.allows_project(project.trim())
    {
        crate::metrics::verification(crate::metrics::Outcome::InsufficientScope);
        return Err(BearerError::InsufficientScope {
            scope: String::new(),
            description: "The access token is restricted to other projects.",
        });
    }
    let decision = bearer::admit(state, &info, used).await?;

    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    // Seven identity headers, two rate-limit ones and Cache-Control, plus
    // the security headers added on the way out: one allocation.
    h.reserve(18);
    h.extend(identity_headers(&info));
    h.extend(bearer::rate_limit_headers(&decision));
    h.extend(bearer::expires_header(&info));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The headers that tell the upstream who is calling. Their values are
/// written back to back into one buffer per request (one allocation);
/// each header takes a slice of it. The user name is the display name, or
/// the email address for a user without one.
fn identity_headers(info: &TokenInfo) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let mut blob =
        Vec::with_capacity(IDENTITY_FIXED + 3 * info.text_len() + info.scopes_str().len());
    let mut ends = [0u32; IDENTITY_HEADERS];
    let mut number = itoa::Buffer::new();
    let mut end =
        |blob: &Vec<u8>, n: usize| ends[n] = u32::try_from(blob.len()).unwrap_or(u32::MAX);
    blob.extend_from_slice(number.format(info.user_id).as_bytes());
    end(&blob, 0);
    blob.extend_from_slice(info.email().as_bytes());
    end(&blob, 1);
    blob.extend_from_slice(number.format(info.organization_id).as_bytes());
    end(&blob, 2);
    blob.extend_from_slice(info.scopes_str().as_bytes());
    end(&blob, 3);
    blob.extend_from_slice(number.format(info.token_id).as_bytes());
    end(&blob, 4);
    percent_encode_into(&mut blob, info.label());
    end(&blob, 5);
    // Always sent, so a proxy that copies it never finds it missing
    // (Caddy 2.6 would pass its placeholder on literally).
    percent_encode_into(&mut blob, info.display_name().unwrap_or(info.email()));
    end(&blob, 6);
    let blob = Bytes::from(blob);
    let names: [HeaderName; IDENTITY_HEADERS] = [
        X_KEYSMITH_USER,
        X_KEYSMITH_EMAIL,
        X_KEYSMITH_ORG,
        X_KEYSMITH_SCOPES,
        X_KEYSMITH_TOKEN_ID,
        X_KEYSMITH_TOKEN_LABEL,
        X_KEYSMITH_USER_NAME,
    ];
    let starts = std::iter::once(0).chain(ends);
    names
        .into_iter()
        .zip(starts.zip(ends))
        .filter_map(move |(name, (start, end))| {
            let value = blob.get(start as usize..end as usize)?;
            // A value that cannot be a header (an email with control
            // characters, say) is left out rather than mangled.
            let value = HeaderValue::from_maybe_shared(blob.slice_ref(value)).ok()?;
            Some((name, value))
        })
}

/// Everything but RFC 3986's unreserved characters is escaped: labels and
/// names are free UTF-8 text, a header value is not, and an upstream
/// undoes this with any URL-decoding function.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Room for the three numbers in the identity headers.
const IDENTITY_FIXED: usize = 64;

fn percent_encode_into(out: &mut Vec<u8>, text: &str) {
    for chunk in percent_encoding::utf8_percent_encode(text, ESCAPED) {
        out.extend_from_slice(chunk.as_bytes());
    }
}

#[cfg(test)]
fn percent_encoded(text: &str) -> String {
    let mut out = Vec::new();
    percent_encode_into(&mut out, text);
    String::from_utf8(out).unwrap_or_default()
}

const X_KEYSMITH_USER: HeaderName = HeaderName::from_static("x-keysmith-user");
const X_KEYSMITH_EMAIL: HeaderName = HeaderName::from_static("x-keysmith-email");
const X_KEYSMITH_ORG: HeaderName = HeaderName::from_static("x-keysmith-org");
const X_KEYSMITH_SCOPES: HeaderName = HeaderName::from_static("x-keysmith-scopes");
const X_KEYSMITH_TOKEN_ID: HeaderName = HeaderName::from_static("x-keysmith-token-id");
const X_KEYSMITH_TOKEN_LABEL: HeaderName = HeaderName::from_static("x-keysmith-token-label");
const X_KEYSMITH_USER_NAME: HeaderName = HeaderName::from_static("x-keysmith-user-name");

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_original_request_comes_from_either_convention() {
        let get = Method::GET;
        let h = headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/a/b?secret=1"),
        ]);
        assert_eq!(original_request(&h, &get), Ok(("POST", "/a/b")));
        let h = headers(&[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/x#frag"),
        ]);
        assert_eq!(original_request(&h, &get), Ok(("DELETE", "/x")));
        assert_eq!(original_request(&HeaderMap::new(), &get), Ok(("GET", "/")));
    }

    #[test]
    fn labels_and_names_are_percent_encoded_utf8() {
        assert_eq!(percent_encoded("deploy-bot_1.0~x"), "deploy-bot_1.0~x");
        assert_eq!(
            percent_encoded("Ada (deploy bot)"),
            "Ada%20%28deploy%20bot%29"
        );
        assert_eq!(percent_encoded("Zoë · MCP"), "Zo%C3%AB%20%C2%B7%20MCP");
        assert_eq!(percent_encoded("a%b\r\n"), "a%25b%0D%0A");
        // Always a valid header value.
        assert!(HeaderValue::from_str(&percent_encoded("日本 \u{7f}\0")).is_ok());
    }

    #[test]
    fn both_conventions_must_agree() {
        let get = Method::GET;
        // nginx sets X-Original-*; the client adds X-Forwarded-Method: GET
        // to be charged a read for its POST.
        let h = headers(&[
            ("x-original-method", "POST"),
            ("x-original-uri", "/tickets"),
            ("x-forwarded-method", "GET"),
        ]);
        assert!(matches!(
            original_request(&h, &get),
            Err(BearerError::InvalidRequest(_))
        ));
        let h = headers(&[
            ("x-forwarded-uri", "/tickets"),
            ("x-original-uri", "/totally/fake"),
        ]);
        assert!(matches!(
            original_request(&h, &get),
            Err(BearerError::InvalidRequest(_))
        ));
        // A proxy that sets both, the same way, is fine.
        let h = headers(&[
            ("x-original-method", "POST"),
            ("x-forwarded-method", "POST"),
            ("x-original-uri", "/t?q=1"),
            ("x-forwarded-uri", "/t?q=1"),
        ]);
        assert_eq!(original_request(&h, &get), Ok(("POST", "/t")));
        // Two copies of one header: one of them is not the proxy's.
        let mut h = headers(&[("x-forwarded-method", "POST")]);
        h.append("x-forwarded-method", "GET".parse().unwrap());
        assert!(matches!(
            original_request(&h, &get),
            Err(BearerError::InvalidRequest(_))
        ));
    }

    #[test]
    fn identity_headers_in_the_request_are_noticed_in_every_spelling() {
        for name in [
            "x-keysmith-user",
            "X-Keysmith-Token-Id",
            "x_keysmith_user",
            "X_KEYSMITH_EMAIL",
            "x-keysmith_org",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "1".parse().unwrap(),
            );
            assert!(carries_identity_headers(&h), "{name}");
        }
        let h = headers(&[
            ("x-keysmith", "1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("authorization", "Bearer x"),
        ]);
        assert!(!carries_identity_headers(&h));
    }
}
