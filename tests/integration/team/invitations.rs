//! Inviting people: the email, the Accept page whose button POSTs, single
//! use, seven days.

use std::time::Duration;

use super::{superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

backend_tests!(
    an_invitation_is_accepted_once_and_signs_the_invitee_in,
    an_expired_invitation_is_refused,
    invite_rejects_bad_and_existing_addresses_keeping_the_input,
);

/// The path of the accept link in the newest invitation to `email`.
async fn invitation_path(app: &TestApp, email: &str) -> String {
    let mail = app.wait_for_dev_mail(email, 1).await;
    let m = mail
        .iter()
        .find(|m| m.subject.contains("invited you to Acme"))
        .expect("invitation email");
    m.links[0]
        .strip_prefix(&app.base_url)
        .expect("link to this server")
        .to_string()
}

async fn an_invitation_is_accepted_once_and_signs_the_invitee_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let r = team_post(
        &app,
        "/team/invite",
        &[("email", "Carol@Example.com")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = text(r).await;
    assert!(html.contains("Invitation sent to carol@example.com"));
    assert!(
        html.contains("hx-swap-oob") && html.contains("badge-invited"),
        "the list, refreshed"
    );

    let path = invitation_path(&app, "carol@example.com").await;
    assert!(path.starts_with("/invite/"));
    let carol = new_client();
    // Opening the link (as a mail scanner would) changes nothing.
    for _ in 0..2 {
        let r = carol.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page = text(r).await;
        assert!(page.contains("Join Acme on Keysmith") && page.contains(">Accept</button>"));
    }
    assert!(
        text(app.get("/team?q=carol").await)
            .await
            .contains("badge-invited")
    );

    // Until she accepts, Carol is not a member: no sign-in link is sent.
    let r = app
        .post_form_with(
            &new_client(),
            "/signin",
            "/signin",
            &[("email", "carol@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !app.dev_mail()
            .await
            .iter()
            .any(|m| m.to == "carol@example.com" && m.subject.contains("sign-in")),
        "an invitee who has not accepted cannot sign in"
    );

    let csrf = app.csrf_with(&carol, &path).await;
    let r = carol
        .post(app.url(&path))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/settings/api-tokens");
    let page = text(
        carol
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains("carol@example.com"), "signed in");
    assert!(
        page.contains("You cannot create or manage personal API tokens"),
        "permission off unless the inviter ticked it"
    );
    assert!(
        text(app.get("/team?q=carol").await)
            .await
            .contains("badge-active")
    );

    // Single use.
    let again = new_client();
    let csrf = app.csrf_with(&again, &path).await;
    let r = again
        .post(app.url(&path))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(text(r).await.contains("already used"));
    assert_eq!(
        again
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );

    // Ticking the box grants the permission from the start.
    let r = team_post(
        &app,
        "/team/invite",
        &[("email", "dan@example.com"), ("can_manage_tokens", "1")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let path = invitation_path(&app, "dan@example.com").await;
    let dan = new_client();
    let csrf = app.csrf_with(&dan, &path).await;
    let r = dan
        .post(app.url(&path))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = text(
        dan.get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains("id=\"new-token\""));
    app.shutdown().await;
}

async fn an_expired_invitation_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let r = team_post(
        &app,
        "/team/invite",
        &[("email", "erin@example.com")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let path = invitation_path(&app, "erin@example.com").await;
    app.state
        .clock
        .advance(Duration::from_secs(7 * 24 * 3600 + 60));
    let erin = new_client();
    let r = erin.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let csrf = keysmith_csrf(&text(r).await);
    let r = erin
        .post(app.url(&path))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(text(r).await.contains("This invitation has expired"));
    // (The superuser's session has idled out by now: ask the store.)
    let (joined,): (Option<i64>,) = sqlx::query_as(
        "SELECT m.joined_at FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = $1",
    )
    .bind("erin@example.com")
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(joined, None, "still invited");
    app.shutdown().await;
}

fn keysmith_csrf(html: &str) -> String {
    crate::harness::csrf_of(html)
}

async fn invite_rejects_bad_and_existing_addresses_keeping_the_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let r = team_post(&app, "/team/invite", &[("email", "not-an-email")], false).await;
    assert_eq!(r.status(), 422);
    let page = text(r).await;
    assert!(
        page.contains("value=\"not-an-email\"") && page.contains("field-error"),
        "{page}"
    );
    let r = team_post(&app, "/team/invite", &[("email", "ada@example.com")], true).await;
    assert_eq!(r.status(), 422);
    assert!(
        text(r)
            .await
            .contains("ada@example.com is already a member")
    );
    app.shutdown().await;
}
