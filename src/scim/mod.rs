//! SCIM 2.0 provisioning (RFC 7643/7644) under `/scim/v2`: an identity
//! provider creates, updates, deactivates and removes an organization's
//! members (`/Users`) and moves them in and out of the one group that
//! carries the token permission (`/Groups`, "Token holders"). It calls with
//! the organization's SCIM bearer secret ([`auth`]), never a personal token,
//! and outside the browser's CSRF protection.

pub mod auth;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod patch;
pub mod secrets;
pub mod users;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::store::scim as store;
use error::{CONTENT_TYPE, ScimError};

pub const PREFIX: &str = "/scim/v2";
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The most resources one list answers with.
pub const MAX_COUNT: i64 = 200;
/// A list without `count` answers with this many.
pub const DEFAULT_COUNT: i64 = 100;

/// The routes under [`PREFIX`]; unknown paths answer a SCIM 404.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ServiceProviderConfig",
            get(discovery::service_provider_config),
        )
        .route("/ResourceTypes", get(discovery::resource_types))
        .route("/ResourceTypes/{id}", get(discovery::resource_type))
        .route("/Schemas", get(discovery::schemas))
        .route("/Schemas/{id}", get(discovery::schema))
        .route("/.search", post(search))
        .route("/Users/.search", post(users::search))
        .route("/Groups/.search", post(groups::search))
        .route("/Users", get(users::list).post(users::create))
        .route(
            "/Users/{id}",
            get(users::get)
                .put(users::replace)
                .patch(users::patch)
                .delete(users::delete),
        )
        .route("/Groups", get(groups::list).post(groups::create))
        .route(
            "/Groups/{id}",
            get(groups::get)
                .put(groups::replace)
                .patch(groups::patch)
                .delete(groups::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ScimError {
    ScimError::not_found(
        "No such SCIM endpoint. Keysmith serves /Users, /Groups, /ServiceProviderConfig, /ResourceTypes and /Schemas under /scim/v2.",
    )
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "This endpoint does not take that method (bulk operations are not supported).",
    )
}

pub const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// A `SearchRequest` body (RFC 7644 §3.4.3) as the list's query parameters.
pub fn search_params(body: &serde_json::Map<String, Value>) -> Result<QueryParams, ScimError> {
    if let Some(schemas) = body.get("schemas")
        && !schemas
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(SEARCH_SCHEMA)))
    {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("A search body's schemas must be [\"{SEARCH_SCHEMA}\"]."),
        ));
    }
    let text = |name: &str| -> Result<Option<String>, ScimError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        ScimError::bad("invalidValue", format!("{name} must list attribute names."))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(v.join(","))),
            Some(_) => Err(ScimError::bad(
                "invalidValue",
                format!("{name} has the wrong type."),
            )),
        }
    };
    Ok(QueryParams {
        filter: text("filter")?,
        start_index: text("startIndex")?,
        count: text("count")?,
        attributes: text("attributes")?,
        excluded_attributes: text("excludedAttributes")?,
    })
}

/// `POST /.search` at the root: Users, then the group, as one list. A
/// filter applies to the resource types that have its attribute.
async fn search(
    State(state): State<AppState>,
    caller: auth::ScimCaller,
    body: Bytes,
) -> Result<Response, ScimError> {
    let q = search_params(&json_body(&body)?)?;
    let page = q.page()?;
    let projection = q.projection()?;
    let (user_match, group_match) = match &q.filter {
        None => (Some(store::UserMatch::All), true),
        Some(raw) => {
            let f = filter::parse(raw)?;
            let (u, g) = (users::user_match(&f), groups::group_matches(&f));
            if u.is_none() && g.is_none() {
                return Err(ScimError::bad(
                    "invalidFilter",
                    format!(
                        "Neither Users nor Groups can be filtered on \"{}\".",
                        f.attribute
                    ),
                ));
            }
            (u, g.unwrap_or(false))
        }
    };
    let org = caller.organization_id;
    let (user_total, mut resources) = match &user_match {
        Some(m) => users::page_of(&state, org, m, page, &projection).await?,
        None => (0, Vec::new()),
    };
    let total = user_total + i64::from(group_match);
    // The group comes after the last user.
    if group_match && page.offset <= user_total && (resources.len() as i64) < page.count {
        resources.push(groups::projected(&state, org, &q, &projection).await?);
    }
    Ok(list_response(total, page, resources))
}

/// A SCIM resource or message as `application/scim+json`.
pub fn respond(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `201 Created` with the resource and its `Location`.
pub fn created(body: &Value) -> Response {
    let mut response = respond(StatusCode::CREATED, body);
    if let Some(loc) = body["meta"]["location"].as_str()
        && let Ok(v) = HeaderValue::from_str(loc)
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A request body: a JSON object, or `invalidSyntax` saying what is wrong.
pub fn json_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ScimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ScimError::bad(
            "invalidSyntax",
            "The body must be a JSON object.",
        )),
        Err(e) => Err(ScimError::bad(
            "invalidSyntax",
            format!("The body is not valid JSON ({e})."),
        )),
    }
}

