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
    the_list_pages_fifty_at_a_time_with_links,
    a_page_that_spans_two_groups_reads_both_in_order,
    search_filter_and_sort_narrow_the_list_in_sql,
    bad_list_queries_get_a_400_that_says_what_to_fix,
    status_badges_say_expires_soon_and_switches_say_their_state,
    htmx_actions_announce_the_same_message_as_the_plain_path,
    the_create_form_offers_only_what_the_policy_allows,
    a_custom_date_error_does_not_name_a_format_the_field_hides,
    a_members_token_page_on_team_pages_and_searches_too,
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
        page.contains("<span>read</span><span>write</span>")
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
    assert!(html.contains(&format!("claude mcp add --transport http keysmith https://api.acme.test/mcp --header &#39;Authorization: Bearer {token}&#39;"))
        || html.contains(&format!("claude mcp add --transport http keysmith https://api.acme.test/mcp --header &#x27;Authorization: Bearer {token}&#x27;")), "{html}");
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

/// Seeds `n` tokens for the owner straight into the store (creating them
/// through the page would hit the creation rate limit): labels `seed 000`…,
/// created one second apart so the order is known.
pub async fn seed_tokens(
    app: &TestApp,
    b: &keysmith::store::orgs::Bootstrapped,
    n: usize,
    scope: &str,
) -> Vec<i64> {
    use keysmith::store::tokens;
    let scopes = keysmith::token::ScopeCatalogue::default()
        .parse_set([scope])
        .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let plain = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);
        let label = keysmith::domain::TokenLabel::parse(&format!("seed {i:03}")).unwrap();
        let id = tokens::create(
            &mut tx,
            &tokens::NewToken {
                user_id: b.user.id,
                organization_id: b.organization.id,
                label: &label,
                display_prefix: &plain.display_prefix(),
                digest: &plain.digest(),
                scopes: &scopes,
                expires_at: None,
                project_ids: &[],
                created_ip: None,
                created_user_agent: None,
            },
        )
        .await
        .unwrap();
        sqlx::query("UPDATE api_tokens SET created_at = $1 WHERE id = $2")
            .bind(1_700_000_000 + i as i64)
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

fn count_rows(html: &str) -> usize {
    html.matches("class=\"token-row ").count()
}

async fn the_list_pages_fifty_at_a_time_with_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    seed_tokens(&app, &b, 120, "read").await;

    let first = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert_eq!(count_rows(&first), 50, "fifty a page");
    assert!(
        first.contains("Enabled <span class=\"count\">120</span>"),
        "the heading counts them all"
    );
    assert!(first.contains("Showing 1–50 of 120") && first.contains("Page 1 of 3"));
    assert!(
        first.contains("seed 119") && !first.contains("seed 069"),
        "newest first"
    );
    assert!(
        first.contains("href=\"/settings/api-tokens?page=2\""),
        "a plain link to the next page"
    );
    assert!(!first.contains("rel=\"prev\""));

    let third = app
        .get("/settings/api-tokens?page=3")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&third), 20);
    assert!(third.contains("seed 000") && third.contains("Showing 101–120 of 120"));
    assert!(
        third.contains("href=\"/settings/api-tokens?page=2\"") && !third.contains("rel=\"next\"")
    );

    // The enhanced links ask for just the list.
    let fragment = htmx(app.client.get(app.url("/settings/api-tokens?page=2")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fragment.starts_with("<div id=\"token-list\"") && !fragment.contains("<html"));
    assert_eq!(count_rows(&fragment), 50);
    app.shutdown().await;
}

