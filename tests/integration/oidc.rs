//! Sign-in with OpenID Connect against a real provider: panva's certified
//! `oidc-provider` (npm, tests/oidc/provider.mjs), on both backends. The
//! provider's login step is driven over HTTP here; tests/integration/
//! browser/oidc.rs clicks through it in Chromium.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::backend_tests;
use crate::harness::{Backend, TestApp, new_client};

pub const CLIENT_ID: &str = "keysmith-tests";
pub const CLIENT_SECRET: &str = "a-client-secret-for-tests-only";

/// The provider process; killed on drop.
pub struct OidcProvider {
    pub issuer: String,
    accounts: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

impl OidcProvider {
    /// Starts the provider for a Keysmith that will listen on `keysmith_port`
    /// (the redirect URI is registered before Keysmith starts).
    pub fn start(keysmith_port: u16, accounts: serde_json::Value) -> OidcProvider {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.json");
        std::fs::write(&file, accounts.to_string()).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "OIDC_REDIRECT_URI",
                format!("http://127.0.0.1:{keysmith_port}/signin/oidc/callback"),
            )
            .env("OIDC_ACCOUNTS", &file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs tests/oidc/provider.mjs (npm ci --prefix tests/oidc)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("issuer ") {
                        break url.to_string();
                    }
                }
                _ => panic!("the OIDC provider exited before it was ready"),
            }
        };
        // Keep reading what it prints: a closed pipe would end the process.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        OidcProvider {
            issuer,
            accounts: file,
            child,
            _dir: dir,
        }
    }

    /// Replaces the accounts (and their claims) the provider knows.
    pub fn set_accounts(&self, accounts: serde_json::Value) {
        std::fs::write(&self.accounts, accounts.to_string()).unwrap();
    }
}

/// A Keysmith and a provider that know each other.
pub async fn spawn_pair(
    backend: Backend,
    accounts: serde_json::Value,
    vars: &[(&str, &str)],
) -> (TestApp, OidcProvider) {
    let port = free_port();
    let provider = OidcProvider::start(port, accounts);
    let addr = format!("127.0.0.1:{port}");
    let mut all: Vec<(&str, &str)> = vec![
        ("KEYSMITH_ADDR", &addr),
        ("KEYSMITH_OIDC_ISSUER", &provider.issuer),
        ("KEYSMITH_OIDC_CLIENT_ID", CLIENT_ID),
        ("KEYSMITH_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("KEYSMITH_OIDC_LABEL", "Test Provider"),
        ("KEYSMITH_OIDC_SCOPES", "groups"),
    ];
    all.extend_from_slice(vars);
    let app = TestApp::spawn_with(backend, &all).await;
    (app, provider)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("a redirect, got {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Clicks "Sign in with …" and goes through the provider as `login` (an
/// account email, or "deny"); returns the callback URL the provider sent
/// the browser to, not yet opened.
async fn through_provider(
    app: &TestApp,
    provider: &OidcProvider,
    client: &reqwest::Client,
    login: &str,
) -> String {
    let r = client
        .get(app.url("/signin/oidc?next=/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let mut url = location(&r);
    assert!(url.starts_with(&provider.issuer), "{url}");
    for _ in 0..10 {
        if url.starts_with(&app.base_url) {
            return url;
        }
        let absolute = if url.starts_with('/') {
            format!("{}{url}", provider.issuer)
        } else {
            url.clone()
        };
        let r = if absolute.contains("/interaction/") {
            client
                .post(&absolute)
                .form(&[("login", login)])
                .send()
                .await
                .unwrap()
        } else {
            client.get(&absolute).send().await.unwrap()
        };
        assert!(r.status().is_redirection(), "{absolute}: {}", r.status());
        url = location(&r);
    }
    panic!("the provider never sent the browser back");
}

/// The authorization URL's `state`, for crafting callbacks.
fn state_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("a state parameter")
}

async fn sessions_of(app: &TestApp, email: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = $1",
    )
    .bind(email)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    n
}

async fn bootstrap(app: &TestApp, email: &str) {
    keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse(email).unwrap(),
    )
    .await
    .unwrap();
}

backend_tests!(
    #[cfg_attr(
        skip_oidc_tests,
        ignore = "OIDC test skipped: npm ci --prefix tests/oidc (CI runs it)"
    )]
    sso_signs_a_member_in_and_its_answer_works_once,
    sso_refuses_unknown_and_unverified_emails,
    sso_shows_the_providers_refusal,
    sso_callback_checks_state_code_and_browser,
    jit_membership_follows_the_claim,
    email_signin_can_be_turned_off_with_a_break_glass_link,
    unreachable_provider_gets_a_clear_page,
    id_token_with_the_wrong_nonce_is_refused,
    id_token_for_another_audience_is_refused,
    id_token_with_a_forged_signature_is_refused,
    an_expired_id_token_is_refused,
    an_answer_after_ten_minutes_is_gone,
);

