//! Signing in through the OpenID provider in a real browser: the button on
//! /signin, the provider's own login page, back to Keysmith's settings page;
//! just-in-time membership and its removal; and the provider's refusal and an
//! unknown person, each ending on a clear page.

use crate::browser::Browser;
use crate::harness::Backend;
use crate::oidc::spawn_pair;

/// From /signin through the provider as `login`, back to Keysmith.
async fn sign_in_through_provider(browser: &Browser, app: &crate::harness::TestApp, login: &str) {
    // The provider remembers who signed in (its own session, a cookie on
    // 127.0.0.1 like Keysmith's): forget it, so its login page shows again.
    browser.goto(&app.url("/signin")).await;
    browser.client.delete_all_cookies().await.unwrap();
    browser.goto(&app.url("/signin")).await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    browser.click("#sso-signin").await;
    browser.wait_for_text("h1", "Test provider").await;
    browser.fill("#login", login).await;
    browser.click("#provider-continue").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_browser_tests, skip_oidc_tests),
    ignore = "browser SSO test skipped: needs chromium + chromium-driver and npm ci --prefix tests/oidc (CI installs them)"
)]
async fn member_signs_in_through_the_provider_and_jit_membership_follows_the_claim() {
    let (app, provider) = spawn_pair(
        Backend::Sqlite,
        serde_json::json!({
            "ada@example.com": {},
            "bob@example.com": {"groups": ["acme-staff"]},
            "nobody@example.com": {},
        }),
        &[("KEYSMITH_OIDC_ORGANIZATIONS", "acme-staff=Acme")],
    )
    .await;
    keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    let browser = Browser::start().await;
    browser.goto(&app.url("/signin")).await;
    assert_eq!(
        browser.text("#sso-signin").await,
        "Sign in with Test Provider"
    );
    browser.screenshot("sso-signin-page").await;

    // An existing member: lands on the settings page, signed in.
    sign_in_through_provider(&browser, &app, "ada@example.com").await;
    browser.wait_for_path("/settings/api-tokens").await;
    browser.wait_for_text("h1", "API tokens").await;
    assert_eq!(browser.text(".topbar .user-email").await, "ada@example.com");
    browser.screenshot("sso-signed-in").await;
    browser.click(".topbar form.signout button").await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;

    // A newcomer the provider puts in acme-staff: a member on first sign-in.
    sign_in_through_provider(&browser, &app, "bob@example.com").await;
    browser.wait_for_path("/settings/api-tokens").await;
    assert_eq!(browser.text(".topbar .user-email").await, "bob@example.com");
    assert_eq!(browser.text(".topbar .org-name").await, "Acme");
    browser.click(".topbar form.signout button").await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;

    // Removed from the group: the next sign-in ends on a clear page.
    provider.set_accounts(serde_json::json!({"bob@example.com": {"groups": []}}));
    sign_in_through_provider(&browser, &app, "bob@example.com").await;
    browser.wait_for_text("h1", "Your access is disabled").await;
    browser.screenshot("sso-membership-removed").await;

    // The provider refuses: its answer is shown, with a way back.
    sign_in_through_provider(&browser, &app, "deny").await;
    browser
        .wait_for_text("h1", "The sign-in provider did not sign you in")
        .await;
    assert!(browser.text("main").await.contains("access_denied"));

    // Someone the provider knows but Keysmith does not.
    provider.set_accounts(serde_json::json!({"nobody@example.com": {}}));
    sign_in_through_provider(&browser, &app, "nobody@example.com").await;
    browser
        .wait_for_text("h1", "No Keysmith account for this address")
        .await;
    // Reloading that page sends the provider's answer again: it works once.
    browser.eval("location.reload(); return true;").await;
    browser
        .wait_for_text("h1", "This sign-in answer was already used")
        .await;
    assert!(
        browser.text("main").await.contains("sign-in page"),
        "a way to start again"
    );

    // An unverified address.
    provider.set_accounts(serde_json::json!({"ada@example.com": {"email_verified": false}}));
    sign_in_through_provider(&browser, &app, "ada@example.com").await;
    browser
        .wait_for_text("h1", "Your email address is not verified")
        .await;
    browser.close().await;
}
