//! Cross-site request forgery protection for every browser route.
//!
//! The CSRF token is derived from a cookie the browser holds but other sites
//! can neither read nor set: the session cookie once signed in, before that a
//! random "form" cookie this middleware hands out. Pages put the token in
//! `<meta name="csrf-token">`, htmx and `fetch` send it as `X-CSRF-Token`,
//! plain forms as the `csrf_token` field. A state-changing request without
//! the right token, or with an `Origin` of another site, gets 403 and
//! reaches no handler.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use sha2::{Digest, Sha256};

use super::secret::Secret;
use super::session::{secure_cookie, session_cookie_name};
use crate::app::AppState;
use crate::config::Config;

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

fn derive(seed: &str) -> String {
    hex::encode(Sha256::digest(format!("keysmith-csrf:{seed}").as_bytes()))
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
/// `Sec-Fetch-Site: cross-site` is refused outright. An `Origin` is fine when
/// absent (old browsers), when it is the public URL's origin or the Host we
/// were reached on, or when it is `null` on a same-origin request: with
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` even for our
/// own forms, and `Sec-Fetch-Site` says whether it really was ours.
fn origin_allowed(config: &Config, request: &Request) -> bool {
    let fetch_site = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return false;
    }
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin == "null" {
        return fetch_site == Some("same-origin");
    }
    let public = config.public_url.origin().ascii_serialization();
    if origin == public {
        return true;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (url::Url::parse(origin), host) {
        (Ok(o), Some(host)) => {
            let o_host = match o.port() {
                Some(p) => format!("{}:{p}", o.host_str().unwrap_or_default()),
                None => o.host_str().unwrap_or_default().to_string(),
            };
            o_host.eq_ignore_ascii_case(host)
        }
        _ => false,
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
    let (seed, new_form_cookie) = match (session_seed, form_seed) {
        (Some(s), _) => (s, None),
        (None, Some(f)) => (f, None),
        (None, None) => {
            let fresh = Secret::generate().expose_secret().to_string();
            (fresh.clone(), Some(fresh))
        }
    };
    let expected = derive(&seed);
    let htmx = request.headers().contains_key("hx-request");
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
                    return (StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.")
                        .into_response();
                };
                let token = form_urlencoded_field(&bytes, "csrf_token");
                request = Request::from_parts(parts, Body::from(bytes));
                token
            }
            None => None,
        };
        if !presented.is_some_and(|t| same(&t, &expected)) {
            return forbidden(
                htmx,
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

fn forbidden(htmx: bool, message: &str) -> Response {
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
    fn derived_tokens_differ_per_seed_and_hide_it() {
        let a = derive("seed-a");
        assert_ne!(a, derive("seed-b"));
        assert!(!a.contains("seed-a"));
        assert!(same(&a, &derive("seed-a")));
        assert!(!same(&a, &a[1..]));
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
