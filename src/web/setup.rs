//! First run: with no organization in the database, `keysmith serve` prints a
//! one-time `/setup?code=…` URL. The page creates the organization with its
//! superuser and signs them in. The code works once, and not at all once any
//! organization exists.

use askama::Template;
use axum::Extension;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::secret::Secret;
use crate::auth::session::start_session;
use crate::config::Config;
use crate::domain::{EmailAddress, OrgName};
use crate::request::ClientIp;
use crate::store::links::{self, LinkKind, LinkState, NewLink};
use crate::store::{Db, StoreError, StoreResult, orgs};
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, message_response, no_store};
use crate::web::signin::HOME;

/// A setup link lives a day; a restart prints a fresh one.
const SETUP_TTL_SECONDS: i64 = 24 * 3600;

/// With no organization yet, mints a setup link (retiring earlier ones) and
/// returns its URL; `None` once the database has an organization.
pub async fn prepare_setup_link(db: &Db, config: &Config, now: i64) -> StoreResult<Option<String>> {
    if orgs::count_organizations(db).await? > 0 {
        return Ok(None);
    }
    let secret = Secret::generate();
    let mut tx = db.begin().await?;
    links::retire_kind(&mut tx, LinkKind::Setup, now).await?;
    links::create(
        &mut tx,
        LinkKind::Setup,
        &NewLink {
            secret_hash: &secret.digest_hex(),
            ttl_seconds: SETUP_TTL_SECONDS,
            ..NewLink::default()
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(config.public_link(&format!(
        "/setup?code={}",
        secret.expose_secret()
    ))))
}

#[derive(Template)]
#[template(path = "pages/setup.html")]
struct SetupPage {
    layout: Layout,
    code: String,
    org: String,
    email: String,
    org_error: Option<String>,
    email_error: Option<String>,
}

#[derive(Deserialize)]
pub struct SetupQuery {
    code: Option<String>,
}

fn already_set_up(state: &AppState, csrf: &str) -> Response {
    message_response(
        StatusCode::GONE,
        Layout::anonymous(csrf, state.dev_mail_enabled()),
        "Keysmith is already set up",
        "An organization exists, so the setup link no longer works. Sign in instead.",
        Some(("/signin", "Sign in")),
    )
}

fn bad_code(state: &AppState, csrf: &str) -> Response {
    message_response(
        StatusCode::NOT_FOUND,
        Layout::anonymous(csrf, state.dev_mail_enabled()),
        "This setup link is not valid",
        "It was used, has expired or was copied incompletely. Restart Keysmith to print a new one.",
        None,
    )
}

async fn check_code(state: &AppState, raw: Option<&str>) -> StoreResult<Option<Secret>> {
    let Some(secret) = raw.and_then(Secret::parse) else {
        return Ok(None);
    };
    let mut conn = state.db.pool().acquire().await?;
    let link = links::inspect(
        &mut conn,
        LinkKind::Setup,
        &secret.digest_hex(),
        state.clock.unix(),
    )
    .await?;
    Ok(matches!(link, LinkState::Valid(_)).then_some(secret))
}

pub async fn setup_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Query(q): Query<SetupQuery>,
) -> PageResult {
    if orgs::count_organizations(&state.db).await? > 0 {
        return Ok(already_set_up(&state, &csrf.0));
    }
    let Some(secret) = check_code(&state, q.code.as_deref()).await? else {
        return Ok(bad_code(&state, &csrf.0));
    };
    let page = SetupPage {
        layout: Layout::anonymous(&csrf.0, state.dev_mail_enabled()),
        code: secret.expose_secret().to_string(),
        org: String::new(),
        email: String::new(),
        org_error: None,
        email_error: None,
    };
    Ok(no_store(Html(page.render()?).into_response()))
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    email: String,
}

pub async fn complete_setup(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SetupForm>,
) -> PageResult {
    if orgs::count_organizations(&state.db).await? > 0 {
        return Ok(already_set_up(&state, &csrf.0));
    }
    let Some(secret) = check_code(&state, Some(&form.code)).await? else {
        return Ok(bad_code(&state, &csrf.0));
    };
    let org = OrgName::parse(&form.org);
    let email = EmailAddress::parse(&form.email);
    let (org, email) = match (org, email) {
        (Ok(org), Ok(email)) => (org, email),
        (org, email) => {
            let page = SetupPage {
                layout: Layout::anonymous(&csrf.0, state.dev_mail_enabled()),
                code: secret.expose_secret().to_string(),
                org: form.org.clone(),
                email: form.email.clone(),
                org_error: org.err().map(|e| e.0),
                email_error: email.err().map(|e| e.0),
            };
            return Ok(no_store(
                (StatusCode::UNPROCESSABLE_ENTITY, Html(page.render()?)).into_response(),
            ));
        }
    };
    let now = state.clock.unix();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let mut tx = state.db.begin().await?;
    // Use the code and check "no organization yet" in the same transaction,
    // so two setups racing cannot both succeed.
    let link = links::consume(&mut tx, LinkKind::Setup, &secret.digest_hex(), now).await?;
    let count = orgs::count_organizations_in(&mut tx).await?;
    if !matches!(link, LinkState::Valid(_)) || count > 0 {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(bad_code(&state, &csrf.0));
    }
    let done = orgs::bootstrap_in(&mut tx, &org, &email, now).await?;
    let cookie = start_session(
        &mut tx,
        &state.config,
        done.user.id,
        done.organization.id,
        &ip.to_string(),
        user_agent,
        crate::store::sessions::SignInMethod::Setup,
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(organization = %done.organization.name, "first-run setup completed");
    Ok(no_store(
        (jar.add(cookie), Redirect::to(HOME)).into_response(),
    ))
}
