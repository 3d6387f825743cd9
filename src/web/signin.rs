//! Signing in by email link, and signing out.
//!
//! `/signin` answers the same "check your inbox" page whether or not the
//! address is known, after the same minimum time. The emailed link opens a
//! page with a button (mail scanners follow GET links, so GET changes
//! nothing); the POST uses the link up atomically and starts a session.

use std::time::{Duration, Instant};

use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::secret::Secret;
use crate::auth::session::{
    current_session, removal_cookie, safe_next, session_cookie_name, start_session,
};
use crate::domain::EmailAddress;
use crate::mail::{self, Mail};
use crate::request::ClientIp;
use crate::store::links::{self, LinkKind, LinkState};
use crate::store::{StoreError, orgs, sessions};
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, message_response, no_store};

/// Every sign-in request takes at least this long, known address or not, so
/// response time does not tell whether an account exists.
const SIGNIN_MIN_DURATION: Duration = Duration::from_millis(350);

pub const HOME: &str = "/settings/api-tokens";

#[derive(Template)]
#[template(path = "pages/signin.html")]
struct SignInPage {
    layout: Layout,
    email: String,
    next: String,
    error: Option<String>,
    rate_limited: Option<String>,
    /// "Sign in with …", when an OpenID Connect provider is configured.
    sso_label: Option<String>,
    /// The email-link form is offered.
    email_signin: bool,
}

#[derive(Template)]
#[template(path = "pages/signin_sent.html")]
struct SignInSentPage {
    layout: Layout,
    email: String,
}

