//! The page frame and stylesheet as a person meets them: phone widths, the
//! light and dark themes with readable contrast, keyboard use.

use fantoccini::key::Key;
use serde_json::Value;

use crate::browser::Browser;
use crate::harness::{Backend, TestApp};
use crate::store::{bootstrap, create_token};

/// Asserts that the page fits the viewport's width: nothing scrolls sideways.
/// (Boxes that scroll inside themselves, like `pre`, are allowed.) The
/// message names the elements that stick out, to find the culprit.
async fn assert_fits_width(browser: &Browser, page: &str) {
    let sizes = browser
        .eval(
            "const d = document.documentElement;\
             const wide = [...document.querySelectorAll('body *')]\
               .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)\
               .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));\
             return { scroll: d.scrollWidth, client: d.clientWidth, wide };",
        )
        .await;
    let (scroll, client) = (sizes["scroll"].as_i64(), sizes["client"].as_i64());
    assert!(
        scroll.is_some() && scroll <= client,
        "{page} is wider than the screen: {sizes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn pages_fit_a_360px_phone_without_sideways_scrolling() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = bootstrap(&app, "ada.lovelace-with-a-long-address@example.com").await;
    for label in [
        "CI deploy",
        "Claude Code on the build machine with a long label",
        "read-only",
    ] {
        create_token(&app, ada.user.id, ada.organization.id, label)
            .await
            .unwrap();
    }
    let browser = Browser::start().await;
    browser.emulate_phone(360, 780).await;

    browser.goto(&app.url("/signin")).await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    let width = browser
        .eval("return document.documentElement.clientWidth;")
        .await;
    assert_eq!(width, 360, "the page is laid out 360 CSS pixels wide");
    assert_fits_width(&browser, "signin").await;
    browser.screenshot("phone-signin").await;

    browser
        .sign_in(&app, "ada.lovelace-with-a-long-address@example.com")
        .await;
    browser.wait_for_text("h1", "API tokens").await;
    assert_fits_width(&browser, "api-tokens").await;
    browser.screenshot("phone-api-tokens").await;

    browser.goto(&app.url("/dev/mail")).await;
    browser.wait_for_text("h1", "Development mailbox").await;
    assert_fits_width(&browser, "dev-mail").await;
    browser.screenshot("phone-dev-mail").await;

    browser.close().await;
    app.shutdown().await;
}

/// For each selector present on the page: the luminance contrast ratio
/// (WCAG 2) between its text colour and the first opaque background behind it.
const CONTRASTS: &str = r#"
const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
const lin = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
const background = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
  }
  return rgb(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
};
const out = {};
for (const sel of arguments[0]) {
  const el = document.querySelector(sel);
  if (!el) continue;
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
  out[sel] = Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 100) / 100;
}
out.page = lum(background(document.body));
return out;
"#;

async fn contrasts(browser: &Browser, selectors: &[&str]) -> Value {
    browser
        .client
        .execute(CONTRASTS, vec![serde_json::json!(selectors)])
        .await
        .expect("measure contrast")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn light_and_dark_themes_keep_text_readable() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start().await;
    let selectors = [
        "h1",
        "label",
        ".muted",
        ".field-error",
        ".btn-primary",
        ".alert-info",
        ".alert-error",
        ".footer a",
        "input#email",
    ];

    for dark in [false, true] {
        let scheme = if dark { "dark" } else { "light" };
        browser.prefer_dark(dark).await;

        // A form with an error on it, then the "check your inbox" page.
        browser.goto(&app.url("/signin")).await;
        browser.wait_for("#email").await;
        browser.fill("#email", "not-an-address").await;
        browser
            .click("main form[action='/signin'] button[type=submit]")
            .await;
        browser.wait_for("#email-error").await;
        let on_error = contrasts(&browser, &selectors).await;
        browser.screenshot(&format!("signin-error-{scheme}")).await;

        browser.fill("#email", "ada@example.com").await;
        browser
            .click("main form[action='/signin'] button[type=submit]")
            .await;
        browser.wait_for_text("h1", "Check your inbox").await;
        let on_sent = contrasts(&browser, &selectors).await;
        browser.screenshot(&format!("signin-sent-{scheme}")).await;

        for (page, measured) in [("signin error", &on_error), ("signin sent", &on_sent)] {
            let page_luminance = measured["page"].as_f64().unwrap();
            if dark {
                assert!(
                    page_luminance < 0.05,
                    "{page}: a dark page in dark mode: {measured}"
                );
            } else {
                assert!(
                    page_luminance > 0.8,
                    "{page}: a light page in light mode: {measured}"
                );
            }
            for sel in selectors {
                if let Some(ratio) = measured[sel].as_f64() {
                    assert!(
                        ratio >= 4.5,
                        "{page} ({scheme}): `{sel}` has contrast {ratio}, below 4.5:1: {measured}"
                    );
                }
            }
        }
        assert!(on_error[".field-error"].is_number(), "{on_error}");
        assert!(on_sent[".alert-info"].is_number(), "{on_sent}");
    }

    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn skip_link_appears_on_first_tab_and_moves_focus_to_main() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start().await;
    // A page without an autofocused field, so the first Tab starts at the top.
    browser.goto(&app.url("/signin/link/not-a-real-link")).await;
    browser.wait_for_text("h1", "This link is not valid").await;

    let where_is = "const r = document.querySelector('.skip-link').getBoundingClientRect();\
                    return { top: r.top, bottom: r.bottom, width: r.width, height: r.height };";
    let hidden = browser.eval(where_is).await;
    assert!(
        hidden["bottom"].as_f64().unwrap() <= 0.0 || hidden["width"].as_f64().unwrap() <= 1.0,
        "the skip link is out of sight until focused: {hidden}"
    );

    browser.press(Key::Tab).await;
    let focused = browser
        .eval(
            "const e = document.activeElement; const s = getComputedStyle(e);\
             return { skip: e.classList.contains('skip-link'), outline: s.outlineStyle, \
                      width: parseFloat(s.outlineWidth) };",
        )
        .await;
    assert_eq!(
        focused["skip"], true,
        "the first Tab lands on the skip link: {focused}"
    );
    assert!(
        focused["outline"] != "none" && focused["width"].as_f64().unwrap() >= 2.0,
        "a focused control shows a focus ring: {focused}"
    );
    let shown = browser.eval(where_is).await;
    assert!(
        shown["top"].as_f64().unwrap() >= 0.0 && shown["width"].as_f64().unwrap() > 20.0,
        "the focused skip link is on screen: {shown}"
    );
    browser.screenshot("skip-link").await;

    browser.press(Key::Enter).await;
    let active = browser.eval("return document.activeElement.id;").await;
    assert_eq!(
        active, "main",
        "following the skip link focuses the main content"
    );

    browser.close().await;
    app.shutdown().await;
}
