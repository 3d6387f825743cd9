//! `/dev/mail`: the development mailbox, listing the messages written to the
//! outbox folder when no SMTP server is configured. It holds working sign-in
//! links, so it is served only to a request straight from this machine (a
//! loopback peer, no proxy's forwarding headers, a loopback `Host`), and not
//! at all once SMTP is configured. Anything else is a 404, as if it did not
//! exist: behind a same-host reverse proxy every visitor's peer is loopback.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse};

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::config::MailTransport;
use crate::error::AppError;
use crate::mail::transport::{DevMailMeta, list_dev_mail};
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, no_store};

#[derive(Template)]
#[template(path = "pages/dev_mail.html")]
struct DevMailPage {
    layout: Layout,
    dir: String,
    messages: Vec<DevMailMeta>,
}

pub async fn dev_mail(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    parts: Parts,
) -> PageResult {
    let MailTransport::DevOutbox(dir) = &state.config.mail else {
        return Err(AppError::NotFound.into());
    };
    if !crate::request::is_direct_from_loopback(&parts) {
        return Err(AppError::NotFound.into());
    }
    let page = DevMailPage {
        layout: Layout::anonymous(&csrf.0, true),
        dir: dir.display().to_string(),
        messages: list_dev_mail(dir).await,
    };
    Ok(no_store(Html(page.render()?).into_response()))
}
