//! `POST /api/v1/secret-scanning/reports`: leaked-token reports signed the
//! way GitHub's secret scanning partner program signs them, with a P-256 key
//! pair made here and the key document served by a local HTTP server (or
//! read from a file).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mail_parser::MessageParser;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Backend, SmtpServer, TestApp, new_client};
use crate::{backend_tests, postgres_only_tests};

const PATH: &str = "/api/v1/secret-scanning/reports";
const FOUND_AT: &str = "https://github.com/acme/app/blob/4f2c/deploy/config.yml";

/// The email goes through a real SMTP server (aiosmtpd).
mod over_smtp {
    use super::*;

    backend_tests!(
        #[cfg_attr(
            skip_smtp_tests,
            ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
        )]
        a_signed_report_revokes_the_token_and_emails_its_owner_where_it_was_found
    );
}
backend_tests!(
    bad_or_missing_signatures_get_401_and_revoke_nothing,
    an_unknown_key_identifier_refreshes_the_keys_at_most_once_a_minute,
    keys_can_come_from_a_file,
    malformed_reports_get_a_clear_4xx_and_revoke_nothing,
    a_revoked_or_replaced_token_is_still_a_true_positive,
);
postgres_only_tests!(a_leak_report_on_one_instance_reaches_the_other_within_a_second);

/// A reporter's key pair, as GitHub holds one.
struct ReportKey {
    id: String,
    key: SigningKey,
}

