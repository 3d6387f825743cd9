//! Disabling members, roles, and the last-superuser guard.

use keysmith::store::tokens;

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    disabling_a_member_ends_their_session_and_tokens_and_enabling_revives_tokens,
    the_last_superuser_cannot_be_demoted_or_disabled,
);

async fn disabling_a_member_ends_their_session_and_tokens_and_enabling_revives_tokens(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let bob_client = client_for(&app, "bob@example.com").await;
    assert_eq!(
        bob_client
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.whoami_status(&token.token).await, 200);

    let r = team_post(
        &app,
        &format!("/team/members/{bob}/status"),
        &[("disabled", "true")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("badge-disabled"));
    let r = bob_client
        .get(app.url("/settings/api-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed out");
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/signin")
    );
    assert_eq!(app.whoami_status(&token.token).await, 401);
    let rows = tokens::list_for_owner(app.db(), org.id, bob, true)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "rows kept");
    assert!(rows[0].revoked_at.is_none() && rows[0].disabled_at.is_none());
    // A disabled member cannot get a sign-in link either.
    let before = app.dev_mail().await.len();
    let _ = app
        .post_form_with(
            &crate::harness::new_client(),
            "/signin",
            "/signin",
            &[("email", "bob@example.com")],
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.dev_mail().await.len(),
        before,
        "no sign-in link for a disabled member"
    );

    let r = team_post(
        &app,
        &format!("/team/members/{bob}/status"),
        &[("disabled", "false")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.whoami_status(&token.token).await,
        200,
        "tokens work again"
    );
    let page = text(app.get("/team").await).await;
    assert!(page.contains("bob@example.com is enabled again."), "flash");
    app.shutdown().await;
}

async fn the_last_superuser_cannot_be_demoted_or_disabled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, _) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let ada = org.owner;

    let r = team_post(
        &app,
        &format!("/team/members/{ada}/role"),
        &[("role", "member")],
        false,
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(text(r).await.contains("This is the last superuser of Acme"));
    let r = team_post(
        &app,
        &format!("/team/members/{ada}/role"),
        &[("role", "member")],
        true,
    )
    .await;
    assert_eq!(r.status(), 422, "htmx gets the row with the reason");
    let row = text(r).await;
    assert!(
        row.contains("role=\"alert\"") && row.contains("last superuser"),
        "{row}"
    );
    let r = team_post(
        &app,
        &format!("/team/members/{ada}/status"),
        &[("disabled", "true")],
        false,
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(text(r).await.contains("last superuser"));
    assert_eq!(app.get("/team").await.status(), 200, "still a superuser");

    // With a second superuser, ada may step down.
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/role"),
        &[("role", "superuser")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("Always (superuser)"));
    let r = team_post(
        &app,
        &format!("/team/members/{ada}/role"),
        &[("role", "member")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.get("/team").await.status(), 403, "ada is a member now");
    app.shutdown().await;
}