async fn an_answer_after_ten_minutes_is_gone(backend: Backend) {
    let (app, provider) =
        spawn_pair(backend, serde_json::json!({"ada@example.com": {}}), &[]).await;
    bootstrap(&app, "ada@example.com").await;
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "ada@example.com").await;
    // The person comes back with the provider's answer eleven minutes on.
    app.state
        .clock
        .advance(std::time::Duration::from_secs(11 * 60));
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let body = r.text().await.unwrap();
    assert!(body.contains("This sign-in took too long"), "{body}");
    assert!(body.contains("<main"), "a page in the layout: {body}");
    assert!(body.contains("/signin"), "a way to start again: {body}");
    assert_eq!(sessions_of(&app, "ada@example.com").await, 0);
}

async fn an_expired_id_token_is_refused(backend: Backend) {
    a_tampered_id_token_is_refused(backend, "expired", "expired").await;
}

async fn id_token_with_a_forged_signature_is_refused(backend: Backend) {
    a_tampered_id_token_is_refused(backend, "signature", "signature").await;
}

/// Signs in as an account the provider tampers with (`tamper`, see
/// tests/oidc/provider.mjs): the callback is refused with 401, saying what
/// failed (`word`), and no session is made.
async fn a_tampered_id_token_is_refused(backend: Backend, tamper: &str, word: &str) {
    let (app, provider) = spawn_pair(
        backend,
        serde_json::json!({"ada@example.com": {"tamper": tamper}}),
        &[],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "ada@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 401, "{tamper}");
    let body = r.text().await.unwrap();
    assert!(body.contains("could not be verified"), "{tamper}: {body}");
    assert!(body.to_lowercase().contains(word), "{tamper}: {body}");
    assert_eq!(sessions_of(&app, "ada@example.com").await, 0, "{tamper}");
}

async fn id_token_for_another_audience_is_refused(backend: Backend) {
    a_tampered_id_token_is_refused(backend, "audience", "audience").await;
}

async fn id_token_with_the_wrong_nonce_is_refused(backend: Backend) {
    a_tampered_id_token_is_refused(backend, "nonce", "nonce").await;
}

async fn sso_signs_a_member_in_and_its_answer_works_once(backend: Backend) {
    let (app, provider) = spawn_pair(
        backend,
        serde_json::json!({"ada@example.com": {"email_verified": true}}),
        &[],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;

    let page = app.get("/signin").await.text().await.unwrap();
    assert!(page.contains("Sign in with Test Provider"), "{page}");
    assert!(page.contains("href=\"/signin/oidc?next="), "{page}");

    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "ada@example.com").await;
    assert!(
        callback.starts_with(&app.url("/signin/oidc/callback?")),
        "{callback}"
    );
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/team", "back to where sign-in started");
    let r = client
        .get(app.url("/settings/api-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("ada@example.com"));

    let (detail,): (Option<String>,) = sqlx::query_as(
        "SELECT detail FROM audit_events WHERE action = 'session.signed_in' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(detail.as_deref(), Some("sso"));
    // Nothing secret is stored: the state and browser cookie only as hashes.
    let callback_state = state_of(&callback);
    let (stored,): (String,) = sqlx::query_as("SELECT state_hash FROM oidc_logins")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_ne!(stored, callback_state);
    assert_eq!(stored.len(), 64);

    // The same answer again (replayed): refused, no new session.
    let before = sessions_of(&app, "ada@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("already used"));
    assert_eq!(sessions_of(&app, "ada@example.com").await, before);
}

async fn sso_refuses_unknown_and_unverified_emails(backend: Backend) {
    let (app, provider) = spawn_pair(
        backend,
        serde_json::json!({
            "ada@example.com": {"email_verified": true},
            "unverified@example.com": {"email_verified": false},
            "stranger@example.com": {"email_verified": true},
        }),
        &[],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;
    // A member whose email the provider has not verified.
    keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("unverified@example.com").unwrap(),
    )
    .await
    .unwrap();

    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "unverified@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("not verified"), "{body}");
    assert!(body.contains("unverified@example.com"), "{body}");
    assert_eq!(sessions_of(&app, "unverified@example.com").await, 0);

    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "stranger@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("No Keysmith account"), "{body}");
    let (users,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM users WHERE email = 'stranger@example.com'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(users, 0, "no account is made without a mapping");
}

async fn sso_shows_the_providers_refusal(backend: Backend) {
    let (app, provider) = spawn_pair(backend, serde_json::json!({}), &[]).await;
    bootstrap(&app, "ada@example.com").await;
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "deny").await;
    assert!(callback.contains("error=access_denied"), "{callback}");
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("did not sign you in"), "{body}");
    assert!(body.contains("access_denied"), "{body}");
    assert!(body.contains("declined"), "{body}");
}

async fn sso_callback_checks_state_code_and_browser(backend: Backend) {
    let (app, provider) =
        spawn_pair(backend, serde_json::json!({"ada@example.com": {}}), &[]).await;
    bootstrap(&app, "ada@example.com").await;

    // No state, an unknown state, a state that is not even our shape.
    for (query, needle) in [
        ("code=abc", "not valid"),
        (
            "code=abc&state=0123456789abcdef0123456789abcdef0123456789abcdef",
            "not valid",
        ),
        ("code=abc&state=%00%FF", "not valid"),
        ("", "not valid"),
    ] {
        let r = app.get(&format!("/signin/oidc/callback?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.text().await.unwrap().contains(needle), "{query}");
    }

    // A real state but no code.
    let client = new_client();
    let r = client.get(app.url("/signin/oidc")).send().await.unwrap();
    let state = state_of(&location(&r));
    let r = client
        .get(app.url(&format!("/signin/oidc/callback?state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no authorization code"));

    // A real answer opened in another browser (no binding cookie) is
    // refused, and used up: the right browser cannot use it afterwards.
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "ada@example.com").await;
    let r = new_client().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("did not start in this browser")
    );
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(sessions_of(&app, "ada@example.com").await, 0);

    // A browser that started a newer sign-in cannot finish the older one.
    let client = new_client();
    let first = through_provider(&app, &provider, &client, "ada@example.com").await;
    let _second = client.get(app.url("/signin/oidc")).send().await.unwrap();
    let r = client.get(&first).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("started elsewhere"));
    assert_eq!(sessions_of(&app, "ada@example.com").await, 0);
}

async fn jit_membership_follows_the_claim(backend: Backend) {
    let (app, provider) = spawn_pair(
        backend,
        serde_json::json!({"bob@example.com": {"groups": ["acme-staff", "other"]}}),
        &[(
            "KEYSMITH_OIDC_ORGANIZATIONS",
            "acme-staff=Acme, acme-devs=Acme:tokens, ghost=No Such Org",
        )],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;

    // First sign-in: a member of Acme, without the token permission.
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "bob@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let membership = || async {
        let row: (String, i64, Option<i64>, i64) = sqlx::query_as(
            "SELECT m.role, m.can_manage_tokens, m.disabled_at, m.oidc_managed FROM memberships m \
             JOIN users u ON u.id = m.user_id JOIN organizations o ON o.id = m.organization_id \
             WHERE u.email = 'bob@example.com' AND o.name = 'Acme'",
        )
        .fetch_one(app.db().pool())
        .await
        .unwrap();
        row
    };
    let (role, can, disabled, managed) = membership().await;
    assert_eq!(
        (role.as_str(), can, disabled, managed),
        ("member", 0, None, 1)
    );
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'member.provisioned' AND detail = 'sso'",
    )
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(n, 1);

    // A superuser grants the token permission (here straight in the
    // database), and Bob makes a token in his SSO session.
    sqlx::query("UPDATE memberships SET can_manage_tokens = 1 WHERE oidc_managed = 1")
        .execute(app.db().pool())
        .await
        .unwrap();
    let csrf = app.csrf_with(&client, "/settings/api-tokens").await;
    let r = client
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf)
        .json(&serde_json::json!({"label": "ci", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.whoami_status(&token).await, 200);

    // Removed from the groups: the next sign-in disables the membership,
    // ends its sessions and stops its token at once.
    provider.set_accounts(serde_json::json!({"bob@example.com": {"groups": ["other"]}}));
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "bob@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("access is disabled"));
    let (_, _, disabled, _) = membership().await;
    assert!(disabled.is_some(), "membership disabled");
    assert_eq!(app.whoami_status(&token).await, 401, "its token stopped");
    assert_eq!(
        sessions_of(&app, "bob@example.com").await,
        0,
        "sessions ended"
    );

    // Back in a group that grants tokens: enabled again, with the permission.
    provider.set_accounts(serde_json::json!({"bob@example.com": {"groups": ["acme-devs"]}}));
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "bob@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let (_, can, disabled, _) = membership().await;
    assert_eq!((can, disabled), (1, None));

    // A superuser's own member is never touched by the mapping.
    provider.set_accounts(serde_json::json!({"ada@example.com": {"groups": []}}));
    let client = new_client();
    let callback = through_provider(&app, &provider, &client, "ada@example.com").await;
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303);
}

async fn email_signin_can_be_turned_off_with_a_break_glass_link(backend: Backend) {
    let (app, _provider) = spawn_pair(
        backend,
        serde_json::json!({}),
        &[("KEYSMITH_EMAIL_SIGNIN", "false")],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;
    keysmith::store::orgs::add_member(
        &mut app.db().pool().acquire().await.unwrap(),
        {
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM organizations")
                .fetch_one(app.db().pool())
                .await
                .unwrap();
            id
        },
        &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
        keysmith::store::orgs::Role::Member,
        false,
        0,
    )
    .await
    .unwrap();

    let page = app.get("/signin").await.text().await.unwrap();
    assert!(page.contains("Sign in with Test Provider"));
    assert!(!page.contains("name=\"email\""), "no email form");
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "bob@example.com")],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("turned off"));
    assert!(app.dev_mail().await.is_empty(), "no mail sent");

    // Break glass: a superuser's CLI link still signs in; a member gets none.
    let err = keysmith::auth::signin::issue_signin_link(
        app.db(),
        &app.state.config,
        &app.state.clock,
        &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not a superuser"), "{err}");
    app.sign_in_direct("ada@example.com").await;
    assert_eq!(app.get("/settings/api-tokens").await.status(), 200);
}

async fn unreachable_provider_gets_a_clear_page(backend: Backend) {
    // Nothing listens there: start-up logs a warning and serves anyway.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_OIDC_ISSUER", &issuer),
            ("KEYSMITH_OIDC_CLIENT_ID", CLIENT_ID),
            ("KEYSMITH_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
    .await;
    let r = app.get("/signin/oidc").await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("could not complete the sign-in"), "{body}");
    assert!(body.contains(".well-known/openid-configuration"), "{body}");
    assert!(!body.contains(CLIENT_SECRET));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[test]
fn oidc_config_errors_name_the_setting() {
    let vars = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
        let mut m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("KEYSMITH_CONFIG".into(), "/dev/null".into());
        m
    };
    let err = keysmith::config::Config::from_vars(&vars(&[(
        "KEYSMITH_OIDC_ISSUER",
        "https://sso.example.com",
    )]))
    .unwrap_err();
    assert_eq!(err.setting, "KEYSMITH_OIDC_CLIENT_ID");
    let err = keysmith::config::Config::from_vars(&vars(&[("KEYSMITH_EMAIL_SIGNIN", "false")]))
        .unwrap_err();
    assert_eq!(err.setting, "KEYSMITH_EMAIL_SIGNIN");
    let err = keysmith::config::Config::from_vars(&vars(&[
        ("KEYSMITH_OIDC_ISSUER", "sso.example.com"),
        ("KEYSMITH_OIDC_CLIENT_ID", "x"),
        ("KEYSMITH_OIDC_CLIENT_SECRET", "y"),
    ]))
    .unwrap_err();
    assert_eq!(err.setting, "KEYSMITH_OIDC_ISSUER");
}

#[test]
fn serve_stops_at_start_with_one_line_for_an_incomplete_oidc_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .current_dir(dir.path())
        .env_clear()
        .env(
            "KEYSMITH_OIDC_ISSUER",
            "https://sso.example.com/realms/acme",
        )
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("KEYSMITH_OIDC_CLIENT_ID"), "{err}");
    assert!(
        !dir.path().join("keysmith.db").exists(),
        "nothing was created"
    );
}

