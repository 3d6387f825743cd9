//! An organization's projects, which tokens can be restricted to.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::{Db, StoreResult, conflict_on_unique};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub archived: bool,
}

/// Projects a new token may be restricted to: not archived, by name.
pub async fn list_active(db: &Db, organization_id: i64) -> StoreResult<Vec<Project>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, name FROM projects WHERE organization_id = $1 AND archived_at IS NULL ORDER BY name",
    )
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name)| Project {
            id,
            name,
            archived: false,
        })
        .collect())
}

/// How many projects the organization has, archived ones included.
pub async fn count(db: &Db, organization_id: i64) -> StoreResult<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM projects WHERE organization_id = $1")
        .bind(organization_id)
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}

pub async fn create(
    conn: &mut AnyConnection,
    organization_id: i64,
    name: &str,
    now: i64,
) -> StoreResult<i64> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO projects (organization_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(organization_id)
    .bind(name)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(conflict_on_unique("a project with this name exists"))?;
    Ok(id)
}

/// Project names of the given tokens (one page of a list), by token id,
/// each sorted by name. Bounded by the page, not by what the owner holds.
pub async fn names_for_tokens(
    db: &Db,
    organization_id: i64,
    token_ids: &[i64],
) -> StoreResult<HashMap<i64, Vec<String>>> {
    let mut by_token: HashMap<i64, Vec<String>> = HashMap::new();
    if token_ids.is_empty() {
        return Ok(by_token);
    }
    let placeholders: Vec<String> = (0..token_ids.len())
        .map(|i| format!("${}", i + 2))
        .collect();
    let sql = format!(
        "SELECT tp.token_id, p.name FROM api_token_projects tp \
         JOIN projects p ON p.id = tp.project_id \
         WHERE p.organization_id = $1 AND tp.token_id IN ({}) ORDER BY p.name",
        placeholders.join(", ")
    );
    let mut query =
        sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql)).bind(organization_id);
    for id in token_ids {
        query = query.bind(*id);
    }
    for (token_id, name) in query.fetch_all(db.pool()).await? {
        by_token.entry(token_id).or_default().push(name);
    }
    Ok(by_token)
}
