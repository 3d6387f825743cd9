//! Disabling members, roles, and the last-superuser guard.

use keysmith::store::tokens;

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::bearer::member;
use crate::harness::{Backend, TestApp};

backend_tests!(
    disabling_a_member_ends_their_session_and_tokens_and_enabling_revives_tokens,
    the_last_superuser_cannot_be_demoted_or_disabled,
    an_invited_superuser_who_never_joined_does_not_count_as_a_superuser,
);
crate::postgres_only_tests!(two_superusers_demoting_each_other_at_once_leave_exactly_one);

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

async fn user_id(app: &TestApp, email: &str) -> i64 {
    let (id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    id
}

/// Superusers who have joined and are enabled: the ones who can sign in.
async fn working_superusers(app: &TestApp, org: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM memberships WHERE organization_id = $1 AND role = 'superuser' \
         AND disabled_at IS NULL AND joined_at IS NOT NULL",
    )
    .bind(org)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    n
}

async fn an_invited_superuser_who_never_joined_does_not_count_as_a_superuser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let ada = org.owner;
    let r = team_post(
        &app,
        "/team/invite",
        &[("email", "carol@example.com")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let carol = user_id(&app, "carol@example.com").await;
    let r = team_post(
        &app,
        &format!("/team/members/{carol}/role"),
        &[("role", "superuser")],
        false,
    )
    .await;
    assert_eq!(
        r.status(),
        303,
        "an invitee may be made a superuser in advance"
    );

    // Carol cannot sign in until she accepts: ada is still the last one.
    let r = team_post(
        &app,
        &format!("/team/members/{ada}/role"),
        &[("role", "member")],
        false,
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(text(r).await.contains("This is the last superuser of Acme"));
    assert_eq!(
        app.get("/team").await.status(),
        200,
        "ada is still a superuser"
    );
    assert_eq!(working_superusers(&app, org.id).await, 1);
    app.shutdown().await;
}

/// Two superusers demote each other at the same moment, through the real
/// endpoints, again and again: one wins, the other is refused, and the
/// organization always keeps a superuser who can sign in.
async fn two_superusers_demoting_each_other_at_once_leave_exactly_one() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let org = superuser(&app).await;
    let ada = org.owner;
    let bob = member(
        &app,
        &crate::bearer::Org {
            id: org.id,
            owner: ada,
        },
        "bob@example.com",
    )
    .await;
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/role"),
        &[("role", "superuser")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let bob_client = client_for(&app, "bob@example.com").await;
    let clients = [(&app.client, ada), (&bob_client, bob)];
    for round in 0..8 {
        let ada_csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
        let bob_csrf = app.csrf_with(&bob_client, "/settings/api-tokens").await;
        let demote = |client: &reqwest::Client, csrf: &str, target: i64| {
            client
                .post(app.url(&format!("/team/members/{target}/role")))
                .form(&[("role", "member"), ("csrf_token", csrf)])
                .send()
        };
        let (a, b) = tokio::join!(
            demote(&app.client, &ada_csrf, bob),
            demote(&bob_client, &bob_csrf, ada)
        );
        let (a, b) = (a.unwrap().status().as_u16(), b.unwrap().status().as_u16());
        let won: Vec<bool> = [a, b].iter().map(|s| *s == 303).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one demotion succeeds (ada {a}, bob {b})"
        );
        assert!(
            [a, b].iter().all(|s| [303, 403, 409].contains(s)),
            "round {round}: {a} {b}"
        );
        assert_eq!(working_superusers(&app, org.id).await, 1, "round {round}");
        // The one left promotes the other again for the next round.
        let (winner, loser) = if won[0] {
            (clients[0], clients[1])
        } else {
            (clients[1], clients[0])
        };
        let csrf = app.csrf_with(winner.0, "/settings/api-tokens").await;
        let r = winner
            .0
            .post(app.url(&format!("/team/members/{}/role", loser.1)))
            .form(&[("role", "superuser"), ("csrf_token", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "round {round}");
        assert_eq!(working_superusers(&app, org.id).await, 2);
    }
    app.shutdown().await;
}
