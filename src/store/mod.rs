//! Storage: every SQL query Keysmith runs lives under this module.
//!
//! One store API over sqlx's `Any` driver: SQLite (the embedded default) and
//! PostgreSQL run the same runtime queries (`$1` placeholders, integer unix
//! timestamps, 0/1 flags). Only the DDL (see `migrations/`) and the few places
//! where the dialects truly differ branch on [`Backend`].
//!
//! Functions take `&Db` for reads and `&mut AnyConnection` (a transaction from
//! [`Db::begin`]) for writes, and know nothing of HTTP.

pub mod health;
pub mod invalidation;
pub mod links;
pub mod oidc;
pub mod orgs;
pub mod outbox;
pub mod projects;
pub mod rate_limits;
pub mod rotation;
pub mod scim;
pub mod server_secrets;
pub mod sessions;
pub mod team;
pub mod token_ips;
pub mod tokens;
pub mod verification;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};
use sqlx::{AnyConnection, Connection};
use time::OffsetDateTime;

use crate::config::DatabaseUrl;

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Failures the rest of the program tells apart; everything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was hit (e.g. a live token with this label exists).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The pool had no connection to give within its acquire timeout.
    #[error("the database did not answer in time")]
    Unavailable,
    /// The database refused to store anything: disk full, a failed write,
    /// read-only. Nothing was changed; it may pass once the operator acts.
    #[error("the database cannot write: {0}")]
    CannotWrite(&'static str),
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => StoreError::Unavailable,
            sqlx::Error::Io(_) => StoreError::Unavailable,
            // A connection that broke off mid-conversation: a server going
            // down closes it during the handshake, and sqlx reads the empty
            // answer to its TLS request as a protocol error. The request
            // cannot reach the database, as with a reset connection; the
            // cause is logged here because `Unavailable` does not keep it.
            sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %e, "the database connection broke off");
                StoreError::Unavailable
            }
            sqlx::Error::Database(ref db) => {
                let code = db.code();
                if let Some(reason) = cannot_write_reason(code.as_deref()) {
                    StoreError::CannotWrite(reason)
                } else if is_transient(code.as_deref()) {
                    StoreError::Unavailable
                } else {
                    StoreError::Database(e)
                }
            }
            other => StoreError::Database(other),
        }
    }
}

/// The database went away under a statement (PostgreSQL restarting or
/// failing over: SQLSTATE class 08 and 57P01–57P03); a retry will reach it.
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

/// Tells storage failures apart from other database errors by their codes:
/// SQLite's primary result codes (the low byte of an extended code) and
/// PostgreSQL's SQLSTATEs.
fn cannot_write_reason(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    match code {
        "53100" => return Some("the disk is full"),
        "25006" => return Some("the database is read-only"),
        "58030" => return Some("the disk failed a write"),
        _ => {}
    }
    let sqlite: i64 = code.parse().ok()?;
    match sqlite & 0xff {
        13 => Some("the disk is full"),
        10 => Some("the disk failed a write"),
        8 => Some("the database is read-only"),
        _ => None,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Maps a unique-constraint violation to [`StoreError::Conflict`] with `what`.
pub(crate) fn conflict_on_unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::from(e),
    }
}

/// Pool settings that are not part of the URL.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// Kept short so that, with the database gone, requests fail fast (503)
    /// instead of queueing.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// The store handle: cheap to clone (the pool is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    write_health: std::sync::Arc<health::WriteHealth>,
}

/// SQLite settings applied on every new connection. sqlx does not turn on WAL
/// by default; WAL lets readers proceed while one writer writes, and the busy
/// timeout makes a second writer wait instead of failing with "database is
/// locked". The page cache is 512 KiB per connection instead of SQLite's
/// 2 MB: the verification hot path is served from memory, a page SQLite does
/// not hold is still in the operating system's cache, and a smaller cache
/// keeps the server small.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 10000; \
     PRAGMA cache_size = -512;";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Opens a pool (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(url: &DatabaseUrl, settings: &PoolSettings) -> StoreResult<Db> {
        sqlx::any::install_default_drivers();
        let backend = match url {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        };
        // One writer at a time anyway, and the hot path reads from memory:
        // more SQLite connections only cost memory (each has its own page
        // cache, and its own thread and so its own malloc arena).
        let max_connections = match backend {
            Backend::Sqlite => settings.max_connections.min(4),
            Backend::Postgres => settings.max_connections,
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(settings.acquire_timeout);
        // A connection that comes back still inside a transaction is closed,
        // not reused. That happens when SQLite rolled a transaction back by
        // itself (a full disk during COMMIT): the driver's own ROLLBACK then
        // fails, it keeps counting the transaction as open, and every later
        // BEGIN on that connection would fail for as long as the process
        // lives. A ping first lets a rollback queued on drop finish.
        options = options.after_release(|conn, _meta| {
            Box::pin(async move {
                if conn.is_in_transaction() {
                    conn.ping().await?;
                }
                Ok(!conn.is_in_transaction())
            })
        });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url.connect_url())
            .await
            .map_err(|e| StoreError::Connect(describe_connect_error(&e, url)))?;
        Ok(Db {
            pool,
            backend,
            write_health: Default::default(),
        })
    }

    /// Brings the schema up to date. Safe to run from several instances at once
    /// (sqlx takes an advisory lock on PostgreSQL; SQLite serialises writers).
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// What this instance's own writes have met lately (see [`health`]).
    pub fn write_health(&self) -> &health::WriteHealth {
        &self.write_health
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`, which
    /// takes the write lock up front, so two writers queue on the busy timeout
    /// instead of one failing mid-transaction when it upgrades a read lock.
    pub async fn begin(&self) -> StoreResult<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// Answers whether the database responds to a trivial query.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Answers whether the database can store something: one small write,
    /// committed (a SELECT passes on a full disk or a read-only file).
    pub async fn probe_write(&self) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn describe_connect_error(e: &sqlx::Error, url: &DatabaseUrl) -> String {
    // sqlx's message can include the URL; we print our redacted form instead.
    let cause = match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out connecting".into(),
        other => other.to_string(),
    };
    format!("{} ({cause})", url.redacted())
}

/// The current time as stored: whole unix seconds, UTC.
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Reads a stored unix time back.
pub fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Writes an audit event in the caller's transaction, so the event exists
/// exactly when the change it describes does.
pub async fn record_audit(conn: &mut AnyConnection, event: &AuditEvent<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (organization_id, actor_user_id, actor_token_id, subject_user_id, \
         token_id, action, detail, ip, user_agent, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.organization_id)
    .bind(event.actor_user_id)
    .bind(event.actor_token_id)
    .bind(event.subject_user_id)
    .bind(event.token_id)
    .bind(event.action)
    .bind(event.detail)
    .bind(event.ip)
    .bind(event.user_agent)
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Who did what, from where. Borrowed so callers build it without copying.
#[derive(Debug, Default, Clone)]
pub struct AuditEvent<'a> {
    pub organization_id: Option<i64>,
    pub actor_user_id: Option<i64>,
    pub actor_token_id: Option<i64>,
    pub subject_user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub action: &'a str,
    pub detail: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}
