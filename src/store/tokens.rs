//! API tokens: rows are created with the token's digest (never the token),
//! and are never deleted: a revoked token stays as a tombstone.

use sqlx::AnyConnection;

use super::{AuditEvent, Db, StoreResult, conflict_on_unique, record_audit, unix_now};
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

/// The conditions shared by a page and its counts. Parameters: $1
/// organization, $2 owner, $3 status filter, $4 now, $5 "expires soon"
/// bound, $6 search pattern ('' for none), $7 scope pattern ('' for none),
/// $8 project (0 any, -1 unrestricted).
macro_rules! listing_where {
    () => {
        "WHERE organization_id = $1 AND user_id = $2 \
         AND ($3 = 'all' \
           OR ($3 = 'live' AND revoked_at IS NULL) \
           OR ($3 = 'enabled' AND revoked_at IS NULL AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > $4)) \
           OR ($3 = 'expiring' AND revoked_at IS NULL AND disabled_at IS NULL AND expires_at > $4 AND expires_at <= $5) \
           OR ($3 = 'disabled' AND revoked_at IS NULL AND disabled_at IS NOT NULL AND (expires_at IS NULL OR expires_at > $4)) \
           OR ($3 = 'expired' AND revoked_at IS NULL AND expires_at <= $4) \
           OR ($3 = 'revoked' AND revoked_at IS NOT NULL)) \
         AND ($6 = '' OR LOWER(label) LIKE $6 ESCAPE '\\' OR LOWER(display_prefix) LIKE $6 ESCAPE '\\') \
         AND ($7 = '' OR (' ' || scopes || ' ') LIKE $7 ESCAPE '\\') \
         AND ($8 = 0 \
           OR ($8 > 0 AND EXISTS (SELECT 1 FROM api_token_projects tp WHERE tp.token_id = api_tokens.id AND tp.project_id = $8)) \
           OR ($8 = -1 AND NOT EXISTS (SELECT 1 FROM api_token_projects tp WHERE tp.token_id = api_tokens.id))) "
    };
}

/// The group a row falls in ($4 is now): 0 working, 1 disabled or expired, 2 revoked.
macro_rules! listing_group {
    () => {
        "(CASE WHEN revoked_at IS NOT NULL THEN 2 \
          WHEN disabled_at IS NOT NULL OR expires_at <= $4 THEN 1 ELSE 0 END)"
    };
}

/// One page in one order: the ids are chosen (and sorted) first on the
/// narrow index columns, and only the page's rows are read in full.
/// $9 limit, $10 offset, $11 grouped (1) or not (0).
macro_rules! listing_page {
    ($order:literal) => {
        concat!(
            select_tokens!("WHERE id IN (SELECT id FROM api_tokens "),
            listing_where!(),
            "ORDER BY (CASE WHEN $11 = 1 THEN ",
            listing_group!(),
            " ELSE 0 END), ",
            $order,
            " LIMIT $9 OFFSET $10) ORDER BY (CASE WHEN $11 = 1 THEN ",
            listing_group!(),
            " ELSE 0 END), ",
            $order
        )
    };
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

struct ListingParams {
    status: &'static str,
    search: String,
    scope: String,
    project: i64,
}

fn listing_params(q: &TokenQuery) -> ListingParams {
    ListingParams {
        status: q.status.as_str(),
        search: if q.search.is_empty() {
            String::new()
        } else {
            format!("%{}%", escape_like(&q.search.to_lowercase()))
        },
        // Stored scopes are space-separated: match a whole name.
        scope: q
            .scope
            .as_deref()
            .map(|s| format!("% {} %", escape_like(s)))
            .unwrap_or_default(),
        project: match q.project {
            ProjectFilter::Any => 0,
            ProjectFilter::Project(id) => id,
            ProjectFilter::Unrestricted => -1,
        },
    }
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
    let sql = match q.sort {
        TokenSort::Created => listing_page!("created_at DESC, id DESC"),
        TokenSort::LastUsed => listing_page!("(last_used_at IS NULL), last_used_at DESC, id DESC"),
        TokenSort::Expiry => listing_page!("(expires_at IS NULL), expires_at ASC, id DESC"),
    };
    let p = listing_params(q);
    let rows: Vec<TokenRow> = sqlx::query_as(sql)
        .bind(organization_id)
        .bind(user_id)
        .bind(p.status)
        .bind(now)
        .bind(now + EXPIRES_SOON_SECONDS)
        .bind(p.search)
        .bind(p.scope)
        .bind(p.project)
        .bind(q.limit)
        .bind(q.offset)
        .bind(i64::from(q.grouped))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(record).collect())
}

/// How many of the owner's tokens match `q` (its page bounds ignored), per group.
pub async fn count_matching(
    db: &Db,
    organization_id: i64,
    user_id: i64,
    q: &TokenQuery,
    now: i64,
) -> StoreResult<GroupCounts> {
    let p = listing_params(q);
    let rows: Vec<(i64, i64)> = sqlx::query_as(concat!(
        "SELECT ",
        listing_group!(),
        " AS g, COUNT(*) FROM api_tokens ",
        listing_where!(),
        "GROUP BY 1"
    ))
    .bind(organization_id)
    .bind(user_id)
    .bind(p.status)
    .bind(now)
    .bind(now + EXPIRES_SOON_SECONDS)
    .bind(p.search)
    .bind(p.scope)
    .bind(p.project)
    .fetch_all(db.pool())
    .await?;
    let mut counts = GroupCounts::default();
    for (group, n) in rows {
        match group {
            0 => counts.working = n,
            1 => counts.stopped = n,
            _ => counts.revoked = n,
        }
    }
    Ok(counts)
}
