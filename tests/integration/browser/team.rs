//! The Team page clicked through in a real browser: the permission switch,
//! revoking a member's token through the confirm dialog, and a screenshot of
//! the page with a dozen members.

use std::time::{Duration, Instant};

use keysmith::store::orgs;

use crate::bearer::{Org, Spec, member, mint};
use crate::browser::{Browser, WAIT, problems};
use crate::harness::{Backend, TestApp};
use crate::store::bootstrap;

/// A dozen members in every state the page shows.
async fn team_of_twelve(app: &TestApp) -> (Org, i64, i64) {
    let b = bootstrap(app, "ada@example.com").await;
    let org = Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let bob = member(app, &org, "bob.martin@example.com").await;
    let bobs = mint(
        app,
        org.id,
        bob,
        Spec {
            label: "CI deploys",
            ..Spec::default()
        },
    )
    .await;
    mint(
        app,
        org.id,
        bob,
        Spec {
            label: "laptop",
            ..Spec::default()
        },
    )
    .await;
    for (i, email) in [
        "carol.shaw@example.com",
        "dan.abramov@example.com",
        "erin.catto@example.com",
        "frances.allen@example.com",
        "grace.hopper@example.com",
        "hedy.lamarr@example.com",
        "ivan.sutherland@example.com",
        "joan.clarke@example.com",
    ]
    .iter()
    .enumerate()
    {
        let id = member(app, &org, email).await;
        if i % 3 == 0 {
            mint(
                app,
                org.id,
                id,
                Spec {
                    label: "script",
                    ..Spec::default()
                },
            )
            .await;
        }
        let mut tx = app.db().begin().await.unwrap();
        match i {
            1 => {
                orgs::set_can_manage_tokens(&mut tx, org.id, id, false)
                    .await
                    .unwrap();
            }
            4 => {
                orgs::set_member_disabled(&mut tx, org.id, id, true, 0)
                    .await
                    .unwrap();
            }
            6 => {
                keysmith::store::team::set_role(&mut tx, org.id, id, orgs::Role::Superuser)
                    .await
                    .unwrap();
            }
            _ => {}
        }
        tx.commit().await.unwrap();
    }
    let mut tx = app.db().begin().await.unwrap();
    for email in ["ken.thompson@example.com", "lin.clark@example.com"] {
        keysmith::store::team::invite_member(
            &mut tx,
            org.id,
            &keysmith::domain::EmailAddress::parse(email).unwrap(),
            false,
            0,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // Something used Bob's token a moment ago.
    assert_eq!(app.whoami_status(&bobs.token).await, 200);
    (org, bob, bobs.id)
}

/// Waits for a JavaScript dialog (`confirm()`) and returns its text.
pub async fn alert_text(browser: &Browser) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = browser.client.get_alert_text().await {
            return text;
        }
        assert!(Instant::now() < deadline, "no confirmation dialog appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `message` in the page's live region, as a `role=status`.
pub async fn assert_status_message(browser: &Browser, message: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = browser
            .eval("const s = document.querySelector('#flash[aria-live] [role=status]'); return s ? s.textContent.trim() : null;")
            .await;
        if shown == message {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live region never said {message:?} (says {shown})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the element with this id has the focus.
pub async fn assert_focused(browser: &Browser, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let focused = browser.eval("return document.activeElement.id;").await;
        if focused == id {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "focus is on {focused}, not #{id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_attribute(browser: &Browser, css: &str, attribute: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = browser
            .eval(&format!(
                "const e = document.querySelector({css:?}); return e ? e.getAttribute({attribute:?}) : null;"
            ))
            .await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never had {attribute}={value} (has {now})\n{}",
            browser.describe().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn a_superuser_toggles_the_permission_and_revokes_a_members_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_org, bob, token_id) = team_of_twelve(&app).await;
    let token = {
        // A second token of Bob's whose plaintext we keep, to watch it die.
        mint(
            &app,
            _org.id,
            bob,
            Spec {
                label: "watcher",
                ..Spec::default()
            },
        )
        .await
    };
    let browser = Browser::start().await;
    browser.sign_in(&app, "ada@example.com").await;
    browser.goto(&app.url("/team")).await;
    browser.wait_for_text("h1", "Team").await;
    browser.wait_for("#members-table").await;
    // Let the last-used buffer reach the page.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    browser.goto(&app.url("/team")).await;
    browser.wait_for("#members-table").await;
    // Tall enough for the whole list of twelve in one picture.
    browser
        .client
        .set_window_size(1280, 1500)
        .await
        .expect("resize the window");
    let shot = browser.screenshot("team").await;
    assert!(shot.exists());
    browser
        .eval("document.getElementById('policy').scrollIntoView(); return true;")
        .await;
    browser.screenshot("team-policy").await;

    // The permission switch, through htmx. Withdrawing asks first, and
    // dismissing the question changes nothing.
    let switch = format!("#member-{bob}-permission");
    wait_for_attribute(&browser, &switch, "aria-checked", "true").await;
    assert_eq!(app.whoami_status(&token.token).await, 200);
    browser.click(&switch).await;
    let asked = alert_text(&browser).await;
    assert!(
        asked.starts_with("Withdraw the token permission of bob.martin@example.com?"),
        "{asked}"
    );
    browser.client.dismiss_alert().await.expect("dismiss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        browser
            .find(&switch)
            .await
            .attr("aria-checked")
            .await
            .unwrap()
            .as_deref(),
        Some("true"),
        "dismissed: still allowed"
    );
    assert_eq!(app.whoami_status(&token.token).await, 200, "and working");
    browser.click(&switch).await;
    alert_text(&browser).await;
    browser.client.accept_alert().await.expect("accept");
    wait_for_attribute(&browser, &switch, "aria-checked", "false").await;
    assert_eq!(app.whoami_status(&token.token).await, 401, "paused at once");
    assert_status_message(
        &browser,
        "bob.martin@example.com can no longer create or manage API tokens; their tokens are paused.",
    )
    .await;
    assert_focused(&browser, &format!("member-{bob}-permission")).await;
    assert!(
        browser
            .text(&format!("#member-{bob}"))
            .await
            .contains("3 paused")
    );
    // Giving it back is not destructive: no question.
    browser.click(&switch).await;
    wait_for_attribute(&browser, &switch, "aria-checked", "true").await;
    assert_eq!(app.whoami_status(&token.token).await, 200, "and back");
    assert_eq!(browser.path().await, "/team", "no page load");

    // From the row to the member's tokens, and revoke one: asked first.
    browser
        .click(&format!("#member-{bob} td.label-cell a"))
        .await;
    browser.wait_for_text("h1", "bob.martin@example.com").await;
    let revoke = format!("#token-{token_id}-revoke");
    browser.click(&revoke).await;
    let asked = alert_text(&browser).await;
    assert!(
        asked.starts_with("Revoke “CI deploys” of bob.martin@example.com?"),
        "{asked}"
    );
    browser.client.dismiss_alert().await.expect("dismiss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (revoked,): (Option<i64>,) =
        sqlx::query_as("SELECT revoked_at FROM api_tokens WHERE id = $1")
            .bind(token_id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(revoked, None, "dismissed: not revoked");
    browser.click(&revoke).await;
    alert_text(&browser).await;
    browser.client.accept_alert().await.expect("accept");
    browser.wait_for("#member-revoked-tokens").await;
    assert_status_message(
        &browser,
        "“CI deploys” is revoked. Its owner has been told by email.",
    )
    .await;
    // The revoked row's control is gone: focus moves to the next token's.
    let focused = browser
        .eval("return document.activeElement.getAttribute('data-focus-group');")
        .await;
    assert_eq!(focused, "token-revoke", "focus on a neighbour's Revoke");
    browser.screenshot("team-member-revoked").await;
    let (reason,): (Option<String>,) =
        sqlx::query_as("SELECT revoked_reason FROM api_tokens WHERE id = $1")
            .bind(token_id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("superuser"));
    assert_eq!(
        app.whoami_status(&token.token).await,
        200,
        "only that token"
    );

    // The audit log shows what just happened, newest first.
    browser.goto(&app.url("/team/audit")).await;
    browser.wait_for("#audit-events").await;
    let first = browser.text("#audit-events tbody tr:first-child").await;
    assert!(first.contains("Token revoked"), "{first}");
    browser.screenshot("team-audit").await;

    // On a phone the rows become cards and nothing scrolls sideways.
    browser.emulate_phone(360, 780).await;
    for (path, name) in [
        ("/team".to_string(), "phone-team"),
        (format!("/team/members/{bob}"), "phone-team-member"),
    ] {
        browser.goto(&app.url(&path)).await;
        browser.wait_for("h1").await;
        let fits = browser
            .eval("const d = document.documentElement; return d.scrollWidth <= d.clientWidth;")
            .await;
        assert_eq!(fits, true, "{path} is wider than a 360px phone");
        browser.screenshot(name).await;
    }

    let console = problems(&browser.console().await);
    assert!(console.is_empty(), "console problems: {console:#?}");
    browser.close().await;
    app.shutdown().await;
}

/// Lays pages out at exactly `width`×`height` CSS pixels (a desktop window).
async fn viewport(browser: &Browser, width: u32, height: u32, mobile: bool) {
    browser
        .cdp(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
}

/// Screenshots of the current page at 1280×800 and 390×844, each checked
/// for sideways scrolling; back at 1280×800 afterwards.
async fn screenshots(browser: &Browser, name: &str) {
    for (w, h, mobile) in [(390, 844, true), (1280, 800, false)] {
        viewport(browser, w, h, mobile).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let fits = browser
            .eval("const d = document.documentElement; return d.scrollWidth <= d.clientWidth;")
            .await;
        assert_eq!(fits, true, "{name} is wider than {w}px");
        browser.screenshot(&format!("{name}-{w}x{h}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn disabling_a_member_asks_then_announces_and_keeps_focus() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (org, bob, _) = team_of_twelve(&app).await;
    let carol = {
        let (id,): (i64,) =
            sqlx::query_as("SELECT id FROM users WHERE email = 'carol.shaw@example.com'")
                .fetch_one(app.db().pool())
                .await
                .unwrap();
        id
    };
    // A token of Bob's that expires soon, to show its badge.
    mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "release bot",
            expires_at: Some(app.state.clock.unix() + 2 * 86_400),
            ..Spec::default()
        },
    )
    .await;
    let browser = Browser::start().await;
    viewport(&browser, 1280, 800, false).await;
    browser.sign_in(&app, "ada@example.com").await;
    browser.goto(&app.url("/team")).await;
    browser.wait_for("#members-table").await;

    // Disable asks; dismissing changes nothing.
    let disable = format!("#member-{carol}-status");
    assert_eq!(browser.text(&disable).await, "Disable");
    browser.click(&disable).await;
    let asked = alert_text(&browser).await;
    assert!(
        asked.starts_with("Disable carol.shaw@example.com?"),
        "{asked}"
    );
    browser.client.dismiss_alert().await.expect("dismiss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (at,): (Option<i64>,) =
        sqlx::query_as("SELECT disabled_at FROM memberships WHERE user_id = $1")
            .bind(carol)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(at, None, "dismissed: still enabled");
    assert_eq!(browser.text(&disable).await, "Disable");

    // Accepting disables, says so in the live region, and keeps the focus
    // on the same control (now Enable).
    browser.click(&disable).await;
    alert_text(&browser).await;
    browser.client.accept_alert().await.expect("accept");
    browser
        .wait_for(&format!("#member-{carol}.member-disabled"))
        .await;
    assert_status_message(
        &browser,
        "carol.shaw@example.com is disabled: signed out here, and their tokens stop working.",
    )
    .await;
    assert_focused(&browser, &format!("member-{carol}-status")).await;
    assert_eq!(browser.text(&disable).await, "Enable");
    assert!(
        browser
            .text(&format!("#member-{carol}"))
            .await
            .contains("1 paused")
    );
    screenshots(&browser, "team-member-disabled").await;
    // Enabling does not ask.
    browser.click(&disable).await;
    browser
        .wait_for(&format!("#member-{carol}.member-active"))
        .await;
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no question"
    );
    assert_focused(&browser, &format!("member-{carol}-status")).await;

    // Saving the policy: announced, focus stays on Save.
    browser.fill("#writes-per-minute", "30").await;
    browser.click("#policy-save").await;
    assert_status_message(
        &browser,
        "Policy saved. It applies to every token from the next request.",
    )
    .await;
    assert_focused(&browser, "policy-save").await;
    // A wrong value: focus moves to the field that needs fixing.
    browser.fill("#writes-per-minute", "lots").await;
    browser.click("#policy-save").await;
    browser
        .wait_for("#writes-per-minute[aria-invalid=true]")
        .await;
    assert_focused(&browser, "writes-per-minute").await;

    // A member's page: Expires soon and, once the permission is withdrawn,
    // Paused.
    browser
        .goto(&app.url(&format!("/team/members/{bob}")))
        .await;
    browser.wait_for("#member-live-tokens").await;
    let badges = browser
        .eval("return Array.from(document.querySelectorAll('#member-live-tokens .badge')).map(b => b.textContent.trim());")
        .await;
    assert!(
        badges
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "Expires soon"),
        "{badges}"
    );
    let mut tx = app.db().begin().await.unwrap();
    orgs::set_can_manage_tokens(&mut tx, org.id, bob, false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    browser
        .goto(&app.url(&format!("/team/members/{bob}")))
        .await;
    browser.wait_for("#member-live-tokens").await;
    let badges = browser
        .eval("return Array.from(document.querySelectorAll('#member-live-tokens .badge')).map(b => b.textContent.trim());")
        .await;
    assert!(
        badges.as_array().unwrap().iter().all(|b| b == "Paused"),
        "{badges}"
    );
    screenshots(&browser, "team-member-paused").await;

    // Disabling one of the member's tokens asks, and focus returns to it.
    let first_toggle = browser
        .eval("return document.querySelector('#member-live-tokens ~ * button[id$=-toggle], .member-token-actions button[id$=-toggle]').id;")
        .await;
    let toggle = format!("#{}", first_toggle.as_str().unwrap());
    browser.click(&toggle).await;
    let asked = alert_text(&browser).await;
    assert!(asked.starts_with("Disable “"), "{asked}");
    browser.client.accept_alert().await.expect("accept");
    browser
        .wait_for(&format!("{toggle}[aria-checked=false]"))
        .await;
    assert_focused(&browser, &toggle[1..]).await;
    // The switch says the token's state, as on the settings page.
    assert_eq!(browser.text(&toggle).await, "Disabled");

    // The refused policy (422) is an expected answer in the log.
    let console: Vec<_> = problems(&browser.console().await)
        .into_iter()
        .filter(|m| !m.contains("status of 422"))
        .collect();
    assert!(console.is_empty(), "console problems: {console:#?}");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_browser_tests,
    ignore = "browser test skipped: apt-get install chromium chromium-driver (CI installs them)"
)]
async fn error_pages_are_framed_and_a_lost_session_says_so() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_org, bob, _) = team_of_twelve(&app).await;
    let browser = Browser::start().await;
    viewport(&browser, 1280, 800, false).await;

    // Signed out: a 404 page in the frame, with a way to sign in.
    browser.goto(&app.url("/no/such/page")).await;
    browser.wait_for_text("h1", "Page not found").await;
    let facts = browser
        .eval("return [document.title, document.documentElement.lang, !!document.querySelector('main h1'), !!document.querySelector('nav[aria-label=Main]')];")
        .await;
    assert_eq!(
        facts,
        serde_json::json!(["Page not found · Keysmith", "en", true, false])
    );
    screenshots(&browser, "error-404-signed-out").await;

    // Signed in: with navigation.
    browser.sign_in(&app, "ada@example.com").await;
    browser.goto(&app.url("/static/missing.css")).await;
    browser.wait_for_text("h1", "Page not found").await;
    browser.goto(&app.url("/team/members/99999")).await;
    browser.wait_for_text("h1", "Page not found").await;
    assert!(
        browser
            .find("nav[aria-label=Main] a[href='/team']")
            .await
            .is_displayed()
            .await
            .unwrap()
    );
    screenshots(&browser, "error-404-signed-in").await;

    // The session ends while the Team page is open: the next htmx action
    // says so in the live region, with a link to sign in again.
    browser.goto(&app.url("/team")).await;
    browser.wait_for("#members-table").await;
    sqlx::query("DELETE FROM sessions")
        .execute(app.db().pool())
        .await
        .unwrap();
    browser.click(&format!("#member-{bob}-role")).await;
    let link = browser.wait_for("#flash #signed-out a").await;
    let message = browser.text("#flash #signed-out").await;
    assert!(
        message.starts_with("You were signed out, so this was not done."),
        "{message}"
    );
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/signin?next=/team")
    );
    assert_eq!(browser.path().await, "/team", "still on the page");
    screenshots(&browser, "team-signed-out").await;
    link.click().await.expect("follow the sign-in link");
    browser.wait_for_path("/signin?next=/team").await;

    let console = problems(&browser.console().await);
    // The 401 and 404 answers are expected network errors in the log.
    let console: Vec<_> = console
        .into_iter()
        .filter(|m| !m.contains("401") && !m.contains("404"))
        .collect();
    assert!(console.is_empty(), "console problems: {console:#?}");
    browser.close().await;
    app.shutdown().await;
}
