//! /scim/v2/Users over HTTP: userName eq filters, pagination, PUT, PATCH,
//! discovery, and bad input answered with a precise SCIM error that
//! changes nothing.

use serde_json::{Value, json};

use super::{ROOT, assert_error, call, create_user, expect, setup};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    user_name_filters_find_one_member_case_insensitively,
    lists_page_by_start_index_and_count,
    put_replaces_and_patch_changes_single_attributes,
    bad_requests_get_precise_errors_and_change_nothing,
    discovery_describes_what_is_supported,
    search_requests_filter_and_page_like_lists,
    an_email_shared_with_another_organization_is_not_changed,
    the_group_cannot_be_created_renamed_or_deleted,
);

/// method, path, body, status, scimType, what the detail mentions.
type Case = (
    reqwest::Method,
    String,
    Option<Value>,
    u16,
    Option<&'static str>,
    &'static str,
);

async fn user_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM memberships")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    n
}

async fn list(app: &TestApp, secret: &str, query: &str) -> Value {
    expect(
        call(
            app,
            secret,
            reqwest::Method::GET,
            &format!("/Users{query}"),
            None,
        )
        .await,
        200,
    )
    .await
}

async fn user_name_filters_find_one_member_case_insensitively(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let id = create_user(&app, &scim.secret, "Ada.Lovelace", "ada@example.com").await;
    create_user(&app, &scim.secret, "grace", "grace@example.com").await;
    let found = list(
        &app,
        &scim.secret,
        "?filter=userName%20eq%20%22ada.lovelace%22",
    )
    .await;
    assert_eq!(found["totalResults"], json!(1));
    assert_eq!(found["Resources"][0]["id"], json!(id.to_string()));
    assert_eq!(found["Resources"][0]["userName"], json!("Ada.Lovelace"));
    assert_eq!(
        found["Resources"][0]["emails"],
        json!([{"value": "ada@example.com"}])
    );
    // A member who never got a userName goes by their email.
    let root = list(
        &app,
        &scim.secret,
        &format!("?filter=userName%20eq%20%22{}%22", ROOT.to_uppercase()),
    )
    .await;
    assert_eq!(root["totalResults"], json!(1));
    let none = list(&app, &scim.secret, "?filter=userName%20eq%20%22nobody%22").await;
    assert_eq!(none["totalResults"], json!(0));
    assert_eq!(none["Resources"], json!([]));
    app.shutdown().await;
}

async fn lists_page_by_start_index_and_count(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    for i in 0..4 {
        create_user(
            &app,
            &scim.secret,
            &format!("u{i}"),
            &format!("u{i}@example.com"),
        )
        .await;
    }
    let page = list(&app, &scim.secret, "?startIndex=2&count=2").await;
    assert_eq!(page["totalResults"], json!(5));
    assert_eq!(page["startIndex"], json!(2));
    assert_eq!(page["itemsPerPage"], json!(2));
    let names: Vec<&str> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["u0", "u1"]);
    let last = list(&app, &scim.secret, "?startIndex=5&count=2").await;
    assert_eq!(last["itemsPerPage"], json!(1));
    let past = list(&app, &scim.secret, "?startIndex=9").await;
    assert_eq!(past["Resources"], json!([]));
    let zero = list(&app, &scim.secret, "?count=0").await;
    assert_eq!(zero["totalResults"], json!(5));
    assert_eq!(zero["Resources"], json!([]));
    let slim = list(&app, &scim.secret, "?attributes=userName").await;
    assert!(slim["Resources"][0].get("emails").is_none());
    assert!(slim["Resources"][0].get("id").is_some());
    app.shutdown().await;
}

