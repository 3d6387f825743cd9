//! Organizations, users and memberships.

use sqlx::AnyConnection;

use super::{AuditEvent, Db, StoreResult, conflict_on_unique, record_audit, unix_now};
use crate::domain::{EmailAddress, OrgName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Superuser,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superuser => "superuser",
            Role::Member => "member",
        }
    }

    fn from_stored(s: &str) -> Role {
        if s == "superuser" {
            Role::Superuser
        } else {
            Role::Member
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub organization: Organization,
    pub user_id: i64,
    pub role: Role,
    /// "Can create and manage personal API tokens"; superusers always can.
    pub can_manage_tokens: bool,
    pub disabled: bool,
}

impl Membership {
    pub fn may_manage_tokens(&self) -> bool {
        !self.disabled && (self.role == Role::Superuser || self.can_manage_tokens)
    }
}

/// What `bootstrap` found and did, for the CLI to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub organization: Organization,
    pub user: User,
    pub created_organization: bool,
    pub created_user: bool,
    /// The membership was created, or changed to an enabled superuser.
    pub changed_membership: bool,
}

pub async fn count_organizations(db: &Db) -> StoreResult<i64> {
    let mut conn = db.pool().acquire().await?;
    count_organizations_in(&mut conn).await
}

pub async fn count_organizations_in(conn: &mut AnyConnection) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM organizations")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

/// Makes sure `name` exists with `email` as an enabled superuser. Running it
/// again with the same values changes nothing.
pub async fn bootstrap(db: &Db, name: &OrgName, email: &EmailAddress) -> StoreResult<Bootstrapped> {
    let mut tx = db.begin().await?;
    let done = bootstrap_in(&mut tx, name, email, unix_now()).await?;
    tx.commit().await?;
    Ok(done)
}

/// `bootstrap` inside the caller's transaction (first-run setup also signs
/// the new superuser in, in the same transaction).
pub async fn bootstrap_in(
    tx: &mut AnyConnection,
    name: &OrgName,
    email: &EmailAddress,
    now: i64,
) -> StoreResult<Bootstrapped> {
    let existing: Option<(i64,)> = sqlx::query_as("SELECT id FROM organizations WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let (org_id, created_organization) = match existing {
        Some((id,)) => (id, false),
        None => {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO organizations (name, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(name.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict_on_unique(
                "an organization with this name was just created",
            ))?;
            (id, true)
        }
    };

    let (user, created_user) = find_or_create_user(tx, email).await?;

    let membership: Option<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT role, can_manage_tokens, disabled_at FROM memberships \
         WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(org_id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?;
    let changed_membership = match membership {
        None => {
            sqlx::query(
                "INSERT INTO memberships (organization_id, user_id, role, can_manage_tokens, joined_at, created_at) \
                 VALUES ($1, $2, 'superuser', 1, $3, $3)",
            )
            .bind(org_id)
            .bind(user.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            true
        }
        Some((role, can, disabled)) if role != "superuser" || can != 1 || disabled.is_some() => {
            sqlx::query(
                "UPDATE memberships SET role = 'superuser', can_manage_tokens = 1, disabled_at = NULL \
                 WHERE organization_id = $1 AND user_id = $2",
            )
            .bind(org_id)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
            true
        }
        Some(_) => false,
    };

    if created_organization || created_user || changed_membership {
        record_audit(
            tx,
            &AuditEvent {
                organization_id: Some(org_id),
                subject_user_id: Some(user.id),
                action: "organization.bootstrapped",
                detail: Some("keysmith bootstrap"),
                ..AuditEvent::default()
            },
        )
        .await?;
    }

    Ok(Bootstrapped {
        organization: Organization {
            id: org_id,
            name: name.as_str().to_string(),
        },
        user,
        created_organization,
        created_user,
        changed_membership,
    })
}

pub async fn find_or_create_user(
    conn: &mut AnyConnection,
    email: &EmailAddress,
) -> StoreResult<(User, bool)> {
    let found: Option<(i64, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((id, email)) = found {
        return Ok((User { id, email }, false));
    }
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO users (email, created_at) VALUES ($1, $2) RETURNING id")
            .bind(email.as_str())
            .bind(unix_now())
            .fetch_one(&mut *conn)
            .await
            .map_err(conflict_on_unique(
                "a user with this email was just created",
            ))?;
    Ok((
        User {
            id,
            email: email.as_str().to_string(),
        },
        true,
    ))
}

pub async fn find_user_by_email(db: &Db, email: &EmailAddress) -> StoreResult<Option<User>> {
    let found: Option<(i64, String)> =
        sqlx::query_as("SELECT id, email FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(db.pool())
            .await?;
    Ok(found.map(|(id, email)| User { id, email }))
}

/// The user's memberships that are joined (not just invited) and not
/// disabled, oldest first.
pub async fn active_memberships(db: &Db, user_id: i64) -> StoreResult<Vec<Membership>> {
    let mut conn = db.pool().acquire().await?;
    active_memberships_in(&mut conn, user_id).await
}

/// `active_memberships` inside the caller's transaction.
pub async fn active_memberships_in(
    conn: &mut AnyConnection,
    user_id: i64,
) -> StoreResult<Vec<Membership>> {
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT o.id, o.name, m.role, m.can_manage_tokens FROM memberships m \
         JOIN organizations o ON o.id = m.organization_id \
         WHERE m.user_id = $1 AND m.disabled_at IS NULL AND m.joined_at IS NOT NULL ORDER BY m.id",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(org_id, name, role, can)| Membership {
            organization: Organization { id: org_id, name },
            user_id,
            role: Role::from_stored(&role),
            can_manage_tokens: can == 1,
            disabled: false,
        })
        .collect())
}

pub async fn user_email(db: &Db, user_id: i64) -> StoreResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT email FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(e,)| e))
}

