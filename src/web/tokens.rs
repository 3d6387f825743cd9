//! `/settings/api-tokens`: the signed-in member's tokens in the current
//! organization. Every handler answers htmx requests with a fragment (the
//! list, a row's label, the dialog's content) and plain requests with a full
//! page or a redirect, so the page also works without JavaScript.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::SignedIn;
use crate::auth::session::url_encode;
use crate::config::Config;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::tokens::{
    self as ops, ExpiryInput, FieldErrors, NewTokenInput, TokenChanges, TokenOpError,
};
use crate::store::orgs::{self, Role};
use crate::store::team::{MemberRow, MemberStatus};
use crate::store::tokens::{
    self as store_tokens, GroupCounts, ProjectFilter, RevokeReason, StatusFilter, TokenQuery,
    TokenRecord, TokenSort,
};
use crate::store::{StoreResult, projects};
use crate::token::{PlainToken, ScopeSet};
use crate::web::flash;
use crate::web::format::{TokenStatus, date_only, exact, iso, relative};
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
    /// `TokenStatus::as_str`: `enabled`, `expiring`, `paused`, `disabled`,
    /// `expired` or `revoked` (also the CSS class).
    pub status: &'static str,
    pub status_label: &'static str,
    /// The token's own switch is on (not disabled): what the switch shows,
    /// whatever else (expiry, a paused owner) keeps the token from working.
    pub switch_on: bool,
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
    /// "Disabled by …" (or why a token was revoked, when a leak report did
    /// it), when it is known and worth saying to this viewer.
    pub disabled_note: Option<String>,
    /// The details view of where the token was used (the settings page's
    /// by default; the Team page points at its own).
    pub ips_path: String,
}

impl RowView {
    /// A row of a token whose owner may use tokens (the settings page: the
    /// viewer is the owner and holds the permission).
    pub fn new(t: &TokenRecord, project_names: Vec<String>, now: i64, may_act: bool) -> RowView {
        RowView::with_owner(t, project_names, now, may_act, true)
    }

    /// A row for any viewer: `owner_may_use` is false when the owner's
    /// permission was withdrawn or the member is disabled, which shows the
    /// token as Paused (see `TokenStatus::of`).
    pub fn with_owner(
        t: &TokenRecord,
        project_names: Vec<String>,
        now: i64,
        may_act: bool,
        owner_may_use: bool,
    ) -> RowView {
        let status = TokenStatus::of(t, owner_may_use, now);
        let last_used = t.last_used_at.map(|at| LastUsedView {
            at: TimeView::at(at, now),
            method: t.last_used_method.clone().unwrap_or_default(),
            path: t.last_used_path.clone().unwrap_or_default(),
            ip: t.last_used_ip.clone().unwrap_or_default(),
        });
        RowView {
            id: t.id,
            ips_path: format!("/settings/api-tokens/{}/ips", t.id),
            label: t.label.clone(),
            prefix: t.display_prefix.clone(),
            status: status.as_str(),
            status_label: status.label(),
            switch_on: TokenStatus::switch_on(t),
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
                })
                // A leak report revoked it: say so, the owner was emailed why.
                .or_else(|| {
                    (t.revoked_reason.as_deref() == Some(RevokeReason::Leaked.as_str()))
                        .then(|| "Found in public by secret scanning".to_string())
                }),
        }
    }
}

// ---------------------------------------------------------------- finding tokens

/// Tokens a page of the list shows.
pub const PAGE_SIZE: i64 = 50;
/// Longer than any label: a longer search could match nothing.
const MAX_SEARCH_CHARS: usize = 100;

/// The list's query string, as sent: `q`, `status`, `scope`, `project`,
/// `sort`, `page` (and the older `revoked=1`, which means `status=all`).
/// Shared by the settings page and a member's page on Team.
#[derive(Deserialize, Default, Clone)]
pub struct ListParams {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub page: String,
    #[serde(default)]
    pub revoked: String,
}

/// The parsed list query: what to load, and which page (1-based).
pub struct ListQuery {
    pub query: TokenQuery,
    pub page: i64,
}

