//! Where tokens were used: each token's most recent distinct client
//! addresses (at most [`KEPT`]), with when each was first and last seen,
//! written by the verifier's batched flush, and the claim that lets one
//! instance alone email the owner about a new address.

use sqlx::AnyConnection;

use super::{Backend, Db, StoreResult};

/// Addresses kept per token; the least recently seen goes first.
pub const KEPT: i64 = 5;
/// An address unused for this long counts as new again.
pub const NEW_AFTER_SECONDS: i64 = 30 * 24 * 3600;
/// At most one new-address alert per token in this long.
pub const ALERT_EVERY_SECONDS: i64 = 3600;

/// One address a token was used from.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SeenIp {
    pub ip: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

/// The token's kept addresses, most recently seen first.
pub async fn for_token(conn: &mut AnyConnection, token_id: i64) -> StoreResult<Vec<SeenIp>> {
    let rows = sqlx::query_as(
        "SELECT ip, first_seen_at, last_seen_at FROM api_token_ips \
         WHERE token_id = $1 ORDER BY last_seen_at DESC, ip",
    )
    .bind(token_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// [`for_token`] on the pool, for the pages.
pub async fn list(db: &Db, token_id: i64) -> StoreResult<Vec<SeenIp>> {
    let mut conn = db.pool().acquire().await?;
    for_token(&mut conn, token_id).await
}

/// The kept addresses of each of `token_ids`, in one statement:
/// `(token_id, ip, last_seen_at)`.
pub async fn for_tokens(db: &Db, token_ids: &[i64]) -> StoreResult<Vec<(i64, String, i64)>> {
    if token_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = match db.backend() {
        Backend::Sqlite => "json_each($1) AS j",
        Backend::Postgres => "json_array_elements(CAST($1 AS json)) AS j(value)",
    };
    let sql = format!(
        "SELECT t.token_id, t.ip, t.last_seen_at FROM api_token_ips t \
         JOIN (SELECT CAST(j.value ->> 0 AS BIGINT) AS id FROM {ids}) AS v ON t.token_id = v.id"
    );
    // `[[id], …]`: the same shape the writes unpack.
    let rows: Vec<(i64,)> = token_ids.iter().map(|&id| (id,)).collect();
    let json = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
    let stored = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(json)
        .fetch_all(db.pool())
        .await?;
    Ok(stored)
}

/// Moves the last-seen time of addresses the verifier already knows, in one
/// statement per call: `(token_id, ip, at)`. An address no longer kept
/// (another instance dropped it) is left out, never added back here.
pub async fn touch_known(db: &Db, seen: &[(i64, String, i64)]) -> StoreResult<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let rows = match db.backend() {
        Backend::Sqlite => "json_each($1) AS j",
        Backend::Postgres => "json_array_elements(CAST($1 AS json)) AS j(value)",
    };
    let sql = format!(
        "UPDATE api_token_ips SET last_seen_at = v.at \
         FROM (SELECT CAST(j.value ->> 0 AS BIGINT) AS id, j.value ->> 1 AS ip, \
         CAST(j.value ->> 2 AS BIGINT) AS at FROM {rows}) AS v \
         WHERE api_token_ips.token_id = v.id AND api_token_ips.ip = v.ip \
         AND api_token_ips.last_seen_at < v.at"
    );
    // Numbers and strings always serialize.
    let json = serde_json::to_string(seen).unwrap_or_else(|_| "[]".to_owned());
    let mut tx = db.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(json)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a use of `ip` by the token from `first_at` to `last_at` and
/// keeps the [`KEPT`] most recently seen addresses.
pub async fn upsert(
    conn: &mut AnyConnection,
    token_id: i64,
    ip: &str,
    first_at: i64,
    last_at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_token_ips (token_id, ip, first_seen_at, last_seen_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (token_id, ip) DO UPDATE SET \
         first_seen_at = CASE WHEN excluded.first_seen_at < api_token_ips.first_seen_at \
           THEN excluded.first_seen_at ELSE api_token_ips.first_seen_at END, \
         last_seen_at = CASE WHEN excluded.last_seen_at > api_token_ips.last_seen_at \
           THEN excluded.last_seen_at ELSE api_token_ips.last_seen_at END",
    )
    .bind(token_id)
    .bind(ip)
    .bind(first_at)
    .bind(last_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM api_token_ips WHERE token_id = $1 AND ip NOT IN \
         (SELECT ip FROM api_token_ips WHERE token_id = $1 \
          ORDER BY last_seen_at DESC, ip LIMIT $2)",
    )
    .bind(token_id)
    .bind(KEPT)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the new-address check needs about a token and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFacts {
    pub organization_id: i64,
    pub user_id: i64,
    pub email: String,
    /// The last use on the token's row: a use before the one being checked
    /// (from before addresses were kept) means it is not the first use ever;
    /// its kept addresses say the same for later uses.
    pub last_used_at: Option<i64>,
    pub revoked: bool,
    /// The owner wants these alerts.
    pub alerts_on: bool,
}

/// `(organization_id, user_id, email, last_used_at, revoked_at, new_ip_alerts)`.
type AlertRow = (i64, i64, String, Option<i64>, Option<i64>, i64);

pub async fn alert_facts(
    conn: &mut AnyConnection,
    token_id: i64,
) -> StoreResult<Option<AlertFacts>> {
    let row: Option<AlertRow> = sqlx::query_as(
        "SELECT t.organization_id, t.user_id, u.email, t.last_used_at, t.revoked_at, u.new_ip_alerts \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
    )
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(
        |(organization_id, user_id, email, last_used_at, revoked_at, alerts)| AlertFacts {
            organization_id,
            user_id,
            email,
            last_used_at,
            revoked: revoked_at.is_some(),
            alerts_on: alerts == 1,
        },
    ))
}

/// Takes the token's new-address alert for `at` if none was taken in the
/// hour before: a conditional update, so of several instances seeing the
/// same new address only one wins.
pub async fn claim_alert(conn: &mut AnyConnection, token_id: i64, at: i64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE api_tokens SET new_ip_alerted_at = $1 WHERE id = $2 \
         AND (new_ip_alerted_at IS NULL OR new_ip_alerted_at <= $3)",
    )
    .bind(at)
    .bind(token_id)
    .bind(at - ALERT_EVERY_SECONDS)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the member wants new-address alerts.
pub async fn alerts_enabled(db: &Db, user_id: i64) -> StoreResult<bool> {
    let on: Option<(i64,)> = sqlx::query_as("SELECT new_ip_alerts FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(on.is_none_or(|(on,)| on == 1))
}

/// Turns the member's new-address alerts on or off.
pub async fn set_alerts(conn: &mut AnyConnection, user_id: i64, on: bool) -> StoreResult<()> {
    sqlx::query("UPDATE users SET new_ip_alerts = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
