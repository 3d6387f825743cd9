//! The shown-once dialog in a real browser: Escape and the backdrop do not
//! throw an uncopied token away without asking, copying is announced in a
//! live region, and the MCP card's tabs and command boxes work from the
//! keyboard.

use std::time::{Duration, Instant};

use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::key::Key;
use serde_json::{Value, json};

use crate::browser::{Browser, WAIT, problems};
use crate::harness::{Backend, TestApp};

const EMAIL: &str = "ada@example.com";
const MCP_URL: &str = "https://api.acme.test/mcp?team=platform&region=eu";

/// Polls a script until it returns something truthy; returns that value.
pub async fn wait_until(browser: &Browser, script: &str, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = browser.eval(script).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "waited {WAIT:?} for: {what} (last {v})\n{}",
                browser.describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens the tokens page and waits until its script has run.
pub async fn open_tokens_page(app: &TestApp, browser: &Browser) {
    browser.goto(&app.url("/settings/api-tokens")).await;
    browser.wait_for_text("h1", "API tokens").await;
    wait_until(
        browser,
        "return !!window.htmx && document.readyState === 'complete';",
        "htmx is loaded",
    )
    .await;
}

/// Creates a token labelled `label` through the New token dialog and waits
/// for the shown-once step; returns the plaintext.
pub async fn create_in_dialog(browser: &Browser, label: &str) -> String {
    browser.click("#new-token").await;
    browser.wait_for("#token-dialog form.create-form").await;
    browser.fill("#token-label", label).await;
    browser
        .click("#token-dialog form.create-form button[type=submit]")
        .await;
    browser.wait_for("#token-dialog #token-plaintext").await;
    wait_until(
        browser,
        "return document.activeElement && document.activeElement.id === 'token-plaintext';",
        "the token field has the focus",
    )
    .await;
    browser.value("#token-plaintext").await
}

async fn dialog_open(browser: &Browser) -> bool {
    browser
        .eval("return document.getElementById('token-dialog').open;")
        .await
        == true
}

async fn active_id(browser: &Browser) -> String {
    browser
        .eval("return document.activeElement ? document.activeElement.id || document.activeElement.className : '';")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn confirm_shown(browser: &Browser) -> bool {
    browser
        .eval("const c = document.getElementById('discard-confirm'); return !!c && !c.hidden;")
        .await
        == true
}

/// A real click at viewport point (x, y): on a modal dialog's backdrop
/// when outside the dialog's box.
async fn click_at(browser: &Browser, x: f64, y: f64) {
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x,
            y,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser
        .client
        .perform_actions(mouse)
        .await
        .expect("click the backdrop");
}

async fn press_ctrl_c(browser: &Browser) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down {
            value: Key::Control.into(),
        })
        .then(KeyAction::Down { value: 'c' })
        .then(KeyAction::Up { value: 'c' })
        .then(KeyAction::Up {
            value: Key::Control.into(),
        });
    browser.client.perform_actions(keys).await.expect("Ctrl+C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn escape_and_the_backdrop_ask_before_an_uncopied_token_is_lost() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_MCP_URL", MCP_URL)]).await;
    app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    browser.allow_clipboard(&app.base_url).await;
    open_tokens_page(&app, &browser).await;
    let plaintext = create_in_dialog(&browser, "deploys").await;

    // Escape before copying: the dialog stays, the token with it, and a
    // question takes the focus.
    assert!(!confirm_shown(&browser).await, "no question before Escape");
    browser.press(Key::Escape).await;
    wait_until(
        &browser,
        "const c = document.getElementById('discard-confirm'); return !!c && !c.hidden;",
        "the confirmation appears",
    )
    .await;
    assert!(
        dialog_open(&browser).await,
        "Escape did not close the dialog"
    );
    assert_eq!(browser.value("#token-plaintext").await, plaintext);
    assert_eq!(
        browser
            .eval("return document.activeElement.matches('[data-keep-token]');")
            .await,
        true
    );
    assert_eq!(
        browser
            .find("#discard-confirm")
            .await
            .attr("role")
            .await
            .unwrap()
            .as_deref(),
        Some("alert"),
        "the question is announced"
    );
    browser.screenshot("shown-once-confirm-discard").await;

    // Escape again means "keep it": the question goes, the focus is on Copy.
    browser.press(Key::Escape).await;
    wait_until(
        &browser,
        "return document.getElementById('discard-confirm').hidden;",
        "the confirmation hides",
    )
    .await;
    assert!(dialog_open(&browser).await);
    assert_eq!(
        browser
            .eval("return document.activeElement.matches('.plaintext-row .copy-btn');")
            .await,
        true
    );

    // The backdrop asks too.
    click_at(&browser, 3.0, 3.0).await;
    wait_until(
        &browser,
        "return !document.getElementById('discard-confirm').hidden;",
        "the backdrop asks",
    )
    .await;
    assert!(dialog_open(&browser).await, "the backdrop did not close it");
    browser.click("[data-keep-token]").await;
    assert!(!confirm_shown(&browser).await);

    // Copy: "Copied" is announced in the live region (or, where the
    // clipboard is refused, the selected token is copied with Ctrl+C).
    assert_eq!(
        browser
            .find("#copy-status")
            .await
            .attr("aria-live")
            .await
            .unwrap()
            .as_deref(),
        Some("polite")
    );
    browser.click(".plaintext-row .copy-btn").await;
    let label = wait_until(
        &browser,
        "const t = document.querySelector('.plaintext-row .copy-btn').textContent;\
         return t === 'Copied' || t === 'Press Ctrl+C' ? t : null;",
        "the Copy button reports",
    )
    .await;
    if label == "Press Ctrl+C" {
        press_ctrl_c(&browser).await;
    }
    wait_until(
        &browser,
        "return document.getElementById('copy-status').textContent === 'Copied';",
        "the live region says Copied",
    )
    .await;

    // After copying, Escape closes, and the token leaves the page.
    browser.press(Key::Escape).await;
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').open;",
        "Escape closes after copying",
    )
    .await;
    let html = browser
        .eval("return document.documentElement.outerHTML;")
        .await;
    assert!(!html.as_str().unwrap().contains(&plaintext));

    // "Close without copying" is the deliberate way out.
    let second = create_in_dialog(&browser, "second").await;
    browser.press(Key::Escape).await;
    wait_until(
        &browser,
        "return !document.getElementById('discard-confirm').hidden;",
        "the confirmation appears again",
    )
    .await;
    browser.click("[data-discard-token]").await;
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').open;",
        "Close without copying closes",
    )
    .await;
    let html = browser
        .eval("return document.documentElement.outerHTML;")
        .await;
    assert!(!html.as_str().unwrap().contains(&second));

    let console = problems(&browser.console().await);
    assert!(console.is_empty(), "{console:#?}");
    browser.close().await;
    app.shutdown().await;
}

