//! API tokens: rows are created with the token's digest (never the token),
//! and are never deleted: a revoked token stays as a tombstone.

use sqlx::any::AnyArguments;
use sqlx::error::BoxDynError;
use sqlx::{Any, AnyConnection, Arguments};

use super::{
    AuditEvent, Backend, Db, StoreError, StoreResult, conflict_on_unique, record_audit, unix_now,
};
use crate::domain::TokenLabel;
use crate::token::{DisplayPrefix, ScopeSet, TokenDigest};

/// Everything needed to store a freshly minted token.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub user_id: i64,
    pub organization_id: i64,
    pub label: &'a TokenLabel,
    pub display_prefix: &'a DisplayPrefix,
    pub digest: &'a TokenDigest,
    pub scopes: &'a ScopeSet,
    pub expires_at: Option<i64>,
    pub project_ids: &'a [i64],
    pub created_ip: Option<&'a str>,
    pub created_user_agent: Option<&'a str>,
}

/// A stored token as the pages and APIs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub user_id: i64,
    pub organization_id: i64,
    pub label: String,
    pub display_prefix: String,
    pub scopes: ScopeSet,
    pub created_at: i64,
    pub created_ip: Option<String>,
    pub created_user_agent: Option<String>,
    pub expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Why it was revoked ([`RevokeReason::as_str`]), once it is.
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<i64>,
    pub last_used_method: Option<String>,
    pub last_used_path: Option<String>,
    pub last_used_ip: Option<String>,
    /// Who disabled it, while it is disabled (unknown for tokens disabled
    /// before this was recorded and never named in the audit log).
    pub disabled_by: Option<DisabledBy>,
}

/// The person whose disable holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledBy {
    pub user_id: i64,
    pub email: String,
}

impl TokenRecord {
    /// Disabled by someone other than its owner (a superuser, on the Team
    /// page): only a superuser may enable it again.
    pub fn locked_by(&self) -> Option<&DisabledBy> {
        self.disabled_by
            .as_ref()
            .filter(|by| by.user_id != self.user_id)
    }
}

/// The columns `TokenRecord` is read from, followed by the rest of a query.
/// (A macro so the whole statement stays a `&'static str`, as sqlx wants.)
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, organization_id, label, display_prefix, scopes, created_at, created_ip, \
             created_user_agent, expires_at, disabled_at, revoked_at, revoked_reason, last_used_at, last_used_method, \
             last_used_path, last_used_ip, disabled_by_user_id, \
             (SELECT u.email FROM users u WHERE u.id = api_tokens.disabled_by_user_id) AS disabled_by_email \
             FROM api_tokens ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    user_id: i64,
    organization_id: i64,
    label: String,
    display_prefix: String,
    scopes: String,
    created_at: i64,
    created_ip: Option<String>,
    created_user_agent: Option<String>,
    expires_at: Option<i64>,
    disabled_at: Option<i64>,
    revoked_at: Option<i64>,
    revoked_reason: Option<String>,
    last_used_at: Option<i64>,
    last_used_method: Option<String>,
    last_used_path: Option<String>,
    last_used_ip: Option<String>,
    disabled_by_user_id: Option<i64>,
    disabled_by_email: Option<String>,
}

fn record(row: TokenRow) -> TokenRecord {
    TokenRecord {
        id: row.id,
        user_id: row.user_id,
        organization_id: row.organization_id,
        label: row.label,
        display_prefix: row.display_prefix,
        scopes: ScopeSet::from_stored(&row.scopes),
        created_at: row.created_at,
        created_ip: row.created_ip,
        created_user_agent: row.created_user_agent,
        expires_at: row.expires_at,
        disabled_at: row.disabled_at,
        revoked_at: row.revoked_at,
        revoked_reason: row.revoked_reason,
        last_used_at: row.last_used_at,
        last_used_method: row.last_used_method,
        last_used_path: row.last_used_path,
        last_used_ip: row.last_used_ip,
        // Who disabled it matters only while it is disabled.
        disabled_by: match (row.disabled_at, row.disabled_by_user_id) {
            (Some(_), Some(user_id)) => Some(DisabledBy {
                user_id,
                email: row.disabled_by_email.unwrap_or_default(),
            }),
            _ => None,
        },
    }
}

