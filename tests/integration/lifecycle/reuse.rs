//! A replaced secret presented after its grace period: refused like any
//! dead token, and its owner alerted (over real SMTP) at most once an hour.

use std::time::Duration;

use mail_parser::MessageParser;
use serde_json::{Value, json};

use super::advance;
use crate::backend_tests;
use crate::bearer::{org, owner_token, www_authenticate};
use crate::harness::{Backend, SmtpServer, TestApp, new_client};

backend_tests!(
    #[cfg_attr(
        skip_smtp_tests,
        ignore = "SMTP test skipped: pip install aiosmtpd, then touch build.rs (CI installs it)"
    )]
    a_replaced_secret_used_after_its_grace_alerts_the_owner_once_an_hour,
);

const AGENT: &str = "leaky-script/0.1";

fn subjects_and_texts(raw: &[Vec<u8>]) -> Vec<(String, String)> {
    raw.iter()
        .map(|m| {
            let m = MessageParser::default().parse(m).unwrap();
            (
                m.subject().unwrap_or_default().to_string(),
                m.body_text(0).unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Presents `token` from 203.0.113.50 (through the trusted proxy) to whoami.
async fn present(app: &TestApp, token: &str) -> reqwest::Response {
    new_client()
        .get(app.url("/api/v2/whoami"))
        .bearer_auth(token)
        .header("user-agent", AGENT)
        .header("x-forwarded-for", "203.0.113.50")
        .send()
        .await
        .unwrap()
}

async fn reuse_events(app: &TestApp, token_id: i64) -> Vec<(Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT ip, detail FROM audit_events WHERE token_id = $1 \
         AND action = 'token.replaced_secret_used' ORDER BY id",
    )
    .bind(token_id)
    .fetch_all(app.db().pool())
    .await
    .unwrap()
}

async fn a_replaced_secret_used_after_its_grace_alerts_the_owner_once_an_hour(backend: Backend) {
    let smtp = SmtpServer::start();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("KEYSMITH_SMTP_URL", &smtp.url()),
            ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let org = org(&app).await;
    let t = owner_token(&app, &org).await;
    let r = new_client()
        .post(app.url("/api/v2/tokens/self/rotate"))
        .bearer_auth(&t.token)
        .json(&json!({ "graceSeconds": 30 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let new = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    let mail = subjects_and_texts(&smtp.wait_for(1).await);
    assert!(mail[0].0.contains("was regenerated"), "{mail:?}");
    assert!(mail[0].1.contains("self-rotation"), "{}", mail[0].1);

    // In grace: no alert.
    assert_eq!(present(&app, &t.token).await.status(), 200);
    advance(&app, 31);
    // Past grace: refused like any dead token, three times; one alert.
    for _ in 0..3 {
        let r = present(&app, &t.token).await;
        assert_eq!(r.status(), 401);
        assert!(www_authenticate(&r).contains("invalid_token"));
    }
    let r = new_client()
        .get(app.url("/auth/verify"))
        .bearer_auth(&t.token)
        .header("x-forwarded-uri", "/tickets/7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mail = subjects_and_texts(&smtp.wait_for(2).await);
    let alert = mail
        .iter()
        .find(|(s, _)| s.contains("replaced secret"))
        .expect("the reuse alert");
    for fact in [
        "203.0.113.50",
        "GET /api/v2/whoami",
        AGENT,
        "UTC",
        "A replaced token was used",
    ] {
        assert!(alert.1.contains(fact), "alert lacks {fact}:\n{}", alert.1);
    }
    assert!(!alert.1.contains(&t.token) && !alert.1.contains(&new));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.messages().len(), 2, "exactly one alert");
    let events = reuse_events(&app, t.id).await;
    assert_eq!(
        events,
        [(
            Some("203.0.113.50".into()),
            Some("GET /api/v2/whoami".into())
        )]
    );

    // Later in the same hour, even after the caches are gone: no second alert.
    advance(&app, 1800);
    app.state.verifier.clear();
    assert_eq!(present(&app, &t.token).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.messages().len(), 2, "at most one an hour");
    assert_eq!(reuse_events(&app, t.id).await.len(), 1);

    // An hour after the alert, a use alerts again.
    advance(&app, 1801);
    app.state.verifier.clear();
    assert_eq!(present(&app, &t.token).await.status(), 401);
    smtp.wait_for(3).await;
    assert_eq!(reuse_events(&app, t.id).await.len(), 2);

    // The current secret never raised anything.
    assert_eq!(present(&app, &new).await.status(), 200);
    app.shutdown().await;
}
