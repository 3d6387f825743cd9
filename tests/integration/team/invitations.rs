//! Inviting people: the email, the Accept page whose button POSTs, single
//! use, seven days.

use std::time::Duration;

use super::{client_for, superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

backend_tests!(
    an_invitation_is_accepted_once_and_signs_the_invitee_in,
    an_expired_invitation_is_refused,
    invite_rejects_bad_and_existing_addresses_keeping_the_input,
    an_invitation_for_an_existing_account_never_signs_anyone_in,
    an_invitation_for_an_existing_account_is_refused_to_another_account,
    an_invitation_for_an_existing_account_is_accepted_once_by_that_account_signed_in,
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

/// Bob has an account already (a superuser of Globex, signed in there
/// normally), and ada invites him to Acme. Returns the invitation's path.
async fn invite_existing_bob(app: &TestApp) -> String {
    keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Globex").unwrap(),
        &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
    )
    .await
    .unwrap();
    let r = team_post(app, "/team/invite", &[("email", "bob@example.com")], false).await;
    assert_eq!(r.status(), 303);
    invitation_path(app, "bob@example.com").await
}

/// (joined_at of bob's Acme membership, used_at of the invitation link)
async fn bob_in_acme(app: &TestApp) -> (Option<i64>, Option<i64>) {
    let (joined,): (Option<i64>,) = sqlx::query_as(
        "SELECT m.joined_at FROM memberships m JOIN users u ON u.id = m.user_id \
         JOIN organizations o ON o.id = m.organization_id WHERE u.email = $1 AND o.name = 'Acme'",
    )
    .bind("bob@example.com")
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    let (used,): (Option<i64>,) =
        sqlx::query_as("SELECT used_at FROM one_time_links WHERE kind = 'invite'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    (joined, used)
}

async fn accept_with(app: &TestApp, client: &reqwest::Client, path: &str) -> reqwest::Response {
    let csrf = app.csrf_with(client, path).await;
    client
        .post(app.url(path))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap()
}

async fn an_invitation_for_an_existing_account_never_signs_anyone_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let path = invite_existing_bob(&app).await;
    // Bob signs in normally meanwhile: the link must not become a second way in.
    let _bob = client_for(&app, "bob@example.com").await;

    let stranger = new_client();
    let r = stranger.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    let signin = format!("/signin?next={path}");
    assert!(
        page.contains("Sign in as bob@example.com to accept"),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"{signin}\"")), "{page}");
    assert!(
        !page.contains(">Accept</button>"),
        "no Accept without the account"
    );

    let r = accept_with(&app, &stranger, &path).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], signin.as_str());
    assert!(
        r.headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().contains("session")),
        "no session cookie"
    );
    let r = stranger
        .get(app.url("/settings/api-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "not signed in");
    assert_eq!(
        bob_in_acme(&app).await,
        (None, None),
        "not joined, link unused"
    );
    app.shutdown().await;
}

async fn an_invitation_for_an_existing_account_is_refused_to_another_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let path = invite_existing_bob(&app).await;
    // Ada (signed in as herself) opens bob's link.
    let r = app.get(&path).await;
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(
        page.contains("This invitation is for bob@example.com")
            && !page.contains(">Accept</button>"),
        "{page}"
    );
    let r = accept_with(&app, &app.client, &path).await;
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert!(
        page.contains("This invitation is for bob@example.com")
            && page.contains("You are signed in as ada@example.com"),
        "{page}"
    );
    assert_eq!(
        bob_in_acme(&app).await,
        (None, None),
        "not joined, link unused"
    );
    assert_eq!(
        app.get("/team").await.status(),
        200,
        "ada's session is untouched"
    );
    app.shutdown().await;
}

async fn an_invitation_for_an_existing_account_is_accepted_once_by_that_account_signed_in(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let path = invite_existing_bob(&app).await;

    // Signing in from the invitation page comes back to it.
    let bob = new_client();
    let r = app
        .post_form_with(
            &bob,
            "/signin",
            "/signin",
            &[("email", "bob@example.com"), ("next", &path)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let mail = app.wait_for_dev_mail("bob@example.com", 2).await;
    let link = mail
        .iter()
        .find(|m| !m.subject.contains("invited you"))
        .expect("a sign-in email")
        .links[0]
        .strip_prefix(&app.base_url)
        .unwrap()
        .to_string();
    let r = app.post_form_with(&bob, &link, &link, &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], path.as_str());

    let page = text(bob.get(app.url(&path)).send().await.unwrap()).await;
    assert!(
        page.contains("Join Acme on Keysmith") && page.contains(">Accept</button>"),
        "{page}"
    );
    let r = accept_with(&app, &bob, &path).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/settings/api-tokens");
    let (joined, used) = bob_in_acme(&app).await;
    assert!(joined.is_some() && used.is_some(), "joined, link used");
    let looking_at: Vec<(String,)> = sqlx::query_as(
        "SELECT o.name FROM sessions s JOIN organizations o ON o.id = s.current_organization_id \
         JOIN users u ON u.id = s.user_id WHERE u.email = 'bob@example.com'",
    )
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    assert_eq!(
        looking_at,
        [("Acme".to_string(),)],
        "the same session, now looking at Acme"
    );
    assert!(
        text(app.get("/team?q=bob").await)
            .await
            .contains("badge-active")
    );

    // Used: neither bob nor anyone else gets anything from it again.
    for client in [&bob, &new_client()] {
        let r = accept_with(&app, client, &path).await;
        assert_eq!(r.status(), 410);
        assert!(text(r).await.contains("already used"));
    }
    app.shutdown().await;
}