/// A page is cut from the groups by their counts (working, then disabled
/// and expired, then revoked): one that straddles a boundary holds the end
/// of one group and the start of the next, each newest first.
async fn a_page_that_spans_two_groups_reads_both_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let ids = seed_tokens(&app, &b, 75, "read").await;
    // The 30 oldest disabled, the 5 oldest of those revoked instead.
    for (i, id) in ids.iter().enumerate().take(30) {
        let column = if i < 5 { "revoked_at" } else { "disabled_at" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET {column} = 1700000000 WHERE id = $1"
        )))
        .bind(*id)
        .execute(app.db().pool())
        .await
        .unwrap();
    }
    let first = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(first.contains("Enabled <span class=\"count\">45</span>"));
    assert!(first.contains("Disabled and expired <span class=\"count\">25</span>"));
    let (working, stopped) = first.split_at(first.find("id=\"disabled-tokens\"").unwrap());
    assert_eq!(count_rows(working), 45);
    assert_eq!(
        count_rows(stopped),
        5,
        "the page ends with the newest disabled"
    );
    assert!(stopped.contains("seed 029") && stopped.contains("seed 025"));
    assert!(!first.contains("seed 024"), "the rest is on page 2");
    // One CSRF field for the whole list, not one per row.
    assert_eq!(
        first.matches("name=\"csrf_token\"").count(),
        3,
        "sign-out, the new-IP alerts switch and the shared toggle form"
    );

    let all = app
        .get("/settings/api-tokens?status=all&page=2")
        .await
        .text()
        .await
        .unwrap();
    assert!(all.contains("Showing 51–75 of 75"));
    let (stopped, revoked) = all.split_at(all.find("id=\"revoked-tokens\"").unwrap());
    assert_eq!(count_rows(stopped), 20);
    assert!(stopped.contains("seed 024") && stopped.contains("seed 005"));
    assert_eq!(count_rows(revoked), 5);
    assert!(revoked.contains("seed 004") && revoked.contains("seed 000"));
    assert!(!all.contains("seed 025") && !all.contains("seed 074"));
    app.shutdown().await;
}

async fn search_filter_and_sort_narrow_the_list_in_sql(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let ids = seed_tokens(&app, &b, 30, "read").await;
    seed_tokens_labelled(&app, &b, &["deploy_bot", "deploy%x"], "write").await;

    // Search: label, case-insensitive, LIKE characters taken literally.
    let page = app
        .get("/settings/api-tokens?q=SEED%20012")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 1, "{page}");
    assert!(page.contains("seed 012"));
    let page = app
        .get("/settings/api-tokens?q=deploy_")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 1, "_ is not a wildcard");
    assert!(page.contains("deploy_bot") && page.contains("Clear filters"));
    // Search: the display prefix.
    let prefix: (String,) = sqlx::query_as("SELECT display_prefix FROM api_tokens WHERE id = $1")
        .bind(ids[7])
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    let page = app
        .get(&format!("/settings/api-tokens?q={}", prefix.0))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("seed 007") && count_rows(&page) == 1,
        "{page}"
    );

    // Scope: whole names only (`write` tokens; `read` ones are not `write`).
    let page = app
        .get("/settings/api-tokens?scope=write")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 2);

    // Status: disable one, filter.
    sqlx::query("UPDATE api_tokens SET disabled_at = 1 WHERE id = $1")
        .bind(ids[3])
        .execute(app.db().pool())
        .await
        .unwrap();
    let page = app
        .get("/settings/api-tokens?status=disabled")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 1);
    assert!(page.contains("seed 003") && page.contains("badge-disabled"));
    let page = app
        .get("/settings/api-tokens?status=enabled")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 31);

    // Sort: last used first, never-used last.
    sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
        .bind(app.state.clock.unix() - 60)
        .bind(ids[0])
        .execute(app.db().pool())
        .await
        .unwrap();
    let page = app
        .get("/settings/api-tokens?sort=last_used")
        .await
        .text()
        .await
        .unwrap();
    let used = page.find("seed 000").unwrap();
    let newest = page.find("seed 029").unwrap();
    assert!(used < newest, "the used token comes first");

    // Project: none restricted, so the unrestricted filter keeps them all.
    let page = app
        .get("/settings/api-tokens?project=none&q=seed")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(">30 tokens · "), "{page}");
    app.shutdown().await;
}

