//! A token's life after creation, over HTTP: regenerating it from the
//! session API (and the pages), rotating it with itself, the grace period
//! of the replaced secret, the alert when a replaced secret is used later,
//! and the expiry header on verified answers.

mod expiry_header;
mod pages;
mod regenerate;
mod reuse;
mod self_rotate;
mod two_instances;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp};

/// Creates a token through the JSON API with `expires_at` (RFC 3339 or
/// none); returns the creation answer.
pub async fn create(app: &TestApp, label: &str, expires_at: Option<&str>) -> Value {
    let mut body = json!({ "label": label, "scopes": ["write"] });
    if let Some(at) = expires_at {
        body["expiresAt"] = json!(at);
    }
    let r = app
        .api(Method::POST, "/api/user/api-keys", Some(body))
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// `POST /api/user/api-keys/{id}/regenerate` with `body`.
pub async fn regenerate(app: &TestApp, id: i64, body: Option<Value>) -> reqwest::Response {
    app.api(
        Method::POST,
        &format!("/api/user/api-keys/{id}/regenerate"),
        body,
    )
    .await
}

/// Moves the app's clock forward.
pub fn advance(app: &TestApp, seconds: u64) {
    app.state.clock.advance(Duration::from_secs(seconds));
}

/// Fails if any column of any table holds `secret` or its random body.
pub async fn assert_stored_nowhere(app: &TestApp, backend: Backend, secret: &str) {
    let columns: Vec<(String, String)> = sqlx::query_as(match backend {
        Backend::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public'"
        }
    })
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    assert!(
        columns
            .iter()
            .any(|(t, _)| t == "api_token_replaced_secrets"),
        "{columns:?}"
    );
    let body = &secret[secret.find('_').unwrap() + 1..];
    for (table, column) in &columns {
        let expr = match backend {
            Backend::Sqlite => format!("CAST({column} AS BLOB)"),
            Backend::Postgres => format!("convert_to(CAST({column} AS TEXT), 'UTF8')"),
        };
        let values: Vec<(Option<Vec<u8>>,)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM {table}")))
                .fetch_all(app.db().pool())
                .await
                .unwrap();
        for bytes in values.into_iter().filter_map(|(v,)| v) {
            let value = String::from_utf8_lossy(&bytes);
            assert!(
                !value.contains(secret) && !value.contains(body),
                "a plaintext token found in {table}.{column}"
            );
        }
    }
}

/// Sets the organization's maximum token lifetime, as the Team page's
/// policy form stores it (rotation reads the policy from the database).
pub async fn set_max_lifetime_days(app: &TestApp, organization_id: i64, days: i64) {
    sqlx::query("UPDATE organizations SET max_token_lifetime_days = $1 WHERE id = $2")
        .bind(days)
        .bind(organization_id)
        .execute(app.db().pool())
        .await
        .unwrap();
}

/// Waits (up to 10 s) for a development-outbox message to `to` whose
/// subject contains `subject`.
pub async fn wait_for_subject(app: &TestApp, to: &str, subject: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mail = app.dev_mail().await;
        if mail
            .iter()
            .any(|m| m.to == to && m.subject.contains(subject))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no “{subject}” mail to {to}: {:?}",
            mail.iter().map(|m| &m.subject).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
