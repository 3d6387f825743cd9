//! `/team`: the organization superuser's page. Members (search, paging, the
//! token permission, role, disabled or not, invitations), a member's tokens
//! (disable and revoke only), the organization's policy and projects, and
//! the invitation link (`/invite/{secret}`). The audit log is in
//! `team_audit`.
//!
//! As on the settings page, every handler answers htmx with a fragment (a
//! row, a section, a dialog's content) and plain requests with a full page
//! or a redirect, so the page also works without JavaScript.

// Handlers take one extractor per argument; bundling them would hide what
// each handler reads.
#![allow(clippy::too_many_arguments)]

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::secret::Secret;
use crate::auth::session::{SignedIn, current_session, url_encode};
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::team::{
    self as ops, Invitation, InviteInput, MAX_LIFETIME_DAYS, MAX_PER_MINUTE, PolicyInput,
    TeamOpError,
};
use crate::service::tokens::FieldErrors;
use crate::store::orgs::{self, Role};
use crate::store::team::{self as store_team, MemberRow, MemberStatus, ProjectRow};
use crate::store::tokens::GroupCounts;
use crate::web::flash;
use crate::web::format::{exact, iso, relative};
use crate::web::layout::Layout;
use crate::web::pages::{PageError, PageResult, message_response, no_store};
use crate::web::tokens::{
    FinderView, ListParams, ListQuery, RowView, TimeView, current_params, member_list_query,
    member_token_list,
};

pub const PAGE: &str = "/team";
/// Members per page.
pub const PAGE_SIZE: i64 = 50;

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

fn htmx_target(headers: &HeaderMap) -> Option<&str> {
    headers.get("hx-target").and_then(|v| v.to_str().ok())
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError(AppError::NotFound))
}

pub fn time_view(ts: i64, now: i64) -> TimeView {
    TimeView {
        rel: relative(ts, now),
        exact: exact(ts),
        iso: iso(ts),
    }
}

fn layout(state: &AppState, csrf: &str, who: &SignedIn) -> Layout {
    Layout::signed_in(csrf, state.dev_mail_enabled(), who, "team")
}

/// The 403 page for anyone but a superuser: it names who to ask.
pub async fn forbidden(state: &AppState, csrf: &str, who: &SignedIn) -> PageResult {
    let superusers = store_team::superuser_emails(&state.db, who.organization_id()).await?;
    let ask = match superusers.as_slice() {
        [] => "an organization superuser".to_string(),
        [one] => one.clone(),
        many => many.join(", "),
    };
    let message = format!(
        "Only organization superusers can open the Team page of {}. To change who may hold API tokens, ask {ask}.",
        who.membership.organization.name
    );
    Ok(message_response(
        StatusCode::FORBIDDEN,
        layout(state, csrf, who),
        "Only superusers can open the Team page",
        &message,
        Some(("/settings/api-tokens", "Back to your API tokens")),
    ))
}

/// Turns an operation's error into a response. Invalid input and refusals
/// are handled by the callers that can re-render their form.
pub(crate) async fn op_error(
    state: &AppState,
    csrf: &str,
    who: &SignedIn,
    e: TeamOpError,
) -> PageResult {
    match e {
        TeamOpError::NotSuperuser => forbidden(state, csrf, who).await,
        TeamOpError::Refused(message) => Ok(message_response(
            StatusCode::CONFLICT,
            layout(state, csrf, who),
            "That cannot be done",
            &message,
            Some((PAGE, "Back to the Team page")),
        )),
        other => Err(PageError(other.into())),
    }
}

/// Checks the viewer is a superuser before anything is read.
pub(crate) async fn gate(state: &AppState, csrf: &str, who: &SignedIn) -> Result<(), Response> {
    match ops::require_superuser(who) {
        Ok(()) => Ok(()),
        Err(_) => Err(match forbidden(state, csrf, who).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }),
    }
}

fn back_with(jar: CookieJar, state: &AppState, to: &str, message: &str) -> Response {
    (flash::set(jar, &state.config, message), Redirect::to(to)).into_response()
}

/// An htmx fragment followed by the outcome for the page's live region
/// (`#flash`, `role=status`): the same words the no-JS path shows after its
/// redirect.
fn with_status(mut html: String, message: &str) -> Response {
    html.push_str(&status_oob(message));
    Html(html).into_response()
}

fn status_oob(message: &str) -> String {
    let escaped = askama::filters::escape(message, askama::filters::Html)
        .map(|e| e.to_string())
        .unwrap_or_default();
    format!(
        "<div id=\"flash\" hx-swap-oob=\"innerHTML\"><div class=\"alert alert-info\" role=\"status\">{escaped}</div></div>"
    )
}

// ---------------------------------------------------------------- views

/// One member as a row of the Team page.
pub struct MemberView {
    pub id: i64,
    pub email: String,
    pub superuser: bool,
    pub role_label: &'static str,
    /// `active`, `disabled` or `invited` (also the badge's class).
    pub status: &'static str,
    pub status_label: &'static str,
    /// The stored permission (a superuser always may, whatever it says).
    pub can_manage: bool,
    pub live_tokens: i64,
    /// Their live tokens do not work now: the member is disabled or may not
    /// hold tokens (see [`TokenStatus`](crate::web::format::TokenStatus)).
    pub tokens_paused: bool,
    pub last_use: Option<TimeView>,
    pub is_self: bool,
    /// A refusal to show in the row (e.g. the last superuser).
    pub error: Option<String>,
}

