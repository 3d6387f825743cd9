//! What a client behind the proxy could forge on `/auth/verify`: the
//! original method (which budget it spends), the original URI (its last
//! use), its address, and the identity headers the upstream trusts. Each is
//! refused or ignored, and a refused request counts nothing.

use keysmith::store::tokens;

use super::{Org, Spec, header, mint, owner_token};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    a_client_cannot_choose_the_method_behind_an_nginx_style_proxy,
    a_client_cannot_choose_the_method_behind_a_traefik_style_proxy,
    a_client_cannot_choose_the_recorded_path,
    forged_identity_headers_are_refused_in_every_spelling,
    a_clients_forwarded_header_does_not_choose_its_address,
    scope_and_project_refusals_spend_no_budget_and_record_no_use,
);

/// The writes left in the token's budget, as the next allowed write reports
/// (that write included).
async fn writes_left_after_one_more(app: &TestApp, token: &str) -> String {
    let r = app
        .client
        .post(app.url("/auth/verify"))
        .bearer_auth(token)
        .header("X-Original-Method", "POST")
        .header("X-Original-URI", "/probe")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = header(&r, "ratelimit").unwrap();
    v.split(";t=").next().unwrap().to_string()
}

async fn last_use(
    app: &TestApp,
    org: &Org,
    token_id: i64,
) -> (Option<String>, Option<String>, Option<String>) {
    app.state.verifier.flush_last_used().await.unwrap();
    let t = tokens::find_in_org(app.db(), org.id, token_id)
        .await
        .unwrap()
        .unwrap();
    (t.last_used_method, t.last_used_path, t.last_used_ip)
}

async fn a_client_cannot_choose_the_method_behind_an_nginx_style_proxy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    // nginx sets X-Original-*; the client adds X-Forwarded-Method: GET to its
    // POSTs, hoping to be charged reads.
    for _ in 0..6 {
        let r = app
            .client
            .get(app.url("/auth/verify"))
            .bearer_auth(&t.token)
            .header("X-Original-Method", "POST")
            .header("X-Original-URI", "/tickets")
            .header("X-Forwarded-Method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(super::www_authenticate(&r).contains("invalid_request"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("disagree"),
            "{body}"
        );
    }
    // Nothing was counted: neither budget moved, no use was recorded.
    assert_eq!(last_use(&app, &org, t.id).await, (None, None, None));
    assert_eq!(
        writes_left_after_one_more(&app, &t.token).await,
        "\"writes\";r=59"
    );
    app.shutdown().await;
}

async fn a_client_cannot_choose_the_method_behind_a_traefik_style_proxy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    // Traefik and Caddy set X-Forwarded-*; the client adds X-Original-Method.
    let r = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("X-Forwarded-Method", "DELETE")
        .header("X-Forwarded-Uri", "/tickets/1")
        .header("X-Original-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Agreeing copies are fine (a proxy may set both).
    let r = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("X-Forwarded-Method", "DELETE")
        .header("X-Original-Method", "DELETE")
        .header("X-Forwarded-Uri", "/tickets/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit")
            .unwrap()
            .split(";t=")
            .next()
            .unwrap(),
        "\"writes\";r=59"
    );
    app.shutdown().await;
}

async fn a_client_cannot_choose_the_recorded_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", "/tickets/7")
        .header("X-Forwarded-Uri", "/totally/fake")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(last_use(&app, &org, t.id).await, (None, None, None));
    app.shutdown().await;
}

async fn forged_identity_headers_are_refused_in_every_spelling(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    for name in [
        "X-Keysmith-Token-Id",
        "X-Keysmith-User",
        "x-keysmith-email",
        "X_Keysmith_User",
        "x_keysmith_org",
    ] {
        let r = app
            .client
            .get(app.url("/auth/verify"))
            .bearer_auth(&t.token)
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", "/tickets")
            .header(name, "999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        assert!(
            header(&r, "x-keysmith-user").is_none(),
            "{name}: no identity"
        );
    }
    assert_eq!(last_use(&app, &org, t.id).await, (None, None, None));
    app.shutdown().await;
}

async fn a_clients_forwarded_header_does_not_choose_its_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    // What nginx/Caddy/Traefik send: the client's Forwarded passed on, the
    // real address appended to X-Forwarded-For.
    let r = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Forwarded-For", "198.51.100.4")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/tickets")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        last_use(&app, &org, t.id).await.2.as_deref(),
        Some("198.51.100.4")
    );
    app.shutdown().await;
}

async fn scope_and_project_refusals_spend_no_budget_and_record_no_use(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let billing = super::project(&app, org.id, "billing").await;
    let _other = super::project(&app, org.id, "search").await;
    let t = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            scopes: &["read"],
            projects: &[billing],
            ..Spec::default()
        },
    )
    .await;
    for query in ["?scope=write", "?project=search"] {
        for _ in 0..3 {
            let r = app
                .client
                .get(app.url(&format!("/auth/verify{query}")))
                .bearer_auth(&t.token)
                .header("X-Forwarded-Method", "POST")
                .header("X-Forwarded-Uri", "/tickets")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{query}");
        }
    }
    assert_eq!(last_use(&app, &org, t.id).await, (None, None, None));
    assert_eq!(
        writes_left_after_one_more(&app, &t.token).await,
        "\"writes\";r=59"
    );
    app.shutdown().await;
}
