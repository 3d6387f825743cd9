//! Input that used to reach the user as a 500, slip into pages and emails,
//! or hold a connection forever.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    a_huge_member_search_is_a_clear_422,
    labels_refuse_invisible_formatting_and_separators,
);

async fn a_huge_member_search_is_a_clear_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    // 20,000 LIKE wildcards: a 40 KB query string, percent-encoded.
    let q = "%25_".repeat(10_000);
    for htmx in [false, true] {
        let mut req = app.client.get(app.url(&format!("/team?q={q}")));
        if htmx {
            req = req
                .header("hx-request", "true")
                .header("hx-target", "members");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 422, "htmx: {htmx}");
        assert!(r.text().await.unwrap().contains("at most 254 characters"));
    }
    let ok = app.get("/team?q=ada").await;
    assert_eq!(ok.status(), 200);
    app.shutdown().await;
}

async fn labels_refuse_invisible_formatting_and_separators(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    for label in [
        "deploy\u{202E}gpj.exe",
        "\u{200B}",
        "two\u{2028}lines",
        "para\u{2029}",
    ] {
        let r = app
            .api(
                reqwest::Method::POST,
                "/api/user/api-keys",
                Some(serde_json::json!({ "label": label })),
            )
            .await;
        assert_eq!(r.status(), 422, "{label:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["errors"]["label"]
                .as_str()
                .unwrap()
                .contains("invisible formatting"),
            "{body}"
        );
    }
    let listed: serde_json::Value = app
        .api(reqwest::Method::GET, "/api/user/api-keys", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing was created"
    );
    // A decomposed é is stored composed, so the same label typed elsewhere
    // is the same label.
    let (id, _) = app.create_key("cafe\u{0301}").await;
    let r = app
        .api(
            reqwest::Method::POST,
            "/api/user/api-keys",
            Some(serde_json::json!({ "label": "caf\u{00E9}" })),
        )
        .await;
    assert_eq!(r.status(), 422, "duplicate label after normalisation");
    let r = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/user/api-keys/{id}"),
            Some(serde_json::json!({ "label": "x\u{202E}y" })),
        )
        .await;
    assert_eq!(r.status(), 422, "renames are held to the same rule");
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let addr = app.base_url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // One header byte a second, never the blank line that ends them.
        let mut buf = [0u8; 512];
        for _ in 0..60 {
            if s.write_all(b"X").is_err() {
                return started.elapsed();
            }
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => return started.elapsed(), // an error answer, then close
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after >= keysmith::serve::HEADER_READ_TIMEOUT - Duration::from_secs(1)
            && closed_after < keysmith::serve::HEADER_READ_TIMEOUT + Duration::from_secs(5),
        "connection closed after {closed_after:?}"
    );
    // The server itself is fine.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.shutdown().await;
}