/// Inserts the token, its project restriction and the `token.created` audit
/// event. Fails with `Conflict` when the owner has a live token with this label.
pub async fn create(conn: &mut AnyConnection, t: &NewToken<'_>) -> StoreResult<i64> {
    let now = unix_now();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO api_tokens (user_id, organization_id, label, display_prefix, token_hash, scopes, \
         created_at, created_ip, created_user_agent, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(t.user_id)
    .bind(t.organization_id)
    .bind(t.label.as_str())
    .bind(t.display_prefix.as_str())
    .bind(t.digest.to_hex())
    .bind(t.scopes.to_stored())
    .bind(now)
    .bind(t.created_ip)
    .bind(t.created_user_agent)
    .bind(t.expires_at)
    .fetch_one(&mut *conn)
    .await
    .map_err(conflict_on_unique("you already have a live token with this label"))?;
    for project_id in t.project_ids {
        sqlx::query("INSERT INTO api_token_projects (token_id, project_id) VALUES ($1, $2)")
            .bind(id)
            .bind(project_id)
            .execute(&mut *conn)
            .await?;
    }
    record_audit(
        conn,
        &AuditEvent {
            organization_id: Some(t.organization_id),
            actor_user_id: Some(t.user_id),
            subject_user_id: Some(t.user_id),
            token_id: Some(id),
            action: "token.created",
            ip: t.created_ip,
            user_agent: t.created_user_agent,
            ..AuditEvent::default()
        },
    )
    .await?;
    Ok(id)
}

/// How many live (unrevoked, unexpired) tokens the member holds in the
/// organization, inside the caller's transaction.
pub async fn count_live(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    now: i64,
) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM api_tokens WHERE organization_id = $1 AND user_id = $2 \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(organization_id)
    .bind(user_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n)
}

/// When the member's `nth` newest token created after `since` was created
/// (revoked ones count: they were created), or `None` when they created
/// fewer than `nth` since then. Inside the caller's transaction.
pub async fn nth_newest_creation_since(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    since: i64,
    nth: i64,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT created_at FROM api_tokens WHERE organization_id = $1 AND user_id = $2 \
         AND created_at > $3 ORDER BY created_at DESC LIMIT 1 OFFSET $4",
    )
    .bind(organization_id)
    .bind(user_id)
    .bind(since)
    .bind(nth - 1)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(at,)| at))
}

/// The owner's tokens in one organization, newest first. Revoked ones only
/// when asked for (they are tombstones).
pub async fn list_for_owner(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    include_revoked: bool,
) -> StoreResult<Vec<TokenRecord>> {
    let rows: Vec<TokenRow> = sqlx::query_as(select_tokens!(
        "WHERE organization_id = $1 AND user_id = $2 AND ($3 = 1 OR revoked_at IS NULL) \
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(organization_id)
    .bind(user_id)
    .bind(i64::from(include_revoked))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(record).collect())
}

/// Finds a token by the digest of the presented secret.
pub async fn find_by_digest(db: &Db, digest: &TokenDigest) -> StoreResult<Option<TokenRecord>> {
    let row: Option<TokenRow> = sqlx::query_as(select_tokens!("WHERE token_hash = $1"))
        .bind(digest.to_hex())
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(record))
}

/// Who is acting on a token, and from where; recorded in the audit event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actor<'a> {
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Why a token was revoked, stored on the tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// By its owner, on the settings page or the JSON API.
    Owner,
    /// By an organization superuser.
    Superuser,
    /// Through the "this wasn't me" link in an email.
    EmailLink,
    /// Reported as found in public by a secret scanning service.
    Leaked,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Owner => "owner",
            RevokeReason::Superuser => "superuser",
            RevokeReason::EmailLink => "email_link",
            RevokeReason::Leaked => "leaked",
        }
    }
}

