//! Regenerating from the pages, as plain forms (no JavaScript) and as htmx
//! fragments: the settings page for one's own tokens, a member's Team page
//! for superusers. The new secret is shown once, like a new token's.

use crate::backend_tests;
use crate::bearer::{Spec, member, mint, whoami};
use crate::harness::{Backend, TestApp};
use crate::team::{client_for, superuser, team_post};

backend_tests!(
    the_settings_page_regenerates_with_a_plain_form_and_with_htmx,
    a_bad_grace_in_the_form_is_refused_and_changes_nothing,
    a_superuser_regenerates_a_members_token_on_the_team_page,
);

/// The value of the shown-once input.
fn plaintext_in(html: &str) -> String {
    let at = html
        .find("id=\"token-plaintext\"")
        .unwrap_or_else(|| panic!("no plaintext in:\n{html}"));
    let value = html[at..].find("value=\"").unwrap() + at + 7;
    let end = html[value..].find('"').unwrap() + value;
    html[value..end].to_string()
}

async fn the_settings_page_regenerates_with_a_plain_form_and_with_htmx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, old) = app.create_key("deploy").await;
    let path = format!("/settings/api-tokens/{id}/regenerate");

    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(
        page.contains(&format!("href=\"{path}\"")),
        "a Regenerate link"
    );
    let r = app.get(&path).await;
    assert_eq!(r.status(), 200);
    let confirm = r.text().await.unwrap();
    assert!(confirm.contains("<html") && confirm.contains("Regenerate “deploy”?"));
    assert!(confirm.contains("name=\"grace_seconds\""));

    // Without JavaScript: a full page with the secret, once.
    let r = app
        .post_form_with(&app.client, &path, &path, &[("grace_seconds", "3600")])
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers().get("cache-control").unwrap().to_str().unwrap(),
        "no-store"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<html") && html.contains("data-shown-once"));
    let second = plaintext_in(&html);
    assert_ne!(second, old);
    assert_eq!(whoami(&app, &second).await.status(), 200);
    assert_eq!(whoami(&app, &old).await.status(), 200, "an hour of grace");
    let list = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(!list.contains(&second), "shown once only");

    // With htmx: the dialog fragment.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url(&path))
        .header("hx-request", "true")
        .form(&[("csrf_token", csrf.as_str()), ("grace_seconds", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let html = r.text().await.unwrap();
    assert!(!html.contains("<html") && html.contains("data-shown-once"));
    let third = plaintext_in(&html);
    assert_eq!(
        whoami(&app, &second).await.status(),
        401,
        "no grace this time"
    );
    assert_eq!(whoami(&app, &third).await.status(), 200);
    let fragment = app
        .client
        .get(app.url(&path))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!fragment.contains("<html") && fragment.contains("hx-post=\"/settings"));
    app.shutdown().await;
}

async fn a_bad_grace_in_the_form_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, old) = app.create_key("deploy").await;
    let path = format!("/settings/api-tokens/{id}/regenerate");
    for bad in ["soon", "-1", "86401"] {
        let r = app
            .post_form_with(&app.client, &path, &path, &[("grace_seconds", bad)])
            .await;
        assert_eq!(r.status(), 422, "{bad}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("field-error") && html.contains("0 to 86400"),
            "{bad}"
        );
        assert!(!html.contains("token-plaintext"));
    }
    let r = app
        .post_form_with(
            &app.client,
            &path,
            "/settings/api-tokens/999/regenerate",
            &[],
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(whoami(&app, &old).await.status(), 200);
    assert!(
        !app.audit_actions(id)
            .await
            .iter()
            .any(|(a, ..)| a == "token.regenerated")
    );
    app.shutdown().await;
}

async fn a_superuser_regenerates_a_members_token_on_the_team_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let bob = member(&app, &org, "bob@example.com").await;
    let t = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "bob's ci",
            ..Spec::default()
        },
    )
    .await;
    let path = format!("/team/members/{bob}/tokens/{}/regenerate", t.id);

    let page = app
        .get(&format!("/team/members/{bob}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("href=\"{path}\"")),
        "a Regenerate link"
    );
    let confirm = app.get(&path).await.text().await.unwrap();
    assert!(confirm.contains("bob@example.com"), "names the owner");
    let r = team_post(&app, &path, &[("grace_seconds", "0")], false).await;
    assert_eq!(r.status(), 201);
    let new = plaintext_in(&r.text().await.unwrap());
    assert_eq!(whoami(&app, &t.token).await.status(), 401);
    assert_eq!(whoami(&app, &new).await.status(), 200);

    // Bob's token under another member's URL: not found.
    let wrong = format!("/team/members/{}/tokens/{}/regenerate", org.owner, t.id);
    assert_eq!(app.get(&wrong).await.status(), 404);
    // A member cannot use the Team route, nor regenerate Bob's token
    // through the settings page.
    let other = member(&app, &org, "carol@example.com").await;
    let carol = client_for(&app, "carol@example.com").await;
    let r = carol.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .post_form_with(
            &carol,
            "/settings/api-tokens",
            &format!("/settings/api-tokens/{}/regenerate", t.id),
            &[],
        )
        .await;
    assert_eq!(r.status(), 404);
    let _ = other;
    assert_eq!(whoami(&app, &new).await.status(), 200);
    app.shutdown().await;
}
