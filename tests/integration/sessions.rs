//! The browser session's edges: which origins may post, what the CSRF token
//! is made from, and that nothing personal is cached.

use keysmith::store::orgs;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, csrf_of};

backend_tests!(
    csrf_tokens_are_keyed_with_a_server_secret_that_survives_a_restart,
    every_authenticated_answer_says_no_store,
    sign_in_sign_out_and_session_end_are_in_the_audit_log,
    a_session_that_ran_out_ends_on_record_without_its_cookie,
);

async fn bootstrap(app: &TestApp, email: &str) {
    orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse(email).unwrap(),
    )
    .await
    .unwrap();
}

/// The value of the cookie `name` that the app's client was given.
fn cookie_value(set_cookie: &[String], name: &str) -> String {
    set_cookie
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {set_cookie:?}"))
        .to_string()
}

#[tokio::test]
async fn only_the_public_origin_exactly_may_post() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    let csrf = app.csrf_with(&app.client, "/signin").await;
    let port = app.base_url.rsplit(':').next().unwrap().to_string();
    let host = app.base_url.trim_start_matches("http://").to_string();
    // Each of these names our host, but is not our origin.
    for origin in [
        format!("https://{host}"),
        format!("http://x@{host}"),
        format!("http://{host}/settings"),
        format!("http://localhost:{port}"),
        "http://127.0.0.1".to_string(),
    ] {
        let r = app
            .client
            .post(app.url("/signin"))
            .header("origin", &origin)
            .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "Origin: {origin}");
    }
    // Without Origin, the Referer is held to the same rule.
    for (referer, expected) in [
        (format!("https://{host}/signin"), 403),
        (format!("http://evil.example/{host}"), 403),
        (format!("{}/signin", app.base_url), 200),
    ] {
        let r = app
            .client
            .post(app.url("/signin"))
            .header("referer", &referer)
            .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "Referer: {referer}");
    }
    app.shutdown().await;
}

async fn csrf_tokens_are_keyed_with_a_server_secret_that_survives_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    let r = app.get("/signin").await;
    let set_cookie: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let form_cookie = cookie_value(&set_cookie, "keysmith_form");
    let csrf = csrf_of(&r.text().await.unwrap());
    // Whoever can plant the cookie could compute the old, unkeyed token.
    use sha2::Digest;
    let unkeyed = hex::encode(sha2::Sha256::digest(
        format!("keysmith-csrf:{form_cookie}").as_bytes(),
    ));
    assert_ne!(csrf, unkeyed);
    let planted = app
        .client
        .post(app.url("/signin"))
        .form(&[("email", "ada@example.com"), ("csrf_token", &unkeyed)])
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 403);
    // The key is kept in the database: a restart (or another instance)
    // accepts the token a page showed before it.
    let app = app.restart().await;
    let r = app
        .client
        .post(app.url("/signin"))
        .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (stored,): (String,) =
        sqlx::query_as("SELECT value FROM server_secrets WHERE name = 'csrf_key'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 64, "a 256-bit key, hex");
    app.shutdown().await;
}

async fn every_authenticated_answer_says_no_store(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = app.create_key("deploy").await;
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    for path in [
        "/api/user/api-keys".to_string(),
        "/settings/api-tokens".to_string(),
        "/settings/api-tokens/new".to_string(),
        format!("/settings/api-tokens/{id}/label"),
        format!("/settings/api-tokens/{id}/rename"),
        format!("/settings/api-tokens/{id}/revoke"),
        "/team".to_string(),
        "/team/audit".to_string(),
        "/team/audit.csv".to_string(),
    ] {
        for htmx in [false, true] {
            let mut req = app.client.get(app.url(&path));
            if htmx {
                req = req.header("hx-request", "true");
            }
            let r = req.send().await.unwrap();
            // Fragments opened without htmx redirect to their page.
            assert!(
                r.status().is_success() || r.status().is_redirection(),
                "{path}: {}",
                r.status()
            );
            assert_eq!(
                r.headers()
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{path} (htmx: {htmx})"
            );
        }
    }
    let r = app
        .client
        .patch(app.url(&format!("/api/user/api-keys/{id}")))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"label": "deploy 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    app.shutdown().await;
}