/// Revokes a live token of `organization_id`. Returns false when there is no
/// such live token (unknown, another organization's, or already revoked):
/// revocation is permanent and happens once.
pub async fn revoke(
    conn: &mut AnyConnection,
    organization_id: i64,
    token_id: i64,
    reason: RevokeReason,
    actor: &Actor<'_>,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1, revoked_by_user_id = $2, revoked_reason = $3 \
         WHERE id = $4 AND organization_id = $5 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(actor.user_id)
    .bind(reason.as_str())
    .bind(token_id)
    .bind(organization_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    audit_token(
        conn,
        organization_id,
        token_id,
        "token.revoked",
        Some(reason.as_str()),
        actor,
    )
    .await?;
    Ok(true)
}

/// Whose say an enable carries: an owner lifts only a disable they made
/// (or one from before this was recorded); a superuser lifts any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    Owner,
    Superuser,
}

/// Disables or re-enables a live token, recording who disabled it. Returns
/// false when there is no such live token, it is already in that state, or
/// (enabling as its owner) someone else's disable holds it.
pub async fn set_disabled(
    conn: &mut AnyConnection,
    organization_id: i64,
    token_id: i64,
    disabled: bool,
    authority: Authority,
    actor: &Actor<'_>,
    now: i64,
) -> StoreResult<bool> {
    let done = if disabled {
        sqlx::query(
            "UPDATE api_tokens SET disabled_at = $1, disabled_by_user_id = $2 \
             WHERE id = $3 AND organization_id = $4 AND revoked_at IS NULL AND disabled_at IS NULL",
        )
        .bind(now)
        .bind(actor.user_id)
        .bind(token_id)
        .bind(organization_id)
        .execute(&mut *conn)
        .await?
    } else {
        // The owner's condition is part of the update, so a superuser's
        // disable landing at the same moment cannot be undone by it.
        sqlx::query(
            "UPDATE api_tokens SET disabled_at = NULL, disabled_by_user_id = NULL \
             WHERE id = $1 AND organization_id = $2 AND revoked_at IS NULL AND disabled_at IS NOT NULL \
             AND ($3 = 0 OR disabled_by_user_id IS NULL OR disabled_by_user_id = user_id)",
        )
        .bind(token_id)
        .bind(organization_id)
        .bind(i64::from(authority == Authority::Owner))
        .execute(&mut *conn)
        .await?
    };
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let action = if disabled {
        "token.disabled"
    } else {
        "token.enabled"
    };
    audit_token(conn, organization_id, token_id, action, None, actor).await?;
    Ok(true)
}

/// Who holds a live token disabled against its owner, read inside the
/// caller's transaction: the email of the person (not the owner) who
/// disabled it, or `None`.
pub async fn locked_by(
    conn: &mut AnyConnection,
    organization_id: i64,
    token_id: i64,
) -> StoreResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT u.email FROM api_tokens t JOIN users u ON u.id = t.disabled_by_user_id \
         WHERE t.id = $1 AND t.organization_id = $2 AND t.revoked_at IS NULL \
         AND t.disabled_at IS NOT NULL AND t.disabled_by_user_id <> t.user_id",
    )
    .bind(token_id)
    .bind(organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(email,)| email))
}