impl MemberView {
    fn new(m: &MemberRow, who: &SignedIn, now: i64) -> MemberView {
        let (status_label, badge) = match m.status {
            MemberStatus::Active => ("Active", "active"),
            MemberStatus::Disabled => ("Disabled", "disabled"),
            MemberStatus::Invited => ("Invited", "invited"),
        };
        MemberView {
            id: m.user_id,
            email: m.email.clone(),
            superuser: m.role == Role::Superuser,
            role_label: match m.role {
                Role::Superuser => "Superuser",
                Role::Member => "Member",
            },
            status: badge,
            status_label,
            can_manage: m.role == Role::Superuser || m.can_manage_tokens,
            live_tokens: m.live_tokens,
            tokens_paused: tokens_paused(m),
            last_use: m.last_token_use.map(|at| time_view(at, now)),
            is_self: m.user_id == who.user_id,
            error: None,
        }
    }
}

/// A member's tokens are paused while the member is disabled or, not being
/// a superuser, lacks the permission to hold tokens.
fn tokens_paused(m: &MemberRow) -> bool {
    m.status == MemberStatus::Disabled || (m.role != Role::Superuser && !m.can_manage_tokens)
}

pub struct PagerView {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub first: i64,
    pub last: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

pub fn pager(page: i64, total: i64, size: i64, link: impl Fn(i64) -> String) -> PagerView {
    let pages = ((total + size - 1) / size).max(1);
    let page = page.clamp(1, pages);
    PagerView {
        page,
        pages,
        total,
        first: if total == 0 { 0 } else { (page - 1) * size + 1 },
        last: (page * size).min(total),
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    }
}

pub struct MembersView {
    pub q: String,
    pub rows: Vec<MemberView>,
    pub pager: PagerView,
    pub oob: bool,
}

async fn members_view(
    state: &AppState,
    who: &SignedIn,
    q: &str,
    page: i64,
) -> Result<MembersView, AppError> {
    let org = who.organization_id();
    let now = state.clock.unix();
    let total = store_team::count_members(&state.db, org, q).await?;
    let q_enc = url_encode(q.trim());
    let pager = pager(page, total, PAGE_SIZE, |p| {
        if q.trim().is_empty() {
            format!("{PAGE}?page={p}")
        } else {
            format!("{PAGE}?q={q_enc}&page={p}")
        }
    });
    let rows = store_team::list_members(
        &state.db,
        org,
        q,
        PAGE_SIZE,
        (pager.page - 1) * PAGE_SIZE,
        now,
    )
    .await?
    .iter()
    .map(|m| MemberView::new(m, who, now))
    .collect();
    Ok(MembersView {
        q: q.trim().to_string(),
        rows,
        pager,
        oob: false,
    })
}

pub struct ScopeChoice {
    pub name: String,
    pub checked: bool,
}

pub struct PolicyView {
    pub reads_per_minute: String,
    pub writes_per_minute: String,
    pub max_token_lifetime_days: String,
    pub scopes: Vec<ScopeChoice>,
    pub default_reads: u32,
    pub default_writes: u32,
    pub max_per_minute: i64,
    pub max_days: i64,
    pub errors: FieldErrors,
}

async fn policy_view(state: &AppState, who: &SignedIn) -> Result<PolicyView, AppError> {
    let p = orgs::policy(&state.db, who.organization_id()).await?;
    let show = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let allowed: Option<Vec<&str>> = p
        .allowed_scopes
        .as_deref()
        .map(|s| s.split_whitespace().collect());
    let input = PolicyInput {
        reads_per_minute: show(p.reads_per_minute),
        writes_per_minute: show(p.writes_per_minute),
        max_token_lifetime_days: show(p.max_token_lifetime_days),
        allowed_scopes: state
            .config
            .scopes
            .names()
            .map(|n| n.as_str())
            .filter(|n| allowed.as_ref().is_none_or(|a| a.contains(n)))
            .map(str::to_string)
            .collect(),
    };
    Ok(policy_form(state, &input, FieldErrors::default()))
}

fn policy_form(state: &AppState, input: &PolicyInput, errors: FieldErrors) -> PolicyView {
    PolicyView {
        reads_per_minute: input.reads_per_minute.clone(),
        writes_per_minute: input.writes_per_minute.clone(),
        max_token_lifetime_days: input.max_token_lifetime_days.clone(),
        scopes: state
            .config
            .scopes
            .names()
            .map(|n| ScopeChoice {
                name: n.as_str().to_string(),
                checked: input.allowed_scopes.iter().any(|s| s == n.as_str()),
            })
            .collect(),
        default_reads: state.config.rate_limits.reads_per_minute,
        default_writes: state.config.rate_limits.writes_per_minute,
        max_per_minute: MAX_PER_MINUTE,
        max_days: MAX_LIFETIME_DAYS,
        errors,
    }
}

pub struct ProjectsView {
    pub rows: Vec<ProjectRow>,
    pub new_name: String,
    /// A message about the add form, or about one project's rename.
    pub error: Option<String>,
    pub error_for: Option<i64>,
}

impl ProjectsView {
    /// The rename of this project is what failed.
    pub fn failed(&self, id: impl std::borrow::Borrow<i64>) -> bool {
        self.error_for == Some(*id.borrow())
    }
}

async fn projects_view(state: &AppState, who: &SignedIn) -> Result<ProjectsView, AppError> {
    Ok(ProjectsView {
        rows: store_team::list_projects(&state.db, who.organization_id()).await?,
        new_name: String::new(),
        error: None,
        error_for: None,
    })
}

pub struct InviteView {
    pub email: String,
    pub can_manage: bool,
    pub error: Option<String>,
}

impl InviteView {
    fn empty() -> InviteView {
        InviteView {
            email: String::new(),
            can_manage: false,
            error: None,
        }
    }
}

// ---------------------------------------------------------------- the page

#[derive(Template)]
#[template(path = "pages/team.html")]
struct TeamPage {
    layout: Layout,
    org_name: String,
    members: MembersView,
    invite: InviteView,
    policy: PolicyView,
    projects: ProjectsView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/members.html")]
struct MembersPartial {
    members: MembersView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/member_row.html")]
struct MemberRowPartial {
    m: MemberView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/invite.html")]
struct InvitePartial {
    invite: InviteView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/policy.html")]
struct PolicyPartial {
    policy: PolicyView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/projects.html")]
struct ProjectsPartial {
    projects: ProjectsView,
    csrf: String,
}

/// The longest member search accepted: the longest email address.
const MAX_SEARCH: usize = 254;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: String,
}

/// What the full page shows besides its defaults (a form being corrected).
#[derive(Default)]
struct PageParts {
    invite: Option<InviteView>,
    policy: Option<PolicyView>,
    projects: Option<ProjectsView>,
}

async fn full_page(
    state: &AppState,
    who: &SignedIn,
    csrf: &str,
    flash_message: Option<String>,
    q: &str,
    page: i64,
    parts: PageParts,
) -> Result<String, AppError> {
    let members = members_view(state, who, q, page).await?;
    let policy = match parts.policy {
        Some(p) => p,
        None => policy_view(state, who).await?,
    };
    let projects = match parts.projects {
        Some(p) => p,
        None => projects_view(state, who).await?,
    };
    Ok(TeamPage {
        layout: layout(state, csrf, who).with_flash(flash_message),
        org_name: who.membership.organization.name.clone(),
        members,
        invite: parts.invite.unwrap_or_else(InviteView::empty),
        policy,
        projects,
        csrf: csrf.to_string(),
    }
    .render()?)
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    who: SignedIn,
    Query(q): Query<PageQuery>,
) -> PageResult {
    if let Err(r) = gate(&state, &csrf.0, &who).await {
        return Ok(r);
    }
    // Bad paging input reads as the first page, never an error.
    let page = q.page.trim().parse::<i64>().unwrap_or(1).max(1);
    // No email address is longer, and an unbounded pattern is work for the
    // database that can only find nothing.
    if q.q.chars().count() > MAX_SEARCH {
        let message = format!(
            "A search is at most {MAX_SEARCH} characters (an email address or part of one)."
        );
        if is_htmx(&headers) {
            return Ok(no_store(
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Html(format!(
                        "<div class=\"alert alert-error\" role=\"alert\">{message}</div>"
                    )),
                )
                    .into_response(),
            ));
        }
        return Ok(message_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            layout(&state, &csrf.0, &who),
            "Search too long",
            &message,
            Some(("/team", "Back to the team")),
        ));
    }
    if is_htmx(&headers) && htmx_target(&headers) == Some("members") {
        let members = members_view(&state, &who, &q.q, page).await?;
        let html = MembersPartial {
            members,
            csrf: csrf.0,
        }
        .render()?;
        return Ok(no_store(Html(html).into_response()));
    }
    let (jar, flash_message) = flash::take(jar);
    let html = full_page(
        &state,
        &who,
        &csrf.0,
        flash_message,
        &q.q,
        page,
        PageParts::default(),
    )
    .await?;
    Ok(no_store((jar, Html(html)).into_response()))
}

// ---------------------------------------------------------------- member rows

async fn row_response(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    jar: CookieJar,
    csrf: &str,
    result: Result<MemberRow, TeamOpError>,
    done: impl FnOnce(&MemberRow) -> String,
    user_id: i64,
) -> PageResult {
    let now = state.clock.unix();
    match result {
        Ok(m) if is_htmx(headers) => {
            let html = MemberRowPartial {
                m: MemberView::new(&m, who, now),
                csrf: csrf.to_string(),
            }
            .render()?;
            Ok(with_status(html, &done(&m)))
        }
        Ok(m) => Ok(back_with(jar, state, PAGE, &done(&m))),
        Err(TeamOpError::Refused(message)) if is_htmx(headers) => {
            // The row again, with the reason; 422 so htmx swaps it in.
            let m = ops::member(state, who, user_id)
                .await
                .map_err(|e| PageError(e.into()))?;
            let mut view = MemberView::new(&m, who, now);
            view.error = Some(message);
            let html = MemberRowPartial {
                m: view,
                csrf: csrf.to_string(),
            }
            .render()?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
        }
        Err(e) => op_error(state, csrf, who, e).await,
    }
}

fn flag(raw: &str) -> Result<bool, PageError> {
    match raw {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        _ => Err(PageError(AppError::BadRequest(
            "Send true or false.".into(),
        ))),
    }
}

#[derive(Deserialize)]
pub struct PermissionForm {
    #[serde(default)]
    allowed: String,
}

pub async fn set_permission(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<PermissionForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let allowed = flag(&form.allowed)?;
    let result = ops::set_permission(&state, &who, &meta, id, allowed).await;
    row_response(
        &state,
        &who,
        &headers,
        jar,
        &csrf.0,
        result,
        |m| {
            if allowed {
                format!("{} can create and manage API tokens again.", m.email)
            } else {
                format!(
                    "{} can no longer create or manage API tokens; their tokens are paused.",
                    m.email
                )
            }
        },
        id,
    )
    .await
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let role = match form.role.as_str() {
        "superuser" => Role::Superuser,
        "member" => Role::Member,
        _ => {
            return Err(PageError(AppError::BadRequest(
                "Send role=superuser or role=member.".into(),
            )));
        }
    };
    let result = ops::set_role(&state, &who, &meta, id, role).await;
    row_response(
        &state,
        &who,
        &headers,
        jar,
        &csrf.0,
        result,
        |m| format!("{} is now a {}.", m.email, role.as_str()),
        id,
    )
    .await
}

#[derive(Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    disabled: String,
}

pub async fn set_status(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<StatusForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let disabled = flag(&form.disabled)?;
    let result = ops::set_disabled(&state, &who, &meta, id, disabled).await;
    row_response(
        &state,
        &who,
        &headers,
        jar,
        &csrf.0,
        result,
        |m| {
            if disabled {
                format!(
                    "{} is disabled: signed out here, and their tokens stop working.",
                    m.email
                )
            } else {
                format!("{} is enabled again.", m.email)
            }
        },
        id,
    )
    .await
}

// ---------------------------------------------------------------- confirmations

/// The confirmation of a destructive action. With JavaScript the control
/// asks first (`hx-confirm` on the element that sends the POST); without
/// it, the control is a GET form to the action's own address, which answers
/// with this page, whose button sends the POST. Either way nothing changes
/// until the person says yes.
#[derive(Template)]
#[template(path = "pages/team_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    csrf: String,
    title: String,
    message: String,
    action: String,
    fields: Vec<(&'static str, &'static str)>,
    button: &'static str,
    cancel: String,
}

struct Confirm {
    title: String,
    message: String,
    fields: Vec<(&'static str, &'static str)>,
    button: &'static str,
}

async fn confirm_page(
    state: &AppState,
    csrf: &str,
    who: &SignedIn,
    action: String,
    cancel: String,
    c: Confirm,
) -> PageResult {
    let html = ConfirmPage {
        layout: layout(state, csrf, who),
        csrf: csrf.to_string(),
        title: c.title,
        message: c.message,
        action,
        fields: c.fields,
        button: c.button,
        cancel,
    }
    .render()?;
    Ok(no_store(Html(html).into_response()))
}

/// The member a confirmation is about, after the superuser check.
async fn confirm_member(
    state: &AppState,
    csrf: &str,
    who: &SignedIn,
    id: &str,
) -> Result<MemberRow, Response> {
    gate(state, csrf, who).await?;
    let id = parse_id(id).map_err(IntoResponse::into_response)?;
    match ops::member(state, who, id).await {
        Ok(m) => Ok(m),
        Err(e) => Err(match op_error(state, csrf, who, e).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }),
    }
}

