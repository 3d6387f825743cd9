//! POST /api/user/api-keys: validation, the shown-once plaintext, refusals.

use reqwest::Method;
use serde_json::json;

use keysmith::token::{PlainToken, TokenPrefix};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

backend_tests!(
    create_returns_201_with_the_plaintext_only_once,
    create_rejects_bad_input_and_creates_nothing,
    create_rejects_duplicate_label_among_live_tokens,
    create_refuses_a_member_at_the_live_token_cap_and_changes_nothing,
    create_is_limited_per_member_per_hour_and_a_refusal_changes_nothing,
);

async fn key_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_tokens")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    n
}

async fn create_returns_201_with_the_plaintext_only_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(400))
        .replace_time(time::Time::MIDNIGHT);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header(
            "x-csrf-token",
            app.csrf_with(&app.client, "/settings/api-tokens").await,
        )
        .header("user-agent", "key-test/1.0")
        .json(&json!({ "label": "  CI deploys ", "scopes": ["write"], "expiresAt": expires }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    for field in [
        "id",
        "label",
        "tokenPrefix",
        "scopes",
        "createdAt",
        "plaintext",
        "expiresAt",
        "lastUsedAt",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }
    assert_eq!(body["label"], "CI deploys");
    assert_eq!(body["scopes"], json!(["write"]));
    assert_eq!(body["expiresAt"].as_str(), Some(expires.as_str()));
    assert_eq!(body["lastUsedAt"], serde_json::Value::Null);
    let plaintext = body["plaintext"].as_str().unwrap().to_string();
    PlainToken::parse(&TokenPrefix::default(), &plaintext).expect("a well-formed token");
    assert!(plaintext.starts_with(body["tokenPrefix"].as_str().unwrap()));
    assert_eq!(
        app.whoami_status(&plaintext).await,
        200,
        "the new token works"
    );

    // Never again: not in the list, not on the page, not in the database.
    let list = app
        .api(Method::GET, "/api/user/api-keys", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains("CI deploys") && !list.contains(&plaintext));
    assert!(!list.contains("plaintext"));
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("CI deploys") && !page.contains(&plaintext));
    let id = body["id"].as_i64().unwrap();
    let audit = app.audit_actions(id).await;
    assert_eq!(audit[0].0, "token.created");
    assert_eq!(audit[0].2.as_deref(), Some("key-test/1.0"));
    assert_eq!(audit[0].1.as_deref(), Some("127.0.0.1"));
    // Defaults: scopes ["read"], no expiry.
    let r = app
        .api(
            Method::POST,
            "/api/user/api-keys",
            Some(json!({ "label": "defaults" })),
        )
        .await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["scopes"], json!(["read"]));
    assert_eq!(body["expiresAt"], serde_json::Value::Null);
    app.shutdown().await;
}

async fn create_rejects_bad_input_and_creates_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let cases = [
        (json!({ "label": "" }), "label", "Enter a label"),
        (json!({ "label": "   " }), "label", "Enter a label"),
        (json!({ "label": "x".repeat(101) }), "label", "at most 100"),
        (
            json!({ "label": "ok", "scopes": ["admin"] }),
            "scopes",
            "Unknown scope \"admin\" (known: read, write)",
        ),
        (
            json!({ "label": "ok", "scopes": [] }),
            "scopes",
            "at least one scope",
        ),
        (
            json!({ "label": "ok", "expiresAt": "2001-01-01T00:00:00Z" }),
            "expiry",
            "in the future",
        ),
        (
            json!({ "label": "ok", "expiresAt": "soon" }),
            "expiry",
            "RFC 3339",
        ),
        (
            json!({ "label": "ok", "projects": [424242] }),
            "projects",
            "projects of this organization",
        ),
    ];
    for (body, field, message) in cases {
        let r = app
            .api(Method::POST, "/api/user/api-keys", Some(body.clone()))
            .await;
        assert_eq!(r.status(), 422, "{body}");
        let answer: serde_json::Value = r.json().await.unwrap();
        let got = answer["errors"][field].as_str().unwrap_or_default();
        assert!(got.contains(message), "{body}: {answer}");
    }
    // Malformed bodies: a clear 400/415/422, never a 500.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/api/user/api-keys"))
            .header("x-csrf-token", csrf.clone())
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw("{not json", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("not what this endpoint takes")
    );
    let r = raw("{\"label\": 5}", "application/json").await.unwrap();
    assert_eq!(r.status(), 422);
    let r = raw("{\"label\": \"a\", \"owner\": 1}", "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("unknown field `owner`"));
    let r = raw("label=a", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // An array of the fields in order is not an object (serde alone would
    // read it as one).
    for body in ["[\"from an array\", null, null, null]", "\"a\"", "null"] {
        let r = raw(body, "application/json").await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains("JSON object"),
            "{body}: {answer}"
        );
    }
    assert_eq!(key_count(&app).await, 0, "nothing was created");
    app.shutdown().await;
}