/// Renames a live token. `Conflict` when the owner has another live token
/// with this label; false when there is no such live token.
pub async fn rename(
    conn: &mut AnyConnection,
    organization_id: i64,
    token_id: i64,
    label: &TokenLabel,
    actor: &Actor<'_>,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE api_tokens SET label = $1 WHERE id = $2 AND organization_id = $3 AND revoked_at IS NULL",
    )
    .bind(label.as_str())
    .bind(token_id)
    .bind(organization_id)
    .execute(&mut *conn)
    .await
    .map_err(conflict_on_unique("you already have a live token with this label"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    audit_token(
        conn,
        organization_id,
        token_id,
        "token.renamed",
        Some(label.as_str()),
        actor,
    )
    .await?;
    Ok(true)
}

async fn audit_token(
    conn: &mut AnyConnection,
    organization_id: i64,
    token_id: i64,
    action: &str,
    detail: Option<&str>,
    actor: &Actor<'_>,
) -> StoreResult<()> {
    let (owner,): (i64,) = sqlx::query_as("SELECT user_id FROM api_tokens WHERE id = $1")
        .bind(token_id)
        .fetch_one(&mut *conn)
        .await?;
    record_audit(
        conn,
        &AuditEvent {
            organization_id: Some(organization_id),
            actor_user_id: actor.user_id,
            actor_token_id: actor.token_id,
            subject_user_id: Some(owner),
            token_id: Some(token_id),
            action,
            detail,
            ip: actor.ip,
            user_agent: actor.user_agent,
        },
    )
    .await
}

/// One token by id within an organization, revoked or not.
pub async fn find_in_org(
    db: &Db,
    organization_id: i64,
    token_id: i64,
) -> StoreResult<Option<TokenRecord>> {
    let row: Option<TokenRow> =
        sqlx::query_as(select_tokens!("WHERE id = $1 AND organization_id = $2"))
            .bind(token_id)
            .bind(organization_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(row.map(record))
}

/// What an email about a token says: the token, its organization, its owner.
#[derive(Debug, Clone)]
pub struct TokenMailFacts {
    pub token: TokenRecord,
    pub organization_name: String,
    pub owner_email: String,
}

pub async fn mail_facts(db: &Db, token_id: i64) -> StoreResult<Option<TokenMailFacts>> {
    let Some(org_id) =
        sqlx::query_as::<_, (i64,)>("SELECT organization_id FROM api_tokens WHERE id = $1")
            .bind(token_id)
            .fetch_optional(db.pool())
            .await?
    else {
        return Ok(None);
    };
    let Some(token) = find_in_org(db, org_id.0, token_id).await? else {
        return Ok(None);
    };
    let (organization_name, owner_email): (String, String) = sqlx::query_as(
        "SELECT o.name, u.email FROM organizations o, users u WHERE o.id = $1 AND u.id = $2",
    )
    .bind(token.organization_id)
    .bind(token.user_id)
    .fetch_one(db.pool())
    .await?;
    Ok(Some(TokenMailFacts {
        token,
        organization_name,
        owner_email,
    }))
}

/// The token a revoke-from-email link names, with where it was created.
pub async fn find_by_id(db: &Db, token_id: i64) -> StoreResult<Option<TokenRecord>> {
    Ok(mail_facts(db, token_id).await?.map(|f| f.token))
}

/// Live tokens whose expiry falls in `(after, until]`, that lived longer than
/// `min_lifetime` seconds, and have not had `notice` yet: (token id, owner email).
pub async fn due_for_notice(
    db: &Db,
    notice: &str,
    after: i64,
    until: i64,
    min_lifetime: i64,
) -> StoreResult<Vec<(i64, String)>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT t.id, u.email FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.revoked_at IS NULL AND t.expires_at IS NOT NULL \
         AND t.expires_at > $1 AND t.expires_at <= $2 AND t.expires_at - t.created_at > $3 \
         AND NOT EXISTS (SELECT 1 FROM token_notices n WHERE n.token_id = t.id AND n.notice = $4) \
         ORDER BY t.id LIMIT 500",
    )
    .bind(after)
    .bind(until)
    .bind(min_lifetime)
    .bind(notice)
    .fetch_all(db.pool())
    .await?;
    Ok(rows)
}

/// Records that `notice` went out for the token. False when it already had:
/// the primary key makes this the once-only gate across instances.
pub async fn claim_notice(
    conn: &mut AnyConnection,
    token_id: i64,
    notice: &str,
    now: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO token_notices (token_id, notice, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (token_id, notice) DO NOTHING",
    )
    .bind(token_id)
    .bind(notice)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- listing pages

/// A token expiring within this long counts as "expiring soon".
pub const EXPIRES_SOON_SECONDS: i64 = 7 * 86_400;

/// Which tokens a listing shows. `Live` (everything not revoked) is the
/// settings page's default; the others match the status badges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    Live,
    /// Working now (expiring soon included).
    Enabled,
    ExpiresSoon,
    Disabled,
    Expired,
    Revoked,
    All,
}

impl StatusFilter {
    pub const ALL: [StatusFilter; 7] = [
        StatusFilter::Live,
        StatusFilter::Enabled,
        StatusFilter::ExpiresSoon,
        StatusFilter::Disabled,
        StatusFilter::Expired,
        StatusFilter::Revoked,
        StatusFilter::All,
    ];

