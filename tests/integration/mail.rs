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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_smtp_tests,
    ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
)]
async fn emails_fit_a_phone_over_smtp_sqlite() {
    every_email_fits_a_phone_and_spells_out_its_links(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_smtp_tests, skip_postgres_tests),
    ignore = "SMTP/PostgreSQL test skipped: needs aiosmtpd and KEYSMITH_TEST_POSTGRES_URL (CI has both)"
)]
async fn emails_fit_a_phone_over_smtp_postgres() {
    every_email_fits_a_phone_and_spells_out_its_links(Backend::Postgres).await
}

/// Every fixed width in an email's HTML: `width="N"` attributes and
/// `width:Npx` / `min-width:Npx` declarations (a `max-width` caps, it does
/// not fix, so it is left out).
pub fn fixed_widths(html: &str) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let lower = html.to_ascii_lowercase();
    for (at, _) in lower.match_indices("width") {
        let before = &lower[..at];
        if before.ends_with("max-") {
            continue;
        }
        let rest = lower[at + "width".len()..].trim_start_matches([' ', '"', '=', ':', '\'']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let unit = &rest[digits.len()..];
        // Percentages are fluid; only pixels (or unitless attributes) fix a width.
        if digits.is_empty() || unit.starts_with('%') {
            continue;
        }
        let snippet: String = lower[at.saturating_sub(20)..].chars().take(60).collect();
        found.push((snippet, digits.parse().unwrap_or(u32::MAX)));
    }
    found
}

/// The `href` of every button-styled link (`display:inline-block`).
pub fn button_links(html: &str) -> Vec<String> {
    html.split("<a ")
        .skip(1)
        .filter(|a| {
            let tag = &a[..a.find('>').unwrap_or(a.len())];
            tag.contains("display:inline-block")
        })
        .filter_map(|a| {
            let start = a.find("href=\"")? + "href=\"".len();
            let end = a[start..].find('"')? + start;
            Some(a[start..end].to_string())
        })
        .collect()
}

/// The `href` of every link.
pub fn all_links(html: &str) -> Vec<String> {
    html.match_indices("href=\"")
        .filter_map(|(at, m)| {
            let start = at + m.len();
            let end = html[start..].find('"')? + start;
            Some(html[start..end].to_string())
        })
        .collect()
}

/// The HTML with tags (and so `href` attributes) removed: what a reader sees.
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
}

/// Sign-in, invitation, token created, disabled, revoked and the
/// permission notices: no fixed width over 390 px, a card at most 600 px,
/// and every link (the buttons' included) spelled out as a plain URL, in
/// the HTML and in the text part.
async fn every_email_fits_a_phone_and_spells_out_its_links(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SMTP_URL", &smtp.url())]).await;
    let b = app.superuser_direct("ada@example.com").await;
    let org = crate::bearer::Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let r = app
        .post_form_with(
            &crate::harness::new_client(),
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let (id, _) = app.create_key("phone-sized").await;
    let (bob, bobs) =
        crate::team::member_with_token(&app, &org, "bob@example.com", "bob's laptop").await;
    let team = |path: String, fields: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let r = crate::team::team_post(app, &path, &fields, true).await;
            assert_eq!(r.status(), 200, "{path}");
        }
    };
    team("/team/invite".into(), vec![("email", "carol@example.com")]).await;
    team(
        format!("/team/members/{bob}/tokens/{}/toggle", bobs.id),
        vec![("enabled", "false")],
    )
    .await;
    team(
        format!("/team/members/{bob}/permission"),
        vec![("allowed", "false")],
    )
    .await;
    let r = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/user/api-keys/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);

    // (subject, has a button)
    let expected = [
        ("Your Keysmith sign-in link", true),
        ("invited you to Acme", true),
        ("New API token “phone-sized” created", true),
        ("“bob's laptop” was disabled", false),
        ("Your API tokens in Acme are paused", false),
        ("API token “phone-sized” was revoked", false),
    ];
    let raw = smtp.wait_for(expected.len()).await;
    let messages: Vec<_> = raw
        .iter()
        .map(|raw| MessageParser::default().parse(raw).unwrap())
        .collect();
    for (want, has_button) in expected {
        let m = messages
            .iter()
            .find(|m| m.subject().unwrap_or_default().contains(want))
            .unwrap_or_else(|| panic!("no email “{want}”"));
        let html = m.body_html(0).unwrap().to_string();
        let text = m.body_text(0).unwrap().to_string();
        let too_wide: Vec<_> = fixed_widths(&html)
            .into_iter()
            .filter(|(_, px)| *px > 390)
            .collect();
        assert!(too_wide.is_empty(), "{want}: fixed widths {too_wide:?}");
        assert!(html.contains("max-width:600px"), "{want}: a 600px card");
        assert!(
            html.contains(r#"name="viewport" content="width=device-width"#),
            "{want}: a viewport"
        );
        assert_eq!(
            !button_links(&html).is_empty(),
            has_button,
            "{want}: a button?"
        );
        let seen = visible_text(&html);
        for url in all_links(&html) {
            let url = url.replace("&amp;", "&");
            assert!(
                seen.contains(&url),
                "{want}: {url} not spelled out in the HTML"
            );
            assert!(text.contains(&url), "{want}: {url} not in the text part");
        }
    }
    app.shutdown().await;
}