pub async fn confirm_permission(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(form): Query<PermissionForm>,
) -> PageResult {
    let m = match confirm_member(&state, &csrf.0, &who, &id).await {
        Ok(m) => m,
        Err(r) => return Ok(r),
    };
    let c = if flag(&form.allowed)? {
        Confirm {
            title: format!("Allow {} to hold API tokens?", m.email),
            message: "They can create and manage personal API tokens, and their paused tokens work again.".into(),
            fields: vec![("allowed", "true")],
            button: "Allow",
        }
    } else {
        Confirm {
            title: format!("Withdraw the token permission of {}?", m.email),
            message: "Their tokens are paused at once and they cannot create new ones, until you allow it again.".into(),
            fields: vec![("allowed", "false")],
            button: "Withdraw permission",
        }
    };
    let action = format!("/team/members/{}/permission", m.user_id);
    confirm_page(&state, &csrf.0, &who, action, PAGE.into(), c).await
}

pub async fn confirm_role(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(form): Query<RoleForm>,
) -> PageResult {
    let m = match confirm_member(&state, &csrf.0, &who, &id).await {
        Ok(m) => m,
        Err(r) => return Ok(r),
    };
    let c = match form.role.as_str() {
        "member" => Confirm {
            title: format!("Make {} a member?", m.email),
            message: "They can no longer open the Team page or change who may hold tokens.".into(),
            fields: vec![("role", "member")],
            button: "Make a member",
        },
        "superuser" => Confirm {
            title: format!("Make {} a superuser?", m.email),
            message: "They can open the Team page, change who may hold tokens and revoke anyone's tokens.".into(),
            fields: vec![("role", "superuser")],
            button: "Make a superuser",
        },
        _ => {
            return Err(PageError(AppError::BadRequest(
                "Send role=superuser or role=member.".into(),
            )));
        }
    };
    let action = format!("/team/members/{}/role", m.user_id);
    confirm_page(&state, &csrf.0, &who, action, PAGE.into(), c).await
}

