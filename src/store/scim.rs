//! What SCIM provisioning reads and writes: the organizations' SCIM bearer
//! secrets (hashed), and members as the identity provider sees them
//! (userName, externalId, display name, email, active).

use sqlx::AnyConnection;

use super::{Db, StoreResult, conflict_on_unique};

/// A SCIM secret as the Team page lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimTokenRow {
    pub id: i64,
    pub label: String,
    pub display_prefix: String,
    pub created_at: i64,
    pub created_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Stores a new SCIM secret's digest. Returns its id.
pub async fn create_token(
    conn: &mut AnyConnection,
    organization_id: i64,
    label: &str,
    secret_hash: &str,
    display_prefix: &str,
    created_by: i64,
    now: i64,
) -> StoreResult<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO scim_tokens (organization_id, label, secret_hash, display_prefix, created_at, created_by_user_id) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(organization_id)
    .bind(label)
    .bind(secret_hash)
    .bind(display_prefix)
    .bind(now)
    .bind(created_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(conflict_on_unique("this secret exists already"))?;
    Ok(id)
}

/// The organization's SCIM secrets, newest first, revoked ones included.
pub async fn list_tokens(db: &Db, organization_id: i64) -> StoreResult<Vec<ScimTokenRow>> {
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.id, s.label, s.display_prefix, s.created_at, u.email, s.revoked_at, s.last_used_at \
         FROM scim_tokens s LEFT JOIN users u ON u.id = s.created_by_user_id \
         WHERE s.organization_id = $1 ORDER BY s.created_at DESC, s.id DESC",
    )
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, label, display_prefix, created_at, created_by, revoked_at, last_used_at)| {
                ScimTokenRow {
                    id,
                    label,
                    display_prefix,
                    created_at,
                    created_by,
                    revoked_at,
                    last_used_at,
                }
            },
        )
        .collect())
}

/// Revokes a live SCIM secret of the organization; false when there is none.
pub async fn revoke_token(
    conn: &mut AnyConnection,
    organization_id: i64,
    id: i64,
    now: i64,
) -> StoreResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE scim_tokens SET revoked_at = $1 \
         WHERE id = $2 AND organization_id = $3 AND revoked_at IS NULL RETURNING label",
    )
    .bind(now)
    .bind(id)
    .bind(organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(l,)| l))
}

/// The organization and label of a live SCIM secret with this digest; marks
/// it used (to the minute, so a busy provider does not write every call).
pub async fn find_token(
    db: &Db,
    secret_hash: &str,
    now: i64,
) -> StoreResult<Option<(i64, String)>> {
    let row: Option<(i64, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT id, organization_id, label, last_used_at FROM scim_tokens \
         WHERE secret_hash = $1 AND revoked_at IS NULL",
    )
    .bind(secret_hash)
    .fetch_optional(db.pool())
    .await?;
    let Some((id, org, label, last)) = row else {
        return Ok(None);
    };
    if last.is_none_or(|t| now - t >= 60) {
        sqlx::query("UPDATE scim_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(db.pool())
            .await?;
    }
    Ok(Some((org, label)))
}

pub async fn organization_id_by_name(db: &Db, name: &str) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM organizations WHERE name = $1")
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(id,)| id))
}

// ---------------------------------------------------------------- users

/// A member as SCIM shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUser {
    pub user_id: i64,
    pub email: String,
    /// The provider's userName; the email when it never set one.
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    pub superuser: bool,
    pub can_manage_tokens: bool,
    pub created_at: i64,
    pub modified_at: i64,
}

type UserTuple = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
    i64,
    i64,
    i64,
);

fn user_row(row: UserTuple) -> ScimUser {
    let (
        user_id,
        email,
        user_name,
        external_id,
        display_name,
        disabled_at,
        role,
        can,
        created,
        modified,
    ) = row;
    ScimUser {
        user_id,
        email,
        user_name,
        external_id,
        display_name,
        active: disabled_at.is_none(),
        superuser: role == "superuser",
        can_manage_tokens: can == 1,
        created_at: created,
        modified_at: modified,
    }
}

const USER_COLUMNS: &str = "SELECT m.user_id, u.email, COALESCE(m.scim_user_name, u.email), \
     m.scim_external_id, u.display_name, m.disabled_at, m.role, m.can_manage_tokens, m.created_at, \
     COALESCE(m.scim_modified_at, m.created_at) \
     FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1";

/// Which users a list asks for: all, or those whose attribute equals a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMatch {
    All,
    /// userName, compared case-insensitively (RFC 7643: caseExact false).
    UserName(String),
    ExternalId(String),
    Id(i64),
    Email(String),
    /// Members holding the token permission (the "token holders" group).
    TokenHolders,
}

fn match_sql(m: &UserMatch) -> &'static str {
    match m {
        UserMatch::All => " AND $2 = ''",
        UserMatch::UserName(_) => " AND LOWER(COALESCE(m.scim_user_name, u.email)) = LOWER($2)",
        UserMatch::ExternalId(_) => " AND m.scim_external_id = $2",
        UserMatch::Id(_) => " AND CAST(m.user_id AS TEXT) = $2",
        UserMatch::Email(_) => " AND u.email = LOWER($2)",
        UserMatch::TokenHolders => " AND $2 = '' AND m.can_manage_tokens = 1",
    }
}

