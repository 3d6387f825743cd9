//! The mail outbox: rows written in the transaction of the change they
//! report, claimed in batches by delivery workers. A claim is a lease
//! (`locked_until`), so a crashed worker's messages are retried by another,
//! and two workers never hold the same row at once.

use sqlx::AnyConnection;

use super::{Backend, Db, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    pub template: String,
    pub recipient: String,
    pub payload: String,
    pub created_at: i64,
    pub attempts: i64,
}

pub async fn enqueue(
    conn: &mut AnyConnection,
    template: &str,
    recipient: &str,
    payload: &str,
    now: i64,
) -> StoreResult<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO mail_outbox (template, recipient, payload, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING id",
    )
    .bind(template)
    .bind(recipient)
    .bind(payload)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

// The same claim on both engines; PostgreSQL adds SKIP LOCKED so that
// instances sharing the database never wait on, or take, each other's rows
// (a row another instance is claiming is skipped; once that claim commits,
// its lease keeps the row out of every later claim). On SQLite the write
// transaction (BEGIN IMMEDIATE) makes it atomic: one writer at a time.
const CLAIM_SQLITE: &str = "UPDATE mail_outbox SET locked_until = $1, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
     AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3) \
     RETURNING id, template, recipient, payload, created_at, attempts";
const CLAIM_POSTGRES: &str = "UPDATE mail_outbox SET locked_until = $1, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
     AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until <= $2) ORDER BY id LIMIT $3 \
     FOR UPDATE SKIP LOCKED) \
     RETURNING id, template, recipient, payload, created_at, attempts";

/// Takes the oldest due message for `lease_seconds`, if any.
pub async fn claim_next(
    db: &Db,
    now: i64,
    lease_seconds: i64,
) -> StoreResult<Option<OutboxMessage>> {
    Ok(claim_batch(db, now, lease_seconds, 1).await?.pop())
}

/// Takes up to `limit` of the oldest due messages for `lease_seconds`, in
/// one statement and one transaction, oldest first.
#[tracing::instrument(skip(db))]
pub async fn claim_batch(
    db: &Db,
    now: i64,
    lease_seconds: i64,
    limit: i64,
) -> StoreResult<Vec<OutboxMessage>> {
    let sql = match db.backend() {
        Backend::Sqlite => CLAIM_SQLITE,
        Backend::Postgres => CLAIM_POSTGRES,
    };
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(sql)
        .bind(now + lease_seconds)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut claimed: Vec<OutboxMessage> = rows
        .into_iter()
        .map(
            |(id, template, recipient, payload, created_at, attempts)| OutboxMessage {
                id,
                template,
                recipient,
                payload,
                created_at,
                attempts,
            },
        )
        .collect();
    // RETURNING promises no order.
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

/// What became of one claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The SMTP server took it, with this Message-ID.
    Sent { id: i64, message_id: String },
    /// Try again at `next_attempt_at`.
    Retry {
        id: i64,
        error: String,
        next_attempt_at: i64,
    },
    /// Never to be sent (until `keysmith mail retry`).
    Failed { id: i64, error: String },
    /// Claimed but never tried (the worker stopped first): back in the
    /// queue as it was, the claim's attempt not counted.
    Unclaimed { id: i64 },
}

/// Records the outcomes of many messages in one transaction (one commit,
/// one fsync on SQLite, however many rows).
pub async fn record(db: &Db, outcomes: &[Outcome], now: i64) -> StoreResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    for outcome in outcomes {
        let query = match outcome {
            Outcome::Sent { id, message_id } => sqlx::query(MARK_SENT)
                .bind(now)
                .bind(message_id.as_str())
                .bind(*id),
            Outcome::Retry {
                id,
                error,
                next_attempt_at,
            } => sqlx::query(MARK_RETRY)
                .bind(*next_attempt_at)
                .bind(error.as_str())
                .bind(*id),
            Outcome::Failed { id, error } => sqlx::query(MARK_FAILED)
                .bind(now)
                .bind(error.as_str())
                .bind(*id),
            Outcome::Unclaimed { id } => sqlx::query(UNCLAIM).bind(*id),
        };
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

const MARK_SENT: &str = "UPDATE mail_outbox SET sent_at = $1, message_id = $2, locked_until = NULL, last_error = NULL WHERE id = $3";
const MARK_RETRY: &str = "UPDATE mail_outbox SET next_attempt_at = $1, last_error = $2, locked_until = NULL WHERE id = $3";
const MARK_FAILED: &str =
    "UPDATE mail_outbox SET failed_at = $1, last_error = $2, locked_until = NULL WHERE id = $3";
const UNCLAIM: &str = "UPDATE mail_outbox SET locked_until = NULL, attempts = attempts - 1 \
     WHERE id = $1 AND sent_at IS NULL AND attempts > 0";

pub async fn mark_sent(db: &Db, id: i64, message_id: &str, now: i64) -> StoreResult<()> {
    sqlx::query(MARK_SENT)
        .bind(now)
        .bind(message_id)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn mark_retry(db: &Db, id: i64, error: &str, next_attempt_at: i64) -> StoreResult<()> {
    sqlx::query(MARK_RETRY)
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn mark_failed(db: &Db, id: i64, error: &str, now: i64) -> StoreResult<()> {
    sqlx::query(MARK_FAILED)
        .bind(now)
        .bind(error)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A row of `keysmith mail status`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxStatus {
    pub id: i64,
    pub template: String,
    pub recipient: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Messages not yet delivered: pending and failed, oldest first.
pub async fn undelivered(db: &Db) -> StoreResult<Vec<OutboxStatus>> {
    let rows = sqlx::query_as(
        "SELECT id, template, recipient, created_at, attempts, next_attempt_at, failed_at, last_error \
         FROM mail_outbox WHERE sent_at IS NULL ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows)
}

/// Puts failed messages back in the queue, due now, with a fresh time budget.
pub async fn requeue_failed(db: &Db, now: i64) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE mail_outbox SET failed_at = NULL, next_attempt_at = $1, created_at = $1, attempts = 0 \
         WHERE sent_at IS NULL AND failed_at IS NOT NULL",
    )
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// How the outbox stands, for the metrics: messages waiting to be
/// delivered, the creation time of the oldest of them, and messages that
/// failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: i64,
    pub oldest_pending_created_at: Option<i64>,
    pub failed: i64,
}

/// One pass over the undelivered rows (`sent_at IS NULL` is what the
/// claim's index covers), counted in SQL both backends speak.
pub async fn depth(db: &Db) -> StoreResult<OutboxDepth> {
    let (pending, oldest_pending_created_at, failed): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT COUNT(CASE WHEN failed_at IS NULL THEN 1 END), \
                MIN(CASE WHEN failed_at IS NULL THEN created_at END), \
                COUNT(failed_at) \
         FROM mail_outbox WHERE sent_at IS NULL",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(OutboxDepth {
        pending,
        oldest_pending_created_at,
        failed,
    })
}
