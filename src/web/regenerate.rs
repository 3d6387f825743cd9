//! Regenerating a token from the pages: a confirmation (dialog fragment for
//! htmx, a full page otherwise) that asks for the old secret's grace period,
//! and the POST that answers with the new secret, shown once in the same
//! dialog as a new token's. For the member's own tokens on the settings
//! page, and for superusers on a member's Team page.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::SignedIn;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::rotation::{self, GraceSeconds, RotationError};
use crate::store::tokens::TokenRecord;
use crate::web::layout::Layout;
use crate::web::pages::{PageError, PageResult, no_store};
use crate::web::tokens::{CreatedPage, CreatedPartial, CreatedView};

/// The grace periods the form offers (seconds, label).
const GRACE_CHOICES: [(i64, &str); 5] = [
    (0, "No longer: stop it now"),
    (300, "For 5 minutes"),
    (3600, "For 1 hour"),
    (21_600, "For 6 hours"),
    (86_400, "For 24 hours"),
];

/// Where the forms live: the settings page, or a member's Team page.
#[derive(Debug, Clone, Copy)]
enum Place {
    Settings,
    Team { member: i64 },
}

impl Place {
    fn action(self, token: i64) -> String {
        match self {
            Place::Settings => format!("/settings/api-tokens/{token}/regenerate"),
            Place::Team { member } => format!("/team/members/{member}/tokens/{token}/regenerate"),
        }
    }

    fn back(self) -> String {
        match self {
            Place::Settings => "/settings/api-tokens".to_string(),
            Place::Team { member } => format!("/team/members/{member}"),
        }
    }

    fn nav(self) -> &'static str {
        match self {
            Place::Settings => "tokens",
            Place::Team { .. } => "team",
        }
    }
}

