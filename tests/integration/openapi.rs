//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the JSON and bearer
//! API. It is valid (openapi-spec-validator, run as a process), it names
//! every JSON and bearer route the router serves with exactly the methods
//! the route answers, and schemathesis, run against the live server with a
//! real session, CSRF token, bearer token and introspection client, finds
//! no server error and no answer the document does not describe.

use std::path::Path;
use std::process::{Command, Output};

use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

/// The prefixes of the JSON and bearer API (the rest serves pages).
const API_PREFIXES: &[&str] = &["/api/", "/auth/", "/oauth/", "/.well-known/"];

/// Every method a route could answer; the ones it does not get 405.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

const INTROSPECTION_CLIENT: &str = "gateway";
const INTROSPECTION_SECRET: &str = "introspect-secret-for-schemathesis";

mod with_tools {
    use super::*;

    backend_tests!(
        #[cfg_attr(
            skip_openapi_tests,
            ignore = "OpenAPI test skipped: pip install openapi-spec-validator==0.9.0 schemathesis==4.32.5, then touch build.rs (CI installs them)"
        )]
        the_document_is_valid_openapi_3_1,
        schemathesis_finds_no_server_error_and_no_undocumented_answer,
    );
}

backend_tests!(
    every_api_route_is_documented_with_the_methods_it_answers,
    the_document_describes_this_deployment,
);

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    r.json().await.expect("the document is JSON")
}

fn python(args: &[&str], dir: &Path) -> Output {
    Command::new("python3")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn the_document_is_valid_openapi_3_1(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), doc.to_string()).unwrap();
    let out = python(
        &["-m", "openapi_spec_validator", "openapi.json"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK"), "{}", text(&out));

    // The validator is not lenient: the same document with one operation
    // id used twice is refused (the mistake an earlier draft made).
    let mut broken = doc.clone();
    broken["paths"]["/auth/verify"]["post"]["operationId"] = json!("verify");
    std::fs::write(dir.path().join("broken.json"), broken.to_string()).unwrap();
    let out = python(&["-m", "openapi_spec_validator", "broken.json"], dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    app.shutdown().await;
}

/// The API routes of the route table in `src/app.rs`: the string literals,
/// and the path constants (`module::NAME`) it names, read from their files.
fn routes_in_the_route_table() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/app.rs")).unwrap();
    let mut routes = Vec::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = source[at + ".route(".len()..].trim_start();
        let arg = &rest[..rest.find(',').expect("a route has a handler")];
        let path = if let Some(literal) = arg.strip_prefix('"') {
            literal[..literal.find('"').unwrap()].to_string()
        } else if let Some((module, name)) = arg.rsplit_once("::") {
            // A constant such as `api::rotate::PATH`: read it from its file.
            let file_name = format!("src/{}.rs", module.replace("::", "/"));
            let file = std::fs::read_to_string(root.join(&file_name))
                .unwrap_or_else(|_| panic!("{file_name} holds {arg}"));
            let marker = format!("pub const {name}: &str = \"");
            let start = file.find(&marker).expect("a path constant") + marker.len();
            file[start..start + file[start..].find('"').unwrap()].to_string()
        } else {
            panic!("a route path this test cannot read: {arg}");
        };
        routes.push(path);
    }
    routes.retain(|p| API_PREFIXES.iter().any(|prefix| p.starts_with(prefix)));
    routes.sort();
    routes.dedup();
    routes
}

async fn every_api_route_is_documented_with_the_methods_it_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let doc = document(&app).await;
    let documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let served = routes_in_the_route_table();
    // The table is read right: the routes of this task are among them.
    for route in [
        "/api/user/api-keys",
        "/api/user/api-keys/{id}/regenerate",
        "/api/v2/tokens/self/rotate",
        "/api/v1/secret-scanning/reports",
        "/auth/verify",
        "/oauth/introspect",
        "/api/openapi.json",
    ] {
        assert!(served.iter().any(|r| r == route), "{route} in {served:?}");
    }
    let mut sorted = documented.clone();
    sorted.sort();
    assert_eq!(sorted, served, "documented paths = served API paths");

    let mut operation_ids = Vec::new();
    for path in &served {
        let item = &doc["paths"][path];
        // A key id that does not exist: a documented method answers 404 (or
        // refuses the empty request), never 405, and nothing changes.
        let url = app.url(&path.replace("{id}", "987654"));
        for method in METHODS {
            let op = &item[method.to_ascii_lowercase()];
            let r = app
                .client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    &url,
                )
                .header("x-csrf-token", &csrf)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if op.is_null() {
                assert_eq!(status, 405, "{method} {path} answers but is not documented");
                assert!(r.headers().contains_key("allow"), "{method} {path}: Allow");
            } else {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert!(status < 500, "{method} {path}: {status}");
                let documented_statuses = op["responses"].as_object().unwrap();
                assert!(
                    documented_statuses.contains_key(&status.to_string()),
                    "{method} {path} answered {status}, not among {:?}",
                    documented_statuses.keys().collect::<Vec<_>>()
                );
                operation_ids.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
    }
    let count = operation_ids.len();
    operation_ids.sort();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), count, "operation ids are unique");
    // Nothing above created a key.
    let r = app
        .api(reqwest::Method::GET, "/api/user/api-keys", None)
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    app.shutdown().await;
}

