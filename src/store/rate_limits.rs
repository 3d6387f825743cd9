//! The shared ledger of cluster-wide rate limits (PostgreSQL only): each
//! instance's heartbeat, and per token, class and minute-aligned window
//! what each instance accepted and reserved. See `verify::cluster` for how
//! instances use it and `verify::rate_limit` for why the sum holds.

use std::collections::HashMap;

use sqlx::Row;

use super::{Db, StoreResult};

/// The key of the transaction-level advisory lock that serializes
/// exchanges, so each one sees every reservation committed before it
/// ("keys" in ASCII).
const EXCHANGE_LOCK: i64 = 0x6b65_7973;

/// Ended windows are deleted and silent instances forgotten on every this
/// many exchanges of an instance.
pub const CLEAN_EVERY: u64 = 25;
/// An instance silent for this long is forgotten altogether.
const FORGET_INSTANCE_AFTER_MS: i64 = 3_600_000;

/// One token class of one token, as the ledger keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Budget {
    pub token_id: i64,
    /// 0 reads, 1 writes.
    pub class: i32,
}

/// What the other live instances hold of one budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Others {
    pub used: u32,
    pub reserved: u32,
}

/// This instance's row for one budget, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub budget: Budget,
    pub used: u32,
    pub reserved: u32,
}

/// What one instance brings to an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The instance's id in the ledger.
    pub instance: &'a str,
    /// Its clock now (unix milliseconds): its heartbeat.
    pub now_ms: i64,
    /// Instances whose heartbeat is older than this do not count.
    pub fresh_ms: i64,
    /// The window exchanged.
    pub window_start: i64,
    /// The budgets the instance wants more of.
    pub asking: &'a [Budget],
    /// Also delete ended windows and long-silent instances.
    pub clean: bool,
}

/// One exchange, in one transaction under the exchange lock: beats the
/// instance's heartbeat, counts the live instances, reads what the other
/// live instances hold of each budget asked about, lets `decide` say what
/// this instance holds now (given the live count and those totals), and
/// writes that. Returns the live count and what `decide` returned, once
/// committed.
pub async fn exchange<T>(
    db: &Db,
    e: &Exchange<'_>,
    decide: impl FnOnce(u32, &HashMap<Budget, Others>) -> (Vec<Held>, T),
) -> StoreResult<(u32, T)> {
    let Exchange {
        instance,
        now_ms,
        fresh_ms,
        window_start,
        asking,
        clean,
    } = *e;
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EXCHANGE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO rate_limit_instances (instance_id, heartbeat_ms) VALUES ($1, $2) \
         ON CONFLICT (instance_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
    )
    .bind(instance)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let live: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_instances WHERE heartbeat_ms >= $1")
            .bind(fresh_ms)
            .fetch_one(&mut *tx)
            .await?;
    let live = u32::try_from(live).unwrap_or(u32::MAX).max(1);

    let mut others = HashMap::new();
    if !asking.is_empty() {
        // Token ids arrive as one JSON array: one statement however many.
        let mut ids: Vec<i64> = asking.iter().map(|b| b.token_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
        let rows = sqlx::query(
            "SELECT c.token_id, c.class, CAST(SUM(c.used) AS BIGINT) AS used, \
             CAST(SUM(c.reserved) AS BIGINT) AS reserved \
             FROM rate_limit_counts c \
             JOIN rate_limit_instances i ON i.instance_id = c.instance_id \
             WHERE c.window_start_ms = $1 AND c.instance_id <> $2 AND i.heartbeat_ms >= $3 \
             AND c.token_id IN (SELECT CAST(j.value AS BIGINT) FROM json_array_elements_text(CAST($4 AS json)) AS j(value)) \
             GROUP BY c.token_id, c.class",
        )
        .bind(window_start)
        .bind(instance)
        .bind(fresh_ms)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let budget = Budget {
                token_id: row.try_get("token_id")?,
                class: row.try_get("class")?,
            };
            let count = |name: &str| -> StoreResult<u32> {
                let n: i64 = row.try_get(name)?;
                Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
            };
            others.insert(
                budget,
                Others {
                    used: count("used")?,
                    reserved: count("reserved")?,
                },
            );
        }
    }

    let (held, decided) = decide(live, &others);
    if !held.is_empty() {
        let rows: Vec<(i64, i32, u32, u32)> = held
            .iter()
            .map(|h| (h.budget.token_id, h.budget.class, h.used, h.reserved))
            .collect();
        // Numbers always serialize.
        let rows = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "INSERT INTO rate_limit_counts \
             (window_start_ms, token_id, class, instance_id, used, reserved) \
             SELECT $1, CAST(j.value ->> 0 AS BIGINT), CAST(j.value ->> 1 AS INTEGER), $2, \
             CAST(j.value ->> 2 AS BIGINT), CAST(j.value ->> 3 AS BIGINT) \
             FROM json_array_elements(CAST($3 AS json)) AS j(value) \
             ON CONFLICT (window_start_ms, token_id, class, instance_id) \
             DO UPDATE SET used = excluded.used, reserved = excluded.reserved",
        )
        .bind(window_start)
        .bind(instance)
        .bind(rows)
        .execute(&mut *tx)
        .await?;
    }
    if clean {
        sqlx::query("DELETE FROM rate_limit_counts WHERE window_start_ms < $1")
            .bind(window_start)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rate_limit_instances WHERE heartbeat_ms < $1")
            .bind(now_ms - FORGET_INSTANCE_AFTER_MS)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((live, decided))
}

/// How many rows the ledger holds, per table (for tests and operators).
pub async fn sizes(db: &Db) -> StoreResult<(i64, i64)> {
    let instances: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_instances")
        .fetch_one(db.pool())
        .await?;
    let counts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limit_counts")
        .fetch_one(db.pool())
        .await?;
    Ok((instances, counts))
}