/// Adds `email` to the organization as an active member (creating the user
/// if needed). `Conflict` if they are a member already.
pub async fn add_member(
    conn: &mut AnyConnection,
    organization_id: i64,
    email: &EmailAddress,
    role: Role,
    can_manage_tokens: bool,
    now: i64,
) -> StoreResult<User> {
    let (user, _) = find_or_create_user(conn, email).await?;
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, can_manage_tokens, joined_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(organization_id)
    .bind(user.id)
    .bind(role.as_str())
    .bind(i64::from(can_manage_tokens))
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(conflict_on_unique("already a member of this organization"))?;
    Ok(user)
}

/// Grants or withdraws "Can create and manage personal API tokens". Returns
/// false when the membership does not exist or already has that value.
pub async fn set_can_manage_tokens(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    allowed: bool,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE memberships SET can_manage_tokens = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND can_manage_tokens <> $1",
    )
    .bind(i64::from(allowed))
    .bind(organization_id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Disables or re-enables a membership. Returns false when nothing changed.
pub async fn set_member_disabled(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
    disabled: bool,
    now: i64,
) -> StoreResult<bool> {
    let done = if disabled {
        sqlx::query(
            "UPDATE memberships SET disabled_at = $1 \
             WHERE organization_id = $2 AND user_id = $3 AND disabled_at IS NULL",
        )
        .bind(now)
        .bind(organization_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(
            "UPDATE memberships SET disabled_at = NULL \
             WHERE organization_id = $1 AND user_id = $2 AND disabled_at IS NOT NULL",
        )
        .bind(organization_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?
    };
    Ok(done.rows_affected() == 1)
}

/// The membership of `user_id` in `organization_id`, disabled or not.
pub async fn membership(
    db: &Db,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<Option<Membership>> {
    let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT o.name, m.role, m.can_manage_tokens, m.disabled_at FROM memberships m \
         JOIN organizations o ON o.id = m.organization_id \
         WHERE m.organization_id = $1 AND m.user_id = $2",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|(name, role, can, disabled)| Membership {
        organization: Organization {
            id: organization_id,
            name,
        },
        user_id,
        role: Role::from_stored(&role),
        can_manage_tokens: can == 1,
        disabled: disabled.is_some(),
    }))
}

/// An organization's token policy; `None` fields fall back to the deployment's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgPolicy {
    pub reads_per_minute: Option<i64>,
    pub writes_per_minute: Option<i64>,
    pub max_token_lifetime_days: Option<i64>,
    /// Scope names members may grant, space separated; `None`: all.
    pub allowed_scopes: Option<String>,
}

pub async fn policy(db: &Db, organization_id: i64) -> StoreResult<OrgPolicy> {
    type PolicyRow = (Option<i64>, Option<i64>, Option<i64>, Option<String>);
    let row: Option<PolicyRow> = sqlx::query_as(
        "SELECT reads_per_minute, writes_per_minute, max_token_lifetime_days, allowed_scopes \
         FROM organizations WHERE id = $1",
    )
    .bind(organization_id)
    .fetch_optional(db.pool())
    .await?;
    let (reads_per_minute, writes_per_minute, max_token_lifetime_days, allowed_scopes) =
        row.ok_or(super::StoreError::NotFound)?;
    Ok(OrgPolicy {
        reads_per_minute,
        writes_per_minute,
        max_token_lifetime_days,
        allowed_scopes,
    })
}

pub async fn organization_name(db: &Db, organization_id: i64) -> StoreResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT name FROM organizations WHERE id = $1")
        .bind(organization_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(n,)| n))
}

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME
}

/// Holds the organization's row until the caller's transaction ends, so a
/// check-then-act rule over its memberships (the last superuser) sees no
/// writer acting at the same moment. PostgreSQL needs the row lock (READ
/// COMMITTED lets two transactions count the same rows); `NO KEY UPDATE`,
/// not `UPDATE`, so inserts that reference the organization (their foreign
/// key takes `KEY SHARE`) are not held up and cannot deadlock with it. On
/// SQLite the write transaction (`BEGIN IMMEDIATE`) already shuts out every
/// other writer.
pub async fn lock_organization(conn: &mut AnyConnection, organization_id: i64) -> StoreResult<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE")
            .bind(organization_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Holds one membership's row until the caller's transaction ends (a
/// member's token limits: count, then create). As `lock_organization`.
pub async fn lock_membership(
    conn: &mut AnyConnection,
    organization_id: i64,
    user_id: i64,
) -> StoreResult<()> {
    if is_postgres(conn) {
        sqlx::query(
            "SELECT id FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR NO KEY UPDATE",
        )
        .bind(organization_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
