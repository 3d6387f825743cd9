//! `/team/audit`: every event of the organization, newest first, filtered by
//! member, token, action and time, with paging; `/team/audit.csv` exports
//! the same selection.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use time::macros::format_description;
use time::{Date, Time};

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::{SignedIn, url_encode};
use crate::mail::notices::describe_agent;
use crate::service::team as ops;
use crate::store::team::{self as store_team, AuditFilter, AuditRow};
use crate::web::format::iso;
use crate::web::layout::Layout;
use crate::web::pages::{PageResult, no_store};
use crate::web::team::{PagerView, forbidden, pager, time_view};
use crate::web::tokens::TimeView;

pub const PAGE_SIZE: i64 = 50;
/// Events the export reads and writes at a time: what it holds in memory,
/// whatever the size of the log.
const CSV_CHUNK: i64 = 500;
const CSV_HEADER: &str =
    "time,action,actor,actor_token_id,subject,token_id,token,detail,ip,user_agent\r\n";

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

/// The longest member search: the longest email address.
const MAX_MEMBER_SEARCH: usize = 254;

/// A filter field the log could not read, and why.
#[derive(Debug)]
pub struct FilterProblem {
    pub field: &'static str,
    pub message: String,
}

/// Turns the form's strings into a store filter, or says which fields
/// cannot be read: a wrong filter is told, never silently shows nothing.
/// `known_actions`: the actions the log can contain.
fn filter(q: &AuditQuery, known_actions: &[String]) -> Result<AuditFilter, Vec<FilterProblem>> {
    let mut problems = Vec::new();
    let mut problem = |field, message: String| problems.push(FilterProblem { field, message });
    let member = q.member.trim();
    if member.chars().count() > MAX_MEMBER_SEARCH {
        problem(
            "member",
            format!(
                "A member search is at most {MAX_MEMBER_SEARCH} characters (part of an email address or name)."
            ),
        );
    }
    let token = match q.token.trim() {
        "" => 0,
        raw => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                problem(
                    "token",
                    format!(
                        "A token id is a whole number, such as 42 (not “{}”).",
                        short(raw)
                    ),
                );
                0
            }),
    };
    let action = q.action.trim();
    if !action.is_empty() && !known_actions.iter().any(|a| a == action) {
        problem("action", "Choose an action from the list.".to_string());
    }
    let mut day = |field, label: &str, raw: &str| match raw.trim() {
        "" => None,
        raw => day_start(raw).or_else(|| {
            problem(
                field,
                format!(
                    "{label} is a date such as 2026-03-31 (not “{}”).",
                    short(raw)
                ),
            );
            None
        }),
    };
    let since = day("since", "From", &q.since);
    let until = day("until", "Until", &q.until);
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        problem(
            "until",
            "Until is before From: no event can match. Swap the dates.".to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(AuditFilter {
        member: if member.is_empty() {
            String::new()
        } else {
            store_team::like_pattern(member)
        },
        token,
        action: action.to_string(),
        since: since.unwrap_or(0),
        until: until.map_or(0, |t| t + 86_400),
    })
}

