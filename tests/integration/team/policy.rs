//! The organization's policy: rate limits, maximum lifetime, allowed
//! scopes, projects. Changes apply on the next request.

use keysmith::store::{orgs, projects};

use super::{client_for, member_with_token, superuser, team_post, text};
use crate::backend_tests;
use crate::bearer::{verify, wait_until_listening, whoami};
use crate::harness::{Backend, TestApp};

backend_tests!(
    lifetime_and_scope_caps_refuse_creation_with_the_policy_message,
    bad_policy_values_get_a_message_each_and_are_kept,
    a_rate_limit_change_applies_on_the_next_request,
    a_scope_cap_narrows_whoami_and_forward_auth_on_the_next_request,
    projects_are_added_renamed_and_archived,
    an_organization_holds_at_most_max_projects,
);

async fn lifetime_and_scope_caps_refuse_creation_with_the_policy_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    crate::bearer::member(&app, &org, "bob@example.com").await;
    let r = team_post(
        &app,
        "/team/policy",
        &[
            ("max_token_lifetime_days", "30"),
            ("allowed_scopes", "read"),
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("Policy saved"));
    let policy = orgs::policy(app.db(), org.id).await.unwrap();
    assert_eq!(policy.max_token_lifetime_days, Some(30));
    assert_eq!(policy.allowed_scopes.as_deref(), Some("read"));

    let bob = client_for(&app, "bob@example.com").await;
    let create = async |fields: &[(&str, &str)]| {
        let csrf = app.csrf_with(&bob, "/settings/api-tokens").await;
        let mut form = fields.to_vec();
        form.push(("csrf_token", &csrf));
        bob.post(app.url("/settings/api-tokens"))
            .form(&form)
            .send()
            .await
            .unwrap()
    };
    let r = create(&[
        ("label", "forever"),
        ("scopes", "read"),
        ("expiry", "never"),
    ])
    .await;
    assert_eq!(r.status(), 422);
    assert!(
        text(r)
            .await
            .contains("Your organization requires tokens to expire within 30 days.")
    );
    let r = create(&[("label", "long"), ("scopes", "read"), ("expiry", "90")]).await;
    assert_eq!(r.status(), 422);
    assert!(
        text(r)
            .await
            .contains("Your organization requires tokens to expire within 30 days.")
    );
    let r = create(&[("label", "writer"), ("scopes", "write"), ("expiry", "7")]).await;
    assert_eq!(r.status(), 422);
    assert!(
        text(r)
            .await
            .contains("Your organization does not allow members to grant: write.")
    );
    let r = create(&[("label", "fine"), ("scopes", "read"), ("expiry", "30")]).await;
    assert_eq!(r.status(), 201);

    // Every scope ticked means "no restriction"; empty numbers mean defaults.
    let r = team_post(
        &app,
        "/team/policy",
        &[("allowed_scopes", "read"), ("allowed_scopes", "write")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        orgs::policy(app.db(), org.id).await.unwrap(),
        orgs::OrgPolicy::default()
    );
    app.shutdown().await;
}

async fn bad_policy_values_get_a_message_each_and_are_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let r = team_post(
        &app,
        "/team/policy",
        &[
            ("reads_per_minute", "lots"),
            ("writes_per_minute", "0"),
            ("max_token_lifetime_days", "99999"),
            ("allowed_scopes", "admin"),
        ],
        false,
    )
    .await;
    assert_eq!(r.status(), 422);
    let page = text(r).await;
    assert!(page.contains("<html"), "the full page");
    for kept in ["value=\"lots\"", "value=\"0\"", "value=\"99999\""] {
        assert!(page.contains(kept), "{kept}");
    }
    assert_eq!(page.matches("Enter a whole number of").count(), 3);
    assert!(page.contains("“admin” is not a scope of this deployment."));
    let r = team_post(&app, "/team/policy", &[("reads_per_minute", "5")], true).await;
    assert_eq!(r.status(), 422);
    let fragment = text(r).await;
    assert!(
        fragment.starts_with("<section id=\"policy\"")
            && fragment.contains("Choose at least one scope")
    );
    assert_eq!(
        orgs::policy(app.db(), org.id).await.unwrap(),
        orgs::OrgPolicy::default()
    );
    app.shutdown().await;
}

