//! Sign-in by email link, first-run setup, sessions and CSRF, over real HTTP.

use std::time::Duration;

use keysmith::domain::EmailAddress;
use keysmith::store::orgs;

use crate::backend_tests;
use crate::harness::{Backend, TestApp, csrf_of, new_client};
use crate::store::bootstrap;

backend_tests!(
    setup_link_creates_the_organization_and_signs_in,
    signin_by_email_link_end_to_end,
    reused_link_gets_a_friendly_page,
    expired_link_gets_a_friendly_page,
    unknown_email_gets_the_same_answer_and_no_mail,
    twenty_parallel_posts_of_one_link_make_one_session,
    disabled_member_cannot_sign_in_and_their_sessions_stop,
    idle_session_ends,
);

fn set_cookie_for(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

async fn session_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    n
}

async fn setup_link_creates_the_organization_and_signs_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app
        .setup_url
        .clone()
        .expect("a fresh database gets a setup link");
    let path = url.strip_prefix(&app.base_url).unwrap().to_string();
    assert!(path.starts_with("/setup?code="), "{path}");

    let page = app.get(&path).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    let code = path.strip_prefix("/setup?code=").unwrap();

    // Bad input re-renders the form with the message and keeps the values.
    let r = app
        .client
        .post(app.url("/setup"))
        .form(&[
            ("code", code),
            ("org", "Acme"),
            ("email", "nope"),
            ("csrf_token", &csrf_of(&html)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("needs an @") && body.contains("value=\"Acme\""),
        "{body}"
    );
    assert_eq!(orgs::count_organizations(app.db()).await.unwrap(), 0);

    let r = app
        .client
        .post(app.url("/setup"))
        .form(&[
            ("code", code),
            ("org", "Acme"),
            ("email", "Ada@Example.com"),
            ("csrf_token", &csrf_of(&html)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/settings/api-tokens");
    let cookie = set_cookie_for(&r, "keysmith_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let page = app.get("/settings/api-tokens").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Acme") && html.contains("ada@example.com"),
        "{html}"
    );

    // The code is single use and dies with the first organization.
    let again = new_client().get(app.url(&path)).send().await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already set up"));
    app.shutdown().await;
}

async fn signin_by_email_link_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(app.setup_url.is_some());
    bootstrap(&app, "ada@example.com").await;

    // Not signed in: pages redirect to sign-in, remembering where to return.
    let r = app.get("/settings/api-tokens?tab=1").await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/signin?next=/settings/api-tokens%3Ftab%3D1"
    );

    let r = app
        .post_form_with(
            &app.client,
            "/signin?next=/settings/api-tokens",
            "/signin",
            &[
                ("email", "ADA@example.com"),
                ("next", "/settings/api-tokens?tab=1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Check your inbox"));

    let mail = app.wait_for_dev_mail("ada@example.com", 1).await;
    assert_eq!(mail[0].subject, "Your Keysmith sign-in link");
    let link = mail[0].links[0].clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();

    // GET shows a button and changes nothing (mail scanners follow links).
    for _ in 0..2 {
        let page = app.get(&path).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("Sign in as ada@example.com") && html.contains("<button"),
            "{html}"
        );
    }
    assert_eq!(session_count(&app).await, 0);

    let r = app.post_form_with(&app.client, &path, &path, &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/settings/api-tokens?tab=1",
        "back where the user was going"
    );
    let cookie = set_cookie_for(&r, "keysmith_session").unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    let session_value = cookie.split(';').next().unwrap().to_string();
    assert_eq!(session_count(&app).await, 1);

    let page = app.get("/settings/api-tokens").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<meta name=\"csrf-token\"") && html.contains("hx-headers"),
        "{html}"
    );

    // Sign out: the session is deleted server-side; the old cookie gets nothing.
    let r = app
        .post_form_with(&app.client, "/settings/api-tokens", "/signout", &[])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(session_count(&app).await, 0);
    let replay = new_client()
        .get(app.url("/settings/api-tokens"))
        .header("cookie", &session_value)
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.status(),
        303,
        "the old cookie no longer signs anyone in"
    );
    app.shutdown().await;
}

async fn reused_link_gets_a_friendly_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    app.sign_in("ada@example.com").await;
    let link = app.dev_mail().await[0].links[0].clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    let other = new_client();
    let r = app.post_form_with(&other, &path, &path, &[]).await;
    assert_eq!(r.status(), 410);
    assert!(set_cookie_for(&r, "keysmith_session").is_none());
    let html = r.text().await.unwrap();
    assert!(
        html.contains("already used") && html.contains("href=\"/signin\""),
        "{html}"
    );
    app.shutdown().await;
}

