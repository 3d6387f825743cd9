//! Who may open the Team page, and what bad input gets.

use keysmith::domain::{EmailAddress, OrgName};
use keysmith::store::orgs;

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::bearer::member;
use crate::harness::{Backend, TestApp};

backend_tests!(
    members_get_403_naming_who_to_ask_and_superusers_get_the_page,
    unknown_and_other_organizations_members_are_404,
);

async fn members_get_403_naming_who_to_ask_and_superusers_get_the_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    member(&app, &org, "bob@example.com").await;
    let bob = client_for(&app, "bob@example.com").await;

    for path in ["/team", "/team/audit", "/team/audit.csv", "/team/members/1"] {
        let r = bob.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body = text(r).await;
        assert!(
            body.contains("ada@example.com") && body.contains("Only superusers"),
            "{path} names who to ask: {body}"
        );
    }
    // Writes too, even with a valid CSRF token.
    let csrf = app.csrf_with(&bob, "/settings/api-tokens").await;
    let r = bob
        .post(app.url("/team/policy"))
        .form(&[("writes_per_minute", "1"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        orgs::policy(app.db(), org.id)
            .await
            .unwrap()
            .writes_per_minute,
        None
    );
    // Members see no Team link.
    let page = text(
        bob.get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!page.contains("href=\"/team\""));

    let r = app.get("/team").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = text(r).await;
    assert!(page.contains("bob@example.com") && page.contains("ada@example.com"));
    assert!(
        page.contains("href=\"/team\" aria-current=\"page\""),
        "the Team link"
    );
    app.shutdown().await;
}

async fn unknown_and_other_organizations_members_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let other = orgs::bootstrap(
        app.db(),
        &OrgName::parse("Globex").unwrap(),
        &EmailAddress::parse("hank@globex.example").unwrap(),
    )
    .await
    .unwrap();
    let (_, bobs) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let foreign = other.user.id;
    for path in [
        "/team/members/999999".to_string(),
        "/team/members/not-a-number".to_string(),
        format!("/team/members/{foreign}"),
        format!("/team/members/{foreign}/revoke-all"),
        format!("/team/members/{}/tokens/{}/revoke", org.owner, bobs.id),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(text(r).await.contains("<html"), "{path}: an HTML page");
    }
    for (path, fields) in [
        (
            format!("/team/members/{foreign}/permission"),
            vec![("allowed", "false")],
        ),
        (
            format!("/team/members/{foreign}/status"),
            vec![("disabled", "true")],
        ),
        ("/team/members/x/role".to_string(), vec![("role", "member")]),
        (
            "/team/projects/999999/rename".to_string(),
            vec![("name", "x")],
        ),
    ] {
        let r = team_post(&app, &path, &fields, false).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // Nonsense values are a 400, never a 500.
    let r = team_post(
        &app,
        &format!("/team/members/{}/permission", org.owner),
        &[("allowed", "maybe")],
        false,
    )
    .await;
    assert_eq!(r.status(), 400);
    // Without the CSRF token, nothing reaches a handler.
    let r = app
        .client
        .post(app.url("/team/policy"))
        .form(&[("writes_per_minute", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        orgs::policy(app.db(), org.id)
            .await
            .unwrap()
            .writes_per_minute,
        None
    );
    app.shutdown().await;
}
