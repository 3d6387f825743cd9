//! `POST /oauth/introspect` (RFC 7662) and the metadata document that
//! points at it, `GET /.well-known/oauth-authorization-server` (RFC 8414).

use serde_json::{Value, json};

use super::{Spec, header, mint, org, owner_token, revoke};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    whoami_and_introspection_carry_the_label_and_the_display_name,
    introspection_needs_configured_client_credentials,
    a_missing_token_is_invalid_request,
    get_is_method_not_allowed,
    an_active_token_is_described,
    anything_not_active_is_exactly_active_false,
    form_urlencoded_client_credentials_are_accepted,
    metadata_names_the_issuer_and_the_introspection_endpoint,
    metadata_issuer_is_the_public_url_without_trailing_slash,
    metadata_answers_get_and_head_only,
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

/// The attribution an upstream labels writes with: the token's label and
/// the owner's display name (null/absent until the users table holds one).
async fn whoami_and_introspection_carry_the_label_and_the_display_name(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let label = "Ada's bot · Zoë";
    let t = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label,
            ..Spec::default()
        },
    )
    .await;
    let me: Value = super::whoami(&app, &t.token).await.json().await.unwrap();
    assert_eq!(me["token"]["label"], label);
    assert_eq!(me["user"]["name"], Value::Null);
    let about: Value = introspect(&app, &t.token).await.json().await.unwrap();
    assert_eq!(about["label"], label);
    assert!(about.get("name").is_none(), "{about}");

    // A fresh server (empty cache) reads the display name now held.
    sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
        .bind("Zoë Ådå")
        .bind(org.owner)
        .execute(app.db().pool())
        .await
        .unwrap();
    let app = app.restart().await;
    let me: Value = super::whoami(&app, &t.token).await.json().await.unwrap();
    assert_eq!(me["user"]["name"], "Zoë Ådå");
    let about: Value = introspect(&app, &t.token).await.json().await.unwrap();
    assert_eq!(about["name"], "Zoë Ådå");
    assert_eq!(about["label"], label);
    app.shutdown().await;
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

/// `Authorization: Basic` over exactly these bytes.
fn basic_header(user_pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn form_urlencoded_client_credentials_are_accepted(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[(
            "KEYSMITH_INTROSPECTION_CREDENTIALS",
            "my-gateway:introspect-secret:1 + 2",
        )],
    )
    .await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let status = |creds: &'static str| {
        let req = app
            .client
            .post(app.url("/oauth/introspect"))
            .header("authorization", basic_header(creds))
            .form(&[("token", t.token.as_str())]);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // RFC 6749 §2.3.1 as openid-client writes it, then other spellings.
    assert_eq!(
        status("my%2Dgateway:introspect%2Dsecret%3A1+%2B+2").await,
        200
    );
    assert_eq!(
        status("my-gateway:introspect-secret%3a1%20%2b%202").await,
        200
    );
    assert_eq!(status("my-gateway:introspect-secret:1 + 2").await, 200);
    // A raw `+` is a space once decoded, and no reading gives the secret.
    assert_eq!(status("my-gateway:introspect-secret:1 %2B 2+").await, 401);
    assert_eq!(
        status("my%2Dgateway:introspect%2Dsecret%3A1+%2B+3").await,
        401
    );
    assert_eq!(
        status("my%252Dgateway:introspect%2Dsecret%3A1+%2B+2").await,
        401
    );
    app.shutdown().await;
}

async fn metadata_names_the_issuer_and_the_introspection_endpoint(backend: Backend) {
    let app = spawn(backend).await;
    let r = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(&r, "cache-control").as_deref(),
        Some("public, max-age=300")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "issuer": app.base_url,
            "introspection_endpoint": app.url("/oauth/introspect"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "response_types_supported": [],
            "grant_types_supported": [],
            "scopes_supported": ["read", "write"],
        })
    );
    assert!(!app.base_url.ends_with('/'));
    app.shutdown().await;
}

async fn metadata_issuer_is_the_public_url_without_trailing_slash(backend: Backend) {
    for (public_url, issuer) in [
        ("https://keys.example.com/", "https://keys.example.com"),
        (
            "https://keys.example.com/base/",
            "https://keys.example.com/base",
        ),
    ] {
        let app = TestApp::spawn_with(backend, &[("KEYSMITH_PUBLIC_URL", public_url)]).await;
        let body: Value = app
            .get("/.well-known/oauth-authorization-server")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["issuer"], issuer);
        assert_eq!(
            body["introspection_endpoint"],
            format!("{issuer}/oauth/introspect")
        );
        app.shutdown().await;
    }
}

async fn metadata_answers_get_and_head_only(backend: Backend) {
    let app = spawn(backend).await;
    let url = app.url("/.well-known/oauth-authorization-server");
    let r = app.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let r = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(header(&r, "allow").as_deref(), Some("GET,HEAD"), "{method}");
    }
    app.shutdown().await;
}