async fn expired_link_gets_a_friendly_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let link = app.wait_for_dev_mail("ada@example.com", 1).await[0].links[0].clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    app.state.clock.advance(Duration::from_secs(11 * 60));
    let page = app.get(&path).await;
    assert_eq!(page.status(), 410);
    assert!(page.text().await.unwrap().contains("expired"));
    let r = app.post_form_with(&app.client, "/signin", &path, &[]).await;
    assert_eq!(r.status(), 410);
    assert_eq!(session_count(&app).await, 0);
    // An unknown (made-up) link is told apart, calmly.
    let r = app.get(&format!("/signin/link/{}", "ab".repeat(24))).await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("not valid"));
    app.shutdown().await;
}

async fn unknown_email_gets_the_same_answer_and_no_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    let known = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    let unknown = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "eve@example.com")],
        )
        .await;
    assert_eq!(known.status(), unknown.status());
    let known = known.text().await.unwrap().replace("ada@example.com", "X");
    let unknown = unknown
        .text()
        .await
        .unwrap()
        .replace("eve@example.com", "X");
    assert_eq!(
        known, unknown,
        "the page does not reveal whether an account exists"
    );
    app.wait_for_dev_mail("ada@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.dev_mail()
            .await
            .iter()
            .all(|m| m.to != "eve@example.com")
    );
    app.shutdown().await;
}