async fn seed_tokens_labelled(
    app: &TestApp,
    b: &keysmith::store::orgs::Bootstrapped,
    labels: &[&str],
    scope: &str,
) {
    use keysmith::store::tokens;
    let scopes = keysmith::token::ScopeCatalogue::default()
        .parse_set([scope])
        .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    for l in labels {
        let plain = keysmith::token::PlainToken::generate(&app.state.config.token_prefix);
        let label = keysmith::domain::TokenLabel::parse(l).unwrap();
        tokens::create(
            &mut tx,
            &tokens::NewToken {
                user_id: b.user.id,
                organization_id: b.organization.id,
                label: &label,
                display_prefix: &plain.display_prefix(),
                digest: &plain.digest(),
                scopes: &scopes,
                expires_at: None,
                project_ids: &[],
                created_ip: None,
                created_user_agent: None,
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn bad_list_queries_get_a_400_that_says_what_to_fix(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    for (query, says) in [
        ("status=gone", "Unknown status filter"),
        ("sort=label", "Unknown sort"),
        ("page=0", "The page is a number from 1"),
        ("page=x", "The page is a number from 1"),
        ("scope=admin", "Unknown scope"),
        ("project=abc", "The project filter takes a project id"),
    ] {
        let r = app.get(&format!("/settings/api-tokens?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{query}: {body}");
    }
    let long = "x".repeat(101);
    let r = app.get(&format!("/settings/api-tokens?q={long}")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at most 100 characters"));
    app.shutdown().await;
}

async fn status_badges_say_expires_soon_and_switches_say_their_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let ids = seed_tokens(&app, &b, 3, "read").await;
    let now = app.state.clock.unix();
    sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE id = $2")
        .bind(now + 5 * 86_400)
        .bind(ids[0])
        .execute(app.db().pool())
        .await
        .unwrap();
    sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE id = $2")
        .bind(now - 60)
        .bind(ids[1])
        .execute(app.db().pool())
        .await
        .unwrap();
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    let row = |id: i64| {
        let start = page.find(&format!("id=\"token-{id}\"")).unwrap();
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    let soon = row(ids[0]);
    assert!(
        soon.contains("badge-expiring\">Expires soon") && soon.contains("in 5 days"),
        "{soon}"
    );
    let expired = row(ids[1]);
    assert!(
        expired.contains("badge-expired\">Expired") && expired.contains("Expired 1 minute ago"),
        "{expired}"
    );
    assert!(
        !expired.contains("role=\"switch\""),
        "no switch on an expired token"
    );
    let on = row(ids[2]);
    assert!(
        on.contains("aria-checked=\"true\"")
            && on.contains(">Enabled</button>")
            && !on.contains(">Disable<"),
        "the switch states its state: {on}"
    );
    let page = app
        .get("/settings/api-tokens?status=expiring")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 1);
    let page = app
        .get("/settings/api-tokens?status=expired")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&page), 1);
    app.shutdown().await;
}

async fn htmx_actions_announce_the_same_message_as_the_plain_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let (id, _) = app.create_key("first name").await;
    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/rename"),
        &[("label", "second name")],
        true,
    )
    .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("hx-swap-oob=\"innerHTML:#flash\"")
            && html.contains("role=\"status\">Renamed to “second name”."),
        "{html}"
    );
    let r = form_post(
        &app,
        &format!("/settings/api-tokens/{id}/toggle"),
        &[("enabled", "false")],
        true,
    )
    .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("role=\"status\">“second name” is disabled."),
        "{html}"
    );
    // And the plain path says the same on the next page.
    form_post(
        &app,
        &format!("/settings/api-tokens/{id}/toggle"),
        &[("enabled", "true")],
        false,
    )
    .await;
    let page = app.get("/settings/api-tokens").await.text().await.unwrap();
    assert!(page.contains("“second name” is enabled."));
    app.shutdown().await;
}

