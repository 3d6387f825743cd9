//! `POST /api/v2/tokens/self/rotate`: a token replaces its own secret.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{advance, assert_stored_nowhere, set_max_lifetime_days};
use crate::backend_tests;
use crate::bearer::{
    Spec, header, mint, org, owner_token, revoke, set_token_disabled, whoami, www_authenticate,
};
use crate::harness::{Backend, TestApp, new_client};

backend_tests!(
    a_token_rotates_itself_and_the_old_secret_works_until_its_grace_ends,
    a_token_can_rotate_only_itself,
    dead_tokens_cannot_rotate,
    the_organization_policy_applies_to_self_rotation,
    a_replaced_secret_in_its_grace_period_cannot_rotate,
    self_rotation_counts_as_a_write,
);

async fn rotate(app: &TestApp, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = new_client()
        .post(app.url("/api/v2/tokens/self/rotate"))
        .bearer_auth(token)
        .header("user-agent", "ci-job/2.0");
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn a_token_rotates_itself_and_the_old_secret_works_until_its_grace_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let in_10_days = app.state.clock.unix() + 10 * 86_400;
    let t = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "ci",
            expires_at: Some(in_10_days),
            ..Spec::default()
        },
    )
    .await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);

    let r = rotate(&app, &t.token, Some(json!({ "graceSeconds": 60 }))).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    let body: Value = r.json().await.unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "createdAt",
            "expiresAt",
            "id",
            "label",
            "plaintext",
            "scopes",
            "tokenPrefix"
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(body["id"], t.id);
    assert_eq!(body["label"], "ci");
    let new = body["plaintext"].as_str().unwrap().to_string();
    assert_ne!(new, t.token);
    // The same length (10 days) from now.
    let expires = OffsetDateTime::parse(body["expiresAt"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp();
    let expected = app.state.clock.unix() + 10 * 86_400;
    assert!((expires - expected).abs() <= 2, "{expires} vs {expected}");

    assert_eq!(whoami(&app, &t.token).await.status(), 200, "in grace");
    assert_eq!(whoami(&app, &new).await.status(), 200);
    advance(&app, 61);
    assert_eq!(whoami(&app, &t.token).await.status(), 401, "grace over");
    assert_eq!(whoami(&app, &new).await.status(), 200);

    let audit = app.audit_actions(t.id).await;
    let (_, ip, agent, _) = audit
        .iter()
        .find(|(action, ..)| action == "token.rotated")
        .unwrap();
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(agent.as_deref(), Some("ci-job/2.0"));
    let (actor_token,): (Option<i64>,) = sqlx::query_as(
        "SELECT actor_token_id FROM audit_events WHERE token_id = $1 AND action = 'token.rotated'",
    )
    .bind(t.id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(actor_token, Some(t.id));
    assert_stored_nowhere(&app, backend, &new).await;
    app.shutdown().await;
}

async fn a_token_can_rotate_only_itself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let a = owner_token(&app, &org).await;
    let b = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "other",
            ..Spec::default()
        },
    )
    .await;

    // There is no way to name another token (refused in the bearer
    // routes' error shape).
    let r = rotate(&app, &a.token, Some(json!({ "id": b.id }))).await;
    assert_eq!(r.status(), 422);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "invalid_request", "{answer}");
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{answer}"
    );
    assert_eq!(
        whoami(&app, &a.token).await.status(),
        200,
        "nothing changed"
    );

    let r = rotate(&app, &a.token, None).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], a.id);
    // The other token is untouched.
    assert_eq!(whoami(&app, &b.token).await.status(), 200);
    assert!(
        !app.audit_actions(b.id)
            .await
            .iter()
            .any(|(action, ..)| action == "token.rotated")
    );

    // Bad bodies: 422, 415 or 400 with what to fix, in the bearer routes'
    // error shape, nothing changed.
    let current = body["plaintext"].as_str().unwrap().to_string();
    for (body, status, says) in [
        (json!({ "graceSeconds": 100_000 }), 422, "from 0 to 86400"),
        (json!({ "graceSeconds": -5 }), 422, "from 0 to 86400"),
        (json!({ "expiresAt": "next week" }), 422, "RFC 3339"),
        (
            json!({ "expiresAt": "2001-01-01T00:00:00Z" }),
            422,
            "future",
        ),
        (json!({ "id": 3 }), 422, "unknown field"),
        // serde would read a struct from an array of its fields.
        (json!([null, null]), 422, "JSON object"),
        (json!([60]), 422, "JSON object"),
    ] {
        let r = rotate(&app, &current, Some(body.clone())).await;
        assert_eq!(r.status(), status, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_request", "{body}: {answer}");
        let description = answer["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(says), "{body}: {answer}");
    }
    for (content_type, body, status) in [
        ("application/json", "{not json", 400),
        ("text/plain", "{\"graceSeconds\": 5}", 415),
    ] {
        let r = new_client()
            .post(app.url("/api/v2/tokens/self/rotate"))
            .bearer_auth(&current)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{content_type} {body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], "invalid_request", "{answer}");
        assert!(
            answer["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{answer}"
        );
    }
    assert_eq!(whoami(&app, &current).await.status(), 200);
    app.shutdown().await;
}

async fn dead_tokens_cannot_rotate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let r = new_client()
        .post(app.url("/api/v2/tokens/self/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(&r).starts_with("Bearer"));

    let disabled = owner_token(&app, &org).await;
    set_token_disabled(&app, &org, disabled.id, true).await;
    let r = rotate(&app, &disabled.token, None).await;
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(&r).contains("invalid_token"));

    let revoked = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "r",
            ..Spec::default()
        },
    )
    .await;
    revoke(&app, &org, revoked.id).await;
    assert_eq!(rotate(&app, &revoked.token, None).await.status(), 401);

    let expired = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "e",
            expires_at: Some(app.state.clock.unix() + 60),
            ..Spec::default()
        },
    )
    .await;
    advance(&app, 61);
    assert_eq!(rotate(&app, &expired.token, None).await.status(), 401);
    for id in [disabled.id, revoked.id, expired.id] {
        assert!(
            !app.audit_actions(id)
                .await
                .iter()
                .any(|(action, ..)| action == "token.rotated")
        );
    }
    app.shutdown().await;
}

