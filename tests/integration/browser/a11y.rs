//! The accessibility sweep: every page and dialog state, walked through as
//! a person would reach it, checked by axe-core in light and dark at
//! 1280×800 and 390×844 (screenshots of each in `target/screenshots/`).
//! Any violation fails, except those listed in `KNOWN_FAILING`.

use std::collections::BTreeSet;

use fantoccini::key::Key;
use serde_json::json;

use super::Browser;
use super::axe::{Variant, assert_accessible, assert_axe_catches_a_broken_page, run_axe};
use super::shown_once::{create_in_dialog, open_tokens_page, wait_until};
use crate::harness::{Backend, TestApp};

const EMAIL: &str = "ada@example.com";
const MCP_URL: &str = "https://api.acme.test/mcp?team=platform&region=eu";

/// (state, axe rule) pairs known to fail, while a page is being reworked:
/// empty now that every state passes. An entry that no longer fails makes
/// the sweep fail too, so the list cannot go stale.
const KNOWN_FAILING: &[(&str, &str)] = &[];

/// Checks the page as it is now in every variant and records what fails.
struct Sweep<'a> {
    browser: &'a Browser,
    failures: Vec<String>,
    known_seen: BTreeSet<(&'static str, &'static str)>,
}

impl<'a> Sweep<'a> {
    fn new(browser: &'a Browser) -> Self {
        Sweep {
            browser,
            failures: Vec::new(),
            known_seen: BTreeSet::new(),
        }
    }

    async fn check(&mut self, state: &'static str) {
        for variant in Variant::ALL {
            variant.apply(self.browser).await;
            let violations = run_axe(self.browser).await;
            let name = format!("a11y-{}-{}", state.replace(' ', "-"), variant.name());
            self.browser.screenshot(&name).await;
            for v in violations {
                if let Some(known) = KNOWN_FAILING
                    .iter()
                    .find(|(s, rule)| *s == state && *rule == v.rule)
                {
                    self.known_seen.insert(*known);
                } else {
                    self.failures
                        .push(format!("{state} ({}):\n{v}", variant.name()));
                }
            }
        }
    }

