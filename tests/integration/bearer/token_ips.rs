//! Where a token was used: its last five distinct client addresses (behind
//! a trusted proxy, by X-Forwarded-For), with first and last time seen, on
//! the owner's settings page and the superuser's Team member page; and the
//! email (over real SMTP) when a token is used from an address it has not
//! used in 30 days, after its first use ever, at most once an hour, unless
//! the owner turned these alerts off.

use std::time::Duration;

use mail_parser::MessageParser;

use super::{Minted, Spec, member, mint};
use crate::harness::{Backend, SmtpServer, TestApp, new_client};
use crate::{backend_tests, postgres_only_tests};

backend_tests!(
    the_last_five_addresses_are_kept_with_first_and_last_seen,
    only_the_owner_and_superusers_see_where_a_token_was_used,
    the_alert_switch_refuses_bad_input_and_changes_nothing,
    a_token_used_before_addresses_were_kept_is_not_at_its_first_use,
    after_a_restart_stored_addresses_are_not_new_and_new_ones_still_are,
);

/// The tests that need the SMTP server (a module of their own: each
/// `backend_tests!` makes `sqlite` and `postgres` modules).
mod smtp {
    use super::*;

    backend_tests!(
        #[cfg_attr(
            skip_smtp_tests,
            ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
        )]
        a_new_address_emails_the_owner_at_most_once_an_hour,
    );
}

postgres_only_tests!(two_instances_seeing_the_same_new_address_send_one_alert);

const AGENT: &str = "deploy-bot/2.1";
const DAY: u64 = 24 * 3600;

