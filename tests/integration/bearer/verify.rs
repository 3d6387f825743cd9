//! `/auth/verify`: forward auth for reverse proxies.

use serde_json::Value;

use super::{
    Spec, assert_fresh_ratelimit, header, mint, org, owner_token, project, ticket_scopes, verify,
    www_authenticate,
};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    a_good_token_passes_with_identity_headers_for_the_upstream,
    nginx_style_original_headers_are_understood_and_any_method_is_accepted,
    scopes_are_checked_through_their_closure,
    a_missing_scope_is_403_insufficient_scope_naming_it,
    project_restriction_is_enforced_by_name,
    an_unreadable_query_is_a_bad_request,
);

async fn a_good_token_passes_with_identity_headers_for_the_upstream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = verify(&app, &t.token, "", "GET", "/tickets/1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-keysmith-user"), Some(org.owner.to_string()));
    assert_eq!(
        header(&r, "x-keysmith-email").as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(header(&r, "x-keysmith-org"), Some(org.id.to_string()));
    assert_eq!(
        header(&r, "x-keysmith-scopes").as_deref(),
        Some("read write")
    );
    assert_eq!(header(&r, "x-keysmith-token-id"), Some(t.id.to_string()));
    assert_fresh_ratelimit(&app, &r, "\"reads\";r=599");
    // The original method picks the budget.
    let r = verify(&app, &t.token, "", "POST", "/tickets").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"writes\";q=60;w=60")
    );
    assert_fresh_ratelimit(&app, &r, "\"writes\";r=59");
    app.shutdown().await;
}

async fn nginx_style_original_headers_are_understood_and_any_method_is_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = app
        .client
        .head(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("X-Original-Method", "DELETE")
        .header("X-Original-URI", "/tickets/9?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_fresh_ratelimit(&app, &r, "\"writes\";r=59");
    let r = app
        .client
        .post(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a proxy may call with any method");
    app.shutdown().await;
}

async fn scopes_are_checked_through_their_closure(backend: Backend) {
    let (_dir, config) = ticket_scopes();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_CONFIG", &config)]).await;
    let org = org(&app).await;
    let writer = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "w",
            scopes: &["tickets:write"],
            ..Spec::default()
        },
    )
    .await;
    for scope in ["tickets:write", "comments", "read", "comments%20read"] {
        let r = verify(&app, &writer.token, &format!("?scope={scope}"), "GET", "/").await;
        assert_eq!(r.status(), 200, "tickets:write covers {scope}");
    }
    assert_eq!(
        header(
            &verify(&app, &writer.token, "", "GET", "/").await,
            "x-keysmith-scopes"
        )
        .as_deref(),
        Some("comments read tickets:write")
    );
    let assigner = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "a",
            scopes: &["tickets:assign"],
            ..Spec::default()
        },
    )
    .await;
    assert_eq!(
        verify(&app, &assigner.token, "?scope=read", "GET", "/")
            .await
            .status(),
        200
    );
    assert_eq!(
        verify(&app, &assigner.token, "?scope=comments", "GET", "/")
            .await
            .status(),
        403
    );
    app.shutdown().await;
}

async fn a_missing_scope_is_403_insufficient_scope_naming_it(backend: Backend) {
    let (_dir, config) = ticket_scopes();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_CONFIG", &config)]).await;
    let org = org(&app).await;
    let commenter = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "c",
            scopes: &["comments"],
            ..Spec::default()
        },
    )
    .await;
    let r = verify(
        &app,
        &commenter.token,
        "?scope=tickets:write",
        "POST",
        "/tickets",
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        www_authenticate(&r),
        "Bearer realm=\"keysmith\", error=\"insufficient_scope\", \
         error_description=\"The access token does not have the scope this request needs.\", \
         scope=\"tickets:write\""
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["scope"], "tickets:write");
    app.shutdown().await;
}

async fn project_restriction_is_enforced_by_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let billing = project(&app, org.id, "billing").await;
    let web = project(&app, org.id, "web").await;
    let restricted = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "r",
            projects: &[billing],
            ..Spec::default()
        },
    )
    .await;
    let both = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "b",
            projects: &[billing, web],
            ..Spec::default()
        },
    )
    .await;
    let free = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "f",
            ..Spec::default()
        },
    )
    .await;

    assert_eq!(
        verify(&app, &restricted.token, "?project=billing", "GET", "/")
            .await
            .status(),
        200
    );
    let r = verify(&app, &restricted.token, "?project=web", "GET", "/").await;
    assert_eq!(r.status(), 403);
    assert!(www_authenticate(&r).contains("error=\"insufficient_scope\""));
    assert_eq!(
        verify(&app, &both.token, "?project=web", "GET", "/")
            .await
            .status(),
        200
    );
    // Unrestricted tokens may be used for every project.
    assert_eq!(
        verify(&app, &free.token, "?project=web", "GET", "/")
            .await
            .status(),
        200
    );
    // Scope and project together.
    assert_eq!(
        verify(
            &app,
            &restricted.token,
            "?project=billing&scope=write",
            "GET",
            "/"
        )
        .await
        .status(),
        200
    );
    app.shutdown().await;
}

async fn an_unreadable_query_is_a_bad_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = verify(&app, &t.token, "?scope=read&scope=write", "GET", "/").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    app.shutdown().await;
}
