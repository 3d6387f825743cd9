//! The member list at scale: search by email and paging over 5,000 members.

use std::time::Instant;

use super::{superuser, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(search_and_paging_work_with_five_thousand_members);

/// Adds 5,000 members, m10001@example.com … m15000@example.com, in one
/// transaction of two statements.
async fn seed(app: &TestApp, org_id: i64) {
    let mut tx = app.db().begin().await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
         INSERT INTO users (email, created_at) SELECT 'm' || (10000 + i) || '@example.com', 0 FROM n",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role, can_manage_tokens, joined_at, created_at) \
         SELECT $1, id, 'member', 1, 0, 0 FROM users WHERE email LIKE 'm1%@example.com'",
    )
    .bind(org_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn rows(page: &str) -> usize {
    page.matches("class=\"member-row").count()
}

async fn search_and_paging_work_with_five_thousand_members(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    seed(&app, org.id).await;

    let started = Instant::now();
    let page = text(app.get("/team").await).await;
    let took = started.elapsed();
    assert!(took.as_secs() < 5, "the first page took {took:?}");
    assert_eq!(rows(&page), 50);
    assert!(page.contains("<span class=\"count\">5001</span>"));
    assert!(page.contains("1–50 of 5001 · page 1 of 101"));
    assert!(page.contains("href=\"/team?page=2\""));

    let last = text(app.get("/team?page=101").await).await;
    assert_eq!(rows(&last), 1);
    assert!(last.contains("m15000@example.com"));
    let beyond = text(app.get("/team?page=9999").await).await;
    assert!(
        beyond.contains("page 101 of 101"),
        "clamped to the last page"
    );
    assert_eq!(rows(&text(app.get("/team?page=-3").await).await), 50);

    let found = text(app.get("/team?q=M1499").await).await;
    assert_eq!(rows(&found), 10, "m14990 … m14999");
    assert!(found.contains("m14995@example.com") && !found.contains("m10001@example.com"));
    // htmx search: only the members section.
    let r = app
        .client
        .get(app.url("/team?q=m1234"))
        .header("hx-request", "true")
        .header("hx-target", "members")
        .send()
        .await
        .unwrap();
    let fragment = text(r).await;
    assert!(fragment.starts_with("<section id=\"members\"") && !fragment.contains("<html"));
    assert_eq!(rows(&fragment), 10);
    // LIKE wildcards are literal.
    assert!(
        text(app.get("/team?q=%25").await)
            .await
            .contains("No member’s email contains")
    );
    let wide = text(app.get("/team?q=m1&page=3").await).await;
    let next = &wide[wide
        .find("rel=\"next\"")
        .map(|i| i.saturating_sub(60))
        .unwrap()..];
    assert!(
        next.contains("q=m1") && next.contains("page=4"),
        "paging keeps the search"
    );
    app.shutdown().await;
}
