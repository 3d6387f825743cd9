//! Error pages: 404, 403 and 5xx answers to browser routes are HTML pages in
//! the site's frame (title, lang, main, h1, navigation when signed in); the
//! JSON and bearer APIs keep their JSON errors; an htmx request whose
//! session ended is told so, with a way to sign in again.

use keysmith::domain::{EmailAddress, OrgName};
use keysmith::store::orgs;

use crate::backend_tests;
use crate::bearer::member;
use crate::harness::{Backend, TestApp, new_client};
use crate::team::{client_for, superuser, text};

backend_tests!(
    unknown_addresses_get_a_404_page_in_the_frame,
    a_403_page_has_navigation_and_names_the_superusers,
    an_htmx_request_whose_session_ended_is_told_to_sign_in,
    an_htmx_request_without_its_session_cookie_is_told_to_sign_in,
);

/// The parts every page in the frame has.
fn assert_framed(page: &str, title: &str) {
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("<html lang=\"en\">"));
    assert!(
        page.contains(&format!("<title>{title} · Keysmith</title>")),
        "{page}"
    );
    assert!(page.contains("<main id=\"main\""));
    assert!(page.contains(&format!(">{title}</h1>")), "{page}");
}

async fn unknown_addresses_get_a_404_page_in_the_frame(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Signed out: the frame without navigation, and a way to sign in.
    let r = app.get("/no/such/page?x=1").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = text(r).await;
    assert_framed(&page, "Page not found");
    assert!(!page.contains("aria-label=\"Main\""), "no navigation");
    assert!(page.contains("href=\"/signin?next=/no/such/page%3Fx%3D1\""));

    // Signed in: with navigation and the sign-out form.
    superuser(&app).await;
    let page = text(app.get("/settings/nothing-here").await).await;
    assert_framed(&page, "Page not found");
    assert!(page.contains("<nav class=\"nav\" aria-label=\"Main\">"));
    assert!(page.contains("ada@example.com"));
    assert!(page.contains("action=\"/signout\""));
    let csrf = crate::harness::csrf_of(&page);
    assert!(!csrf.is_empty(), "the sign-out form works from here");

    // A handler's own not-found (an unknown member) is the same page.
    let r = app.get("/team/members/99999").await;
    assert_eq!(r.status(), 404);
    let page = text(r).await;
    assert_framed(&page, "Page not found");
    assert!(page.contains("aria-label=\"Main\""));

    // Unknown static files: a 404 page too.
    let r = app.get("/static/nope.js").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_framed(&text(r).await, "Page not found");

    // The APIs keep JSON.
    for path in ["/api/user/nothing", "/api/v2/nothing", "/oauth/nothing"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not found", "{path}");
    }
    let r = app
        .client
        .get(app.url("/api/v2/whoami"))
        .header("authorization", "Bearer nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    app.shutdown().await;
}

async fn a_403_page_has_navigation_and_names_the_superusers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let grace = member(&app, &org, "grace@example.com").await;
    let mut tx = app.db().begin().await.unwrap();
    keysmith::store::team::set_role(&mut tx, org.id, grace, orgs::Role::Superuser)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    member(&app, &org, "bob@example.com").await;
    let other = orgs::bootstrap(
        app.db(),
        &OrgName::parse("Globex").unwrap(),
        &EmailAddress::parse("hank@globex.example").unwrap(),
    )
    .await
    .unwrap();
    let bob = client_for(&app, "bob@example.com").await;

    // The Team page of someone who is not a superuser.
    let r = bob.get(app.url("/team")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert!(page.contains("<html lang=\"en\">") && page.contains("<main id=\"main\""));
    assert!(page.contains("aria-label=\"Main\""), "navigation");
    assert!(
        page.contains("ada@example.com, grace@example.com"),
        "{page}"
    );

    // A 403 from any page handler: switching to an organization bob is not in.
    let csrf = app.csrf_with(&bob, "/settings/api-tokens").await;
    let r = bob
        .post(app.url("/session/organization"))
        .form(&[
            (
                "organization_id",
                other.organization.id.to_string().as_str(),
            ),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert_framed(&page, "Not allowed");
    assert!(page.contains("You are not an active member of that organization."));
    assert!(page.contains("aria-label=\"Main\""));
    assert!(page.contains("The superusers of Acme can help:"));
    assert!(page.contains("href=\"mailto:grace@example.com\""));
    assert!(!page.contains("hank@globex.example"), "not another org's");
    app.shutdown().await;
}

/// Bob's id, a signed-in superuser client, and the CSRF token of `/team`.
async fn team_with_bob(app: &TestApp) -> (i64, String) {
    let org = superuser(app).await;
    let bob = member(app, &org, "bob@example.com").await;
    let csrf = app.csrf_with(&app.client, "/team").await;
    (bob, csrf)
}

async fn bob_is_disabled(app: &TestApp, bob: i64) -> bool {
    let (disabled,): (Option<i64>,) =
        sqlx::query_as("SELECT disabled_at FROM memberships WHERE user_id = $1")
            .bind(bob)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    disabled.is_some()
}

fn assert_signed_out_fragment(r: &reqwest::Response) {
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["hx-retarget"], "#flash");
    assert_eq!(r.headers()["hx-reswap"], "innerHTML");
    assert_eq!(r.headers()["cache-control"], "no-store");
}

async fn an_htmx_request_whose_session_ended_is_told_to_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (bob, csrf) = team_with_bob(&app).await;
    // The session ends on the server (idle, lifetime, or disabled elsewhere).
    sqlx::query("DELETE FROM sessions")
        .execute(app.db().pool())
        .await
        .unwrap();
    let r = app
        .client
        .post(app.url(&format!("/team/members/{bob}/status")))
        .header("hx-request", "true")
        .header("hx-current-url", app.url("/team?q=bo"))
        .header("x-csrf-token", &csrf)
        .form(&[("disabled", "true")])
        .send()
        .await
        .unwrap();
    assert_signed_out_fragment(&r);
    let body = text(r).await;
    assert!(
        body.contains("You were signed out, so this was not done."),
        "{body}"
    );
    assert!(
        body.contains("href=\"/signin?next=/team%3Fq%3Dbo\""),
        "{body}"
    );
    assert!(!body.contains("security token"));
    assert!(!body.contains("<html"), "a fragment");
    assert!(!bob_is_disabled(&app, bob).await, "nothing changed");

    // Without htmx: the sign-in page, coming back to the page.
    let r = app
        .client
        .post(app.url(&format!("/team/members/{bob}/status")))
        .form(&[("disabled", "true"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(!bob_is_disabled(&app, bob).await);
    app.shutdown().await;
}

async fn an_htmx_request_without_its_session_cookie_is_told_to_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (bob, csrf) = team_with_bob(&app).await;
    // Signed out in another tab: the cookie is gone from the browser.
    let r = app
        .client
        .post(app.url("/signout"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = app
        .client
        .post(app.url(&format!("/team/members/{bob}/status")))
        .header("hx-request", "true")
        .header("hx-current-url", app.url(&format!("/team/members/{bob}")))
        .header("x-csrf-token", &csrf)
        .form(&[("disabled", "true")])
        .send()
        .await
        .unwrap();
    assert_signed_out_fragment(&r);
    let body = text(r).await;
    assert!(body.contains("You were signed out"), "{body}");
    assert!(body.contains(&format!("href=\"/signin?next=/team/members/{bob}\"")));
    assert!(!bob_is_disabled(&app, bob).await, "nothing changed");

    // A request with no token at all is still refused as before.
    let r = new_client()
        .post(app.url(&format!("/team/members/{bob}/status")))
        .header("hx-request", "true")
        .form(&[("disabled", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(text(r).await.contains("security token"));
    app.shutdown().await;
}
