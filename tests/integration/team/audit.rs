//! `/team/audit` and its CSV export.

use keysmith::store::{AuditEvent, record_audit};

use super::{member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    the_audit_log_filters_pages_and_exports_csv,
    the_member_filter_matches_part_of_an_email_or_a_name,
    an_unreadable_audit_filter_is_named_and_selects_nothing,
    the_action_filter_lists_names_not_codes,
    the_csv_export_streams_every_event_in_order,
);

async fn the_audit_log_filters_pages_and_exports_csv(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    let (carol, _) = member_with_token(&app, &org, "carol@example.com", "laptop").await;
    // A user agent that needs CSV quoting.
    let csrf = app.csrf_with(&app.client, "/team").await;
    let r = app
        .client
        .post(app.url(&format!("/team/members/{bob}/permission")))
        .header("user-agent", "Evil \"agent\", v1")
        .form(&[("allowed", "false"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    team_post(
        &app,
        &format!("/team/members/{carol}/status"),
        &[("disabled", "true")],
        false,
    )
    .await;
    team_post(
        &app,
        &format!("/team/members/{bob}/tokens/{}/revoke", token.id),
        &[],
        false,
    )
    .await;
    // A write made with a token is attributed to it.
    let mut tx = app.db().begin().await.unwrap();
    record_audit(
        &mut tx,
        &AuditEvent {
            organization_id: Some(org.id),
            actor_user_id: Some(bob),
            actor_token_id: Some(token.id),
            action: "project.created",
            detail: Some("from a script"),
            ip: Some("198.51.100.4"),
            ..AuditEvent::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let r = app.get("/team/audit").await;
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    for expected in [
        "title=\"member.permission_withdrawn\">Token permission withdrawn<",
        "title=\"member.disabled\">Member disabled<",
        "title=\"token.revoked\">Token revoked<",
        "bob@example.com (ci) · via API token",
        "198.51.100.4",
    ] {
        assert!(page.contains(expected), "{expected}");
    }
    // Newest first.
    assert!(
        page.find("via API token").unwrap()
            < page.find("title=\"member.permission_withdrawn\"").unwrap()
    );

    let page = text(app.get("/team/audit?action=member.disabled").await).await;
    assert!(
        page.contains("carol@example.com")
            && !page.contains("title=\"member.permission_withdrawn\"")
    );
    let page = text(app.get("/team/audit?member=bob%40example.com").await).await;
    assert!(
        page.contains("title=\"member.permission_withdrawn\"")
            && !page.contains("title=\"member.disabled\"")
    );
    let page = text(app.get(&format!("/team/audit?token={}", token.id)).await).await;
    assert!(
        page.contains("title=\"token.revoked\"") && !page.contains("title=\"member.disabled\"")
    );
    let page = text(app.get("/team/audit?member=nobody%40example.com").await).await;
    assert!(page.contains("No events match."));
    let page = text(
        app.get("/team/audit?since=2000-01-01&until=2000-01-02")
            .await,
    )
    .await;
    assert!(
        page.contains("No events match."),
        "a time window with nothing in it"
    );
    let page = text(app.get("/team/audit?page=nonsense").await).await;
    assert!(
        page.contains("title=\"token.revoked\""),
        "an unreadable page number reads as the first page"
    );

    let r = app.get("/team/audit.csv?member=bob%40example.com").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    let csv = text(r).await;
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "time,action,actor,actor_token_id,subject,token_id,token,detail,ip,user_agent"
    );
    assert!(csv.contains("\"Evil \"\"agent\"\", v1\""), "{csv}");
    assert!(csv.contains("\"bob@example.com (ci) · via API token\""));
    assert!(!csv.contains("member.disabled"), "filtered like the page");
    app.shutdown().await;
}

async fn the_member_filter_matches_part_of_an_email_or_a_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (bob, _) = member_with_token(&app, &org, "bob.martin@example.com", "ci").await;
    let (carol, _) = member_with_token(&app, &org, "carol_x@example.com", "laptop").await;
    sqlx::query("UPDATE users SET display_name = 'Robert Martin' WHERE id = $1")
        .bind(bob)
        .execute(app.db().pool())
        .await
        .unwrap();
    for (who, id) in [("bob", bob), ("carol", carol)] {
        let r = team_post(
            &app,
            &format!("/team/members/{id}/permission"),
            &[("allowed", "false")],
            false,
        )
        .await;
        assert_eq!(r.status(), 303, "{who}");
    }
    let rows = |page: &str| {
        page.matches("title=\"member.permission_withdrawn\"")
            .count()
    };
    // Part of the email, any case.
    let page = text(app.get("/team/audit?member=MARTIN%40").await).await;
    assert_eq!(rows(&page), 1, "{page}");
    assert!(page.contains("bob.martin@example.com"));
    // Part of the display name.
    let page = text(app.get("/team/audit?member=robert").await).await;
    assert_eq!(rows(&page), 1);
    // LIKE wildcards are literal: `_` matches only an underscore.
    let page = text(app.get("/team/audit?member=carol_").await).await;
    assert_eq!(rows(&page), 1);
    assert!(page.contains("carol_x@example.com"));
    let page = text(app.get("/team/audit?member=b_b").await).await;
    assert_eq!(rows(&page), 0);
    let page = text(app.get("/team/audit?member=%25").await).await;
    assert!(page.contains("No events match."), "% is not a wildcard");
    app.shutdown().await;
}

async fn an_unreadable_audit_filter_is_named_and_selects_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    member_with_token(&app, &org, "bob@example.com", "ci").await;
    let long = "a".repeat(255);
    for (query, message, field) in [
        (
            "token=x",
            "A token id is a whole number, such as 42 (not “x”).",
            "f-token",
        ),
        ("token=-3", "A token id is a whole number", "f-token"),
        (
            "since=yesterday",
            "From is a date such as 2026-03-31 (not “yesterday”).",
            "f-since",
        ),
        ("until=2026-13-40", "Until is a date such as", "f-until"),
        (
            "since=2026-03-02&until=2026-03-01",
            "Until is before From",
            "f-until",
        ),
        (
            "action=token.nuked",
            "Choose an action from the list.",
            "f-action",
        ),
        (
            &format!("member={long}"),
            "A member search is at most 254 characters",
            "f-member",
        ),
    ] {
        let r = app.get(&format!("/team/audit?{query}")).await;
        assert_eq!(r.status(), 422, "{query}");
        let page = text(r).await;
        assert!(page.contains("This filter cannot be read"), "{query}");
        assert!(page.contains(message), "{query}: {message}");
        assert!(
            page.contains(&format!("id=\"{field}\" name="))
                && page.contains(&format!("aria-describedby=\"{field}-error\"")),
            "{query}: the field is marked"
        );
        assert!(
            !page.contains("id=\"audit-events\""),
            "{query}: no events shown"
        );
        let r = app.get(&format!("/team/audit.csv?{query}")).await;
        assert_eq!(r.status(), 422, "csv {query}");
        assert!(text(r).await.contains(message), "csv {query}");
    }
    // An action nobody has done yet is a fine choice: it selects nothing.
    let r = app.get("/team/audit?action=project.archived").await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("No events match."));
    app.shutdown().await;
}

async fn the_action_filter_lists_names_not_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    superuser(&app).await;
    let page = text(app.get("/team/audit").await).await;
    assert!(
        page.contains(
            "<option value=\"member.permission_withdrawn\">Token permission withdrawn</option>"
        ),
        "{page}"
    );
    assert!(page.contains("<option value=\"session.signed_in\">Signed in</option>"));
    assert!(!page.contains(">member.permission_withdrawn<"));
    app.shutdown().await;
}

/// More events than the export reads at a time (500), most in the same
/// second: every one comes out once, newest first, behind one header, in a
/// streamed body (no Content-Length: never built whole in memory).
async fn the_csv_export_streams_every_event_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    const N: usize = 1_203;
    let mut tx = app.db().begin().await.unwrap();
    for i in 0..N {
        let detail = format!("event {i:04}");
        record_audit(
            &mut tx,
            &AuditEvent {
                organization_id: Some(org.id),
                action: "project.created",
                detail: Some(&detail),
                ..AuditEvent::default()
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let r = app.get("/team/audit.csv?action=project.created").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "the export is streamed: {:?}",
        r.headers()
    );
    let csv = text(r).await;
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), N + 1, "a header and every event");
    assert!(lines[0].starts_with("time,action,"));
    assert_eq!(csv.matches("time,action,").count(), 1, "one header");
    let details: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split("\",\"").nth(7).unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..N).rev().map(|i| format!("event {i:04}")).collect();
    assert_eq!(details, expected, "newest first, none twice, none missing");
    app.shutdown().await;
}
