//! Signing in with OpenID Connect: the button's POST sends the browser to
//! the provider; the provider sends it back to the callback, which checks
//! the answer (see `auth::oidc`), applies just-in-time membership and starts
//! a session. Every failure is a page that says what happened and what to
//! do, never a 500.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::oidc::{self, CallbackParams, LOGIN_TTL_SECONDS, Oidc, OidcError};
use crate::auth::secret::Secret;
use crate::auth::session::{
    removal_cookie, safe_next, secure_cookie, session_cookie_name, start_session,
};
use crate::config::Config;
use crate::request::ClientIp;
use crate::store::{StoreError, orgs, sessions};
use crate::verify::commit_and_invalidate;
use crate::web::layout::Layout;
use crate::web::pages::{PageError, PageResult, message_response, no_store};
use crate::web::signin::HOME;

/// The cookie that binds a sign-in at the provider to this browser.
fn login_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-keysmith_oidc"
    } else {
        "keysmith_oidc"
    }
}

/// Tries discovery once in the background at start-up, so a wrong issuer
/// shows in the log at once; the server starts either way (email links and
/// tokens keep working while the provider is down), and a sign-in attempt
/// then says on its page that the provider cannot be reached.
pub fn check_provider_at_start(oidc: Arc<Oidc>) {
    tokio::spawn(async move {
        match oidc.metadata(false).await {
            Ok(_) => tracing::info!(
                issuer = %oidc.settings().issuer,
                redirect_uri = oidc.redirect_uri(),
                "OpenID Connect provider discovered"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "OpenID Connect: the provider is not reachable yet; sign-in with it will fail until it is"
            ),
        }
    });
}

/// A GET link rather than a form: the page's `form-action 'self'` policy
/// would stop a form whose answer redirects to the provider. Starting a
/// sign-in changes nothing but this browser's own cookie and a record only
/// this browser can use.
#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

pub async fn start(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    Query(form): Query<StartQuery>,
) -> PageResult {
    let Some(oidc) = state.oidc.clone() else {
        return Ok(message_response(
            StatusCode::NOT_FOUND,
            layout(&state, &csrf),
            "Single sign-on is not set up",
            "This Keysmith has no OpenID Connect provider configured. Sign in with an email link instead.",
            Some(("/signin", "Back to sign-in")),
        ));
    };
    let next = safe_next(form.next.as_deref());
    match oidc
        .begin(&state.db, state.clock.unix(), next.as_deref())
        .await
    {
        Ok(begun) => {
            let mut cookie = secure_cookie(
                &state.config,
                login_cookie_name(&state.config),
                begun.browser_secret.expose_secret().to_string(),
            );
            cookie.set_max_age(Some(time::Duration::seconds(LOGIN_TTL_SECONDS)));
            Ok(no_store(
                (jar.add(cookie), Redirect::to(begun.authorize_url.as_str())).into_response(),
            ))
        }
        Err(e) => problem(&state, &csrf, e),
    }
}

/// Reads the callback's query by hand: the first value of each parameter
/// counts, and a malformed query is just missing parameters (a clear page,
/// not the extractor's plain-text 400).
fn callback_params(raw: Option<&str>) -> CallbackParams {
    let mut p = CallbackParams::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "state" => &mut p.state,
            "code" => &mut p.code,
            "error" => &mut p.error,
            "error_description" => &mut p.error_description,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    p
}

