//! Static files: embedded, typed, cached, revalidated.

use crate::harness::{Backend, TestApp};

#[tokio::test]
async fn assets_are_served_with_type_cache_and_etag() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/static/app.css").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let etag = r.headers()["etag"].clone();
    let body = r.bytes().await.unwrap();
    assert_eq!(
        &body[..],
        std::fs::read("static/app.css").unwrap().as_slice()
    );

    let again = app
        .client
        .get(app.url("/static/app.css"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let htmx = app
        .get(&format!("/static/{}", keysmith::web::assets::HTMX_PATH))
        .await;
    assert_eq!(htmx.status(), 200);
    assert_eq!(
        htmx.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        htmx.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn assets_are_compressed_when_the_client_accepts_it() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .client
        .get(app.url(&format!("/static/{}", keysmith::web::assets::HTMX_PATH)))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    app.shutdown().await;
}
