//! "Can create and manage personal API tokens": withdrawing it pauses a
//! member's tokens at once without touching them; giving it back revives them.

use keysmith::store::tokens;

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    withdraw_blocks_tokens_at_once_and_give_back_revives_them,
    superusers_always_have_the_permission,
);

/// What a token row says, apart from its last use (written in the background).
async fn rows(
    app: &TestApp,
    org: i64,
    user: i64,
) -> Vec<(i64, String, Option<i64>, Option<i64>, Option<i64>)> {
    tokens::list_for_owner(app.db(), org, user, true)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.label, t.expires_at, t.disabled_at, t.revoked_at))
        .collect()
}

async fn withdraw_blocks_tokens_at_once_and_give_back_revives_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let bob_client = client_for(&app, "bob@example.com").await;
    // Cached as good first, so the change must reach the cache.
    assert_eq!(app.whoami_status(&token.token).await, 200);
    let before = rows(&app, org.id, bob).await;

    let r = team_post(
        &app,
        &format!("/team/members/{bob}/permission"),
        &[("allowed", "false")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let row = text(r).await;
    assert!(
        row.starts_with("<tr id=\"member-") && row.contains("aria-checked=\"false\""),
        "{row}"
    );
    assert_eq!(app.whoami_status(&token.token).await, 401, "paused at once");
    let page = text(
        bob_client
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!page.contains("id=\"new-token\""), "no create button");
    assert!(page.contains("You cannot create or manage personal API tokens"));
    assert_eq!(rows(&app, org.id, bob).await, before, "rows untouched");

    // The plain-form fallback gives it back.
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/permission"),
        &[("allowed", "true")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/team");
    assert_eq!(app.whoami_status(&token.token).await, 200, "works again");
    let page = text(
        bob_client
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains("id=\"new-token\""));
    assert_eq!(rows(&app, org.id, bob).await, before);

    let actions: Vec<(String,)> = sqlx::query_as(
        "SELECT action FROM audit_events WHERE subject_user_id = $1 AND action LIKE 'member.%' ORDER BY id",
    )
    .bind(bob)
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        vec![
            ("member.permission_withdrawn".to_string(),),
            ("member.permission_granted".to_string(),)
        ]
    );
    let mail = app.wait_for_dev_mail("bob@example.com", 3).await;
    assert!(
        mail.iter()
            .any(|m| m.subject == "Your API tokens in Acme are paused")
    );
    assert!(
        mail.iter()
            .any(|m| m.subject == "Your API tokens in Acme work again")
    );
    app.shutdown().await;
}

async fn superusers_always_have_the_permission(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let page = text(app.get("/team").await).await;
    let ada_row = &page[page.find(&format!("id=\"member-{}\"", org.owner)).unwrap()..];
    let ada_row = &ada_row[..ada_row.find("</tr>").unwrap()];
    assert!(ada_row.contains("disabled") && ada_row.contains("Always (superuser)"));
    let r = team_post(
        &app,
        &format!("/team/members/{}/permission", org.owner),
        &[("allowed", "false")],
        false,
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(text(r).await.contains("Superusers can always create"));
    app.shutdown().await;
}
