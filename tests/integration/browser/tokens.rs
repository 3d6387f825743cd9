//! The API tokens page clicked through in a real browser: the create dialog
//! and its "shown once" step, inline rename, the enable switch, revoking
//! through the confirm dialog, and screenshots of the page and the dialog.

use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::json;

use crate::browser::shown_once::wait_until;
use crate::browser::{Browser, problems};
use crate::harness::{Backend, TestApp};

const EMAIL: &str = "ada@example.com";
const MCP_URL: &str = "https://api.acme.test/mcp";

/// One token as stored.
#[derive(Debug, Clone)]
struct StoredToken {
    id: i64,
    label: String,
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
    disabled: bool,
    revoked: bool,
}

type TokenRow = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Every token in the database, oldest first.
async fn stored_tokens(app: &TestApp) -> Vec<StoredToken> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, label, scopes, created_at, expires_at, disabled_at, revoked_at \
         FROM api_tokens ORDER BY id",
    )
    .fetch_all(app.db().pool())
    .await
    .expect("read api_tokens");
    rows.into_iter()
        .map(
            |(id, label, scopes, created_at, expires_at, disabled_at, revoked_at)| StoredToken {
                id,
                label,
                scopes,
                created_at,
                expires_at,
                disabled: disabled_at.is_some(),
                revoked: revoked_at.is_some(),
            },
        )
        .collect()
}

async fn stored_token(app: &TestApp, id: i64) -> StoredToken {
    stored_tokens(app)
        .await
        .into_iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("token {id} is in the database"))
}

/// A superuser of a fresh organization, signed in twice: the harness's HTTP
/// client (for `create_key`) and the browser (through the emailed link).
async fn signed_in(app: &TestApp) -> Browser {
    app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(app, EMAIL).await;
    browser
}

/// Opens the tokens page and waits until its script has run.
async fn open_tokens_page(app: &TestApp, browser: &Browser) {
    browser.goto(&app.url("/settings/api-tokens")).await;
    browser.wait_for_text("h1", "API tokens").await;
    wait_until(
        browser,
        "return !!window.htmx && document.readyState === 'complete';",
        "htmx is loaded",
    )
    .await;
}

/// Fails on script errors and CSP refusals in the console. A form answered
/// with 422 (a validation message) is logged by the browser as a failed
/// load; that one is expected.
async fn assert_console_clean(browser: &Browser) {
    let console = browser.console().await;
    let problems: Vec<String> = problems(&console)
        .into_iter()
        .filter(|p| !p.contains("status of 422 (Unprocessable Entity)"))
        .collect();
    assert!(
        problems.is_empty(),
        "the console reports problems: {problems:#?}"
    );
}

/// `text` with runs of white space (line breaks included) as one space.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits until nothing matches `css`.
async fn wait_gone(browser: &Browser, css: &str, what: &str) {
    let script = format!("return !document.querySelector({});", json!(css));
    wait_until(browser, &script, what).await;
}

async fn dialog_open(browser: &Browser) -> bool {
    browser
        .eval("return document.getElementById('token-dialog').open;")
        .await
        == true
}

async fn is_present(browser: &Browser, css: &str) -> bool {
    browser.client.find(Locator::Css(css)).await.is_ok()
}

async fn is_displayed(browser: &Browser, css: &str) -> bool {
    browser
        .find(css)
        .await
        .is_displayed()
        .await
        .expect("is displayed")
}

/// The trimmed text of the label cell of token `id`.
async fn label_text(browser: &Browser, id: i64) -> String {
    browser
        .text(&format!("#token-{id} .token-label"))
        .await
        .trim()
        .to_string()
}

/// Waits for the label cell of `id` to show `label` as the rename link again.
async fn wait_for_label(browser: &Browser, id: i64, label: &str) {
    let script = format!(
        "const a = document.querySelector('#token-{id} .token-label > a');\
         return !!a && a.textContent.trim() === {};",
        json!(label)
    );
    wait_until(browser, &script, &format!("token {id} labelled {label:?}")).await;
}

