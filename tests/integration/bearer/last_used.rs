//! "Last used": time, method, path (without query) and client IP, written
//! in batches every few seconds, and at shutdown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keysmith::app;
use keysmith::config::Config;
use keysmith::store::tokens::{self, TokenRecord};
use keysmith::store::{Db, PoolSettings};
use keysmith::verify::LAST_USE_AT_MOST_BEHIND;

use super::{Org, owner_token, verify, whoami};
use crate::backend_tests;
use crate::harness::{Backend, TestApp, TestDb};

backend_tests!(
    forward_auth_records_the_original_method_path_and_client_ip,
    whoami_records_its_own_request,
    a_use_just_before_shutdown_is_not_lost,
);

/// Polls the token's row until its last use is at least `since`.
async fn wait_for_use(db: &Db, org_id: i64, token_id: i64, since: i64) -> (TokenRecord, Duration) {
    let started = Instant::now();
    loop {
        let t = tokens::find_in_org(db, org_id, token_id)
            .await
            .unwrap()
            .unwrap();
        if t.last_used_at.is_some_and(|at| at >= since) {
            return (t, started.elapsed());
        }
        assert!(
            started.elapsed() < LAST_USE_AT_MOST_BEHIND + Duration::from_secs(5),
            "last use never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn forward_auth_records_the_original_method_path_and_client_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    let before = app.state.clock.unix();
    let r = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("X-Forwarded-Method", "PATCH")
        .header("X-Forwarded-Uri", "/tickets/7?api_key=hunter2")
        .header("X-Forwarded-For", "203.0.113.50, 198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (row, took) = wait_for_use(app.db(), org.id, t.id, before).await;
    // One flush interval and its spread, plus the write itself.
    assert!(
        took < LAST_USE_AT_MOST_BEHIND + Duration::from_secs(1),
        "written after {took:?}"
    );
    assert_eq!(row.last_used_method.as_deref(), Some("PATCH"));
    assert_eq!(row.last_used_path.as_deref(), Some("/tickets/7"));
    assert_eq!(row.last_used_ip.as_deref(), Some("198.51.100.4"));

    // A later use overwrites it; the clock decides the time.
    app.state.clock.advance(Duration::from_secs(120));
    let later = app.state.clock.unix();
    assert_eq!(
        verify(&app, &t.token, "", "DELETE", "/tickets/8")
            .await
            .status(),
        200
    );
    let (row, _) = wait_for_use(app.db(), org.id, t.id, later).await;
    assert_eq!(row.last_used_method.as_deref(), Some("DELETE"));
    assert_eq!(row.last_used_path.as_deref(), Some("/tickets/8"));
    // Without X-Forwarded-For the trusted proxy itself is the client.
    assert_eq!(row.last_used_ip.as_deref(), Some("127.0.0.1"));
    app.shutdown().await;
}

async fn whoami_records_its_own_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = super::org(&app).await;
    let t = owner_token(&app, &org).await;
    let before = app.state.clock.unix();
    assert_eq!(whoami(&app, &t.token).await.status(), 200);
    let (row, _) = wait_for_use(app.db(), org.id, t.id, before).await;
    assert_eq!(row.last_used_method.as_deref(), Some("GET"));
    assert_eq!(row.last_used_path.as_deref(), Some("/api/v2/whoami"));
    // An untrusted peer is the client, whatever it claims.
    assert_eq!(row.last_used_ip.as_deref(), Some("127.0.0.1"));
    app.shutdown().await;
}

async fn a_use_just_before_shutdown_is_not_lost(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<String, String> = HashMap::from([
        ("KEYSMITH_CONFIG".into(), "/dev/null".into()),
        ("KEYSMITH_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), test_db.url.clone()),
        ("KEYSMITH_DATA_DIR".into(), dir.path().display().to_string()),
    ]);
    let config = Config::from_vars(&vars).unwrap();
    let database_url = config.database_url.clone();
    let server = app::start(config).await.unwrap();
    let state = server.state.clone();
    let b = keysmith::store::orgs::bootstrap(
        &state.db,
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    let org = Org {
        id: b.organization.id,
        owner: b.user.id,
    };
    let plain = keysmith::token::PlainToken::generate(&state.config.token_prefix);
    let mut tx = state.db.begin().await.unwrap();
    let token_id = tokens::create(
        &mut tx,
        &tokens::NewToken {
            user_id: org.owner,
            organization_id: org.id,
            label: &keysmith::domain::TokenLabel::parse("ci").unwrap(),
            display_prefix: &plain.display_prefix(),
            digest: &plain.digest(),
            scopes: &state.config.scopes.parse_set(["read"]).unwrap(),
            expires_at: None,
            project_ids: &[],
            created_ip: None,
            created_user_agent: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Far in the future, so only this use can satisfy the check below.
    state.clock.advance(Duration::from_secs(86_400));
    let at = state.clock.unix();
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v2/whoami", server.addr))
        .bearer_auth(plain.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();

    let db = Db::connect(&database_url, &PoolSettings::default())
        .await
        .unwrap();
    let row = tokens::find_in_org(&db, org.id, token_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.last_used_at.is_some_and(|t| t >= at),
        "{:?}",
        row.last_used_at
    );
    db.close().await;
}
