//! The permission and superuser-revocation emails through a real SMTP server.

use mail_parser::MessageParser;

use super::{member_with_token, team_post};
use crate::bearer::Org;
use crate::harness::{Backend, SmtpServer, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn team_emails_over_smtp_sqlite() {
    permission_and_revocation_emails_name_the_superuser(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_smtp_tests, skip_postgres_tests),
    ignore = "SMTP/PostgreSQL test skipped: needs aiosmtpd and KEYSMITH_TEST_POSTGRES_URL (CI has both)"
)]
async fn team_emails_over_smtp_postgres() {
    permission_and_revocation_emails_name_the_superuser(Backend::Postgres).await
}

/// (subject, text part) of every message to `to`.
async fn mail_to(smtp: &SmtpServer, count: usize, to: &str) -> Vec<(String, String)> {
    smtp.wait_for(count)
        .await
        .iter()
        .map(|raw| MessageParser::default().parse(raw).unwrap())
        .filter(|m| {
            m.to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .is_some_and(|a| a == to)
        })
        .map(|m| {
            (
                m.subject().unwrap_or_default().to_string(),
                m.body_text(0).unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn permission_and_revocation_emails_name_the_superuser(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    let b = app.superuser_direct("ada@example.com").await;
    let org = Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "CI deploys").await;

    let path = format!("/team/members/{bob}/permission");
    assert_eq!(
        team_post(&app, &path, &[("allowed", "false")], true)
            .await
            .status(),
        200
    );
    let mail = mail_to(&smtp, 1, "bob@example.com").await;
    let (subject, body) = &mail[0];
    assert_eq!(subject, "Your API tokens in Acme are paused");
    assert!(
        body.contains("ada@example.com withdrew your permission"),
        "{body}"
    );

    assert_eq!(
        team_post(&app, &path, &[("allowed", "true")], true)
            .await
            .status(),
        200
    );
    let mail = mail_to(&smtp, 2, "bob@example.com").await;
    assert!(
        mail.iter()
            .any(|(s, b)| s == "Your API tokens in Acme work again"
                && b.contains("ada@example.com gave you back the permission"))
    );

    let r = team_post(
        &app,
        &format!("/team/members/{bob}/tokens/{}/revoke", token.id),
        &[],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mail = mail_to(&smtp, 3, "bob@example.com").await;
    let (_, body) = mail
        .iter()
        .find(|(s, _)| s == "API token “CI deploys” was revoked in Acme")
        .expect("revocation email");
    assert!(
        body.contains("ada@example.com, an organization superuser"),
        "{body}"
    );
    app.shutdown().await;
}