fn match_value(m: &UserMatch) -> String {
    match m {
        UserMatch::All | UserMatch::TokenHolders => String::new(),
        UserMatch::UserName(v) | UserMatch::ExternalId(v) | UserMatch::Email(v) => v.clone(),
        UserMatch::Id(id) => id.to_string(),
    }
}

/// One page of the organization's members matching `m`, oldest first.
pub async fn list_users(
    db: &Db,
    organization_id: i64,
    m: &UserMatch,
    limit: i64,
    offset: i64,
) -> StoreResult<Vec<ScimUser>> {
    let sql = format!(
        "{USER_COLUMNS}{} ORDER BY m.user_id LIMIT $3 OFFSET $4",
        match_sql(m)
    );
    let rows: Vec<UserTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(match_value(m))
        .bind(limit)
        .bind(offset)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(user_row).collect())
}

pub async fn count_users(db: &Db, organization_id: i64, m: &UserMatch) -> StoreResult<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1{}",
        match_sql(m)
    );
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(match_value(m))
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}

/// One member, inside the caller's transaction.
pub async fn user_in(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<Option<ScimUser>> {
    let sql = format!("{USER_COLUMNS} AND m.user_id = $2");
    let row: Option<UserTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(user_row))
}

/// Every member of the organization, inside the caller's transaction.
pub async fn all_users_in(
    conn: &mut AnyConnection,
    organization_id: i64,
) -> StoreResult<Vec<ScimUser>> {
    let sql = format!("{USER_COLUMNS} ORDER BY m.user_id");
    let rows: Vec<UserTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(user_row).collect())
}

pub async fn user(db: &Db, organization_id: i64, user_id: i64) -> StoreResult<Option<ScimUser>> {
    let mut conn = db.pool().acquire().await?;
    user_in(&mut conn, organization_id, user_id).await
}

/// Whether another member of the organization already goes by `user_name`
/// (their SCIM userName, or their email when they have none).
pub async fn user_name_taken(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_name: &str,
    except_user: i64,
) -> StoreResult<bool> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 AND m.user_id <> $2 \
         AND LOWER(COALESCE(m.scim_user_name, u.email)) = LOWER($3)",
    )
    .bind(organization_id)
    .bind(except_user)
    .bind(user_name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// The user with this (lower-cased) email, if any.
pub async fn user_id_by_email(conn: &mut AnyConnection, email: &str) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(id,)| id))
}

/// How many organizations other than this one the user belongs to.
pub async fn other_memberships(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND organization_id <> $2",
    )
    .bind(user_id)
    .bind(organization_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n)
}

/// The SCIM-owned fields of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFields<'a> {
    pub user_name: &'a str,
    pub external_id: Option<&'a str>,
    pub display_name: Option<&'a str>,
}

/// Writes userName, externalId and display name, and stamps the change.
pub async fn set_user_fields(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    fields: &UserFields<'_>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE memberships SET scim_user_name = $1, scim_external_id = $2, scim_modified_at = $3 \
         WHERE organization_id = $4 AND user_id = $5",
    )
    .bind(fields.user_name)
    .bind(fields.external_id)
    .bind(now)
    .bind(organization_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await
    .map_err(conflict_on_unique("userName is taken in this organization"))?;
    sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
        .bind(fields.display_name)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Changes a user's email (lower-cased by the caller).
pub async fn set_email(conn: &mut AnyConnection, user_id: i64, email: &str) -> StoreResult<()> {
    sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
        .bind(email)
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .map_err(conflict_on_unique("another user has this email"))?;
    Ok(())
}

/// Removes the membership. Its tokens must have been revoked first (they
/// stay as tombstones).
pub async fn delete_membership(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2")
        .bind(organization_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every unrevoked token of the member (deprovisioned by SCIM);
/// the rows stay as tombstones. Returns the ids revoked.
pub async fn revoke_member_tokens(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    now: i64,
) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "UPDATE api_tokens SET revoked_at = $1, revoked_reason = 'scim' \
         WHERE organization_id = $2 AND user_id = $3 AND revoked_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(organization_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The newest change to the token holders (for the group's lastModified).
pub async fn token_holders_modified(db: &Db, organization_id: i64) -> StoreResult<i64> {
    let (t,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(MAX(COALESCE(m.scim_modified_at, m.created_at)), o.created_at) \
         FROM organizations o LEFT JOIN memberships m ON m.organization_id = o.id \
         WHERE o.id = $1 GROUP BY o.created_at",
    )
    .bind(organization_id)
    .fetch_one(db.pool())
    .await?;
    Ok(t)
}

/// Stamps a member as changed by SCIM now (the permission moved).
pub async fn touch(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE memberships SET scim_modified_at = $1 WHERE organization_id = $2 AND user_id = $3",
    )
    .bind(now)
    .bind(organization_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
