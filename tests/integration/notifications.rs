//! Notification emails through a real SMTP server: what they say, the
//! one-click revoke link, durable delivery through an outage, expiry
//! reminders, and the client-IP rule.

use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::harness::{Backend, SmtpServer, TestApp, new_client};

const FIREFOX: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 Firefox/128.0";

backend_tests!(reminders_go_out_once_however_often_the_job_runs);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn created_email_over_smtp_sqlite() {
    created_email_names_the_request_and_its_revoke_link_works(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_smtp_tests, skip_postgres_tests),
    ignore = "SMTP/PostgreSQL test skipped: needs aiosmtpd and KEYSMITH_TEST_POSTGRES_URL (CI has both)"
)]
async fn created_email_over_smtp_postgres() {
    created_email_names_the_request_and_its_revoke_link_works(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn revocation_emails_over_smtp_sqlite() {
    every_revocation_is_confirmed_by_email(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_smtp_tests, skip_postgres_tests),
    ignore = "SMTP/PostgreSQL test skipped: needs aiosmtpd and KEYSMITH_TEST_POSTGRES_URL (CI has both)"
)]
async fn revocation_emails_over_smtp_postgres() {
    every_revocation_is_confirmed_by_email(Backend::Postgres).await
}

struct Parsed {
    subject: String,
    text: String,
    html: String,
    date: bool,
    message_id: String,
}

fn parse(raw: &[u8]) -> Parsed {
    let m = MessageParser::default().parse(raw).unwrap();
    Parsed {
        subject: m.subject().unwrap_or_default().to_string(),
        text: m.body_text(0).unwrap_or_default().to_string(),
        html: m.body_html(0).unwrap_or_default().to_string(),
        date: m.date().is_some(),
        message_id: m.message_id().unwrap_or_default().to_string(),
    }
}

fn link_in(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

async fn create_with(app: &TestApp, label: &str, headers: &[(&str, &str)]) -> (i64, String) {
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let mut req = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .json(&json!({ "label": label, "scopes": ["write"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    (
        body["id"].as_i64().unwrap(),
        body["plaintext"].as_str().unwrap().to_string(),
    )
}

async fn created_email_names_the_request_and_its_revoke_link_works(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    app.superuser_direct("ada@example.com").await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let (id, token) = create_with(
        &app,
        "CI deploys",
        &[("user-agent", FIREFOX), ("x-forwarded-for", "203.0.113.9")],
    )
    .await;

    let mail = smtp
        .wait_for(1)
        .await
        .iter()
        .map(|m| parse(m))
        .find(|m| m.subject.contains("CI deploys"))
        .expect("created email");
    assert_eq!(mail.subject, "New API token “CI deploys” created in Acme");
    assert!(mail.date && mail.message_id.contains('@'));
    let prefix: String = token.chars().take(11).collect();
    for fact in [
        "CI deploys",
        &prefix,
        "write",
        "203.0.113.9",
        FIREFOX,
        "Firefox on Mac OSX",
        "Acme",
        "UTC",
    ] {
        assert!(
            mail.text.contains(fact),
            "text part lacks {fact}:\n{}",
            mail.text
        );
        assert!(
            mail.html.contains(&fact.replace('&', "&amp;")) || fact == FIREFOX,
            "html part lacks {fact}"
        );
    }
    // The time is the creation time, in UTC.
    assert_time_since(&mail, before);

    let link = link_in(&mail.text, &format!("{}/tokens/revoke/", app.base_url));
    assert!(mail.html.contains(&link));
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();

    // GET names the token and changes nothing; no session needed.
    let stranger = new_client();
    let page = stranger.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("CI deploys")
            && html.contains("203.0.113.9")
            && html.contains("Revoke this token"),
        "{html}"
    );
    assert_eq!(app.whoami_status(&token).await, 200);

    let r = app.post_form_with(&stranger, &path, &path, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Token revoked"));
    assert_eq!(app.whoami_status(&token).await, 401);
    let (reason,): (Option<String>,) =
        sqlx::query_as("SELECT revoked_reason FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("email_link"));
    let audit = app.audit_actions(id).await;
    assert_eq!(audit.last().unwrap().0, "token.revoked");
    assert_eq!(
        audit.last().unwrap().3,
        None,
        "no signed-in actor: the link did it"
    );

    // A second POST does nothing harmful.
    let r = app.post_form_with(&stranger, &path, &path, &[]).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("already used"));

    let revoked = smtp
        .wait_for(2)
        .await
        .iter()
        .map(|m| parse(m))
        .find(|m| m.subject.contains("was revoked"))
        .expect("revoked email");
    assert_eq!(
        revoked.subject,
        "API token “CI deploys” was revoked in Acme"
    );
    assert!(
        revoked.text.contains("link in an email"),
        "{}",
        revoked.text
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), 2, "one email per event");
    app.shutdown().await;
}

async fn reminders_go_out_once_however_often_the_job_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let in_ten_days = (time::OffsetDateTime::now_utc() + time::Duration::days(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .api(
            Method::POST,
            "/api/user/api-keys",
            Some(json!({ "label": "short-lived", "expiresAt": in_ten_days })),
        )
        .await;
    assert_eq!(r.status(), 201);
    let count = |template: &'static str| {
        let db = app.db().clone();
        async move {
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE template = $1")
                    .bind(template)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
            n
        }
    };
    let run = || keysmith::mail::reminders::run_once(app.db(), app.state.clock.unix());
    assert_eq!(run().await.unwrap(), 0, "nothing due yet");
    app.state
        .clock
        .advance(Duration::from_secs(3 * 86400 + 3600)); // 7 days minus an hour left
    for _ in 0..5 {
        run().await.unwrap();
    }
    assert_eq!(count("token_expires_soon").await, 1, "one 7-day reminder");
    app.state.clock.advance(Duration::from_secs(6 * 86400)); // under a day left
    for _ in 0..5 {
        run().await.unwrap();
    }
    assert_eq!(
        count("token_expires_soon").await,
        2,
        "plus one 1-day reminder"
    );
    app.state.clock.advance(Duration::from_secs(86400));
    for _ in 0..5 {
        run().await.unwrap();
    }
    assert_eq!(count("token_expired").await, 1);
    // Delivered through the outbox, with the right subjects.
    let mail = app.wait_for_dev_mail("ada@example.com", 5).await;
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"API token “short-lived” expires in 7 days (Acme)"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"API token “short-lived” expires tomorrow (Acme)"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"API token “short-lived” has expired (Acme)"),
        "{subjects:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn smtp_outage_loses_nothing_and_sends_each_email_once() {
    let mut smtp = SmtpServer::start();
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    app.superuser_direct("ada@example.com").await;
    smtp.stop();

    for n in 0..3 {
        let started = Instant::now();
        create_with(&app, &format!("outage {n}"), &[]).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "token creation does not wait for SMTP"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let app = app.restart().await;
    smtp.restart();
    // Skip the retry backoff instead of sleeping through it.
    app.state.clock.advance(Duration::from_secs(3600));
    app.state.mail.wake();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let subjects: Vec<String> = smtp.messages().iter().map(|m| parse(m).subject).collect();
        let created = subjects.iter().filter(|s| s.contains("outage")).count();
        if created >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {created} of 3 arrived: {subjects:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subjects: Vec<String> = smtp.messages().iter().map(|m| parse(m).subject).collect();
    for n in 0..3 {
        let label = format!("“outage {n}”");
        assert_eq!(
            subjects.iter().filter(|s| s.contains(&label)).count(),
            1,
            "exactly once: {subjects:?}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = create_with(&app, "spoof", &[("x-forwarded-for", "198.51.100.66")]).await;
    let audit = app.audit_actions(id).await;
    assert_eq!(
        audit[0].1.as_deref(),
        Some("127.0.0.1"),
        "the socket address, not the header"
    );
    let mail = app.wait_for_dev_mail("ada@example.com", 2).await;
    assert!(mail.iter().any(|m| m.subject.contains("spoof")));
    app.shutdown().await;
}

#[tokio::test]
async fn trusted_proxy_forwarded_for_is_recorded() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.0/8")],
    )
    .await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = create_with(
        &app,
        "proxied",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.66")],
    )
    .await;
    let audit = app.audit_actions(id).await;
    assert_eq!(
        audit[0].1.as_deref(),
        Some("198.51.100.66"),
        "the nearest untrusted hop"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn revoke_links_that_are_expired_or_made_up_get_calm_pages() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser("ada@example.com").await;
    let (_, token) = create_with(&app, "calm", &[]).await;
    let mail = app.wait_for_dev_mail("ada@example.com", 2).await;
    let created = mail.iter().find(|m| m.subject.contains("calm")).unwrap();
    let link = created
        .links
        .iter()
        .find(|l| l.contains("/tokens/revoke/"))
        .unwrap()
        .clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    app.state.clock.advance(Duration::from_secs(8 * 86400));
    let r = new_client().get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("expired"));
    let r = app.post_form_with(&new_client(), &path, &path, &[]).await;
    assert_eq!(r.status(), 410);
    let r = new_client()
        .get(app.url(&format!("/tokens/revoke/{}", "0".repeat(48))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = new_client()
        .get(app.url("/tokens/revoke/short"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The token was never touched.
    assert_eq!(app.whoami_status(&token).await, 200);
    app.shutdown().await;
}

/// Two instances on one PostgreSQL share the outbox: every message is sent,
/// by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_postgres_tests,
    ignore = "PostgreSQL test skipped: set KEYSMITH_TEST_POSTGRES_URL (CI sets it)"
)]
async fn two_instances_deliver_each_message_once() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = TestApp::spawn_with(Backend::Postgres, &[("DATABASE_URL", &url)]).await;
    let org = keysmith::store::orgs::bootstrap(
        a.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap()
    .organization;
    let mut tx = a.db().begin().await.unwrap();
    for n in 0..40 {
        let mail = keysmith::mail::Mail::PermissionRestored {
            organization_id: org.id,
            actor: "ada@example.com".into(),
        };
        keysmith::mail::enqueue(
            &mut tx,
            &format!("user{n}@example.com"),
            &mail,
            a.state.clock.unix(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    a.state.mail.wake();
    b.state.mail.wake();

    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let mut all = a.dev_mail().await;
        all.extend(b.dev_mail().await);
        if all.len() >= 40 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 40 delivered",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut recipients: Vec<String> = all.iter().map(|m| m.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40, "every message delivered");
    let total = a.dev_mail().await.len() + b.dev_mail().await.len();
    assert_eq!(total, 40, "and none twice");
    let (unsent,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL")
            .fetch_one(a.db().pool())
            .await
            .unwrap();
    assert_eq!(unsent, 0);
    b.shutdown().await;
    a.shutdown().await;
}

/// A request from the app's (signed-in) client with the CSRF token of
/// `page`, a user agent and an `X-Forwarded-For` (the test trusts 127.0.0.1).
async fn send_as(
    app: &TestApp,
    method: Method,
    page: &str,
    path: &str,
    (agent, ip): (&str, &str),
    htmx: bool,
) -> reqwest::Response {
    let csrf = app.csrf_with(&app.client, page).await;
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .header("user-agent", agent)
        .header("x-forwarded-for", ip);
    if htmx {
        req = req.header("hx-request", "true");
    }
    if method == Method::DELETE {
        req = req.header("x-csrf-token", csrf);
    } else {
        req = req.form(&[("csrf_token", csrf.as_str())]);
    }
    req.send().await.unwrap()
}

/// The revocation email about `label`, waiting until `total` messages arrived.
async fn revoked_email(smtp: &SmtpServer, total: usize, label: &str) -> Parsed {
    let subject = format!("API token “{label}” was revoked in Acme");
    smtp.wait_for(total)
        .await
        .iter()
        .map(|m| parse(m))
        .find(|m| m.subject == subject)
        .unwrap_or_else(|| panic!("no email “{subject}”"))
}

/// The email's "Time" fact is a time between `since` and now, in UTC (in
/// both parts).
fn assert_time_since(mail: &Parsed, since: i64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fact = (since..=now)
        .map(keysmith::mail::notices::mail_time)
        .find(|t| mail.text.contains(&format!("Time: {t}")))
        .unwrap_or_else(|| panic!("no time since {since} in:\n{}", mail.text));
    assert!(mail.html.contains(&fact), "html part lacks {fact}");
}

fn assert_names(mail: &Parsed, facts: &[&str]) {
    for fact in facts {
        assert!(
            mail.text.contains(fact),
            "text part lacks {fact}:\n{}",
            mail.text
        );
        assert!(
            mail.html.contains(&fact.replace('&', "&amp;")),
            "html part lacks {fact}:\n{}",
            mail.html
        );
    }
}

/// The owner revoking on the page (htmx and the plain form) and through
/// `DELETE /api/user/api-keys/{id}`, a superuser, and expiry: each is
/// confirmed by one email with the time, IP and user agent of the request.
/// A refused revocation sends nothing.
async fn every_revocation_is_confirmed_by_email(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let b = app.superuser_direct("ada@example.com").await;
    let (htmx_id, htmx_token) = create_with(&app, "via htmx", &[]).await;
    let (form_id, _) = create_with(&app, "via form", &[]).await;
    let (api_id, _) = create_with(&app, "via api", &[]).await;
    smtp.wait_for(3).await;
    let page = "/settings/api-tokens";
    let since = app.state.clock.unix();

    let r = send_as(
        &app,
        Method::POST,
        page,
        &format!("/settings/api-tokens/{htmx_id}/revoke"),
        (FIREFOX, "203.0.113.1"),
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.whoami_status(&htmx_token).await, 401);
    let mail = revoked_email(&smtp, 4, "via htmx").await;
    assert_names(
        &mail,
        &["Revoked by", "you", "203.0.113.1", "Firefox on Mac OSX"],
    );
    assert!(mail.text.contains(FIREFOX), "the raw agent too");
    assert_time_since(&mail, since);

    let r = send_as(
        &app,
        Method::POST,
        page,
        &format!("/settings/api-tokens/{form_id}/revoke"),
        ("curl/8.5.0", "203.0.113.2"),
        false,
    )
    .await;
    assert_eq!(r.status(), 303, "the plain form redirects back");
    let mail = revoked_email(&smtp, 5, "via form").await;
    assert_names(&mail, &["203.0.113.2", "curl/8.5.0"]);
    assert_time_since(&mail, since);

    let r = send_as(
        &app,
        Method::DELETE,
        page,
        &format!("/api/user/api-keys/{api_id}"),
        ("deploy-script/2.1", "203.0.113.3"),
        false,
    )
    .await;
    assert_eq!(r.status(), 204);
    let mail = revoked_email(&smtp, 6, "via api").await;
    assert_names(&mail, &["203.0.113.3", "deploy-script/2.1"]);
    assert_time_since(&mail, since);

    // Refused revocations change nothing and send nothing: again, and a
    // token that does not exist.
    for id in [api_id, 999_999] {
        let r = send_as(
            &app,
            Method::DELETE,
            page,
            &format!("/api/user/api-keys/{id}"),
            ("deploy-script/2.1", "203.0.113.3"),
            false,
        )
        .await;
        assert_eq!(r.status(), 404);
    }

    // A superuser revoking a member's token: the member is told who did it.
    let org = crate::bearer::Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let (bob, bobs) =
        crate::team::member_with_token(&app, &org, "bob@example.com", "bob's laptop").await;
    let r = send_as(
        &app,
        Method::POST,
        "/team",
        &format!("/team/members/{bob}/tokens/{}/revoke", bobs.id),
        (FIREFOX, "203.0.113.4"),
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mail = revoked_email(&smtp, 7, "bob's laptop").await;
    assert_names(
        &mail,
        &[
            "ada@example.com, an organization superuser",
            "203.0.113.4",
            "Firefox on Mac OSX",
        ],
    );
    assert_time_since(&mail, since);

    // Expiry: no request, so the email names the expiry time.
    let expires = app.state.clock.unix() + 2 * 86400;
    crate::bearer::mint(
        &app,
        org.id,
        org.owner,
        crate::bearer::Spec {
            label: "short-lived",
            expires_at: Some(expires),
            ..Default::default()
        },
    )
    .await;
    app.state.clock.advance(Duration::from_secs(3 * 86400));
    keysmith::mail::reminders::run_once(app.db(), app.state.clock.unix())
        .await
        .unwrap();
    app.state.mail.wake();
    let expired = smtp
        .wait_for(8)
        .await
        .iter()
        .map(|m| parse(m))
        .find(|m| m.subject == "API token “short-lived” has expired (Acme)")
        .expect("expired email");
    let expired_at = format!("Expired: {}", keysmith::mail::notices::mail_time(expires));
    assert!(expired.text.contains(&expired_at), "{}", expired.text);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let subjects: Vec<String> = smtp.messages().iter().map(|m| parse(m).subject).collect();
    assert_eq!(subjects.len(), 8, "one email per event: {subjects:?}");
    app.shutdown().await;
}
