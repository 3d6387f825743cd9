//! The reference for `bench/run.sh`: a bare axum hello-world route, no
//! middleware, a fixed 55-byte JSON body, served the way axum's own
//! examples serve. Keysmith's bearer routes are measured against it in the
//! same run, so the ratio says what the service costs over the framework.
//!
//!     cargo run --release --example bare_axum -- 127.0.0.1:39392

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// 55 bytes, the size of a whoami answer's fixed part.
const BODY: &str = r#"{"id":1,"login":"bench@example.com","scopes":["write"]}"#;

async fn whoami() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:39392".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new().route("/whoami", get(whoami));
    axum::serve(listener, app).await
}
