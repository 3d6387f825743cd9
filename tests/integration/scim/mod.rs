//! SCIM 2.0 provisioning under /scim/v2: the organization's bearer secret
//! (Team page or KEYSMITH_SCIM_TOKENS), Users and the Token holders group,
//! deactivation stopping sessions and tokens on every instance, and the
//! conformance runs of scim2-tester and our own scim2-client checks.

mod client;
mod conformance;
mod deactivation;
mod secrets;
mod users;

use serde_json::{Value, json};

use crate::harness::TestApp;

pub const SCIM_JSON: &str = "application/scim+json";
pub const ROOT: &str = "root@example.com";

/// An organization ("Acme", superuser root@example.com signed in on the
/// app's client) and a SCIM secret made on its Team page.
pub struct Scim {
    pub org: i64,
    pub root: i64,
    pub secret: String,
}

pub async fn setup(app: &TestApp) -> Scim {
    let b = app.signed_in_superuser(ROOT).await;
    let secret = make_secret(app, "Okta").await;
    Scim {
        org: b.organization.id,
        root: b.user.id,
        secret,
    }
}

/// Makes a SCIM secret through the Team page form and reads it from the
/// "shown once" box.
pub async fn make_secret(app: &TestApp, label: &str) -> String {
    let r = app
        .post_form_with(
            &app.client,
            "/team",
            "/team/scim-tokens",
            &[("label", label)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    secret_in(&html).expect("the new secret is shown")
}

pub fn secret_in(html: &str) -> Option<String> {
    let marker = "id=\"scim-secret-value\" class=\"token-value\" readonly value=\"";
    let start = html.find(marker)? + marker.len();
    Some(html[start..start + html[start..].find('"')?].to_string())
}

/// A SCIM request with the secret; JSON bodies go as application/scim+json.
pub async fn call(
    app: &TestApp,
    secret: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = crate::harness::new_client()
        .request(method, app.url(&format!("/scim/v2{path}")))
        .bearer_auth(secret);
    if let Some(body) = body {
        req = req.header("content-type", SCIM_JSON).body(body.to_string());
    }
    req.send().await.unwrap()
}

/// The body of a SCIM answer, after checking its status and content type.
pub async fn expect(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    if status == 204 {
        return Value::Null;
    }
    assert_eq!(ct.as_deref(), Some(SCIM_JSON), "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Asserts a SCIM error: the Error schema, the status as a string, the
/// scimType, and a detail that mentions `needle`.
pub fn assert_error(body: &Value, status: u16, scim_type: Option<&str>, needle: &str) {
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{body}"
    );
    assert_eq!(body["status"], json!(status.to_string()), "{body}");
    assert_eq!(body["scimType"].as_str(), scim_type, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(needle),
        "{detail:?} should mention {needle:?}"
    );
}

/// Creates a user through SCIM; returns its id.
pub async fn create_user(app: &TestApp, secret: &str, user_name: &str, email: &str) -> i64 {
    let r = call(
        app,
        secret,
        reqwest::Method::POST,
        "/Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "emails": [{"value": email, "primary": true}],
            "active": true,
        })),
    )
    .await;
    let body = expect(r, 201).await;
    body["id"].as_str().unwrap().parse().unwrap()
}

/// Runs one of the Python scripts under tests/scim with `args`; returns
/// its standard output, failing the test with stderr if it failed.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scim")
        .join(script);
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs (pip install -r tests/scim/requirements.txt)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
