//! What the Team page reads and writes beyond single memberships: the member
//! list (search, paging, live token counts, last use), invitations, roles,
//! the organization's policy and projects, and the audit log.

use sqlx::AnyConnection;

use super::orgs::{OrgPolicy, Role, User, find_or_create_user};
use super::{Db, StoreResult, conflict_on_unique};
use crate::domain::EmailAddress;

/// Where a member stands, as the Team page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Active,
    Disabled,
    /// Invited, not accepted yet.
    Invited,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Disabled => "disabled",
            MemberStatus::Invited => "invited",
        }
    }
}

/// One member as a row of the Team page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub can_manage_tokens: bool,
    pub status: MemberStatus,
    /// Tokens neither revoked nor expired.
    pub live_tokens: i64,
    pub last_token_use: Option<i64>,
}

type MemberTuple = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<i64>,
);

fn member_row(row: MemberTuple) -> MemberRow {
    let (user_id, email, role, can, disabled_at, joined_at, live_tokens, last_token_use) = row;
    MemberRow {
        user_id,
        email,
        role: if role == "superuser" {
            Role::Superuser
        } else {
            Role::Member
        },
        can_manage_tokens: can == 1,
        status: if disabled_at.is_some() {
            MemberStatus::Disabled
        } else if joined_at.is_none() {
            MemberStatus::Invited
        } else {
            MemberStatus::Active
        },
        live_tokens,
        last_token_use,
    }
}

const MEMBER_COLUMNS: &str = "SELECT m.user_id, u.email, m.role, m.can_manage_tokens, m.disabled_at, m.joined_at, \
     (SELECT COUNT(*) FROM api_tokens t WHERE t.organization_id = m.organization_id AND t.user_id = m.user_id \
       AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)), \
     (SELECT MAX(t.last_used_at) FROM api_tokens t WHERE t.organization_id = m.organization_id AND t.user_id = m.user_id) \
     FROM memberships m JOIN users u ON u.id = m.user_id";

/// `%term%` for `LIKE … ESCAPE '\'`, lower-cased (emails are stored so).
pub fn like_pattern(search: &str) -> String {
    let mut p = String::from("%");
    for c in search.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// One page of members whose email contains `search`, by email.
#[tracing::instrument(skip(db))]
pub async fn list_members(
    db: &Db,
    organization_id: i64,
    search: &str,
    limit: i64,
    offset: i64,
    now: i64,
) -> StoreResult<Vec<MemberRow>> {
    let sql = format!(
        "{MEMBER_COLUMNS} WHERE m.organization_id = $1 AND u.email LIKE $3 ESCAPE '\\' \
         ORDER BY u.email LIMIT $4 OFFSET $5"
    );
    let rows: Vec<MemberTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(now)
        .bind(like_pattern(search))
        .bind(limit)
        .bind(offset)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(member_row).collect())
}

/// How many members match `search` (for the pager).
pub async fn count_members(db: &Db, organization_id: i64, search: &str) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND u.email LIKE $2 ESCAPE '\\'",
    )
    .bind(organization_id)
    .bind(like_pattern(search))
    .fetch_one(db.pool())
    .await?;
    Ok(n)
}

/// One member of the organization (any status), or `None`.
pub async fn member(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    now: i64,
) -> StoreResult<Option<MemberRow>> {
    let sql = format!("{MEMBER_COLUMNS} WHERE m.organization_id = $1 AND m.user_id = $3");
    let row: Option<MemberTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(now)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(member_row))
}

/// The emails of the organization's enabled superusers (who to ask).
pub async fn superuser_emails(db: &Db, organization_id: i64) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND m.role = 'superuser' AND m.disabled_at IS NULL \
         ORDER BY u.email",
    )
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(e,)| e).collect())
}

