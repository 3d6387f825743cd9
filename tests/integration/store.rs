//! The store against both backends: migrations, bootstrap, tokens, one-time
//! links, and concurrent writers.

use keysmith::auth::secret::Secret;
use keysmith::auth::signin::issue_signin_link;
use keysmith::domain::{EmailAddress, OrgName, TokenLabel};
use keysmith::store::links::{self, LinkKind, LinkState, NewLink};
use keysmith::store::verification::{LastUse, record_last_used};
use keysmith::store::{StoreError, orgs, tokens};
use keysmith::token::{PlainToken, ScopeCatalogue};

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    migrations_can_run_again,
    bootstrap_creates_org_and_superuser_and_is_idempotent,
    tokens_store_digest_and_list_newest_first,
    live_label_is_unique_per_owner_ignoring_case,
    concurrent_writers_all_succeed,
    signin_link_is_single_use,
    parallel_consumers_of_one_link_get_exactly_one_success,
    expired_and_unknown_links_are_told_apart,
    a_new_signin_link_retires_older_ones,
    last_use_batches_write_every_row_and_never_go_back_in_time,
);

pub async fn bootstrap(app: &TestApp, email: &str) -> orgs::Bootstrapped {
    orgs::bootstrap(
        app.db(),
        &OrgName::parse("Acme").unwrap(),
        &EmailAddress::parse(email).unwrap(),
    )
    .await
    .unwrap()
}

/// Mints a token the way the product does and stores it; returns the plaintext.
pub async fn create_token(
    app: &TestApp,
    user_id: i64,
    org_id: i64,
    label: &str,
) -> Result<(i64, PlainToken), StoreError> {
    let plain = PlainToken::generate(&app.state.config.token_prefix);
    let scopes = ScopeCatalogue::default().parse_set(["write"]).unwrap();
    let label = TokenLabel::parse(label).unwrap();
    let mut tx = app.db().begin().await?;
    let id = tokens::create(
        &mut tx,
        &tokens::NewToken {
            user_id,
            organization_id: org_id,
            label: &label,
            display_prefix: &plain.display_prefix(),
            digest: &plain.digest(),
            scopes: &scopes,
            expires_at: None,
            project_ids: &[],
            created_ip: Some("192.0.2.7"),
            created_user_agent: Some("test-agent/1.0"),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((id, plain))
}

async fn migrations_can_run_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.db().migrate().await.expect("second run is a no-op");
    app.shutdown().await;
}

async fn bootstrap_creates_org_and_superuser_and_is_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(orgs::count_organizations(app.db()).await.unwrap(), 0);
    let first = bootstrap(&app, "Ada@Example.com").await;
    assert!(first.created_organization && first.created_user && first.changed_membership);
    assert_eq!(first.user.email, "ada@example.com");

    let again = bootstrap(&app, "ada@example.com").await;
    assert_eq!(again.organization, first.organization);
    assert_eq!(again.user, first.user);
    assert!(!again.created_organization && !again.created_user && !again.changed_membership);
    assert_eq!(orgs::count_organizations(app.db()).await.unwrap(), 1);

    let memberships = orgs::active_memberships(app.db(), first.user.id)
        .await
        .unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].role, orgs::Role::Superuser);
    assert!(memberships[0].may_manage_tokens());
    app.shutdown().await;
}

async fn tokens_store_digest_and_list_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    let (first_id, first) = create_token(&app, b.user.id, b.organization.id, "first")
        .await
        .unwrap();
    let (second_id, _) = create_token(&app, b.user.id, b.organization.id, "second")
        .await
        .unwrap();

    let list = tokens::list_for_owner(app.db(), b.organization.id, b.user.id, false)
        .await
        .unwrap();
    assert_eq!(
        list.iter().map(|t| t.id).collect::<Vec<_>>(),
        [second_id, first_id]
    );
    assert_eq!(list[1].display_prefix, first.display_prefix().as_str());
    assert_eq!(list[1].scopes.to_stored(), "write");
    assert_eq!(list[1].created_ip.as_deref(), Some("192.0.2.7"));

    let found = tokens::find_by_digest(app.db(), &first.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, first_id);
    let other = PlainToken::generate(&app.state.config.token_prefix);
    assert!(
        tokens::find_by_digest(app.db(), &other.digest())
            .await
            .unwrap()
            .is_none()
    );
    app.shutdown().await;
}