impl ListParams {
    /// Turns the query string into a store query; the `Err` says what to fix.
    pub fn parse(&self, config: &Config) -> Result<ListQuery, String> {
        let search = self.q.trim();
        if search.chars().count() > MAX_SEARCH_CHARS {
            return Err(format!(
                "Search for at most {MAX_SEARCH_CHARS} characters (labels are no longer)."
            ));
        }
        let status = match self.status.as_str() {
            "" if matches!(self.revoked.as_str(), "1" | "true") => StatusFilter::All,
            "" => StatusFilter::Live,
            raw => StatusFilter::parse(raw).ok_or_else(|| {
                format!(
                    "Unknown status filter “{raw}”: use one of {}.",
                    StatusFilter::ALL.map(StatusFilter::as_str).join(", ")
                )
            })?,
        };
        let scope = match self.scope.trim() {
            "" => None,
            raw => Some(
                config
                    .scopes
                    .names()
                    .find(|n| n.as_str() == raw)
                    .map(|n| n.to_string())
                    .ok_or_else(|| format!("Unknown scope “{raw}”."))?,
            ),
        };
        let project = match self.project.trim() {
            "" => ProjectFilter::Any,
            "none" => ProjectFilter::Unrestricted,
            raw => {
                ProjectFilter::Project(raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                    || format!("The project filter takes a project id or “none”, not “{raw}”."),
                )?)
            }
        };
        let sort = match self.sort.as_str() {
            "" => TokenSort::Created,
            raw => TokenSort::parse(raw).ok_or_else(|| {
                format!(
                    "Unknown sort “{raw}”: use one of {}.",
                    TokenSort::ALL.map(TokenSort::as_str).join(", ")
                )
            })?,
        };
        let page = match self.page.trim() {
            "" => 1,
            raw => raw
                .parse::<i64>()
                .ok()
                .filter(|p| (1..=1_000_000).contains(p))
                .ok_or_else(|| format!("The page is a number from 1, not “{raw}”."))?,
        };
        Ok(ListQuery {
            query: TokenQuery {
                search: search.to_string(),
                status,
                scope,
                project,
                sort,
                grouped: true,
                offset: (page - 1) * PAGE_SIZE,
                limit: PAGE_SIZE,
            },
            page,
        })
    }
}

pub struct FilterOption {
    pub value: String,
    pub text: String,
    pub selected: bool,
}

/// The search, filter and sort form and the page links, for one list.
pub struct FinderView {
    /// Where the form and links go (`/settings/api-tokens`, `/team/members/7`).
    pub base: String,
    /// What the htmx-enhanced form swaps (`#token-list`, `#member-tokens`).
    pub target: String,
    pub search: String,
    pub statuses: Vec<FilterOption>,
    pub scopes: Vec<FilterOption>,
    pub projects: Vec<FilterOption>,
    pub sorts: Vec<FilterOption>,
    /// A filter narrows the list (so "nothing found" is not "no tokens").
    pub filtered: bool,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
    /// "Showing 51–100 of 230".
    pub range_text: String,
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
}

fn options<T: Copy + PartialEq>(
    all: &[T],
    current: T,
    value: impl Fn(T) -> &'static str,
    text: impl Fn(T) -> &'static str,
) -> Vec<FilterOption> {
    all.iter()
        .map(|&o| FilterOption {
            value: value(o).to_string(),
            text: text(o).to_string(),
            selected: o == current,
        })
        .collect()
}

