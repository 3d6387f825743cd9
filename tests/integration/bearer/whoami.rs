//! `GET /api/v2/whoami` and the RFC 6750 behaviour every bearer route shares.

use std::time::Duration;

use serde_json::Value;

use super::{
    Spec, assert_fresh_ratelimit, header, member, mint, org, owner_token, project, revoke,
    set_can_manage_tokens, set_member_disabled, set_token_disabled, whoami, www_authenticate,
};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    whoami_describes_the_user_the_organization_and_the_token,
    no_credentials_get_a_bare_challenge,
    a_token_in_the_query_string_never_authenticates,
    the_scheme_name_is_case_insensitive,
    two_authorization_headers_or_an_empty_bearer_are_bad_requests,
    malformed_wrong_prefix_bad_checksum_and_unknown_tokens_are_refused_alike,
    every_dead_token_is_refused_exactly_like_an_unknown_one,
    disabled_tokens_and_members_work_again_when_enabled,
    superusers_keep_their_tokens_without_the_permission_flag,
);

const INVALID: &str = "Bearer realm=\"keysmith\", error=\"invalid_token\"";

async fn whoami_describes_the_user_the_organization_and_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let billing = project(&app, org.id, "billing").await;
    let expires = app.state.clock.unix() + 86_400;
    let t = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "deploy bot",
            scopes: &["write"],
            expires_at: Some(expires),
            projects: &[billing],
        },
    )
    .await;

    let r = whoami(&app, &t.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"reads\";q=600;w=60")
    );
    assert_fresh_ratelimit(&app, &r, "\"reads\";r=599");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["id"], org.owner);
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["organization"]["id"], org.id);
    assert_eq!(body["organization"]["name"], "Acme");
    assert_eq!(body["token"]["id"], t.id);
    assert_eq!(body["token"]["label"], "deploy bot");
    let prefix = body["token"]["tokenPrefix"].as_str().unwrap();
    assert!(t.token.starts_with(prefix) && prefix.len() < t.token.len() / 2);
    // Effective scopes: write includes read.
    assert_eq!(
        body["token"]["scopes"],
        serde_json::json!(["read", "write"])
    );
    assert_eq!(
        body["token"]["projects"],
        serde_json::json!([{ "id": billing, "name": "billing" }])
    );
    let at = time::OffsetDateTime::parse(
        body["token"]["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(at.unix_timestamp(), expires);

    // No expiry and no restriction read as null and [].
    let plain = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "plain",
            ..Spec::default()
        },
    )
    .await;
    let body: Value = whoami(&app, &plain.token).await.json().await.unwrap();
    assert_eq!(body["token"]["expiresAt"], Value::Null);
    assert_eq!(body["token"]["projects"], serde_json::json!([]));
    app.shutdown().await;
}

async fn no_credentials_get_a_bare_challenge(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/api/v2/whoami", "/auth/verify"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(www_authenticate(&r), "Bearer realm=\"keysmith\"", "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error_description"].is_string(),
            "JSON for humans: {body}"
        );
    }
    // Another scheme is not bearer credentials either.
    let r = app
        .client
        .get(app.url("/api/v2/whoami"))
        .basic_auth("ada", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(www_authenticate(&r), "Bearer realm=\"keysmith\"");
    app.shutdown().await;
}

async fn a_token_in_the_query_string_never_authenticates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    for path in ["/api/v2/whoami", "/auth/verify"] {
        let r = app.get(&format!("{path}?access_token={}", t.token)).await;
        assert_eq!(r.status(), 401, "{path}");
        // Treated as no credentials at all: no error code.
        assert_eq!(www_authenticate(&r), "Bearer realm=\"keysmith\"");
    }
    app.shutdown().await;
}

