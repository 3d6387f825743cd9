//! Mail through a real SMTP server process.

use mail_parser::MessageParser;

use crate::harness::{Backend, SmtpServer, TestApp};
use crate::store::bootstrap;

#[tokio::test]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn signin_email_arrives_over_smtp_and_its_link_works() {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_MAIL_FROM", "Keysmith <keys@acme.test>"),
        ],
    )
    .await;
    bootstrap(&app, "ada@example.com").await;
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);

    let raw = smtp.wait_for(1).await.remove(0);
    let message = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(message.subject(), Some("Your Keysmith sign-in link"));
    assert_eq!(
        message.from().unwrap().first().unwrap().address(),
        Some("keys@acme.test")
    );
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("ada@example.com")
    );
    assert!(message.date().is_some(), "Date header");
    assert!(
        message
            .message_id()
            .is_some_and(|id| id.ends_with("@acme.test")),
        "{:?}",
        message.message_id()
    );
    let text = message.body_text(0).unwrap().to_string();
    let html = message.body_html(0).unwrap().to_string();
    let start = text
        .find(&format!("{}/signin/link/", app.base_url))
        .expect("link in the text part");
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(html.contains(&link), "the HTML part has the same link");

    // No development outbox when SMTP is configured, and no mailbox page.
    assert!(app.dev_mail().await.is_empty());
    assert_eq!(app.get("/dev/mail").await.status(), 404);

    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    let r = app.post_form_with(&app.client, &path, &path, &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.get("/settings/api-tokens").await.status(), 200);
    app.shutdown().await;
}
