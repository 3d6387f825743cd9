//! `/settings/api-tokens` over HTTP: htmx fragments and plain-form fallbacks.

use std::time::Duration;

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    plain_form_create_shows_the_plaintext_once,
    htmx_create_returns_the_dialog_and_the_new_list,
    rename_inline_and_as_a_plain_form,
    toggle_moves_the_row_and_blocks_the_token,
    revoke_through_the_confirm_step,
);

fn htmx(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("hx-request", "true")
}

async fn form_post(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    htmx_request: bool,
) -> reqwest::Response {
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf_token", &csrf));
    let req = app.client.post(app.url(path)).form(&form);
    let req = if htmx_request { htmx(req) } else { req };
    req.send().await.unwrap()
}

fn plaintext_in(html: &str) -> String {
    let marker = "id=\"token-plaintext\" class=\"token-plaintext\" type=\"text\" readonly value=\"";
    let start = html.find(marker).expect("plaintext field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

async fn plain_form_create_shows_the_plaintext_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("No API tokens yet"), "empty state");

    let new = app.get("/settings/api-tokens/new").await;
    assert_eq!(new.status(), 200);
    let html = new.text().await.unwrap();
    assert!(
        html.contains("<html") && html.contains("name=\"label\""),
        "a full page without htmx"
    );

    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[
            ("label", "laptop"),
            ("scopes", "read"),
            ("scopes", "write"),
            ("expiry", "30"),
        ],
        false,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("You will not see it again"));
    let token = plaintext_in(&html);
    assert_eq!(app.whoami_status(&token).await, 200);

    let page = app.get("/settings/api-tokens").await;
    assert_eq!(page.headers()["cache-control"], "no-store");
    let page = page.text().await.unwrap();
    assert!(
        page.contains("laptop") && !page.contains(&token),
        "reloading never shows it again"
    );
    assert!(page.contains("Enabled <span class=\"count\">1</span>"));
    assert!(
        page.contains("<span class=\"chip\">read</span><span class=\"chip\">write</span>")
            && page.contains("in 30 days")
            && page.contains("Never used")
    );
    app.shutdown().await;
}

async fn htmx_create_returns_the_dialog_and_the_new_list(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("KEYSMITH_MCP_URL", "https://api.acme.test/mcp")],
    )
    .await;
    app.signed_in_superuser("ada@example.com").await;
    let form = htmx(app.client.get(app.url("/settings/api-tokens/new")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !form.contains("<html") && form.contains("hx-post=\"/settings/api-tokens\""),
        "a fragment for the dialog"
    );

    // Invalid: 422, the form again with the message and the values kept.
    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[
            ("label", " "),
            ("scopes", "write"),
            ("expiry", "custom"),
            ("expiry_date", "2001-01-01"),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Enter a label.") && html.contains("The expiry must be in the future."),
        "{html}"
    );
    assert!(
        html.contains("value=\"write\" checked") && html.contains("value=\"2001-01-01\""),
        "{html}"
    );

    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[("label", "agent"), ("scopes", "write"), ("expiry", "never")],
        true,
    )
    .await;
    assert_eq!(r.status(), 201);
    let html = r.text().await.unwrap();
    assert!(!html.contains("<html"));
    let token = plaintext_in(&html);
    assert!(
        html.contains("id=\"token-list\" class=\"token-list\" hx-swap-oob=\"outerHTML\""),
        "the list is refreshed behind the dialog"
    );
    // The MCP card carries the token in every command.
    assert!(html.contains(&format!("claude mcp add --transport http keysmith https://api.acme.test/mcp --header &#34;Authorization: Bearer {token}&#34;"))
        || html.contains(&format!("claude mcp add --transport http keysmith https://api.acme.test/mcp --header &quot;Authorization: Bearer {token}&quot;")), "{html}");
    assert!(html.contains("codex mcp add keysmith --url https://api.acme.test/mcp --bearer-token-env-var KEYSMITH_TOKEN"));
    assert!(
        html.contains("code --add-mcp")
            && html.contains(
                "cursor://anysphere.cursor-deeplink/mcp/install?name=keysmith&#38;config="
            ),
        "{html}"
    );
    app.shutdown().await;
}