    /// The query-string value (also what the SQL below compares with).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Live => "live",
            StatusFilter::Enabled => "enabled",
            StatusFilter::ExpiresSoon => "expiring",
            StatusFilter::Disabled => "disabled",
            StatusFilter::Expired => "expired",
            StatusFilter::Revoked => "revoked",
            StatusFilter::All => "all",
        }
    }

    pub fn parse(raw: &str) -> Option<StatusFilter> {
        StatusFilter::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// How the filter reads in the page's select.
    pub fn text(self) -> &'static str {
        match self {
            StatusFilter::Live => "Not revoked",
            StatusFilter::Enabled => "Enabled",
            StatusFilter::ExpiresSoon => "Expires soon",
            StatusFilter::Disabled => "Disabled",
            StatusFilter::Expired => "Expired",
            StatusFilter::Revoked => "Revoked",
            StatusFilter::All => "All, revoked included",
        }
    }
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenSort {
    /// Newest first.
    #[default]
    Created,
    /// Most recently used first; never-used last.
    LastUsed,
    /// Soonest expiry first; no expiry last.
    Expiry,
}

impl TokenSort {
    pub const ALL: [TokenSort; 3] = [TokenSort::Created, TokenSort::LastUsed, TokenSort::Expiry];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenSort::Created => "created",
            TokenSort::LastUsed => "last_used",
            TokenSort::Expiry => "expiry",
        }
    }

    pub fn parse(raw: &str) -> Option<TokenSort> {
        TokenSort::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn text(self) -> &'static str {
        match self {
            TokenSort::Created => "Newest first",
            TokenSort::LastUsed => "Recently used",
            TokenSort::Expiry => "Expiring first",
        }
    }
}

/// Which project restriction a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectFilter {
    #[default]
    Any,
    /// Tokens restricted to (among others) this project.
    Project(i64),
    /// Tokens valid for all projects (no restriction).
    Unrestricted,
}

/// One page of one owner's tokens: already parsed, so every field is valid.
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    /// Matched, case-insensitively, anywhere in the label or display prefix.
    pub search: String,
    pub status: StatusFilter,
    /// A scope name the token must hold.
    pub scope: Option<String>,
    pub project: ProjectFilter,
    pub sort: TokenSort,
    /// Group the page as the settings page shows it: working tokens first,
    /// then disabled and expired, then revoked (each group in `sort` order).
    pub grouped: bool,
    pub offset: i64,
    pub limit: i64,
}

/// Rows per group of a filtered listing (for headings and page counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Not revoked, not disabled, not expired.
    pub working: i64,
    /// Disabled or expired (not revoked).
    pub stopped: i64,
    pub revoked: i64,
}

impl GroupCounts {
    pub fn total(&self) -> i64 {
        self.working + self.stopped + self.revoked
    }
}

/// A listing statement being put together: fixed SQL fragments, and a `$n`
/// placeholder for every value (nothing a user typed ever becomes SQL).
/// Only the conditions a query needs are written, so each statement is
/// one the planner can answer from the listing indexes (migrations
/// `*_token_list_indexes.sql`) without reading or sorting every row.
struct Statement {
    sql: String,
    args: Result<AnyArguments, BoxDynError>,
    bound: usize,
}

impl Statement {
    fn new(sql: &str) -> Statement {
        Statement {
            sql: sql.to_string(),
            args: Ok(AnyArguments::default()),
            bound: 0,
        }
    }

    fn push(&mut self, sql: &str) -> &mut Statement {
        self.sql.push_str(sql);
        self
    }

    /// Binds `value` and returns its placeholder, to be written (maybe twice).
    fn bind<T>(&mut self, value: T) -> String
    where
        T: for<'t> sqlx::Encode<'t, Any> + sqlx::Type<Any>,
    {
        if let Ok(args) = &mut self.args
            && let Err(e) = args.add(value)
        {
            self.args = Err(e);
        }
        self.bound += 1;
        format!("${}", self.bound)
    }

    /// Writes `sql` with each `{}` replaced by `value`'s placeholder.
    fn push_with<T>(&mut self, sql: &str, value: T) -> &mut Statement
    where
        T: for<'t> sqlx::Encode<'t, Any> + sqlx::Type<Any>,
    {
        let p = self.bind(value);
        self.sql.push_str(&sql.replace("{}", &p));
        self
    }

