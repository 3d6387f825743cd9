//! Full-page responses shared by every area: the plain message page (used
//! for outcomes), `PageError`, which renders an `AppError` as an HTML error
//! page in the site's frame (404, 403, 410, 500), the 404 for addresses
//! nothing is routed to, and the htmx answer for a session that ended.

use askama::Template;
use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::{current_session, safe_next, url_encode};
use crate::error::AppError;
use crate::store::team as store_team;
use crate::web::layout::Layout;

#[derive(Template)]
#[template(path = "pages/message.html")]
pub struct MessagePage<'a> {
    pub layout: Layout,
    pub title: &'a str,
    pub message: &'a str,
    pub action: Option<(&'a str, &'a str)>,
}

/// A complete page with a title, a message and an optional link, without
/// navigation. Rendering a fixed template of strings does not fail in
/// practice; if it ever did, the message is still returned as text.
pub fn simple_page(title: &str, message: &str, action: Option<(&str, &str)>) -> String {
    let page = MessagePage {
        layout: Layout::anonymous("", false),
        title,
        message,
        action,
    };
    page.render()
        .unwrap_or_else(|_| format!("{title}\n\n{message}\n"))
}

/// A message page with a status code and `Cache-Control: no-store`.
pub fn message_response(
    status: StatusCode,
    layout: Layout,
    title: &str,
    message: &str,
    action: Option<(&str, &str)>,
) -> Response {
    let page = MessagePage {
        layout,
        title,
        message,
        action,
    };
    match page.render() {
        Ok(html) => no_store((status, Html(html)).into_response()),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// Marks a response as never to be stored by any cache (pages that carry
/// a secret or show one).
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error from a page handler, shown as an HTML page. The handler does
/// not know who is looking; [`error_layout`] (around every browser route)
/// renders the page in the site's frame, with navigation when signed in.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

/// What an error page says; carried as a response extension from
/// [`PageError`] to [`error_layout`].
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub message: String,
}

impl ErrorInfo {
    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "Page not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::GONE => "This link is no longer valid",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Something went wrong",
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let AppError::Internal(e) = &self.0 {
            tracing::error!(error = format!("{e:#}"), "page failed");
        }
        let info = ErrorInfo {
            status,
            message: match &self.0 {
                AppError::NotFound => NOT_FOUND_MESSAGE.to_string(),
                other => other.public_message(),
            },
        };
        // Without the frame (a route outside the browser routes), the page
        // still says what happened.
        let html = simple_page(
            info.title(),
            &info.message,
            Some((HOME_PATH, "Back to your API tokens")),
        );
        let mut response = (status, Html(html)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let AppError::CannotWrite(reason) = &self.0 {
            response
                .extensions_mut()
                .insert(crate::web::health::CannotWriteMarker(reason));
        }
        response.extensions_mut().insert(info);
        response
    }
}

const HOME_PATH: &str = "/settings/api-tokens";
const NOT_FOUND_MESSAGE: &str =
    "There is nothing at this address. It may have been mistyped, or what was here was removed.";

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    title: &'a str,
    status: u16,
    message: &'a str,
    /// The superusers to ask (a 403 to someone signed in).
    ask: Vec<String>,
    org_name: String,
    signed_in: bool,
    /// Where "Sign in" returns to.
    next: String,
}

