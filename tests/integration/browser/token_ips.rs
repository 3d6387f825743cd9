//! In a real browser: a token's row links to where it was used, and the
//! regenerated token's row shows its new prefix and expiry once the
//! shown-once dialog closes, on the settings page and on a member's Team
//! page.

use std::time::Duration;

use keysmith::store::tokens;
use keysmith::web::format::iso;

use crate::bearer::{Org, Spec, member, mint};
use crate::browser::shown_once::{create_in_dialog, open_tokens_page, wait_until};
use crate::browser::{Browser, problems};
use crate::harness::{Backend, TestApp};

const EMAIL: &str = "ada@example.com";

/// The id of the only token row on the page.
async fn only_row_id(browser: &Browser) -> i64 {
    let id = browser
        .eval("return document.querySelector('tr.token-row').id.replace('token-', '');")
        .await;
    id.as_str().unwrap().parse().unwrap()
}

async fn close_shown_once(browser: &Browser) {
    browser.click("#token-dialog [data-acknowledge]").await;
    wait_until(
        browser,
        "return !document.getElementById('token-dialog').open;",
        "the dialog closes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn the_row_links_to_the_addresses_a_token_was_used_from() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    open_tokens_page(&app, &browser).await;
    let plaintext = create_in_dialog(&browser, "deploys").await;
    close_shown_once(&browser).await;
    assert_eq!(app.whoami_status(&plaintext).await, 200);
    app.state.verifier.flush_last_used().await.unwrap();

    open_tokens_page(&app, &browser).await;
    let id = only_row_id(&browser).await;
    browser.click(&format!("#token-{id} a[href$='/ips']")).await;
    browser.wait_for("#token-dialog #token-ips").await;
    let listed = browser.text("#token-ips tbody").await;
    assert!(listed.contains("127.0.0.1"), "{listed}");
    browser.screenshot("token-ips-dialog").await;
    browser.click("#token-dialog [data-close-dialog]").await;
    wait_until(
        &browser,
        &format!("return document.activeElement && document.activeElement.matches('#token-{id} a[href$=\"/ips\"]');"),
        "focus goes back to the link",
    )
    .await;
    assert!(problems(&browser.console().await).is_empty());
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn a_regenerated_row_shows_its_new_prefix_and_expiry_when_the_dialog_closes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let b = app.signed_in_superuser(EMAIL).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    open_tokens_page(&app, &browser).await;
    create_in_dialog(&browser, "deploys").await;
    close_shown_once(&browser).await;
    let id = only_row_id(&browser).await;
    let before = tokens::find_in_org(app.db(), b.organization.id, id)
        .await
        .unwrap()
        .unwrap();
    let old_prefix = browser.text(&format!("#token-{id} .token-meta code")).await;
    assert_eq!(old_prefix, format!("{}…", before.display_prefix));

    // Two minutes later (within the session), the same lifetime counts
    // from now.
    app.state.clock.advance(Duration::from_secs(120));
    browser
        .click(&format!("#token-{id} a[href$='/regenerate']"))
        .await;
    browser.wait_for("#token-dialog #grace_seconds").await;
    browser
        .click("#token-dialog form button[type=submit]")
        .await;
    browser.wait_for("#token-dialog #token-plaintext").await;
    close_shown_once(&browser).await;

    let after = tokens::find_in_org(app.db(), b.organization.id, id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after.display_prefix, before.display_prefix);
    let shown = browser.text(&format!("#token-{id} .token-meta code")).await;
    assert_eq!(
        shown,
        format!("{}…", after.display_prefix),
        "the row's prefix"
    );
    if let (Some(old), Some(new)) = (before.expires_at, after.expires_at) {
        assert!(new > old, "the lifetime counts from the regeneration");
        let datetime = browser
            .eval(&format!(
                "const t = document.querySelector('#token-{id} td:nth-child(3) time'); return t ? t.getAttribute('datetime') : '';"
            ))
            .await;
        assert_eq!(
            datetime.as_str(),
            Some(iso(new).as_str()),
            "the row's expiry"
        );
    }
    wait_until(
        &browser,
        &format!(
            "return document.activeElement && document.activeElement.matches('#token-{id} a[href$=\"/regenerate\"]');"
        ),
        "focus goes back to Regenerate",
    )
    .await;
    assert!(problems(&browser.console().await).is_empty());
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn a_superuser_regenerating_on_the_team_page_sees_the_new_prefix_behind_the_dialog() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = app.signed_in_superuser(EMAIL).await;
    let org = ada.organization.id;
    let bob = member(
        &app,
        &Org {
            id: org,
            owner: ada.user.id,
        },
        "bob@example.com",
    )
    .await;
    let t = mint(
        &app,
        org,
        bob,
        Spec {
            label: "bob's ci",
            ..Spec::default()
        },
    )
    .await;
    let prefix = |app: &TestApp| {
        let db = app.db().clone();
        async move {
            tokens::find_in_org(&db, org, t.id)
                .await
                .unwrap()
                .unwrap()
                .display_prefix
        }
    };
    let before = prefix(&app).await;
    let browser = Browser::start().await;
    browser.sign_in(&app, EMAIL).await;
    browser
        .goto(&app.url(&format!("/team/members/{bob}?q=ci")))
        .await;
    browser.wait_for("#member-live-tokens").await;
    assert_eq!(
        browser
            .text(&format!("#token-{} .token-meta code", t.id))
            .await,
        format!("{before}…")
    );
    browser.click(&format!("#regenerate-{}", t.id)).await;
    browser.wait_for("#token-dialog #grace_seconds").await;
    browser
        .click("#token-dialog form button[type=submit]")
        .await;
    browser.wait_for("#token-dialog #token-plaintext").await;
    close_shown_once(&browser).await;
    let after = prefix(&app).await;
    assert_ne!(after, before);
    assert_eq!(
        browser
            .text(&format!("#token-{} .token-meta code", t.id))
            .await,
        format!("{after}…"),
        "the row behind the dialog shows the new prefix"
    );
    let search = browser
        .eval("return document.querySelector('#member-tokens input[name=q]').value;")
        .await;
    assert_eq!(search.as_str(), Some("ci"), "the search is kept");
    assert!(problems(&browser.console().await).is_empty());
    browser.close().await;
    app.shutdown().await;
}