#[derive(Template)]
#[template(path = "pages/signin_link.html")]
struct SignInLinkPage {
    layout: Layout,
    email: String,
    action: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn signin_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> PageResult {
    let next = safe_next(q.next.as_deref()).unwrap_or_else(|| HOME.into());
    if current_session(&state, &jar).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    let page = SignInPage {
        layout: Layout::anonymous(&csrf.0, state.dev_mail_enabled()),
        email: String::new(),
        next,
        error: None,
        rate_limited: None,
        sso_label: crate::web::oidc::button_label(&state),
        email_signin: state.config.email_signin,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn request_link(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    ClientIp(ip): ClientIp,
    Form(form): Form<SignInForm>,
) -> PageResult {
    let started = Instant::now();
    let next = safe_next(form.next.as_deref()).unwrap_or_else(|| HOME.into());
    let layout = || Layout::anonymous(&csrf.0, state.dev_mail_enabled());
    if !state.config.email_signin {
        return Ok(email_signin_off(&state, &csrf.0));
    }
    let email = match EmailAddress::parse(&form.email) {
        Ok(email) => email,
        Err(e) => {
            let page = SignInPage {
                layout: layout(),
                email: form.email.clone(),
                next,
                error: Some(e.0),
                rate_limited: None,
                sso_label: crate::web::oidc::button_label(&state),
                email_signin: state.config.email_signin,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page.render()?)).into_response());
        }
    };
    let now = state.clock.unix();
    let limited = state
        .throttles
        .signin_by_ip
        .hit(&crate::auth::throttle::network_key(ip), now)
        .and_then(|()| state.throttles.signin_by_email.hit(email.as_str(), now));
    if let Err(wait) = limited {
        let minutes = (wait + 59) / 60;
        let page = SignInPage {
            layout: layout(),
            email: email.to_string(),
            next,
            error: None,
            rate_limited: Some(format!(
                "Too many sign-in links were requested from here or for this address. Try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            )),
            sso_label: crate::web::oidc::button_label(&state),
            email_signin: state.config.email_signin,
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Html(page.render()?)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.into());
        return Ok(response);
    }

    let user = orgs::find_user_by_email(&state.db, &email).await?;
    let active = match &user {
        Some(u) => !orgs::active_memberships(&state.db, u.id).await?.is_empty(),
        None => false,
    };
    if active {
        let mut tx = state.db.begin().await?;
        mail::enqueue(
            &mut tx,
            email.as_str(),
            &Mail::SignIn { next: Some(next) },
            now,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        state.mail.wake();
    } else {
        tracing::info!("sign-in requested for an address without an active account");
    }
    if let Some(rest) = SIGNIN_MIN_DURATION.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let page = SignInSentPage {
        layout: layout(),
        email: email.to_string(),
    };
    Ok(Html(page.render()?).into_response())
}

/// Email-link sign-in is turned off (`KEYSMITH_EMAIL_SIGNIN=false`).
fn email_signin_off(state: &AppState, csrf: &str) -> Response {
    let label = crate::web::oidc::button_label(state).unwrap_or_else(|| "Sign in".into());
    message_response(
        StatusCode::FORBIDDEN,
        Layout::anonymous(csrf, state.dev_mail_enabled()),
        "Email sign-in links are turned off",
        &format!(
            "This Keysmith signs people in through single sign-on. Use “{label}” on the sign-in page."
        ),
        Some(("/signin", "Back to sign-in")),
    )
}

fn link_problem(state: &AppState, csrf: &str, link: &LinkState) -> Response {
    let layout = Layout::anonymous(csrf, state.dev_mail_enabled());
    let (status, title, message) = match link {
        LinkState::Used => (
            StatusCode::GONE,
            "This link was already used",
            "Sign-in links work once. Ask for a new one and use the newest email.",
        ),
        LinkState::Expired => (
            StatusCode::GONE,
            "This link has expired",
            "Sign-in links work for 10 minutes. Ask for a new one.",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "It may have been copied incompletely. Ask for a new one.",
        ),
    };
    message_response(
        status,
        layout,
        title,
        message,
        Some(("/signin", "Get a new sign-in link")),
    )
}

pub async fn link_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(raw): Path<String>,
) -> PageResult {
    let Some(secret) = Secret::parse(&raw) else {
        return Ok(link_problem(&state, &csrf.0, &LinkState::Unknown));
    };
    let mut conn = state.db.pool().acquire().await.map_err(StoreError::from)?;
    let link = links::inspect(
        &mut conn,
        LinkKind::SignIn,
        &secret.digest_hex(),
        state.clock.unix(),
    )
    .await?;
    drop(conn);
    let LinkState::Valid(record) = &link else {
        return Ok(link_problem(&state, &csrf.0, &link));
    };
    let email = match record.user_id {
        Some(id) => orgs::user_email(&state.db, id).await?.unwrap_or_default(),
        None => String::new(),
    };
    let page = SignInLinkPage {
        layout: Layout::anonymous(&csrf.0, state.dev_mail_enabled()),
        email,
        action: format!("/signin/link/{}", secret.expose_secret()),
    };
    Ok(no_store(Html(page.render()?).into_response()))
}

pub async fn use_link(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    Path(raw): Path<String>,
) -> PageResult {
    let Some(secret) = Secret::parse(&raw) else {
        return Ok(link_problem(&state, &csrf.0, &LinkState::Unknown));
    };
    let now = state.clock.unix();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let mut tx = state.db.begin().await?;
    let link = links::consume(&mut tx, LinkKind::SignIn, &secret.digest_hex(), now).await?;
    let LinkState::Valid(record) = &link else {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(link_problem(&state, &csrf.0, &link));
    };
    let Some(user_id) = record.user_id else {
        return Ok(link_problem(&state, &csrf.0, &LinkState::Unknown));
    };
    let memberships = orgs::active_memberships_in(&mut tx, user_id).await?;
    // With email links off only the superusers' break-glass link works.
    if !state.config.email_signin && !memberships.iter().any(|m| m.role == orgs::Role::Superuser) {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(email_signin_off(&state, &csrf.0));
    }
    let Some(first) = memberships.first() else {
        tx.commit().await.map_err(StoreError::from)?;
        return Ok(message_response(
            StatusCode::FORBIDDEN,
            Layout::anonymous(&csrf.0, state.dev_mail_enabled()),
            "Your access is disabled",
            "Your membership has been disabled. Ask an organization superuser to re-enable it.",
            None,
        ));
    };
    let cookie = start_session(
        &mut tx,
        &state.config,
        user_id,
        first.organization.id,
        &ip.to_string(),
        user_agent,
        sessions::SignInMethod::EmailLink,
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;

    // A session that was open in this browser ends: one person, one session.
    if let Some(old) = jar
        .get(session_cookie_name(&state.config))
        .and_then(|c| Secret::parse(c.value()))
    {
        sessions::delete_by_hash(&state.db, &old.digest_hex()).await?;
    }
    let next = safe_next(record.redirect_to.as_deref()).unwrap_or_else(|| HOME.into());
    Ok(no_store(
        (jar.add(cookie), Redirect::to(&next)).into_response(),
    ))
}

pub async fn signout(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
) -> PageResult {
    if let Some(who) = current_session(&state, &jar).await? {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        sessions::sign_out(&state.db, who.session_id, &ip.to_string(), user_agent).await?;
    }
    let jar = jar.add(removal_cookie(
        &state.config,
        session_cookie_name(&state.config),
    ));
    Ok((jar, Redirect::to("/signin")).into_response())
}