async fn create_rejects_duplicate_label_among_live_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = app.create_key("Deploy").await;
    let r = app
        .api(
            Method::POST,
            "/api/user/api-keys",
            Some(json!({ "label": "deploy" })),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["errors"]["label"]
            .as_str()
            .unwrap()
            .contains("already have a token named"),
        "{body}"
    );
    // Revoked, the label is free again.
    assert_eq!(
        app.api(Method::DELETE, &format!("/api/user/api-keys/{id}"), None)
            .await
            .status(),
        204
    );
    let r = app
        .api(
            Method::POST,
            "/api/user/api-keys",
            Some(json!({ "label": "Deploy" })),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.shutdown().await;
}

#[tokio::test]
async fn api_keys_need_a_session_csrf_and_no_bearer_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("mine").await;

    // No session: 401 JSON.
    let r = new_client()
        .get(app.url("/api/user/api-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("browser session")
    );
    // A bearer token cannot mint tokens, with or without a session.
    for client in [new_client(), app.client.clone()] {
        let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
        let r = client
            .post(app.url("/api/user/api-keys"))
            .bearer_auth(&token)
            .header("x-csrf-token", csrf)
            .json(&json!({ "label": "minted by a token" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("cannot create or manage"));
    }
    let r = new_client()
        .get(app.url("/api/user/api-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // CSRF header required for changes; the refusal is JSON, like every
    // answer of this API, on every route of it.
    for (method, path) in [
        (Method::POST, "/api/user/api-keys".to_string()),
        (Method::PATCH, format!("/api/user/api-keys/{id}")),
        (Method::DELETE, format!("/api/user/api-keys/{id}")),
        (Method::POST, format!("/api/user/api-keys/{id}/regenerate")),
    ] {
        for csrf in [None, Some("0123abcd")] {
            let mut req = app
                .client
                .request(method.clone(), app.url(&path))
                .json(&json!({ "label": "x" }));
            if let Some(csrf) = csrf {
                req = req.header("x-csrf-token", csrf);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 403, "{method} {path}");
            assert_eq!(
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/json"),
                "{method} {path}"
            );
            let answer: serde_json::Value = r.json().await.unwrap();
            assert!(
                answer["error"].as_str().unwrap().contains("security token"),
                "{answer}"
            );
        }
    }
    // From another site: refused in JSON too.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf)
        .header("origin", "https://evil.example")
        .json(&json!({ "label": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("another site"),
        "{answer}"
    );
    assert_eq!(
        app.api(Method::GET, "/api/user/api-keys", None)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()[0]["label"],
        "mine",
        "nothing was renamed"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_tokens")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn member_without_the_permission_cannot_create() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let b = keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("boss@example.com").unwrap(),
    )
    .await
    .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    keysmith::store::orgs::add_member(
        &mut tx,
        b.organization.id,
        &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
        keysmith::store::orgs::Role::Member,
        false,
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.sign_in("bob@example.com").await;
    let r = app
        .api(
            Method::POST,
            "/api/user/api-keys",
            Some(json!({ "label": "x" })),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("superuser can grant"));
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(
        page.contains("You cannot create or manage personal API tokens")
            && !page.contains("id=\"new-token\""),
        "{page}"
    );
    assert_eq!(app.get("/settings/api-tokens/new").await.status(), 403);
    app.shutdown().await;
}

/// (tokens, queued emails, audit events): what a refused creation must not touch.
async fn footprint(app: &TestApp) -> (i64, i64, i64) {
    let (mail,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mail_outbox")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    let (audit,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    (key_count(app).await, mail, audit)
}

/// Creates through the settings page's form: htmx (the dialog) or plain.
async fn page_create(app: &TestApp, label: &str, htmx: bool) -> reqwest::Response {
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let mut req = app.client.post(app.url("/settings/api-tokens")).form(&[
        ("label", label),
        ("scopes", "read"),
        ("expiry", "never"),
        ("csrf_token", &csrf),
    ]);
    if htmx {
        req = req.header("hx-request", "true");
    }
    req.send().await.unwrap()
}

async fn api_create(app: &TestApp, label: &str) -> reqwest::Response {
    app.api(
        Method::POST,
        "/api/user/api-keys",
        Some(json!({ "label": label })),
    )
    .await
}

async fn create_refuses_a_member_at_the_live_token_cap_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER", "2")]).await;
    app.signed_in_superuser("ada@example.com").await;
    let (first, _) = app.create_key("one").await;
    app.create_key("two").await;
    let before = footprint(&app).await;
    let message = "You have 2 live tokens, the most allowed; revoke some first.";

    let r = api_create(&app, "three").await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], message, "{body}");
    for htmx in [true, false] {
        let r = page_create(&app, "three", htmx).await;
        assert_eq!(r.status(), 422, "htmx: {htmx}");
        let html = r.text().await.unwrap();
        assert!(html.contains(message), "htmx: {htmx}: {html}");
        assert_eq!(
            html.contains("<html"),
            !htmx,
            "a fragment for htmx, a page without"
        );
        assert!(html.contains("value=\"three\""), "the input is kept");
    }
    assert_eq!(
        footprint(&app).await,
        before,
        "no token, no email, no audit"
    );

    // Revoking one makes room.
    let r = app
        .api(Method::DELETE, &format!("/api/user/api-keys/{first}"), None)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(api_create(&app, "three").await.status(), 201);
    app.shutdown().await;
}

async fn create_is_limited_per_member_per_hour_and_a_refusal_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TOKEN_CREATIONS_PER_HOUR", "2")]).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let (first, _) = app.create_key("one").await;
    // A revoked token was still created: it counts.
    let r = app
        .api(Method::DELETE, &format!("/api/user/api-keys/{first}"), None)
        .await;
    assert_eq!(r.status(), 204);
    app.create_key("two").await;
    let before = footprint(&app).await;

    let r = api_create(&app, "three").await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&wait), "{wait}");
    let body: serde_json::Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "You have created 2 tokens in the past hour, the most allowed. Try again in 60 minutes."
        ),
        "{error}"
    );
    for htmx in [true, false] {
        let r = page_create(&app, "three", htmx).await;
        assert_eq!(r.status(), 429, "htmx: {htmx}");
        assert!(r.headers().contains_key("retry-after"));
        let html = r.text().await.unwrap();
        assert!(
            html.contains("You have created 2 tokens in the past hour"),
            "htmx: {htmx}: {html}"
        );
        assert_eq!(html.contains("<html"), !htmx);
    }
    assert_eq!(
        footprint(&app).await,
        before,
        "no token, no email, no audit"
    );

    // Per member: bob, in the same organization, is not held back by ada.
    let bob = new_client();
    let mut tx = app.db().begin().await.unwrap();
    keysmith::store::orgs::add_member(
        &mut tx,
        b.organization.id,
        &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
        keysmith::store::orgs::Role::Member,
        true,
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.sign_in_with(&bob, "bob@example.com").await;
    let csrf = app.csrf_with(&bob, "/settings/api-tokens").await;
    let r = bob
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf)
        .json(&json!({ "label": "bob's" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // An hour later ada may create again.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(3601));
    assert_eq!(api_create(&app, "three").await.status(), 201);
    app.shutdown().await;
}
