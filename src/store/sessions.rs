//! Browser sessions: the cookie holds a random id; the database holds its
//! SHA-256, the user, the current organization and the times that bound it.

use sqlx::AnyConnection;

use super::{Db, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub current_organization_id: Option<i64>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub user_id: i64,
    pub organization_id: i64,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// Absolute end of the session, whatever its activity.
    pub expires_at: i64,
}

pub async fn create(conn: &mut AnyConnection, s: &NewSession<'_>, now: i64) -> StoreResult<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO sessions (id_hash, user_id, current_organization_id, created_at, last_seen_at, \
         expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $4, $5, $6, $7) RETURNING id",
    )
    .bind(s.id_hash)
    .bind(s.user_id)
    .bind(s.organization_id)
    .bind(now)
    .bind(s.expires_at)
    .bind(s.ip)
    .bind(s.user_agent)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// The live session with this id hash: not past its absolute end, and used
/// within `idle_seconds`.
pub async fn find_live(
    db: &Db,
    id_hash: &str,
    now: i64,
    idle_seconds: i64,
) -> StoreResult<Option<SessionRecord>> {
    let record = sqlx::query_as(
        "SELECT s.id, s.user_id, u.email, s.current_organization_id, s.created_at, s.last_seen_at, s.expires_at \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3",
    )
    .bind(id_hash)
    .bind(now)
    .bind(now - idle_seconds)
    .fetch_optional(db.pool())
    .await?;
    Ok(record)
}

/// Records activity. Callers skip it when the last touch is recent, so a
/// page view is not a write.
pub async fn touch(db: &Db, session_id: i64, now: i64) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
        .bind(now)
        .bind(session_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn set_current_organization(
    db: &Db,
    session_id: i64,
    organization_id: i64,
) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET current_organization_id = $1 WHERE id = $2")
        .bind(organization_id)
        .bind(session_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn delete(db: &Db, session_id: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(session_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends the session whose cookie value hashes to `id_hash`, if any.
pub async fn delete_by_hash(db: &Db, id_hash: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends every session of a user (e.g. when their membership is disabled).
pub async fn delete_for_user(conn: &mut AnyConnection, user_id: i64) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