async fn live_label_is_unique_per_owner_ignoring_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    create_token(&app, b.user.id, b.organization.id, "Deploy")
        .await
        .unwrap();
    let dup = create_token(&app, b.user.id, b.organization.id, "deploy").await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // Nothing half-written: still exactly one token.
    let list = tokens::list_for_owner(app.db(), b.organization.id, b.user.id, true)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);

    // Another owner may use the same label.
    let other = orgs::bootstrap(
        app.db(),
        &OrgName::parse("Acme").unwrap(),
        &EmailAddress::parse("bob@example.com").unwrap(),
    )
    .await
    .unwrap();
    create_token(&app, other.user.id, b.organization.id, "Deploy")
        .await
        .unwrap();
    app.shutdown().await;
}

async fn concurrent_writers_all_succeed(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let b = bootstrap(&app, "ada@example.com").await;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let app = app.clone();
        let (user, org) = (b.user.id, b.organization.id);
        tasks.push(tokio::spawn(async move {
            create_token(&app, user, org, &format!("token {n}")).await
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("no writer fails with 'database is locked'");
    }
    let list = tokens::list_for_owner(app.db(), b.organization.id, b.user.id, false)
        .await
        .unwrap();
    assert_eq!(list.len(), 20);
}

async fn signin_link_is_single_use(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    let url = issue_signin_link(
        app.db(),
        &app.state.config,
        &app.state.clock,
        &EmailAddress::parse("ada@example.com").unwrap(),
        None,
    )
    .await
    .unwrap();
    assert!(
        url.starts_with(&format!("{}/signin/link/", app.base_url)),
        "{url}"
    );
    let secret = Secret::parse(url.rsplit('/').next().unwrap()).unwrap();

    let mut conn = app.db().pool().acquire().await.unwrap();
    // Looking does not use it up.
    assert!(matches!(
        links::inspect(
            &mut conn,
            LinkKind::SignIn,
            &secret.digest_hex(),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Valid(_)
    ));
    assert!(matches!(
        links::consume(
            &mut conn,
            LinkKind::SignIn,
            &secret.digest_hex(),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Valid(_)
    ));
    assert_eq!(
        links::consume(
            &mut conn,
            LinkKind::SignIn,
            &secret.digest_hex(),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Used
    );
    // Another kind of link never accepts a sign-in secret.
    assert_eq!(
        links::consume(
            &mut conn,
            LinkKind::Revoke,
            &secret.digest_hex(),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Unknown
    );
}

async fn parallel_consumers_of_one_link_get_exactly_one_success(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    let secret = Secret::generate();
    let digest = secret.digest_hex();
    let mut tx = app.db().begin().await.unwrap();
    links::create(
        &mut tx,
        LinkKind::SignIn,
        &NewLink {
            secret_hash: &digest,
            user_id: Some(b.user.id),
            ttl_seconds: 600,
            ..NewLink::default()
        },
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let now = app.state.clock.unix();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let db = app.db().clone();
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = db.pool().acquire().await.unwrap();
            links::consume(&mut conn, LinkKind::SignIn, &digest, now)
                .await
                .unwrap()
        }));
    }
    let mut valid = 0;
    for t in tasks {
        match t.await.unwrap() {
            LinkState::Valid(_) => valid += 1,
            LinkState::Used => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(valid, 1);
    app.shutdown().await;
}

async fn expired_and_unknown_links_are_told_apart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    let secret = Secret::generate();
    let digest = secret.digest_hex();
    let mut tx = app.db().begin().await.unwrap();
    links::create(
        &mut tx,
        LinkKind::SignIn,
        &NewLink {
            secret_hash: &digest,
            user_id: Some(b.user.id),
            ttl_seconds: 600,
            ..NewLink::default()
        },
        app.state.clock.unix(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Ten minutes and a second later, the link is dead.
    app.state.clock.advance(std::time::Duration::from_secs(601));
    let mut conn = app.db().pool().acquire().await.unwrap();
    assert_eq!(
        links::consume(&mut conn, LinkKind::SignIn, &digest, app.state.clock.unix())
            .await
            .unwrap(),
        LinkState::Expired
    );
    let unknown = Secret::generate().digest_hex();
    assert_eq!(
        links::consume(
            &mut conn,
            LinkKind::SignIn,
            &unknown,
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Unknown
    );
}

async fn a_new_signin_link_retires_older_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    bootstrap(&app, "ada@example.com").await;
    let email = EmailAddress::parse("ada@example.com").unwrap();
    let old = issue_signin_link(app.db(), &app.state.config, &app.state.clock, &email, None)
        .await
        .unwrap();
    let new = issue_signin_link(app.db(), &app.state.config, &app.state.clock, &email, None)
        .await
        .unwrap();
    let digest = |url: &str| {
        Secret::parse(url.rsplit('/').next().unwrap())
            .unwrap()
            .digest_hex()
    };
    let mut conn = app.db().pool().acquire().await.unwrap();
    assert_eq!(
        links::inspect(
            &mut conn,
            LinkKind::SignIn,
            &digest(&old),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Used
    );
    assert!(matches!(
        links::inspect(
            &mut conn,
            LinkKind::SignIn,
            &digest(&new),
            app.state.clock.unix()
        )
        .await
        .unwrap(),
        LinkState::Valid(_)
    ));
}

#[tokio::test]
async fn sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut conn = app.db().pool().acquire().await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(busy >= 5000, "busy_timeout = {busy}");
}

async fn last_use_batches_write_every_row_and_never_go_back_in_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b = bootstrap(&app, "ada@example.com").await;
    let (org, user) = (b.organization.id, b.user.id);
    // More rows than one statement takes, so the batch spans several.
    let mut ids = Vec::new();
    for n in 0..2500 {
        ids.push(
            create_token(&app, user, org, &format!("t{n}"))
                .await
                .unwrap()
                .0,
        );
    }
    let odd_path = "/caf\u{e9}/\"quoted\"/back\\slash/\u{1F511}";
    let batch: Vec<LastUse> = ids
        .iter()
        .map(|&id| LastUse {
            token_id: id,
            at: 1_000 + id,
            method: "PATCH".into(),
            path: if id == ids[7] {
                odd_path.into()
            } else {
                format!("/r/{id}")
            },
            ip: "2001:db8::7".parse().unwrap(),
        })
        .collect();
    record_last_used(app.db(), &batch).await.unwrap();
    for &id in [ids[0], ids[7], ids[1500], ids[2499]].iter() {
        let t = tokens::find_in_org(app.db(), org, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.last_used_at, Some(1_000 + id), "token {id}");
        assert_eq!(t.last_used_method.as_deref(), Some("PATCH"));
        assert_eq!(t.last_used_ip.as_deref(), Some("2001:db8::7"));
        let want = if id == ids[7] {
            odd_path.to_owned()
        } else {
            format!("/r/{id}")
        };
        assert_eq!(t.last_used_path.as_deref(), Some(want.as_str()));
    }
    // Another instance's older use of one token, and a newer use of another.
    let late = |id: i64, at: i64| LastUse {
        token_id: id,
        at,
        method: "GET".into(),
        path: "/late".into(),
        ip: "192.0.2.9".parse().unwrap(),
    };
    record_last_used(app.db(), &[late(ids[0], 5), late(ids[1], 1_000_000)])
        .await
        .unwrap();
    let kept = tokens::find_in_org(app.db(), org, ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.last_used_at, kept.last_used_path.as_deref()),
        (
            Some(1_000 + ids[0]),
            Some("/r/".to_owned() + &ids[0].to_string()).as_deref()
        )
    );
    let moved = tokens::find_in_org(app.db(), org, ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.last_used_at, moved.last_used_path.as_deref()),
        (Some(1_000_000), Some("/late"))
    );
    app.shutdown().await;
}