async fn put_replaces_and_patch_changes_single_attributes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let id = create_user(&app, &scim.secret, "kay", "kay@example.com").await;
    let path = format!("/Users/{id}");
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PUT,
        &path,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "kay.k",
            "displayName": "Kay K",
            "externalId": "okta-1",
            "emails": [{"value": "other@example.com"}, {"value": "Kay.K@Example.com", "primary": true}],
            "active": true
        })),
    )
    .await;
    let u = expect(r, 200).await;
    assert_eq!(u["userName"], json!("kay.k"));
    assert_eq!(u["displayName"], json!("Kay K"));
    assert_eq!(u["externalId"], json!("okta-1"));
    assert_eq!(u["emails"], json!([{"value": "kay.k@example.com"}]));
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"Operations": [
            {"op": "remove", "path": "displayName"},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "kay@example.org"}
        ]})),
    )
    .await;
    let u = expect(r, 200).await;
    assert!(u.get("displayName").is_none(), "{u}");
    assert_eq!(u["emails"], json!([{"value": "kay@example.org"}]));
    let got = expect(
        call(&app, &scim.secret, reqwest::Method::GET, &path, None).await,
        200,
    )
    .await;
    assert_eq!(got, u);
    let (actions,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'member.updated' AND subject_user_id = $1 AND detail = 'SCIM (Okta)'",
    )
    .bind(id)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    assert_eq!(actions, 2);
    app.shutdown().await;
}

async fn bad_requests_get_precise_errors_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let id = create_user(&app, &scim.secret, "lee", "lee@example.com").await;
    let before = user_count(&app).await;
    let s = &scim.secret;
    let cases: Vec<Case> = vec![
        (
            reqwest::Method::GET,
            "/Users?filter=userName%20co%20%22l%22".into(),
            None,
            400,
            Some("invalidFilter"),
            "not supported",
        ),
        (
            reqwest::Method::GET,
            "/Users?filter=title%20eq%20%22x%22".into(),
            None,
            400,
            Some("invalidFilter"),
            "title",
        ),
        (
            reqwest::Method::GET,
            "/Users?count=ten".into(),
            None,
            400,
            Some("invalidValue"),
            "count",
        ),
        (
            reqwest::Method::GET,
            "/Users?attributes=a&excludedAttributes=b".into(),
            None,
            400,
            Some("invalidSyntax"),
            "together",
        ),
        (
            reqwest::Method::GET,
            "/Users/999999".into(),
            None,
            404,
            None,
            "No user",
        ),
        (
            reqwest::Method::GET,
            "/Users/abc".into(),
            None,
            404,
            None,
            "No user",
        ),
        (
            reqwest::Method::GET,
            "/Nope".into(),
            None,
            404,
            None,
            "/Users",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"userName": "LEE", "emails": [{"value": "lee2@example.com"}]})),
            409,
            Some("uniqueness"),
            "taken",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"userName": "lee3", "emails": [{"value": "lee@example.com"}]})),
            409,
            Some("uniqueness"),
            "already",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"emails": [{"value": "x@example.com"}]})),
            400,
            Some("invalidValue"),
            "userName is required",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"userName": "no-email"})),
            400,
            Some("invalidValue"),
            "emails is required",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"userName": "x", "emails": [{"value": "not an email"}]})),
            400,
            Some("invalidValue"),
            "email",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!({"userName": "x@example.com", "active": "perhaps"})),
            400,
            Some("invalidValue"),
            "active",
        ),
        (
            reqwest::Method::POST,
            "/Users".into(),
            Some(json!(["not", "an", "object"])),
            400,
            Some("invalidSyntax"),
            "JSON object",
        ),
        (
            reqwest::Method::PATCH,
            format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "jump", "path": "active"}]})),
            400,
            Some("invalidSyntax"),
            "add, replace or remove",
        ),
        (
            reqwest::Method::PATCH,
            format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "replace", "path": "nickName", "value": "x"}]})),
            400,
            Some("invalidPath"),
            "nickName",
        ),
        (
            reqwest::Method::PATCH,
            format!("/Users/{id}"),
            Some(json!({"Operations": [{"op": "remove", "path": "emails"}]})),
            400,
            Some("mutability"),
            "emails",
        ),
        (
            reqwest::Method::PATCH,
            format!("/Users/{id}"),
            Some(json!({"Operations": [
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "replace", "path": "active", "value": 3}
            ]})),
            400,
            Some("invalidValue"),
            "active",
        ),
        (
            reqwest::Method::PUT,
            format!("/Users/{id}"),
            Some(json!({"userName": ROOT})),
            409,
            Some("uniqueness"),
            "taken",
        ),
    ];
    for (method, path, body, status, kind, needle) in cases {
        let e = expect(
            call(&app, s, method.clone(), &path, body.clone()).await,
            status,
        )
        .await;
        assert_error(&e, status, kind, needle);
    }
    // Broken JSON.
    let r = crate::harness::new_client()
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(s)
        .header("content-type", "application/scim+json")
        .body("{\"userName\": ")
        .send()
        .await
        .unwrap();
    let e = expect(r, 400).await;
    assert_error(&e, 400, Some("invalidSyntax"), "not valid JSON");
    assert_eq!(user_count(&app).await, before);
    let u = expect(
        call(&app, s, reqwest::Method::GET, &format!("/Users/{id}"), None).await,
        200,
    )
    .await;
    assert_eq!(u["userName"], json!("lee"));
    assert!(
        u.get("displayName").is_none(),
        "the failed PATCH changed nothing: {u}"
    );
    assert_eq!(u["active"], json!(true));
    app.shutdown().await;
}

