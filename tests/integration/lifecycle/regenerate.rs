//! `POST /api/user/api-keys/{id}/regenerate`: a new secret for the same
//! token, with an optional grace period for the old one.

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    advance, assert_stored_nowhere, create, regenerate, set_max_lifetime_days, wait_for_subject,
};
use crate::backend_tests;
use crate::bearer::{Spec, header, member, mint, whoami};
use crate::harness::{Backend, TestApp};
use crate::team::{client_for, superuser};

backend_tests!(
    regenerate_without_grace_replaces_the_secret_and_keeps_the_token,
    regenerate_with_grace_keeps_the_old_secret_until_the_grace_ends,
    bad_grace_is_refused_and_changes_nothing,
    only_the_owner_or_a_superuser_may_regenerate,
    regenerate_shortens_the_expiry_to_the_policy,
    a_revoked_token_cannot_be_regenerated,
);

fn unix(rfc3339: &str) -> i64 {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .unwrap()
        .unix_timestamp()
}

async fn regenerate_without_grace_replaces_the_secret_and_keeps_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let in_30_days = OffsetDateTime::now_utc() + time::Duration::days(30);
    let created = create(&app, "deploy", Some(&in_30_days.format(&Rfc3339).unwrap())).await;
    let id = created["id"].as_i64().unwrap();
    let old = created["plaintext"].as_str().unwrap().to_string();
    assert_eq!(whoami(&app, &old).await.status(), 200, "cached before");
    // A week later, the token is regenerated: a new 30 days from then.
    advance(&app, 7 * 86_400);
    app.sign_in("ada@example.com").await;

    let r = regenerate(&app, id, None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    let body: Value = r.json().await.unwrap();
    let new = body["plaintext"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(body["id"], created["id"]);
    assert_eq!(body["label"], "deploy");
    assert_eq!(body["scopes"], created["scopes"]);
    assert_eq!(body["createdAt"], created["createdAt"]);
    assert_ne!(body["tokenPrefix"], created["tokenPrefix"]);
    assert!(new.starts_with(body["tokenPrefix"].as_str().unwrap()));
    let expires = unix(body["expiresAt"].as_str().unwrap());
    let expected = app.state.clock.unix() + 30 * 86_400;
    assert!((expires - expected).abs() <= 2, "{expires} vs {expected}");

    assert_eq!(
        whoami(&app, &old).await.status(),
        401,
        "old secret dead at once"
    );
    let r = whoami(&app, &new).await;
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["token"]["id"], created["id"]);

    // The plaintext is in no later answer.
    let list = app.api(Method::GET, "/api/user/api-keys", None).await;
    let list = list.text().await.unwrap();
    assert!(!list.contains(&new) && !list.contains("plaintext"));

    let actions: Vec<String> = app
        .audit_actions(id)
        .await
        .into_iter()
        .map(|(a, ..)| a)
        .collect();
    // Without grace, presenting the old secret at once is already a reuse.
    assert_eq!(
        actions,
        [
            "token.created",
            "token.regenerated",
            "token.replaced_secret_used"
        ]
    );
    wait_for_subject(&app, "ada@example.com", "“deploy” was regenerated").await;
    assert_stored_nowhere(&app, backend, &new).await;
    assert_stored_nowhere(&app, backend, &old).await;

    // The body is optional: JSON `null` means the defaults too.
    let r = regenerate(&app, id, Some(Value::Null)).await;
    assert_eq!(r.status(), 201);
    let third: Value = r.json().await.unwrap();
    assert_eq!(third["id"], created["id"]);
    assert_eq!(
        whoami(&app, &new).await.status(),
        401,
        "no grace by default"
    );
    assert_eq!(
        whoami(&app, third["plaintext"].as_str().unwrap())
            .await
            .status(),
        200
    );
    app.shutdown().await;
}

async fn regenerate_with_grace_keeps_the_old_secret_until_the_grace_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, old) = app.create_key("ci").await;
    assert_eq!(whoami(&app, &old).await.status(), 200);

    let r = regenerate(&app, id, Some(json!({ "graceSeconds": 600 }))).await;
    assert_eq!(r.status(), 201);
    let new = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    let grace_end = app.state.clock.unix() + 600;

    let r = whoami(&app, &old).await;
    assert_eq!(r.status(), 200, "old secret works during the grace period");
    // The old secret stops at the grace end, and says so.
    let until = unix(&header(&r, "keysmith-token-expires").unwrap());
    assert!((until - grace_end).abs() <= 2, "{until} vs {grace_end}");
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["token"]["id"], id);
    assert_eq!(whoami(&app, &new).await.status(), 200);
    // The new secret does not expire (nor did the token).
    assert_eq!(
        header(&whoami(&app, &new).await, "keysmith-token-expires"),
        None
    );

    advance(&app, 590);
    assert_eq!(whoami(&app, &old).await.status(), 200, "still in grace");
    advance(&app, 15);
    assert_eq!(whoami(&app, &old).await.status(), 401, "grace over");
    // Not even once the cache has been cleared.
    app.state.verifier.clear();
    assert_eq!(whoami(&app, &old).await.status(), 401);
    assert_eq!(whoami(&app, &new).await.status(), 200);
    app.shutdown().await;
}

