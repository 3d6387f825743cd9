//! `/settings/api-tokens`: the signed-in member's tokens in the current
//! organization. Every handler answers htmx requests with a fragment (the
//! list, a row's label, the dialog's content) and plain requests with a full
//! page or a redirect, so the page also works without JavaScript.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::CookieJar;
use base64::Engine;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::{SignedIn, url_encode};
use crate::config::Config;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::tokens::{
    self as ops, ExpiryInput, FieldErrors, NewTokenInput, TokenChanges, TokenOpError,
};
use crate::store::tokens::{self as store_tokens, TokenRecord};
use crate::store::{from_unix, projects};
use crate::token::{Expiry, PlainToken};
use crate::web::flash;
use crate::web::format::{date_only, exact, iso, relative};
use crate::web::layout::Layout;
use crate::web::pages::{PageError, PageResult, message_response, no_store};

pub const PAGE: &str = "/settings/api-tokens";

/// A token used less than this long ago counts as "still in use".
const RECENT_USE_SECONDS: i64 = 24 * 3600;

pub struct TimeView {
    pub rel: String,
    pub exact: String,
    pub iso: String,
}

impl TimeView {
    fn at(ts: i64, now: i64) -> TimeView {
        TimeView {
            rel: relative(ts, now),
            exact: exact(ts),
            iso: iso(ts),
        }
    }
}

pub struct LastUsedView {
    pub at: TimeView,
    pub method: String,
    pub path: String,
    pub ip: String,
}

/// One token as a row of the list.
pub struct RowView {
    pub id: i64,
    pub label: String,
    pub prefix: String,
    /// `enabled`, `disabled`, `expired` or `revoked` (also the CSS class).
    pub status: &'static str,
    pub status_label: &'static str,
    pub scopes: String,
    pub projects: String,
    pub created: TimeView,
    /// The expiry, or for a revoked token the revocation time.
    pub expires: Option<TimeView>,
    pub last_used: Option<LastUsedView>,
    pub used_recently: bool,
    /// Not revoked: can still be renamed, toggled, revoked.
    pub live: bool,
    /// The viewer may act on it (the settings page: the owner with the permission).
    pub may_act: bool,
    /// Disabled by someone other than the owner: the owner's switch is locked.
    pub locked: bool,
    /// "Disabled by …", when it is known and worth saying to this viewer.
    pub disabled_note: Option<String>,
}

impl RowView {
    pub fn new(t: &TokenRecord, project_names: Vec<String>, now: i64, may_act: bool) -> RowView {
        let expired = Expiry::from_unix(t.expires_at).is_expired_at(from_unix(now));
        let (status, status_label) = if t.revoked_at.is_some() {
            ("revoked", "Revoked")
        } else if t.disabled_at.is_some() {
            ("disabled", "Disabled")
        } else if expired {
            ("expired", "Expired")
        } else {
            ("enabled", "Enabled")
        };
        let last_used = t.last_used_at.map(|at| LastUsedView {
            at: TimeView::at(at, now),
            method: t.last_used_method.clone().unwrap_or_default(),
            path: t.last_used_path.clone().unwrap_or_default(),
            ip: t.last_used_ip.clone().unwrap_or_default(),
        });
        RowView {
            id: t.id,
            label: t.label.clone(),
            prefix: t.display_prefix.clone(),
            status,
            status_label,
            scopes: t.scopes.names().join(", "),
            projects: if project_names.is_empty() {
                "All projects".into()
            } else {
                project_names.join(", ")
            },
            created: TimeView::at(t.created_at, now),
            expires: t
                .revoked_at
                .or(t.expires_at)
                .map(|ts| TimeView::at(ts, now)),
            used_recently: t
                .last_used_at
                .is_some_and(|at| now - at < RECENT_USE_SECONDS),
            last_used,
            live: t.revoked_at.is_none(),
            may_act,
            locked: t.locked_by().is_some(),
            // The owner needs no note for their own disable; the Team page
            // says who it was either way.
            disabled_note: t
                .disabled_by
                .as_ref()
                .filter(|by| !may_act || by.user_id != t.user_id)
                .map(|by| {
                    if by.user_id == t.user_id {
                        format!("Disabled by its owner, {}", by.email)
                    } else {
                        format!("Disabled by {}", by.email)
                    }
                }),
        }
    }
}

