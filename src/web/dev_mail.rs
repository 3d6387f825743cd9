//! `/dev/mail`: the development mailbox, listing the messages written to the
//! outbox folder when no SMTP server is configured. It holds working sign-in
//! links, so it is served only to clients on this machine, and not at all
//! once SMTP is configured.

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, State};
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> PageResult {
    let MailTransport::DevOutbox(dir) = &state.config.mail else {
        return Err(AppError::NotFound.into());
    };
    if !peer.ip().is_loopback() {
        return Err(AppError::NotFound.into());
    }
    let page = DevMailPage {
        layout: Layout::anonymous(&csrf.0, true),
        dir: dir.display().to_string(),
        messages: list_dev_mail(dir).await,
    };
    Ok(no_store(Html(page.render()?).into_response()))
}