    /// The statement, or the error binding a value gave.
    fn query_as<O>(self) -> StoreResult<sqlx::query::QueryAs<'static, Any, O, AnyArguments>>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let args = self
            .args
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok(sqlx::query_as_with(sqlx::AssertSqlSafe(self.sql), args))
    }
}

/// `text` with LIKE's pattern characters taken literally (`ESCAPE '\\'`).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The rows of a status filter; `{}` is now.
fn status_condition(status: StatusFilter) -> Option<&'static str> {
    match status {
        StatusFilter::All => None,
        StatusFilter::Live => Some(" AND revoked_at IS NULL"),
        StatusFilter::Enabled => Some(
            " AND revoked_at IS NULL AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > {})",
        ),
        // The upper bound is added by the caller.
        StatusFilter::ExpiresSoon => {
            Some(" AND revoked_at IS NULL AND disabled_at IS NULL AND expires_at > {}")
        }
        StatusFilter::Disabled => Some(
            " AND revoked_at IS NULL AND disabled_at IS NOT NULL AND (expires_at IS NULL OR expires_at > {})",
        ),
        StatusFilter::Expired => Some(" AND revoked_at IS NULL AND expires_at <= {}"),
        StatusFilter::Revoked => Some(" AND revoked_at IS NOT NULL"),
    }
}

/// The groups of the settings page, in page order; `{}` is now.
const GROUPS: [&str; 3] = [
    // Working: not revoked, not disabled, not expired.
    " AND revoked_at IS NULL AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > {})",
    // Disabled or expired.
    " AND revoked_at IS NULL AND (disabled_at IS NOT NULL OR expires_at <= {})",
    " AND revoked_at IS NOT NULL",
];

/// `FROM api_tokens WHERE …` for the owner's tokens matching `q` (its page
/// bounds and grouping aside).
fn push_matching(
    s: &mut Statement,
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
) {
    s.push_with(
        "FROM api_tokens WHERE organization_id = {}",
        organization_id,
    )
    .push_with(" AND user_id = {}", user_id);
    if let Some(condition) = status_condition(q.status) {
        if condition.contains("{}") {
            s.push_with(condition, now);
        } else {
            s.push(condition);
        }
    }
    if q.status == StatusFilter::ExpiresSoon {
        s.push_with(" AND expires_at <= {}", now + EXPIRES_SOON_SECONDS);
    }
    if !q.search.is_empty() {
        let pattern = format!("%{}%", escape_like(&q.search.to_lowercase()));
        // The same case-insensitive match on both: SQLite's LIKE folds
        // ASCII case itself (as far as its LOWER goes), and skipping LOWER
        // there makes a search over 10,000 labels three times cheaper.
        s.push_with(
            match db.backend() {
                Backend::Sqlite => {
                    " AND (label LIKE {p} ESCAPE '\\' OR display_prefix LIKE {p} ESCAPE '\\')"
                }
                Backend::Postgres => {
                    " AND (LOWER(label) LIKE {p} ESCAPE '\\' OR LOWER(display_prefix) LIKE {p} ESCAPE '\\')"
                }
            }
            .replace("{p}", "{}")
            .as_str(),
            pattern,
        );
    }
    if let Some(scope) = &q.scope {
        // Stored scopes are space-separated: match a whole name.
        s.push_with(
            " AND (' ' || scopes || ' ') LIKE {} ESCAPE '\\'",
            format!("% {} %", escape_like(scope)),
        );
    }
    match q.project {
        ProjectFilter::Any => {}
        ProjectFilter::Project(id) => {
            s.push_with(
                " AND EXISTS (SELECT 1 FROM api_token_projects tp WHERE tp.token_id = api_tokens.id AND tp.project_id = {})",
                id,
            );
        }
        ProjectFilter::Unrestricted => {
            s.push(" AND NOT EXISTS (SELECT 1 FROM api_token_projects tp WHERE tp.token_id = api_tokens.id)");
        }
    }
}