pub struct ListView {
    pub may_manage: bool,
    pub org_name: String,
    pub enabled: Vec<RowView>,
    /// Disabled and expired tokens.
    pub disabled: Vec<RowView>,
    /// Tombstones, when asked for.
    pub revoked: Option<Vec<RowView>>,
    /// Rendered as an out-of-band swap (inside another fragment).
    pub oob: bool,
}

async fn list_view(
    state: &AppState,
    who: &SignedIn,
    show_revoked: bool,
) -> Result<ListView, AppError> {
    let may_manage = who.membership.may_manage_tokens();
    let mut view = ListView {
        may_manage,
        org_name: who.membership.organization.name.clone(),
        enabled: Vec::new(),
        disabled: Vec::new(),
        revoked: show_revoked.then(Vec::new),
        oob: false,
    };
    if !may_manage {
        // Nothing they could act on is listed.
        view.revoked = None;
        return Ok(view);
    }
    let org = who.organization_id();
    let records = store_tokens::list_for_owner(&state.db, org, who.user_id, show_revoked).await?;
    let mut names = projects::names_by_token(&state.db, org, who.user_id).await?;
    let now = state.clock.unix();
    for t in &records {
        let mine = names.remove(&t.id).unwrap_or_default();
        let row = RowView::new(t, mine, now, true);
        match row.status {
            "enabled" => view.enabled.push(row),
            "revoked" => view.revoked.get_or_insert_with(Vec::new).push(row),
            _ => view.disabled.push(row),
        }
    }
    Ok(view)
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError(AppError::NotFound))
}

fn op_error(e: TokenOpError) -> PageError {
    PageError(e.into())
}

// ---------------------------------------------------------------- the page

#[derive(Template)]
#[template(path = "pages/api_tokens.html")]
struct TokensPage {
    layout: Layout,
    list: ListView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/tokens/list.html")]
struct ListPartial {
    list: ListView,
    csrf: String,
}

#[derive(Deserialize)]
pub struct PageQuery {
    revoked: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    who: SignedIn,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let show_revoked = q
        .revoked
        .as_deref()
        .is_some_and(|v| v == "1" || v == "true");
    let list = list_view(&state, &who, show_revoked).await?;
    let (jar, flash) = flash::take(jar);
    let page = TokensPage {
        layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens")
            .with_flash(flash),
        list,
        csrf: csrf.0,
    };
    // The list reflects live state: never serve it from a cache.
    Ok(no_store((jar, Html(page.render()?)).into_response()))
}

async fn list_fragment(state: &AppState, who: &SignedIn, csrf: &str) -> PageResult {
    let list = list_view(state, who, false).await?;
    Ok(Html(
        ListPartial {
            list,
            csrf: csrf.to_string(),
        }
        .render()?,
    )
    .into_response())
}

/// After a plain form post: back to the page with a message.
fn back_with(jar: CookieJar, config: &Config, message: &str) -> Response {
    (flash::set(jar, config, message), Redirect::to(PAGE)).into_response()
}

// ---------------------------------------------------------------- create

pub struct ScopeOption {
    pub name: String,
    /// Space-separated names this scope includes (for the page script).
    pub implies: String,
    pub implies_text: String,
    pub checked: bool,
}

pub struct ProjectOption {
    pub id: i64,
    pub name: String,
    pub checked: bool,
}

pub struct CreateFormView {
    pub label: String,
    pub scopes: Vec<ScopeOption>,
    pub expiry: String,
    pub expiry_date: String,
    pub expiry_choices: Vec<(&'static str, &'static str)>,
    pub min_date: String,
    pub projects: Vec<ProjectOption>,
    pub errors: FieldErrors,
}

const EXPIRY_CHOICES: [(&str, &str); 6] = [
    ("never", "No expiry"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("60", "60 days"),
    ("90", "90 days"),
    ("custom", "Custom date"),
];

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    label: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    expiry_date: String,
    #[serde(default)]
    projects: Vec<String>,
}

impl CreateForm {
    fn input(&self) -> Result<NewTokenInput, FieldErrors> {
        let expiry = match self.expiry.as_str() {
            "" | "never" => ExpiryInput::Never,
            "custom" => ExpiryInput::Date(self.expiry_date.clone()),
            days => match days.parse::<u32>() {
                Ok(d) => ExpiryInput::Days(d),
                Err(_) => {
                    let mut e = FieldErrors::default();
                    e.add("expiry", "Choose an expiration from the list.");
                    return Err(e);
                }
            },
        };
        Ok(NewTokenInput {
            label: self.label.clone(),
            scopes: self.scopes.clone(),
            expiry,
            projects: self.projects.clone(),
        })
    }
}

async fn create_form_view(
    state: &AppState,
    who: &SignedIn,
    form: &CreateForm,
    errors: FieldErrors,
) -> Result<CreateFormView, AppError> {
    let catalogue = &state.config.scopes;
    let first_time = form.scopes.is_empty() && errors.is_empty() && form.label.is_empty();
    let scopes = catalogue
        .names()
        .map(|name| {
            let implied: Vec<String> = catalogue
                .implied_by(name.as_str())
                .unwrap_or_default()
                .iter()
                .map(|s| s.to_string())
                .collect();
            ScopeOption {
                name: name.to_string(),
                implies: implied.join(" "),
                implies_text: implied.join(", "),
                // A new form starts with `read`, the least a token needs.
                checked: form.scopes.iter().any(|s| s == name.as_str())
                    || (first_time && name.as_str() == "read"),
            }
        })
        .collect();
    let projects = projects::list_active(&state.db, who.organization_id())
        .await?
        .into_iter()
        .map(|p| ProjectOption {
            checked: form.projects.iter().any(|x| x.trim() == p.id.to_string()),
            id: p.id,
            name: p.name,
        })
        .collect();
    let tomorrow = state.clock.now() + time::Duration::days(1);
    Ok(CreateFormView {
        label: form.label.clone(),
        scopes,
        expiry: if form.expiry.is_empty() {
            "30".into()
        } else {
            form.expiry.clone()
        },
        expiry_date: form.expiry_date.clone(),
        expiry_choices: EXPIRY_CHOICES.to_vec(),
        min_date: date_only(tomorrow),
        projects,
        errors,
    })
}

#[derive(Template)]
#[template(path = "partials/tokens/create_form.html")]
struct CreateFormPartial {
    form: CreateFormView,
    csrf: String,
    in_dialog: bool,
}

#[derive(Template)]
#[template(path = "pages/token_new.html")]
struct NewTokenPage {
    layout: Layout,
    form: CreateFormView,
    csrf: String,
    /// Opened directly: the form posts as a plain form, not into a dialog.
    in_dialog: bool,
}

fn ensure_may_manage(who: &SignedIn) -> Result<(), PageError> {
    if who.membership.may_manage_tokens() {
        Ok(())
    } else {
        Err(op_error(TokenOpError::NotAllowed))
    }
}

pub async fn new_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
) -> PageResult {
    ensure_may_manage(&who)?;
    let form =
        create_form_view(&state, &who, &CreateForm::default(), FieldErrors::default()).await?;
    render_create_form(&state, &who, &headers, csrf.0, form, StatusCode::OK)
}

