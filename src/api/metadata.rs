//! `GET /.well-known/oauth-authorization-server` (RFC 8414): tells OAuth
//! client libraries where introspection lives and how to authenticate to
//! it, so a resource server can be configured with the issuer alone.
//!
//! Keysmith issues tokens through its own pages, not through OAuth: it has
//! no authorization endpoint and no token endpoint, only introspection. The
//! document says exactly that (see [`metadata`] for the two fields where
//! RFC 8414 assumes more).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// The path of the document for an issuer without a path component. For an
/// issuer with one (`https://example.com/keys`), RFC 8414 §3.1 puts it at
/// `/.well-known/oauth-authorization-server/keys`; the proxy that strips
/// `/keys` maps that URL here (README).
pub const PATH: &str = "/.well-known/oauth-authorization-server";

/// The document's members (RFC 8414 §2).
#[derive(Serialize, ToSchema)]
#[schema(as = OAuthMetadata)]
pub struct Metadata<'a> {
    pub issuer: &'a str,
    pub introspection_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: &'a [&'a str],
    /// Empty: Keysmith has no authorization endpoint.
    pub response_types_supported: &'a [&'a str],
    /// Empty: Keysmith has no token endpoint.
    pub grant_types_supported: &'a [&'a str],
    /// The scope values introspection answers with (`scope`).
    pub scopes_supported: Vec<&'a str>,
}

/// The metadata document. `issuer` is `KEYSMITH_PUBLIC_URL` without its
/// trailing slash: clients compare it with the issuer they were given
/// (RFC 8414 §3.3, "identical"), and an issuer is conventionally written
/// without one (`https://keys.example.com`, §2's examples).
///
/// `response_types_supported` is REQUIRED by §2, yet Keysmith supports no
/// response type; §3.2 wants zero-element claims omitted, and erratum 7793
/// (reported 2024) proposes requiring the field only of servers with an
/// authorization endpoint. The two rules cannot both be kept here. Omitting
/// it would make the document look like it had forgotten a required field,
/// and omitting `grant_types_supported` would mean its default,
/// `["authorization_code", "implicit"]`: both would claim more than is
/// true. So both are present and empty: "none", said explicitly. The
/// client libraries tested against this (openid-client 6, Authlib) accept
/// that. `token_endpoint` (required "unless only the implicit grant type is
/// supported") is absent: there is no endpoint to name.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    operation_id = "oauthMetadata",
    tag = "bearer",
    summary = "RFC 8414 authorization server metadata: where introspection is",
    responses((status = 200, description = "The metadata document.", body = Metadata)),
)]
#[tracing::instrument(name = "oauth_metadata", skip_all)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = state.config.public_url.as_str().trim_end_matches('/');
    let mut r = Json(Metadata {
        issuer,
        introspection_endpoint: state.config.public_link("/oauth/introspect"),
        introspection_endpoint_auth_methods_supported: &["client_secret_basic"],
        response_types_supported: &[],
        grant_types_supported: &[],
        scopes_supported: state.config.scopes.names().map(|s| s.as_str()).collect(),
    })
    .into_response();
    // The document changes only with the configuration; a client or cache
    // may keep it a few minutes.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
