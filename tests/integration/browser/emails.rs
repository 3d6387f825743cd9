//! The emails' HTML rendered in a real browser at a phone's width: no
//! sideways scrolling at 390 px, the card no wider than 600 px on a desktop
//! (screenshots in `target/screenshots/`).

use mail_parser::MessageParser;

use super::Browser;
use crate::harness::{Backend, TestApp};

/// The HTML part of the newest development-mailbox message whose subject
/// contains `subject`.
async fn html_of(app: &TestApp, subject: &str) -> String {
    let mail = app.dev_mail().await;
    let meta = mail
        .iter()
        .find(|m| m.subject.contains(subject))
        .unwrap_or_else(|| panic!("no email “{subject}”"));
    let raw = std::fs::read(app.data_dir.join("mail").join(&meta.file)).expect("read the .eml");
    let message = MessageParser::default()
        .parse(&raw)
        .expect("parse the .eml");
    message.body_html(0).expect("an HTML part").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn emails_fit_a_390px_phone_without_sideways_scrolling() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser("ada@example.com").await;
    // A long label and an unbroken user agent: the worst case for width.
    let (id, _) = app
        .create_key("deploys-from-the-continuous-integration-pipeline-of-the-monorepo")
        .await;
    let r = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/user/api-keys/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let r = crate::team::team_post(
        &app,
        "/team/invite",
        &[("email", "carol@example.com")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    app.wait_for_dev_mail("ada@example.com", 3).await;
    app.wait_for_dev_mail("carol@example.com", 1).await;

    let dir = tempfile::tempdir().unwrap();
    let browser = Browser::start().await;
    for (name, subject) in [
        ("signin", "sign-in link"),
        ("created", "created in Acme"),
        ("revoked", "was revoked"),
        ("invitation", "invited you"),
    ] {
        let html = html_of(&app, subject).await;
        let file = dir.path().join(format!("{name}.html"));
        std::fs::write(&file, &html).unwrap();
        let url = format!("file://{}", file.display());

        browser.emulate_phone(390, 844).await;
        browser.goto(&url).await;
        let widths = browser
            .eval(
                "const d = document.documentElement;\
                 return { scroll: d.scrollWidth, client: d.clientWidth };",
            )
            .await;
        assert_eq!(widths["client"], 390, "{name}: a 390px viewport");
        assert!(
            widths["scroll"].as_i64() <= widths["client"].as_i64(),
            "{name}: scrolls sideways at 390px: {widths}"
        );
        browser.screenshot(&format!("email-{name}-390")).await;

        browser
            .cdp(
                "Emulation.setDeviceMetricsOverride",
                serde_json::json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser.goto(&url).await;
        let card = browser
            .eval(
                "const t = document.querySelectorAll('table[role=presentation]')[1];\
                 return t.getBoundingClientRect().width;",
            )
            .await;
        assert!(
            card.as_f64().unwrap() <= 600.0,
            "{name}: the card is at most 600px wide: {card}"
        );
        browser.screenshot(&format!("email-{name}-1280")).await;
    }
    browser.close().await;
    app.shutdown().await;
}