pub async fn confirm_status(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(form): Query<StatusForm>,
) -> PageResult {
    let m = match confirm_member(&state, &csrf.0, &who, &id).await {
        Ok(m) => m,
        Err(r) => return Ok(r),
    };
    let c = if flag(&form.disabled)? {
        Confirm {
            title: format!("Disable {}?", m.email),
            message:
                "They are signed out and their tokens stop working until you enable them again."
                    .into(),
            fields: vec![("disabled", "true")],
            button: "Disable",
        }
    } else {
        Confirm {
            title: format!("Enable {}?", m.email),
            message: "They can sign in again, and their tokens work again.".into(),
            fields: vec![("disabled", "false")],
            button: "Enable",
        }
    };
    let action = format!("/team/members/{}/status", m.user_id);
    confirm_page(&state, &csrf.0, &who, action, PAGE.into(), c).await
}

pub async fn confirm_token_toggle(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Path((uid, tid)): Path<(String, String)>,
    Query(form): Query<ToggleForm>,
) -> PageResult {
    if let Err(r) = gate(&state, &csrf.0, &who).await {
        return Ok(r);
    }
    let (uid, tid) = parse_pair(&uid, &tid)?;
    let (m, t) = match ops::member_token(&state, &who, uid, tid).await {
        Ok(found) if found.1.revoked_at.is_none() => found,
        Ok(_) => return Err(PageError(AppError::NotFound)),
        Err(e) => return op_error(&state, &csrf.0, &who, e).await,
    };
    let c = if flag(&form.enabled)? {
        Confirm {
            title: format!("Enable “{}” of {}?", t.label, m.email),
            message: "It works again from the next request.".into(),
            fields: vec![("enabled", "true")],
            button: "Enable",
        }
    } else {
        Confirm {
            title: format!("Disable “{}” of {}?", t.label, m.email),
            message: format!(
                "The token {}… stops working until a superuser enables it again. Its owner cannot enable it.",
                t.display_prefix
            ),
            fields: vec![("enabled", "false")],
            button: "Disable",
        }
    };
    let action = format!("/team/members/{uid}/tokens/{tid}/toggle");
    confirm_page(&state, &csrf.0, &who, action, member_page_path(uid), c).await
}

