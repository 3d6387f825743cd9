//! A member's tokens from the Team page: read-only rows, Disable and Revoke
//! by the superuser, and "Revoke all".

use keysmith::store::tokens;

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::bearer::{Spec, mint};
use crate::harness::{Backend, TestApp};

backend_tests!(
    a_superuser_disables_and_revokes_a_members_token,
    revoke_all_says_how_many_and_revokes_them,
    a_token_a_superuser_disabled_stays_disabled_until_a_superuser_enables_it,
    an_action_keeps_the_search_and_page_the_superuser_is_on,
    regenerating_refreshes_the_row_behind_the_dialog,
);

async fn a_superuser_disables_and_revokes_a_members_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, ci) = member_with_token(&app, &org, "bob@example.com", "CI deploys").await;
    let laptop = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "laptop",
            ..Spec::default()
        },
    )
    .await;

    let page = text(app.get(&format!("/team/members/{bob}")).await).await;
    assert!(page.contains("CI deploys") && page.contains("laptop"));
    assert!(page.contains("Revoke all tokens of this member"));
    assert!(
        !page.contains("/rename"),
        "the owner's rename is not offered"
    );
    assert!(!page.contains("/settings/api-tokens/"), "no owner actions");

    // Disable, then enable again.
    let path = format!("/team/members/{bob}/tokens/{}/toggle", ci.id);
    let r = team_post(&app, &path, &[("enabled", "false")], true).await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.starts_with("<div id=\"member-tokens\""));
    assert_eq!(app.whoami_status(&ci.token).await, 401);
    let r = team_post(&app, &path, &[("enabled", "true")], false).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.whoami_status(&ci.token).await, 200);

    // Revoke through the confirm step.
    let confirm = app
        .client
        .get(app.url(&format!("/team/members/{bob}/tokens/{}/revoke", ci.id)))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    let confirm = text(confirm).await;
    assert!(
        confirm.contains("Revoke “CI deploys” of bob@example.com?") && !confirm.contains("<html")
    );
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/tokens/{}/revoke", ci.id),
        &[],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    let list = text(r).await;
    assert!(list.contains("id=\"member-revoked-tokens\""), "{list}");
    assert_eq!(app.whoami_status(&ci.token).await, 401);
    assert_eq!(app.whoami_status(&laptop.token).await, 200, "only that one");

    let (reason, by): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT revoked_reason, revoked_by_user_id FROM api_tokens WHERE id = $1")
            .bind(ci.id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("superuser"));
    assert_eq!(by, Some(org.owner));
    let audit = app.audit_actions(ci.id).await;
    let last = audit.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.3),
        ("token.revoked", Some(org.owner))
    );
    // Revoking again is a 404, not a second revocation.
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/tokens/{}/revoke", ci.id),
        &[],
        false,
    )
    .await;
    assert_eq!(r.status(), 404);

    let mail = app.wait_for_dev_mail("bob@example.com", 2).await;
    assert!(
        mail.iter()
            .any(|m| m.subject == "Your API token “CI deploys” was disabled in Acme")
    );
    assert!(
        mail.iter()
            .any(|m| m.subject == "API token “CI deploys” was revoked in Acme")
    );
    app.shutdown().await;
}

async fn revoke_all_says_how_many_and_revokes_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, first) = member_with_token(&app, &org, "bob@example.com", "one").await;
    let second = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "two",
            ..Spec::default()
        },
    )
    .await;
    let third = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "three",
            ..Spec::default()
        },
    )
    .await;
    let (_, carols) = member_with_token(&app, &org, "carol@example.com", "one").await;

    let r = app.get(&format!("/team/members/{bob}/revoke-all")).await;
    assert_eq!(r.status(), 200);
    let confirm = text(r).await;
    assert!(
        confirm.contains("Revoke all 3 tokens of bob@example.com?"),
        "{confirm}"
    );
    assert!(confirm.contains("Revoke 3 tokens</button>"));

    let r = team_post(&app, &format!("/team/members/{bob}/revoke-all"), &[], false).await;
    assert_eq!(r.status(), 303);
    for t in [&first, &second, &third] {
        assert_eq!(app.whoami_status(&t.token).await, 401);
    }
    assert_eq!(
        app.whoami_status(&carols.token).await,
        200,
        "other members untouched"
    );
    let rows = tokens::list_for_owner(app.db(), org.id, bob, true)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "tombstones kept");
    assert!(rows.iter().all(|t| t.revoked_at.is_some()));
    let page = text(app.get(&format!("/team/members/{bob}")).await).await;
    assert!(page.contains("3 tokens revoked"), "flash");
    assert!(
        !page.contains("id=\"revoke-all\""),
        "nothing left to revoke"
    );
    app.shutdown().await;
}