/// The MCP card's panels that are visible, in order.
async fn visible_panels(browser: &Browser) -> Vec<&'static str> {
    let mut shown = Vec::new();
    for p in ["claude", "codex", "vscode", "cursor", "json"] {
        if is_displayed(browser, &format!("#panel-{p}")).await {
            shown.push(p);
        }
    }
    shown
}

/// Clicks the label of token `id` and waits for the focused rename input.
async fn start_rename(browser: &Browser, id: i64) -> String {
    browser
        .click(&format!("#token-{id} .token-label > a"))
        .await;
    let input = format!("#rename-{id}");
    browser.wait_for(&input).await;
    wait_until(
        browser,
        &format!("return document.activeElement && document.activeElement.id === 'rename-{id}';"),
        "the rename input has the focus",
    )
    .await;
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn create_through_the_dialog_shows_the_token_once() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_MCP_URL", MCP_URL)]).await;
    let browser = signed_in(&app).await;
    // Lets the test read back what the Copy button put on the clipboard.
    browser.allow_clipboard(&app.base_url).await;
    open_tokens_page(&app, &browser).await;
    browser.wait_for_text("h2", "No API tokens yet").await;
    assert!(!dialog_open(&browser).await, "the dialog starts closed");

    // "New token" opens the dialog with the form, the label focused.
    browser.click("#new-token").await;
    browser.wait_for("#token-dialog form.create-form").await;
    wait_until(
        &browser,
        "return document.getElementById('token-dialog').open;",
        "the dialog opens",
    )
    .await;
    assert!(is_displayed(&browser, "#token-label").await);
    wait_until(
        &browser,
        "return document.activeElement && document.activeElement.id === 'token-label';",
        "the label field has the focus",
    )
    .await;
    assert!(
        !is_present(&browser, "#label-error").await,
        "no error before submitting"
    );

    // An empty label: the message shows in the dialog, nothing is created.
    browser
        .click("#token-dialog form.create-form button[type=submit]")
        .await;
    let error = browser.wait_for("#token-dialog #label-error").await;
    assert_eq!(error.text().await.unwrap(), "Enter a label.");
    assert!(
        error.is_displayed().await.unwrap(),
        "the message is visible"
    );
    assert_eq!(
        browser
            .find("#token-label")
            .await
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert!(dialog_open(&browser).await, "the dialog stays open");
    assert!(stored_tokens(&app).await.is_empty(), "nothing was created");
    assert!(
        is_present(&browser, "#token-list .empty-state").await,
        "the list is still empty"
    );

    // Checking `write` checks and locks `read`, with its "included" note.
    let read = "#token-dialog input[name=scopes][value=read]";
    let read_note = "#token-dialog label.check:has(input[value=read]) .implied-note";
    let write = "#token-dialog input[name=scopes][value=write]";
    assert!(
        !is_displayed(&browser, read_note).await,
        "the note is hidden until a scope includes read"
    );
    assert!(browser.find(read).await.is_enabled().await.unwrap());
    browser.fill("#token-label", "CI deploys").await;
    browser.click(write).await;
    assert!(browser.find(write).await.is_selected().await.unwrap());
    wait_until(
        &browser,
        &format!(
            "const r = document.querySelector({});\
             return r.checked && r.disabled;",
            json!(read)
        ),
        "read is checked and disabled",
    )
    .await;
    assert!(
        is_displayed(&browser, read_note).await,
        "read says it is included"
    );
    assert_eq!(browser.text(read_note).await, "included");

    // The custom date field shows only for "Custom date"; choose 90 days.
    let expiry = browser.find("#token-expiry").await;
    assert!(!is_displayed(&browser, "#token-expiry-date").await);
    expiry.select_by_value("custom").await.unwrap();
    wait_until(
        &browser,
        "return !document.getElementById('token-expiry-date').hidden;",
        "the custom date field appears",
    )
    .await;
    assert!(is_displayed(&browser, "#token-expiry-date").await);
    expiry.select_by_value("90").await.unwrap();
    wait_until(
        &browser,
        "return document.getElementById('token-expiry-date').hidden;",
        "the custom date field hides again",
    )
    .await;
    assert_eq!(browser.value("#token-expiry").await, "90");

    // Submit: the dialog swaps to the plaintext, shown once.
    browser
        .click("#token-dialog form.create-form button[type=submit]")
        .await;
    browser.wait_for("#token-dialog #token-plaintext").await;
    assert!(dialog_open(&browser).await, "the dialog stays open");
    let plaintext = browser.value("#token-plaintext").await;
    assert!(plaintext.starts_with("ks_"), "{plaintext}");
    assert!(is_displayed(&browser, "#token-plaintext").await);
    let dialog_text = browser.text("#token-dialog").await;
    assert!(
        dialog_text.contains("You will not see it again"),
        "{dialog_text}"
    );
    assert!(
        dialog_text.contains("Your new token: CI deploys"),
        "{dialog_text}"
    );

    let stored = stored_tokens(&app).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let token = stored[0].clone();
    assert_eq!(token.label, "CI deploys");
    assert!(token.scopes.split(' ').any(|s| s == "write"), "{token:?}");
    let lifetime = token.expires_at.expect("an expiry") - token.created_at;
    assert!(
        (lifetime - 90 * 86_400).abs() <= 5,
        "expires in 90 days: {lifetime} s"
    );
    assert_eq!(app.whoami_status(&plaintext).await, 200, "the token works");

    // The MCP card: Claude Code first, its command holding the token.
    assert_eq!(visible_panels(&browser).await, ["claude"]);
    let claude = browser.text("#cmd-claude").await;
    assert!(
        claude.starts_with("claude mcp add --transport http keysmith https://api.acme.test/mcp")
            && claude.contains(&format!("Authorization: Bearer {plaintext}")),
        "{claude}"
    );
    let shot = browser.screenshot("tokens-created-dialog").await;
    assert!(shot.exists());

    // Copy: "Copied" (clipboard API) or the fallback with the text selected.
    let copy = "#token-dialog .plaintext-row .copy-btn";
    assert_eq!(browser.text(copy).await, "Copy");
    let state = browser.press_copy(copy).await;
    if state == "Copied" {
        let clipboard = browser
            .eval(
                "return navigator.clipboard.readText()\
                   .then(t => ({ text: t }), e => ({ refused: String(e) }));",
            )
            .await;
        assert_eq!(
            clipboard["text"], plaintext,
            "the clipboard holds the token: {clipboard}"
        );
    } else {
        let selected = browser
            .eval(
                "const i = document.getElementById('token-plaintext');\
                 return document.activeElement === i && i.selectionStart === 0\
                   && i.selectionEnd === i.value.length;",
            )
            .await;
        assert_eq!(selected, true, "the fallback selects the whole token");
    }
    // The button goes back to "Copy" for the next press.
    wait_until(
        &browser,
        &format!(
            "return document.querySelector({}).textContent === 'Copy';",
            json!(copy)
        ),
        "the Copy button resets",
    )
    .await;

    // Tabs: one panel at a time, following the selected tab.
    for p in ["vscode", "json", "codex", "cursor", "claude"] {
        browser.click(&format!("#tab-{p}")).await;
        assert_eq!(
            browser
                .find(&format!("#tab-{p}"))
                .await
                .attr("aria-selected")
                .await
                .unwrap()
                .as_deref(),
            Some("true")
        );
        assert_eq!(visible_panels(&browser).await, [p], "after choosing {p}");
    }

    // The list behind the dialog already has the new row.
    browser
        .wait_for(&format!("#enabled-tokens #token-{}", token.id))
        .await;

    // "I have copied it": the dialog closes and takes the plaintext with it.
    browser.click("#token-dialog [data-acknowledge]").await;
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').open;",
        "the dialog closes",
    )
    .await;
    wait_until(
        &browser,
        "return document.getElementById('dialog-body').innerHTML === '';",
        "the dialog's content leaves the page",
    )
    .await;
    let html = browser
        .eval("return document.documentElement.outerHTML;")
        .await;
    assert!(
        !html.as_str().unwrap().contains(&plaintext),
        "the plaintext left the page"
    );
    let row = format!("#enabled-tokens #token-{}", token.id);
    assert!(is_displayed(&browser, &row).await, "the new row is visible");
    assert_eq!(label_text(&browser, token.id).await, "CI deploys");
    assert!(
        !is_present(&browser, "#token-list .empty-state").await,
        "the empty state is gone"
    );

    // Reloading shows the row and never the plaintext.
    browser.client.refresh().await.expect("reload");
    browser.wait_for(&row).await;
    let source = browser.client.source().await.expect("page source");
    assert!(
        !source.contains(&plaintext),
        "the reloaded page holds the plaintext"
    );
    let secret_tail = &plaintext[plaintext.len() - 16..];
    assert!(
        !source.contains(secret_tail),
        "the reloaded page holds part of the secret"
    );
    assert!(!dialog_open(&browser).await);

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn rename_inline_saves_with_enter_and_cancels_with_escape() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    let (id, _) = app.create_key("CI deploys").await;
    let (other, _) = app.create_key("Nightly backup").await;
    open_tokens_page(&app, &browser).await;
    assert_eq!(label_text(&browser, id).await, "CI deploys");

    // Click the label: an input with the label, focused. Enter saves.
    let input = start_rename(&browser, id).await;
    assert_eq!(browser.value(&input).await, "CI deploys");
    browser.fill(&input, "CI deploys (prod)").await;
    browser.press(Key::Enter).await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;
    assert!(!is_present(&browser, &input).await, "the input is gone");
    assert_eq!(stored_token(&app, id).await.label, "CI deploys (prod)");
    // Focus is back on the label, and the live region says what happened.
    wait_until(
        &browser,
        &format!("return document.activeElement && document.activeElement.id === 'label-{id}';"),
        "focus returns to the renamed label",
    )
    .await;
    assert_eq!(
        browser.text("#flash [role=status]").await,
        "Renamed to “CI deploys (prod)”."
    );
    assert_eq!(
        browser
            .find("#flash")
            .await
            .attr("aria-live")
            .await
            .unwrap()
            .as_deref(),
        Some("polite")
    );

    // Visible Save and Cancel (for touch): Cancel puts the label back.
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "Not this").await;
    browser
        .click(&format!("#token-{id} .rename-form [data-rename-cancel]"))
        .await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;
    wait_until(
        &browser,
        &format!("return document.activeElement && document.activeElement.id === 'label-{id}';"),
        "focus returns to the label after Cancel",
    )
    .await;
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "CI deploys (prod) v2").await;
    browser
        .click(&format!("#token-{id} .rename-form button[type=submit]"))
        .await;
    wait_for_label(&browser, id, "CI deploys (prod) v2").await;
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "CI deploys (prod)").await;
    browser.press(Key::Enter).await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;

    // Escape cancels: the label comes back unchanged, nothing is saved.
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "Something else").await;
    browser.press(Key::Escape).await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;
    assert!(!is_present(&browser, &input).await, "the input is gone");
    assert!(!dialog_open(&browser).await);
    assert_eq!(stored_token(&app, id).await.label, "CI deploys (prod)");

    // A duplicate label: the message shows in place, the entry stays.
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "Nightly backup").await;
    browser.press(Key::Enter).await;
    let error = browser.wait_for(&format!("#rename-error-{id}")).await;
    assert_eq!(
        error.text().await.unwrap(),
        "You already have a token named “Nightly backup”."
    );
    assert!(error.is_displayed().await.unwrap());
    assert!(
        is_present(
            &browser,
            &format!("#token-{id} .token-label #rename-error-{id}")
        )
        .await,
        "the message is in the row's label cell"
    );
    assert_eq!(browser.value(&input).await, "Nightly backup");
    assert_eq!(
        browser
            .find(&input)
            .await
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert_eq!(stored_token(&app, id).await.label, "CI deploys (prod)");
    assert_eq!(stored_token(&app, other).await.label, "Nightly backup");

    // Escape after the error gives the saved label back.
    browser.find(&input).await.click().await.unwrap();
    browser.press(Key::Escape).await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;
    assert_eq!(label_text(&browser, other).await, "Nightly backup");

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn the_switch_disables_and_enables_without_a_reload() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    let (id, plaintext) = app.create_key("CI deploys").await;
    let (_, other_plaintext) = app.create_key("Nightly backup").await;
    open_tokens_page(&app, &browser).await;
    browser
        .wait_for(&format!("#enabled-tokens #token-{id}"))
        .await;
    assert!(!is_present(&browser, "#disabled-tokens").await);
    // Survives only as long as the page is not reloaded.
    browser
        .eval("window.__noReload = 'kept'; return null;")
        .await;
    let switch = format!("#token-{id} button.switch");
    assert_eq!(
        browser
            .find(&switch)
            .await
            .attr("aria-checked")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );

    // Off: the row moves to "Disabled and expired"; the token stops working.
    browser.click(&switch).await;
    browser
        .wait_for(&format!("#disabled-tokens #token-{id}"))
        .await;
    assert!(!is_present(&browser, &format!("#enabled-tokens #token-{id}")).await);
    assert_eq!(
        words(&browser.text("#disabled-heading").await),
        "Disabled and expired 1"
    );
    assert_eq!(
        browser.text(&format!("#token-{id} .badge")).await,
        "Disabled"
    );
    assert_eq!(
        browser
            .find(&switch)
            .await
            .attr("aria-checked")
            .await
            .unwrap()
            .as_deref(),
        Some("false")
    );
    assert_eq!(
        browser.eval("return window.__noReload;").await,
        "kept",
        "the page was not reloaded"
    );
    // The switch shows its state, not the action; focus stays on it; the
    // live region says what the no-JS path says.
    assert_eq!(
        browser.text(&format!("#token-{id} [role=switch]")).await,
        "Disabled"
    );
    wait_until(
        &browser,
        &format!("return document.activeElement && document.activeElement.matches('#token-{id} [role=switch]');"),
        "focus stays on the switch after the swap",
    )
    .await;
    assert_eq!(
        browser.text("#flash [role=status]").await,
        "“CI deploys” is disabled."
    );
    assert_eq!(browser.path().await, "/settings/api-tokens");
    assert!(stored_token(&app, id).await.disabled);
    assert_eq!(app.whoami_status(&plaintext).await, 401);
    assert_eq!(app.whoami_status(&other_plaintext).await, 200);

    // On again: back in Enabled, working.
    browser.click(&switch).await;
    browser
        .wait_for(&format!("#enabled-tokens #token-{id}"))
        .await;
    wait_gone(&browser, "#disabled-tokens", "the disabled section empties").await;
    assert_eq!(
        browser.text(&format!("#token-{id} .badge")).await,
        "Enabled"
    );
    assert_eq!(words(&browser.text("#enabled-heading").await), "Enabled 2");
    assert_eq!(browser.eval("return window.__noReload;").await, "kept");
    assert!(!stored_token(&app, id).await.disabled);
    assert_eq!(app.whoami_status(&plaintext).await, 200);

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn revoke_asks_first_then_removes_the_row_for_good() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    let (id, plaintext) = app.create_key("Old laptop").await;
    let (keep, keep_plaintext) = app.create_key("Keep me").await;
    open_tokens_page(&app, &browser).await;
    let row = format!("#token-{id}");
    let revoke = format!("#token-{id} a.btn-danger");
    assert_eq!(browser.text(&revoke).await, "Revoke");

    // The confirm dialog names the token; Cancel closes it, nothing changes.
    browser.click(&revoke).await;
    browser.wait_for("#token-dialog #dialog-title").await;
    wait_until(
        &browser,
        "return document.getElementById('token-dialog').open;",
        "the confirm dialog opens",
    )
    .await;
    assert_eq!(
        browser.text("#token-dialog #dialog-title").await,
        "Revoke “Old laptop”?"
    );
    let dialog_text = browser.text("#token-dialog").await;
    assert!(dialog_text.contains("cannot be undone"), "{dialog_text}");
    browser.click("#token-dialog [data-close-dialog]").await;
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').open;",
        "Cancel closes the dialog",
    )
    .await;
    wait_until(
        &browser,
        "return document.getElementById('dialog-body').innerHTML === '';",
        "the dialog's content leaves the page",
    )
    .await;
    assert!(is_displayed(&browser, &row).await, "the row stays");
    assert!(!stored_token(&app, id).await.revoked);
    assert_eq!(app.whoami_status(&plaintext).await, 200);

    // Again, and confirm: the row goes, the token stops working at once.
    browser.click(&revoke).await;
    browser.wait_for("#token-dialog button.btn-danger").await;
    wait_until(
        &browser,
        "return document.getElementById('token-dialog').open;",
        "the confirm dialog opens again",
    )
    .await;
    browser.click("#token-dialog button.btn-danger").await;
    wait_gone(&browser, &row, "the revoked row leaves the list").await;
    wait_until(
        &browser,
        "return !document.getElementById('token-dialog').open;",
        "confirming closes the dialog",
    )
    .await;
    assert!(is_displayed(&browser, &format!("#token-{keep}")).await);
    assert!(stored_token(&app, id).await.revoked);
    assert_eq!(app.whoami_status(&plaintext).await, 401);
    assert_eq!(app.whoami_status(&keep_plaintext).await, 200);

    // "Show revoked tokens" lists it, with nothing to act on.
    browser
        .wait_for_text("a", "Show revoked tokens")
        .await
        .click()
        .await
        .expect("click Show revoked tokens");
    browser
        .wait_for_path("/settings/api-tokens?revoked=1")
        .await;
    let revoked_row = format!("#revoked-tokens #token-{id}");
    browser.wait_for(&revoked_row).await;
    assert!(is_displayed(&browser, &revoked_row).await);
    assert_eq!(
        browser.text(&format!("{revoked_row} .badge")).await,
        "Revoked"
    );
    assert_eq!(
        browser
            .text(&format!("{revoked_row} .token-label > span"))
            .await,
        "Old laptop"
    );
    let controls = browser
        .client
        .find_all(Locator::Css(&format!(
            "{revoked_row} .token-label > a, {revoked_row} [role=switch], {revoked_row} a.btn-danger"
        )))
        .await
        .unwrap();
    assert!(controls.is_empty(), "a revoked row is read-only");
    assert!(
        !is_present(&browser, &format!("#enabled-tokens #token-{id}")).await
            && !is_present(&browser, &format!("#disabled-tokens #token-{id}")).await,
        "listed only as revoked"
    );
    let kept = stored_token(&app, keep).await;
    assert!(!kept.revoked && !kept.disabled, "{kept:?}");

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn page_with_a_few_tokens_screenshot() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    let (_, ci) = app.create_key("CI deploys").await;
    let (_, _) = app.create_key("Claude Code on the build machine").await;
    let (_, _) = app.create_key("Grafana dashboard").await;
    let (old, _) = app.create_key("Old laptop").await;
    let r = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/user/api-keys/{old}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(r.status(), 200);
    // One use, so "Last used" has something to show.
    assert_eq!(app.whoami_status(&ci).await, 200);
    app.state.verifier.flush_last_used().await.unwrap();

    open_tokens_page(&app, &browser).await;
    browser.wait_for("#disabled-tokens").await;
    let enabled = browser
        .client
        .find_all(Locator::Css("#enabled-tokens tbody tr"))
        .await
        .unwrap();
    assert_eq!(enabled.len(), 3);
    let disabled = browser
        .client
        .find_all(Locator::Css("#disabled-tokens tbody tr"))
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1);
    // Most recently created first.
    assert_eq!(
        browser
            .text("#enabled-tokens tbody tr:first-child .token-label")
            .await,
        "Grafana dashboard"
    );
    let last_used = browser
        .text("#enabled-tokens tbody tr:last-child > td:nth-child(4)")
        .await;
    assert!(last_used.contains("GET /api/v2/whoami"), "{last_used}");
    let shot = browser.screenshot("tokens-page").await;
    assert!(shot.exists());

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

