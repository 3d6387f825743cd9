//! `/team/scim-tokens`: the Team page's SCIM section. Superusers make a
//! secret (shown once) and revoke secrets. The Team page loads this section
//! with htmx; opened directly it is a page of its own.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::SignedIn;
use crate::request::RequestMeta;
use crate::scim::secrets;
use crate::service::team::{TeamOpError, require_superuser};
use crate::store::scim as store;
use crate::web::format::{exact, relative};
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, no_store};
use crate::web::team::forbidden;

pub struct Row {
    pub id: i64,
    pub label: String,
    pub prefix: String,
    pub created: String,
    pub created_by: Option<String>,
    pub last_used: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "partials/team/scim_tokens_section.html")]
pub struct Section {
    pub section: SectionView,
}

pub struct SectionView {
    pub csrf: String,
    pub base_url: String,
    pub rows: Vec<Row>,
    pub created: Option<String>,
    pub flash: Option<String>,
    pub error: Option<String>,
    pub label: String,
}

#[derive(Template)]
#[template(path = "pages/team_scim_tokens.html")]
struct ScimPage {
    layout: Layout,
    section: SectionView,
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    label: String,
}

async fn view(state: &AppState, who: &SignedIn, csrf: &str) -> PageResult<SectionView> {
    let now = state.clock.unix();
    let rows = store::list_tokens(&state.db, who.organization_id())
        .await?
        .into_iter()
        .map(|t| Row {
            id: t.id,
            label: t.label,
            prefix: t.display_prefix,
            created: exact(t.created_at),
            created_by: t.created_by,
            last_used: t
                .last_used_at
                .map_or_else(|| "never".to_string(), |at| relative(at, now)),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    Ok(SectionView {
        csrf: csrf.to_string(),
        base_url: crate::scim::location(state, ""),
        rows,
        created: None,
        flash: None,
        error: None,
        label: String::new(),
    })
}

/// The section alone for htmx, the page otherwise.
fn render(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: &str,
    status: StatusCode,
    section: SectionView,
) -> PageResult {
    let html = if headers.contains_key("hx-request") {
        Section { section }.render()?
    } else {
        ScimPage {
            layout: Layout::signed_in(csrf, state.dev_mail_enabled(), who, "team"),
            section,
        }
        .render()?
    };
    Ok(no_store((status, Html(html)).into_response()))
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
) -> PageResult {
    if require_superuser(&who).is_err() {
        return forbidden(&state, &csrf.0, &who).await;
    }
    let section = view(&state, &who, &csrf.0).await?;
    render(&state, &who, &headers, &csrf.0, StatusCode::OK, section)
}

pub async fn create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    axum::Form(form): axum::Form<CreateForm>,
) -> PageResult {
    if require_superuser(&who).is_err() {
        return forbidden(&state, &csrf.0, &who).await;
    }
    match secrets::create(&state, &who, &meta, &form.label).await {
        Ok(secret) => {
            let mut section = view(&state, &who, &csrf.0).await?;
            section.created = Some(secret.expose_secret().to_string());
            render(&state, &who, &headers, &csrf.0, StatusCode::OK, section)
        }
        Err(TeamOpError::Refused(message)) => {
            let mut section = view(&state, &who, &csrf.0).await?;
            section.error = Some(message);
            section.label = form.label;
            render(
                &state,
                &who,
                &headers,
                &csrf.0,
                StatusCode::UNPROCESSABLE_ENTITY,
                section,
            )
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    if require_superuser(&who).is_err() {
        return forbidden(&state, &csrf.0, &who).await;
    }
    let id: i64 = id.parse().map_err(|_| crate::error::AppError::NotFound)?;
    let label = secrets::revoke(&state, &who, &meta, id).await?;
    let mut section = view(&state, &who, &csrf.0).await?;
    section.flash = Some(format!(
        "SCIM secret “{label}” revoked: the next request with it is refused."
    ));
    render(&state, &who, &headers, &csrf.0, StatusCode::OK, section)
}
