//! First-run setup, signing out, and signing in by email link, clicked through
//! in a real browser.

use crate::browser::Browser;
use crate::harness::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn setup_then_sign_out_and_back_in_by_email_link() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start().await;

    // First run: the setup link opens the form that creates the organization.
    let setup_url = app
        .setup_url
        .clone()
        .expect("a fresh database has a setup link");
    browser.goto(&setup_url).await;
    browser.wait_for_text("h1", "Welcome to Keysmith").await;
    browser.fill("#org", "Acme Rockets").await;
    browser.fill("#email", "Ada@Example.com").await;
    browser.screenshot("setup").await;
    browser
        .click("main form[action='/setup'] button[type=submit]")
        .await;

    // Signed in straight away, on the tokens page, in the new organization.
    browser.wait_for(".topbar .org-name").await;
    browser.wait_for_path("/settings/api-tokens").await;
    assert_eq!(browser.text(".topbar .org-name").await, "Acme Rockets");
    assert_eq!(browser.text(".topbar .user-email").await, "ada@example.com");
    browser.wait_for_text("h1", "API tokens").await;
    browser.screenshot("api-tokens").await;

    // Signing out ends the session: the tokens page now asks to sign in.
    browser.click(".topbar form.signout button").await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    assert_eq!(browser.path().await, "/signin");
    browser.goto(&app.url("/settings/api-tokens")).await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    assert_eq!(browser.path().await, "/signin?next=/settings/api-tokens");
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css(".topbar .org-name"))
            .await
            .is_err(),
        "signed-out pages show no account"
    );

    // Ask for a sign-in link.
    browser.fill("#email", "ada@example.com").await;
    browser.screenshot("signin").await;
    browser
        .click("main form[action='/signin'] button[type=submit]")
        .await;
    browser.wait_for_text("h1", "Check your inbox").await;

    // Open the emailed link: it shows a button and signs in only when pressed.
    let mail = app.wait_for_dev_mail("ada@example.com", 1).await;
    let link = mail[0].links[0].clone();
    assert!(link.starts_with(&app.base_url), "{link}");
    browser.goto(&link).await;
    browser
        .wait_for_text("h1", "Sign in as ada@example.com")
        .await;
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css(".topbar .org-name"))
            .await
            .is_err(),
        "opening the link alone does not sign in"
    );
    browser.screenshot("signin-link").await;
    browser
        .wait_for_text("button", "Sign in")
        .await
        .click()
        .await
        .expect("press Sign in");

    // Back where the sign-in started, signed in.
    browser.wait_for(".topbar .org-name").await;
    browser.wait_for_path("/settings/api-tokens").await;
    assert_eq!(browser.text(".topbar .org-name").await, "Acme Rockets");
    assert_eq!(browser.text(".topbar .user-email").await, "ada@example.com");

    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn bad_email_shows_the_error_inline_and_keeps_the_value() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start().await;

    // Sign-in form.
    browser.goto(&app.url("/signin")).await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    browser.fill("#email", "ada.example.com").await;
    browser
        .click("main form[action='/signin'] button[type=submit]")
        .await;
    let error = browser.wait_for(".field.has-error #email-error").await;
    assert_eq!(
        error.text().await.unwrap(),
        "An email address needs an @, like name@example.com."
    );
    assert!(
        error.is_displayed().await.unwrap(),
        "the message is visible"
    );
    assert_eq!(browser.path().await, "/signin");
    assert_eq!(browser.value("#email").await, "ada.example.com");
    let field = browser.find("#email").await;
    assert_eq!(
        field.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(
        field.attr("aria-describedby").await.unwrap().as_deref(),
        Some("email-error")
    );
    browser.screenshot("signin-error").await;
    assert!(app.dev_mail().await.is_empty(), "no mail for a bad address");

    // Setup form: the message sits under the email field; both values stay.
    let setup_url = app
        .setup_url
        .clone()
        .expect("a fresh database has a setup link");
    browser.goto(&setup_url).await;
    browser.wait_for_text("h1", "Welcome to Keysmith").await;
    browser.fill("#org", "Acme Rockets").await;
    browser.fill("#email", "ada@").await;
    browser
        .click("main form[action='/setup'] button[type=submit]")
        .await;
    let error = browser.wait_for(".field.has-error #email-error").await;
    assert_eq!(
        error.text().await.unwrap(),
        "The part after the @ is not a valid domain."
    );
    assert_eq!(browser.value("#org").await, "Acme Rockets");
    assert_eq!(browser.value("#email").await, "ada@");
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("#org-error"))
            .await
            .is_err(),
        "the good field has no message"
    );
    browser.screenshot("setup-error").await;

    browser.close().await;
    app.shutdown().await;
}
