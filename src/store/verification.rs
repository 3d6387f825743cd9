//! The queries behind bearer verification: one token with everything that
//! decides whether it may be used (its owner, membership, organization and
//! that organization's policy), and the batched write of "last used".
//! The verifier caches what [`load_by_digest`] returns, so this runs once per
//! token rather than once per request.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Db, StoreResult};
use crate::token::TokenDigest;

/// A token as verification sees it. Nothing here is decided yet: the
/// verifier applies the rules (and the clock) to these facts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenFacts {
    pub token_id: i64,
    pub user_id: i64,
    pub email: String,
    /// The owner's display name, where one is known (SCIM or OIDC may set
    /// it; many users have none).
    pub display_name: Option<String>,
    pub organization_id: i64,
    pub organization_name: String,
    pub label: String,
    pub display_prefix: String,
    /// Granted scope names, space separated (the stored form).
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// `None` when the owner is no longer a member at all.
    pub membership: Option<MembershipFacts>,
    /// The organization's own per-minute budgets, when it set them.
    pub reads_per_minute: Option<i64>,
    pub writes_per_minute: Option<i64>,
    /// The organization's scope policy (stored form), when it set one.
    pub allowed_scopes: Option<String>,
    /// The projects the token is restricted to, as (id, name); empty means
    /// unrestricted.
    pub projects: Vec<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MembershipFacts {
    pub role: String,
    pub can_manage_tokens: bool,
    pub disabled: bool,
}

/// Everything about the token with this digest, or `None` if no token has it.
/// One round trip: a restricted token comes back as one row per project.
pub async fn load_by_digest(db: &Db, digest: &TokenDigest) -> StoreResult<Option<TokenFacts>> {
    let rows: Vec<AnyRow> = sqlx::query(
        "SELECT t.id, t.user_id, u.email, u.display_name, t.organization_id, o.name AS organization_name, \
         t.label, t.display_prefix, t.scopes, t.created_at, t.expires_at, t.disabled_at, \
         t.revoked_at, m.role, m.can_manage_tokens, m.disabled_at AS member_disabled_at, \
         o.reads_per_minute, o.writes_per_minute, o.allowed_scopes, \
         p.id AS project_id, p.name AS project_name \
         FROM api_tokens t \
         JOIN users u ON u.id = t.user_id \
         JOIN organizations o ON o.id = t.organization_id \
         LEFT JOIN memberships m \
           ON m.organization_id = t.organization_id AND m.user_id = t.user_id \
         LEFT JOIN api_token_projects tp ON tp.token_id = t.id \
         LEFT JOIN projects p ON p.id = tp.project_id \
         WHERE t.token_hash = $1 \
         ORDER BY p.name",
    )
    .bind(digest.to_hex())
    .fetch_all(db.pool())
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut projects = Vec::new();
    for r in &rows {
        let id: Option<i64> = r.try_get("project_id")?;
        let name: Option<String> = r.try_get("project_name")?;
        if let (Some(id), Some(name)) = (id, name) {
            projects.push((id, name));
        }
    }
    let role: Option<String> = row.try_get("role")?;
    let membership = match role {
        Some(role) => Some(MembershipFacts {
            role,
            can_manage_tokens: row.try_get::<Option<i64>, _>("can_manage_tokens")? == Some(1),
            disabled: row
                .try_get::<Option<i64>, _>("member_disabled_at")?
                .is_some(),
        }),
        None => None,
    };
    Ok(Some(TokenFacts {
        token_id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        organization_id: row.try_get("organization_id")?,
        organization_name: row.try_get("organization_name")?,
        label: row.try_get("label")?,
        display_prefix: row.try_get("display_prefix")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        disabled_at: row.try_get("disabled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        membership,
        reads_per_minute: row.try_get("reads_per_minute")?,
        writes_per_minute: row.try_get("writes_per_minute")?,
        allowed_scopes: row.try_get("allowed_scopes")?,
        projects,
    }))
}

/// The latest use of one token, as recorded on its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    pub token_id: i64,
    pub at: i64,
    pub method: String,
    pub path: String,
    pub ip: std::net::IpAddr,
}

/// Rows per statement. Each statement takes its rows as one JSON parameter,
/// so binding costs nothing per row; the chunk only bounds the statement's
/// size (about 80 KB at this many rows).
const FLUSH_CHUNK: usize = 1000;

/// Writes a batch of last uses, one statement per [`FLUSH_CHUNK`] rows, in
/// one transaction. A use older than what the row already holds (another
/// instance saw a later one) does not overwrite it.
pub async fn record_last_used(db: &Db, uses: &[LastUse]) -> StoreResult<()> {
    if uses.is_empty() {
        return Ok(());
    }
    // The rows arrive as a JSON array of `[id, at, method, path, ip]`
    // arrays, unpacked by the engine's own JSON table function: the one
    // part of this statement the two dialects spell differently.
    let rows = match db.backend() {
        Backend::Sqlite => "json_each($1) AS j",
        Backend::Postgres => "json_array_elements(CAST($1 AS json)) AS j(value)",
    };
    let sql = format!(
        "UPDATE api_tokens SET last_used_at = v.at, last_used_method = v.method, \
         last_used_path = v.path, last_used_ip = v.ip \
         FROM (SELECT CAST(j.value ->> 0 AS BIGINT) AS id, CAST(j.value ->> 1 AS BIGINT) AS at, \
         j.value ->> 2 AS method, j.value ->> 3 AS path, j.value ->> 4 AS ip FROM {rows}) AS v \
         WHERE api_tokens.id = v.id \
         AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at <= v.at)"
    );
    let mut tx = db.begin().await?;
    for chunk in uses.chunks(FLUSH_CHUNK) {
        // An address serializes as its text form.
        let rows: Vec<(i64, i64, &str, &str, std::net::IpAddr)> = chunk
            .iter()
            .map(|u| (u.token_id, u.at, u.method.as_str(), u.path.as_str(), u.ip))
            .collect();
        // Numbers and strings always serialize.
        let json = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(json)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
