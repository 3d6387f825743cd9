//! `/tokens/revoke/{secret}`: the "Wasn't you? Revoke this token" link from
//! a token-created email. The link is the credential (no sign-in). GET names
//! the token and shows a button; only the POST revokes.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::secret::Secret;
use crate::mail::notices::{describe_agent, mail_time};
use crate::request::RequestMeta;
use crate::service::tokens::{LinkRevocation, inspect_revoke_link, revoke_by_link};
use crate::store::orgs;
use crate::store::tokens::TokenRecord;
use crate::web::format::iso;
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, no_store};

pub struct TokenFacts {
    pub label: String,
    pub prefix: String,
    pub org: String,
    pub created: String,
    pub created_iso: String,
    pub created_ip: Option<String>,
    pub created_agent: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/revoke_link.html")]
struct RevokeLinkPage {
    layout: Layout,
    title: &'static str,
    message: String,
    token: Option<TokenFacts>,
    action: Option<String>,
}

async fn facts(state: &AppState, t: &TokenRecord) -> Result<TokenFacts, crate::store::StoreError> {
    Ok(TokenFacts {
        label: t.label.clone(),
        prefix: t.display_prefix.clone(),
        org: orgs::organization_name(&state.db, t.organization_id)
            .await?
            .unwrap_or_default(),
        created: mail_time(t.created_at),
        created_iso: iso(t.created_at),
        created_ip: t.created_ip.clone(),
        created_agent: t
            .created_user_agent
            .as_deref()
            .map(|a| describe_agent(Some(a))),
    })
}

async fn render(
    state: &AppState,
    csrf: &str,
    outcome: LinkRevocation,
    action: Option<String>,
) -> PageResult {
    let (status, title, message, token) = match &outcome {
        LinkRevocation::Ready(t) => (
            StatusCode::OK,
            "Revoke this API token?",
            "If you did not create this token, revoke it: it stops working at once, for good.".to_string(),
            Some(t),
        ),
        LinkRevocation::Revoked(t) => (
            StatusCode::OK,
            "Token revoked",
            format!("“{}” no longer works. Its owner has been sent a confirmation.", t.label),
            Some(t),
        ),
        LinkRevocation::AlreadyRevoked(t) => (
            StatusCode::OK,
            "This token is already revoked",
            format!("“{}” was revoked earlier and no longer works. There is nothing more to do.", t.label),
            Some(t),
        ),
        LinkRevocation::LinkUsed => (
            StatusCode::GONE,
            "This link was already used",
            "Each revoke link works once. If the token still needs revoking, sign in and revoke it on your tokens page.".into(),
            None,
        ),
        LinkRevocation::LinkExpired => (
            StatusCode::GONE,
            "This link has expired",
            "Revoke links work for 7 days. Sign in to revoke the token on your tokens page.".into(),
            None,
        ),
        LinkRevocation::LinkUnknown => (
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "It may have been copied incompletely. Sign in to manage your tokens.".into(),
            None,
        ),
    };
    let token = match token {
        Some(t) => Some(facts(state, t).await?),
        None => None,
    };
    let action = matches!(outcome, LinkRevocation::Ready(_))
        .then_some(action)
        .flatten();
    let page = RevokeLinkPage {
        layout: Layout::anonymous(csrf, state.dev_mail_enabled()),
        title,
        message,
        token,
        action,
    };
    Ok(no_store((status, Html(page.render()?)).into_response()))
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(raw): Path<String>,
) -> PageResult {
    let Some(secret) = Secret::parse(&raw) else {
        return render(&state, &csrf.0, LinkRevocation::LinkUnknown, None).await;
    };
    let outcome = inspect_revoke_link(&state, &secret).await?;
    let action = format!("/tokens/revoke/{}", secret.expose_secret());
    render(&state, &csrf.0, outcome, Some(action)).await
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    meta: RequestMeta,
    Path(raw): Path<String>,
) -> PageResult {
    let Some(secret) = Secret::parse(&raw) else {
        return render(&state, &csrf.0, LinkRevocation::LinkUnknown, None).await;
    };
    let outcome = revoke_by_link(&state, &secret, &meta).await?;
    render(&state, &csrf.0, outcome, None).await
}
