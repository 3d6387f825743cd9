//! One-time links: stored by the SHA-256 of their secret, single use, expiring.

use sqlx::AnyConnection;

use super::StoreResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    SignIn,
    Revoke,
    Invite,
    Setup,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::SignIn => "signin",
            LinkKind::Revoke => "revoke",
            LinkKind::Invite => "invite",
            LinkKind::Setup => "setup",
        }
    }
}

/// A link to be stored; `secret_hash` is the digest, never the secret.
#[derive(Debug, Clone, Default)]
pub struct NewLink<'a> {
    pub secret_hash: &'a str,
    pub user_id: Option<i64>,
    pub organization_id: Option<i64>,
    pub token_id: Option<i64>,
    pub email: Option<&'a str>,
    pub redirect_to: Option<&'a str>,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: i64,
    pub user_id: Option<i64>,
    pub organization_id: Option<i64>,
    pub token_id: Option<i64>,
    pub email: Option<String>,
    pub redirect_to: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What a presented secret turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Valid(LinkRecord),
    Used,
    Expired,
    Unknown,
}

pub async fn create(
    conn: &mut AnyConnection,
    kind: LinkKind,
    link: &NewLink<'_>,
    now: i64,
) -> StoreResult<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO one_time_links (kind, secret_hash, user_id, organization_id, token_id, email, \
         redirect_to, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(link.secret_hash)
    .bind(link.user_id)
    .bind(link.organization_id)
    .bind(link.token_id)
    .bind(link.email)
    .bind(link.redirect_to)
    .bind(now)
    .bind(now + link.ttl_seconds)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Retires every unused link of this kind for the user (a new sign-in link
/// makes the older ones useless).
pub async fn retire_for_user(
    conn: &mut AnyConnection,
    kind: LinkKind,
    user_id: i64,
    now: i64,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE one_time_links SET used_at = $1 WHERE kind = $2 AND user_id = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(kind.as_str())
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

type LinkRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
);

fn record(row: LinkRow) -> LinkRecord {
    let (id, user_id, organization_id, token_id, email, redirect_to, expires_at, used_at) = row;
    LinkRecord {
        id,
        user_id,
        organization_id,
        token_id,
        email,
        redirect_to,
        expires_at,
        used_at,
    }
}

/// Looks a link up without using it (for the GET page a mail scanner may open).
pub async fn inspect(
    conn: &mut AnyConnection,
    kind: LinkKind,
    secret_hash: &str,
    now: i64,
) -> StoreResult<LinkState> {
    let row: Option<LinkRow> = sqlx::query_as(
        "SELECT id, user_id, organization_id, token_id, email, redirect_to, expires_at, used_at \
         FROM one_time_links WHERE kind = $1 AND secret_hash = $2",
    )
    .bind(kind.as_str())
    .bind(secret_hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row.map(record) {
        None => LinkState::Unknown,
        Some(r) if r.used_at.is_some() => LinkState::Used,
        Some(r) if r.expires_at <= now => LinkState::Expired,
        Some(r) => LinkState::Valid(r),
    })
}

/// Uses a link: one atomic conditional update, so of many concurrent attempts
/// exactly one gets `Valid`.
pub async fn consume(
    conn: &mut AnyConnection,
    kind: LinkKind,
    secret_hash: &str,
    now: i64,
) -> StoreResult<LinkState> {
    let row: Option<LinkRow> = sqlx::query_as(
        "UPDATE one_time_links SET used_at = $1 \
         WHERE kind = $2 AND secret_hash = $3 AND used_at IS NULL AND expires_at > $1 \
         RETURNING id, user_id, organization_id, token_id, email, redirect_to, expires_at, used_at",
    )
    .bind(now)
    .bind(kind.as_str())
    .bind(secret_hash)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(LinkState::Valid(record(r))),
        // Tell the caller why, for a helpful page.
        None => inspect(conn, kind, secret_hash, now)
            .await
            .map(|s| match s {
                LinkState::Valid(_) => LinkState::Used,
                other => other,
            }),
    }
}

/// Retires every unused link of a kind (a restart prints a new setup link
/// and the old one stops working).
pub async fn retire_kind(conn: &mut AnyConnection, kind: LinkKind, now: i64) -> StoreResult<u64> {
    let done =
        sqlx::query("UPDATE one_time_links SET used_at = $1 WHERE kind = $2 AND used_at IS NULL")
            .bind(now)
            .bind(kind.as_str())
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected())
}