async fn the_organization_policy_applies_to_self_rotation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    set_max_lifetime_days(&app, org.id, 30).await;
    let t = owner_token(&app, &org).await;

    let too_late = (OffsetDateTime::now_utc() + time::Duration::days(60))
        .format(&Rfc3339)
        .unwrap();
    let r = rotate(&app, &t.token, Some(json!({ "expiresAt": too_late }))).await;
    assert_eq!(r.status(), 422);
    let answer: Value = r.json().await.unwrap();
    let text = answer["error_description"].as_str().unwrap();
    assert!(
        text.contains("within 30 days") && text.contains("no later than"),
        "{text}"
    );
    assert_eq!(
        whoami(&app, &t.token).await.status(),
        200,
        "nothing changed"
    );

    let fine = (OffsetDateTime::now_utc() + time::Duration::days(10))
        .replace_nanosecond(0)
        .unwrap();
    let r = rotate(
        &app,
        &t.token,
        Some(json!({ "expiresAt": fine.format(&Rfc3339).unwrap() })),
    )
    .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expiresAt"], fine.format(&Rfc3339).unwrap());

    // Without expiresAt, a token that never expired gets the policy's maximum.
    let current = body["plaintext"].as_str().unwrap().to_string();
    let forever = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "f",
            ..Spec::default()
        },
    )
    .await;
    let r = rotate(&app, &forever.token, None).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let expires = OffsetDateTime::parse(body["expiresAt"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp();
    let limit = app.state.clock.unix() + 30 * 86_400;
    assert!((expires - limit).abs() <= 2);
    assert_eq!(whoami(&app, &current).await.status(), 200);
    app.shutdown().await;
}

async fn a_replaced_secret_in_its_grace_period_cannot_rotate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = rotate(&app, &t.token, Some(json!({ "graceSeconds": 3600 }))).await;
    assert_eq!(r.status(), 201);
    let current = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(whoami(&app, &t.token).await.status(), 200, "in grace");
    let r = rotate(&app, &t.token, None).await;
    assert_eq!(r.status(), 403);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("current secret")
    );
    assert_eq!(
        whoami(&app, &current).await.status(),
        200,
        "the current secret still works"
    );
    app.shutdown().await;
}

async fn self_rotation_counts_as_a_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = rotate(&app, &t.token, None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"writes\";q=60;w=60")
    );
    let current = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    let r = whoami(&app, &current).await;
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"reads\";q=600;w=60")
    );
    app.shutdown().await;
}