impl ReportKey {
    fn generate(id: &str) -> ReportKey {
        let key = loop {
            // A random 32-byte string is a valid scalar but for ~2^-32 odds.
            if let Ok(k) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        ReportKey {
            id: id.to_string(),
            key,
        }
    }

    fn pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// Base64 of the DER signature over `body`.
    fn sign(&self, body: &[u8]) -> String {
        let sig: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// GitHub's key document for these keys; the first is current.
fn key_document(keys: &[&ReportKey]) -> String {
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({ "key_identifier": k.id, "key": k.pem(), "is_current": i == 0 }))
        .collect();
    json!({ "public_keys": entries }).to_string()
}

/// Serves a key document at `/keys` and counts how often it is fetched.
struct KeyServer {
    url: String,
    document: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(document: String) -> KeyServer {
        let document = Arc::new(Mutex::new(document));
        let hits = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (Arc::clone(&document), Arc::clone(&hits));
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let (doc, count) = (Arc::clone(&doc), Arc::clone(&count));
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = doc.lock().unwrap().clone();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeyServer {
            url,
            document,
            hits,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn publish(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Posts `body` with the given signature headers (either may be left out).
async fn post_report(
    app: &TestApp,
    key_id: Option<&str>,
    signature: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = new_client()
        .post(app.url(PATH))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Secret-Scanning/1.0")
        .body(body.to_string());
    if let Some(id) = key_id {
        req = req.header("Github-Public-Key-Identifier", id);
    }
    if let Some(sig) = signature {
        req = req.header("Github-Public-Key-Signature", sig);
    }
    req.send().await.unwrap()
}

async fn signed_report(app: &TestApp, key: &ReportKey, body: &str) -> reqwest::Response {
    post_report(app, Some(&key.id), Some(&key.sign(body.as_bytes())), body).await
}

fn report_of(tokens: &[&str]) -> String {
    let entries: Vec<Value> = tokens
        .iter()
        .map(|t| json!({ "token": t, "type": "keysmith_api_token", "url": FOUND_AT, "source": "content" }))
        .collect();
    Value::Array(entries).to_string()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A well-formed token (right prefix, checksum) that Keysmith never issued.
fn unissued_token(app: &TestApp) -> String {
    keysmith::token::PlainToken::generate(&app.state.config.token_prefix)
        .expose_secret()
        .to_string()
}

async fn revoked_reason(app: &TestApp, id: i64) -> Option<String> {
    let (reason,): (Option<String>,) =
        sqlx::query_as("SELECT revoked_reason FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    reason
}

async fn leak_mails_queued(app: &TestApp) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE template = 'token_leaked'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    n
}

/// Every text column a leak could have been written to, concatenated.
async fn stored_text(app: &TestApp) -> String {
    let mut all = String::new();
    for q in [
        "SELECT COALESCE(payload, '') FROM mail_outbox",
        "SELECT COALESCE(action, '') || ' ' || COALESCE(detail, '') || ' ' || COALESCE(user_agent, '') FROM audit_events",
        "SELECT token_hash || ' ' || display_prefix || ' ' || COALESCE(revoked_reason, '') FROM api_tokens",
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(q).fetch_all(app.db().pool()).await.unwrap();
        for (r,) in rows {
            all.push_str(&r);
            all.push('\n');
        }
    }
    all
}

async fn spawn_with_keys(backend: Backend, keys: &KeyServer, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("KEYSMITH_SECRET_SCANNING_KEYS", keys.url.as_str())];
    vars.extend_from_slice(extra);
    TestApp::spawn_with(backend, &vars).await
}

async fn a_signed_report_revokes_the_token_and_emails_its_owner_where_it_was_found(
    backend: Backend,
) {
    let smtp = SmtpServer::start();
    let github =
        ReportKey::generate("90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a");
    let keys = KeyServer::start(key_document(&[&github])).await;
    let app = spawn_with_keys(backend, &keys, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    app.superuser_direct("ada@example.com").await;
    let (id, token) = app.create_key("CI deploys").await;
    let (other_id, other) = app.create_key("Laptop").await;
    assert_eq!(app.whoami_status(&token).await, 200);
    let unissued = unissued_token(&app);

    let body = report_of(&[&token, &unissued, "ghp_notoursatall"]);
    let r = signed_report(&app, &github, &body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!([
            { "token_hash": sha256_hex(&token), "token_type": "keysmith_api_token", "label": "true_positive", "url": FOUND_AT },
            { "token_hash": sha256_hex(&unissued), "token_type": "keysmith_api_token", "label": "false_positive", "url": FOUND_AT },
            { "token_hash": sha256_hex("ghp_notoursatall"), "token_type": "keysmith_api_token", "label": "false_positive", "url": FOUND_AT },
        ])
    );

    // Revoked at once, as "leaked", audited; the other token is untouched.
    assert_eq!(app.whoami_status(&token).await, 401);
    assert_eq!(app.whoami_status(&other).await, 200);
    assert_eq!(revoked_reason(&app, id).await.as_deref(), Some("leaked"));
    assert_eq!(revoked_reason(&app, other_id).await, None);
    let (detail, ua): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT detail, user_agent FROM audit_events WHERE token_id = $1 AND action = 'token.revoked'",
    )
    .bind(id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(detail.as_deref(), Some("leaked"));
    assert_eq!(ua.as_deref(), Some("GitHub-Secret-Scanning/1.0"));
    // The settings page says why it was revoked; the team audit log lists it.
    let page = app.get("/settings/api-tokens?status=revoked").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let row = &html[html
        .find(&format!("id=\"token-{id}\""))
        .expect("revoked row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("Found in public by secret scanning"), "{row}");
    let audit = app.get("/team/audit").await.text().await.unwrap();
    assert!(audit.contains("leaked"), "audit log lacks the reason");
    assert!(
        audit.contains("GitHub secret scanning"),
        "the audit log names who reported it, not Keysmith"
    );

    // The owner hears where it was found, through real SMTP (after the two
    // "created" emails).
    let messages = smtp.wait_for(3).await;
    let mail = messages
        .iter()
        .map(|m| MessageParser::default().parse(m).unwrap())
        .find(|m| m.subject().unwrap_or_default().contains("found in public"))
        .expect("leak email");
    assert_eq!(
        mail.subject().unwrap(),
        "API token “CI deploys” was found in public and revoked (Acme)"
    );
    assert_eq!(
        mail.to().unwrap().first().unwrap().address().unwrap(),
        "ada@example.com"
    );
    let text = mail.body_text(0).unwrap().to_string();
    let html = mail.body_html(0).unwrap().to_string();
    for fact in [FOUND_AT, "content", "GitHub secret scanning", "CI deploys"] {
        assert!(text.contains(fact), "text lacks {fact}:\n{text}");
        assert!(html.contains(fact), "html lacks {fact}:\n{html}");
    }
    assert!(!text.contains(&token) && !html.contains(&token));

    // Reported again: still a true positive, but nothing more happens.
    let r = signed_report(&app, &github, &report_of(&[&token])).await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again[0]["label"], "true_positive");
    assert_eq!(leak_mails_queued(&app).await, 1);
    // The key document was fetched once and cached.
    assert_eq!(keys.hits(), 1);

    // The plaintexts never reached the database.
    let stored = stored_text(&app).await;
    for secret in [&token, &unissued] {
        assert!(!stored.contains(secret.as_str()));
    }
    app.shutdown().await;
}

async fn bad_or_missing_signatures_get_401_and_revoke_nothing(backend: Backend) {
    let github = ReportKey::generate("github-key-1");
    let impostor = ReportKey::generate("github-key-1");
    let keys = KeyServer::start(key_document(&[&github])).await;
    let app = spawn_with_keys(backend, &keys, &[]).await;
    app.superuser_direct("ada@example.com").await;
    let (id, token) = app.create_key("CI deploys").await;
    let body = report_of(&[&token]);
    let tampered = body.replace("content", "commit");
    let not_der = base64::engine::general_purpose::STANDARD.encode(b"not a DER signature");

    let cases: Vec<(&str, Option<&str>, Option<String>, &str)> = vec![
        ("no headers", None, None, &body),
        ("no signature", Some("github-key-1"), None, &body),
        ("no key id", None, Some(github.sign(body.as_bytes())), &body),
        (
            "signed by another key",
            Some("github-key-1"),
            Some(impostor.sign(body.as_bytes())),
            &body,
        ),
        (
            "body changed after signing",
            Some("github-key-1"),
            Some(github.sign(body.as_bytes())),
            &tampered,
        ),
        (
            "not base64",
            Some("github-key-1"),
            Some("%%%".into()),
            &body,
        ),
        ("not DER", Some("github-key-1"), Some(not_der), &body),
        (
            "empty signature",
            Some("github-key-1"),
            Some(String::new()),
            &body,
        ),
    ];
    for (case, key_id, sig, body) in cases {
        let r = post_report(&app, key_id, sig.as_deref(), body).await;
        assert_eq!(r.status(), 401, "{case}");
        let answer: Value = r.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains("Nothing was revoked"), "{case}: {message}");
        assert!(!message.contains(&token), "{case}");
        assert_eq!(app.whoami_status(&token).await, 200, "{case}");
    }
    assert_eq!(revoked_reason(&app, id).await, None);
    assert_eq!(leak_mails_queued(&app).await, 0);

    // The genuine signature still works afterwards.
    let r = signed_report(&app, &github, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.whoami_status(&token).await, 401);
    app.shutdown().await;
}

async fn an_unknown_key_identifier_refreshes_the_keys_at_most_once_a_minute(backend: Backend) {
    let old = ReportKey::generate("key-2025");
    let new = ReportKey::generate("key-2026");
    let keys = KeyServer::start(key_document(&[&old])).await;
    let app = spawn_with_keys(backend, &keys, &[]).await;
    app.superuser_direct("ada@example.com").await;
    let (_, first) = app.create_key("first").await;
    let (_, second) = app.create_key("second").await;

    let r = signed_report(&app, &old, &report_of(&[&unissued_token(&app)])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(keys.hits(), 1);

    // GitHub starts signing with a key published only now. Within a minute
    // of the last fetch an unknown identifier is refused without a fetch
    // (an attacker cannot make Keysmith fetch on every request)...
    keys.publish(key_document(&[&new, &old]));
    let body = report_of(&[&first]);
    let r = signed_report(&app, &new, &body).await;
    assert_eq!(r.status(), 401);
    assert_eq!(keys.hits(), 1);
    assert_eq!(app.whoami_status(&first).await, 200);

    // ...after it, the unknown identifier refreshes the keys and is found.
    app.state.clock.advance(Duration::from_secs(61));
    let r = signed_report(&app, &new, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(keys.hits(), 2);
    assert_eq!(app.whoami_status(&first).await, 401);

    // An identifier nobody publishes: one refresh, then 401, nothing revoked;
    // asking again at once causes no further fetch.
    app.state.clock.advance(Duration::from_secs(61));
    let stranger = ReportKey::generate("made-up-key");
    let body = report_of(&[&second]);
    let r = signed_report(&app, &stranger, &body).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no published key has that identifier")
    );
    assert_eq!(keys.hits(), 3);
    for _ in 0..5 {
        assert_eq!(signed_report(&app, &stranger, &body).await.status(), 401);
    }
    assert_eq!(keys.hits(), 3);
    assert_eq!(app.whoami_status(&second).await, 200);
    // Keys already known keep working without a fetch.
    assert_eq!(signed_report(&app, &old, &body).await.status(), 200);
    assert_eq!(keys.hits(), 3);
    assert_eq!(app.whoami_status(&second).await, 401);
    app.shutdown().await;
}

async fn keys_can_come_from_a_file(backend: Backend) {
    let github = ReportKey::generate("file-key");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret_scanning_keys.json");
    std::fs::write(&path, key_document(&[&github])).unwrap();
    let path = path.display().to_string();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SECRET_SCANNING_KEYS", &path)]).await;
    app.superuser_direct("ada@example.com").await;
    let (id, token) = app.create_key("CI deploys").await;

    let r = signed_report(&app, &github, &report_of(&[&token])).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer[0]["label"], "true_positive");
    assert_eq!(app.whoami_status(&token).await, 401);
    assert_eq!(revoked_reason(&app, id).await.as_deref(), Some("leaked"));
    app.shutdown().await;
}

async fn malformed_reports_get_a_clear_4xx_and_revoke_nothing(backend: Backend) {
    let github = ReportKey::generate("github-key-1");
    let keys = KeyServer::start(key_document(&[&github])).await;
    let app = spawn_with_keys(backend, &keys, &[]).await;
    app.superuser_direct("ada@example.com").await;
    let (id, token) = app.create_key("CI deploys").await;

    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "not valid JSON"),
        (format!(r#"[{{"token": "{token}""#), 400, "not valid JSON"),
        (format!(r#"{{"token": "{token}"}}"#), 422, "JSON array"),
        (format!(r#"[{{"token": ["{token}"]}}]"#), 422, "wrong type"),
        (
            format!(r#"[{{"token": "{token}", "url": 5}}]"#),
            422,
            "wrong type",
        ),
        (
            r#"[{"type": "keysmith_api_token"}]"#.into(),
            422,
            "missing field `token`",
        ),
        (r#"[{"token": ""}]"#.into(), 422, "must not be empty"),
    ];
    for (body, status, says) in cases {
        let r = signed_report(&app, &github, &body).await;
        assert_eq!(r.status(), status, "{body}");
        let answer: Value = r.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert!(message.contains("Nothing was revoked"), "{body}: {message}");
        assert!(
            !message.contains(&token),
            "the answer echoes the token: {message}"
        );
    }
    assert_eq!(app.whoami_status(&token).await, 200);
    assert_eq!(revoked_reason(&app, id).await, None);

    // An empty report is a valid one, with an empty answer.
    let r = signed_report(&app, &github, "[]").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));

    // The body is bounded.
    let huge = report_of(&vec![token.as_str(); 2000]);
    assert!(huge.len() > 64 * 1024);
    let r = signed_report(&app, &github, &huge).await;
    assert_eq!(r.status(), 413);
    assert_eq!(app.whoami_status(&token).await, 200);
    app.shutdown().await;

    // Without KEYSMITH_SECRET_SCANNING_KEYS the endpoint says it is off.
    let off = TestApp::spawn(backend).await;
    let r = signed_report(&off, &github, &report_of(&[&token])).await;
    assert_eq!(r.status(), 404);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("KEYSMITH_SECRET_SCANNING_KEYS")
    );
    off.shutdown().await;

    // Keys that cannot be fetched: 503 with Retry-After, so GitHub retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/keys", closed.local_addr().unwrap());
    drop(closed);
    let down = TestApp::spawn_with(backend, &[("KEYSMITH_SECRET_SCANNING_KEYS", &dead_url)]).await;
    let r = signed_report(&down, &github, &report_of(&[&token])).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    down.shutdown().await;

    // So are documents without a usable key, and oversized ones.
    let padding = "x".repeat(300 * 1024);
    for document in [
        json!({ "public_keys": [] }).to_string(),
        json!({ "public_keys": [{ "key_identifier": github.id, "key": "not PEM", "is_current": true }] }).to_string(),
        json!({ "public_keys": [{ "key_identifier": github.id, "key": github.pem(), "is_current": true }], "padding": padding }).to_string(),
    ] {
        let keys = KeyServer::start(document).await;
        let app = spawn_with_keys(backend, &keys, &[]).await;
        let r = signed_report(&app, &github, &report_of(&[&token])).await;
        assert_eq!(r.status(), 503);
        assert_eq!(keys.hits(), 1);
        app.shutdown().await;
    }
}

async fn a_revoked_or_replaced_token_is_still_a_true_positive(backend: Backend) {
    let github = ReportKey::generate("github-key-1");
    let keys = KeyServer::start(key_document(&[&github])).await;
    let app = spawn_with_keys(backend, &keys, &[]).await;
    app.superuser_direct("ada@example.com").await;
    let (revoked_id, revoked) = app.create_key("old").await;
    let r = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/user/api-keys/{revoked_id}"),
            None,
        )
        .await;
    assert!(r.status().is_success());

    // Regenerated with a grace period: the old secret still opens the
    // token, so reporting it revokes the token.
    let (graced_id, graced_old) = app.create_key("graced").await;
    let r = app
        .api(
            reqwest::Method::POST,
            &format!("/api/user/api-keys/{graced_id}/regenerate"),
            Some(json!({ "graceSeconds": 3600 })),
        )
        .await;
    assert_eq!(r.status(), 201);
    let graced_new = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.whoami_status(&graced_old).await, 200);

    let r = signed_report(&app, &github, &report_of(&[&revoked, &graced_old])).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer[0]["label"], "true_positive");
    assert_eq!(answer[1]["label"], "true_positive");
    // The owner revoked the first one; the report does not overwrite that.
    assert_eq!(
        revoked_reason(&app, revoked_id).await.as_deref(),
        Some("owner")
    );
    assert_eq!(
        revoked_reason(&app, graced_id).await.as_deref(),
        Some("leaked")
    );
    assert_eq!(app.whoami_status(&graced_new).await, 401);
    assert_eq!(app.whoami_status(&graced_old).await, 401);
    app.shutdown().await;
}

async fn a_leak_report_on_one_instance_reaches_the_other_within_a_second() {
    let github = ReportKey::generate("github-key-1");
    let keys = KeyServer::start(key_document(&[&github])).await;
    let a = spawn_with_keys(Backend::Postgres, &keys, &[]).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = spawn_with_keys(Backend::Postgres, &keys, &[("DATABASE_URL", &url)]).await;
    crate::bearer::wait_until_listening(&a).await;
    crate::bearer::wait_until_listening(&b).await;
    a.superuser_direct("ada@example.com").await;
    let (_, token) = a.create_key("CI deploys").await;
    assert_eq!(b.whoami_status(&token).await, 200);
    // B answers from its cache from now on.
    assert_eq!(b.state.verifier.cached_tokens(), 1);

    let r = signed_report(&a, &github, &report_of(&[&token])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(a.whoami_status(&token).await, 401);
    let started = Instant::now();
    loop {
        let status = b.whoami_status(&token).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "instance B still accepts the leaked token after a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// The scanner rules in `deploy/`: Yelp's detect-secrets (run as a process,
/// with the plugin) finds real Keysmith tokens and no near-miss; the
/// gitleaks rule's regex matches the same shape.
mod scanner_rules {
    use std::collections::BTreeSet;
    use std::process::Command;

    use keysmith::token::{PlainToken, TokenPrefix};

    fn sha1_hex(s: &str) -> String {
        // detect-secrets reports the SHA-1 of what it found.
        let out = Command::new("python3")
            .args([
                "-c",
                "import hashlib, sys; print(hashlib.sha1(sys.argv[1].encode()).hexdigest())",
                s,
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Real tokens, and strings one step away from being one.
    fn samples(prefix: &str) -> (Vec<String>, Vec<String>) {
        let prefix = TokenPrefix::parse(prefix).unwrap();
        let real: Vec<String> = (0..20)
            .map(|_| PlainToken::generate(&prefix).expose_secret().to_string())
            .collect();
        let mut near = Vec::new();
        for t in &real[..5] {
            // One checksum character changed.
            let mut wrong = t[..t.len() - 1].to_string();
            wrong.push(if t.ends_with('A') { 'B' } else { 'A' });
            near.push(wrong);
            // One random character changed, checksum kept.
            let mut bytes = t.clone().into_bytes();
            let i = prefix.as_str().len() + 3;
            bytes[i] = if bytes[i] == b'z' { b'y' } else { b'z' };
            near.push(String::from_utf8(bytes).unwrap());
        }
        (real, near)
    }

    #[test]
    #[cfg_attr(
        skip_detect_secrets_tests,
        ignore = "detect-secrets test skipped: pip install detect-secrets==1.5.0, then touch build.rs (CI installs it)"
    )]
    fn detect_secrets_finds_keysmith_tokens_and_no_near_miss() {
        let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/detect_secrets_keysmith.py");
        for prefix in ["ks", "acme_pat"] {
            let (real, near) = samples(prefix);
            let dir = tempfile::tempdir().unwrap();
            let mut text = String::new();
            for (i, t) in real.iter().enumerate() {
                // In the places tokens end up: YAML, shell, JSON, a URL.
                text.push_str(&match i % 4 {
                    0 => format!("api_token: {t}\n"),
                    1 => format!("export KEYSMITH_TOKEN=\"{t}\"\n"),
                    2 => format!("{{\"token\": \"{t}\"}}\n"),
                    _ => format!("curl -H 'Authorization: Bearer {t}' https://x\n"),
                });
            }
            for t in &near {
                text.push_str(&format!("api_token: {t}\n"));
            }
            // Too long, too short, glued to a longer name.
            let t = &real[0];
            text.push_str(&format!("a: {t}x\nb: {}\nc: my_{t}\n", &t[..t.len() - 1]));
            std::fs::write(dir.path().join("config.txt"), &text).unwrap();

            let out = Command::new("python3")
                .args(["-m", "detect_secrets", "scan", "--all-files", "-p"])
                .arg(&plugin)
                .arg(".")
                .current_dir(dir.path())
                .env("KEYSMITH_TOKEN_PREFIX", prefix)
                .output()
                .expect("python3 -m detect_secrets (pip install detect-secrets)");
            assert!(
                out.status.success(),
                "detect-secrets failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let baseline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let found: BTreeSet<String> = baseline["results"]["config.txt"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|r| r["type"] == "Keysmith API Token")
                .map(|r| r["hashed_secret"].as_str().unwrap().to_string())
                .collect();
            let expected: BTreeSet<String> = real.iter().map(|t| sha1_hex(t)).collect();
            assert_eq!(
                found, expected,
                "prefix {prefix}: every real token, nothing else"
            );
        }
    }

    /// gitleaks itself is not packaged for Debian or PyPI; its rule's regex
    /// (RE2 syntax, a subset Python's `re` reads the same) is checked here.
    #[test]
    fn the_gitleaks_rule_matches_the_token_shape() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gitleaks.toml");
        let rules: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rule = &rules["rules"][0];
        assert_eq!(rule["id"].as_str(), Some("keysmith-api-token"));
        let regex = rule["regex"].as_str().unwrap();
        let (real, _) = samples("ks");
        let t = &real[0];
        let text = format!(
            "a: {t}\n\"{}\"\nc: {t}x\nd: {}\ne: my_{t}\nf: KS_{}\n",
            real[1],
            &t[..t.len() - 1],
            &t[3..]
        );
        let out = Command::new("python3")
            .args([
                "-c",
                "import re, sys; print('\\n'.join(m.group(1) for m in re.finditer(sys.argv[1], sys.argv[2], re.M)))",
                regex,
                &text,
            ])
            .output()
            .expect("python3");
        let matched: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(matched, vec![t.clone(), real[1].clone()]);
    }
}