/// whoami with `token` from `ip`, as the trusted proxy on 127.0.0.1 says.
async fn whoami_from(app: &TestApp, token: &str, ip: &str) {
    let r = new_client()
        .get(app.url("/api/v2/whoami"))
        .bearer_auth(token)
        .header("user-agent", AGENT)
        .header("x-forwarded-for", format!("{ip}, 127.0.0.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Forward auth of `method path` by a client at `ip`.
async fn verify_from(app: &TestApp, token: &str, ip: &str, method: &str, path: &str) {
    let r = new_client()
        .get(app.url("/auth/verify"))
        .bearer_auth(token)
        .header("user-agent", AGENT)
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn flush(app: &TestApp) {
    app.state.verifier.flush_last_used().await.unwrap();
}

fn advance(app: &TestApp, seconds: u64) {
    app.state.clock.advance(Duration::from_secs(seconds));
}

async fn stored(app: &TestApp, token_id: i64) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT ip, first_seen_at, last_seen_at FROM api_token_ips WHERE token_id = $1 \
         ORDER BY last_seen_at DESC, ip",
    )
    .bind(token_id)
    .fetch_all(app.db().pool())
    .await
    .unwrap()
}

/// The addresses a details view lists, in order, each with the
/// `datetime` of its first and last seen.
fn listed(html: &str) -> Vec<(String, String, String)> {
    html.split("<tr class=\"token-ip\">")
        .skip(1)
        .map(|row| {
            let code = row.split("<code>").nth(1).unwrap();
            let ip = code[..code.find("</code>").unwrap()].to_string();
            let times: Vec<String> = row
                .split("datetime=\"")
                .skip(1)
                .map(|t| t[..t.find('"').unwrap()].to_string())
                .collect();
            (ip, times[0].clone(), times[1].clone())
        })
        .collect()
}

fn iso(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn the_last_five_addresses_are_kept_with_first_and_last_seen(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let t = mint(&app, b.organization.id, b.user.id, Spec::default()).await;

    // .1 first, used again later; then .2 … .7, one a minute.
    let t0 = app.state.clock.unix();
    whoami_from(&app, &t.token, "203.0.113.1").await;
    flush(&app).await;
    for n in 2..=7 {
        advance(&app, 60);
        verify_from(
            &app,
            &t.token,
            &format!("203.0.113.{n}"),
            "POST",
            "/tickets",
        )
        .await;
        if n == 4 {
            // Known and in use: only its last-seen time moves.
            whoami_from(&app, &t.token, "203.0.113.1").await;
        }
        flush(&app).await;
    }
    let rows = stored(&app, t.id).await;
    let ips: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // .2 and .3 were the least recently seen: dropped. (.1 and .4 were
    // last seen in the same second: by address then.)
    assert_eq!(
        ips,
        [
            "203.0.113.7",
            "203.0.113.6",
            "203.0.113.5",
            "203.0.113.1",
            "203.0.113.4"
        ]
    );
    let one = rows.iter().find(|r| r.0 == "203.0.113.1").unwrap();
    assert!(one.1 >= t0 && one.1 <= t0 + 1, "first seen {one:?}");
    assert!(one.2 >= t0 + 180 && one.2 <= t0 + 181, "last seen {one:?}");

    // The owner's details view lists them, most recent first.
    let r = app.get(&format!("/settings/api-tokens/{}/ips", t.id)).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<html"), "a page without htmx");
    let shown = listed(&html);
    assert_eq!(
        shown.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ips,
        "{html}"
    );
    let one_shown = shown.iter().find(|s| s.0 == "203.0.113.1").unwrap();
    assert_eq!(
        (one_shown.1.clone(), one_shown.2.clone()),
        (iso(one.1), iso(one.2))
    );
    // htmx gets the dialog fragment.
    let r = app
        .client
        .get(app.url(&format!("/settings/api-tokens/{}/ips", t.id)))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    let fragment = r.text().await.unwrap();
    assert!(!fragment.contains("<html") && fragment.contains("data-close-dialog"));
    assert_eq!(listed(&fragment).len(), 5);
    // The row links to it.
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(
        page.contains(&format!("href=\"/settings/api-tokens/{}/ips\"", t.id)),
        "the row has no link to the details view"
    );
    app.shutdown().await;
}

async fn only_the_owner_and_superusers_see_where_a_token_was_used(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let org = super::Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let bob = member(&app, &org, "bob@example.com").await;
    let bobs: Minted = mint(&app, org.id, bob, Spec::default()).await;
    whoami_from(&app, &bobs.token, "198.51.100.23").await;
    flush(&app).await;

    // The superuser, on Bob's Team page and its details view.
    let member_page = app
        .get(&format!("/team/members/{bob}"))
        .await
        .text()
        .await
        .unwrap();
    let path = format!("/team/members/{bob}/tokens/{}/ips", bobs.id);
    assert!(
        member_page.contains(&format!("href=\"{path}\"")),
        "{member_page}"
    );
    let r = app.get(&path).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("bob@example.com"));
    assert_eq!(listed(&html)[0].0, "198.51.100.23");
    // Not through the settings page: it is not the superuser's token.
    let r = app
        .get(&format!("/settings/api-tokens/{}/ips", bobs.id))
        .await;
    assert_eq!(r.status(), 404);
    // A token of someone else under Bob's path, or nonsense ids.
    let ada = mint(&app, org.id, org.owner, Spec::default()).await;
    for bad in [
        format!("/team/members/{bob}/tokens/{}/ips", ada.id),
        format!("/team/members/{bob}/tokens/x/ips"),
        "/settings/api-tokens/not-a-number/ips".to_string(),
    ] {
        assert_eq!(app.get(&bad).await.status(), 404, "{bad}");
    }

    // Bob sees his own, and may not use the Team view.
    let bob_client = new_client();
    app.sign_in_with(&bob_client, "bob@example.com").await;
    let r = bob_client
        .get(app.url(&format!("/settings/api-tokens/{}/ips", bobs.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(listed(&r.text().await.unwrap())[0].0, "198.51.100.23");
    let r = bob_client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = bob_client
        .get(app.url(&format!("/settings/api-tokens/{}/ips", ada.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Signed out: to the sign-in page.
    let r = new_client().get(app.url(&path)).send().await.unwrap();
    assert!(
        r.status().is_redirection() || r.status() == 401,
        "{}",
        r.status()
    );
    app.shutdown().await;
}

async fn alerts_flag(app: &TestApp, email: &str) -> i64 {
    let (on,): (i64,) = sqlx::query_as("SELECT new_ip_alerts FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    on
}

async fn the_alert_switch_refuses_bad_input_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("id=\"ip-alerts-switch\""));
    assert!(page.contains("aria-checked=\"true\""));
    for bad in [vec![("enabled", "maybe")], vec![]] {
        let r = app
            .post_form_with(
                &app.client,
                "/settings/api-tokens",
                "/settings/api-tokens/alerts",
                &bad,
            )
            .await;
        assert_eq!(r.status(), 400);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("enabled=true or enabled=false")
        );
    }
    // Without the CSRF token: refused.
    let r = app
        .client
        .post(app.url("/settings/api-tokens/alerts"))
        .form(&[("enabled", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(alerts_flag(&app, "ada@example.com").await, 1);
    // Signed out: nothing changes either.
    let r = new_client()
        .post(app.url("/settings/api-tokens/alerts"))
        .form(&[("enabled", "false")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() || r.status().is_redirection());
    assert_eq!(alerts_flag(&app, "ada@example.com").await, 1);
    app.shutdown().await;
}

fn parse(raw: &[u8]) -> (String, String) {
    let m = MessageParser::default().parse(raw).unwrap();
    (
        m.subject().unwrap_or_default().to_string(),
        m.body_text(0).unwrap_or_default().to_string(),
    )
}

/// Waits long enough for the worker to have sent anything enqueued.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

async fn a_new_address_emails_the_owner_at_most_once_an_hour(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let b = app.superuser_direct("ada@example.com").await;
    let t = mint(&app, b.organization.id, b.user.id, Spec::default()).await;

    // The first use ever: nothing to compare with, no email.
    whoami_from(&app, &t.token, "203.0.113.1").await;
    flush(&app).await;
    settle().await;
    assert_eq!(smtp.messages().len(), 0, "no alert for the first use");

    // A second address: the alert, with what the request was.
    advance(&app, 60);
    let at = app.state.clock.unix();
    verify_from(
        &app,
        &t.token,
        "198.51.100.9",
        "PATCH",
        "/tickets/7?secret=x",
    )
    .await;
    // Within the same hour another new address: recorded, not emailed.
    verify_from(&app, &t.token, "198.51.100.10", "GET", "/tickets").await;
    flush(&app).await;
    let mail = smtp.wait_for(1).await;
    let (subject, text) = parse(&mail[0]);
    assert!(
        subject.contains("new IP address") && subject.contains("“ci”"),
        "{subject}"
    );
    let when = keysmith::mail::notices::mail_time(at);
    let when_next = keysmith::mail::notices::mail_time(at + 1);
    for fact in ["198.51.100.9", "PATCH /tickets/7", AGENT, "Acme"] {
        assert!(text.contains(fact), "alert lacks {fact}:\n{text}");
    }
    assert!(text.contains(&when) || text.contains(&when_next), "{text}");
    assert!(!text.contains("secret=x"), "the query string is never kept");
    assert!(!text.contains(&t.token), "the secret never leaves");
    assert!(
        text.contains(&format!("{}/tokens/revoke/", app.base_url)),
        "no “this wasn't me” link:\n{text}"
    );
    settle().await;
    assert_eq!(smtp.messages().len(), 1, "one alert an hour");
    assert_eq!(stored(&app, t.id).await.len(), 3);

    // An hour on, known addresses raise nothing.
    advance(&app, 3601);
    whoami_from(&app, &t.token, "198.51.100.9").await;
    whoami_from(&app, &t.token, "203.0.113.1").await;
    flush(&app).await;
    settle().await;
    assert_eq!(smtp.messages().len(), 1, "known addresses are not new");

    // After 30 days without it, a known address counts as new again (and
    // the cached view is not trusted for it).
    advance(&app, 31 * DAY);
    whoami_from(&app, &t.token, "198.51.100.10").await;
    flush(&app).await;
    let mail = smtp.wait_for(2).await;
    // (The SMTP server's messages are not in arrival order.)
    assert!(
        mail.iter()
            .any(|m| parse(m).1.contains("used from 198.51.100.10")),
        "no alert for the address back after 30 days"
    );

    // Turned off with the plain form: no alert. (A month on, the session
    // has expired: sign in again.)
    app.sign_in_direct("ada@example.com").await;
    let r = app
        .post_form_with(
            &app.client,
            "/settings/api-tokens",
            "/settings/api-tokens/alerts",
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("New-IP-address alerts are off."), "the flash");
    assert!(page.contains("id=\"ip-alerts-switch\" role=\"switch\" aria-checked=\"false\""));
    advance(&app, 3601);
    whoami_from(&app, &t.token, "192.0.2.77").await;
    flush(&app).await;
    settle().await;
    assert_eq!(smtp.messages().len(), 2, "alerts are off");
    assert_eq!(
        stored(&app, t.id).await[0].0,
        "192.0.2.77",
        "still recorded"
    );

    // Turned on again with htmx: the switch comes back on.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/settings/api-tokens/alerts"))
        .header("hx-request", "true")
        .header("x-csrf-token", csrf)
        .form(&[("enabled", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fragment = r.text().await.unwrap();
    assert!(fragment.contains("aria-checked=\"true\"") && !fragment.contains("<html"));
    advance(&app, 3601);
    whoami_from(&app, &t.token, "192.0.2.78").await;
    flush(&app).await;
    smtp.wait_for(3).await;

    let events: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT ip, detail FROM audit_events WHERE token_id = $1 AND action = 'token.new_ip' ORDER BY id",
    )
    .bind(t.id)
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["198.51.100.9", "198.51.100.10", "192.0.2.78"]
    );
    assert_eq!(events[0].1.as_deref(), Some("PATCH /tickets/7"));
    app.shutdown().await;
}

async fn two_instances_seeing_the_same_new_address_send_one_alert() {
    let vars = [("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")];
    let a = TestApp::spawn_with(Backend::Postgres, &vars).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("DATABASE_URL", &url),
            ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let org = super::org(&a).await;
    let t = super::owner_token(&a, &org).await;
    whoami_from(&a, &t.token, "203.0.113.1").await;
    flush(&a).await;
    // Both see the same new address and flush at the same moment.
    for _ in 0..5 {
        whoami_from(&a, &t.token, "198.51.100.2").await;
        whoami_from(&b, &t.token, "198.51.100.2").await;
    }
    let (ra, rb) = tokio::join!(
        a.state.verifier.flush_last_used(),
        b.state.verifier.flush_last_used()
    );
    ra.unwrap();
    rb.unwrap();
    let (alerts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE template = 'token_new_ip'")
            .fetch_one(a.db().pool())
            .await
            .unwrap();
    assert_eq!(alerts, 1, "one alert for both instances");
    assert_eq!(stored(&a, t.id).await.len(), 2);
    b.shutdown().await;
    a.shutdown().await;
}

async fn new_ip_alerts(app: &TestApp) -> Vec<String> {
    sqlx::query_as::<_, (String,)>(
        "SELECT recipient FROM mail_outbox WHERE template = 'token_new_ip' ORDER BY id",
    )
    .fetch_all(app.db().pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(r,)| r)
    .collect()
}

async fn a_token_used_before_addresses_were_kept_is_not_at_its_first_use(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let org = super::org(&app).await;
    let fresh = mint(&app, org.id, org.owner, Spec::default()).await;
    let old = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "old",
            ..Spec::default()
        },
    )
    .await;
    // Used last week, before addresses were kept.
    sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(app.state.clock.unix() - 7 * 24 * 3600)
        .bind(old.id)
        .execute(app.db().pool())
        .await
        .unwrap();
    whoami_from(&app, &fresh.token, "203.0.113.1").await;
    whoami_from(&app, &old.token, "203.0.113.1").await;
    flush(&app).await;
    // The fresh token's first use is not news; the old token's new address is.
    assert_eq!(new_ip_alerts(&app).await, ["ada@example.com"]);
    let (alerted,): (Option<i64>,) =
        sqlx::query_as("SELECT new_ip_alerted_at FROM api_tokens WHERE id = $1")
            .bind(old.id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert!(alerted.is_some());
    // A flush that writes again changes nothing more.
    whoami_from(&app, &fresh.token, "203.0.113.1").await;
    flush(&app).await;
    assert_eq!(new_ip_alerts(&app).await.len(), 1);
    app.shutdown().await;
}

/// After a restart the verifier knows no token's addresses. A token back
/// from an address the store shows in use is read with the others in one
/// pass: its last seen moves, nothing is sent. A token from an address the
/// store does not show still gets its own check, and its alert.
async fn after_a_restart_stored_addresses_are_not_new_and_new_ones_still_are(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let org = super::org(&app).await;
    let known = mint(&app, org.id, org.owner, Spec::default()).await;
    let moved = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "moved",
            ..Spec::default()
        },
    )
    .await;
    whoami_from(&app, &known.token, "203.0.113.1").await;
    whoami_from(&app, &moved.token, "203.0.113.2").await;
    flush(&app).await;
    assert!(
        new_ip_alerts(&app).await.is_empty(),
        "first uses are not news"
    );
    let seen = stored(&app, known.id).await[0].2;

    let app = app.restart().await;
    whoami_from(&app, &known.token, "203.0.113.1").await;
    whoami_from(&app, &moved.token, "198.51.100.7").await;
    flush(&app).await;
    assert_eq!(
        new_ip_alerts(&app).await,
        ["ada@example.com"],
        "one alert, for the moved token"
    );
    let (alerted,): (Option<i64>,) =
        sqlx::query_as("SELECT token_id FROM audit_events WHERE action = 'token.new_ip'")
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(alerted, Some(moved.id));
    let after = stored(&app, known.id).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].2 >= seen, "last seen moved on: {after:?}");
    assert_eq!(stored(&app, moved.id).await.len(), 2);
    // Both views are filled now: the same addresses again raise nothing.
    whoami_from(&app, &known.token, "203.0.113.1").await;
    whoami_from(&app, &moved.token, "198.51.100.7").await;
    flush(&app).await;
    assert_eq!(new_ip_alerts(&app).await.len(), 1);
    app.shutdown().await;
}
