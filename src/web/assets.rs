//! Static assets, embedded in the binary at build time so the server finds
//! them whatever directory it runs from. Served with their content type, an
//! ETag and a cache lifetime; versioned vendor files are immutable.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub const HTMX_PATH: &str = "vendor/htmx-2.0.11.min.js";

struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    cache_control: &'static str,
}

const REVALIDATE: &str = "public, max-age=300";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

static ASSETS: &[Asset] = &[
    Asset {
        path: "app.css",
        body: include_bytes!("../../static/app.css"),
        content_type: "text/css; charset=utf-8",
        cache_control: REVALIDATE,
    },
    Asset {
        path: "app.js",
        body: include_bytes!("../../static/app.js"),
        content_type: "text/javascript; charset=utf-8",
        cache_control: REVALIDATE,
    },
    Asset {
        path: HTMX_PATH,
        body: include_bytes!("../../static/vendor/htmx-2.0.11.min.js"),
        content_type: "text/javascript; charset=utf-8",
        cache_control: IMMUTABLE,
    },
];

static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..20]))
        .collect()
});

pub async fn serve(Path(path): Path<String>, request_headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return crate::web::pages::asset_not_found();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    response
}