/// Checks the MCP card's tabs: `tab` alone selected, the one tab stop and
/// its panel the one shown; every tab controls its own panel; with
/// `focused`, the focus is on `tab`.
async fn check_tabs(browser: &Browser, tab: &str, focused: bool) {
    let got = browser
        .eval(
            "const tabs = [...document.querySelectorAll('#token-dialog [role=tab]')];\
             return {\
               selected: tabs.filter(t => t.getAttribute('aria-selected') === 'true').map(t => t.id),\
               stops: tabs.filter(t => t.tabIndex === 0).map(t => t.id),\
               panels: [...document.querySelectorAll('#token-dialog [role=tabpanel]')].filter(p => !p.hidden).map(p => p.id),\
               controls: tabs.map(t => [t.id, t.getAttribute('aria-controls')]),\
               focused: document.activeElement.id };",
        )
        .await;
    assert_eq!(got["selected"], json!([format!("tab-{tab}")]), "{got}");
    assert_eq!(
        got["stops"],
        json!([format!("tab-{tab}")]),
        "one tab stop: {got}"
    );
    assert_eq!(got["panels"], json!([format!("panel-{tab}")]), "{got}");
    for pair in got["controls"].as_array().unwrap() {
        let id = pair[0].as_str().unwrap();
        assert_eq!(
            pair[1].as_str().unwrap(),
            id.replace("tab-", "panel-"),
            "aria-controls"
        );
    }
    if focused {
        assert_eq!(got["focused"], format!("tab-{tab}"), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn mcp_tabs_follow_the_arrow_keys_and_commands_scroll_by_keyboard() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_MCP_URL", MCP_URL)]).await;
    app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    open_tokens_page(&app, &browser).await;
    create_in_dialog(&browser, "agent").await;

    check_tabs(&browser, "claude", false).await;

    // Into the tab list with the focus, then the arrows, Home and End.
    browser
        .eval("document.getElementById('tab-claude').focus();")
        .await;
    let moves = [
        (Key::Right, "desktop"),
        (Key::Right, "codex"),
        (Key::Left, "desktop"),
        (Key::Left, "claude"),
        (Key::Left, "json"),
        (Key::Right, "claude"),
        (Key::End, "json"),
        (Key::Home, "claude"),
    ];
    for (key, tab) in moves {
        browser.press(key).await;
        check_tabs(&browser, tab, true).await;
    }

    // Tab leaves the tab list for the visible command box, a labelled
    // region that the arrow keys scroll.
    browser.press(Key::Tab).await;
    let focused = browser
        .eval(
            "const e = document.activeElement;\
             return { pre: e.matches('#panel-claude pre.command'), role: e.getAttribute('role'),\
                      label: e.getAttribute('aria-label'), wide: e.scrollWidth > e.clientWidth };",
        )
        .await;
    assert_eq!(
        focused["pre"],
        true,
        "{focused}\n{}",
        active_id(&browser).await
    );
    assert_eq!(focused["role"], "region");
    assert_eq!(focused["label"], "Claude Code command");
    assert_eq!(focused["wide"], true, "the command is wider than its box");
    for _ in 0..5 {
        browser.press(Key::Right).await;
    }
    wait_until(
        &browser,
        "return document.activeElement.scrollLeft > 0;",
        "the arrow keys scroll the command box",
    )
    .await;
    browser.screenshot("shown-once-mcp-tabs").await;

    // On a phone the card still fits: no sideways scrolling of the page.
    browser.emulate_phone(390, 844).await;
    browser.press(Key::Home).await;
    browser
        .eval("document.getElementById('tab-desktop').click();")
        .await;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert_eq!(overflow, 0, "the page does not scroll sideways at 390px");
    browser.screenshot("shown-once-mcp-desktop-390").await;

    let console = problems(&browser.console().await);
    assert!(console.is_empty(), "{console:#?}");
    browser.close().await;
    app.shutdown().await;
}