/// An entered value quoted back in a message, cut short.
fn short(raw: &str) -> String {
    let mut s: String = raw.chars().take(40).collect();
    if raw.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// Actions Keysmith writes, with the names the log shows. Actions not
/// listed (added later) are shown by [`action_label`]'s fallback.
const ACTION_LABELS: &[(&str, &str)] = &[
    ("member.demoted", "Superuser made a member"),
    ("member.disabled", "Member disabled"),
    ("member.enabled", "Member enabled"),
    ("member.invited", "Member invited"),
    ("member.joined", "Member joined"),
    ("member.permission_granted", "Token permission granted"),
    ("member.permission_withdrawn", "Token permission withdrawn"),
    ("member.promoted", "Member made a superuser"),
    ("member.provisioned", "Member added by single sign-on"),
    ("organization.bootstrapped", "Organization created"),
    ("organization.policy_changed", "Token policy changed"),
    ("project.archived", "Project archived"),
    ("project.created", "Project created"),
    ("project.renamed", "Project renamed"),
    ("project.restored", "Project restored"),
    ("session.expired", "Session expired"),
    ("session.signed_in", "Signed in"),
    ("session.signed_out", "Signed out"),
    ("token.created", "Token created"),
    ("token.disabled", "Token disabled"),
    ("token.enabled", "Token enabled"),
    ("token.renamed", "Token renamed"),
    ("token.revoked", "Token revoked"),
];

/// The human-readable name of an audit action: from the table, or else
/// the code made readable ("token.rotated" → "Token rotated").
pub fn action_label(code: &str) -> String {
    if let Some((_, label)) = ACTION_LABELS.iter().find(|(c, _)| *c == code) {
        return (*label).to_string();
    }
    let words = code.replace(['.', '_'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One choice of the Action filter.
pub struct ActionChoice {
    pub code: String,
    pub label: String,
}

/// The filter's choices: every action Keysmith writes and any other the
/// organization's log holds, by name.
fn action_choices(in_log: Vec<String>) -> Vec<ActionChoice> {
    let mut codes: Vec<String> = ACTION_LABELS.iter().map(|(c, _)| c.to_string()).collect();
    for code in in_log {
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    let mut choices: Vec<ActionChoice> = codes
        .into_iter()
        .map(|code| ActionChoice {
            label: action_label(&code),
            code,
        })
        .collect();
    choices.sort_by(|a, b| a.label.cmp(&b.label));
    choices
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
        // Revoked on a leak report: the report came from the scanner.
        (None, None) if e.action == "token.revoked" && e.detail.as_deref() == Some("leaked") => {
            crate::service::leaks::REPORTER.into()
        }
        // SCIM changes name the secret they came with: "SCIM (Okta)".
        (None, None) if e.detail.as_deref().is_some_and(|d| d.starts_with("SCIM (")) => {
            e.detail.clone().unwrap_or_default()
        }
        (None, None) if e.detail.as_deref() == Some("sso") => "The single sign-on provider".into(),
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
    pub action_label: String,
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
    actions: Vec<ActionChoice>,
    events: Vec<EventView>,
    pager: PagerView,
    csv: String,
    problems: Vec<FilterProblem>,
}

impl AuditPage {
    /// The message about this filter field, if it could not be read.
    fn problem(&self, field: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|p| p.field == field)
            .map(|p| p.message.as_str())
    }
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
    let actions = action_choices(store_team::audit_actions(&state.db, org).await?);
    let known: Vec<String> = actions.iter().map(|a| a.code.clone()).collect();
    let layout = Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "team");
    let f = match filter(&q, &known) {
        Ok(f) => f,
        Err(problems) => {
            // The form again with what to fix; 422, and no events: the
            // log does not guess what was meant.
            let html = AuditPage {
                layout,
                csv: format!("/team/audit.csv{}", q.query_string(None)),
                q,
                actions,
                events: Vec::new(),
                pager: pager(1, 0, PAGE_SIZE, |_| String::new()),
                problems,
            }
            .render()?;
            return Ok(no_store(
                (StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response(),
            ));
        }
    };
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
                action_label: action_label(&e.action),
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
    let html = AuditPage {
        layout,
        csv: format!("/team/audit.csv{}", q.query_string(None)),
        q,
        actions,
        events,
        pager,
        problems: Vec::new(),
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

/// One event as a CSV line, appended to `out`.
fn csv_line(out: &mut String, e: &AuditRow) {
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
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f));
    }
    out.push_str("\r\n");
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
    let known: Vec<String> = action_choices(store_team::audit_actions(&state.db, org).await?)
        .into_iter()
        .map(|a| a.code)
        .collect();
    let f = match filter(&q, &known) {
        Ok(f) => f,
        Err(problems) => {
            let text: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            return Ok(no_store(
                (StatusCode::UNPROCESSABLE_ENTITY, text.join("\n") + "\n").into_response(),
            ));
        }
    };
    // Streamed in keyset chunks (newest first, like the page), so a log of
    // any size is exported without being held in memory.
    let db = state.db.clone();
    let chunks = futures_util::stream::try_unfold(
        (Some(None::<(i64, i64)>), true),
        move |(next, first)| {
            let db = db.clone();
            let f = f.clone();
            async move {
                let Some(before) = next else {
                    return Ok(None);
                };
                let events = store_team::audit_events_before(&db, org, &f, before, CSV_CHUNK).await;
                let events = events.inspect_err(|e| {
                    tracing::error!(error = %e, "the audit export stopped: the log could not be read");
                })?;
                let mut out = String::with_capacity(events.len() * 160 + CSV_HEADER.len());
                if first {
                    out.push_str(CSV_HEADER);
                }
                for e in &events {
                    csv_line(&mut out, e);
                }
                let more =
                    (events.len() as i64 == CSV_CHUNK).then(|| events.last().map(|e| (e.at, e.id)));
                if out.is_empty() {
                    return Ok(None);
                }
                Ok::<_, crate::store::StoreError>(Some((
                    axum::body::Bytes::from(out),
                    (more, false),
                )))
            }
        },
    );
    let mut response = axum::body::Body::from_stream(chunks).into_response();
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
    fn actions_read_as_names() {
        assert_eq!(action_label("session.signed_in"), "Signed in");
        assert_eq!(action_label("token.rotated"), "Token rotated");
        assert_eq!(
            action_label("scim.user_provisioned"),
            "Scim user provisioned"
        );
        let choices = action_choices(vec!["token.rotated".into(), "token.revoked".into()]);
        assert!(choices.iter().any(|c| c.code == "token.rotated"));
        assert_eq!(
            choices.iter().filter(|c| c.code == "token.revoked").count(),
            1
        );
    }

    #[test]
    fn unreadable_filters_are_named_not_ignored() {
        let known = vec!["token.revoked".to_string()];
        let q = AuditQuery {
            token: "abc".into(),
            since: "yesterday".into(),
            action: "token.nuked".into(),
            member: "x".repeat(255),
            ..AuditQuery::default()
        };
        let fields: Vec<&str> = filter(&q, &known)
            .unwrap_err()
            .iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["member", "token", "action", "since"]);
        let q = AuditQuery {
            since: "2026-03-02".into(),
            until: "2026-03-01".into(),
            ..AuditQuery::default()
        };
        assert_eq!(filter(&q, &known).unwrap_err()[0].field, "until");
        let q = AuditQuery {
            member: " Ada_ ".into(),
            action: "token.revoked".into(),
            ..AuditQuery::default()
        };
        let f = filter(&q, &known).unwrap();
        assert_eq!(f.member, "%ada\\_%");
        assert_eq!(f.action, "token.revoked");
    }

    #[test]
    fn days_read_as_utc_midnight() {
        assert_eq!(day_start("1970-01-02"), Some(86_400));
        assert_eq!(day_start("yesterday"), None);
    }
}