fn render_create_form(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: String,
    form: CreateFormView,
    status: StatusCode,
) -> PageResult {
    let html = if is_htmx(headers) {
        CreateFormPartial {
            form,
            csrf,
            in_dialog: true,
        }
        .render()?
    } else {
        NewTokenPage {
            layout: Layout::signed_in(&csrf, state.dev_mail_enabled(), who, "tokens"),
            form,
            csrf,
            in_dialog: false,
        }
        .render()?
    };
    Ok((status, Html(html)).into_response())
}

pub struct McpView {
    pub url: String,
    pub claude: String,
    pub codex: String,
    pub vscode: String,
    pub cursor: String,
    pub json: String,
}

impl McpView {
    pub(crate) fn new(config: &Config, token: &PlainToken) -> Option<McpView> {
        let url = config.mcp_url.as_ref()?.to_string();
        let name = &config.mcp_name;
        let secret = token.expose_secret();
        let header = format!("Bearer {secret}");
        let server = serde_json::json!({ "type": "http", "url": url, "headers": { "Authorization": header } });
        let vscode = serde_json::json!({ "name": name, "type": "http", "url": url, "headers": { "Authorization": header } });
        let cursor_config =
            serde_json::json!({ "url": url, "headers": { "Authorization": header } });
        let env_var = format!("{}_TOKEN", name.to_ascii_uppercase().replace('-', "_"));
        Some(McpView {
            claude: format!(
                "claude mcp add --transport http {name} {url} --header \"Authorization: Bearer {secret}\""
            ),
            codex: format!(
                "export {env_var}='{secret}'\ncodex mcp add {name} --url {url} --bearer-token-env-var {env_var}"
            ),
            vscode: format!("code --add-mcp '{vscode}'"),
            cursor: format!(
                "cursor://anysphere.cursor-deeplink/mcp/install?name={}&config={}",
                url_encode(name),
                url_encode(
                    &base64::engine::general_purpose::STANDARD.encode(cursor_config.to_string())
                )
            ),
            json: serde_json::to_string_pretty(
                &serde_json::json!({ "mcpServers": { name.as_str(): server } }),
            )
            .unwrap_or_default(),
            url,
        })
    }
}

