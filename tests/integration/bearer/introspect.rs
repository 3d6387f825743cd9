//! `POST /oauth/introspect` (RFC 7662).

use serde_json::{Value, json};

use super::{Spec, header, mint, org, owner_token, revoke};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    introspection_needs_configured_client_credentials,
    a_missing_token_is_invalid_request,
    get_is_method_not_allowed,
    an_active_token_is_described,
    anything_not_active_is_exactly_active_false,
);

const CLIENT: (&str, &str) = ("gateway", "0123456789abcdef0123");

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        &[(
            "KEYSMITH_INTROSPECTION_CREDENTIALS",
            "gateway:0123456789abcdef0123,other:fedcba9876543210",
        )],
    )
    .await
}

async fn introspect(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/oauth/introspect"))
        .basic_auth(CLIENT.0, Some(CLIENT.1))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
}

async fn introspection_needs_configured_client_credentials(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let attempts = [
        None,
        Some(("gateway", "wrong-secret-wrong")),
        Some(("gateway", "0123456789abcdef012")),
        Some(("nobody", CLIENT.1)),
        Some(("other", CLIENT.1)),
    ];
    for creds in attempts {
        let mut req = app.client.post(app.url("/oauth/introspect"));
        if let Some((id, secret)) = creds {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req
            .form(&[("token", t.token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{creds:?}");
        assert_eq!(
            header(&r, "www-authenticate").as_deref(),
            Some("Basic realm=\"keysmith\"")
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
    // A bearer token is not a client credential.
    let r = app
        .client
        .post(app.url("/oauth/introspect"))
        .bearer_auth(&t.token)
        .form(&[("token", t.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Without configured clients nobody may introspect.
    let bare = TestApp::spawn(backend).await;
    let r = bare
        .client
        .post(bare.url("/oauth/introspect"))
        .basic_auth(CLIENT.0, Some(CLIENT.1))
        .form(&[("token", t.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    bare.shutdown().await;
    app.shutdown().await;
}

async fn a_missing_token_is_invalid_request(backend: Backend) {
    let app = spawn(backend).await;
    for form in [
        vec![],
        vec![("token", "")],
        vec![("token_type_hint", "access_token")],
    ] {
        let r = app
            .client
            .post(app.url("/oauth/introspect"))
            .basic_auth(CLIENT.0, Some(CLIENT.1))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{form:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    // Not a form at all.
    let r = app
        .client
        .post(app.url("/oauth/introspect"))
        .basic_auth(CLIENT.0, Some(CLIENT.1))
        .json(&json!({ "token": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.shutdown().await;
}

async fn get_is_method_not_allowed(backend: Backend) {
    let app = spawn(backend).await;
    let r = app
        .client
        .get(app.url("/oauth/introspect?token=x"))
        .basic_auth(CLIENT.0, Some(CLIENT.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow").as_deref(), Some("POST"));
    app.shutdown().await;
}

async fn an_active_token_is_described(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let exp = app.state.clock.unix() + 7200;
    let t = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            expires_at: Some(exp),
            ..Spec::default()
        },
    )
    .await;
    let r = introspect(&app, &t.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["sub"], org.owner.to_string());
    assert_eq!(body["username"], "ada@example.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["exp"], exp);
    let iat = body["iat"].as_i64().unwrap();
    assert!((iat - app.state.clock.unix()).abs() < 60, "{iat}");
    // The second client works too.
    let r = app
        .client
        .post(app.url("/oauth/introspect"))
        .basic_auth("other", Some("fedcba9876543210"))
        .form(&[("token", t.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    app.shutdown().await;
}

async fn anything_not_active_is_exactly_active_false(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let revoked = owner_token(&app, &org).await;
    assert_eq!(
        introspect(&app, &revoked.token)
            .await
            .json::<Value>()
            .await
            .unwrap()["active"],
        true
    );
    revoke(&app, &org, revoked.id).await;
    let unknown = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);
    for token in [
        revoked.token.as_str(),
        unknown.expose_secret(),
        "garbage",
        "ks_0123456789",
    ] {
        let r = introspect(&app, token).await;
        assert_eq!(r.status(), 200, "{token}");
        assert_eq!(r.text().await.unwrap(), r#"{"active":false}"#, "{token}");
    }
    app.shutdown().await;
}
