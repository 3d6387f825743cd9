//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the JSON and
//! bearer API, generated (utoipa) from the handlers' `#[utoipa::path]`
//! annotations and the types they serialize and parse. The parts that
//! depend on the deployment (the session cookie's name, the scope
//! catalogue) are filled in from its configuration.
//!
//! Tests validate the document (openapi-spec-validator), check that every
//! JSON and bearer route the router serves is in it, and run schemathesis
//! against the live server: no 5xx, every response as documented.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{api_keys, introspect, metadata, rotate, secret_scanning, verify, whoami};
use crate::app::AppState;
use crate::auth::session::session_cookie_name;

pub const PATH: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keysmith",
        description = "Personal API tokens: the JSON API of the browser session (`/api/user/api-keys`), \
            the bearer side (whoami, self-rotation, forward auth, RFC 7662 introspection) and \
            leaked-token reports. Session routes need the session cookie, and the CSRF token of a \
            page (`<meta name=\"csrf-token\">`) as `X-CSRF-Token` for anything but GET; they refuse \
            any `Authorization` header (tokens cannot manage tokens).",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        api_keys::list,
        api_keys::create,
        api_keys::update,
        api_keys::revoke,
        rotate::regenerate,
        rotate::self_rotate,
        whoami::whoami,
        verify::verify,
        introspect::introspect,
        metadata::metadata,
        secret_scanning::reports,
        document,
    ),
    tags(
        (name = "session", description = "The JSON twin of the settings page, for a signed-in browser."),
        (name = "bearer", description = "What scripts and gateways call with a token."),
        (name = "secret-scanning", description = "Leaked-token reports (GitHub's partner format)."),
        (name = "meta", description = "This document."),
    ),
)]
struct ApiDoc;

/// This document, as JSON.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object)),
)]
pub async fn document(State(state): State<AppState>) -> Response {
    let mut r = Json(openapi(&state)).into_response();
    // It changes only with the configuration and the version.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// The document for this deployment.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let config = &state.config;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            session_cookie_name(config),
            "The browser session's cookie, set by signing in (`/signin`).",
        ))),
    );
    components.add_security_scheme(
        "csrf",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The CSRF token of a page of the same session (`<meta name=\"csrf-token\">`).",
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(format!(
                    "A Keysmith token, `{}_…`, as `Authorization: Bearer <token>` (RFC 6750). \
                     Never in the query string.",
                    config.token_prefix
                )))
                .build(),
        ),
    );
    components.add_security_scheme(
        "introspection_client",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "A client of `KEYSMITH_INTROSPECTION_CREDENTIALS` (`client_id:secret`), raw or \
                     form-urlencoded (RFC 6749 §2.3.1).",
                ))
                .build(),
        ),
    );
    scope_catalogue(&mut doc, state);
    every_verify_method(&mut doc);
    head_twins(&mut doc);
    doc
}

/// The scope names a request may ask for are the deployment's catalogue.
fn scope_catalogue(doc: &mut utoipa::openapi::OpenApi, state: &AppState) {
    let names: Vec<serde_json::Value> = state
        .config
        .scopes
        .names()
        .map(|s| serde_json::Value::from(s.as_str()))
        .collect();
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for schema in ["CreateApiKey"] {
        let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object))) =
            components.schemas.get_mut(schema)
        else {
            continue;
        };
        let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Array(scopes))) =
            object.properties.get_mut("scopes")
        else {
            continue;
        };
        if let utoipa::openapi::schema::ArrayItems::RefOrSchema(items) = &mut scopes.items
            && let utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(item)) = items.as_mut()
        {
            item.enum_values = Some(names.clone());
        }
    }
}

/// `/auth/verify` answers each of [`verify::METHODS`]: the GET operation
/// is repeated for the others, each with an operation id of its own.
fn every_verify_method(doc: &mut utoipa::openapi::OpenApi) {
    let Some(item) = doc.paths.paths.get_mut("/auth/verify") else {
        return;
    };
    let Some(get) = item.get.clone() else {
        return;
    };
    // HEAD is added with every other GET (below).
    for method in verify::METHODS
        .iter()
        .filter(|m| **m != Method::GET && **m != Method::HEAD)
    {
        let Some(http_method) = http_method(method) else {
            continue;
        };
        let mut operation: Operation = get.clone();
        let name = method.as_str();
        operation.operation_id = Some(format!(
            "verify{}{}",
            &name[..1],
            name[1..].to_ascii_lowercase()
        ));
        let mut single = PathItem::new(http_method, operation);
        single.parameters = None;
        merge(item, single);
    }
}

/// axum answers HEAD wherever it answers GET: each GET operation has a
/// HEAD twin, with the same headers and no body.
fn head_twins(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let Some(get) = &item.get else {
            continue;
        };
        if item.head.is_some() {
            continue;
        }
        let mut head = get.clone();
        head.operation_id = get.operation_id.as_ref().map(|id| format!("{id}Head"));
        for response in head.responses.responses.values_mut() {
            if let utoipa::openapi::RefOr::T(r) = response {
                r.content.clear();
            }
        }
        item.head = Some(head);
    }
}

fn http_method(method: &Method) -> Option<HttpMethod> {
    Some(match *method {
        Method::GET => HttpMethod::Get,
        Method::HEAD => HttpMethod::Head,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => return None,
    })
}

fn merge(into: &mut PathItem, from: PathItem) {
    into.head = into.head.take().or(from.head);
    into.post = into.post.take().or(from.post);
    into.put = into.put.take().or(from.put);
    into.patch = into.patch.take().or(from.patch);
    into.delete = into.delete.take().or(from.delete);
    into.options = into.options.take().or(from.options);
    into.trace = into.trace.take().or(from.trace);
}