async fn twenty_parallel_posts_of_one_link_make_one_session(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    bootstrap(&app, "ada@example.com").await;
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let link = app.wait_for_dev_mail("ada@example.com", 1).await[0].links[0].clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    // One browser's form cookie and token, twenty requests at once; no
    // cookie store, so no request sees another's new session cookie.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = plain.get(app.url(&path)).send().await.unwrap();
    let form_cookie = set_cookie_for(&page, "keysmith_form")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = csrf_of(&page.text().await.unwrap());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (plain, url, csrf, cookie) = (
            plain.clone(),
            app.url(&path),
            csrf.clone(),
            form_cookie.clone(),
        );
        tasks.push(tokio::spawn(async move {
            plain
                .post(url)
                .header("cookie", cookie)
                .form(&[("csrf_token", csrf)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(session_count(&app).await, 1);
}

async fn disabled_member_cannot_sign_in_and_their_sessions_stop(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    app.sign_in("ada@example.com").await;
    assert_eq!(app.get("/settings/api-tokens").await.status(), 200);

    let mut tx = app.db().begin().await.unwrap();
    orgs::set_member_disabled(
        &mut tx,
        b.organization.id,
        b.user.id,
        true,
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let r = app.get("/settings/api-tokens").await;
    assert_eq!(r.status(), 303, "the live session stopped working");
    // A new link is not even sent.
    let before = app.dev_mail().await.len();
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.dev_mail().await.len(), before);
    app.shutdown().await;
}

async fn idle_session_ends(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_SESSION_IDLE_MINUTES", "30")]).await;
    bootstrap(&app, "ada@example.com").await;
    app.sign_in("ada@example.com").await;
    app.state.clock.advance(Duration::from_secs(20 * 60));
    assert_eq!(
        app.get("/settings/api-tokens").await.status(),
        200,
        "activity keeps it alive"
    );
    app.state.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(app.get("/settings/api-tokens").await.status(), 303);
    app.shutdown().await;
}

#[tokio::test]
async fn csrf_missing_or_wrong_is_403_and_changes_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    // Before signing in: the sign-in form needs the token too.
    let r = app
        .client
        .post(app.url("/signin"))
        .form(&[("email", "ada@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("security token"));
    let r = app
        .client
        .post(app.url("/signin"))
        .form(&[
            ("email", "ada@example.com"),
            ("csrf_token", &"0".repeat(64)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.dev_mail().await.is_empty(), "no mail was sent");

    app.sign_in("ada@example.com").await;
    let r = app.client.post(app.url("/signout")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .post(app.url("/signout"))
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.get("/settings/api-tokens").await.status(),
        200,
        "still signed in"
    );
    // htmx requests get a fragment, not a page.
    let r = app
        .client
        .post(app.url("/signout"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains("<html"));
    // The header form works.
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/signout"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    app.shutdown().await;
}

#[tokio::test]
async fn cross_origin_requests_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    let csrf = app.csrf_with(&app.client, "/signin").await;
    let r = app
        .client
        .post(app.url("/signin"))
        .header("origin", "https://evil.example")
        .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("another site"));
    // A browser on a no-referrer page sends Origin: null; Sec-Fetch-Site
    // tells whether it was really ours.
    for (site, expected) in [
        ("same-origin", 200),
        ("cross-site", 403),
        ("same-site", 403),
    ] {
        let r = app
            .client
            .post(app.url("/signin"))
            .header("origin", "null")
            .header("sec-fetch-site", site)
            .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            expected,
            "Origin: null with Sec-Fetch-Site: {site}"
        );
    }
    let r = app
        .client
        .post(app.url("/signin"))
        .header("origin", "null")
        .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "Origin: null without Sec-Fetch-Site is refused"
    );
    // The same request from our own origin goes through.
    let r = app
        .client
        .post(app.url("/signin"))
        .header("origin", &app.base_url)
        .form(&[("email", "ada@example.com"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn open_redirects_in_next_are_ignored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    let html = app
        .get("/signin?next=https://evil.example/x")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("name=\"next\" value=\"/settings/api-tokens\""),
        "{html}"
    );
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com"), ("next", "//evil.example/x")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let link = app.wait_for_dev_mail("ada@example.com", 1).await[0].links[0].clone();
    let path = link.strip_prefix(&app.base_url).unwrap().to_string();
    let r = app.post_form_with(&app.client, &path, &path, &[]).await;
    assert_eq!(r.headers()["location"], "/settings/api-tokens");
    app.shutdown().await;
}

#[tokio::test]
async fn link_requests_are_rate_limited_per_address() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    for _ in 0..5 {
        let r = app
            .post_form_with(
                &app.client,
                "/signin",
                "/signin",
                &[("email", "ada@example.com")],
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 429);
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(r.text().await.unwrap().contains("Too many sign-in links"));
    // Another address is not affected; after the window, Ada may ask again.
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "bob@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    app.state.clock.advance(Duration::from_secs(15 * 60 + 1));
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada@example.com")],
        )
        .await;
    assert_eq!(r.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_email_is_422_with_the_value_kept() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .post_form_with(
            &app.client,
            "/signin",
            "/signin",
            &[("email", "ada at example")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("value=\"ada at example\"") && html.contains("needs an @"),
        "{html}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn https_public_url_gives_host_prefixed_secure_cookies() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_PUBLIC_URL", "https://keys.example.com")],
    )
    .await;
    let r = app.get("/signin").await;
    let cookie =
        set_cookie_for(&r, "__Host-keysmith_form").expect("form cookie with __Host- prefix");
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn organization_switcher_changes_the_current_organization() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    let other = orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Globex").unwrap(),
        &EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    app.sign_in("ada@example.com").await;
    let html = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(
        html.contains("<option value=\"") && html.contains("Globex"),
        "{html}"
    );
    let r = app
        .post_form_with(
            &app.client,
            "/settings/api-tokens",
            "/session/organization",
            &[("organization_id", &other.organization.id.to_string())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = app.get("/settings/api-tokens").await.text().await.unwrap();
    let selected = format!(
        "<option value=\"{}\" selected>Globex",
        other.organization.id
    );
    assert!(html.contains(&selected), "{html}");
    // Not a member: refused.
    let r = app
        .post_form_with(
            &app.client,
            "/settings/api-tokens",
            "/session/organization",
            &[("organization_id", "9999")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = app
        .post_form_with(
            &app.client,
            "/settings/api-tokens",
            "/session/organization",
            &[("organization_id", "x")],
        )
        .await;
    assert_eq!(r.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn dev_mailbox_lists_messages_with_their_links() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    bootstrap(&app, "ada@example.com").await;
    app.post_form_with(
        &app.client,
        "/signin",
        "/signin",
        &[("email", "ada@example.com")],
    )
    .await;
    let mail = app.wait_for_dev_mail("ada@example.com", 1).await;
    let page = app.get("/dev/mail").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&mail[0].links[0]) && html.contains("Your Keysmith sign-in link"),
        "{html}"
    );
    // The .eml file is a real multipart message.
    let eml = std::fs::read(app.data_dir.join("mail").join(&mail[0].file)).unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&eml).unwrap();
    assert!(parsed.body_text(0).unwrap().contains(&mail[0].links[0]));
    assert!(parsed.body_html(0).unwrap().contains(&mail[0].links[0]));
    app.shutdown().await;
}

#[tokio::test]
async fn link_requests_are_rate_limited_per_client_ip() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let csrf = app.csrf_with(&app.client, "/signin").await;
    let ask = |n: usize| {
        let (client, url, csrf) = (app.client.clone(), app.url("/signin"), csrf.clone());
        async move {
            let email = format!("person{n}@example.com");
            client
                .post(url)
                .form(&[("email", email.as_str()), ("csrf_token", csrf.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    // Different addresses, one client: the per-IP budget (30 per 15 minutes).
    let answers = futures_join_all((0..30).map(ask)).await;
    assert!(answers.iter().all(|r| r.status() == 200));
    let r = ask(30).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("Too many sign-in links"));
    app.shutdown().await;
}

/// Runs the requests concurrently (each takes the fixed minimum time).
async fn futures_join_all<F: std::future::Future<Output = reqwest::Response> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<reqwest::Response> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
