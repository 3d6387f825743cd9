//! `POST /api/v1/secret-scanning/reports`: leaked-token reports in GitHub's
//! secret scanning partner format. The signature over the raw body is
//! checked before anything else is read; the work is in
//! [`crate::service::leaks`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::api_keys::{SessionError, error};
use crate::app::AppState;
use crate::error::AppError;
use crate::request::RequestMeta;
use crate::service::leaks::{self, KeyRing, SignatureError};

pub const PATH: &str = "/api/v1/secret-scanning/reports";

const KEY_ID_HEADER: &str = "github-public-key-identifier";
const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The key ring, when `KEYSMITH_SECRET_SCANNING_KEYS` is set.
#[derive(Clone)]
pub struct Reports(pub Option<Arc<KeyRing>>);

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn signature_error(e: &SignatureError) -> Response {
    if matches!(e, SignatureError::KeysUnavailable) {
        // The report may be genuine: ask the sender to try again.
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The public keys that sign reports cannot be loaded right now; try again later.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    error(
        StatusCode::UNAUTHORIZED,
        &format!("The report's signature was not accepted: {e}. Nothing was revoked."),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/secret-scanning/reports",
    operation_id = "secretScanningReports",
    tag = "secret-scanning",
    summary = "Leaked-token reports in GitHub's secret scanning partner format",
    params(
        ("github-public-key-identifier" = String, Header, description = "Which of the reporter's keys signed the body."),
        ("github-public-key-signature" = String, Header, description = "Base64 of the ECDSA (P-256, SHA-256) DER signature over the raw body."),
    ),
    request_body(content = Vec<leaks::Reported>, content_type = "application/json"),
    responses(
        (status = 200, description = "One verdict per reported match, in order; genuine tokens are revoked.", body = Vec<leaks::Verdict>),
        (status = 400, description = "The body is not JSON. Nothing was revoked.", body = SessionError),
        (status = 401, description = "The signature is missing or not accepted. Nothing was revoked.", body = SessionError),
        (status = 404, description = "Reports are not enabled (`KEYSMITH_SECRET_SCANNING_KEYS` is not set).", body = SessionError),
        (status = 422, description = "The JSON is not an array of reports (or holds too many). Nothing was revoked.", body = SessionError),
        (status = 503, description = "The reporter's public keys cannot be loaded right now.", body = SessionError, headers(("retry-after" = i64, description = "Seconds to wait."))),
    ),
)]
pub async fn reports(
    State(state): State<AppState>,
    Extension(Reports(ring)): Extension<Reports>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let Some(ring) = ring else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "Leaked-token reports are not enabled here: the operator has not set KEYSMITH_SECRET_SCANNING_KEYS.",
        ));
    };
    if let Err(e) = ring
        .verify(
            header_str(&headers, KEY_ID_HEADER),
            header_str(&headers, SIGNATURE_HEADER),
            &body,
        )
        .await
    {
        tracing::warn!(reason = %e, "secret scanning report refused");
        return Ok(signature_error(&e));
    }
    let reports = match leaks::parse_reports(&body) {
        Ok(r) => r,
        Err(e) => {
            let status = if matches!(e, leaks::ReportError::Syntax(_)) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            return Ok(error(status, &format!("{e}. Nothing was revoked.")));
        }
    };
    let verdicts = leaks::handle_reports(&state, &meta, reports).await?;
    Ok(Json(verdicts).into_response())
}
