//! `POST /oauth/introspect` (RFC 7662): a resource server asks whether a
//! token is active. Clients authenticate with HTTP Basic using the
//! `client_id:secret` pairs of `KEYSMITH_INTROSPECTION_CREDENTIALS`,
//! compared in constant time. Anything not active — unknown, malformed,
//! expired, revoked, disabled — answers exactly `{"active":false}`.
//!
//! Introspection neither counts against a token's rate limit nor records a
//! last use: the resource server's own request is not a use of the token
//! that Keysmith can describe (no method or path).

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::config::IntrospectionClient;
use crate::token::PlainToken;
use crate::verify::{Unavailable, Verdict};

#[derive(Debug, Deserialize)]
pub struct IntrospectForm {
    token: Option<String>,
    /// Accepted and ignored: there is one kind of token.
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Whether the request's Basic credentials name a configured client.
/// Every client is compared, in constant time, whatever matches.
fn client_is_known(headers: &HeaderMap, clients: &[IntrospectionClient]) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, encoded)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    // Hashing first makes the comparison independent of the lengths too.
    let (id, secret) = (Sha256::digest(id), Sha256::digest(secret));
    let mut known = subtle::Choice::from(0);
    for client in clients {
        let id_ok = Sha256::digest(client.client_id.as_bytes()).ct_eq(&id);
        let secret_ok = Sha256::digest(client.secret().as_bytes()).ct_eq(&secret);
        known |= id_ok & secret_ok;
    }
    known.into()
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn answer(body: Value) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[tracing::instrument(name = "introspect", skip_all)]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<IntrospectForm>, FormRejection>,
) -> Response {
    if !client_is_known(&headers, &state.config.introspection_clients) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Introspection needs HTTP Basic credentials of a configured client.",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keysmith\""),
        );
        return r;
    }
    let token = match form {
        Ok(Form(IntrospectForm {
            token: Some(token), ..
        })) if !token.trim().is_empty() => token,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Send the token as a form field: token=…",
            );
        }
    };
    let Ok(digest) = PlainToken::digest_of_presented(&state.config.token_prefix, token.trim())
    else {
        return answer(json!({ "active": false }));
    };
    let info = match state.verifier.verify_digest(digest).await {
        Ok(Verdict::Active(info)) => info,
        Ok(Verdict::Inactive) => return answer(json!({ "active": false })),
        Err(Unavailable) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The token store is not answering; try again shortly.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return r;
        }
    };
    let mut body = json!({
        "active": true,
        "scope": &*info.scopes_str,
        "sub": info.user_id.to_string(),
        "username": info.email,
        "iat": info.created_at,
        "token_type": "Bearer",
        "token_id": info.token_id,
        "organization_id": info.organization_id,
        "organization": info.organization_name,
        "projects": info.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
    });
    if let Some(exp) = info.expires_at {
        body["exp"] = json!(exp);
    }
    answer(body)
}

/// `GET` (or any method but POST) on the introspection endpoint.
pub async fn method_not_allowed() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "Introspection takes a POST with a form body.",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Vec<IntrospectionClient> {
        let mut vars = std::collections::HashMap::new();
        vars.insert("KEYSMITH_CONFIG".to_string(), "/dev/null".to_string());
        vars.insert(
            "KEYSMITH_INTROSPECTION_CREDENTIALS".to_string(),
            "gw:0123456789abcdef,api:fedcba9876543210".to_string(),
        );
        crate::config::Config::from_vars(&vars)
            .unwrap()
            .introspection_clients
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        );
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_a_configured_pair_is_accepted() {
        let c = clients();
        assert!(client_is_known(&basic("gw:0123456789abcdef"), &c));
        assert!(client_is_known(&basic("api:fedcba9876543210"), &c));
        assert!(!client_is_known(&basic("gw:fedcba9876543210"), &c));
        assert!(!client_is_known(&basic("gw:0123456789abcde"), &c));
        assert!(!client_is_known(&basic("gw"), &c));
        assert!(!client_is_known(&HeaderMap::new(), &c));
        assert!(!client_is_known(&basic("gw:0123456789abcdef"), &[]));
    }
}