async fn bad_grace_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let created = create(&app, "ci", None).await;
    let id = created["id"].as_i64().unwrap();
    let old = created["plaintext"].as_str().unwrap();
    for (body, says) in [
        (json!({ "graceSeconds": -1 }), "from 0 to 86400"),
        (json!({ "graceSeconds": 86_401 }), "from 0 to 86400"),
        (json!({ "graceSeconds": "ten" }), "invalid type"),
        (json!({ "graceSeconds": 1.5 }), "invalid type"),
        (json!({ "grace": 10 }), "unknown field"),
    ] {
        let r = regenerate(&app, id, Some(body.clone())).await;
        assert_eq!(r.status(), 422, "{body}");
        let answer: Value = r.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let r = regenerate(&app, 999_999, None).await;
    assert_eq!(r.status(), 404);
    let r = regenerate(&app, -1, Some(json!({ "graceSeconds": 5 }))).await;
    assert_eq!(r.status(), 404);

    assert_eq!(whoami(&app, old).await.status(), 200);
    let list: Value = app
        .api(Method::GET, "/api/user/api-keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["tokenPrefix"], created["tokenPrefix"]);
    let actions: Vec<String> = app
        .audit_actions(id)
        .await
        .into_iter()
        .map(|(a, ..)| a)
        .collect();
    assert_eq!(actions, ["token.created"]);

    // Without the CSRF header: refused too.
    let r = app
        .client
        .post(app.url(&format!("/api/user/api-keys/{id}/regenerate")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A bearer token cannot regenerate tokens.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url(&format!("/api/user/api-keys/{id}/regenerate")))
        .header("x-csrf-token", csrf)
        .bearer_auth(old)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 401 || r.status() == 403, "{}", r.status());
    assert_eq!(whoami(&app, old).await.status(), 200);
    app.shutdown().await;
}

async fn only_the_owner_or_a_superuser_may_regenerate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (adas, _) = app.create_key("ada's").await;
    let bob = member(&app, &org, "bob@example.com").await;
    let bobs = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "bob's",
            ..Spec::default()
        },
    )
    .await;
    let bob_client = client_for(&app, "bob@example.com").await;

    // Bob (a member) cannot regenerate Ada's token: it does not exist for him.
    let csrf = app.csrf_with(&bob_client, "/settings/api-tokens").await;
    let r = bob_client
        .post(app.url(&format!("/api/user/api-keys/{adas}/regenerate")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Ada, a superuser, can regenerate Bob's; Bob is told who did it.
    let r = regenerate(&app, bobs.id, None).await;
    assert_eq!(r.status(), 201);
    let new = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(whoami(&app, &bobs.token).await.status(), 401);
    let me: Value = whoami(&app, &new).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], "bob@example.com");
    wait_for_subject(&app, "bob@example.com", "“bob's” was regenerated").await;
    let audit = app.audit_actions(bobs.id).await;
    let (_, _, _, actor) = audit
        .iter()
        .find(|(action, ..)| action == "token.regenerated")
        .unwrap();
    assert_eq!(*actor, Some(org.owner));

    // Without the permission, Bob cannot regenerate his own token.
    crate::bearer::set_can_manage_tokens(&app, &org, bob, false).await;
    let r = bob_client
        .post(app.url(&format!("/api/user/api-keys/{}/regenerate", bobs.id)))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(r.status() == 404 || r.status() == 401, "{}", r.status());
    app.shutdown().await;
}

async fn regenerate_shortens_the_expiry_to_the_policy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (id, _) = app.create_key("forever").await;
    set_max_lifetime_days(&app, org.id, 30).await;

    let r = regenerate(&app, id, None).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let expires = unix(body["expiresAt"].as_str().unwrap());
    let limit = app.state.clock.unix() + 30 * 86_400;
    assert!((expires - limit).abs() <= 2, "{expires} vs {limit}");
    app.shutdown().await;
}

async fn a_revoked_token_cannot_be_regenerated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, old) = app.create_key("gone").await;
    let r = app
        .api(Method::DELETE, &format!("/api/user/api-keys/{id}"), None)
        .await;
    assert_eq!(r.status(), 204);
    let r = regenerate(&app, id, None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(whoami(&app, &old).await.status(), 401);
    let actions: Vec<String> = app
        .audit_actions(id)
        .await
        .into_iter()
        .map(|(a, ..)| a)
        .collect();
    assert!(!actions.contains(&"token.regenerated".to_string()));
    app.shutdown().await;
}
