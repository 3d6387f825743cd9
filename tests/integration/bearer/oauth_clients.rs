//! `GET /.well-known/oauth-authorization-server` and `POST /oauth/introspect`
//! driven by two OAuth client libraries nobody here wrote, against the real
//! server: openid-client 6 (Node, `tests/clients/node`) and Authlib
//! (Python, `tests/clients/python`). Each discovers the endpoint from the
//! issuer, introspects an active and an unknown token, is refused with a
//! wrong secret, and works with a secret full of special characters (which
//! openid-client form-urlencodes and Authlib sends raw, in ISO-8859-1).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{org, owner_token};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    #[cfg_attr(
        skip_oauth_client_tests,
        ignore = "OAuth client test skipped: run `npm ci --prefix tests/clients/node` and `pip install -r tests/clients/python/requirements.txt` (.ci/run does)"
    )]
    openid_client_discovers_and_introspects,
    authlib_discovers_and_introspects,
);

const CLIENT: (&str, &str) = ("gateway", "0123456789abcdef0123");
/// Every character RFC 6749 §2.3.1's encoding changes, a colon (the
/// configuration splits an entry at its first colon, so the secret may hold
/// more) and a valid `%ec` escape (so reading it raw and decoded differ).
/// No comma: the configuration splits entries on commas. Only ISO-8859-1
/// letters: Authlib encodes the credentials in it and fails on others.
const SPECIAL: (&str, &str) = ("intro-client", "in-tro:sp%ect+se cret&=é/ü");

async fn spawn(backend: Backend) -> TestApp {
    let credentials = format!("{}:{},{}:{}", CLIENT.0, CLIENT.1, SPECIAL.0, SPECIAL.1);
    TestApp::spawn_with(
        backend,
        &[("KEYSMITH_INTROSPECTION_CREDENTIALS", credentials.as_str())],
    )
    .await
}

/// Runs one client script with the issuer, the client and the tokens in its
/// environment, and returns the JSON it prints.
async fn run_client(
    app: &TestApp,
    program: &str,
    script: &str,
    (id, secret): (&str, &str),
    tokens: &[&str],
) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(program);
    command
        .arg(root.join(script))
        .current_dir(root)
        .env("KEYSMITH_ISSUER", &app.base_url)
        .env("KEYSMITH_CLIENT_ID", id)
        .env("KEYSMITH_CLIENT_SECRET", secret)
        .env("KEYSMITH_TOKENS", json!(tokens).to_string())
        // The server is on 127.0.0.1: no proxy may stand in between.
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    // The server runs on this runtime: wait for the child off its workers.
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 90 s"))
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

async fn openid_client(app: &TestApp, client: (&str, &str), tokens: &[&str]) -> Value {
    run_client(
        app,
        "node",
        "tests/clients/node/introspect.mjs",
        client,
        tokens,
    )
    .await
}

async fn authlib(app: &TestApp, client: (&str, &str), tokens: &[&str]) -> Value {
    run_client(
        app,
        "python3",
        "tests/clients/python/introspect.py",
        client,
        tokens,
    )
    .await
}

/// The discovered document names this server.
fn assert_metadata(app: &TestApp, metadata: &Value) {
    assert_eq!(metadata["issuer"], app.base_url.as_str());
    assert_eq!(
        metadata["introspection_endpoint"],
        app.url("/oauth/introspect")
    );
    assert_eq!(
        metadata["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic"])
    );
}

/// The introspection answer at `pointer` in a script's output describes
/// the active token, whoever parsed it.
fn assert_active(out: &Value, pointer: &str, owner: i64, token_id: i64) {
    let response = out.pointer(pointer).unwrap_or(&Value::Null);
    assert_eq!(response["active"], true, "{out}");
    assert_eq!(response["scope"], "read write", "{out}");
    assert_eq!(response["sub"], owner.to_string(), "{out}");
    assert_eq!(response["username"], "ada@example.com", "{out}");
    assert_eq!(response["token_id"], token_id, "{out}");
}

async fn openid_client_discovers_and_introspects(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let unknown = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);

    let out = openid_client(&app, CLIENT, &[&t.token, unknown.expose_secret()]).await;
    assert_metadata(&app, &out["metadata"]);
    assert_active(&out, "/results/0/response", org.owner, t.id);
    assert_eq!(out["results"][1]["response"], json!({ "active": false }));

    // A wrong secret: openid-client reports the 401's Basic challenge.
    let out = openid_client(&app, (CLIENT.0, "wrong-secret-wrong-secret"), &[&t.token]).await;
    let error = &out["results"][0]["error"];
    assert_eq!(error["status"], 401, "{out}");
    assert_eq!(error["code"], "OAUTH_WWW_AUTHENTICATE_CHALLENGE", "{out}");
    assert_eq!(error["challenges"][0]["scheme"], "basic", "{out}");
    assert!(out["results"][0].get("response").is_none(), "{out}");

    // Sent form-urlencoded (`intro%2Dclient:in%2Dtro%3Asp%25ect%2Bse+cret…`).
    let out = openid_client(&app, SPECIAL, &[&t.token]).await;
    assert_active(&out, "/results/0/response", org.owner, t.id);
    app.shutdown().await;
}

async fn authlib_discovers_and_introspects(backend: Backend) {
    let app = spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let unknown = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);

    let out = authlib(&app, CLIENT, &[&t.token, unknown.expose_secret()]).await;
    assert_metadata(&app, &out["metadata"]);
    // Authlib's RFC 8414 validator takes every field but the two an
    // introspection-only server cannot honestly fill: it wants a token
    // endpoint and a non-empty `response_types_supported` (README).
    let objections: Vec<&str> = out["metadata_errors"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        objections,
        ["response_types_supported", "token_endpoint"],
        "{out}"
    );
    assert_eq!(out["results"][0]["status"], 200);
    assert_active(&out, "/results/0/body", org.owner, t.id);
    assert_eq!(out["results"][1]["body"], json!({ "active": false }));

    let out = authlib(&app, (CLIENT.0, "wrong-secret-wrong-secret"), &[&t.token]).await;
    assert_eq!(out["results"][0]["status"], 401, "{out}");
    assert_eq!(out["results"][0]["body"]["error"], "invalid_client");

    // Sent raw, as ISO-8859-1 bytes (`é` is 0xE9).
    let out = authlib(&app, SPECIAL, &[&t.token]).await;
    assert_eq!(out["results"][0]["status"], 200, "{out}");
    assert_active(&out, "/results/0/body", org.owner, t.id);
    app.shutdown().await;
}