impl FinderView {
    /// The form and links for `q` over `total` matching tokens.
    pub async fn new(
        state: &AppState,
        organization_id: i64,
        base: &str,
        target: &str,
        q: &ListQuery,
        total: i64,
    ) -> StoreResult<FinderView> {
        let query = &q.query;
        let mut scopes = vec![FilterOption {
            value: String::new(),
            text: "Any scope".into(),
            selected: query.scope.is_none(),
        }];
        scopes.extend(state.config.scopes.names().map(|n| FilterOption {
            value: n.to_string(),
            text: n.to_string(),
            selected: query.scope.as_deref() == Some(n.as_str()),
        }));
        let mut projects = vec![
            FilterOption {
                value: String::new(),
                text: "Any project".into(),
                selected: query.project == ProjectFilter::Any,
            },
            FilterOption {
                value: "none".into(),
                text: "All projects (unrestricted)".into(),
                selected: query.project == ProjectFilter::Unrestricted,
            },
        ];
        projects.extend(
            projects::list_active(&state.db, organization_id)
                .await?
                .into_iter()
                .map(|p| FilterOption {
                    selected: query.project == ProjectFilter::Project(p.id),
                    value: p.id.to_string(),
                    text: p.name,
                }),
        );
        let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let first = query.offset + 1;
        let last = (query.offset + PAGE_SIZE).min(total);
        let range_text = if total == 0 {
            "No tokens".into()
        } else if pages == 1 {
            format!("{total} {}", if total == 1 { "token" } else { "tokens" })
        } else {
            format!("Showing {first}–{last} of {total}")
        };
        let page_url = |page: i64| page_url(base, query, page);
        Ok(FinderView {
            base: base.to_string(),
            target: target.to_string(),
            search: query.search.clone(),
            statuses: options(
                &StatusFilter::ALL,
                query.status,
                StatusFilter::as_str,
                StatusFilter::text,
            ),
            scopes,
            projects,
            sorts: options(
                &TokenSort::ALL,
                query.sort,
                TokenSort::as_str,
                TokenSort::text,
            ),
            filtered: !query.search.is_empty()
                || query.scope.is_some()
                || query.project != ProjectFilter::Any
                || !matches!(query.status, StatusFilter::Live | StatusFilter::All),
            total,
            page: q.page,
            pages,
            range_text,
            prev_url: (q.page > 1).then(|| page_url(q.page - 1)),
            next_url: (q.page < pages).then(|| page_url(q.page + 1)),
        })
    }
}

/// The list's URL for `page` of `q`, with only the parameters that differ
/// from the defaults.
fn page_url(base: &str, q: &TokenQuery, page: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !q.search.is_empty() {
        parts.push(format!("q={}", url_encode(&q.search)));
    }
    if q.status != StatusFilter::Live {
        parts.push(format!("status={}", q.status.as_str()));
    }
    if let Some(scope) = &q.scope {
        parts.push(format!("scope={}", url_encode(scope)));
    }
    match q.project {
        ProjectFilter::Any => {}
        ProjectFilter::Unrestricted => parts.push("project=none".into()),
        ProjectFilter::Project(id) => parts.push(format!("project={id}")),
    }
    if q.sort != TokenSort::Created {
        parts.push(format!("sort={}", q.sort.as_str()));
    }
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    if parts.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", parts.join("&"))
    }
}

pub struct ListView {
    pub may_manage: bool,
    pub org_name: String,
    /// Working tokens on this page (enabled, expiring soon).
    pub enabled: Vec<RowView>,
    /// Disabled and expired tokens on this page.
    pub disabled: Vec<RowView>,
    /// Tombstones on this page, when the filter includes them.
    pub revoked: Option<Vec<RowView>>,
    /// How many match in each group, across all pages.
    pub counts: GroupCounts,
    /// The filter lets working tokens through (so "Enabled 0" is news).
    pub shows_working: bool,
    pub finder: Option<FinderView>,
    /// Rendered as an out-of-band swap (inside another fragment).
    pub oob: bool,
}

