//! `/dev/mail`, the development mailbox: only for a request straight from
//! this machine, and its files readable by their owner only.

use std::os::unix::fs::PermissionsExt;

use keysmith::store::orgs;

use crate::harness::{Backend, TestApp};

async fn app_with_a_message() -> TestApp {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    orgs::bootstrap(
        app.db(),
        &keysmith::domain::OrgName::parse("Acme").unwrap(),
        &keysmith::domain::EmailAddress::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    app.post_form_with(
        &app.client,
        "/signin",
        "/signin",
        &[("email", "ada@example.com")],
    )
    .await;
    app.wait_for_dev_mail("ada@example.com", 1).await;
    app
}

#[tokio::test]
async fn the_mailbox_is_only_for_requests_straight_from_this_machine() {
    let app = app_with_a_message().await;
    let direct = app.get("/dev/mail").await;
    assert_eq!(direct.status(), 200);
    assert!(direct.text().await.unwrap().contains("/signin/link/"));
    let port = app.base_url.rsplit(':').next().unwrap().to_string();
    // A same-host reverse proxy: the peer is loopback, the visitor is not.
    let proxied: &[(&str, String)] = &[
        ("x-forwarded-for", "203.0.113.9".into()),
        ("forwarded", "for=203.0.113.9".into()),
        ("x-real-ip", "203.0.113.9".into()),
        ("x-forwarded-host", "keys.example.com".into()),
        ("via", "1.1 caddy".into()),
        // Even a forwarded address that is itself loopback: a proxy is in
        // between, and it serves whoever reached it.
        ("x-forwarded-for", "127.0.0.1".into()),
        // A proxy that adds nothing but passes the public Host on, or a
        // DNS-rebound name pointing at 127.0.0.1.
        ("host", format!("keys.example.com:{port}")),
        ("host", "rebind.attacker.example".into()),
    ];
    for (name, value) in proxied {
        let r = app
            .client
            .get(app.url("/dev/mail"))
            .header(*name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{name}: {value}");
        assert!(!r.text().await.unwrap().contains("/signin/link/"), "{name}");
    }
    let r = app
        .client
        .get(app.url("/dev/mail"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "localhost is this machine too");
    app.shutdown().await;
}

#[tokio::test]
async fn mailbox_files_are_readable_by_their_owner_only() {
    let app = app_with_a_message().await;
    let dir = app.data_dir.join("mail");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 2, "an .eml and its .json");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the folder lists for its owner only");
    app.shutdown().await;
}