/// The order of a listing, each matching a listing index (`Recently used`
/// excepted on PostgreSQL, see the migration).
fn order_by(sort: TokenSort) -> &'static str {
    match sort {
        TokenSort::Created => " ORDER BY created_at DESC, id DESC",
        TokenSort::LastUsed => " ORDER BY (last_used_at IS NULL), last_used_at DESC, id DESC",
        TokenSort::Expiry => " ORDER BY (expires_at IS NULL), expires_at, id DESC",
    }
}

/// Rows `offset..offset + limit` of the owner's tokens matching `q`, within
/// `group` (an entry of [`GROUPS`]) when given: the ids are chosen on the
/// index, in its order, and only those rows are read in full.
#[allow(clippy::too_many_arguments)]
async fn fetch_segment(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    group: Option<&str>,
    now: i64,
    offset: i64,
    limit: i64,
) -> StoreResult<Vec<TokenRecord>> {
    let mut s = Statement::new(select_tokens!("WHERE id IN (SELECT id "));
    push_matching(&mut s, db, organization_id, user_id, q, now);
    if let Some(group) = group {
        if group.contains("{}") {
            s.push_with(group, now);
        } else {
            s.push(group);
        }
    }
    s.push(order_by(q.sort));
    s.push_with(" LIMIT {}", limit)
        .push_with(" OFFSET {})", offset)
        .push(order_by(q.sort));
    let rows: Vec<TokenRow> = s.query_as()?.fetch_all(db.pool()).await?;
    Ok(rows.into_iter().map(record).collect())
}

/// One page of the owner's tokens matching `q`, at `now` (which decides
/// what counts as expired and expiring soon).
pub async fn list_page(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
) -> StoreResult<Vec<TokenRecord>> {
    if !q.grouped {
        return fetch_segment(
            db,
            organization_id,
            user_id,
            q,
            None,
            now,
            q.offset,
            q.limit,
        )
        .await;
    }
    let counts = count_matching(db, organization_id, user_id, q, now).await?;
    page_of_groups(db, organization_id, user_id, q, now, counts).await
}

/// A grouped page with the counts it was cut by: the counts say where each
/// group starts, so the page is read from the one or two groups it
/// overlaps, each in index order, instead of sorting every row by group.
pub async fn list_page_with_counts(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
) -> StoreResult<(Vec<TokenRecord>, GroupCounts)> {
    let counts = count_matching(db, organization_id, user_id, q, now).await?;
    let records = if q.grouped {
        page_of_groups(db, organization_id, user_id, q, now, counts).await?
    } else {
        fetch_segment(
            db,
            organization_id,
            user_id,
            q,
            None,
            now,
            q.offset,
            q.limit,
        )
        .await?
    };
    Ok((records, counts))
}

async fn page_of_groups(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
    counts: GroupCounts,
) -> StoreResult<Vec<TokenRecord>> {
    let (from, to) = (q.offset, q.offset + q.limit);
    let mut records = Vec::new();
    let mut start = 0;
    for (group, size) in GROUPS
        .iter()
        .zip([counts.working, counts.stopped, counts.revoked])
    {
        let (lo, hi) = (from.max(start), to.min(start + size));
        if lo < hi {
            let rows = fetch_segment(
                db,
                organization_id,
                user_id,
                q,
                Some(group),
                now,
                lo - start,
                hi - lo,
            )
            .await?;
            records.extend(rows);
        }
        start += size;
    }
    Ok(records)
}

/// How many of the owner's tokens match `q` (its page bounds ignored), per
/// group: one pass over the listing index (it holds every column the
/// default filters read), no row read.
pub async fn count_matching(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
) -> StoreResult<GroupCounts> {
    let mut s = Statement::new("SELECT COUNT(*), COUNT(revoked_at), ");
    s.push_with(
        "COUNT(CASE WHEN revoked_at IS NULL AND (disabled_at IS NOT NULL OR expires_at <= {}) THEN 1 END) ",
        now,
    );
    push_matching(&mut s, db, organization_id, user_id, q, now);
    let (total, revoked, stopped): (i64, i64, i64) = s.query_as()?.fetch_one(db.pool()).await?;
    Ok(GroupCounts {
        working: total - revoked - stopped,
        stopped,
        revoked,
    })
}