pub struct CreatedView {
    pub label: String,
    pub plaintext: String,
    pub scopes: String,
    pub expires: String,
    pub mcp: Option<McpView>,
}

#[derive(Template)]
#[template(path = "partials/tokens/created.html")]
struct CreatedPartial {
    created: CreatedView,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/token_created.html")]
struct CreatedPage {
    layout: Layout,
    created: CreatedView,
    full_page: bool,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    meta: RequestMeta,
    who: SignedIn,
    Form(form): Form<CreateForm>,
) -> PageResult {
    let result = match form.input() {
        Ok(input) => ops::create(&state, &who, &meta, &input).await,
        Err(errors) => Err(TokenOpError::Invalid(errors)),
    };
    let (plain, record) = match result {
        Ok(created) => created,
        Err(TokenOpError::Invalid(errors)) => {
            let view = create_form_view(&state, &who, &form, errors).await?;
            return render_create_form(
                &state,
                &who,
                &headers,
                csrf.0,
                view,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        // A limit: the form again, with the reason above it and the input kept.
        Err(e @ (TokenOpError::TooManyLive(_) | TokenOpError::CreatingTooFast { .. })) => {
            let (status, retry_after) = match e {
                TokenOpError::CreatingTooFast { retry_after, .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, Some(retry_after))
                }
                _ => (StatusCode::UNPROCESSABLE_ENTITY, None),
            };
            let mut errors = FieldErrors::default();
            errors.add("form", e.to_string());
            let view = create_form_view(&state, &who, &form, errors).await?;
            let mut response = render_create_form(&state, &who, &headers, csrf.0, view, status)?;
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, seconds.into());
            }
            return Ok(response);
        }
        Err(e) => return Err(op_error(e)),
    };
    let created = CreatedView {
        label: record.label.clone(),
        scopes: record.scopes.names().join(", "),
        expires: record
            .expires_at
            .map(exact)
            .unwrap_or_else(|| "never".into()),
        mcp: McpView::new(&state.config, &plain),
        plaintext: plain.expose_secret().to_string(),
    };
    let html = if is_htmx(&headers) {
        let mut html = CreatedPartial {
            created,
            full_page: false,
        }
        .render()?;
        // The refreshed list, swapped in behind the dialog.
        let list = ListView {
            oob: true,
            ..list_view(&state, &who, false).await?
        };
        html.push_str(&ListPartial { list, csrf: csrf.0 }.render()?);
        html
    } else {
        CreatedPage {
            layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens"),
            created,
            full_page: true,
        }
        .render()?
    };
    // The one response that carries the plaintext: no cache may keep it.
    Ok(no_store((StatusCode::CREATED, Html(html)).into_response()))
}

// ---------------------------------------------------------------- rename

#[derive(Template)]
#[template(path = "partials/tokens/label.html")]
struct LabelPartial {
    row: RowView,
}

#[derive(Template)]
#[template(path = "partials/tokens/label_form.html")]
struct LabelFormPartial {
    row: RowView,
    value: String,
    error: Option<String>,
    csrf: String,
}

#[derive(Template)]
#[template(path = "pages/token_rename.html")]
struct RenamePage {
    layout: Layout,
    row: RowView,
    value: String,
    error: Option<String>,
    csrf: String,
}

async fn own_row(state: &AppState, who: &SignedIn, id: i64) -> Result<RowView, PageError> {
    ensure_may_manage(who)?;
    let t = ops::own_live_token(state, who, id)
        .await
        .map_err(op_error)?;
    Ok(RowView::new(&t, Vec::new(), state.clock.unix(), true))
}

fn render_rename(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: String,
    row: RowView,
    value: String,
    error: Option<String>,
) -> PageResult {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let html = if is_htmx(headers) {
        LabelFormPartial {
            row,
            value,
            error,
            csrf,
        }
        .render()?
    } else {
        RenamePage {
            layout: Layout::signed_in(&csrf, state.dev_mail_enabled(), who, "tokens"),
            row,
            value,
            error,
            csrf,
        }
        .render()?
    };
    Ok((status, Html(html)).into_response())
}

