//! The Content-Security-Policy (`script-src 'self'; style-src 'self'`, no
//! inline anything) lets every page load its stylesheet, htmx and app.js, and
//! nothing on the pages trips it.

use crate::browser::{Browser, problems};
use crate::harness::{Backend, TestApp};
use crate::store::bootstrap;

/// Checks the page in the browser: htmx running with the page's config,
/// the stylesheet applied, and a console free of errors and CSP refusals.
async fn assert_page_is_healthy(browser: &Browser, page: &str) {
    let htmx = browser
        .eval(
            "return window.htmx ? { version: htmx.version, \
             indicatorStyles: htmx.config.includeIndicatorStyles, \
             allowEval: htmx.config.allowEval } : null;",
        )
        .await;
    assert!(htmx.is_object(), "{page}: htmx did not load");
    assert!(
        htmx["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "{page}: {htmx}"
    );
    // The <meta name="htmx-config"> was read: htmx injects no inline
    // indicator <style> (the CSP would refuse it) and never evals.
    assert_eq!(htmx["indicatorStyles"], false, "{page}: {htmx}");
    assert_eq!(htmx["allowEval"], false, "{page}: {htmx}");

    let css_rules = browser
        .eval(
            "const s = [...document.styleSheets].find(s => s.href && s.href.endsWith('/static/app.css'));\
             return s ? s.cssRules.length : -1;",
        )
        .await;
    assert!(
        css_rules.as_i64().is_some_and(|n| n > 20),
        "{page}: app.css is not applied ({css_rules})"
    );
    let console = browser.console().await;
    assert!(
        problems(&console).is_empty(),
        "{page}: the console reports problems: {:#?}",
        problems(&console)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn pages_load_htmx_and_styles_without_csp_violations() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = Browser::start().await;

    let setup_url = app
        .setup_url
        .clone()
        .expect("a fresh database has a setup link");
    browser.goto(&setup_url).await;
    browser.wait_for_text("h1", "Welcome to Keysmith").await;
    assert_page_is_healthy(&browser, "setup").await;

    browser.goto(&app.url("/signin")).await;
    browser.wait_for_text("h1", "Sign in to Keysmith").await;
    assert_page_is_healthy(&browser, "signin").await;

    bootstrap(&app, "ada@example.com").await;
    browser.sign_in(&app, "ada@example.com").await;
    browser.wait_for_text("h1", "API tokens").await;
    assert_page_is_healthy(&browser, "api-tokens").await;

    browser.goto(&app.url("/dev/mail")).await;
    browser.wait_for_text("h1", "Development mailbox").await;
    assert_page_is_healthy(&browser, "dev-mail").await;

    // The probe itself works: an inline style is refused, and the console says so.
    browser
        .eval(
            "const s = document.createElement('style');\
             s.textContent = 'body { color: red }';\
             document.head.appendChild(s); return null;",
        )
        .await;
    let deadline = std::time::Instant::now() + crate::browser::WAIT;
    loop {
        let console = browser.console().await;
        if problems(&console)
            .iter()
            .any(|p| p.contains("Content Security Policy"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an inline style went unreported: {console:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    browser.close().await;
    app.shutdown().await;
}

/// axe-core goes in through WebDriver's `execute`, which runs as the
/// browser, not as the page: the page's CSP stays as strict as served (an
/// inline script added to the page still does not run), and the sweep
/// needs no exception for tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_browser_tests, skip_axe_tests),
    ignore = "accessibility test skipped: needs chromium, chromium-driver and npm ci --prefix tests/a11y, then touch build.rs (CI installs them)"
)]
async fn axe_core_is_injected_by_webdriver_while_the_csp_stays_strict() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    let browser = Browser::start().await;
    browser.sign_in(&app, "ada@example.com").await;
    browser.wait_for_text("h1", "API tokens").await;
    let csp = app
        .get("/signin")
        .await
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    crate::browser::axe::assert_accessible(&browser, "api-tokens (empty)").await;
    assert_eq!(
        browser.eval("return typeof window.axe.run;").await,
        "function",
        "axe-core was injected despite the CSP"
    );

    // The page itself still cannot run inline script.
    browser
        .eval(
            "const s = document.createElement('script');\
             s.textContent = 'window.inlineRan = true;';\
             document.body.appendChild(s); return null;",
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        browser.eval("return window.inlineRan === true;").await,
        false,
        "an inline script ran: the CSP was loosened"
    );
    let console = browser.console().await;
    assert!(
        problems(&console)
            .iter()
            .any(|p| p.contains("Content Security Policy")),
        "the refusal is reported: {console:#?}"
    );
    browser.close().await;
    app.shutdown().await;
}
