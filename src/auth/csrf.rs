//! Cross-site request forgery protection for every browser route.
//!
//! The CSRF token is an HMAC, under a server secret generated at first start
//! and kept in the database, of a cookie the browser holds but other sites
//! can neither read nor set: the session cookie once signed in, before that a
//! random "form" cookie this middleware hands out. Whoever manages to plant a
//! cookie still cannot compute the token that goes with it. Pages put it in
//! `<meta name="csrf-token">`, htmx and `fetch` send it as `X-CSRF-Token`,
//! plain forms as the `csrf_token` field. A state-changing request without
//! the right token, or with an `Origin` (or `Referer`) other than the public
//! URL's origin, gets 403 and reaches no handler.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::secret::Secret;
use super::session::{secure_cookie, session_cookie_name};
use crate::app::AppState;
use crate::config::Config;
use crate::store::{Db, StoreResult, server_secrets};

/// The server's key for CSRF tokens. Never printed.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    /// The key kept in the database, made on the first start of the first
    /// instance. A stored value that is not 64 hex digits (edited by hand)
    /// is hashed into a key rather than refused.
    pub async fn load(db: &Db) -> StoreResult<CsrfKey> {
        let stored = server_secrets::get_or_create(db, "csrf_key", || {
            use rand::TryRng;
            let mut bytes = [0u8; 32];
            // Without the OS RNG there is no safe key to make at all.
            rand::rngs::SysRng
                .try_fill_bytes(&mut bytes)
                .expect("the operating system's random number generator failed");
            hex::encode(bytes)
        })
        .await?;
        let mut key = [0u8; 32];
        match hex::decode(stored.trim()) {
            Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
            _ => key.copy_from_slice(&<Sha256 as sha2::Digest>::digest(stored.as_bytes())),
        }
        Ok(CsrfKey(key))
    }

    #[cfg(test)]
    fn from_bytes(key: [u8; 32]) -> CsrfKey {
        CsrfKey(key)
    }
}

/// The token for this request, for templates (`layout.csrf`).
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

fn form_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-keysmith_form"
    } else {
        "keysmith_form"
    }
}

fn derive(key: &CsrfKey, seed: &str) -> String {
    let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key.0) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(b"keysmith-csrf:");
    mac.update(seed.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Equal in time whatever the inputs share.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a state-changing request may come from where it says it does.
/// `Sec-Fetch-Site: cross-site` or `same-site` is refused outright. Then the
/// `Origin`, or without one the `Referer`, must be exactly the public URL's
/// origin: scheme, host and port (so `https://…` on an http deployment,
/// `http://x@host` or a sibling port are refused). `Origin: null` passes
/// only on a same-origin request: with `Referrer-Policy: no-referrer`
/// browsers send it even for our own forms, and `Sec-Fetch-Site` says
/// whether it really was ours. A request with neither header (old browsers,
/// scripts) still needs the CSRF token.
fn origin_allowed(config: &Config, request: &Request) -> bool {
    let headers = request.headers();
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return false;
    }
    let public = config.public_url.origin().ascii_serialization();
    if let Some(origin) = headers.get(header::ORIGIN) {
        return match origin.to_str() {
            Ok("null") => fetch_site == Some("same-origin"),
            Ok(origin) => origin == public,
            Err(_) => false,
        };
    }
    match headers.get(header::REFERER).map(|r| r.to_str()) {
        None => true,
        Some(Ok(referer)) => url::Url::parse(referer).is_ok_and(|r| {
            r.username().is_empty()
                && r.password().is_none()
                && r.origin().ascii_serialization() == public
        }),
        Some(Err(_)) => false,
    }
}

const FORM_LIMIT: usize = 64 * 1024;