/// `keysmith signin-link`, the break-glass path, run as the binary.
mod break_glass {
    use std::process::Command;

    use super::{CLIENT_ID, CLIENT_SECRET};
    use crate::backend_tests;
    use crate::harness::Backend;

    backend_tests!(break_glass_signin_link_is_for_superusers_when_email_links_are_off);

    async fn break_glass_signin_link_is_for_superusers_when_email_links_are_off(backend: Backend) {
        let test_db = crate::harness::TestDb::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("DATABASE_URL", test_db.url.as_str()),
            (
                "KEYSMITH_OIDC_ISSUER",
                "https://sso.example.com/realms/acme",
            ),
            ("KEYSMITH_OIDC_CLIENT_ID", CLIENT_ID),
            ("KEYSMITH_OIDC_CLIENT_SECRET", CLIENT_SECRET),
            ("KEYSMITH_EMAIL_SIGNIN", "false"),
        ];
        let run = |args: &[&str]| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_keysmith"));
            cmd.current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.output().unwrap()
        };
        let out = run(&["bootstrap", "--org", "Acme", "--email", "ada@example.com"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let db = keysmith::store::Db::connect(
            &keysmith::config::DatabaseUrl::parse(&test_db.url).unwrap(),
            &keysmith::store::PoolSettings::default(),
        )
        .await
        .unwrap();
        let (org,): (i64,) = sqlx::query_as("SELECT id FROM organizations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        keysmith::store::orgs::add_member(
            &mut db.pool().acquire().await.unwrap(),
            org,
            &keysmith::domain::EmailAddress::parse("bob@example.com").unwrap(),
            keysmith::store::orgs::Role::Member,
            true,
            0,
        )
        .await
        .unwrap();

        let out = run(&["signin-link", "ada@example.com"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("/signin/link/"), "{stdout}");

        let out = run(&["signin-link", "bob@example.com"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "no link printed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a superuser"), "{err}");
        assert!(err.contains("KEYSMITH_EMAIL_SIGNIN"), "{err}");
        db.close().await;
    }
}
