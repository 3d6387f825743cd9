//! PATCH and DELETE /api/user/api-keys/{id}.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

backend_tests!(
    patch_renames_and_toggles_with_audit,
    delete_revokes_for_good_and_keeps_a_tombstone,
    another_users_token_is_404_and_unchanged,
    list_pages_with_limit_and_an_opaque_cursor,
    bad_limit_or_cursor_is_a_400_with_a_message,
);

async fn patch_renames_and_toggles_with_audit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("old").await;
    let path = format!("/api/user/api-keys/{id}");

    let r = app
        .api(
            Method::PATCH,
            &path,
            Some(json!({ "label": "new name", "enabled": false })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["label"].as_str(), body["enabled"].as_bool()),
        (Some("new name"), Some(false))
    );
    assert_eq!(app.whoami_status(&token).await, 401, "disabled at once");

    let r = app
        .api(Method::PATCH, &path, Some(json!({ "enabled": true })))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.whoami_status(&token).await, 200, "enabled again");

    let r = app
        .api(Method::PATCH, &path, Some(json!({ "label": " " })))
        .await;
    assert_eq!(r.status(), 422);
    let r = app.api(Method::PATCH, &path, Some(json!({}))).await;
    assert_eq!(r.status(), 422);
    let r = app
        .api(Method::PATCH, &path, Some(json!({ "enabled": "yes" })))
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .api(
            Method::PATCH,
            "/api/user/api-keys/abc",
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(r.status(), 404);

    let actions: Vec<String> = app
        .audit_actions(id)
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(
        actions,
        [
            "token.created",
            "token.renamed",
            "token.disabled",
            "token.enabled"
        ]
    );
    let audit = app.audit_actions(id).await;
    assert!(
        audit
            .iter()
            .all(|a| a.3 == Some(b.user.id) && a.1.is_some()),
        "{audit:?}"
    );
    app.shutdown().await;
}

async fn delete_revokes_for_good_and_keeps_a_tombstone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("gone").await;
    assert_eq!(app.whoami_status(&token).await, 200);
    let path = format!("/api/user/api-keys/{id}");
    assert_eq!(app.api(Method::DELETE, &path, None).await.status(), 204);
    assert_eq!(app.whoami_status(&token).await, 401, "revoked at once");
    // Permanent: it cannot be re-enabled, renamed or revoked again.
    assert_eq!(
        app.api(Method::PATCH, &path, Some(json!({ "enabled": true })))
            .await
            .status(),
        404
    );
    assert_eq!(app.api(Method::DELETE, &path, None).await.status(), 404);
    assert_eq!(app.whoami_status(&token).await, 401);
    // The row stays as a tombstone: revoked at, by whom.
    let (revoked_at, by, reason): (Option<i64>, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT revoked_at, revoked_by_user_id, revoked_reason FROM api_tokens WHERE id = $1",
    )
    .bind(id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert!(revoked_at.is_some());
    assert_eq!(by, Some(b.user.id));
    assert_eq!(reason.as_deref(), Some("owner"));
    let list: serde_json::Value = app
        .api(Method::GET, "/api/user/api-keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
    app.shutdown().await;
}

async fn another_users_token_is_404_and_unchanged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("ada's").await;

    // Bob, another member with the permission, signs in elsewhere.
    let bob = new_client();
    let org_id: (i64,) = sqlx::query_as("SELECT id FROM organizations")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    keysmith::store::orgs::add_member(
        &mut tx,
        org_id.0,
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
    let path = app.url(&format!("/api/user/api-keys/{id}"));
    let r = bob
        .patch(&path)
        .header("x-csrf-token", &csrf)
        .json(&json!({ "label": "mine now", "enabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = bob
        .delete(&path)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The page handlers say the same.
    for action in ["rename", "toggle", "revoke"] {
        let r = bob
            .post(app.url(&format!("/settings/api-tokens/{id}/{action}")))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("label", "x"),
                ("enabled", "false"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{action}");
    }
    assert_eq!(app.whoami_status(&token).await, 200);
    let list: serde_json::Value = app
        .api(Method::GET, "/api/user/api-keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["label"], "ada's");
    assert_eq!(list[0]["enabled"], true);
    app.shutdown().await;
}

async fn list_pages_with_limit_and_an_opaque_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    crate::tokens_page::seed_tokens(&app, &b, 120, "read").await;

    // No parameters: the first 50, newest first, and where the rest is.
    let r = app.api(Method::GET, "/api/user/api-keys", None).await;
    assert_eq!(r.status(), 200);
    let cursor = r.headers()["x-next-cursor"].to_str().unwrap().to_string();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(
        link,
        format!("</api/user/api-keys?limit=50&cursor={cursor}>; rel=\"next\"")
    );
    let body: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(body.len(), 50, "a plain array, as before paging");
    assert_eq!(body[0]["label"], "seed 119");

    // Following cursors visits every key once.
    let mut seen: Vec<String> = body
        .iter()
        .map(|k| k["label"].as_str().unwrap().to_string())
        .collect();
    let mut next = Some(format!("/api/user/api-keys?limit=30&cursor={cursor}"));
    let mut pages = 1;
    while let Some(path) = next {
        let r = app.api(Method::GET, &path, None).await;
        assert_eq!(r.status(), 200);
        next = r
            .headers()
            .get("x-next-cursor")
            .map(|c| format!("/api/user/api-keys?limit=30&cursor={}", c.to_str().unwrap()));
        let body: Vec<serde_json::Value> = r.json().await.unwrap();
        assert!(body.len() <= 30);
        seen.extend(
            body.iter()
                .map(|k| k["label"].as_str().unwrap().to_string()),
        );
        pages += 1;
    }
    assert_eq!(pages, 4, "50 + 30 + 30 + 10");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (120, 120));

    let r = app
        .api(Method::GET, "/api/user/api-keys?limit=100", None)
        .await;
    let body: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(body.len(), 100);
    let r = app
        .api(Method::GET, "/api/user/api-keys?limit=120", None)
        .await;
    assert_eq!(r.status(), 400);
    app.shutdown().await;
}

async fn bad_limit_or_cursor_is_a_400_with_a_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    app.create_key("one").await;
    for (query, says) in [
        ("limit=0", "limit must be a whole number from 1 to 100"),
        ("limit=101", "limit must be a whole number from 1 to 100"),
        ("limit=ten", "limit must be a whole number from 1 to 100"),
        ("cursor=not-ours", "cursor is not one this API gave out"),
        ("cursor=bzotMQ", "cursor is not one this API gave out"),
        ("page=2", "Unknown query parameter"),
    ] {
        let r = app
            .api(Method::GET, &format!("/api/user/api-keys?{query}"), None)
            .await;
        assert_eq!(r.status(), 400, "{query}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    // The last page has no next cursor.
    let r = app.api(Method::GET, "/api/user/api-keys", None).await;
    assert!(r.headers().get("x-next-cursor").is_none() && r.headers().get("link").is_none());
    app.shutdown().await;
}