/// Superusers who can act: joined (an invitee who never accepted cannot
/// sign in) and enabled. Counted inside the caller's transaction, after
/// `orgs::lock_organization`, so the last-superuser guard sees the state it
/// changes.
pub async fn count_working_superusers(
    conn: &mut AnyConnection,
    organization_id: i64,
) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM memberships \
         WHERE organization_id = $1 AND role = 'superuser' AND disabled_at IS NULL AND joined_at IS NOT NULL",
    )
    .bind(organization_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n)
}

/// Whether the user is a joined, enabled superuser of the organization now,
/// inside the caller's transaction (an actor demoted a moment ago is not).
pub async fn is_working_superuser(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<bool> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND user_id = $2 \
         AND role = 'superuser' AND disabled_at IS NULL AND joined_at IS NOT NULL",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Changes a member's role. False when nothing changed.
pub async fn set_role(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    role: Role,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE memberships SET role = $1 WHERE organization_id = $2 AND user_id = $3 AND role <> $1",
    )
    .bind(role.as_str())
    .bind(organization_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds `email` as an invited member (creating the user if needed): the
/// membership exists from now on, marked invited until accepted.
/// `Conflict` when they are a member already.
pub async fn invite_member(
    conn: &mut AnyConnection,
    organization_id: i64,
    email: &EmailAddress,
    can_manage_tokens: bool,
    now: i64,
) -> StoreResult<User> {
    let (user, _) = find_or_create_user(conn, email).await?;
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, can_manage_tokens, invited_at, created_at) \
         VALUES ($1, $2, 'member', $3, $4, $4)",
    )
    .bind(organization_id)
    .bind(user.id)
    .bind(i64::from(can_manage_tokens))
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(conflict_on_unique("already a member of this organization"))?;
    Ok(user)
}

/// Marks an invitation accepted. False when the membership is gone or
/// disabled (an accepted one stays accepted: true).
pub async fn accept_invitation(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    now: i64,
) -> StoreResult<bool> {
    sqlx::query(
        "UPDATE memberships SET joined_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND joined_at IS NULL AND disabled_at IS NULL",
    )
    .bind(now)
    .bind(organization_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT disabled_at FROM memberships WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(matches!(row, Some((None,))))
}

/// Whether an invitation to this member is still waiting (for the worker:
/// a withdrawn or disabled invitation is not delivered).
pub async fn invitation_pending(db: &Db, organization_id: i64, email: &str) -> StoreResult<bool> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND u.email = $2 AND m.joined_at IS NULL AND m.disabled_at IS NULL",
    )
    .bind(organization_id)
    .bind(email)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.is_some())
}

/// Ends the user's sessions that are looking at this organization (a
/// disabled member's). Sessions in their other organizations carry on; they
/// cannot switch to this one, which is no longer among their active ones.
pub async fn end_sessions_in_org(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<u64> {
    let done =
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND current_organization_id = $2")
            .bind(user_id)
            .bind(organization_id)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected())
}

/// The member's tokens that are not revoked, inside the caller's transaction.
pub async fn unrevoked_token_ids(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM api_tokens WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL ORDER BY id",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// How many of the member's tokens are not revoked (the revoke-all dialog).
pub async fn count_unrevoked_tokens(
    db: &Db,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM api_tokens WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_one(db.pool())
    .await?;
    Ok(n)
}

/// Replaces the organization's policy (every field; `None` = default).
pub async fn set_policy(
    conn: &mut AnyConnection,
    organization_id: i64,
    policy: &OrgPolicy,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE organizations SET reads_per_minute = $1, writes_per_minute = $2, \
         max_token_lifetime_days = $3, allowed_scopes = $4 WHERE id = $5",
    )
    .bind(policy.reads_per_minute)
    .bind(policy.writes_per_minute)
    .bind(policy.max_token_lifetime_days)
    .bind(policy.allowed_scopes.as_deref())
    .bind(organization_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A project as the policy section lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub archived: bool,
    /// Unrevoked tokens restricted to it.
    pub tokens: i64,
}

/// Every project of the organization, archived ones last.
pub async fn list_projects(db: &Db, organization_id: i64) -> StoreResult<Vec<ProjectRow>> {
    let rows: Vec<(i64, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT p.id, p.name, p.archived_at, \
         (SELECT COUNT(*) FROM api_token_projects tp JOIN api_tokens t ON t.id = tp.token_id \
          WHERE tp.project_id = p.id AND t.revoked_at IS NULL) \
         FROM projects p WHERE p.organization_id = $1 \
         ORDER BY CASE WHEN p.archived_at IS NULL THEN 0 ELSE 1 END, p.name",
    )
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, archived_at, tokens)| ProjectRow {
            id,
            name,
            archived: archived_at.is_some(),
            tokens,
        })
        .collect())
}