// ---------------------------------------------------------------- invite

fn invited(email: &str) -> String {
    format!("Invitation sent to {email}. The link in it works once, for 7 days.")
}

#[derive(Deserialize, Default)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    can_manage_tokens: Option<String>,
}

pub async fn invite(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Form(form): Form<InviteForm>,
) -> PageResult {
    let input = InviteInput {
        email: form.email.clone(),
        can_manage_tokens: form.can_manage_tokens.is_some(),
    };
    match ops::invite(&state, &who, &meta, &input).await {
        Ok(m) if is_htmx(&headers) => {
            let mut html = InvitePartial {
                invite: InviteView::empty(),
                csrf: csrf.0.clone(),
            }
            .render()?;
            let members = MembersView {
                oob: true,
                ..members_view(&state, &who, "", 1).await?
            };
            html.push_str(
                &MembersPartial {
                    members,
                    csrf: csrf.0,
                }
                .render()?,
            );
            Ok(with_status(html, &invited(&m.email)))
        }
        Ok(m) => Ok(back_with(jar, &state, PAGE, &invited(&m.email))),
        Err(TeamOpError::Invalid(errors)) => {
            let view = InviteView {
                email: form.email,
                can_manage: input.can_manage_tokens,
                error: errors.get("email").map(str::to_string),
            };
            let html = if is_htmx(&headers) {
                InvitePartial {
                    invite: view,
                    csrf: csrf.0,
                }
                .render()?
            } else {
                full_page(
                    &state,
                    &who,
                    &csrf.0,
                    None,
                    "",
                    1,
                    PageParts {
                        invite: Some(view),
                        ..PageParts::default()
                    },
                )
                .await?
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
        }
        Err(e) => op_error(&state, &csrf.0, &who, e).await,
    }
}

// ---------------------------------------------------------------- policy

const POLICY_SAVED: &str = "Policy saved. It applies to every token from the next request.";

#[derive(Deserialize, Default)]
pub struct PolicyForm {
    #[serde(default)]
    reads_per_minute: String,
    #[serde(default)]
    writes_per_minute: String,
    #[serde(default)]
    max_token_lifetime_days: String,
    #[serde(default)]
    allowed_scopes: Vec<String>,
}

pub async fn update_policy(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Form(form): Form<PolicyForm>,
) -> PageResult {
    let input = PolicyInput {
        reads_per_minute: form.reads_per_minute,
        writes_per_minute: form.writes_per_minute,
        max_token_lifetime_days: form.max_token_lifetime_days,
        allowed_scopes: form.allowed_scopes,
    };
    match ops::update_policy(&state, &who, &meta, &input).await {
        Ok(_) if is_htmx(&headers) => {
            let policy = policy_view(&state, &who).await?;
            Ok(with_status(
                PolicyPartial {
                    policy,
                    csrf: csrf.0,
                }
                .render()?,
                POLICY_SAVED,
            ))
        }
        Ok(_) => Ok(back_with(jar, &state, "/team#policy", POLICY_SAVED)),
        Err(TeamOpError::Invalid(errors)) => {
            let policy = policy_form(&state, &input, errors);
            let html = if is_htmx(&headers) {
                PolicyPartial {
                    policy,
                    csrf: csrf.0,
                }
                .render()?
            } else {
                full_page(
                    &state,
                    &who,
                    &csrf.0,
                    None,
                    "",
                    1,
                    PageParts {
                        policy: Some(policy),
                        ..PageParts::default()
                    },
                )
                .await?
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
        }
        Err(e) => op_error(&state, &csrf.0, &who, e).await,
    }
}

// ---------------------------------------------------------------- projects

#[derive(Deserialize, Default)]
pub struct ProjectForm {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
pub struct ArchiveForm {
    #[serde(default)]
    archived: String,
}

async fn projects_response(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    jar: CookieJar,
    csrf: &str,
    result: Result<(), TeamOpError>,
    done: &str,
    failed_for: Option<i64>,
    entered: &str,
) -> PageResult {
    match result {
        Ok(()) if is_htmx(headers) => Ok(with_status(
            ProjectsPartial {
                projects: projects_view(state, who).await?,
                csrf: csrf.to_string(),
            }
            .render()?,
            done,
        )),
        Ok(()) => Ok(back_with(jar, state, "/team#projects", done)),
        Err(TeamOpError::Invalid(errors)) => {
            let mut projects = projects_view(state, who).await?;
            projects.error = errors.get("project").map(str::to_string);
            projects.error_for = failed_for;
            if failed_for.is_none() {
                projects.new_name = entered.to_string();
            }
            let html = if is_htmx(headers) {
                ProjectsPartial {
                    projects,
                    csrf: csrf.to_string(),
                }
                .render()?
            } else {
                full_page(
                    state,
                    who,
                    csrf,
                    None,
                    "",
                    1,
                    PageParts {
                        projects: Some(projects),
                        ..PageParts::default()
                    },
                )
                .await?
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
        }
        Err(e) => op_error(state, csrf, who, e).await,
    }
}

pub async fn add_project(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Form(form): Form<ProjectForm>,
) -> PageResult {
    let result = ops::add_project(&state, &who, &meta, &form.name).await;
    let done = format!("Project “{}” added.", form.name.trim());
    projects_response(
        &state, &who, &headers, jar, &csrf.0, result, &done, None, &form.name,
    )
    .await
}

pub async fn rename_project(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ProjectForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let result = ops::rename_project(&state, &who, &meta, id, &form.name).await;
    let done = format!("Project renamed to “{}”.", form.name.trim());
    projects_response(
        &state,
        &who,
        &headers,
        jar,
        &csrf.0,
        result,
        &done,
        Some(id),
        &form.name,
    )
    .await
}

pub async fn archive_project(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ArchiveForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let archived = flag(&form.archived)?;
    let result = ops::set_project_archived(&state, &who, &meta, id, archived).await;
    let done = if archived {
        "Project archived: new tokens cannot choose it."
    } else {
        "Project restored."
    };
    projects_response(
        &state,
        &who,
        &headers,
        jar,
        &csrf.0,
        result,
        done,
        Some(id),
        "",
    )
    .await
}

// ---------------------------------------------------------------- a member's tokens

pub struct MemberTokensView {
    pub member: MemberView,
    pub live: Vec<RowView>,
    pub revoked: Vec<RowView>,
    /// Matching tokens per group, across the list's pages.
    pub counts: GroupCounts,
    pub unrevoked: i64,
    /// Search, filters, sort and pages (shared with the settings page).
    pub finder: FinderView,
    pub oob: bool,
}

async fn member_tokens_view(
    state: &AppState,
    who: &SignedIn,
    user_id: i64,
    q: &ListQuery,
) -> Result<MemberTokensView, TeamOpError> {
    let m = ops::member(state, who, user_id).await?;
    let org = who.organization_id();
    let now = state.clock.unix();
    let list = member_token_list(state, org, &m, q).await?;
    Ok(MemberTokensView {
        member: MemberView::new(&m, who, now),
        live: list.live,
        revoked: list.revoked,
        counts: list.counts,
        unrevoked: list.unrevoked,
        finder: list.finder,
        oob: false,
    })
}

#[derive(Template)]
#[template(path = "pages/team_member.html")]
struct MemberPage {
    layout: Layout,
    tokens: MemberTokensView,
    csrf: String,
}

#[derive(Template)]
#[template(path = "partials/team/member_tokens.html")]
struct MemberTokensPartial {
    tokens: MemberTokensView,
    csrf: String,
}

fn member_page_path(user_id: i64) -> String {
    format!("/team/members/{user_id}")
}

pub async fn member_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> PageResult {
    if let Err(r) = gate(&state, &csrf.0, &who).await {
        return Ok(r);
    }
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| PageError(AppError::BadRequest(e.body_text())))?;
    let q = member_list_query(&params, &state.config)
        .map_err(|message| PageError(AppError::BadRequest(message)))?;
    let tokens = match member_tokens_view(&state, &who, id, &q).await {
        Ok(t) => t,
        Err(e) => return op_error(&state, &csrf.0, &who, e).await,
    };
    // The list's search form and page links, enhanced by htmx: just the list.
    if is_htmx(&headers) && !headers.contains_key("hx-history-restore-request") {
        let html = MemberTokensPartial {
            tokens,
            csrf: csrf.0,
        }
        .render()?;
        return Ok(no_store(Html(html).into_response()));
    }
    let (jar, flash_message) = flash::take(jar);
    let html = MemberPage {
        layout: layout(&state, &csrf.0, &who).with_flash(flash_message),
        tokens,
        csrf: csrf.0,
    }
    .render()?;
    Ok(no_store((jar, Html(html)).into_response()))
}

/// The member's token list as the page an htmx request came from shows it
/// (its search, filters, sort and page), or the first page.
fn current_member_list(
    state: &AppState,
    headers: &HeaderMap,
    user_id: i64,
) -> Result<ListQuery, PageError> {
    current_params(headers, &member_page_path(user_id))
        .and_then(|p| member_list_query(&p, &state.config).ok())
        .map_or_else(
            || member_list_query(&ListParams::default(), &state.config),
            Ok,
        )
        .map_err(|message| PageError(AppError::BadRequest(message)))
}

/// The member's token list again, with the outcome for the live region.
async fn member_tokens_fragment(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: &str,
    user_id: i64,
    done: &str,
) -> PageResult {
    let q = current_member_list(state, headers, user_id)?;
    match member_tokens_view(state, who, user_id, &q).await {
        Ok(tokens) => Ok(with_status(
            MemberTokensPartial {
                tokens,
                csrf: csrf.to_string(),
            }
            .render()?,
            done,
        )),
        Err(e) => op_error(state, csrf, who, e).await,
    }
}

/// The member's token list as an out-of-band swap, for the response that
/// opens the shown-once dialog after a Regenerate: the row behind the
/// dialog shows its new prefix and expiry when it closes.
pub(crate) async fn member_tokens_behind_dialog(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: &str,
    user_id: i64,
) -> Result<String, PageError> {
    let q = current_member_list(state, headers, user_id)?;
    let tokens = member_tokens_view(state, who, user_id, &q)
        .await
        .map_err(|e| PageError(e.into()))?;
    Ok(MemberTokensPartial {
        tokens: MemberTokensView {
            oob: true,
            ..tokens
        },
        csrf: csrf.to_string(),
    }
    .render()?)
}

fn parse_pair(uid: &str, tid: &str) -> Result<(i64, i64), PageError> {
    Ok((parse_id(uid)?, parse_id(tid)?))
}

#[derive(Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    enabled: String,
}

pub async fn toggle_token(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path((uid, tid)): Path<(String, String)>,
    Form(form): Form<ToggleForm>,
) -> PageResult {
    let (uid, tid) = parse_pair(&uid, &tid)?;
    let enabled = flag(&form.enabled)?;
    match ops::set_token_disabled(&state, &who, &meta, uid, tid, !enabled).await {
        Ok(t) => {
            let verb = if enabled { "enabled" } else { "disabled" };
            let done = format!("“{}” is {verb}.", t.label);
            if is_htmx(&headers) {
                return member_tokens_fragment(&state, &who, &headers, &csrf.0, uid, &done).await;
            }
            Ok(back_with(jar, &state, &member_page_path(uid), &done))
        }
        Err(e) => op_error(&state, &csrf.0, &who, e).await,
    }
}

#[derive(Template)]
#[template(path = "partials/team/revoke_confirm.html")]
struct RevokeConfirmPartial {
    member: MemberView,
    row: RowView,
    csrf: String,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/team_revoke.html")]
struct RevokeConfirmPage {
    layout: Layout,
    member: MemberView,
    row: RowView,
    csrf: String,
    full_page: bool,
}

pub async fn revoke_token_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path((uid, tid)): Path<(String, String)>,
) -> PageResult {
    let (uid, tid) = parse_pair(&uid, &tid)?;
    let (m, t) = match ops::member_token(&state, &who, uid, tid).await {
        Ok(found) if found.1.revoked_at.is_none() => found,
        Ok(_) => return Err(PageError(AppError::NotFound)),
        Err(e) => return op_error(&state, &csrf.0, &who, e).await,
    };
    let now = state.clock.unix();
    let member = MemberView::new(&m, &who, now);
    let row = RowView::new(&t, Vec::new(), now, false);
    let html = if is_htmx(&headers) {
        RevokeConfirmPartial {
            member,
            row,
            csrf: csrf.0,
            full_page: false,
        }
        .render()?
    } else {
        RevokeConfirmPage {
            layout: layout(&state, &csrf.0, &who),
            member,
            row,
            csrf: csrf.0,
            full_page: true,
        }
        .render()?
    };
    Ok(Html(html).into_response())
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path((uid, tid)): Path<(String, String)>,
) -> PageResult {
    let (uid, tid) = parse_pair(&uid, &tid)?;
    match ops::revoke_token(&state, &who, &meta, uid, tid).await {
        Ok(t) => {
            let done = format!(
                "“{}” is revoked. Its owner has been told by email.",
                t.label
            );
            if is_htmx(&headers) {
                return member_tokens_fragment(&state, &who, &headers, &csrf.0, uid, &done).await;
            }
            Ok(back_with(jar, &state, &member_page_path(uid), &done))
        }
        Err(e) => op_error(&state, &csrf.0, &who, e).await,
    }
}

#[derive(Template)]
#[template(path = "partials/team/revoke_all_confirm.html")]
struct RevokeAllPartial {
    member: MemberView,
    count: usize,
    csrf: String,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/team_revoke_all.html")]
struct RevokeAllPage {
    layout: Layout,
    member: MemberView,
    count: usize,
    csrf: String,
    full_page: bool,
}

pub async fn revoke_all_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path(uid): Path<String>,
) -> PageResult {
    let uid = parse_id(&uid)?;
    let m = match ops::member(&state, &who, uid).await {
        Ok(m) => m,
        Err(e) => return op_error(&state, &csrf.0, &who, e).await,
    };
    let count =
        store_team::count_unrevoked_tokens(&state.db, who.organization_id(), uid).await? as usize;
    let member = MemberView::new(&m, &who, state.clock.unix());
    let html = if is_htmx(&headers) {
        RevokeAllPartial {
            member,
            count,
            csrf: csrf.0,
            full_page: false,
        }
        .render()?
    } else {
        RevokeAllPage {
            layout: layout(&state, &csrf.0, &who),
            member,
            count,
            csrf: csrf.0,
            full_page: true,
        }
        .render()?
    };
    Ok(Html(html).into_response())
}

pub async fn revoke_all(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    meta: RequestMeta,
    who: SignedIn,
    Path(uid): Path<String>,
) -> PageResult {
    let uid = parse_id(&uid)?;
    match ops::revoke_all(&state, &who, &meta, uid).await {
        Ok(n) => {
            let done = format!(
                "{n} token{} revoked. The owner has been told by email.",
                if n == 1 { "" } else { "s" }
            );
            if is_htmx(&headers) {
                return member_tokens_fragment(&state, &who, &headers, &csrf.0, uid, &done).await;
            }
            Ok(back_with(jar, &state, &member_page_path(uid), &done))
        }
        Err(e) => op_error(&state, &csrf.0, &who, e).await,
    }
}

// ---------------------------------------------------------------- invitation link

#[derive(Template)]
#[template(path = "pages/invite.html")]
struct InvitePage {
    layout: Layout,
    title: String,
    message: String,
    /// Where Accept posts, when the viewer may accept.
    action: Option<String>,
    /// Sign in first (as the invitee), coming back here.
    signin: Option<String>,
    /// Someone else is signed in: offer to sign out.
    sign_out: bool,
}

impl InvitePage {
    fn new(layout: Layout, title: impl Into<String>, message: impl Into<String>) -> InvitePage {
        InvitePage {
            layout,
            title: title.into(),
            message: message.into(),
            action: None,
            signin: None,
            sign_out: false,
        }
    }
}

fn invite_layout(state: &AppState, csrf: &str, viewer: Option<&SignedIn>) -> Layout {
    match viewer {
        Some(who) => Layout::signed_in(csrf, state.dev_mail_enabled(), who, ""),
        None => Layout::anonymous(csrf, state.dev_mail_enabled()),
    }
}

fn invite_path(secret: &Secret) -> String {
    format!("/invite/{}", secret.expose_secret())
}

fn signin_then(secret: &Secret) -> String {
    format!("/signin?next={}", url_encode(&invite_path(secret)))
}

/// The page for what an invitation came to. `accepting`: after the POST
/// (a refusal is then a 403), rather than on opening the link.
fn invitation_outcome(
    state: &AppState,
    csrf: &str,
    viewer: Option<&SignedIn>,
    secret: Option<&Secret>,
    outcome: Invitation,
    accepting: bool,
) -> PageResult {
    let layout = invite_layout(state, csrf, viewer);
    let (status, page) = match outcome {
        Invitation::Ready {
            organization,
            email,
            signed_in,
        } => {
            let message = if signed_in {
                format!("Accept the invitation to add {organization} to your account, {email}.")
            } else {
                "Accept the invitation to join the organization and sign in.".to_string()
            };
            let mut page =
                InvitePage::new(layout, format!("Join {organization} on Keysmith"), message);
            page.action = secret.map(invite_path);
            (StatusCode::OK, page)
        }
        Invitation::SignInFirst {
            organization,
            email,
        } => {
            let mut page = InvitePage::new(
                layout,
                format!("Join {organization} on Keysmith"),
                format!(
                    "Sign in as {email} to accept. {email} has a Keysmith account already, so the invitation joins it to {organization} once you are signed in as that account."
                ),
            );
            page.signin = secret.map(signin_then);
            (StatusCode::OK, page)
        }
        Invitation::WrongAccount {
            email,
            signed_in_as,
        } => {
            let mut page = InvitePage::new(
                layout,
                format!("This invitation is for {email}"),
                format!(
                    "This invitation is for {email}. You are signed in as {signed_in_as}: sign out, sign in as {email}, then open the link again."
                ),
            );
            page.sign_out = true;
            let status = if accepting {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            };
            (status, page)
        }
        Invitation::Used => (
            StatusCode::GONE,
            InvitePage::new(
                layout,
                "This invitation was already used",
                "Each invitation link works once. If you accepted it, sign in with your email address.",
            ),
        ),
        Invitation::Expired => (
            StatusCode::GONE,
            InvitePage::new(
                layout,
                "This invitation has expired",
                "Invitations work for 7 days. Ask the person who invited you to send a new one.",
            ),
        ),
        Invitation::Withdrawn => (
            StatusCode::GONE,
            InvitePage::new(
                layout,
                "This invitation was withdrawn",
                "Your membership was disabled before you accepted. Ask an organization superuser.",
            ),
        ),
        Invitation::Unknown | Invitation::Accepted { .. } => (
            StatusCode::NOT_FOUND,
            InvitePage::new(
                layout,
                "This invitation link is not valid",
                "It may have been copied incompletely. Open the link from the email again.",
            ),
        ),
    };
    Ok(no_store((status, Html(page.render()?)).into_response()))
}

pub async fn invitation_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    Path(raw): Path<String>,
) -> PageResult {
    let viewer = current_session(&state, &jar).await?;
    let Some(secret) = Secret::parse(&raw) else {
        return invitation_outcome(
            &state,
            &csrf.0,
            viewer.as_ref(),
            None,
            Invitation::Unknown,
            false,
        );
    };
    let outcome = ops::inspect_invitation(&state, &secret, viewer.as_ref()).await?;
    invitation_outcome(
        &state,
        &csrf.0,
        viewer.as_ref(),
        Some(&secret),
        outcome,
        false,
    )
}

pub async fn accept_invitation(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    jar: CookieJar,
    meta: RequestMeta,
    Path(raw): Path<String>,
) -> PageResult {
    let viewer = current_session(&state, &jar).await?;
    let Some(secret) = Secret::parse(&raw) else {
        return invitation_outcome(
            &state,
            &csrf.0,
            viewer.as_ref(),
            None,
            Invitation::Unknown,
            true,
        );
    };
    match ops::accept_invitation(&state, &secret, &meta, viewer.as_ref()).await? {
        Invitation::Accepted { cookie } => {
            let jar = match cookie {
                Some(cookie) => jar.add(cookie),
                None => jar,
            };
            Ok(no_store(
                (jar, Redirect::to("/settings/api-tokens")).into_response(),
            ))
        }
        // The invitation does not sign anyone in to an existing account:
        // sign in first, then come back to press Accept.
        Invitation::SignInFirst { .. } => Ok(no_store(
            Redirect::to(&signin_then(&secret)).into_response(),
        )),
        other => invitation_outcome(&state, &csrf.0, viewer.as_ref(), Some(&secret), other, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pager_clamps_and_links_neighbours() {
        let link = |p: i64| format!("/team?page={p}");
        let p = pager(1, 5001, 50, link);
        assert_eq!((p.page, p.pages, p.first, p.last), (1, 101, 1, 50));
        assert_eq!((p.prev, p.next.as_deref()), (None, Some("/team?page=2")));
        let p = pager(500, 5001, 50, link);
        assert_eq!((p.page, p.first, p.last), (101, 5001, 5001));
        assert!(p.next.is_none());
        let p = pager(3, 0, 50, link);
        assert_eq!((p.page, p.pages, p.first, p.last), (1, 1, 0, 0));
    }
}