async fn list_view(state: &AppState, who: &SignedIn, q: &ListQuery) -> Result<ListView, AppError> {
    let may_manage = who.membership.may_manage_tokens();
    let shows_revoked = matches!(q.query.status, StatusFilter::All | StatusFilter::Revoked);
    let mut view = ListView {
        may_manage,
        org_name: who.membership.organization.name.clone(),
        enabled: Vec::new(),
        disabled: Vec::new(),
        revoked: None,
        counts: GroupCounts::default(),
        shows_working: matches!(
            q.query.status,
            StatusFilter::Live
                | StatusFilter::All
                | StatusFilter::Enabled
                | StatusFilter::ExpiresSoon
        ),
        finder: None,
        oob: false,
    };
    if !may_manage {
        // Nothing they could act on is listed.
        return Ok(view);
    }
    let org = who.organization_id();
    let now = state.clock.unix();
    let (records, counts) =
        store_tokens::list_page_with_counts(&state.db, org, who.user_id, &q.query, now).await?;
    let ids: Vec<i64> = records.iter().map(|t| t.id).collect();
    let mut names = projects::names_for_tokens(&state.db, org, &ids).await?;
    view.counts = counts;
    view.revoked = shows_revoked.then(Vec::new);
    for t in &records {
        let mine = names.remove(&t.id).unwrap_or_default();
        let row = RowView::new(t, mine, now, true);
        if !row.live {
            view.revoked.get_or_insert_with(Vec::new).push(row);
        } else if TokenStatus::of(t, true, now).works() {
            view.enabled.push(row);
        } else {
            view.disabled.push(row);
        }
    }
    view.finder = Some(FinderView::new(state, org, PAGE, "#token-list", q, counts.total()).await?);
    Ok(view)
}

/// A member's tokens as a superuser sees them on Team: one page of the
/// list, read-only rows (the superuser's actions sit beside them), Paused
/// when the member may not use tokens now.
pub struct MemberTokenList {
    /// Not revoked (working, paused, disabled, expired).
    pub live: Vec<RowView>,
    pub revoked: Vec<RowView>,
    pub counts: GroupCounts,
    /// All the member's unrevoked tokens, whatever the filter (Revoke all).
    pub unrevoked: i64,
    pub finder: FinderView,
}

/// The list query of `/team/members/{id}` (default: every token, revoked
/// included, newest first); the `Err` is a 400's message.
pub fn member_list_query(params: &ListParams, config: &Config) -> Result<ListQuery, String> {
    let mut params = params.clone();
    if params.status.is_empty() && params.revoked.is_empty() {
        params.status = StatusFilter::All.as_str().into();
    }
    params.parse(config)
}

/// Loads one page of `/team/members/{id}`'s token list.
pub async fn member_token_list(
    state: &AppState,
    organization_id: i64,
    member: &MemberRow,
    q: &ListQuery,
) -> StoreResult<MemberTokenList> {
    let now = state.clock.unix();
    let user_id = member.user_id;
    let everything_live = TokenQuery::default();
    let ((records, counts), all) = tokio::try_join!(
        store_tokens::list_page_with_counts(&state.db, organization_id, user_id, &q.query, now),
        store_tokens::count_matching(&state.db, organization_id, user_id, &everything_live, now),
    )?;
    let ids: Vec<i64> = records.iter().map(|t| t.id).collect();
    let mut names = projects::names_for_tokens(&state.db, organization_id, &ids).await?;
    let owner_may_use = member.status == MemberStatus::Active
        && (member.role == Role::Superuser || member.can_manage_tokens);
    let (mut live, mut revoked) = (Vec::new(), Vec::new());
    for t in &records {
        let mine = names.remove(&t.id).unwrap_or_default();
        let mut row = RowView::with_owner(t, mine, now, false, owner_may_use);
        row.ips_path = format!("/team/members/{user_id}/tokens/{}/ips", t.id);
        if row.live {
            live.push(row);
        } else {
            revoked.push(row);
        }
    }
    let base = format!("/team/members/{user_id}");
    let finder = FinderView::new(
        state,
        organization_id,
        &base,
        "#member-tokens",
        q,
        counts.total(),
    )
    .await?;
    Ok(MemberTokenList {
        live,
        revoked,
        counts,
        unrevoked: all.working + all.stopped,
        finder,
    })
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
    alerts: crate::web::token_ips::AlertsPartial,
}

#[derive(Template)]
#[template(path = "partials/tokens/list.html")]
struct ListPartial {
    list: ListView,
    csrf: String,
}

