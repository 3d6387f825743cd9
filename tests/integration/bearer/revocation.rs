//! Instant revocation under load, and what happens when the database goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Spec, header, mint, org, owner_token, revoke, wait_until_listening, whoami};
use crate::harness::{Backend, TestApp, postgres_admin_url};
use crate::{backend_tests, postgres_only_tests};

backend_tests!(
    no_request_started_after_a_revocation_succeeds_under_load,
    revoking_through_the_dashboard_api_under_load_is_immediate,
    with_the_database_gone_cached_tokens_work_and_uncached_ones_get_503_quickly,
);

postgres_only_tests!(verification_recovers_without_a_restart_when_the_database_returns);

async fn no_request_started_after_a_revocation_succeeds_under_load(backend: Backend) {
    let app =
        Arc::new(TestApp::spawn_with(backend, &[("KEYSMITH_READS_PER_MINUTE", "1000000")]).await);
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for n in 0..4 {
        let (app, stop, token) = (Arc::clone(&app), Arc::clone(&stop), t.token.clone());
        hammers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = if n % 2 == 0 {
                    whoami(&app, &token).await
                } else {
                    super::verify(&app, &token, "", "GET", "/load").await
                };
                seen.push((started, r.status().as_u16()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    revoke(&app, &org, t.id).await;
    let revoked = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut before_ok = 0;
    let mut after = 0;
    for hammer in hammers {
        for (started, status) in hammer.await.unwrap() {
            if started > revoked {
                after += 1;
                assert_eq!(
                    status, 401,
                    "a request started after the revocation succeeded"
                );
            } else if status == 200 {
                before_ok += 1;
            }
        }
    }
    assert!(
        before_ok > 20,
        "the token worked under load first ({before_ok})"
    );
    assert!(
        after > 20,
        "requests kept coming after the revocation ({after})"
    );
    Arc::try_unwrap(app).ok().unwrap().shutdown().await;
}

/// The same, end to end: the owner revokes through the browser session's
/// JSON API while clients hammer whoami; once the DELETE has answered, no
/// request that starts succeeds.
async fn revoking_through_the_dashboard_api_under_load_is_immediate(backend: Backend) {
    let app =
        Arc::new(TestApp::spawn_with(backend, &[("KEYSMITH_READS_PER_MINUTE", "1000000")]).await);
    app.signed_in_superuser("ada@example.com").await;
    let (id, token) = app.create_key("hammered").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for _ in 0..4 {
        let (app, stop, token) = (Arc::clone(&app), Arc::clone(&stop), token.clone());
        hammers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = whoami(&app, &token).await.status().as_u16();
                seen.push((started, status));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = app
        .api(
            reqwest::Method::DELETE,
            &format!("/api/user/api-keys/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let revoked = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut before_ok, mut after) = (0, 0);
    for hammer in hammers {
        for (started, status) in hammer.await.unwrap() {
            if started > revoked {
                after += 1;
                assert_eq!(
                    status, 401,
                    "a request started after the DELETE answered succeeded"
                );
            } else if status == 200 {
                before_ok += 1;
            }
        }
    }
    assert!(
        before_ok > 20,
        "the token worked under load first ({before_ok})"
    );
    assert!(
        after > 20,
        "requests kept coming after the revocation ({after})"
    );
    Arc::try_unwrap(app).ok().unwrap().shutdown().await;
}

async fn with_the_database_gone_cached_tokens_work_and_uncached_ones_get_503_quickly(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    wait_until_listening(&app).await;
    let org = org(&app).await;
    let cached = owner_token(&app, &org).await;
    let uncached = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "uncached",
            ..Spec::default()
        },
    )
    .await;
    assert_eq!(whoami(&app, &cached.token).await.status(), 200);

    // Closing the pool makes every query fail, as a lost database would.
    app.db().close().await;
    assert_eq!(whoami(&app, &cached.token).await.status(), 200);
    for _ in 0..3 {
        let started = Instant::now();
        let r = whoami(&app, &uncached.token).await;
        assert_eq!(r.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(header(&r, "retry-after").is_some());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        let r = super::verify(&app, &uncached.token, "", "GET", "/").await;
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        super::verify(&app, &cached.token, "", "GET", "/")
            .await
            .status(),
        200
    );
    app.shutdown().await;
}

async fn admin_sql(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn verification_recovers_without_a_restart_when_the_database_returns() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let name = url::Url::parse(app.state.config.database_url.connect_url())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    wait_until_listening(&app).await;
    let org = org(&app).await;
    let cached = owner_token(&app, &org).await;
    let uncached = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "uncached",
            ..Spec::default()
        },
    )
    .await;
    assert_eq!(whoami(&app, &cached.token).await.status(), 200);

    // The database refuses connections and every existing one is cut,
    // the invalidation listener's included.
    admin_sql(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let started = Instant::now();
    assert_eq!(whoami(&app, &uncached.token).await.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(whoami(&app, &cached.token).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    admin_sql(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await;
    let back = Instant::now();
    loop {
        let status = whoami(&app, &uncached.token).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(back.elapsed() < Duration::from_secs(15), "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And revocation is instant again.
    revoke(&app, &org, cached.id).await;
    assert_eq!(whoami(&app, &cached.token).await.status(), 401);
    app.shutdown().await;
}
