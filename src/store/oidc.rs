//! OpenID Connect sign-in records (one per trip to the provider: single use,
//! expiring, bound to the browser that started it) and the memberships that
//! just-in-time provisioning creates and disables.

use sqlx::AnyConnection;

use super::{Db, StoreResult};

/// A started sign-in, found by its `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub browser_hash: String,
    pub redirect_to: Option<String>,
}

/// What a returned `state` turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginState {
    Valid(LoginRecord),
    Used,
    Expired,
    Unknown,
}

/// Records a sign-in on its way to the provider; also forgets records that
/// ended more than a day ago, so the table stays small without a sweeper.
pub async fn create_login(
    db: &Db,
    state_hash: &str,
    browser_hash: &str,
    redirect_to: Option<&str>,
    ttl_seconds: i64,
    now: i64,
) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
        .bind(now - 86_400)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_logins (state_hash, browser_hash, redirect_to, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(state_hash)
    .bind(browser_hash)
    .bind(redirect_to)
    .bind(now)
    .bind(now + ttl_seconds)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Uses a sign-in record up: one conditional update, so of two requests
/// presenting the same `state` exactly one gets `Valid`.
pub async fn consume_login(db: &Db, state_hash: &str, now: i64) -> StoreResult<LoginState> {
    let mut tx = db.begin().await?;
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE oidc_logins SET used_at = $1 \
         WHERE state_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         RETURNING browser_hash, redirect_to",
    )
    .bind(now)
    .bind(state_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let state = match row {
        Some((browser_hash, redirect_to)) => LoginState::Valid(LoginRecord {
            browser_hash,
            redirect_to,
        }),
        None => {
            let found: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT used_at, expires_at FROM oidc_logins WHERE state_hash = $1")
                    .bind(state_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            match found {
                None => LoginState::Unknown,
                Some((Some(_), _)) => LoginState::Used,
                Some((None, _)) => LoginState::Expired,
            }
        }
    };
    tx.commit().await?;
    Ok(state)
}

/// One of a user's memberships, as just-in-time provisioning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedMembership {
    pub organization_id: i64,
    pub disabled: bool,
    pub invited_only: bool,
    pub oidc_managed: bool,
}

pub async fn memberships_of(
    conn: &mut AnyConnection,
    user_id: i64,
) -> StoreResult<Vec<ProvisionedMembership>> {
    let rows: Vec<(i64, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
        "SELECT organization_id, disabled_at, joined_at, oidc_managed FROM memberships \
         WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(organization_id, disabled_at, joined_at, managed)| ProvisionedMembership {
                organization_id,
                disabled: disabled_at.is_some(),
                invited_only: joined_at.is_none(),
                oidc_managed: managed == 1,
            },
        )
        .collect())
}

pub async fn organization_id_by_name(
    conn: &mut AnyConnection,
    name: &str,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM organizations WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(id,)| id))
}

/// Adds a member the provider vouched for, marked as provisioned.
pub async fn add_provisioned_member(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    can_manage_tokens: bool,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, can_manage_tokens, joined_at, \
         created_at, oidc_managed) VALUES ($1, $2, 'member', $3, $4, $4, 1)",
    )
    .bind(organization_id)
    .bind(user_id)
    .bind(i64::from(can_manage_tokens))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn user_id_by_email(
    conn: &mut AnyConnection,
    email: &crate::domain::EmailAddress,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(id,)| id))
}