async fn rename_inline_and_as_a_plain_form(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = app.create_key("first").await;
    app.create_key("second").await;

    let editor = htmx(
        app.client
            .get(app.url(&format!("/settings/api-tokens/{id}/rename"))),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        editor.contains("data-rename-input") && editor.contains("value=\"first\""),
        "{editor}"
    );
    let cancel = htmx(
        app.client
            .get(app.url(&format!("/settings/api-tokens/{id}/label"))),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(cancel.contains(">first</a>"), "{cancel}");

    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/rename"),
        &[("label", "Second")],
        true,
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("already have a token named") && html.contains("value=\"Second\""),
        "{html}"
    );

    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/rename"),
        &[("label", "  renamed  ")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(">renamed</a>"));

    // Without JavaScript: a page, then a redirect with a message.
    let page = app
        .get(&format!("/settings/api-tokens/{id}/rename"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html") && page.contains("Rename"));
    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/rename"),
        &[("label", "plain")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("Renamed to “plain”."), "flash message");
    let again = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(!again.contains("Renamed to"), "the message shows once");
    app.shutdown().await;
}

async fn toggle_moves_the_row_and_blocks_the_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("toggled").await;
    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/toggle"),
        &[("enabled", "false")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let disabled_at = html
        .find("id=\"disabled-tokens\"")
        .expect("a Disabled section");
    assert!(
        html[disabled_at..].contains(&format!("id=\"token-{id}\"")),
        "the row moved to Disabled"
    );
    assert_eq!(app.whoami_status(&token).await, 401);

    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/toggle"),
        &[("enabled", "true")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.whoami_status(&token).await, 200);
    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/toggle"),
        &[("enabled", "maybe")],
        true,
    )
    .await;
    assert_eq!(r.status(), 400);

    // An expired token is listed with the disabled ones, as expired.
    let r = app
        .api(reqwest::Method::POST, "/api/user/api-keys", Some(serde_json::json!({ "label": "short", "expiresAt": (time::OffsetDateTime::now_utc() + time::Duration::hours(2)).format(&time::format_description::well_known::Rfc3339).unwrap() })))
        .await;
    assert_eq!(r.status(), 201);
    app.state.clock.advance(Duration::from_secs(3 * 3600));
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    let disabled_at = page.find("id=\"disabled-tokens\"").unwrap();
    assert!(page[disabled_at..].contains("badge-expired"), "{page}");
    app.shutdown().await;
}

async fn revoke_through_the_confirm_step(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("doomed").await;
    let confirm = htmx(
        app.client
            .get(app.url(&format!("/settings/api-tokens/{id}/revoke"))),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(confirm.contains("Revoke “doomed”?") && confirm.contains("cannot be undone"));
    assert!(!confirm.contains("Still in use"), "never used: no warning");

    // Used within the last day: the dialog warns.
    assert_eq!(app.whoami_status(&token).await, 200);
    app.state.verifier.flush_last_used().await.unwrap();
    let confirm = htmx(
        app.client
            .get(app.url(&format!("/settings/api-tokens/{id}/revoke"))),
    )
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        confirm.contains("Still in use") && confirm.contains("GET /api/v2/whoami"),
        "{confirm}"
    );

    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/revoke"),
        &[],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        !html.contains(&format!("id=\"token-{id}\"")),
        "the row is gone"
    );
    assert_eq!(app.whoami_status(&token).await, 401);

    // "Show revoked" lists the tombstone, read-only.
    let page = app
        .get("/settings/api-tokens?revoked=1")
        .await
        .text()
        .await
        .unwrap();
    let revoked_at = page.find("id=\"revoked-tokens\"").expect("revoked section");
    let section = &page[revoked_at..];
    assert!(section.contains("doomed") && section.contains("badge-revoked"));
    assert!(
        !section.contains(&format!("/settings/api-tokens/{id}/toggle")),
        "no actions on a tombstone"
    );
    // Revoking again, or opening its confirm page, is a 404.
    assert_eq!(
        form_post(
            &app,
            &format!("/settings/api-tokens/{id}/revoke"),
            &[],
            false
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/settings/api-tokens/{id}/revoke"))
            .await
            .status(),
        404
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_or_malformed_ids_are_404_pages() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_in_superuser("ada@example.com").await;
    for path in [
        "/settings/api-tokens/999/rename",
        "/settings/api-tokens/abc/revoke",
        "/settings/api-tokens/-1/rename",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.text().await.unwrap().contains("<html"),
            "{path}: a page, not a bare error"
        );
    }
    app.shutdown().await;
}