/// Renames a project. `Conflict` on a duplicate name; false when unknown.
pub async fn rename_project(
    conn: &mut AnyConnection,
    organization_id: i64,
    project_id: i64,
    name: &str,
) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE projects SET name = $1 WHERE id = $2 AND organization_id = $3")
        .bind(name)
        .bind(project_id)
        .bind(organization_id)
        .execute(&mut *conn)
        .await
        .map_err(conflict_on_unique("a project with this name exists"))?;
    Ok(done.rows_affected() == 1)
}

/// Archives (no new token may choose it) or restores a project. False when
/// unknown or already so.
pub async fn set_project_archived(
    conn: &mut AnyConnection,
    organization_id: i64,
    project_id: i64,
    archived: bool,
    now: i64,
) -> StoreResult<bool> {
    let done = if archived {
        sqlx::query(
            "UPDATE projects SET archived_at = $1 WHERE id = $2 AND organization_id = $3 AND archived_at IS NULL",
        )
        .bind(now)
        .bind(project_id)
        .bind(organization_id)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(
            "UPDATE projects SET archived_at = NULL WHERE id = $1 AND organization_id = $2 AND archived_at IS NOT NULL",
        )
        .bind(project_id)
        .bind(organization_id)
        .execute(&mut *conn)
        .await?
    };
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- audit log

/// Which events to show; zero/empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A [`like_pattern`]: events where a user whose email or name matches
    /// acted (in person or through a token) or was acted upon.
    pub member: String,
    pub token: i64,
    pub action: String,
    /// Events at or after this unix time (0: no bound).
    pub since: i64,
    /// Events before this unix time (0: no bound).
    pub until: i64,
}

/// One audit event with the names the log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub action: String,
    pub detail: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub actor_email: Option<String>,
    pub actor_token_id: Option<i64>,
    pub actor_token_label: Option<String>,
    pub subject_email: Option<String>,
    pub token_id: Option<i64>,
    pub token_label: Option<String>,
    pub token_prefix: Option<String>,
}

type AuditTuple = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

const AUDIT_JOINS: &str = "FROM audit_events e \
     LEFT JOIN api_tokens atk ON atk.id = e.actor_token_id \
     LEFT JOIN users au ON au.id = COALESCE(e.actor_user_id, atk.user_id) \
     LEFT JOIN users su ON su.id = e.subject_user_id \
     LEFT JOIN api_tokens t ON t.id = e.token_id \
     WHERE e.organization_id = $1";

/// `FROM … WHERE …` for `filter`, with parameters `$1` (the organization)
/// to `$6` (the filter's fields). A filter left empty becomes a condition on
/// its own parameter only (`$4 = ''`), not an `OR` over the rows, so each
/// combination of filters is its own statement with a plan that walks the
/// `(organization_id, created_at, id)` index instead of sorting every event.
fn audit_from(filter: &AuditFilter) -> String {
    let mut sql = String::from(AUDIT_JOINS);
    sql.push_str(if filter.member.is_empty() {
        " AND $2 = ''"
    } else {
        " AND (au.email LIKE $2 ESCAPE '\\' OR su.email LIKE $2 ESCAPE '\\' \
         OR LOWER(au.display_name) LIKE $2 ESCAPE '\\' OR LOWER(su.display_name) LIKE $2 ESCAPE '\\')"
    });
    sql.push_str(if filter.token == 0 {
        " AND $3 = 0"
    } else {
        " AND (e.token_id = $3 OR e.actor_token_id = $3)"
    });
    sql.push_str(if filter.action.is_empty() {
        " AND $4 = ''"
    } else {
        " AND e.action = $4"
    });
    sql.push_str(if filter.since == 0 {
        " AND $5 = 0"
    } else {
        " AND e.created_at >= $5"
    });
    sql.push_str(if filter.until == 0 {
        " AND $6 = 0"
    } else {
        " AND e.created_at < $6"
    });
    sql
}