    fn finish(self) {
        let stale: Vec<_> = KNOWN_FAILING
            .iter()
            .filter(|k| !self.known_seen.contains(*k))
            .collect();
        assert!(
            self.failures.is_empty(),
            "axe-core found {} violation(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert!(
            stale.is_empty(),
            "these known failures are fixed: remove them from KNOWN_FAILING: {stale:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_browser_tests, skip_axe_tests),
    ignore = "accessibility test skipped: needs chromium, chromium-driver and npm ci --prefix tests/a11y, then touch build.rs (CI installs them)"
)]
async fn axe_core_runs_in_the_browser_and_catches_violations() {
    let browser = Browser::start().await;
    assert_axe_catches_a_broken_page(&browser).await;
    // And a page without faults passes.
    browser
        .goto("data:text/html,<!doctype html><html lang=en><head><title>Fine</title></head><body><main><h1>Fine</h1><p>Nothing to see.</p></main></body></html>")
        .await;
    assert_accessible(&browser, "a well-formed page").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_browser_tests, skip_axe_tests),
    ignore = "accessibility test skipped: needs chromium, chromium-driver and npm ci --prefix tests/a11y, then touch build.rs (CI installs them)"
)]
async fn every_page_and_dialog_state_passes_axe_in_both_schemes_and_sizes() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("KEYSMITH_MCP_URL", MCP_URL)]).await;
    let b = app.signed_in_superuser(EMAIL).await;
    let org = crate::bearer::Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let browser = Browser::start().await;
    let mut sweep = Sweep::new(&browser);

    // Signed out: sign-in, the "check your inbox" page, the link's page.
    browser.goto(&app.url("/signin")).await;
    browser.wait_for("main form[action='/signin']").await;
    sweep.check("signin").await;
    browser.fill("#email", EMAIL).await;
    browser
        .click("main form[action='/signin'] button[type=submit]")
        .await;
    browser.wait_for_text("h1", "Check your inbox").await;
    sweep.check("signin sent").await;
    let mail = app.wait_for_dev_mail(EMAIL, 1).await;
    let link = mail
        .iter()
        .flat_map(|m| m.links.iter())
        .find(|l| l.contains("/signin/link/"))
        .expect("a sign-in link")
        .clone();
    browser.goto(&link).await;
    browser.wait_for_text("button", "Sign in").await;
    sweep.check("signin link").await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for(".topbar .user-email").await;

    // The tokens page, empty; the New token dialog with its errors; the
    // no-JS form page.
    open_tokens_page(&app, &browser).await;
    sweep.check("settings empty").await;
    browser.click("#new-token").await;
    browser.wait_for("#token-dialog form.create-form").await;
    browser
        .click("#token-dialog form.create-form button[type=submit]")
        .await;
    browser.wait_for("#token-dialog #label-error").await;
    sweep.check("new token dialog with errors").await;
    browser.press(Key::Escape).await;
    browser.goto(&app.url("/settings/api-tokens/new")).await;
    browser.wait_for("form.create-form").await;
    sweep.check("new token page").await;

    // The shown-once dialog: the Claude Code tab, the Claude Desktop tab,
    // and the question Escape asks before the token is copied.
    open_tokens_page(&app, &browser).await;
    create_in_dialog(&browser, "laptop").await;
    sweep.check("shown-once dialog").await;
    browser.click("#tab-desktop").await;
    sweep.check("shown-once dialog claude desktop").await;
    browser.press(Key::Escape).await;
    wait_until(
        &browser,
        "return !document.getElementById('discard-confirm').hidden;",
        "the discard question",
    )
    .await;
    sweep.check("shown-once discard question").await;
    browser.click("[data-discard-token]").await;

    // Tokens in every state: enabled (laptop), disabled, revoked, expired.
    let (disabled, _) = app.create_key("disabled one").await;
    let r = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/user/api-keys/{disabled}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (revoked, _) = app.create_key("revoked one").await;
    let r = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/user/api-keys/{revoked}"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    crate::bearer::mint(
        &app,
        org.id,
        org.owner,
        crate::bearer::Spec {
            label: "expired one",
            expires_at: Some(app.state.clock.unix() - 3600),
            ..Default::default()
        },
    )
    .await;
    browser
        .goto(&app.url("/settings/api-tokens?revoked=1"))
        .await;
    browser.wait_for(&format!("#token-{revoked}")).await;
    sweep.check("settings with tokens").await;

    // Inline rename, and the revoke confirmation.
    open_tokens_page(&app, &browser).await;
    browser
        .click(&format!("#token-{disabled} .token-label > a"))
        .await;
    browser.wait_for(&format!("#rename-{disabled}")).await;
    sweep.check("rename").await;
    browser.press(Key::Escape).await;
    browser
        .wait_for(&format!("#token-{disabled} .token-label > a"))
        .await;
    browser
        .click(&format!("#token-{disabled} a.btn-danger"))
        .await;
    browser.wait_for("#token-dialog form").await;
    sweep.check("revoke confirm").await;
    browser.press(Key::Escape).await;

    // The Team pages: members, invite and policy forms with errors, a
    // member's tokens, the audit log.
    let (bob, _) =
        crate::team::member_with_token(&app, &org, "bob@example.com", "bob's laptop").await;
    browser.goto(&app.url("/team")).await;
    browser.wait_for("#invite-email").await;
    wait_until(
        &browser,
        "return !!window.htmx && document.readyState === 'complete';",
        "htmx is loaded",
    )
    .await;
    sweep.check("team").await;
    browser.fill("#invite-email", "not an address").await;
    browser.click("#invite form button[type=submit]").await;
    browser.wait_for("#invite-error").await;
    sweep.check("invite form with error").await;
    browser.fill("#reads-per-minute", "lots").await;
    browser.click("#policy form button[type=submit]").await;
    browser.wait_for("#reads-error").await;
    sweep.check("policy with error").await;
    browser
        .goto(&app.url(&format!("/team/members/{bob}")))
        .await;
    browser.wait_for("#member-tokens").await;
    sweep.check("team member").await;
    browser.goto(&app.url("/team/audit")).await;
    browser.wait_for("main h1").await;
    sweep.check("audit").await;

    // An invitation's page, as the invitee opens it.
    let r = crate::team::team_post(
        &app,
        "/team/invite",
        &[("email", "carol@example.com")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mail = app.wait_for_dev_mail("carol@example.com", 1).await;
    let invite = mail[0]
        .links
        .iter()
        .find(|l| l.contains("/invite/"))
        .expect("an invitation link")
        .clone();
    let stranger = Browser::start().await;
    stranger.goto(&invite).await;
    stranger.wait_for("main h1").await;
    let mut other = Sweep::new(&stranger);
    other.check("invitation").await;

    // The revoke-from-email page of the token created in the dialog.
    let mail = app.wait_for_dev_mail(EMAIL, 2).await;
    let revoke = mail
        .iter()
        .flat_map(|m| m.links.iter())
        .find(|l| l.contains("/tokens/revoke/"))
        .expect("a revoke link")
        .clone();
    stranger.goto(&revoke).await;
    stranger.wait_for("main h1").await;
    other.check("revoke link").await;
    other.finish_into(&mut sweep);
    stranger.close().await;

    // An unknown address and the development mailbox.
    browser.goto(&app.url("/no/such/page")).await;
    sweep.check("404").await;
    browser.goto(&app.url("/dev/mail")).await;
    browser.wait_for("main h1").await;
    sweep.check("dev mail").await;

    sweep.finish();
    browser.close().await;
    app.shutdown().await;
}

impl Sweep<'_> {
    /// Moves what a second browser's sweep found into this one.
    fn finish_into(self, into: &mut Sweep<'_>) {
        into.failures.extend(self.failures);
        into.known_seen.extend(self.known_seen);
    }
}