async fn the_scheme_name_is_case_insensitive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .client
            .get(app.url("/api/v2/whoami"))
            .header("Authorization", format!("{scheme} {}", t.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    app.shutdown().await;
}

async fn two_authorization_headers_or_an_empty_bearer_are_bad_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let two = app
        .client
        .get(app.url("/api/v2/whoami"))
        .header("Authorization", format!("Bearer {}", t.token))
        .header("Authorization", format!("Bearer {}", t.token))
        .send()
        .await
        .unwrap();
    let empty = app
        .client
        .get(app.url("/api/v2/whoami"))
        .header("Authorization", "Bearer")
        .send()
        .await
        .unwrap();
    let blank = app
        .client
        .get(app.url("/auth/verify"))
        .header("Authorization", "Bearer    ")
        .send()
        .await
        .unwrap();
    for r in [two, empty, blank] {
        assert_eq!(r.status(), 400);
        assert!(
            www_authenticate(&r)
                .starts_with("Bearer realm=\"keysmith\", error=\"invalid_request\""),
            "{}",
            www_authenticate(&r)
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    app.shutdown().await;
}

/// The status, challenge and body of a refused request, to compare refusals.
async fn refusal(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let www = www_authenticate(&r);
    (status, www, r.json().await.unwrap())
}

async fn malformed_wrong_prefix_bad_checksum_and_unknown_tokens_are_refused_alike(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let unknown = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);
    let mut bad_checksum = t.token.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let wrong_prefix = format!("gh{}", &t.token[2..]);
    let candidates = [
        "not-a-token".to_string(),
        "ks_".to_string(),
        format!("{}é", &t.token[..t.token.len() - 1]),
        wrong_prefix,
        bad_checksum,
        unknown.expose_secret().to_string(),
        format!("{} extra", t.token),
    ];
    let expected = refusal(whoami(&app, unknown.expose_secret()).await).await;
    assert_eq!(expected.0, 401);
    assert!(expected.1.starts_with(INVALID), "{}", expected.1);
    assert_eq!(expected.2["error"], "invalid_token");
    for c in &candidates {
        let r = app
            .client
            .get(app.url("/api/v2/whoami"))
            .header("Authorization", format!("Bearer {c}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refusal(r).await, expected, "{c:?}");
    }
    // The real one still works, and the unknown one stays refused (now from the negative cache).
    assert_eq!(whoami(&app, &t.token).await.status(), 200);
    assert_eq!(
        refusal(whoami(&app, unknown.expose_secret()).await).await,
        expected
    );
    app.shutdown().await;
}

async fn every_dead_token_is_refused_exactly_like_an_unknown_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let unknown = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);
    let expected = refusal(whoami(&app, unknown.expose_secret()).await).await;

    let bob = member(&app, &org, "bob@example.com").await;
    let carol = member(&app, &org, "carol@example.com").await;
    let expiring = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "expiring",
            expires_at: Some(app.state.clock.unix() + 3600),
            ..Spec::default()
        },
    )
    .await;
    let revoked = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "revoked",
            ..Spec::default()
        },
    )
    .await;
    let disabled = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "disabled",
            ..Spec::default()
        },
    )
    .await;
    let of_disabled_member = mint(&app, org.id, bob, Spec::default()).await;
    let of_member_without_permission = mint(&app, org.id, carol, Spec::default()).await;
    let all = [
        &expiring,
        &revoked,
        &disabled,
        &of_disabled_member,
        &of_member_without_permission,
    ];
    // Every one works, and is now cached.
    for t in all {
        assert_eq!(whoami(&app, &t.token).await.status(), 200);
    }

    app.state.clock.advance(Duration::from_secs(3600));
    revoke(&app, &org, revoked.id).await;
    set_token_disabled(&app, &org, disabled.id, true).await;
    set_member_disabled(&app, &org, bob, true).await;
    set_can_manage_tokens(&app, &org, carol, false).await;

    for t in all {
        let got = refusal(whoami(&app, &t.token).await).await;
        assert_eq!(got, expected, "token {}", t.id);
        let r = super::verify(&app, &t.token, "", "GET", "/").await;
        assert_eq!(refusal(r).await, expected, "verify, token {}", t.id);
    }
    app.shutdown().await;
}

async fn disabled_tokens_and_members_work_again_when_enabled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let bob = member(&app, &org, "bob@example.com").await;
    let t = mint(&app, org.id, bob, Spec::default()).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);

    set_token_disabled(&app, &org, t.id, true).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 401);
    set_token_disabled(&app, &org, t.id, false).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);

    set_member_disabled(&app, &org, bob, true).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 401);
    set_member_disabled(&app, &org, bob, false).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);

    set_can_manage_tokens(&app, &org, bob, false).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 401);
    set_can_manage_tokens(&app, &org, bob, true).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);
    app.shutdown().await;
}

async fn superusers_keep_their_tokens_without_the_permission_flag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    set_can_manage_tokens(&app, &org, org.owner, false).await;
    assert_eq!(whoami(&app, &t.token).await.status(), 200);
    app.shutdown().await;
}