async fn the_document_describes_this_deployment(backend: Backend) {
    let (_dir, config) = crate::bearer::ticket_scopes();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_CONFIG", &config),
            ("KEYSMITH_PUBLIC_URL", "https://keys.example.com"),
        ],
    )
    .await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    // Over https the session cookie has the `__Host-` name.
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "__Host-keysmith_session");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["introspection_client"]["scheme"], "basic");
    // A new key's scopes are the deployment's catalogue.
    let scopes =
        &doc["components"]["schemas"]["CreateApiKey"]["properties"]["scopes"]["items"]["enum"];
    let mut names: Vec<&str> = scopes
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["comments", "read", "tickets:assign", "tickets:write"]
    );
    // Session routes need the cookie (and the CSRF token to change
    // anything); bearer routes the token.
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("/api/user/api-keys", "get"),
        json!([{ "session": [] }])
    );
    assert_eq!(
        security("/api/user/api-keys", "post"),
        json!([{ "session": [], "csrf": [] }])
    );
    assert_eq!(
        security("/api/v2/tokens/self/rotate", "post"),
        json!([{ "bearer": [] }])
    );
    assert_eq!(
        security("/oauth/introspect", "post"),
        json!([{ "introspection_client": [] }])
    );
    app.shutdown().await;
}

/// Signs `email` in through the real flow (a link from the outbox, its
/// button pressed), keeping the cookies by hand so the session cookie can
/// be handed to schemathesis; returns it and the session's CSRF token.
async fn session_of(app: &TestApp, email: &str) -> (String, String) {
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let before = app
        .dev_mail()
        .await
        .into_iter()
        .filter(|m| m.to == email)
        .count();
    let page = bare.get(app.url("/signin")).send().await.unwrap();
    let form = format!(
        "keysmith_form={}",
        set_cookie(&page, "keysmith_form").expect("a form cookie")
    );
    let csrf = crate::harness::csrf_of(&page.text().await.unwrap());
    let r = bare
        .post(app.url("/signin"))
        .header("cookie", &form)
        .form(&[("email", email), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mail = app.wait_for_dev_mail(email, before + 1).await;
    let link = mail[0].links[0].clone();
    let page = bare
        .get(&link)
        .header("cookie", &form)
        .send()
        .await
        .unwrap();
    let csrf = crate::harness::csrf_of(&page.text().await.unwrap());
    let r = bare
        .post(&link)
        .header("cookie", &form)
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r, "keysmith_session").expect("a session cookie");
    let page = bare
        .get(app.url("/settings/api-tokens"))
        .header("cookie", format!("keysmith_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = crate::harness::csrf_of(&page.text().await.unwrap());
    (session, csrf)
}

/// Creates a key through the session API; returns its plaintext.
async fn key_of(app: &TestApp, (session, csrf): &(String, String), scopes: &[&str]) -> String {
    let r = new_client()
        .post(app.url("/api/user/api-keys"))
        .header("cookie", format!("keysmith_session={session}"))
        .header("x-csrf-token", csrf)
        .json(&json!({ "label": format!("schemathesis {}", scopes.join(" ")), "scopes": scopes }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key: Value = r.json().await.unwrap();
    key["plaintext"].as_str().unwrap().to_string()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, _) = v.split_once(';').unwrap_or((v, ""));
        let (n, value) = pair.split_once('=')?;
        (n.trim() == name).then(|| value.trim().to_string())
    })
}

/// A key document with one P-256 key, as GitHub publishes it.
fn key_document() -> String {
    let key = loop {
        if let Ok(k) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
            break k;
        }
    };
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    json!({ "public_keys": [{ "key_identifier": "k1", "key": pem, "is_current": true }] })
        .to_string()
}

/// Runs schemathesis from `dir` (its config and state stay there).
fn schemathesis(dir: &Path, url: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
        "run",
        url,
        "--checks",
        "all",
        // Schema-valid requests may still be refused by rules a schema
        // cannot state (a label already in use, the X-Forwarded-* and
        // X-Original-* families disagreeing, a cursor this API never gave
        // out); every such refusal is a documented 4xx, which the other
        // checks hold to the document.
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "50",
        "--no-color",
    ];
    all.extend_from_slice(args);
    let out = Command::new("python3")
        .args(&all)
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    (out.status.success(), text(&out))
}