/// The session events of `user_id`, oldest first: action, detail, actor.
async fn session_events(app: &TestApp, user_id: i64) -> Vec<(String, Option<String>, Option<i64>)> {
    sqlx::query_as(
        "SELECT action, detail, actor_user_id FROM audit_events \
         WHERE subject_user_id = $1 AND action LIKE 'session.%' ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(app.db().pool())
    .await
    .unwrap()
}

async fn sign_in_sign_out_and_session_end_are_in_the_audit_log(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SESSION_IDLE_MINUTES", "30")]).await;
    let b = orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    let ada = b.user.id;
    app.sign_in("ada@example.com").await;
    let events = session_events(&app, ada).await;
    assert_eq!(
        events,
        [(
            "session.signed_in".to_string(),
            Some("email_link".to_string()),
            Some(ada)
        )]
    );
    let (org, ip): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT organization_id, ip FROM audit_events WHERE action = 'session.signed_in'",
    )
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(org, Some(b.organization.id), "in the organization's log");
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));

    // Sign-out.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/signout"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let events = session_events(&app, ada).await;
    assert_eq!(
        events[1],
        ("session.signed_out".to_string(), None, Some(ada))
    );

    // A session left idle ends; the end is recorded when its cookie returns.
    app.sign_in("ada@example.com").await;
    app.state
        .clock
        .advance(std::time::Duration::from_secs(31 * 60));
    assert_eq!(app.get("/team").await.status(), 303, "signed out");
    let events = session_events(&app, ada).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events[3],
        (
            "session.expired".to_string(),
            Some("idle".to_string()),
            None
        )
    );
    assert_eq!(app.get("/team").await.status(), 303);
    assert_eq!(session_events(&app, ada).await.len(), 4, "recorded once");

    // And the log shows all of it, by name.
    app.sign_in("ada@example.com").await;
    let page = app.get("/team/audit").await.text().await.unwrap();
    for shown in [
        "title=\"session.signed_in\">Signed in<",
        "title=\"session.signed_out\">Signed out<",
        "title=\"session.expired\">Session expired<",
    ] {
        assert!(page.contains(shown), "{shown}");
    }
    let page = app
        .get("/team/audit?action=session.expired")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("title=\"session.").count(), 1);
    assert!(page.contains(">idle<"), "why it ended");
    app.shutdown().await;
}

/// A browser that never comes back still has its session ended on record:
/// the sweep (at start-up, then every minute) deletes the row and logs the
/// end, once, whichever instance gets to it.
async fn a_session_that_ran_out_ends_on_record_without_its_cookie(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SESSION_IDLE_MINUTES", "30")]).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let ada = b.user.id;
    // Last seen two hours ago: idle for longer than 30 minutes.
    let two_hours_ago = app.state.clock.unix() - 2 * 3600;
    sqlx::query("UPDATE sessions SET last_seen_at = $1")
        .bind(two_hours_ago)
        .execute(app.db().pool())
        .await
        .unwrap();
    let app = app.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never ended the session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ended = |events: Vec<(String, Option<String>, Option<i64>)>| {
        events
            .into_iter()
            .filter(|e| e.0 == "session.expired")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ended(session_events(&app, ada).await),
        [(
            "session.expired".to_string(),
            Some("idle".to_string()),
            None
        )]
    );
    // Its cookie coming back later finds nothing and records nothing more.
    assert_eq!(app.get("/team").await.status(), 303, "signed out");
    // A second sweep finds nothing either.
    let idle = 30 * 60;
    let n = keysmith::store::sessions::sweep_expired(app.db(), app.state.clock.unix(), idle, 500)
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        ended(session_events(&app, ada).await).len(),
        1,
        "recorded once"
    );
    app.shutdown().await;
}
