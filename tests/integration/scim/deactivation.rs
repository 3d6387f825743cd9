//! `active: false` disables the member everywhere at once: their sessions in
//! the organization end and their tokens are refused on the next request,
//! on every instance; `active: true` gives the tokens back. DELETE removes
//! the membership and revokes the tokens, whose rows stay as tombstones.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Scim, call, create_user, expect, setup};
use crate::bearer::{Spec, mint, wait_until_listening};
use crate::harness::{Backend, TestApp, new_client};
use crate::{backend_tests, postgres_only_tests};

backend_tests!(
    deactivating_a_user_ends_sessions_and_stops_tokens_on_the_next_request,
    reactivating_a_user_gives_the_tokens_back,
    leaving_the_token_holders_group_stops_tokens,
    deleting_a_user_removes_the_membership_and_keeps_token_tombstones,
    the_last_superuser_cannot_be_deactivated_or_deleted,
);
postgres_only_tests!(a_user_deactivated_on_one_instance_is_refused_by_the_other_within_a_second);

const BOB: &str = "bob@example.com";

/// Bob, provisioned by SCIM, in Token holders, with a working token and a
/// signed-in browser.
struct Bob {
    id: i64,
    token: String,
    token_id: i64,
    browser: reqwest::Client,
}

async fn bob(app: &TestApp, scim: &Scim) -> Bob {
    let id = create_user(app, &scim.secret, "bob", BOB).await;
    let r = call(
        app,
        &scim.secret,
        reqwest::Method::PATCH,
        "/Groups/token-holders",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": id.to_string()}]}]
        })),
    )
    .await;
    let group = expect(r, 200).await;
    assert!(
        group["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["value"] == json!(id.to_string())),
        "{group}"
    );
    let minted = mint(app, scim.org, id, Spec::default()).await;
    assert_eq!(app.whoami_status(&minted.token).await, 200);
    let browser = new_client();
    app.sign_in_with(&browser, BOB).await;
    assert_eq!(page_status(app, &browser).await, 200);
    Bob {
        id,
        token: minted.token,
        token_id: minted.id,
        browser,
    }
}

async fn page_status(app: &TestApp, browser: &reqwest::Client) -> u16 {
    browser
        .get(app.url("/settings/api-tokens"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn set_active(app: &TestApp, secret: &str, id: i64, active: bool) -> serde_json::Value {
    let r = call(
        app,
        secret,
        reqwest::Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": active}}]
        })),
    )
    .await;
    expect(r, 200).await
}

async fn sessions_of(app: &TestApp, user_id: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    n
}

async fn deactivating_a_user_ends_sessions_and_stops_tokens_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let bob = bob(&app, &scim).await;
    assert_eq!(sessions_of(&app, bob.id).await, 1);

    let body = set_active(&app, &scim.secret, bob.id, false).await;
    assert_eq!(body["active"], json!(false));

    assert_eq!(
        app.whoami_status(&bob.token).await,
        401,
        "the very next request"
    );
    assert_eq!(sessions_of(&app, bob.id).await, 0, "sessions ended");
    assert_eq!(page_status(&app, &bob.browser).await, 303, "signed out");
    // The token row is untouched: not revoked, just blocked.
    let (revoked,): (Option<i64>,) =
        sqlx::query_as("SELECT revoked_at FROM api_tokens WHERE id = $1")
            .bind(bob.token_id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(revoked, None);
    // Bob cannot sign in again while disabled.
    let r = app
        .post_form_with(&new_client(), "/signin", "/signin", &[("email", BOB)])
        .await;
    assert_eq!(r.status(), 200);
    let (detail,): (Option<String>,) = sqlx::query_as(
        "SELECT detail FROM audit_events WHERE action = 'member.disabled' AND subject_user_id = $1",
    )
    .bind(bob.id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(detail.as_deref(), Some("SCIM (Okta)"));
    // The audit log names SCIM, by the secret's label, as the actor.
    let csv = app.get("/team/audit.csv").await.text().await.unwrap();
    let line = csv
        .lines()
        .find(|l| l.contains(",\"member.disabled\","))
        .expect("the disable is in the log");
    assert_eq!(line.split(',').nth(2), Some("\"SCIM (Okta)\""), "{line}");
    app.shutdown().await;
}

async fn reactivating_a_user_gives_the_tokens_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let bob = bob(&app, &scim).await;
    set_active(&app, &scim.secret, bob.id, false).await;
    assert_eq!(app.whoami_status(&bob.token).await, 401);
    let body = set_active(&app, &scim.secret, bob.id, true).await;
    assert_eq!(body["active"], json!(true));
    assert_eq!(app.whoami_status(&bob.token).await, 200);
    app.shutdown().await;
}

