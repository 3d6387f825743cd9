//! Replacing a token's secret: the token row keeps its id, label, scopes and
//! projects and takes a new digest; the old digest moves to
//! `api_token_replaced_secrets`, where it verifies until its grace period
//! ends and is recognised (as a replaced secret, not an unknown token) after.

use sqlx::AnyConnection;

use super::{AuditEvent, Db, StoreResult, record_audit};
use crate::token::{DisplayPrefix, TokenDigest};

/// What a rotation needs to know about the token, read inside its
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RotationFacts {
    pub id: i64,
    pub user_id: i64,
    pub organization_id: i64,
    /// Hex digest of the current secret.
    pub token_hash: String,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl RotationFacts {
    /// How long the current secret was issued for, in seconds; `None` for a
    /// token that does not expire.
    pub fn lifetime(&self) -> Option<i64> {
        self.expires_at
            .map(|at| (at - self.rotated_at.unwrap_or(self.created_at)).max(0))
    }
}

/// The token, inside the caller's (write) transaction.
pub async fn facts_for_rotation(
    conn: &mut AnyConnection,
    token_id: i64,
) -> StoreResult<Option<RotationFacts>> {
    let row: Option<RotationFacts> = sqlx::query_as(
        "SELECT id, user_id, organization_id, token_hash, created_at, rotated_at, expires_at, \
         revoked_at FROM api_tokens WHERE id = $1",
    )
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// One replacement of a token's secret.
#[derive(Debug)]
pub struct Replacement<'a> {
    pub token_id: i64,
    /// The secret being replaced, as read by [`facts_for_rotation`]: the
    /// update happens only if it is still the current one, so two rotations
    /// at once cannot both succeed.
    pub old_hash: &'a str,
    pub new_digest: &'a TokenDigest,
    pub new_display_prefix: &'a DisplayPrefix,
    pub expires_at: Option<i64>,
    pub now: i64,
    /// Until when the old secret still verifies (`now` for not at all).
    pub grace_until: i64,
}

/// Gives the token its new secret and keeps the old digest as replaced, with
/// the audit event, inside the caller's transaction. False when the token's
/// secret changed meanwhile (or it was revoked): nothing is written then.
/// Expiry reminders already sent are forgotten: the new expiry gets its own.
pub async fn replace_secret(
    conn: &mut AnyConnection,
    r: &Replacement<'_>,
    audit: &AuditEvent<'_>,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE api_tokens SET token_hash = $1, display_prefix = $2, expires_at = $3, rotated_at = $4 \
         WHERE id = $5 AND token_hash = $6 AND revoked_at IS NULL",
    )
    .bind(r.new_digest.to_hex())
    .bind(r.new_display_prefix.as_str())
    .bind(r.expires_at)
    .bind(r.now)
    .bind(r.token_id)
    .bind(r.old_hash)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO api_token_replaced_secrets (token_hash, token_id, replaced_at, grace_until) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(r.old_hash)
    .bind(r.token_id)
    .bind(r.now)
    .bind(r.grace_until)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM token_notices WHERE token_id = $1")
        .bind(r.token_id)
        .execute(&mut *conn)
        .await?;
    record_audit(conn, audit).await?;
    Ok(true)
}

/// A replaced secret, found by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedSecret {
    pub token_id: i64,
    pub grace_until: i64,
    /// The token's current secret, to read its facts by.
    pub current: TokenDigest,
}

/// The replaced secret with this digest, if any: asked only for a digest
/// no token has now, so a valid token never pays for it.
pub async fn find_replaced(db: &Db, digest: &TokenDigest) -> StoreResult<Option<ReplacedSecret>> {
    let row: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT r.token_id, r.grace_until, t.token_hash FROM api_token_replaced_secrets r \
         JOIN api_tokens t ON t.id = r.token_id WHERE r.token_hash = $1",
    )
    .bind(digest.to_hex())
    .fetch_optional(db.pool())
    .await?;
    Ok(row.and_then(|(token_id, grace_until, hash)| {
        Some(ReplacedSecret {
            token_id,
            grace_until,
            current: TokenDigest::from_hex(&hash)?,
        })
    }))
}

/// Claims the token's reuse alert for this hour, inside the caller's
/// transaction: true for the first claim in an hour, on any instance.
pub async fn claim_reuse_alert(
    conn: &mut AnyConnection,
    token_id: i64,
    now: i64,
) -> StoreResult<bool> {
    const HOUR: i64 = 3600;
    let done = sqlx::query(
        "UPDATE api_tokens SET reuse_alerted_at = $1 WHERE id = $2 \
         AND (reuse_alerted_at IS NULL OR reuse_alerted_at <= $3)",
    )
    .bind(now)
    .bind(token_id)
    .bind(now - HOUR)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The token's owner and organization, and the owner's email, for the
/// reuse alert: `(organization_id, user_id, email)`.
pub async fn owner_of(
    conn: &mut AnyConnection,
    token_id: i64,
) -> StoreResult<Option<(i64, i64, String)>> {
    let row: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT t.organization_id, t.user_id, u.email FROM api_tokens t \
         JOIN users u ON u.id = t.user_id WHERE t.id = $1",
    )
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}