async fn discovery_describes_what_is_supported(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let spc = expect(
        call(
            &app,
            &scim.secret,
            reqwest::Method::GET,
            "/ServiceProviderConfig",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(spc["patch"]["supported"], json!(true));
    assert_eq!(spc["filter"]["supported"], json!(true));
    assert_eq!(spc["bulk"]["supported"], json!(false));
    assert_eq!(spc["sort"]["supported"], json!(false));
    assert_eq!(
        spc["authenticationSchemes"][0]["type"],
        json!("oauthbearertoken")
    );
    let types = expect(
        call(
            &app,
            &scim.secret,
            reqwest::Method::GET,
            "/ResourceTypes",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(types["totalResults"], json!(2));
    let schema = expect(
        call(
            &app,
            &scim.secret,
            reqwest::Method::GET,
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            None,
        )
        .await,
        200,
    )
    .await;
    let names: Vec<&str> = schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["userName", "displayName", "active", "emails"]);
    app.shutdown().await;
}

async fn the_group_cannot_be_created_renamed_or_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let s = &scim.secret;
    let e = expect(
        call(
            &app,
            s,
            reqwest::Method::POST,
            "/Groups",
            Some(json!({"displayName": "Admins"})),
        )
        .await,
        501,
    )
    .await;
    assert_error(&e, 501, None, "Token holders");
    let e = expect(
        call(
            &app,
            s,
            reqwest::Method::DELETE,
            "/Groups/token-holders",
            None,
        )
        .await,
        501,
    )
    .await;
    assert_error(&e, 501, None, "cannot be created, renamed or deleted");
    let e = expect(
        call(&app, s, reqwest::Method::PATCH, "/Groups/token-holders", Some(json!({"Operations": [{"op": "replace", "path": "displayName", "value": "Admins"}]}))).await,
        400,
    )
    .await;
    assert_error(&e, 400, Some("mutability"), "Token holders");
    let e = expect(
        call(&app, s, reqwest::Method::PATCH, "/Groups/token-holders", Some(json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "424242"}]}]}))).await,
        400,
    )
    .await;
    assert_error(&e, 400, Some("invalidValue"), "424242");
    let e = expect(
        call(&app, s, reqwest::Method::GET, "/Groups/admins", None).await,
        404,
    )
    .await;
    assert_error(&e, 404, None, "token-holders");
    let g = expect(
        call(
            &app,
            s,
            reqwest::Method::GET,
            "/Groups?excludedAttributes=members",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(g["totalResults"], json!(1));
    assert_eq!(g["Resources"][0]["displayName"], json!("Token holders"));
    assert!(g["Resources"][0].get("members").is_none());
    let g = expect(
        call(&app, s, reqwest::Method::GET, "/Groups/token-holders", None).await,
        200,
    )
    .await;
    assert_eq!(
        g["members"][0]["value"],
        json!(scim.root.to_string()),
        "superusers are listed"
    );
    app.shutdown().await;
}

async fn search_requests_filter_and_page_like_lists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let s = &scim.secret;
    let id = create_user(&app, s, "ned", "ned@example.com").await;
    let search = |body: Value| {
        let app = &app;
        async move {
            let r = call(app, s, reqwest::Method::POST, "/Users/.search", Some(body)).await;
            expect(r, 200).await
        }
    };
    let found = search(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName eq \"NED\"",
        "attributes": ["userName"]
    }))
    .await;
    assert_eq!(found["totalResults"], json!(1));
    assert_eq!(
        found["Resources"][0],
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id.to_string(), "userName": "ned"})
    );
    let page = search(json!({"startIndex": 2, "count": 1})).await;
    assert_eq!(page["totalResults"], json!(2));
    assert_eq!(page["Resources"][0]["id"], json!(id.to_string()));
    // At the root: both users, then the group.
    let all = expect(
        call(&app, s, reqwest::Method::POST, "/.search", Some(json!({}))).await,
        200,
    )
    .await;
    assert_eq!(all["totalResults"], json!(3));
    assert_eq!(all["Resources"][2]["id"], json!("token-holders"));
    let group = expect(
        call(
            &app,
            s,
            reqwest::Method::POST,
            "/.search",
            Some(json!({"filter": "displayName eq \"Token holders\""})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(group["totalResults"], json!(1));
    let e = expect(
        call(
            &app,
            s,
            reqwest::Method::POST,
            "/.search",
            Some(json!({"filter": "title eq \"x\""})),
        )
        .await,
        400,
    )
    .await;
    assert_error(&e, 400, Some("invalidFilter"), "title");
    let e = expect(
        call(
            &app,
            s,
            reqwest::Method::POST,
            "/Users/.search",
            Some(json!({"schemas": ["nope"]})),
        )
        .await,
        400,
    )
    .await;
    assert_error(&e, 400, Some("invalidSyntax"), "SearchRequest");
    app.shutdown().await;
}

async fn an_email_shared_with_another_organization_is_not_changed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let scim = setup(&app).await;
    let id = create_user(&app, &scim.secret, "sam", "sam@example.com").await;
    // Sam also belongs to another organization.
    let other = keysmith::store::orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Globex").unwrap(),
        &keysmith::domain::EmailAddress::parse("boss@example.com").unwrap(),
    )
    .await
    .unwrap();
    let mut tx = app.db().begin().await.unwrap();
    keysmith::store::orgs::add_member(
        &mut tx,
        other.organization.id,
        &keysmith::domain::EmailAddress::parse("sam@example.com").unwrap(),
        keysmith::store::orgs::Role::Member,
        false,
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let r = call(
        &app,
        &scim.secret,
        reqwest::Method::PATCH,
        &format!("/Users/{id}"),
        Some(json!({"Operations": [{"op": "replace", "path": "emails", "value": [{"value": "evil@example.com"}]}]})),
    )
    .await;
    let e = expect(r, 409).await;
    assert_error(&e, 409, None, "another organization");
    let (email,): (String,) = sqlx::query_as("SELECT email FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(email, "sam@example.com");
    // The other organization's members are not this SCIM secret's users.
    let e = expect(
        call(
            &app,
            &scim.secret,
            reqwest::Method::GET,
            &format!("/Users/{}", other.user.id),
            None,
        )
        .await,
        404,
    )
    .await;
    assert_error(&e, 404, None, "No user");
    app.shutdown().await;
}
