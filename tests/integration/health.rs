//! `/healthz`, `/readyz`, security headers and request ids.

use crate::backend_tests;
use crate::harness::{Backend, TestApp};

backend_tests!(
    healthz_and_readyz_answer_200,
    readyz_answers_503_when_the_database_does_not,
    a_lost_database_gets_browsers_a_page_and_apis_json,
    every_response_carries_security_headers_and_a_request_id,
    unknown_paths_are_404,
);

async fn healthz_and_readyz_answer_200(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    app.shutdown().await;
}

async fn readyz_answers_503_when_the_database_does_not(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    // Closing the pool makes every query fail, as a lost database would.
    app.db().close().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    // The process itself is still up.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

async fn every_response_carries_security_headers_and_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    let token = app.create_key("probe").await.1;
    let mut request_ids = std::collections::HashSet::new();
    let mut check = |path: &str, h: &reqwest::header::HeaderMap, rendered: bool| {
        // Everywhere: no sniffing, no URL sent on, a fresh random request id.
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let id = uuid::Uuid::parse_str(h["x-request-id"].to_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4, "{path}: {id}");
        assert!(request_ids.insert(id), "{path}: {id} again");
        // Plain http deployment: no HSTS.
        assert!(h.get("strict-transport-security").is_none(), "{path}");
        if rendered {
            // What a browser renders or frames: the document policies.
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{path}: {csp}"
            );
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["cross-origin-opener-policy"], "same-origin", "{path}");
        } else {
            // The machine routes' JSON is rendered by nobody: no document
            // policy, and no gzip for a few hundred bytes.
            for name in [
                "content-security-policy",
                "x-frame-options",
                "content-encoding",
            ] {
                assert!(h.get(name).is_none(), "{path}: {name}");
            }
        }
    };
    for path in [
        "/no-such-page",
        "/static/app.css",
        "/settings/api-tokens",
        "/api/user/api-keys",
        "/api/openapi.json",
    ] {
        let r = app.get(path).await;
        check(path, r.headers(), true);
    }
    for path in ["/healthz", "/readyz", "/api/v2/whoami", "/auth/verify"] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        check(path, r.headers(), false);
    }
    // A caller's request id is kept, so logs on both sides line up.
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    app.shutdown().await;
}

async fn unknown_paths_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.get("/nope").await.status(), 404);
    assert_eq!(app.get("/static/nope.css").await.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn https_public_url_turns_on_hsts() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("KEYSMITH_PUBLIC_URL", "https://keys.example.com")],
    )
    .await;
    let r = app.get("/healthz").await;
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    app.shutdown().await;
}

/// With the database gone, a browser asking for a page gets a 503 page in
/// the site's frame with `Retry-After`; the JSON API still answers JSON.
async fn a_lost_database_gets_browsers_a_page_and_apis_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signed_in_superuser("ada@example.com").await;
    app.db().close().await;
    for path in ["/settings/api-tokens", "/team", "/team/audit"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "5", "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let html = r.text().await.unwrap();
        assert!(
            html.contains("<html lang=") && html.contains("<h1"),
            "{path}: {html}"
        );
        assert!(html.contains("Temporarily unavailable"), "{path}: {html}");
    }
    let r = app.get("/api/user/api-keys").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}