async fn leaving_the_token_holders_group_stops_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let bob = bob(&app, &scim).await;
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PATCH,
        "/Groups/token-holders",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", bob.id)}]
        })),
    )
    .await;
    let group = expect(r, 200).await;
    assert!(
        !group["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["value"] == json!(bob.id.to_string()))
    );
    assert_eq!(app.whoami_status(&bob.token).await, 401);
    // Superusers always hold the permission: removing one is refused.
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PATCH,
        "/Groups/token-holders",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", scim.root)}]
        })),
    )
    .await;
    let e = expect(r, 409).await;
    super::assert_error(&e, 409, None, "superuser");
    app.shutdown().await;
}

async fn deleting_a_user_removes_the_membership_and_keeps_token_tombstones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let bob = bob(&app, &scim).await;
    let path = format!("/Users/{}", bob.id);
    let r = call(&app, &scim.secret, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(r.status(), 204);

    assert_eq!(app.whoami_status(&bob.token).await, 401);
    assert_eq!(page_status(&app, &bob.browser).await, 303);
    let (revoked, reason): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT revoked_at, revoked_reason FROM api_tokens WHERE id = $1")
            .bind(bob.token_id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert!(revoked.is_some(), "the token row stays, revoked");
    assert_eq!(reason.as_deref(), Some("scim"));
    let (members,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM memberships WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(scim.org)
    .bind(bob.id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(members, 0);

    let e = expect(
        call(&app, &scim.secret, reqwest::Method::GET, &path, None).await,
        404,
    )
    .await;
    super::assert_error(&e, 404, None, "No user");
    let e = expect(
        call(&app, &scim.secret, reqwest::Method::DELETE, &path, None).await,
        404,
    )
    .await;
    super::assert_error(&e, 404, None, "No user");
    app.shutdown().await;
}

async fn the_last_superuser_cannot_be_deactivated_or_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let path = format!("/Users/{}", scim.root);
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"Operations": [{"op": "replace", "path": "active", "value": false}]})),
    )
    .await;
    let e = expect(r, 409).await;
    super::assert_error(&e, 409, None, "last superuser");
    let e = expect(
        call(&app, &scim.secret, reqwest::Method::DELETE, &path, None).await,
        409,
    )
    .await;
    super::assert_error(&e, 409, None, "last superuser");
    let u = expect(
        call(&app, &scim.secret, reqwest::Method::GET, &path, None).await,
        200,
    )
    .await;
    assert_eq!(u["active"], json!(true));
    assert_eq!(page_status(&app, &app.client).await, 200, "still signed in");
    app.shutdown().await;
}

/// Polls `b` until it refuses `token`; returns how long that took.
async fn refused_after(b: &TestApp, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = b.whoami_status(token).await;
        if status == 401 {
            return started.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "instance B never refused the token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_user_deactivated_on_one_instance_is_refused_by_the_other_within_a_second() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = TestApp::spawn_with(Backend::Postgres, &[("DATABASE_URL", &url)]).await;
    wait_until_listening(&a).await;
    wait_until_listening(&b).await;
    let scim = setup(&a).await;
    let bob = bob(&a, &scim).await;
    // B has the token cached, and Bob's browser works on B too.
    assert_eq!(b.whoami_status(&bob.token).await, 200);
    assert_eq!(b.whoami_status(&bob.token).await, 200);
    assert_eq!(page_status(&b, &bob.browser).await, 200);

    // Deactivated through A's SCIM endpoint.
    set_active(&a, &scim.secret, bob.id, false).await;
    let took = refused_after(&b, &bob.token).await;
    assert!(took < Duration::from_secs(1), "B refused after {took:?}");
    assert_eq!(
        page_status(&b, &bob.browser).await,
        303,
        "session ended on B too"
    );

    b.shutdown().await;
    a.shutdown().await;
}
