//! Two Keysmith instances sharing one PostgreSQL: a change made through one
//! reaches the other's cache through LISTEN/NOTIFY within a second.

use std::time::{Duration, Instant};

use super::{
    Spec, member, mint, org, owner_token, revoke, set_can_manage_tokens, wait_until_listening,
    whoami,
};
use crate::harness::{Backend, TestApp};
use crate::postgres_only_tests;

postgres_only_tests!(a_token_revoked_on_one_instance_is_refused_by_the_other_within_a_second);

/// Polls `b` until it refuses `token`; returns how long that took.
async fn refused_after(b: &TestApp, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = whoami(b, token).await.status();
        if status == 401 {
            return started.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "instance B never refused the token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_token_revoked_on_one_instance_is_refused_by_the_other_within_a_second() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = TestApp::spawn_with(Backend::Postgres, &[("DATABASE_URL", &url)]).await;
    wait_until_listening(&a).await;
    wait_until_listening(&b).await;

    let org = org(&a).await;
    let t = owner_token(&a, &org).await;
    let bob = member(&a, &org, "bob@example.com").await;
    let bobs = mint(&a, org.id, bob, Spec::default()).await;
    for token in [&t.token, &bobs.token] {
        assert_eq!(whoami(&a, token).await.status(), 200);
        assert_eq!(whoami(&b, token).await.status(), 200);
    }
    // B answers from its cache from now on.
    assert_eq!(b.state.verifier.cached_tokens(), 2);

    revoke(&a, &org, t.id).await;
    assert_eq!(
        whoami(&a, &t.token).await.status(),
        401,
        "A refuses at once"
    );
    let took = refused_after(&b, &t.token).await;
    assert!(took < Duration::from_secs(1), "B refused after {took:?}");

    set_can_manage_tokens(&a, &org, bob, false).await;
    let took = refused_after(&b, &bobs.token).await;
    assert!(took < Duration::from_secs(1), "B refused after {took:?}");

    b.shutdown().await;
    a.shutdown().await;
}