/// The list query of a request, or the 400 that says what to fix.
fn parse_list(
    config: &Config,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<ListQuery, PageError> {
    let Query(params) = params.map_err(|e| PageError(AppError::BadRequest(e.body_text())))?;
    params
        .parse(config)
        .map_err(|message| PageError(AppError::BadRequest(message)))
}

/// The list query of the page an htmx request came from (`HX-Current-URL`),
/// so a row's action keeps the search, filter and page the user is on.
/// Anything unreadable falls back to the default list.
fn current_list(config: &Config, headers: &HeaderMap) -> ListQuery {
    let default = || ListParams::default().parse(config);
    current_params(headers, PAGE)
        .and_then(|p| p.parse(config).ok())
        .or_else(|| default().ok())
        .unwrap_or_else(|| ListQuery {
            query: TokenQuery {
                grouped: true,
                limit: PAGE_SIZE,
                ..TokenQuery::default()
            },
            page: 1,
        })
}

/// The search, filters, sort and page of the list an htmx request came from
/// (`HX-Current-URL`), when that was the list at `path`.
pub(crate) fn current_params(headers: &HeaderMap, path: &str) -> Option<ListParams> {
    let uri = headers
        .get("hx-current-url")?
        .to_str()
        .ok()?
        .parse::<Uri>()
        .ok()?;
    if uri.path() != path {
        return None;
    }
    Query::<ListParams>::try_from_uri(&uri)
        .ok()
        .map(|Query(p)| p)
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    who: SignedIn,
    params: Result<Query<ListParams>, QueryRejection>,
) -> PageResult {
    let q = parse_list(&state.config, params)?;
    let list = list_view(&state, &who, &q).await?;
    if is_htmx(&headers) && !headers.contains_key("hx-history-restore-request") {
        // The search form and page links, enhanced: just the list.
        let html = ListPartial { list, csrf: csrf.0 }.render()?;
        return Ok(no_store(Html(html).into_response()));
    }
    let (jar, flash) = flash::take(jar);
    let alerts = crate::web::token_ips::AlertsPartial {
        on: crate::store::token_ips::alerts_enabled(&state.db, who.user_id).await?,
        csrf: csrf.0.clone(),
        message: None,
    };
    let page = TokensPage {
        layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens")
            .with_flash(flash),
        list,
        csrf: csrf.0,
        alerts,
    };
    // The list reflects live state: never serve it from a cache.
    Ok(no_store((jar, Html(page.render()?)).into_response()))
}

#[derive(Template)]
#[template(path = "partials/tokens/announce.html")]
struct AnnouncePartial<'a> {
    message: &'a str,
}

/// The refreshed list after an htmx action, with the same message the
/// no-JS path shows, swapped into the page's live region.
async fn list_fragment(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: &str,
    message: &str,
) -> PageResult {
    let list = list_view(state, who, &current_list(&state.config, headers)).await?;
    let mut html = ListPartial {
        list,
        csrf: csrf.to_string(),
    }
    .render()?;
    html.push_str(&AnnouncePartial { message }.render()?);
    Ok(Html(html).into_response())
}

/// The refreshed list as an out-of-band swap, for a response that opens
/// the shown-once dialog (create, regenerate): the list behind the dialog
/// shows the new row, or the row's new prefix and expiry, when it closes.
pub(crate) async fn list_behind_dialog(
    state: &AppState,
    who: &SignedIn,
    headers: &HeaderMap,
    csrf: String,
) -> Result<String, AppError> {
    let list = ListView {
        oob: true,
        ..list_view(state, who, &current_list(&state.config, headers)).await?
    };
    Ok(ListPartial { list, csrf }.render()?)
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
    /// (value, text) of each expiry the policy allows, presets with the date they give.
    pub expiry_choices: Vec<(String, String)>,
    pub min_date: String,
    /// The last date the policy allows, for the date field's `max`.
    pub max_date: Option<String>,
    /// What the organization's policy limits, said above the fields.
    pub policy_note: Option<String>,
    pub projects: Vec<ProjectOption>,
    pub errors: FieldErrors,
    /// "2 fields need attention: Label, Expiration.", announced on a failed submit.
    pub error_summary: Option<String>,
}

