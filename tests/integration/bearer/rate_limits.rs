//! Per-token rate limits: reads and writes per minute, the IETF httpapi
//! RateLimit headers, 429 with Retry-After, and the window on the
//! controllable clock.

use std::time::Duration;

use keysmith::store::invalidation::Invalidation;
use keysmith::verify::commit_and_invalidate;
use serde_json::Value;

use super::{Spec, header, mint, org, owner_token, set_token_disabled, verify, whoami};
use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    the_61st_write_in_a_minute_is_429_until_the_window_resets,
    reads_have_their_own_budget_and_organizations_can_override_it,
    refused_tokens_do_not_spend_the_budget,
    forward_auth_can_answer_403_instead_of_429_for_nginx,
);

fn int(v: Option<String>) -> i64 {
    v.expect("header present").parse().unwrap()
}

/// `t` from a `RateLimit` value like `"writes";r=0;t=42`.
fn reset_of(ratelimit: &str) -> i64 {
    ratelimit.rsplit("t=").next().unwrap().parse().unwrap()
}

async fn the_61st_write_in_a_minute_is_429_until_the_window_resets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    for n in 1..=60 {
        let r = verify(&app, &t.token, "", "POST", "/tickets").await;
        assert_eq!(r.status(), 200, "write {n}");
        assert_eq!(
            header(&r, "ratelimit").map(|v| v.split(";t=").next().unwrap().to_string()),
            Some(format!("\"writes\";r={}", 60 - n))
        );
    }
    let r = verify(&app, &t.token, "", "PUT", "/tickets/1").await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"writes\";q=60;w=60")
    );
    let ratelimit = header(&r, "ratelimit").unwrap();
    assert!(ratelimit.starts_with("\"writes\";r=0;t="), "{ratelimit}");
    let t_reset = reset_of(&ratelimit);
    let retry_after = int(header(&r, "retry-after"));
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        retry_after >= t_reset,
        "Retry-After {retry_after} < t {t_reset}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    // Reads are a separate budget and still pass.
    assert_eq!(
        verify(&app, &t.token, "", "GET", "/tickets").await.status(),
        200
    );
    assert_eq!(whoami(&app, &t.token).await.status(), 200);

    // Just before the window ends: still refused. Then it resets.
    app.state
        .clock
        .advance(Duration::from_secs((retry_after - 1) as u64));
    assert_eq!(
        verify(&app, &t.token, "", "POST", "/tickets")
            .await
            .status(),
        429
    );
    app.state.clock.advance(Duration::from_secs(1));
    let r = verify(&app, &t.token, "", "POST", "/tickets").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"writes\";r=59;t=60")
    );
    app.shutdown().await;
}

async fn reads_have_their_own_budget_and_organizations_can_override_it(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_READS_PER_MINUTE", "5"),
            ("KEYSMITH_WRITES_PER_MINUTE", "2"),
        ],
    )
    .await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    for _ in 0..5 {
        assert_eq!(whoami(&app, &t.token).await.status(), 200);
    }
    let r = whoami(&app, &t.token).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"reads\";q=5;w=60")
    );
    // Writes are untouched.
    assert_eq!(
        verify(&app, &t.token, "", "PATCH", "/x").await.status(),
        200
    );

    // The organization sets its own budget; it applies at once.
    let mut tx = app.db().begin().await.unwrap();
    sqlx::query(
        "UPDATE organizations SET reads_per_minute = 8, writes_per_minute = 3 WHERE id = $1",
    )
    .bind(org.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    commit_and_invalidate(
        tx,
        &app.state.verifier,
        &[Invalidation::Organization(org.id)],
    )
    .await
    .unwrap();
    let r = whoami(&app, &t.token).await;
    assert_eq!(r.status(), 200, "the window's count carries over: 6 of 8");
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"reads\";q=8;w=60")
    );
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .starts_with("\"reads\";r=2;")
    );
    let r = verify(&app, &t.token, "", "DELETE", "/x").await;
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"writes\";q=3;w=60")
    );
    app.shutdown().await;
}

async fn refused_tokens_do_not_spend_the_budget(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_WRITES_PER_MINUTE", "5")]).await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let other = mint(
        &app,
        org.id,
        org.owner,
        Spec {
            label: "other",
            ..Spec::default()
        },
    )
    .await;
    set_token_disabled(&app, &org, t.id, true).await;
    for _ in 0..10 {
        assert_eq!(verify(&app, &t.token, "", "POST", "/x").await.status(), 401);
    }
    // Another token's use is counted against that token only.
    for _ in 0..5 {
        assert_eq!(
            verify(&app, &other.token, "", "POST", "/x").await.status(),
            200
        );
    }
    set_token_disabled(&app, &org, t.id, false).await;
    for n in 1..=5 {
        assert_eq!(
            verify(&app, &t.token, "", "POST", "/x").await.status(),
            200,
            "write {n}"
        );
    }
    assert_eq!(verify(&app, &t.token, "", "POST", "/x").await.status(), 429);
    app.shutdown().await;
}

async fn forward_auth_can_answer_403_instead_of_429_for_nginx(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_WRITES_PER_MINUTE", "1"),
            ("KEYSMITH_VERIFY_429_AS_403", "true"),
        ],
    )
    .await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    assert_eq!(verify(&app, &t.token, "", "POST", "/x").await.status(), 200);
    let r = verify(&app, &t.token, "", "POST", "/x").await;
    assert_eq!(r.status(), 403);
    assert!(int(header(&r, "retry-after")) >= 1);
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .starts_with("\"writes\";r=0;")
    );
    app.shutdown().await;
}