/// The primary button on hover (the dark theme's hover blue was 4.43:1
/// with white): hover is forced through DevTools, so axe measures the
/// hover colours, in both schemes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(skip_browser_tests, skip_axe_tests),
    ignore = "accessibility test skipped: needs chromium, chromium-driver and npm ci --prefix tests/a11y, then touch build.rs (CI installs them)"
)]
async fn primary_buttons_keep_their_contrast_on_hover_in_both_schemes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    open_tokens_page(&app, &browser).await;
    browser.cdp("DOM.enable", json!({})).await;
    browser.cdp("CSS.enable", json!({})).await;
    let doc = browser.cdp("DOM.getDocument", json!({})).await;
    let root = doc["root"]["nodeId"].clone();
    let node = browser
        .cdp(
            "DOM.querySelector",
            json!({ "nodeId": root, "selector": "#new-token" }),
        )
        .await;
    let background =
        "return getComputedStyle(document.getElementById('new-token')).backgroundColor;";
    for (dark, normal, hover) in [
        (false, "rgb(10, 91, 211)", "rgb(8, 72, 168)"),
        (true, "rgb(26, 98, 214)", "rgb(42, 111, 223)"),
    ] {
        browser.prefer_dark(dark).await;
        browser
            .cdp(
                "CSS.forcePseudoState",
                json!({ "nodeId": node["nodeId"], "forcedPseudoClasses": [] }),
            )
            .await;
        assert_eq!(browser.eval(background).await, normal);
        browser
            .cdp(
                "CSS.forcePseudoState",
                json!({ "nodeId": node["nodeId"], "forcedPseudoClasses": ["hover"] }),
            )
            .await;
        assert_eq!(browser.eval(background).await, hover, "hover is forced");
        let scheme = if dark { "dark" } else { "light" };
        let violations = run_axe(&browser).await;
        assert!(
            violations.is_empty(),
            "{scheme}, New token hovered:\n{}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<String>()
        );
        browser
            .screenshot(&format!("a11y-primary-hover-{scheme}"))
            .await;
    }
    browser.close().await;
    app.shutdown().await;
}
