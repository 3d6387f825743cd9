//! Secrets the server generates for itself, once, and keeps in the database
//! so that every instance and every restart uses the same ones.

use super::{Db, StoreResult, unix_now};

/// The named secret, made from `generate` if this is the first time anyone
/// asked. Two instances starting together agree: the first insert wins and
/// both read the row back.
pub async fn get_or_create(
    db: &Db,
    name: &str,
    generate: impl FnOnce() -> String,
) -> StoreResult<String> {
    sqlx::query(
        "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(generate())
    .bind(unix_now())
    .execute(db.pool())
    .await?;
    let (value,): (String,) = sqlx::query_as("SELECT value FROM server_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(db.pool())
        .await?;
    Ok(value)
}