async fn a_rate_limit_change_applies_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (_, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    wait_until_listening(&app).await;
    // Cached with the deployment's default (60 writes a minute).
    assert_eq!(
        verify(&app, &token.token, "", "GET", "/things")
            .await
            .status(),
        200
    );

    let r = team_post(
        &app,
        "/team/policy",
        &[
            ("writes_per_minute", "1"),
            ("allowed_scopes", "read"),
            ("allowed_scopes", "write"),
        ],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        verify(&app, &token.token, "", "POST", "/things")
            .await
            .status(),
        200
    );
    let r = verify(&app, &token.token, "", "POST", "/things").await;
    assert_eq!(r.status(), 429, "the second write of the minute");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        verify(&app, &token.token, "", "GET", "/things")
            .await
            .status(),
        200,
        "reads still fine"
    );
    app.shutdown().await;
}

/// What whoami and forward auth answer is built once per cached token; a
/// policy change must replace it, not leave the old answer in place.
async fn a_scope_cap_narrows_whoami_and_forward_auth_on_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let (_, token) = member_with_token(&app, &org, "bob@example.com", "ci").await;
    wait_until_listening(&app).await;
    let scopes = |body: serde_json::Value| body["token"]["scopes"].clone();
    let before: serde_json::Value = whoami(&app, &token.token).await.json().await.unwrap();
    assert_eq!(scopes(before), serde_json::json!(["read", "write"]));
    let r = verify(&app, &token.token, "", "GET", "/things").await;
    assert_eq!(r.headers()["x-keysmith-scopes"], "read write");

    let r = team_post(&app, "/team/policy", &[("allowed_scopes", "read")], false).await;
    assert_eq!(r.status(), 303);

    let after: serde_json::Value = whoami(&app, &token.token).await.json().await.unwrap();
    assert_eq!(scopes(after), serde_json::json!(["read"]));
    let r = verify(&app, &token.token, "", "GET", "/things").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keysmith-scopes"], "read");
    let r = verify(&app, &token.token, "?scope=write", "GET", "/things").await;
    assert_eq!(r.status(), 403);
    app.shutdown().await;
}

async fn projects_are_added_renamed_and_archived(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let r = team_post(&app, "/team/projects", &[("name", " billing ")], true).await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("value=\"billing\""));
    let r = team_post(&app, "/team/projects", &[("name", "billing")], true).await;
    assert_eq!(r.status(), 422);
    assert!(
        text(r)
            .await
            .contains("A project with this name exists already.")
    );
    let r = team_post(&app, "/team/projects", &[("name", "  ")], false).await;
    assert_eq!(r.status(), 422);

    let id = projects::list_active(app.db(), org.id).await.unwrap()[0].id;
    let r = team_post(
        &app,
        &format!("/team/projects/{id}/rename"),
        &[("name", "invoicing")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        projects::list_active(app.db(), org.id).await.unwrap()[0].name,
        "invoicing"
    );
    let r = team_post(
        &app,
        &format!("/team/projects/{id}/archive"),
        &[("archived", "true")],
        true,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("archived"));
    assert!(
        projects::list_active(app.db(), org.id)
            .await
            .unwrap()
            .is_empty()
    );
    let r = team_post(
        &app,
        &format!("/team/projects/{id}/archive"),
        &[("archived", "false")],
        false,
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        projects::list_active(app.db(), org.id).await.unwrap().len(),
        1
    );
    app.shutdown().await;
}

/// The project list is bounded: past the cap a new project gets a message
/// and nothing is added; archived projects count, and renaming one is the
/// way to use it again.
async fn an_organization_holds_at_most_max_projects(backend: Backend) {
    use keysmith::service::team::MAX_PROJECTS;
    let app = TestApp::spawn(backend).await;
    let org = superuser(&app).await;
    let mut tx = app.db().begin().await.unwrap();
    for i in 0..MAX_PROJECTS {
        projects::create(&mut tx, org.id, &format!("project {i:03}"), 0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let r = team_post(&app, "/team/projects", &[("name", "one more")], true).await;
    assert_eq!(r.status(), 422);
    let body = text(r).await;
    assert!(
        body.contains(&format!(
            "This organization has {MAX_PROJECTS} projects, the most it can have."
        )),
        "{body}"
    );
    assert_eq!(
        projects::count(app.db(), org.id).await.unwrap(),
        MAX_PROJECTS
    );
    app.shutdown().await;
}