/// A PATCH or form POST from `client` with the CSRF token of the settings page.
async fn owner_request(
    app: &TestApp,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    json: Option<serde_json::Value>,
    form: &[(&str, &str)],
    htmx: bool,
) -> reqwest::Response {
    let csrf = app.csrf_with(client, "/settings/api-tokens").await;
    let mut req = client.request(method, app.url(path));
    if let Some(body) = json {
        req = req.header("x-csrf-token", &csrf).json(&body);
    } else {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf_token", &csrf));
        req = req.form(&fields);
    }
    if htmx {
        req = req.header("hx-request", "true");
    }
    req.send().await.unwrap()
}

async fn token_state(app: &TestApp, id: i64) -> (String, Option<i64>) {
    sqlx::query_as("SELECT label, disabled_at FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_one(app.db().pool())
        .await
        .unwrap()
}

async fn a_token_a_superuser_disabled_stays_disabled_until_a_superuser_enables_it(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, ci) = member_with_token(&app, &org, "bob@example.com", "CI deploys").await;
    let bob_client = client_for(&app, "bob@example.com").await;
    let team_toggle = format!("/team/members/{bob}/tokens/{}/toggle", ci.id);
    let r = team_post(&app, &team_toggle, &[("enabled", "false")], false).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.whoami_status(&ci.token).await, 401);
    let audit_before = app.audit_actions(ci.id).await.len();
    let refusal =
        "A superuser (ada@example.com) disabled this token; ask a superuser to enable it.";

    // The JSON API refuses, and a rename sent along changes nothing either.
    let api_path = format!("/api/user/api-keys/{}", ci.id);
    for body in [
        serde_json::json!({ "enabled": true }),
        serde_json::json!({ "label": "renamed", "enabled": true }),
    ] {
        let r = owner_request(
            &app,
            &bob_client,
            reqwest::Method::PATCH,
            &api_path,
            Some(body),
            &[],
            false,
        )
        .await;
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], refusal, "{body}");
    }
    // So do the settings page's switch (htmx) and its no-JS form.
    let page_toggle = format!("/settings/api-tokens/{}/toggle", ci.id);
    for htmx in [true, false] {
        let r = owner_request(
            &app,
            &bob_client,
            reqwest::Method::POST,
            &page_toggle,
            None,
            &[("enabled", "true")],
            htmx,
        )
        .await;
        assert_eq!(r.status(), 403, "htmx: {htmx}");
        assert!(text(r).await.contains(refusal), "htmx: {htmx}");
    }
    assert_eq!(app.whoami_status(&ci.token).await, 401, "still disabled");
    let (label, disabled_at) = token_state(&app, ci.id).await;
    assert_eq!(label, "CI deploys");
    assert!(disabled_at.is_some());
    assert_eq!(
        app.audit_actions(ci.id).await.len(),
        audit_before,
        "no audit event"
    );

    // The owner's page shows the switch locked, and by whom; no form to flip it.
    let page = text(
        bob_client
            .get(app.url("/settings/api-tokens"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains("Disabled by ada@example.com"), "{page}");
    assert!(page.contains("aria-disabled=\"true\""), "a locked switch");
    assert!(
        !page.contains(&format!("action=\"{page_toggle}\"")),
        "no toggle form"
    );
    // The Team page says who disabled it.
    let member_page = text(app.get(&format!("/team/members/{bob}")).await).await;
    assert!(
        member_page.contains("Disabled by ada@example.com"),
        "{member_page}"
    );

    // A superuser lifts it; then the owner may toggle it as before.
    let r = team_post(&app, &team_toggle, &[("enabled", "true")], true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.whoami_status(&ci.token).await, 200);
    for enabled in [false, true] {
        let r = owner_request(
            &app,
            &bob_client,
            reqwest::Method::PATCH,
            &api_path,
            Some(serde_json::json!({ "enabled": enabled })),
            &[],
            false,
        )
        .await;
        assert_eq!(r.status(), 200, "enabled: {enabled}");
    }
    assert_eq!(app.whoami_status(&ci.token).await, 200);
    app.shutdown().await;
}

/// An htmx POST from the page at `current` (what htmx sends as
/// `HX-Current-URL`), with the Team page's CSRF token.
async fn htmx_post_from(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    current: &str,
) -> reqwest::Response {
    let csrf = app.csrf_with(&app.client, "/team").await;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf_token", &csrf));
    app.client
        .post(app.url(path))
        .form(&form)
        .header("hx-request", "true")
        .header("hx-current-url", app.url(current))
        .send()
        .await
        .unwrap()
}

async fn an_action_keeps_the_search_and_page_the_superuser_is_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, alpha) = member_with_token(&app, &org, "bob@example.com", "alpha one").await;
    for label in ["alpha two", "beta"] {
        mint(
            &app,
            org.id,
            bob,
            Spec {
                label,
                ..Spec::default()
            },
        )
        .await;
    }
    let toggle = format!("/team/members/{bob}/tokens/{}/toggle", alpha.id);
    let searched = format!("/team/members/{bob}?q=alpha&sort=expiry");

    // Disabling from a search for "alpha": the list that comes back is
    // still that search, with the token now switched off.
    let r = htmx_post_from(&app, &toggle, &[("enabled", "false")], &searched).await;
    assert_eq!(r.status(), 200);
    let list = text(r).await;
    assert!(
        list.contains("alpha one") && list.contains("alpha two"),
        "{list}"
    );
    assert!(!list.contains(">beta<"), "the search is kept: {list}");
    assert!(
        list.contains("value=\"alpha\""),
        "the search box keeps its words"
    );
    assert!(
        list.contains(&format!(
            "id=\"token-{}-toggle\" class=\"switch\" role=\"switch\" aria-checked=\"false\"",
            alpha.id
        )),
        "a switch that says its state: {list}"
    );
    assert!(list.contains("“alpha one” is disabled."), "announced");

    // From another member's page, or an address that is not a list of
    // Bob's: the first page, unfiltered.
    for current in [
        format!("/team/members/{}?q=nothing-matches", org.owner),
        "/team?q=alpha".to_string(),
    ] {
        let r = htmx_post_from(&app, &toggle, &[("enabled", "true")], &current).await;
        assert_eq!(r.status(), 200);
        let list = text(r).await;
        assert!(
            list.contains(">beta<") && list.contains("alpha one"),
            "{current}: {list}"
        );
    }
    // An unreadable query on the page falls back to the first page; the
    // action itself is not refused for it.
    let bad = format!("/team/members/{bob}?page=lots");
    let r = htmx_post_from(&app, &toggle, &[("enabled", "false")], &bad).await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains(">beta<"));
    assert_eq!(
        app.whoami_status(&alpha.token).await,
        401,
        "the action happened"
    );
    app.shutdown().await;
}