pub async fn protect(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = &state.config;
    let jar = CookieJar::from_headers(request.headers());
    let session_seed = jar
        .get(session_cookie_name(config))
        .map(|c| c.value().to_string())
        .filter(|v| Secret::parse(v).is_some());
    let form_seed = jar
        .get(form_cookie_name(config))
        .map(|c| c.value().to_string())
        .filter(|v| Secret::parse(v).is_some());
    let signed_in_cookie = session_seed.is_some();
    let (seed, new_form_cookie) = match (session_seed, form_seed) {
        (Some(s), _) => (s, None),
        (None, Some(f)) => (f, None),
        (None, None) => {
            let fresh = Secret::generate().expose_secret().to_string();
            (fresh.clone(), Some(fresh))
        }
    };
    let expected = derive(&state.csrf_key, &seed);
    let htmx = request.headers().contains_key("hx-request");
    // The JSON routes refuse in JSON, like everything else they answer.
    let json = request.uri().path().starts_with("/api/");
    let mut request = request;

    // Browser routes act with the session. A bearer token is never a way in:
    // tokens cannot create or manage tokens (and answering 401 here, before
    // the CSRF check, tells a script exactly that).
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 7 && v[..7].eq_ignore_ascii_case("bearer "));
    if bearer {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "API tokens cannot create or manage API tokens. Use the settings page or a browser session."
            })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Cookie"));
        return r;
    }

    if changes_state(request.method()) {
        if !origin_allowed(config, &request) {
            return forbidden(
                htmx,
                json,
                "This request came from another site, so it was refused.",
            );
        }
        let from_header = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let presented = match from_header {
            Some(token) => Some(token),
            None if is_form(&request) => {
                let (parts, body) = request.into_parts();
                let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
                    let message = "The form is too large.";
                    if json {
                        return json_error(StatusCode::PAYLOAD_TOO_LARGE, message);
                    }
                    return (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
                };
                let token = form_urlencoded_field(&bytes, "csrf_token");
                request = Request::from_parts(parts, Body::from(bytes));
                token
            }
            None => None,
        };
        if !presented.as_deref().is_some_and(|t| same(t, &expected)) {
            // An htmx page sent a token but its session cookie is gone: the
            // person was signed out (elsewhere, or the cookie ran out).
            if htmx && !signed_in_cookie && presented.is_some_and(|t| !t.is_empty()) {
                return crate::web::pages::signed_out_fragment(request.headers());
            }
            return forbidden(
                htmx,
                json,
                "This form has expired or is missing its security token. Reload the page and try again.",
            );
        }
    }

    request.extensions_mut().insert(CsrfToken(expected));
    let mut response = next.run(request).await;
    if let Some(value) = new_form_cookie {
        let cookie = secure_cookie(config, form_cookie_name(config), value);
        if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

fn is_form(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A refusal in the session API's error shape (`{"error": "…"}`).
fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn forbidden(htmx: bool, json: bool, message: &str) -> Response {
    if json {
        return json_error(StatusCode::FORBIDDEN, message);
    }
    let body = if htmx {
        format!("<div class=\"alert alert-error\" role=\"alert\">{message}</div>")
    } else {
        crate::web::pages::simple_page("Request refused", message, Some(("/", "Back to Keysmith")))
    };
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tokens_differ_per_seed_and_per_key_and_hide_both() {
        let key = CsrfKey::from_bytes([7; 32]);
        let a = derive(&key, "seed-a");
        assert_ne!(a, derive(&key, "seed-b"));
        assert!(!a.contains("seed-a"));
        assert!(same(&a, &derive(&key, "seed-a")));
        assert!(!same(&a, &a[1..]));
        // Knowing the cookie is not enough: another key, another token, and
        // not the unkeyed hash either.
        assert_ne!(a, derive(&CsrfKey::from_bytes([8; 32]), "seed-a"));
        let unkeyed = hex::encode(<Sha256 as sha2::Digest>::digest(b"keysmith-csrf:seed-a"));
        assert_ne!(a, unkeyed);
    }

    fn config() -> Config {
        let vars = std::collections::HashMap::from([
            ("KEYSMITH_CONFIG".to_string(), "/dev/null".to_string()),
            (
                "KEYSMITH_PUBLIC_URL".to_string(),
                "http://keys.example.com:8080".to_string(),
            ),
        ]);
        Config::from_vars(&vars).unwrap()
    }

    fn post(pairs: &[(&str, &str)]) -> Request {
        let mut r = Request::builder().method("POST").uri("/signin");
        for (k, v) in pairs {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_the_public_origin_exactly_may_post() {
        let c = config();
        let host = ("host", "keys.example.com:8080");
        assert!(origin_allowed(
            &c,
            &post(&[host, ("origin", "http://keys.example.com:8080")])
        ));
        assert!(origin_allowed(&c, &post(&[host])), "no Origin, no Referer");
        for bad in [
            "https://keys.example.com:8080",
            "http://keys.example.com",
            "http://x@keys.example.com:8080",
            "http://keys.example.com:8080/path",
            "http://evil.example.com",
        ] {
            assert!(
                !origin_allowed(&c, &post(&[host, ("origin", bad)])),
                "{bad}"
            );
        }
        assert!(origin_allowed(
            &c,
            &post(&[
                host,
                (
                    "referer",
                    "http://keys.example.com:8080/settings/api-tokens"
                )
            ])
        ));
        for bad in [
            "https://keys.example.com:8080/",
            "http://u:p@keys.example.com:8080/",
            "http://evil.example.com/",
            "not a url",
        ] {
            assert!(
                !origin_allowed(&c, &post(&[host, ("referer", bad)])),
                "{bad}"
            );
        }
        assert!(origin_allowed(
            &c,
            &post(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")])
        ));
        assert!(!origin_allowed(&c, &post(&[host, ("origin", "null")])));
        assert!(!origin_allowed(
            &c,
            &post(&[
                host,
                ("origin", "http://keys.example.com:8080"),
                ("sec-fetch-site", "cross-site")
            ])
        ));
    }

    #[test]
    fn form_field_is_found_in_urlencoded_bodies() {
        assert_eq!(
            form_urlencoded_field(b"a=1&csrf_token=abc%3D&b=2", "csrf_token").as_deref(),
            Some("abc=")
        );
        assert_eq!(form_urlencoded_field(b"a=1", "csrf_token"), None);
    }
}