/// The expiry presets, in days; `never` and `custom` are added around them.
const EXPIRY_PRESETS: [u32; 4] = [7, 30, 60, 90];

/// How each field is named in the error summary, in form order.
const FIELD_NAMES: [(&str, &str); 4] = [
    ("label", "Label"),
    ("scopes", "Scopes"),
    ("expiry", "Expiration"),
    ("projects", "Projects"),
];

fn error_summary(errors: &FieldErrors) -> Option<String> {
    let named: Vec<&str> = FIELD_NAMES
        .iter()
        .filter(|(field, _)| errors.get(field).is_some())
        .map(|(_, name)| *name)
        .collect();
    match named.len() {
        0 => None,
        1 => Some(format!("1 field needs attention: {}.", named[0])),
        n => Some(format!("{n} fields need attention: {}.", named.join(", "))),
    }
}

/// The expiry choices a policy allows, `max_days` being its limit: no
/// "No expiry" and no preset beyond the limit. Each preset says the date it
/// gives (UTC), so nobody has to count days.
fn expiry_choices(now: time::OffsetDateTime, max_days: Option<i64>) -> Vec<(String, String)> {
    let mut choices = Vec::new();
    if max_days.is_none() {
        choices.push(("never".to_string(), "No expiry".to_string()));
    }
    for days in EXPIRY_PRESETS
        .into_iter()
        .filter(|d| max_days.is_none_or(|max| i64::from(*d) <= max))
    {
        let until = date_only(now + time::Duration::days(i64::from(days)));
        choices.push((days.to_string(), format!("{days} days (until {until})")));
    }
    choices.push(("custom".to_string(), "Custom date".to_string()));
    choices
}

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
            // The date field shows the date in the reader's locale
            // (mm/dd/yyyy or dd.mm.yyyy) and sends YYYY-MM-DD: say what to
            // do, not which format, unless someone typed it by hand.
            "custom" if self.expiry_date.trim().is_empty() => {
                let mut e = FieldErrors::default();
                e.add("expiry", "Choose a date after today.");
                return Err(e);
            }
            "custom"
                if time::Date::parse(
                    self.expiry_date.trim(),
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .is_err() =>
            {
                let mut e = FieldErrors::default();
                e.add(
                    "expiry",
                    "Enter a date after today (year-month-day, e.g. 2027-01-31).",
                );
                return Err(e);
            }
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
    let policy = orgs::policy(&state.db, who.organization_id()).await?;
    let allowed = policy.allowed_scopes.as_deref().map(ScopeSet::from_stored);
    let first_time = form.scopes.is_empty() && errors.is_empty() && form.label.is_empty();
    let scopes = catalogue
        .names()
        // Only what members may grant is offered.
        .filter(|name| allowed.as_ref().is_none_or(|a| a.contains(name.as_str())))
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
    let now = state.clock.now();
    let max_days = policy.max_token_lifetime_days;
    let expiry_choices = expiry_choices(now, max_days);
    // The usual 30 days, or the longest preset the policy allows.
    let default_expiry = expiry_choices
        .iter()
        .filter(|(v, _)| v.parse::<u32>().is_ok_and(|d| d <= 30))
        .map(|(v, _)| v.clone())
        .next_back()
        .unwrap_or_else(|| "custom".into());
    let mut limits = Vec::new();
    if let Some(days) = max_days {
        limits.push(format!(
            "tokens must expire within {days} days (by {})",
            date_only(now + time::Duration::days(days))
        ));
    }
    if allowed.is_some() {
        limits.push("members may grant only the scopes listed".to_string());
    }
    let policy_note = (!limits.is_empty()).then(|| {
        format!(
            "{}’s policy: {}.",
            who.membership.organization.name,
            limits.join("; ")
        )
    });
    Ok(CreateFormView {
        label: form.label.clone(),
        scopes,
        expiry: if form.expiry.is_empty() {
            default_expiry
        } else {
            form.expiry.clone()
        },
        expiry_date: form.expiry_date.clone(),
        expiry_choices,
        min_date: date_only(now + time::Duration::days(1)),
        max_date: max_days.map(|d| date_only(now + time::Duration::days(d))),
        policy_note,
        projects,
        error_summary: error_summary(&errors),
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

// The MCP card's commands are built in `web::mcp`.
pub use crate::web::mcp::McpView;

pub struct CreatedView {
    pub label: String,
    pub plaintext: String,
    pub scopes: String,
    pub expires: String,
    pub mcp: Option<McpView>,
}

impl CreatedView {
    /// What the shown-once dialog says of a token whose secret is `plain`
    /// (a new token, or one whose secret was just replaced).
    pub(crate) fn new(config: &Config, record: &TokenRecord, plain: &PlainToken) -> CreatedView {
        CreatedView {
            label: record.label.clone(),
            scopes: record.scopes.names().join(", "),
            expires: record
                .expires_at
                .map(exact)
                .unwrap_or_else(|| "never".into()),
            mcp: McpView::new(config, plain),
            plaintext: plain.expose_secret().to_string(),
        }
    }
}

/// The shown-once dialog as an htmx fragment.
#[derive(Template)]
#[template(path = "partials/tokens/created.html")]
pub(crate) struct CreatedPartial {
    pub(crate) created: CreatedView,
    pub(crate) full_page: bool,
}

/// The shown-once token as a page of its own (no JavaScript).
#[derive(Template)]
#[template(path = "pages/token_created.html")]
pub(crate) struct CreatedPage {
    pub(crate) layout: Layout,
    pub(crate) created: CreatedView,
    pub(crate) full_page: bool,
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
    let created = CreatedView::new(&state.config, &record, &plain);
    let html = if is_htmx(&headers) {
        let mut html = CreatedPartial {
            created,
            full_page: false,
        }
        .render()?;
        html.push_str(&list_behind_dialog(&state, &who, &headers, csrf.0).await?);
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
    /// In the row (htmx), not on the rename page.
    inline: bool,
}

#[derive(Template)]
#[template(path = "pages/token_rename.html")]
struct RenamePage {
    layout: Layout,
    row: RowView,
    value: String,
    error: Option<String>,
    csrf: String,
    inline: bool,
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
            inline: true,
        }
        .render()?
    } else {
        RenamePage {
            layout: Layout::signed_in(&csrf, state.dev_mail_enabled(), who, "tokens"),
            row,
            value,
            error,
            csrf,
            inline: false,
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
        Ok(t) => {
            let message = format!("Renamed to “{}”.", t.label);
            if !is_htmx(&headers) {
                return Ok(back_with(jar, &state.config, &message));
            }
            let row = RowView::new(&t, Vec::new(), state.clock.unix(), true);
            let mut html = LabelPartial { row }.render()?;
            html.push_str(&AnnouncePartial { message: &message }.render()?);
            Ok(Html(html).into_response())
        }
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

/// A form's `enabled=true|false`, as the switches send it.
pub(crate) fn enabled_field(raw: &str) -> Result<bool, PageError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(PageError(AppError::BadRequest(
            "Send enabled=true or enabled=false.".into(),
        ))),
    }
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
    let enabled = enabled_field(&form.enabled)?;
    let changes = TokenChanges {
        label: None,
        enabled: Some(enabled),
    };
    let t = match ops::update(&state, &who, &meta, id, &changes).await {
        Ok(t) => t,
        Err(e @ TokenOpError::Locked(_)) => return Ok(locked(&state, &who, &headers, &csrf.0, &e)),
        Err(e) => return Err(op_error(e)),
    };
    let verb = if enabled { "enabled" } else { "disabled" };
    let message = format!("“{}” is {verb}.", t.label);
    if is_htmx(&headers) {
        list_fragment(&state, &who, &headers, &csrf.0, &message).await
    } else {
        Ok(back_with(jar, &state.config, &message))
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
    let message = format!("“{}” is revoked. It no longer works.", t.label);
    if is_htmx(&headers) {
        list_fragment(&state, &who, &headers, &csrf.0, &message).await
    } else {
        Ok(back_with(jar, &state.config, &message))
    }
}
