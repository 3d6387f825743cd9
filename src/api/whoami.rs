//! `GET /api/v2/whoami`: who a bearer token belongs to and what it may do.
//! The first call a script or MCP client makes.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::bearer::{self, BearerErrorBody};
use crate::app::AppState;
use crate::request::ClientIp;
use crate::store::from_unix;
use crate::verify::{TokenInfo, Use};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Whoami)]
pub struct Whoami<'a> {
    user: UserView<'a>,
    organization: OrganizationView<'a>,
    token: TokenView<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WhoamiUser)]
struct UserView<'a> {
    id: i64,
    email: &'a str,
    /// The display name the users table holds, or null when it has none.
    name: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WhoamiOrganization)]
struct OrganizationView<'a> {
    id: i64,
    name: &'a str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WhoamiToken)]
struct TokenView<'a> {
    id: i64,
    label: &'a str,
    token_prefix: &'a str,
    /// What the token may do: its granted scopes and everything they include.
    #[schema(value_type = Vec<String>)]
    scopes: &'a crate::token::ScopeSet,
    /// Empty when the token is not restricted to projects.
    projects: Vec<ProjectView<'a>>,
    /// RFC 3339, or null for a token that does not expire.
    expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WhoamiProject)]
struct ProjectView<'a> {
    id: i64,
    name: &'a str,
}

impl<'a> Whoami<'a> {
    fn of(info: &'a TokenInfo) -> Self {
        Whoami {
            user: UserView {
                id: info.user_id,
                email: info.email(),
                name: info.display_name(),
            },
            organization: OrganizationView {
                id: info.organization_id,
                name: info.organization_name(),
            },
            token: TokenView {
                id: info.token_id,
                label: info.label(),
                token_prefix: info.display_prefix(),
                scopes: info.scopes(),
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

/// The JSON body for `info`, in one allocation sized for it.
fn body(info: &TokenInfo) -> Bytes {
    let mut out = Vec::with_capacity(WHOAMI_FIXED + info.text_len());
    // Serializing plain strings and numbers into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, &Whoami::of(info));
    Bytes::from(out)
}

/// About what a whoami body takes besides the token's text: the keys,
/// numbers and scopes, so most bodies fit without growing the buffer.
const WHOAMI_FIXED: usize = 256;

#[utoipa::path(
    get,
    path = "/api/v2/whoami",
    operation_id = "whoami",
    tag = "bearer",
    summary = "Who the bearer token belongs to and what it may do",
    responses(
        (status = 200, description = "The token's owner, organization and powers.", body = Whoami, headers(
            ("ratelimit-policy" = String, description = "The token's read budget (IETF ratelimit-headers draft)."),
            ("ratelimit" = String, description = "What is left of it."),
            ("keysmith-token-expires" = String, description = "RFC 3339, UTC: when the presented secret stops working; only for a token that expires."),
        )),
        (status = 400, description = "The Authorization header is malformed or repeated (`invalid_request`).", body = BearerErrorBody),
        (status = 401, description = "No bearer token, or one that cannot be used (`invalid_token`).", body = BearerErrorBody),
        (status = 429, description = "The token's read budget is spent.", body = BearerErrorBody, headers(("retry-after" = i64, description = "Seconds to wait."))),
        (status = 503, description = "The token store is not answering.", body = BearerErrorBody),
    ),
    security(("bearer" = [])),
)]
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
    let decision = match bearer::admit(&state, &info, used).await {
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
