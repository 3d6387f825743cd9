//! Destructive actions on the Team pages confirm one way: the control is a
//! GET form to the action's address (a confirm page without JavaScript)
//! carrying `hx-post` and `hx-confirm` on that same form (the question with
//! htmx). Outcomes reach the live region on the htmx path in the same words
//! as the no-JS flash. Token counts and badges say live or paused.

use keysmith::store::orgs;

use super::{member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::bearer::{Spec, member, mint};
use crate::harness::{Backend, TestApp};

backend_tests!(
    without_javascript_a_destructive_action_shows_a_confirm_page_first,
    the_team_page_asks_before_every_destructive_action,
    htmx_outcomes_reach_the_live_region_in_the_no_js_words,
    token_counts_say_live_or_paused_and_member_tokens_carry_badges,
);

async fn disabled(app: &TestApp, user: i64) -> bool {
    let (at,): (Option<i64>,) =
        sqlx::query_as("SELECT disabled_at FROM memberships WHERE user_id = $1")
            .bind(user)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
    at.is_some()
}

async fn without_javascript_a_destructive_action_shows_a_confirm_page_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;

    let cases = [
        (
            format!("/team/members/{bob}/status?disabled=true"),
            "Disable bob@example.com?",
            format!("/team/members/{bob}/status"),
            ("disabled", "true"),
            "/team",
        ),
        (
            format!("/team/members/{bob}/permission?allowed=false"),
            "Withdraw the token permission of bob@example.com?",
            format!("/team/members/{bob}/permission"),
            ("allowed", "false"),
            "/team",
        ),
        (
            format!("/team/members/{}/role?role=member", org.owner),
            "Make ada@example.com a member?",
            format!("/team/members/{}/role", org.owner),
            ("role", "member"),
            "/team",
        ),
        (
            format!(
                "/team/members/{bob}/tokens/{}/toggle?enabled=false",
                token.id
            ),
            "Disable “ci” of bob@example.com?",
            format!("/team/members/{bob}/tokens/{}/toggle", token.id),
            ("enabled", "false"),
            &format!("/team/members/{bob}") as &str,
        ),
    ];
    for (url, title, action, (name, value), cancel) in &cases {
        let r = app.get(url).await;
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let page = text(r).await;
        assert!(page.contains(&format!(">{title}</h1>")), "{url}: {page}");
        assert!(
            page.contains(&format!("<form method=\"post\" action=\"{action}\"")),
            "{url}"
        );
        assert!(page.contains(&format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{value}\">"
        )));
        assert!(page.contains("name=\"csrf_token\""));
        assert!(
            page.contains(&format!("href=\"{cancel}\">Cancel</a>")),
            "{url}"
        );
    }
    // Looking changed nothing.
    assert!(!disabled(&app, bob).await);
    assert_eq!(app.whoami_status(&token.token).await, 200);
    let (role,): (String,) = sqlx::query_as("SELECT role FROM memberships WHERE user_id = $1")
        .bind(org.owner)
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(role, "superuser");

    // The page's button does it.
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/status"),
        &[("disabled", "true")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(disabled(&app, bob).await);

    // Bad or foreign input: a clear answer, nothing shown to confirm.
    let r = app
        .get(&format!("/team/members/{bob}/status?disabled=maybe"))
        .await;
    assert_eq!(r.status(), 400);
    assert!(text(r).await.contains("Send true or false."));
    let r = app
        .get(&format!("/team/members/{bob}/role?role=owner"))
        .await;
    assert_eq!(r.status(), 400);
    let r = app.get("/team/members/99999/status?disabled=true").await;
    assert_eq!(r.status(), 404);
    let r = app
        .get(&format!(
            "/team/members/{bob}/tokens/99999/toggle?enabled=false"
        ))
        .await;
    assert_eq!(r.status(), 404);
    // Not a superuser: the 403 page.
    let carol = member(&app, &org, "carol@example.com").await;
    let carol_client = super::client_for(&app, "carol@example.com").await;
    let r = carol_client
        .get(app.url(&format!("/team/members/{carol}/status?disabled=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    app.shutdown().await;
}

async fn the_team_page_asks_before_every_destructive_action(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let page = text(app.get("/team").await).await;
    // Disable, withdraw and demote: GET forms whose htmx POST asks first,
    // on the element that sends it (the form), with no CSRF token in a URL.
    for (action, question) in [
        (
            format!("/team/members/{bob}/status"),
            "Disable bob@example.com?",
        ),
        (
            format!("/team/members/{bob}/permission"),
            "Withdraw the token permission of bob@example.com?",
        ),
        (
            format!("/team/members/{}/role", org.owner),
            "Make ada@example.com a member?",
        ),
    ] {
        let form = format!(
            "<form method=\"get\" action=\"{action}\" hx-post=\"{action}\" hx-target=\"closest tr\" hx-swap=\"outerHTML\" class=\"inline-form\"\n          hx-confirm=\"{question}"
        );
        assert!(page.contains(&form), "{action}\n{page}");
        let start = page.find(&form).unwrap();
        let end = start + page[start..].find("</form>").unwrap();
        assert!(
            !page[start..end].contains("csrf_token"),
            "no token in a GET form"
        );
    }
    assert_eq!(
        page.matches("hx-confirm=").count(),
        3,
        "only those three ask"
    );
    // The member's page: disable, revoke and revoke all ask.
    let page = text(app.get(&format!("/team/members/{bob}")).await).await;
    for (action, question) in [
        (
            format!("/team/members/{bob}/tokens/{}/toggle", token.id),
            "Disable “ci” of bob@example.com?",
        ),
        (
            format!("/team/members/{bob}/tokens/{}/revoke", token.id),
            "Revoke “ci” of bob@example.com?",
        ),
    ] {
        let form = format!("<form method=\"get\" action=\"{action}\" hx-post=\"{action}\"");
        let start = page
            .find(&form)
            .unwrap_or_else(|| panic!("{action}\n{page}"));
        let end = start + page[start..].find('>').unwrap();
        assert!(
            page[start..end].contains(&format!("hx-confirm=\"{question}")),
            "{action}"
        );
    }
    assert!(page.contains(&format!(
        "href=\"/team/members/{bob}/revoke-all\" hx-post=\"/team/members/{bob}/revoke-all\""
    )));
    assert!(page.contains("hx-confirm=\"Revoke all 1 token of bob@example.com?"));
    app.shutdown().await;
}

/// The live-region part of an htmx answer.
fn status_of(body: &str) -> &str {
    let start = body
        .find("<div id=\"flash\" hx-swap-oob=\"innerHTML\"><div class=\"alert alert-info\" role=\"status\">")
        .unwrap_or_else(|| panic!("no status in {body}"));
    let rest = &body[start..];
    let text_start = rest.find("role=\"status\">").unwrap() + "role=\"status\">".len();
    let text_end = rest.find("</div>").unwrap();
    &rest[text_start..text_end]
}

async fn htmx_outcomes_reach_the_live_region_in_the_no_js_words(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    // (path, form fields, the announced outcome)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            format!("/team/members/{bob}/status"),
            vec![("disabled", "true")],
            "bob@example.com is disabled: signed out here, and their tokens stop working.".into(),
        ),
        (
            format!("/team/members/{bob}/status"),
            vec![("disabled", "false")],
            "bob@example.com is enabled again.".into(),
        ),
        (
            format!("/team/members/{bob}/permission"),
            vec![("allowed", "false")],
            "bob@example.com can no longer create or manage API tokens; their tokens are paused."
                .into(),
        ),
        (
            format!("/team/members/{bob}/role"),
            vec![("role", "superuser")],
            "bob@example.com is now a superuser.".into(),
        ),
        (
            "/team/invite".into(),
            vec![("email", "dora@example.com")],
            "Invitation sent to dora@example.com. The link in it works once, for 7 days.".into(),
        ),
        (
            "/team/policy".into(),
            vec![
                ("writes_per_minute", "30"),
                ("allowed_scopes", "read"),
                ("allowed_scopes", "write"),
            ],
            "Policy saved. It applies to every token from the next request.".into(),
        ),
        (
            "/team/projects".into(),
            vec![("name", "billing")],
            "Project “billing” added.".into(),
        ),
        (
            format!("/team/members/{bob}/tokens/{}/toggle", token.id),
            vec![("enabled", "false")],
            "“ci” is disabled.".into(),
        ),
        (
            format!("/team/members/{bob}/tokens/{}/revoke", token.id),
            vec![],
            "“ci” is revoked. Its owner has been told by email.".into(),
        ),
    ];
    for (path, fields, message) in &cases {
        let r = team_post(&app, path, fields, true).await;
        assert_eq!(r.status(), 200, "{path}");
        let body = text(r).await;
        assert_eq!(status_of(&body), message.as_str(), "{path}");
    }
    // The no-JS path says the same after its redirect.
    let r = team_post(
        &app,
        &format!("/team/members/{bob}/status"),
        &[("disabled", "true")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    let page = text(app.get("/team").await).await;
    assert!(page.contains(
        "role=\"status\">bob@example.com is disabled: signed out here, and their tokens stop working.</div>"
    ));
    // A refusal is not announced as a success.
    let r = team_post(
        &app,
        &format!("/team/members/{}/role", org.owner),
        &[("role", "member")],
        true,
    )
    .await;
    let body = text(r).await;
    if body.contains("field-error") {
        assert!(!body.contains("role=\"status\""), "{body}");
    }
    app.shutdown().await;
}

async fn token_counts_say_live_or_paused_and_member_tokens_carry_badges(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let now = app.state.clock.unix();
    let (bob, _) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "soon",
            expires_at: Some(now + 3 * 86_400),
            ..Spec::default()
        },
    )
    .await;
    let old = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "old",
            expires_at: Some(now + 60),
            ..Spec::default()
        },
    )
    .await;
    let off = mint(
        &app,
        org.id,
        bob,
        Spec {
            label: "off",
            ..Spec::default()
        },
    )
    .await;
    sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE id = $2")
        .bind(now - 60)
        .bind(old.id)
        .execute(app.db().pool())
        .await
        .unwrap();
    team_post(
        &app,
        &format!("/team/members/{bob}/tokens/{}/toggle", off.id),
        &[("enabled", "false")],
        false,
    )
    .await;

    let row = |page: &str| {
        let start = page.find(&format!("<tr id=\"member-{bob}\"")).unwrap();
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    let page = text(app.get("/team").await).await;
    assert!(page.contains(">Tokens</th>"));
    // ci, soon and off are unrevoked and unexpired.
    assert!(row(&page).contains(">3 live</a>"), "{}", row(&page));
    assert!(row(&page).contains("aria-label=\"3 live tokens of bob@example.com\""));

    let badges = |page: &str| -> Vec<(String, String)> {
        ["ci", "soon", "old", "off"]
            .iter()
            .map(|label| {
                let start = page
                    .find(&format!(">{label}<"))
                    .unwrap_or_else(|| panic!("no {label}"));
                let rest = &page[start..];
                let b = rest.find("<span class=\"badge badge-").unwrap() + 25;
                let class_end = b + rest[b..].find('"').unwrap();
                let text_start = class_end + 2;
                let text_end = text_start + rest[text_start..].find('<').unwrap();
                (
                    rest[b..class_end].to_string(),
                    rest[text_start..text_end].to_string(),
                )
            })
            .collect()
    };
    let page = text(app.get(&format!("/team/members/{bob}")).await).await;
    assert_eq!(
        badges(&page),
        [
            ("enabled".into(), "Enabled".into()),
            ("expiring".into(), "Expires soon".into()),
            ("expired".into(), "Expired".into()),
            ("disabled".into(), "Disabled".into()),
        ]
    );

    // Withdrawing the permission pauses them: counted and badged so.
    team_post(
        &app,
        &format!("/team/members/{bob}/permission"),
        &[("allowed", "false")],
        false,
    )
    .await;
    let page = text(app.get("/team").await).await;
    assert!(row(&page).contains(">3 paused</a>"), "{}", row(&page));
    assert!(row(&page).contains("aria-label=\"3 paused tokens of bob@example.com\""));
    let page = text(app.get(&format!("/team/members/{bob}")).await).await;
    assert_eq!(
        badges(&page),
        [
            ("paused".into(), "Paused".into()),
            ("paused".into(), "Paused".into()),
            ("expired".into(), "Expired".into()),
            ("disabled".into(), "Disabled".into()),
        ]
    );

    // A disabled member's tokens are paused too, even a superuser's.
    team_post(
        &app,
        &format!("/team/members/{bob}/permission"),
        &[("allowed", "true")],
        false,
    )
    .await;
    let mut tx = app.db().begin().await.unwrap();
    orgs::set_member_disabled(&mut tx, org.id, bob, true, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let page = text(app.get("/team").await).await;
    assert!(row(&page).contains(">3 paused</a>"), "{}", row(&page));
    app.shutdown().await;
}
