//! `/team/audit` and its CSV export.

use keysmith::store::{AuditEvent, record_audit};

use super::{member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(the_audit_log_filters_pages_and_exports_csv);

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
        "member.permission_withdrawn",
        "member.disabled",
        "token.revoked",
        "bob@example.com (ci) · via API token",
        "198.51.100.4",
    ] {
        assert!(page.contains(expected), "{expected}");
    }
    // Newest first.
    assert!(
        page.find("via API token").unwrap()
            < page.find("member.permission_withdrawn</code>").unwrap()
    );

    let page = text(app.get("/team/audit?action=member.disabled").await).await;
    assert!(
        page.contains("carol@example.com") && !page.contains("member.permission_withdrawn</code>")
    );
    let page = text(app.get("/team/audit?member=bob%40example.com").await).await;
    assert!(
        page.contains("member.permission_withdrawn</code>")
            && !page.contains("member.disabled</code>")
    );
    let page = text(app.get(&format!("/team/audit?token={}", token.id)).await).await;
    assert!(page.contains("token.revoked</code>") && !page.contains("member.disabled</code>"));
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
    let page = text(app.get("/team/audit?page=nonsense&token=x").await).await;
    assert!(
        page.contains("No events match."),
        "bad input is not an error"
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
