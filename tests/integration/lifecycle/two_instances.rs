//! Two instances sharing one PostgreSQL: a regenerated token's old secret
//! follows the grace period on both, whatever either had cached.

use serde_json::{Value, json};

use super::advance;
use crate::bearer::{org, owner_token, wait_until_listening, whoami};
use crate::harness::{Backend, TestApp, new_client};
use crate::postgres_only_tests;

postgres_only_tests!(the_grace_period_holds_on_every_instance);

async fn rotate(app: &TestApp, token: &str, grace: i64) -> String {
    let r = new_client()
        .post(app.url("/api/v2/tokens/self/rotate"))
        .bearer_auth(token)
        .json(&json!({ "graceSeconds": grace }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls `app` until `token` gets `status` (within a second).
async fn answers_within_a_second(app: &TestApp, token: &str, status: u16) {
    let started = std::time::Instant::now();
    while whoami(app, token).await.status() != status {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn the_grace_period_holds_on_every_instance() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let url = a.state.config.database_url.connect_url().to_string();
    let b = TestApp::spawn_with(Backend::Postgres, &[("DATABASE_URL", &url)]).await;
    wait_until_listening(&a).await;
    wait_until_listening(&b).await;
    let org = org(&a).await;
    let t = owner_token(&a, &org).await;
    assert_eq!(whoami(&a, &t.token).await.status(), 200);
    assert_eq!(whoami(&b, &t.token).await.status(), 200, "B caches it");

    // Rotated on A with a minute of grace: B keeps accepting the old
    // secret (re-read as a replaced one), and the new one, until the grace ends.
    let second = rotate(&a, &t.token, 60).await;
    assert_eq!(whoami(&b, &second).await.status(), 200);
    assert_eq!(whoami(&b, &t.token).await.status(), 200);
    advance(&b, 61);
    assert_eq!(whoami(&b, &t.token).await.status(), 401, "B: grace over");
    advance(&a, 61);
    assert_eq!(whoami(&a, &t.token).await.status(), 401, "A: grace over");

    // Rotated on A without grace: B refuses the cached old secret within a second.
    assert_eq!(whoami(&b, &second).await.status(), 200);
    let third = rotate(&a, &second, 0).await;
    answers_within_a_second(&b, &second, 401).await;
    assert_eq!(whoami(&b, &third).await.status(), 200);
    b.shutdown().await;
    a.shutdown().await;
}
