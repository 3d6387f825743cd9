//! SCIM bearer secrets: made by a superuser on the Team page (shown once,
//! stored as a hash, revocable) or set by the operator in
//! KEYSMITH_SCIM_TOKENS (an unknown organization stops start-up). Anything
//! else, a personal API token included, is refused with a SCIM 401.

use serde_json::json;

use super::{ROOT, assert_error, call, expect, make_secret, secret_in, setup};
use crate::backend_tests;
use crate::bearer::{Spec, mint};
use crate::harness::{Backend, TestApp, TestDb, new_client};

backend_tests!(
    a_team_page_secret_is_shown_once_and_stored_as_a_hash,
    a_revoked_secret_is_refused_on_the_next_request,
    anything_but_a_live_scim_secret_is_refused,
    only_superusers_manage_scim_secrets,
    a_secret_needs_a_label,
    an_operator_secret_acts_for_its_organization,
    an_operator_secret_for_an_unknown_organization_stops_start_up,
);

async fn a_team_page_secret_is_shown_once_and_stored_as_a_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    assert!(scim.secret.starts_with("ksscim_"));
    let list = expect(
        call(&app, &scim.secret, reqwest::Method::GET, "/Users", None).await,
        200,
    )
    .await;
    assert_eq!(list["totalResults"], json!(1));
    assert_eq!(list["Resources"][0]["userName"], json!(ROOT));

    // Listed afterwards by label and prefix, never again in full.
    let html = app.get("/team/scim-tokens").await.text().await.unwrap();
    assert!(html.contains("Okta"));
    assert!(secret_in(&html).is_none());
    assert!(!html.contains(&scim.secret));
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT secret_hash, display_prefix FROM scim_tokens")
            .fetch_all(app.db().pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, keysmith::scim::auth::digest(&scim.secret));
    assert!(scim.secret.starts_with(&rows[0].1) && rows[0].1.len() < 15);
    let (audited,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'scim_token.created' AND actor_user_id = $1",
    )
    .bind(scim.root)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(audited, 1);
    app.shutdown().await;
}

async fn a_revoked_secret_is_refused_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let other = make_secret(&app, "Entra").await;
    let (id,): (i64,) = sqlx::query_as("SELECT id FROM scim_tokens WHERE label = 'Okta'")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    let r = app
        .post_form_with(
            &app.client,
            "/team",
            &format!("/team/scim-tokens/{id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("revoked"));
    let e = expect(
        call(&app, &scim.secret, reqwest::Method::GET, "/Users", None).await,
        401,
    )
    .await;
    assert_error(&e, 401, None, "revoked");
    // The other secret still works; revoking twice is a 404.
    expect(
        call(&app, &other, reqwest::Method::GET, "/Users", None).await,
        200,
    )
    .await;
    let r = app
        .post_form_with(
            &app.client,
            "/team",
            &format!("/team/scim-tokens/{id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(r.status(), 404);
    app.shutdown().await;
}

async fn anything_but_a_live_scim_secret_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let personal = mint(&app, scim.org, scim.root, Spec::default()).await;
    for (auth, needle) in [
        (None, "Authorization: Bearer"),
        (Some("Basic YTpi".to_string()), "Bearer scheme"),
        (Some("Bearer ".to_string()), "empty"),
        (Some(format!("Bearer {}x", scim.secret)), "unknown"),
        (Some(format!("Bearer {}", personal.token)), "unknown"),
    ] {
        let mut req = new_client().get(app.url("/scim/v2/Users"));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.headers().get("www-authenticate").unwrap(),
            "Bearer realm=\"scim\""
        );
        let e = expect(r, 401).await;
        assert_error(&e, 401, None, needle);
    }
    // And a SCIM secret is no bearer token anywhere else.
    assert_eq!(app.whoami_status(&scim.secret).await, 401);
    // A write with a wrong secret changes nothing.
    let r = call(
        &app,
        "wrong-secret-wrong-secret",
        reqwest::Method::POST,
        "/Users",
        Some(json!({"userName": "eve@example.com"})),
    )
    .await;
    assert_eq!(r.status(), 401);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.shutdown().await;
}

async fn only_superusers_manage_scim_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    super::create_user(&app, &scim.secret, "mia", "mia@example.com").await;
    let mia = new_client();
    app.sign_in_with(&mia, "mia@example.com").await;
    let r = mia.get(app.url("/team/scim-tokens")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .post_form_with(
            &mia,
            "/settings/api-tokens",
            "/team/scim-tokens",
            &[("label", "mine")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM scim_tokens")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "only the superuser's");
    app.shutdown().await;
}

async fn a_secret_needs_a_label(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser(ROOT).await;
    let r = app
        .post_form_with(
            &app.client,
            "/team",
            "/team/scim-tokens",
            &[("label", "   ")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("field-error"), "{html}");
    assert!(secret_in(&html).is_none());
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM scim_tokens")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // The Team page loads the section.
    let team = app.get("/team").await.text().await.unwrap();
    assert!(team.contains("hx-get=\"/team/scim-tokens\""));
    app.shutdown().await;
}

const OPERATOR_SECRET: &str = "operator-secret-0123456789";

async fn an_operator_secret_acts_for_its_organization(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    a.signed_in_superuser(ROOT).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let tokens = format!("Acme:{OPERATOR_SECRET}");
    let b = TestApp::spawn_with(
        backend,
        &[("DATABASE_URL", &url), ("KEYSMITH_SCIM_TOKENS", &tokens)],
    )
    .await;
    let id = super::create_user(&b, OPERATOR_SECRET, "zed", "zed@example.com").await;
    let (detail,): (Option<String>,) = sqlx::query_as(
        "SELECT detail FROM audit_events WHERE action = 'member.added' AND subject_user_id = $1",
    )
    .bind(id)
    .fetch_one(b.db().pool())
    .await
    .unwrap();
    assert_eq!(detail.as_deref(), Some("SCIM (KEYSMITH_SCIM_TOKENS)"));
    // The secret itself is nowhere in the database.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM scim_tokens")
        .fetch_one(b.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // Without the setting, the same secret is refused.
    let e = expect(
        call(&a, OPERATOR_SECRET, reqwest::Method::GET, "/Users", None).await,
        401,
    )
    .await;
    assert_error(&e, 401, None, "unknown");
    b.shutdown().await;
    a.shutdown().await;
}

async fn an_operator_secret_for_an_unknown_organization_stops_start_up(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let vars: std::collections::HashMap<String, String> = [
        ("KEYSMITH_CONFIG", "/dev/null".to_string()),
        ("KEYSMITH_ADDR", "127.0.0.1:0".to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("KEYSMITH_DATA_DIR", dir.path().display().to_string()),
        (
            "KEYSMITH_SCIM_TOKENS",
            format!("Nope Inc:{OPERATOR_SECRET}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = keysmith::config::Config::from_vars(&vars).unwrap();
    match keysmith::app::start(config).await {
        Ok(_) => panic!("started with a secret for an unknown organization"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("KEYSMITH_SCIM_TOKENS: "), "{message}");
            assert!(
                message.contains("\"Nope Inc\", which does not exist"),
                "{message}"
            );
            assert!(!message.contains(OPERATOR_SECRET));
        }
    }
    // A malformed setting is a configuration error naming the entry.
    let mut bad = vars.clone();
    bad.insert("KEYSMITH_SCIM_TOKENS".into(), "Acme:short".into());
    let e = keysmith::config::Config::from_vars(&bad).unwrap_err();
    assert_eq!(e.setting, "KEYSMITH_SCIM_TOKENS");
    assert!(e.message.contains("at least 16"), "{}", e.message);
}