/// "Selected: N/M" of schemathesis's summary.
fn selected(output: &str) -> (usize, usize) {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .expect("a summary");
    let (n, m) = line.split_once('/').unwrap();
    (n.trim().parse().unwrap(), m.trim().parse().unwrap())
}

async fn schemathesis_finds_no_server_error_and_no_undocumented_answer(backend: Backend) {
    let keys = tempfile::tempdir().unwrap();
    let keys_path = keys.path().join("keys.json");
    std::fs::write(&keys_path, key_document()).unwrap();
    let credentials = format!("{INTROSPECTION_CLIENT}:{INTROSPECTION_SECRET}");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_INTROSPECTION_CREDENTIALS", &credentials),
            (
                "KEYSMITH_SECRET_SCANNING_KEYS",
                &keys_path.display().to_string(),
            ),
        ],
    )
    .await;
    // The session's member and the bearer token's owner are in different
    // organizations, so nothing the session API is fuzzed with can revoke
    // or regenerate the token under test.
    for (org, email) in [("Acme", "ada@example.com"), ("Globex", "grace@example.com")] {
        keysmith::store::orgs::bootstrap(
            app.db(),
            &keysmith::domain::OrgName::parse(org).unwrap(),
            &keysmith::domain::EmailAddress::parse(email).unwrap(),
        )
        .await
        .unwrap();
    }
    let (session, csrf) = session_of(&app, "ada@example.com").await;
    key_of(&app, &(session.clone(), csrf.clone()), &["read"]).await;
    let owner = session_of(&app, "grace@example.com").await;
    let token = key_of(&app, &owner, &["write"]).await;
    let rotating = key_of(&app, &owner, &["read"]).await;
    let operations = document(&app).await["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .filter(|key| METHODS.iter().any(|m| m.eq_ignore_ascii_case(key)))
        .count();
    assert!(operations > 10, "{operations}");

    let dir = tempfile::tempdir().unwrap();
    let config = |bearer: &str, fail_on: &str| {
        format!(
            "[auth.openapi.session]\napi_key = \"{session}\"\n\
             [auth.openapi.csrf]\napi_key = \"{csrf}\"\n\
             [auth.openapi.bearer]\nbearer = \"{bearer}\"\n\
             [auth.openapi.introspection_client]\nusername = \"{INTROSPECTION_CLIENT}\"\npassword = \"{INTROSPECTION_SECRET}\"\n\
             [warnings]\nfail-on = [{fail_on}]\n"
        )
    };
    let url = app.url("/api/openapi.json");

    // Everything but self-rotation (which ends the token it is called
    // with) and leak reports (which need GitHub's signature). With real
    // credentials, an operation that only ever got 401/403 means the
    // credentials were not used: that fails the run.
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        config(&token, "\"missing_auth\", \"unused_openapi_auth\""),
    )
    .unwrap();
    let (ok, output) = schemathesis(
        dir.path(),
        &url,
        &[
            "--exclude-operation-id",
            "rotateSelf",
            "--exclude-operation-id",
            "secretScanningReports",
        ],
    );
    assert!(ok, "{output}");
    let first_output = output;
    let output = &first_output;
    // Every operation but the two was exercised.
    let (tested, all) = selected(output);
    assert_eq!(tested, all - 2, "{output}");
    assert!(output.contains(&format!("Tested: {tested}")), "{output}");
    // All documented operations but `GET /api/openapi.json`, the document
    // schemathesis was given (it leaves that one out).
    assert_eq!(all, operations - 1, "{operations} documented: {output}");

    // Self-rotation with a token of its own (its first success replaces
    // it), and leak reports (unsigned: refused, as documented).
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        config(&rotating, "\"unused_openapi_auth\""),
    )
    .unwrap();
    let (ok, output) = schemathesis(
        dir.path(),
        &url,
        &[
            "--include-operation-id",
            "rotateSelf",
            "--include-operation-id",
            "secretScanningReports",
        ],
    );
    assert!(ok, "{output}");
    assert_eq!(selected(&output).0, 2, "{output}");
    assert!(output.contains("Tested: 2"), "{output}");
    // The rotation really happened: the token's first secret is gone.
    assert_eq!(app.whoami_status(&rotating).await, 401);

    // Nothing secret reached schemathesis's output (it filters what it
    // knows to be credentials; the server echoes none of them).
    for secret in [&session, &csrf, &token, &rotating] {
        assert!(!output.contains(secret.as_str()));
        assert!(!first_output.contains(secret.as_str()));
    }
    app.shutdown().await;
}
