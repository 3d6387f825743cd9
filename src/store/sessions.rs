//! Browser sessions: the cookie holds a random id; the database holds its
//! SHA-256, the user, the current organization and the times that bound it.
//! Starting a session, signing out and a session running out are audit
//! events of the session's organization, written with the change.

use sqlx::AnyConnection;

use super::{AuditEvent, Db, StoreResult, record_audit};

/// Audit actions of a session's life.
pub const SIGNED_IN: &str = "session.signed_in";
pub const SIGNED_OUT: &str = "session.signed_out";
pub const EXPIRED: &str = "session.expired";

/// How a session was started, as the audit log's detail says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMethod {
    EmailLink,
    /// The first-run setup link.
    Setup,
    /// Accepting an invitation as a new account.
    Invitation,
    /// OpenID Connect: "signed in via SSO".
    Sso,
}

impl SignInMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInMethod::EmailLink => "email_link",
            SignInMethod::Setup => "setup_link",
            SignInMethod::Invitation => "invitation",
            SignInMethod::Sso => "sso",
        }
    }
}

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
    pub method: SignInMethod,
}

/// Starts a session and records the sign-in, in the caller's transaction.
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
    record_audit(
        conn,
        &AuditEvent {
            organization_id: Some(s.organization_id),
            actor_user_id: Some(s.user_id),
            subject_user_id: Some(s.user_id),
            action: SIGNED_IN,
            detail: Some(s.method.as_str()),
            ip: s.ip,
            user_agent: s.user_agent,
            ..AuditEvent::default()
        },
    )
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

/// Sign-out: ends the session and records who left, from where.
pub async fn sign_out(
    db: &Db,
    session_id: i64,
    ip: &str,
    user_agent: Option<&str>,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    let ended: Option<(i64, Option<i64>)> = sqlx::query_as(
        "DELETE FROM sessions WHERE id = $1 RETURNING user_id, current_organization_id",
    )
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((user_id, organization_id)) = ended {
        record_audit(
            &mut tx,
            &AuditEvent {
                organization_id,
                actor_user_id: Some(user_id),
                subject_user_id: Some(user_id),
                action: SIGNED_OUT,
                ip: Some(ip),
                user_agent,
                ..AuditEvent::default()
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What an ended session's row says: user, organization, last seen,
/// absolute end, IP, user agent.
type EndedSession = (i64, Option<i64>, i64, i64, Option<String>, Option<String>);

/// A session that ran out (idle too long or past its lifetime) is removed
/// the next time its cookie comes back, and its end is recorded then, with
/// why it ended (`idle` or `lifetime`). Nothing happens for an unknown hash
/// or a live session.
pub async fn end_if_expired(
    db: &Db,
    id_hash: &str,
    now: i64,
    idle_seconds: i64,
) -> StoreResult<bool> {
    let mut tx = db.begin().await?;
    let ended: Option<EndedSession> = sqlx::query_as(
        "DELETE FROM sessions WHERE id_hash = $1 AND (expires_at <= $2 OR last_seen_at <= $3) \
             RETURNING user_id, current_organization_id, last_seen_at, expires_at, ip, user_agent",
    )
    .bind(id_hash)
    .bind(now)
    .bind(now - idle_seconds)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, organization_id, last_seen_at, expires_at, ip, user_agent)) = ended else {
        tx.rollback().await?;
        return Ok(false);
    };
    let why = if last_seen_at + idle_seconds < expires_at {
        "idle"
    } else {
        "lifetime"
    };
    record_audit(
        &mut tx,
        &AuditEvent {
            organization_id,
            subject_user_id: Some(user_id),
            action: EXPIRED,
            detail: Some(why),
            ip: ip.as_deref(),
            user_agent: user_agent.as_deref(),
            ..AuditEvent::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends up to `limit` sessions that ran out (idle or past their lifetime)
/// whose cookie never came back, each on record as [`end_if_expired`] does.
/// Safe on several instances at once: each row is deleted, and its end
/// recorded, by whichever gets it first. Returns how many it ended.
pub async fn sweep_expired(db: &Db, now: i64, idle_seconds: i64, limit: i64) -> StoreResult<usize> {
    let hashes: Vec<(String,)> = sqlx::query_as(
        "SELECT id_hash FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2 \
         ORDER BY last_seen_at LIMIT $3",
    )
    .bind(now)
    .bind(now - idle_seconds)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let mut ended = 0;
    for (hash,) in hashes {
        if end_if_expired(db, &hash, now, idle_seconds).await? {
            ended += 1;
        }
    }
    Ok(ended)
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