async fn regenerating_refreshes_the_row_behind_the_dialog(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, t) = member_with_token(&app, &org, "bob@example.com", "bob's ci").await;
    let prefix_of = |app: &TestApp| {
        let db = app.db().clone();
        let org = org.id;
        let id = t.id;
        async move {
            tokens::list_for_owner(&db, org, bob, false)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.id == id)
                .unwrap()
                .display_prefix
        }
    };
    let old_prefix = prefix_of(&app).await;
    let path = format!("/team/members/{bob}/tokens/{}/regenerate", t.id);
    let r = htmx_post_from(
        &app,
        &path,
        &[("grace_seconds", "0")],
        &format!("/team/members/{bob}?q=ci"),
    )
    .await;
    assert_eq!(r.status(), 201);
    let html = text(r).await;
    assert!(
        html.contains("<div id=\"member-tokens\" class=\"token-list\" hx-swap-oob=\"outerHTML\">"),
        "the member's list is swapped in behind the dialog: {html}"
    );
    let behind = &html[html.find("id=\"member-tokens\"").unwrap()..];
    let new_prefix = prefix_of(&app).await;
    assert_ne!(new_prefix, old_prefix);
    assert!(behind.contains(&format!("{new_prefix}…")), "the new prefix");
    assert!(
        !behind.contains(&format!("{old_prefix}…")),
        "not the old one"
    );
    assert!(behind.contains("value=\"ci\""), "the search is kept");
    app.shutdown().await;
}
