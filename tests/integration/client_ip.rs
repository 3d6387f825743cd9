//! One client-IP rule for everything that records or limits by address:
//! behind a trusted proxy, the header the operator chose, walked from the
//! right; a client's own `Forwarded` changes nothing.

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(the_audit_log_and_emails_record_the_proxy_reported_address,);

async fn ask_for_link(app: &TestApp, csrf: &str, n: usize, headers: &[(&str, String)]) -> u16 {
    let mut req = app.client.post(app.url("/signin"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let email = format!("person{n}@example.com");
    req.form(&[("email", email.as_str()), ("csrf_token", csrf)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_rotating_forwarded_header_does_not_escape_the_sign_in_throttle() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    let csrf = app.csrf_with(&app.client, "/signin").await;
    let mut statuses = Vec::new();
    for n in 0..33 {
        // The client invents a new Forwarded address each time; the proxy
        // appends the real one to X-Forwarded-For.
        let headers = [
            ("forwarded", format!("for=6.6.6.{n}")),
            ("x-forwarded-for", "198.51.100.4".to_string()),
        ];
        statuses.push(ask_for_link(&app, &csrf, n, &headers).await);
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(&statuses[30..], &[429, 429, 429]);
    // Another client behind the same proxy has its own budget.
    let other = [("x-forwarded-for", "198.51.100.5".to_string())];
    assert_eq!(ask_for_link(&app, &csrf, 99, &other).await, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn clients_in_one_ipv6_64_share_a_throttle() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    let csrf = app.csrf_with(&app.client, "/signin").await;
    let mut statuses = Vec::new();
    for n in 0..31 {
        let headers = [("x-forwarded-for", format!("2001:db8:1:2::{n:x}"))];
        statuses.push(ask_for_link(&app, &csrf, n, &headers).await);
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[30], 429, "a /64 sprays no new keys");
    let elsewhere = [("x-forwarded-for", "2001:db8:1:3::1".to_string())];
    assert_eq!(ask_for_link(&app, &csrf, 99, &elsewhere).await, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn the_operator_may_choose_forwarded_or_x_real_ip_instead() {
    for (setting, header, value) in [
        ("Forwarded", "forwarded", "for=6.6.6.6, for=198.51.100.4"),
        ("X-Real-IP", "x-real-ip", "198.51.100.4"),
    ] {
        let app = TestApp::spawn_with(
            Backend::Sqlite,
            &[
                ("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1"),
                ("KEYSMITH_CLIENT_IP_HEADER", setting),
            ],
        )
        .await;
        let csrf = app.csrf_with(&app.client, "/signin").await;
        for n in 0..30 {
            let headers = [
                (header, value.to_string()),
                ("x-forwarded-for", format!("6.6.7.{n}")),
            ];
            assert_eq!(ask_for_link(&app, &csrf, n, &headers).await, 200);
        }
        // X-Forwarded-For is not the chosen header now: rotating it is no escape.
        let headers = [
            (header, value.to_string()),
            ("x-forwarded-for", "6.6.8.1".to_string()),
        ];
        assert_eq!(
            ask_for_link(&app, &csrf, 31, &headers).await,
            429,
            "{setting}"
        );
        app.shutdown().await;
    }
}

async fn the_audit_log_and_emails_record_the_proxy_reported_address(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")]).await;
    app.signed_in_superuser("ada@example.com").await;
    let csrf = app.csrf_with(&app.client, "/settings/api-tokens").await;
    let r = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("x-csrf-token", csrf)
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-for", "6.6.6.7, 198.51.100.4")
        .json(&serde_json::json!({"label": "deploy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let audit = app.audit_actions(id).await;
    assert_eq!(audit[0].1.as_deref(), Some("198.51.100.4"), "{audit:?}");
    let mail = app.wait_for_dev_mail("ada@example.com", 2).await;
    let eml = std::fs::read_to_string(app.data_dir.join("mail").join(&mail[0].file)).unwrap();
    assert!(
        eml.contains("198.51.100.4"),
        "the creation email names the address"
    );
    assert!(!eml.contains("6.6.6.6") && !eml.contains("6.6.6.7"));
    app.shutdown().await;
}