pub struct ConfirmView {
    action: String,
    cancel: String,
    label: String,
    prefix: String,
    /// "on 2027-01-01 …", "never", or "… from now" in words.
    expiry: String,
    /// The owner's email, when it is someone else's token.
    owner: Option<String>,
    grace: i64,
    grace_choices: Vec<(i64, &'static str)>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "partials/tokens/regenerate_confirm.html")]
struct ConfirmPartial {
    confirm: ConfirmView,
    csrf: String,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/token_regenerate.html")]
struct ConfirmPage {
    layout: Layout,
    confirm: ConfirmView,
    csrf: String,
    full_page: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RegenerateForm {
    #[serde(default)]
    grace_seconds: String,
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError(AppError::NotFound))
}

fn page_error(e: RotationError) -> PageError {
    PageError(match e {
        RotationError::NotFound => AppError::NotFound,
        RotationError::Store(e) => e.into(),
        other => AppError::BadRequest(other.to_string()),
    })
}

fn describe_expiry(t: &TokenRecord) -> String {
    match t.expires_at {
        Some(_) => "as long from now as its current secret was issued for (within your organization's maximum lifetime)".to_string(),
        None => "never, unless your organization requires an expiry (then at its maximum lifetime)".to_string(),
    }
}

/// The owner's email, when the token is not the signed-in member's own.
async fn other_owner(
    state: &AppState,
    who: &SignedIn,
    t: &TokenRecord,
) -> Result<Option<String>, PageError> {
    if t.user_id == who.user_id {
        return Ok(None);
    }
    Ok(crate::store::orgs::user_email(&state.db, t.user_id).await?)
}

fn confirm_view(
    place: Place,
    owner: Option<String>,
    t: &TokenRecord,
    grace: i64,
    error: Option<String>,
) -> ConfirmView {
    ConfirmView {
        action: place.action(t.id),
        cancel: place.back(),
        label: t.label.clone(),
        prefix: t.display_prefix.clone(),
        expiry: describe_expiry(t),
        owner,
        grace,
        grace_choices: GRACE_CHOICES.to_vec(),
        error,
    }
}

fn render_confirm(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    place: Place,
    csrf: String,
    confirm: ConfirmView,
    status: StatusCode,
) -> PageResult {
    let html = if is_htmx(headers) {
        ConfirmPartial {
            confirm,
            csrf,
            full_page: false,
        }
        .render()?
    } else {
        ConfirmPage {
            layout: Layout::signed_in(&csrf, state.dev_mail_enabled(), who, place.nav()),
            confirm,
            csrf,
            full_page: true,
        }
        .render()?
    };
    Ok((status, Html(html)).into_response())
}

async fn confirm(
    state: AppState,
    csrf: CsrfToken,
    headers: HeaderMap,
    who: SignedIn,
    place: Place,
    id: &str,
) -> PageResult {
    let t = rotation::regenerable(&state, &who, parse_id(id)?)
        .await
        .map_err(page_error)?;
    if let Place::Team { member } = place
        && t.user_id != member
    {
        return Err(PageError(AppError::NotFound));
    }
    let owner = other_owner(&state, &who, &t).await?;
    let view = confirm_view(place, owner, &t, 0, None);
    render_confirm(&state, &who, &headers, place, csrf.0, view, StatusCode::OK)
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    state: AppState,
    csrf: CsrfToken,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    place: Place,
    id: &str,
    form: RegenerateForm,
) -> PageResult {
    let id = parse_id(id)?;
    let t = rotation::regenerable(&state, &who, id)
        .await
        .map_err(page_error)?;
    if let Place::Team { member } = place
        && t.user_id != member
    {
        return Err(PageError(AppError::NotFound));
    }
    let grace = match GraceSeconds::parse_form(&form.grace_seconds) {
        Ok(g) => g,
        Err(message) => {
            let owner = other_owner(&state, &who, &t).await?;
            let view = confirm_view(place, owner, &t, 0, Some(message));
            return render_confirm(
                &state,
                &who,
                &headers,
                place,
                csrf.0,
                view,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    let rotated = rotation::regenerate(&state, &who, &meta, id, grace)
        .await
        .map_err(page_error)?;
    let record = &rotated.record;
    let created = CreatedView::new(&state.config, record, &rotated.plain);
    let html = if is_htmx(&headers) {
        let mut html = CreatedPartial {
            created,
            full_page: false,
        }
        .render()?;
        // The row behind the dialog gets its new prefix and expiry.
        let behind = match place {
            Place::Settings => {
                crate::web::tokens::list_behind_dialog(&state, &who, &headers, csrf.0).await?
            }
            Place::Team { member } => {
                crate::web::team::member_tokens_behind_dialog(
                    &state, &who, &headers, &csrf.0, member,
                )
                .await?
            }
        };
        html.push_str(&behind);
        html
    } else {
        CreatedPage {
            layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, place.nav()),
            created,
            full_page: true,
        }
        .render()?
    };
    // The response that carries the new plaintext: no cache may keep it.
    Ok(no_store((StatusCode::CREATED, Html(html)).into_response()))
}

/// `GET /settings/api-tokens/{id}/regenerate`.
pub async fn settings_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    confirm(state, csrf, headers, who, Place::Settings, &id).await
}

/// `POST /settings/api-tokens/{id}/regenerate`.
pub async fn settings_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RegenerateForm>,
) -> PageResult {
    // Only one's own tokens from the settings page.
    let token = parse_id(&id)?;
    if let Ok(t) = rotation::regenerable(&state, &who, token).await
        && t.user_id != who.user_id
    {
        return Err(PageError(AppError::NotFound));
    }
    submit(state, csrf, headers, meta, who, Place::Settings, &id, form).await
}

/// `GET /team/members/{id}/tokens/{token}/regenerate` (superusers).
pub async fn team_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path((member, token)): Path<(String, String)>,
) -> PageResult {
    let place = team_place(&who, &member)?;
    confirm(state, csrf, headers, who, place, &token).await
}

/// `POST /team/members/{id}/tokens/{token}/regenerate` (superusers).
pub async fn team_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    Path((member, token)): Path<(String, String)>,
    Form(form): Form<RegenerateForm>,
) -> PageResult {
    let place = team_place(&who, &member)?;
    submit(state, csrf, headers, meta, who, place, &token, form).await
}

/// The Team page's routes are for superusers only.
fn team_place(who: &SignedIn, member: &str) -> Result<Place, PageError> {
    if !who.is_superuser() {
        return Err(PageError(AppError::Forbidden(
            "Only organization superusers can manage members' tokens.".into(),
        )));
    }
    Ok(Place::Team {
        member: parse_id(member)?,
    })
}