/// One page of the organization's events, newest first.
#[tracing::instrument(skip(db))]
pub async fn audit_events(
    db: &Db,
    organization_id: i64,
    filter: &AuditFilter,
    limit: i64,
    offset: i64,
) -> StoreResult<Vec<AuditRow>> {
    select_audit(db, organization_id, filter, None, limit, offset).await
}

/// Up to `limit` events older than `before` (an event's `(at, id)`), newest
/// first: the export reads the log in these chunks, so what it holds at
/// once does not grow with the log.
#[tracing::instrument(skip(db))]
pub async fn audit_events_before(
    db: &Db,
    organization_id: i64,
    filter: &AuditFilter,
    before: Option<(i64, i64)>,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    select_audit(db, organization_id, filter, before, limit, 0).await
}

async fn select_audit(
    db: &Db,
    organization_id: i64,
    filter: &AuditFilter,
    before: Option<(i64, i64)>,
    limit: i64,
    offset: i64,
) -> StoreResult<Vec<AuditRow>> {
    // The keyset `(at, id)` as a row comparison, which the index serves;
    // without one, conditions on the parameters alone.
    let keyset = if before.is_some() {
        "AND $9 = 0 AND (e.created_at, e.id) < ($10, $11)"
    } else {
        "AND $9 = 1 AND $10 = 0 AND $11 = 0"
    };
    let sql = format!(
        "SELECT e.id, e.created_at, e.action, e.detail, e.ip, e.user_agent, au.email, \
         e.actor_token_id, atk.label, su.email, e.token_id, t.label, t.display_prefix {} \
         {keyset} ORDER BY e.created_at DESC, e.id DESC LIMIT $7 OFFSET $8",
        audit_from(filter)
    );
    let (at, id) = before.unwrap_or((0, 0));
    let rows: Vec<AuditTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(filter.member.as_str())
        .bind(filter.token)
        .bind(filter.action.as_str())
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .bind(offset)
        .bind(i64::from(before.is_none()))
        .bind(at)
        .bind(id)
        .fetch_all(db.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                at,
                action,
                detail,
                ip,
                user_agent,
                actor_email,
                actor_token_id,
                actor_token_label,
                subject_email,
                token_id,
                token_label,
                token_prefix,
            )| AuditRow {
                id,
                at,
                action,
                detail,
                ip,
                user_agent,
                actor_email,
                actor_token_id,
                actor_token_label,
                subject_email,
                token_id,
                token_label,
                token_prefix,
            },
        )
        .collect())
}

pub async fn count_audit_events(
    db: &Db,
    organization_id: i64,
    filter: &AuditFilter,
) -> StoreResult<i64> {
    let sql = format!("SELECT COUNT(*) {}", audit_from(filter));
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(filter.member.as_str())
        .bind(filter.token)
        .bind(filter.action.as_str())
        .bind(filter.since)
        .bind(filter.until)
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}

/// The actions that occur in the organization's log (the filter's choices).
pub async fn audit_actions(db: &Db, organization_id: i64) -> StoreResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT action FROM audit_events WHERE organization_id = $1 ORDER BY action",
    )
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_escape_like_wildcards() {
        assert_eq!(like_pattern(" Ada "), "%ada%");
        assert_eq!(like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
        assert_eq!(like_pattern(""), "%%");
    }
}
