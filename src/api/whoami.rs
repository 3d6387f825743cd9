//! `GET /api/v2/whoami`: who a bearer token belongs to and what it may do.
//! The first call a script or MCP client makes.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::bearer;
use crate::app::AppState;
use crate::request::ClientIp;
use crate::store::from_unix;
use crate::verify::{TokenInfo, Use};

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
    /// The display name the users table holds, or null when it has none.
    name: Option<&'a str>,
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
                name: info.display_name.as_deref(),
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

/// The JSON body for `info`: serialized on the token's first whoami, then
/// shared by every later one while the token stays cached.
fn body(info: &TokenInfo) -> Bytes {
    info.rendered
        .whoami
        .get_or_init(|| {
            // Serializing plain strings and numbers cannot fail.
            Bytes::from(serde_json::to_vec(&Whoami::of(info)).unwrap_or_default())
        })
        .clone()
}

#[tracing::instrument(name = "whoami", skip_all)]
pub async fn whoami(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    request: Request,
) -> Response {
    let used = Use {
        method: request.method().as_str(),
        path: request.uri().path(),
        ip,
        user_agent: bearer::user_agent(request.headers()),
    };
    let info = match bearer::authenticate(&state, request.headers(), used).await {
        Ok(info) => info,
        Err(e) => return e.into_response(),
    };
    let decision = match bearer::admit(&state, &info, used) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let mut response = body(&info).into_response();
    let h = response.headers_mut();
    // Room for these and the security headers added on the way out.
    h.reserve(12);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.extend(bearer::rate_limit_headers(&decision));
    h.extend(bearer::expires_header(&info));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