/// Lays the page out at `width`×`height` CSS pixels: a desktop window
/// (`mobile` false) or a phone.
async fn viewport(browser: &Browser, width: u32, height: u32, mobile: bool) {
    browser
        .cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
}

/// Nothing scrolls sideways, and every action of every row (switch,
/// Revoke, Copy, the rename link) has a size and lies inside the viewport's
/// width, not clipped by a scrolling box. Returns how many were checked.
async fn assert_list_fits(browser: &Browser, what: &str) -> u64 {
    let report = browser
        .eval(
            "const d = document.documentElement;\
             const w = d.clientWidth;\
             const actions = [...document.querySelectorAll('#token-list .token-row button, #token-list .token-row a, #new-token, .finder button')];\
             const bad = actions.filter(e => { const r = e.getBoundingClientRect(); \
               const s = getComputedStyle(e); \
               return r.width < 1 || r.height < 1 || r.left < 0 || r.right > w + 0.5 || s.visibility !== 'visible'; })\
               .map(e => (e.id || e.className) + ' ' + JSON.stringify(e.getBoundingClientRect()));\
             const wide = [...document.querySelectorAll('body *')]\
               .filter(e => e.getBoundingClientRect().right > w + 1)\
               .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')).slice(0, 10);\
             return { scroll: d.scrollWidth, client: w, checked: actions.length, bad, wide };",
        )
        .await;
    assert!(
        report["scroll"].as_i64() <= report["client"].as_i64(),
        "{what}: the page scrolls sideways: {report}"
    );
    assert_eq!(
        report["bad"].as_array().map(Vec::len),
        Some(0),
        "{what}: actions outside the viewport: {report}"
    );
    report["checked"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn the_list_fits_desktop_and_phone_in_both_schemes_with_every_action_visible() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    let (long, _) = app
        .create_key("Claude Code on the build machine, a label long enough to wrap twice over")
        .await;
    let (used, _) = app.create_key("CI deploys").await;
    let (soon, _) = app.create_key("Nightly backup").await;
    let (off, _) = app.create_key("Old laptop").await;
    let now = app.state.clock.unix();
    for (sql, id) in [
        (
            "UPDATE api_tokens SET last_used_at = $1, last_used_method = 'POST', last_used_path = '/api/v2/projects/some-long-project-name/tickets/12345/comments', last_used_ip = '2001:db8:1234:5678:9abc:def0:1234:5678' WHERE id = $2",
            used,
        ),
        (
            "UPDATE api_tokens SET expires_at = $1 + 3 * 86400 WHERE id = $2",
            soon,
        ),
        ("UPDATE api_tokens SET disabled_at = $1 WHERE id = $2", off),
    ] {
        sqlx::query(sql)
            .bind(now - 120)
            .bind(id)
            .execute(app.db().pool())
            .await
            .unwrap();
    }
    open_tokens_page(&app, &browser).await;
    browser.wait_for(&format!("#token-{long}")).await;
    assert_eq!(
        browser.text(&format!("#token-{soon} .badge")).await,
        "Expires soon"
    );
    for (name, width, height, mobile) in [("desktop", 1280, 800, false), ("phone", 390, 844, true)]
    {
        viewport(&browser, width, height, mobile).await;
        for dark in [false, true] {
            browser.prefer_dark(dark).await;
            let scheme = if dark { "dark" } else { "light" };
            let matches = browser
                .eval("return matchMedia('(prefers-color-scheme: dark)').matches;")
                .await;
            assert_eq!(matches, dark, "the scheme is emulated");
            let checked = assert_list_fits(&browser, &format!("{name} {scheme}")).await;
            assert!(checked >= 12, "{name}: the actions were found ({checked})");
            browser
                .screenshot(&format!("token-list-{name}-{scheme}"))
                .await;
        }
    }
    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}

/// The accessible name Chromium computes for the element `css` matches.
async fn accessible_name(browser: &Browser, css: &str) -> String {
    browser.cdp("DOM.enable", json!({})).await;
    browser.cdp("Accessibility.enable", json!({})).await;
    let doc = browser.cdp("DOM.getDocument", json!({})).await;
    let node = browser
        .cdp(
            "DOM.querySelector",
            json!({ "nodeId": doc["root"]["nodeId"], "selector": css }),
        )
        .await;
    let tree = browser
        .cdp(
            "Accessibility.getPartialAXTree",
            json!({ "nodeId": node["nodeId"], "fetchRelatives": false }),
        )
        .await;
    tree["nodes"][0]["name"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{css} has no accessible name: {tree}"))
        .to_string()
}

/// A row's HTML says the label once (partials/tokens/row.html); every
/// control still names its token ("Revoke CI deploys", through
/// aria-labelledby, so a rename renames them too), and the script adds what
/// the HTML leaves out: the prefix's Copy button and the exact time of each
/// `<time>` as its tooltip, on the page and in every swapped-in list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn row_controls_are_named_after_their_token_and_the_script_adds_copy_and_exact_times() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let browser = signed_in(&app).await;
    browser.allow_clipboard(&app.base_url).await;
    let (id, _) = app.create_key("CI deploys").await;
    let (other, _) = app.create_key("Nightly backup").await;
    let html = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(
        html.contains("<time datetime=\"20") && !html.contains(" title=\"20"),
        "the times are in the HTML, their exact-time tooltips are not"
    );
    assert!(!html.contains("copy-btn"), "no Copy button in the HTML");
    open_tokens_page(&app, &browser).await;

    let names = |id: i64, label: &'static str| {
        [
            (format!("#label-{id}"), label.to_string()),
            (
                format!("#token-{id} [role=switch]"),
                format!("{label} enabled"),
            ),
            (
                format!("#token-{id} a[href$='/regenerate']"),
                format!("Regenerate {label}"),
            ),
            (
                format!("#token-{id} a.btn-danger"),
                format!("Revoke {label}"),
            ),
            (
                format!("#token-{id} .copy-btn"),
                format!("Copy the prefix of {label}"),
            ),
        ]
    };
    for (css, name) in names(id, "CI deploys")
        .into_iter()
        .chain(names(other, "Nightly backup"))
    {
        assert_eq!(accessible_name(&browser, &css).await, name, "{css}");
    }

    // The exact creation time is the tooltip of the relative one.
    let stored = stored_token(&app, id).await;
    let created = format!("#token-{id} .token-meta time");
    assert_eq!(
        browser.find(&created).await.attr("title").await.unwrap(),
        Some(keysmith::web::format::exact(stored.created_at)),
    );

    // Copy puts the prefix on the clipboard.
    let prefix = browser.text(&format!("#token-{id} .token-meta code")).await;
    let copy = format!("#token-{id} .copy-btn");
    let state = browser.press_copy(&copy).await;
    if state == "Copied" {
        let clipboard = browser.eval("return navigator.clipboard.readText();").await;
        assert_eq!(
            clipboard.as_str(),
            Some(prefix.trim_end_matches('…')),
            "the prefix, without the ellipsis"
        );
    }

    // A rename renames the controls' names with it.
    let input = start_rename(&browser, id).await;
    browser.fill(&input, "CI deploys (prod)").await;
    browser.press(Key::Enter).await;
    wait_for_label(&browser, id, "CI deploys (prod)").await;
    assert_eq!(
        accessible_name(&browser, &format!("#token-{id} a.btn-danger")).await,
        "Revoke CI deploys (prod)"
    );

    // A list swapped in by htmx (the switch) gets its buttons and tooltips too.
    browser.click(&format!("#token-{id} [role=switch]")).await;
    browser
        .wait_for(&format!("#disabled-tokens #token-{id} .copy-btn"))
        .await;
    assert_eq!(
        browser
            .eval(&format!(
                "return [...document.querySelectorAll('#token-{other} .copy-btn')].length;"
            ))
            .await,
        1,
        "one Copy button a row, not one per swap"
    );
    assert_eq!(
        browser.find(&created).await.attr("title").await.unwrap(),
        Some(keysmith::web::format::exact(stored.created_at)),
    );
    assert_eq!(
        accessible_name(&browser, &format!("#token-{id} [role=switch]")).await,
        "CI deploys (prod) enabled"
    );

    assert_console_clean(&browser).await;
    browser.close().await;
    app.shutdown().await;
}