pub async fn callback(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    RawQuery(query): RawQuery,
) -> PageResult {
    let Some(oidc) = state.oidc.clone() else {
        return Ok(message_response(
            StatusCode::NOT_FOUND,
            layout(&state, &csrf),
            "Single sign-on is not set up",
            "This Keysmith has no OpenID Connect provider configured.",
            Some(("/signin", "Back to sign-in")),
        ));
    };
    let params = callback_params(query.as_deref());
    let browser = jar
        .get(login_cookie_name(&state.config))
        .and_then(|c| Secret::parse(c.value()));
    // The binding cookie has done its work whatever the outcome.
    let jar = jar.add(removal_cookie(
        &state.config,
        login_cookie_name(&state.config),
    ));
    let now = state.clock.unix();
    let verified = match oidc.finish(&state.db, now, &params, browser).await {
        Ok(v) => v,
        Err(e) => return problem(&state, &csrf, e).map(|r| (jar, r).into_response()),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let ip = ip.to_string();

    let mut tx = state.db.begin().await?;
    let provisioned =
        oidc::provision(&mut tx, oidc.settings(), &verified, &ip, user_agent, now).await?;
    let Some(user_id) = provisioned.user_id else {
        tx.rollback().await.map_err(StoreError::from)?;
        let e = OidcError::UnknownEmail(verified.email.to_string());
        return problem(&state, &csrf, e).map(|r| (jar, r).into_response());
    };
    let memberships = orgs::active_memberships_in(&mut tx, user_id).await?;
    let Some(first) = memberships.first() else {
        // Keep what provisioning did (a withdrawn membership stays disabled).
        commit_and_invalidate(tx, &state.verifier, &provisioned.invalidations).await?;
        let e = OidcError::NoAccess(verified.email.to_string());
        return problem(&state, &csrf, e).map(|r| (jar, r).into_response());
    };
    let cookie = start_session(
        &mut tx,
        &state.config,
        user_id,
        first.organization.id,
        &ip,
        user_agent,
        sessions::SignInMethod::Sso,
        now,
    )
    .await?;
    commit_and_invalidate(tx, &state.verifier, &provisioned.invalidations).await?;
    tracing::info!(user_id, "signed in via SSO");

    // One person, one session: a session open in this browser ends.
    if let Some(old) = jar
        .get(session_cookie_name(&state.config))
        .and_then(|c| Secret::parse(c.value()))
    {
        sessions::delete_by_hash(&state.db, &old.digest_hex()).await?;
    }
    let next = safe_next(verified.redirect_to.as_deref()).unwrap_or_else(|| HOME.into());
    Ok(no_store(
        (jar.add(cookie), Redirect::to(&next)).into_response(),
    ))
}

fn layout(state: &AppState, csrf: &CsrfToken) -> Layout {
    Layout::anonymous(&csrf.0, state.dev_mail_enabled())
}

/// The page for a sign-in that did not complete.
fn problem(state: &AppState, csrf: &CsrfToken, e: OidcError) -> PageResult {
    let again = Some(("/signin", "Back to sign-in"));
    let e = match e {
        OidcError::Store(inner) => return Err(PageError::from(inner)),
        other => other,
    };
    let (status, title, message): (StatusCode, &str, String) = match &e {
        // Answered as a store error above; kept for an exhaustive match.
        OidcError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Keysmith could not finish the sign-in",
            "Try again in a moment.".into(),
        ),
        OidcError::NotStarted => (
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser",
            "The provider sent back an answer this browser did not ask for, or its cookies were cleared. Start again from the sign-in page.".into(),
        ),
        OidcError::MissingState | OidcError::UnknownState => (
            StatusCode::BAD_REQUEST,
            "This sign-in answer is not valid",
            "The provider's answer names no sign-in that Keysmith started. Start again from the sign-in page.".into(),
        ),
        OidcError::ReplayedState => (
            StatusCode::CONFLICT,
            "This sign-in answer was already used",
            "Each answer from the provider works once. Start again from the sign-in page.".into(),
        ),
        OidcError::ExpiredState => (
            StatusCode::GONE,
            "This sign-in took too long",
            "A sign-in must come back from the provider within 10 minutes. Start again from the sign-in page.".into(),
        ),
        OidcError::OtherBrowser => (
            StatusCode::BAD_REQUEST,
            "This sign-in was started elsewhere",
            "The answer belongs to a sign-in started in another browser or an older tab. Start again here.".into(),
        ),
        OidcError::Provider { error, description } => {
            let status = if error == "access_denied" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            let detail = match description {
                Some(d) if !d.is_empty() => format!("{error}: {d}"),
                _ => error.clone(),
            };
            (
                status,
                "The sign-in provider did not sign you in",
                format!("It answered “{detail}”. Try again, or ask your administrator."),
            )
        }
        OidcError::MissingCode => (
            StatusCode::BAD_REQUEST,
            "This sign-in answer is incomplete",
            "The provider's answer has no authorization code. Start again from the sign-in page.".into(),
        ),
        OidcError::Unreachable(_) | OidcError::Exchange(_) | OidcError::NoIdToken => (
            StatusCode::BAD_GATEWAY,
            "The sign-in provider could not complete the sign-in",
            format!(
                "Keysmith could not finish the sign-in with the provider ({e}). Try again in a moment; if it persists, the administrator should check the KEYSMITH_OIDC_* settings."
            ),
        ),
        OidcError::InvalidIdToken(_) => (
            StatusCode::UNAUTHORIZED,
            "The sign-in could not be verified",
            format!("{e}. Start again from the sign-in page."),
        ),
        OidcError::NoEmail => (
            StatusCode::FORBIDDEN,
            "The provider did not share your email address",
            "Keysmith matches people by email address. The administrator should let the provider release the email claim (scope “email”).".into(),
        ),
        OidcError::UnverifiedEmail(email) => (
            StatusCode::FORBIDDEN,
            "Your email address is not verified",
            format!("The provider says {email} is not verified. Verify it with the provider, then sign in again."),
        ),
        OidcError::UnknownEmail(email) => (
            StatusCode::FORBIDDEN,
            "No Keysmith account for this address",
            format!("The provider signed you in as {email}, but no organization here has a member with that address. Ask an organization superuser to invite you."),
        ),
        OidcError::NoAccess(email) => (
            StatusCode::FORBIDDEN,
            "Your access is disabled",
            format!("{email} has no active membership. Ask an organization superuser to re-enable it."),
        ),
    };
    tracing::info!(reason = %e, status = status.as_u16(), "SSO sign-in refused");
    Ok(message_response(
        status,
        layout(state, csrf),
        title,
        &message,
        again,
    ))
}

/// The "Sign in with …" button's label, for the sign-in page.
pub fn button_label(state: &AppState) -> Option<String> {
    state
        .oidc
        .as_ref()
        .map(|o| format!("Sign in with {}", o.settings().label))
}