/// Renders an error as a full page in the site's frame: navigation when
/// someone is signed in, and on a 403 the organization's superusers to ask.
/// An htmx request gets the message as a fragment instead.
pub async fn render_error(
    state: &AppState,
    csrf: Option<&str>,
    headers: &HeaderMap,
    path_and_query: &str,
    info: &ErrorInfo,
) -> Response {
    if headers.contains_key("hx-request") {
        let html = format!(
            "<div class=\"alert alert-error\" role=\"alert\">{}</div>",
            askama::filters::escape(&info.message, askama::filters::Html)
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
        return no_store((info.status, Html(html)).into_response());
    }
    let jar = CookieJar::from_headers(headers);
    // A database that does not answer still gets a page, without the
    // personal parts (and without waiting for the pool once more).
    let who = if info.status == StatusCode::SERVICE_UNAVAILABLE {
        None
    } else {
        current_session(state, &jar).await.ok().flatten()
    };
    let csrf = csrf.unwrap_or("");
    let dev_mail = state.dev_mail_enabled();
    let mut ask = Vec::new();
    let mut org_name = String::new();
    let layout = match &who {
        Some(who) => {
            if info.status == StatusCode::FORBIDDEN {
                ask = store_team::superuser_emails(&state.db, who.organization_id())
                    .await
                    .unwrap_or_default();
                org_name = who.membership.organization.name.clone();
            }
            Layout::signed_in(csrf, dev_mail, who, "")
        }
        None => Layout::anonymous(csrf, dev_mail),
    };
    let page = ErrorPage {
        layout,
        title: info.title(),
        status: info.status.as_u16(),
        message: &info.message,
        ask,
        org_name,
        signed_in: who.is_some(),
        next: url_encode(path_and_query),
    };
    match page.render() {
        Ok(html) => no_store((info.status, Html(html)).into_response()),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// Middleware around the browser routes: an error answer from a handler
/// ([`PageError`]) is rendered again in the site's frame.
pub async fn error_layout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let csrf = request.extensions().get::<CsrfToken>().map(|t| t.0.clone());
    let headers = request.headers().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let response = next.run(request).await;
    let Some(info) = response.extensions().get::<ErrorInfo>().cloned() else {
        return response;
    };
    let mut page = render_error(&state, csrf.as_deref(), &headers, &path, &info).await;
    // What the handler's answer said beyond the message stays: when to
    // retry, and that the store could not write (for `/readyz`).
    if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
        page.headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    if let Some(marker) = response
        .extensions()
        .get::<crate::web::health::CannotWriteMarker>()
    {
        page.extensions_mut().insert(*marker);
    }
    page
}

/// Prefixes of the JSON and bearer APIs: their errors stay JSON.
const API_PREFIXES: &[&str] = &["/api/", "/auth/", "/oauth/", "/scim/", "/.well-known/"];

/// The answer for an address nothing is routed to: JSON under the APIs, a
/// 404 page in the site's frame everywhere else.
pub async fn not_found(
    State(state): State<AppState>,
    csrf: Option<Extension<CsrfToken>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if API_PREFIXES.iter().any(|p| uri.path().starts_with(p)) {
        return AppError::NotFound.into_response();
    }
    let info = ErrorInfo {
        status: StatusCode::NOT_FOUND,
        message: NOT_FOUND_MESSAGE.to_string(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    render_error(
        &state,
        csrf.as_ref().map(|c| c.0.0.as_str()),
        &headers,
        path,
        &info,
    )
    .await
}

/// The page for a path under `/static/` that holds no asset: a 404 page
/// without the personal parts (assets are served without a session).
pub fn asset_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(simple_page(
            "Page not found",
            NOT_FOUND_MESSAGE,
            Some((HOME_PATH, "Back to Keysmith")),
        )),
    )
        .into_response()
}

/// An htmx request whose session has ended: the message goes into the
/// page's live region (`#flash`), with a link to sign in and come back to
/// the page the person was on. A 401 that htmx is configured to swap.
pub fn signed_out_fragment(headers: &HeaderMap) -> Response {
    let next = current_page(headers).unwrap_or_else(|| HOME_PATH.to_string());
    signed_out_fragment_to(&next)
}

/// [`signed_out_fragment`], signing in back to `next` (a local path).
pub fn signed_out_fragment_to(next: &str) -> Response {
    let html = format!(
        "<div class=\"alert alert-warning\" role=\"alert\" id=\"signed-out\">You were signed out, so this was not done. \
         <a href=\"/signin?next={}\">Sign in again</a> to continue where you were.</div>",
        url_encode(next)
    );
    let mut response = (StatusCode::UNAUTHORIZED, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert("hx-retarget", HeaderValue::from_static("#flash"));
    h.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page an htmx request was made from (`HX-Current-URL`), as a local
/// path, when it is one.
pub fn current_page(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("hx-current-url")?.to_str().ok()?;
    let url = url::Url::parse(raw).ok()?;
    let mut local = url.path().to_string();
    if let Some(q) = url.query() {
        local.push('?');
        local.push_str(q);
    }
    safe_next(Some(&local))
}

pub type PageResult<T = Response> = Result<T, PageError>;