async fn the_create_form_offers_only_what_the_policy_allows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let form = app
        .get("/settings/api-tokens/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(form.contains("value=\"never\"") && form.contains("value=\"90\""));
    assert!(form.contains("30 days (until "), "a preset says its date");

    sqlx::query("UPDATE organizations SET max_token_lifetime_days = 30, allowed_scopes = 'read' WHERE id = $1")
        .bind(b.organization.id)
        .execute(app.db().pool())
        .await
        .unwrap();
    let form = app
        .get("/settings/api-tokens/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(!form.contains("value=\"never\""), "no No expiry");
    assert!(!form.contains("value=\"60\"") && !form.contains("value=\"90\""));
    assert!(form.contains("value=\"30\" selected"));
    assert!(
        form.contains("tokens must expire within 30 days"),
        "the limit is stated"
    );
    assert!(!form.contains("value=\"write\""), "write is not grantable");
    let max = crate::tokens_page::date_in(&app, 30);
    assert!(
        form.contains(&format!("max=\"{max}\"")),
        "the date field stops at the limit"
    );

    // A failed submit: a summary announced, the first invalid field marked.
    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[("label", ""), ("expiry", "30"), ("scopes", "read")],
        true,
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\" id=\"form-errors\">1 field needs attention: Label."),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\" aria-describedby=\"label-error\""));
    app.shutdown().await;
}

pub fn date_in(app: &TestApp, days: i64) -> String {
    let at = app.state.clock.now() + time::Duration::days(days);
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

async fn a_custom_date_error_does_not_name_a_format_the_field_hides(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[
            ("label", "dated"),
            ("scopes", "read"),
            ("expiry", "custom"),
            ("expiry_date", ""),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Choose a date after today.") && !html.contains("YYYY"),
        "{html}"
    );
    let r = form_post(
        &app,
        "/settings/api-tokens",
        &[
            ("label", "dated"),
            ("scopes", "read"),
            ("expiry", "custom"),
            ("expiry_date", "12/31/2030"),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Enter a date after today") && !html.contains("YYYY"),
        "{html}"
    );
    app.shutdown().await;
}

async fn a_members_token_page_on_team_pages_and_searches_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = app.signed_in_superuser("ada@example.com").await;
    let ids = seed_tokens(&app, &b, 60, "read").await;
    sqlx::query("UPDATE api_tokens SET revoked_at = 1 WHERE id = $1")
        .bind(ids[59])
        .execute(app.db().pool())
        .await
        .unwrap();
    let path = format!("/team/members/{}", b.user.id);
    let page = app.get(&path).await.text().await.unwrap();
    assert_eq!(count_rows(&page), 50, "fifty a page");
    assert!(
        page.contains("Showing 1–50 of 60"),
        "revoked included by default"
    );
    assert!(
        page.contains("Tokens <span class=\"count\">59</span>"),
        "unrevoked, for Revoke all"
    );
    assert!(
        page.contains(&format!("href=\"{path}?status=all&#38;page=2\"")),
        "a plain link to page 2"
    );
    let second = app
        .get(&format!("{path}?page=2"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&second), 10);
    assert!(
        second.contains("id=\"member-revoked-tokens\"")
            || page.contains("id=\"member-revoked-tokens\"")
    );

    let found = app
        .get(&format!("{path}?q=seed+04"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count_rows(&found), 10, "seed 040–049");
    let fragment = htmx(app.client.get(app.url(&format!("{path}?status=revoked"))))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        fragment.starts_with("<div id=\"member-tokens\""),
        "{fragment}"
    );
    assert_eq!(count_rows(&fragment), 1);
    let r = app.get(&format!("{path}?sort=random")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Unknown sort"));
    app.shutdown().await;
}
