//! `GET /api/v2/whoami`: who a bearer token belongs to and what it may do.
//! The first call a script or MCP client makes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::bearer;
use crate::app::AppState;
use crate::store::from_unix;
use crate::verify::TokenInfo;
use crate::verify::rate_limit::RequestClass;
use crate::web::client_ip::ClientIp;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Whoami<'a> {
    user: UserView<'a>,
    organization: OrganizationView<'a>,
    token: TokenView<'a>,
}

#[derive(Serialize)]
struct UserView<'a> {
    id: i64,
    email: &'a str,
}

#[derive(Serialize)]
struct OrganizationView<'a> {
    id: i64,
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView<'a> {
    id: i64,
    label: &'a str,
    token_prefix: &'a str,
    /// What the token may do: its granted scopes and everything they include.
    scopes: &'a crate::token::ScopeSet,
    /// Empty when the token is not restricted to projects.
    projects: Vec<ProjectView<'a>>,
    /// RFC 3339, or null for a token that does not expire.
    expires_at: Option<String>,
}

#[derive(Serialize)]
struct ProjectView<'a> {
    id: i64,
    name: &'a str,
}

impl<'a> Whoami<'a> {
    fn of(info: &'a TokenInfo) -> Self {
        Whoami {
            user: UserView {
                id: info.user_id,
                email: &info.email,
            },
            organization: OrganizationView {
                id: info.organization_id,
                name: &info.organization_name,
            },
            token: TokenView {
                id: info.token_id,
                label: &info.label,
                token_prefix: &info.display_prefix,
                scopes: &info.scopes,
                projects: info
                    .projects
                    .iter()
                    .map(|p| ProjectView {
                        id: p.id,
                        name: &p.name,
                    })
                    .collect(),
                expires_at: info
                    .expires_at
                    .and_then(|at| from_unix(at).format(&Rfc3339).ok()),
            },
        }
    }
}

#[tracing::instrument(name = "whoami", skip_all)]
pub async fn whoami(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let info = match bearer::authenticate(&state, &headers).await {
        Ok(info) => info,
        Err(e) => return e.into_response(),
    };
    let decision = match bearer::rate_limit(&state, &info, RequestClass::of_method(method.as_str()))
    {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    state
        .verifier
        .record_use(&info, method.as_str(), uri.path(), ip);
    let mut response = Json(Whoami::of(&info)).into_response();
    let h = response.headers_mut();
    h.extend(bearer::rate_limit_headers(&decision));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