/// The query parameters every list and read takes.
#[derive(Debug, Default, Deserialize)]
pub struct QueryParams {
    pub filter: Option<String>,
    #[serde(rename = "startIndex")]
    pub start_index: Option<String>,
    pub count: Option<String>,
    pub attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    pub excluded_attributes: Option<String>,
}

/// Where a list page starts (0-based offset) and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: i64,
    pub count: i64,
}

impl QueryParams {
    /// `startIndex` is 1-based (below 1 counts as 1); `count` is capped at
    /// [`MAX_COUNT`] (negative counts as 0), as RFC 7644 §3.4.2.4 says.
    pub fn page(&self) -> Result<Page, ScimError> {
        let int = |name: &str, raw: &Option<String>, default: i64| match raw {
            None => Ok(default),
            Some(v) => v.trim().parse::<i64>().map_err(|_| {
                ScimError::bad(
                    "invalidValue",
                    format!("{name} must be an integer (got \"{v}\")."),
                )
            }),
        };
        let start = int("startIndex", &self.start_index, 1)?.max(1);
        let count = int("count", &self.count, DEFAULT_COUNT)?.clamp(0, MAX_COUNT);
        Ok(Page {
            offset: start - 1,
            count,
        })
    }

    pub fn projection(&self) -> Result<Projection, ScimError> {
        let names = |raw: &Option<String>| -> Vec<String> {
            raw.as_deref()
                .unwrap_or("")
                .split(',')
                .map(filter::attribute_name)
                .map(|a| a.split('.').next().unwrap_or("").to_string())
                .filter(|a| !a.is_empty())
                .collect()
        };
        let include = names(&self.attributes);
        let exclude = names(&self.excluded_attributes);
        if !include.is_empty() && !exclude.is_empty() {
            return Err(ScimError::bad(
                "invalidSyntax",
                "attributes and excludedAttributes cannot be used together.",
            ));
        }
        Ok(Projection { include, exclude })
    }
}

/// `attributes` / `excludedAttributes`: which top-level attributes a
/// response carries. `id` and `schemas` are always returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Projection {
    pub fn apply(&self, resource: Value) -> Value {
        let Value::Object(map) = resource else {
            return resource;
        };
        let always = |k: &str| k == "id" || k == "schemas";
        let kept = map
            .into_iter()
            .filter(|(k, _)| {
                let lower = k.to_ascii_lowercase();
                if always(&lower) {
                    true
                } else if !self.include.is_empty() {
                    self.include.contains(&lower)
                } else {
                    !self.exclude.contains(&lower)
                }
            })
            .collect();
        Value::Object(kept)
    }
}

/// A list response of already-projected resources.
pub fn list_response(total: i64, page: Page, resources: Vec<Value>) -> Response {
    respond(
        StatusCode::OK,
        &serde_json::json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": page.offset + 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

/// RFC 3339 for `meta.created` / `meta.lastModified`.
pub fn timestamp(unix: i64) -> String {
    crate::store::from_unix(unix)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The absolute URL of a resource, from the public URL.
pub fn location(state: &AppState, path: &str) -> String {
    let base = state.config.public_url.as_str().trim_end_matches('/');
    format!("{base}{PREFIX}{path}")
}

/// A JSON value as a boolean, also from the strings "true"/"false" (some
/// providers send those).
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(start: Option<&str>, count: Option<&str>) -> QueryParams {
        QueryParams {
            start_index: start.map(str::to_string),
            count: count.map(str::to_string),
            ..QueryParams::default()
        }
    }

    #[test]
    fn pages_follow_rfc_7644() {
        assert_eq!(
            params(None, None).page().unwrap(),
            Page {
                offset: 0,
                count: DEFAULT_COUNT
            }
        );
        assert_eq!(
            params(Some("0"), Some("-3")).page().unwrap(),
            Page {
                offset: 0,
                count: 0
            }
        );
        assert_eq!(
            params(Some("11"), Some("5000")).page().unwrap(),
            Page {
                offset: 10,
                count: MAX_COUNT
            }
        );
        assert_eq!(
            params(Some("x"), None).page().unwrap_err().scim_type,
            Some("invalidValue")
        );
    }

    #[test]
    fn projection_keeps_id_and_schemas() {
        let r = serde_json::json!({"schemas": [], "id": "1", "userName": "a", "displayName": "b"});
        let p = QueryParams {
            attributes: Some("urn:ietf:params:scim:schemas:core:2.0:User:displayName".into()),
            ..QueryParams::default()
        }
        .projection()
        .unwrap();
        assert_eq!(
            p.apply(r.clone()),
            serde_json::json!({"schemas": [], "id": "1", "displayName": "b"})
        );
        let p = QueryParams {
            excluded_attributes: Some("displayName,id".into()),
            ..QueryParams::default()
        }
        .projection()
        .unwrap();
        assert_eq!(
            p.apply(r),
            serde_json::json!({"schemas": [], "id": "1", "userName": "a"})
        );
    }
}
