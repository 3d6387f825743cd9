//! Full-page responses shared by every area: the plain message page (used
//! for errors and outcomes), and `PageError`, which renders an `AppError` as
//! HTML for browsers.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::error::AppError;
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

/// An error from a page handler, shown as an HTML page.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let AppError::Internal(e) = &self.0 {
            tracing::error!(error = format!("{e:#}"), "page failed");
        }
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Something went wrong",
        };
        let html = simple_page(
            title,
            &self.0.public_message(),
            Some(("/settings/api-tokens", "Back to your tokens")),
        );
        (status, Html(html)).into_response()
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;