pub async fn rename_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let row = own_row(&state, &who, parse_id(&id)?).await?;
    let value = row.label.clone();
    render_rename(&state, &who, &headers, csrf.0, row, value, None)
}

/// The label cell as shown (Escape in the inline editor comes back to it).
pub async fn label(
    State(state): State<AppState>,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    if !is_htmx(&headers) {
        return Ok(Redirect::to(PAGE).into_response());
    }
    let row = own_row(&state, &who, parse_id(&id)?).await?;
    Ok(Html(LabelPartial { row }.render()?).into_response())
}

#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    label: String,
}

#[allow(clippy::too_many_arguments)] // one per axum extractor
pub async fn rename(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let changes = TokenChanges {
        label: Some(form.label.clone()),
        enabled: None,
    };
    match ops::update(&state, &who, &meta, id, &changes).await {
        Ok(t) if is_htmx(&headers) => {
            let row = RowView::new(&t, Vec::new(), state.clock.unix(), true);
            Ok(Html(LabelPartial { row }.render()?).into_response())
        }
        Ok(t) => Ok(back_with(
            jar,
            &state.config,
            &format!("Renamed to “{}”.", t.label),
        )),
        Err(TokenOpError::Invalid(errors)) => {
            let row = own_row(&state, &who, id).await?;
            let error = errors.get("label").map(str::to_string);
            render_rename(&state, &who, &headers, csrf.0, row, form.label, error)
        }
        Err(e) => Err(op_error(e)),
    }
}

// ---------------------------------------------------------------- enable / disable

#[derive(Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    enabled: String,
}

#[allow(clippy::too_many_arguments)] // one per axum extractor
pub async fn toggle(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ToggleForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(PageError(AppError::BadRequest(
                "Send enabled=true or enabled=false.".into(),
            )));
        }
    };
    let changes = TokenChanges {
        label: None,
        enabled: Some(enabled),
    };
    let t = match ops::update(&state, &who, &meta, id, &changes).await {
        Ok(t) => t,
        Err(e @ TokenOpError::Locked(_)) => return Ok(locked(&state, &who, &headers, &csrf.0, &e)),
        Err(e) => return Err(op_error(e)),
    };
    if is_htmx(&headers) {
        list_fragment(&state, &who, &csrf.0).await
    } else {
        let verb = if enabled { "enabled" } else { "disabled" };
        Ok(back_with(
            jar,
            &state.config,
            &format!("“{}” is {verb}.", t.label),
        ))
    }
}

#[derive(Template)]
#[template(source = "<p>{{ message }}</p>", ext = "html")]
struct RefusalFragment<'a> {
    message: &'a str,
}

/// The owner tried to enable a token a superuser disabled: 403, with the
/// reason where they are looking (htmx shows the fragment's text as an
/// alert; a plain form gets a page).
fn locked(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: &str,
    e: &TokenOpError,
) -> Response {
    let message = e.to_string();
    if is_htmx(headers) {
        match (RefusalFragment { message: &message }).render() {
            Ok(html) => (StatusCode::FORBIDDEN, Html(html)).into_response(),
            Err(e) => PageError(e.into()).into_response(),
        }
    } else {
        message_response(
            StatusCode::FORBIDDEN,
            Layout::signed_in(csrf, state.dev_mail_enabled(), who, "tokens"),
            "A superuser disabled this token",
            &message,
            Some((PAGE, "Back to your API tokens")),
        )
    }
}

// ---------------------------------------------------------------- revoke

#[derive(Template)]
#[template(path = "partials/tokens/revoke_confirm.html")]
struct RevokePartial {
    row: RowView,
    csrf: String,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/token_revoke.html")]
struct RevokePage {
    layout: Layout,
    row: RowView,
    csrf: String,
    full_page: bool,
}

pub async fn revoke_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let row = own_row(&state, &who, parse_id(&id)?).await?;
    let html = if is_htmx(&headers) {
        RevokePartial {
            row,
            csrf: csrf.0,
            full_page: false,
        }
        .render()?
    } else {
        RevokePage {
            layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens"),
            row,
            csrf: csrf.0,
            full_page: true,
        }
        .render()?
    };
    Ok(Html(html).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let t = ops::revoke_own(&state, &who, &meta, parse_id(&id)?)
        .await
        .map_err(op_error)?;
    if is_htmx(&headers) {
        list_fragment(&state, &who, &csrf.0).await
    } else {
        Ok(back_with(
            jar,
            &state.config,
            &format!("“{}” is revoked. It no longer works.", t.label),
        ))
    }
}
