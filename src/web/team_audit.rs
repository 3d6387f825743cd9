//! `/team/audit`: every event of the organization, newest first, filtered by
//! member, token, action and time, with paging; `/team/audit.csv` exports
//! the same selection.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use time::macros::format_description;
use time::{Date, Time};

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::{SignedIn, url_encode};
use crate::domain::EmailAddress;
use crate::mail::notices::describe_agent;
use crate::service::team as ops;
use crate::store::orgs;
use crate::store::team::{self as store_team, AuditFilter, AuditRow};
use crate::web::format::iso;
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, no_store};
use crate::web::team::{PagerView, forbidden, pager, time_view};
use crate::web::tokens::TimeView;

pub const PAGE_SIZE: i64 = 50;
/// The export's ceiling: a year of a busy organization, still one response.
const CSV_LIMIT: i64 = 100_000;

#[derive(Deserialize, Default, Clone)]
pub struct AuditQuery {
    /// A member's email.
    #[serde(default)]
    member: String,
    /// A token id.
    #[serde(default)]
    token: String,
    #[serde(default)]
    action: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    since: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    until: String,
    #[serde(default)]
    page: String,
}

fn day_start(raw: &str) -> Option<i64> {
    Date::parse(raw.trim(), format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
}

impl AuditQuery {
    /// The query string of these filters (for paging and export links).
    fn query_string(&self, page: Option<i64>) -> String {
        let mut parts: Vec<String> = [
            ("member", &self.member),
            ("token", &self.token),
            ("action", &self.action),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v.trim())))
        .collect();
        if let Some(p) = page {
            parts.push(format!("page={p}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Turns the form's strings into a store filter. Unknown members or
/// unreadable values select nothing rather than everything.
async fn filter(state: &AppState, q: &AuditQuery) -> Result<AuditFilter, crate::error::AppError> {
    let member = match q.member.trim() {
        "" => 0,
        raw => match EmailAddress::parse(raw) {
            Ok(email) => orgs::find_user_by_email(&state.db, &email)
                .await?
                .map_or(-1, |u| u.id),
            Err(_) => -1,
        },
    };
    let token = match q.token.trim() {
        "" => 0,
        raw => raw.parse::<i64>().ok().filter(|n| *n > 0).unwrap_or(-1),
    };
    Ok(AuditFilter {
        member,
        token,
        action: q.action.trim().to_string(),
        since: day_start(&q.since).unwrap_or(0),
        until: day_start(&q.until).map_or(0, |t| t + 86_400),
    })
}

/// Who did it, as the log reads.
pub fn actor_text(e: &AuditRow) -> String {
    let name = e.actor_email.clone();
    match (e.actor_token_id, name) {
        (Some(_), Some(name)) => format!(
            "{name} ({}) · via API token",
            e.actor_token_label.as_deref().unwrap_or("a token")
        ),
        (Some(_), None) => format!(
            "{} · via API token",
            e.actor_token_label.as_deref().unwrap_or("a token")
        ),
        (None, Some(name)) => name,
        (None, None) if e.detail.as_deref() == Some("email_link") => {
            "Someone with the email link".into()
        }
        (None, None) => "Keysmith".into(),
    }
}

fn token_text(e: &AuditRow) -> String {
    match (&e.token_label, &e.token_prefix) {
        (Some(l), Some(p)) => format!("{l} ({p}…)"),
        (Some(l), None) => l.clone(),
        _ => String::new(),
    }
}

pub struct EventView {
    pub at: TimeView,
    pub action: String,
    pub actor: String,
    pub subject: String,
    pub token: String,
    pub token_id: Option<i64>,
    pub detail: String,
    pub ip: String,
    pub agent: String,
    pub agent_raw: String,
}

#[derive(Template)]
#[template(path = "pages/team_audit.html")]
struct AuditPage {
    layout: Layout,
    q: AuditQuery,
    actions: Vec<String>,
    events: Vec<EventView>,
    pager: PagerView,
    csv: String,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    if ops::require_superuser(&who).is_err() {
        return forbidden(&state, &csrf.0, &who).await;
    }
    let org = who.organization_id();
    let f = filter(&state, &q).await?;
    let total = store_team::count_audit_events(&state.db, org, &f).await?;
    let page = q.page.trim().parse::<i64>().unwrap_or(1).max(1);
    let pager = pager(page, total, PAGE_SIZE, |p| {
        format!("/team/audit{}", q.query_string(Some(p)))
    });
    let now = state.clock.unix();
    let events =
        store_team::audit_events(&state.db, org, &f, PAGE_SIZE, (pager.page - 1) * PAGE_SIZE)
            .await?
            .iter()
            .map(|e| EventView {
                at: time_view(e.at, now),
                action: e.action.clone(),
                actor: actor_text(e),
                subject: e.subject_email.clone().unwrap_or_default(),
                token: token_text(e),
                token_id: e.token_id,
                detail: e.detail.clone().unwrap_or_default(),
                ip: e.ip.clone().unwrap_or_default(),
                agent: e.user_agent.as_deref().map(short_agent).unwrap_or_default(),
                agent_raw: e.user_agent.clone().unwrap_or_default(),
            })
            .collect();
    let actions = store_team::audit_actions(&state.db, org).await?;
    let html = AuditPage {
        layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "team"),
        csv: format!("/team/audit.csv{}", q.query_string(None)),
        q,
        actions,
        events,
        pager,
    }
    .render()?;
    Ok(no_store(Html(html).into_response()))
}

/// "Firefox on Linux", or the raw string when it is not a known browser.
fn short_agent(raw: &str) -> String {
    let full = describe_agent(Some(raw));
    match full.find(" (") {
        Some(i) if full.ends_with(')') && full[i + 2..].starts_with(raw) => full[..i].to_string(),
        _ => full,
    }
}

/// One CSV field: always quoted, quotes doubled, and a leading `= + - @`
/// defused so a spreadsheet never runs it as a formula.
fn csv_field(s: &str) -> String {
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let body = s.replace('"', "\"\"");
    if risky {
        format!("\"'{body}\"")
    } else {
        format!("\"{body}\"")
    }
}

pub async fn csv(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    if ops::require_superuser(&who).is_err() {
        return forbidden(&state, &csrf.0, &who).await;
    }
    let org = who.organization_id();
    let f = filter(&state, &q).await?;
    let events = store_team::audit_events(&state.db, org, &f, CSV_LIMIT, 0).await?;
    let mut out = String::from(
        "time,action,actor,actor_token_id,subject,token_id,token,detail,ip,user_agent\r\n",
    );
    for e in &events {
        let fields = [
            iso(e.at),
            e.action.clone(),
            actor_text(e),
            e.actor_token_id.map(|i| i.to_string()).unwrap_or_default(),
            e.subject_email.clone().unwrap_or_default(),
            e.token_id.map(|i| i.to_string()).unwrap_or_default(),
            token_text(e),
            e.detail.clone().unwrap_or_default(),
            e.ip.clone().unwrap_or_default(),
            e.user_agent.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"keysmith-audit.csv\""),
    );
    Ok(no_store(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "\"plain\"");
        assert_eq!(csv_field("say \"hi\", ok"), "\"say \"\"hi\"\", ok\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv_field(""), "\"\"");
    }

    #[test]
    fn days_read_as_utc_midnight() {
        assert_eq!(day_start("1970-01-02"), Some(86_400));
        assert_eq!(day_start("yesterday"), None);
    }
}
