//! `/healthz` (the process is up) and `/readyz` (the database answers too).

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::store::StoreError;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready only while the database answers and can store something, within
/// two seconds, so a load balancer stops sending traffic to an instance
/// that lost its database or whose disk is full.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // A full disk lets a one-row write pass while real ones fail: what
    // this instance's writes met comes first, then the probe.
    let check = async {
        if let Some(reason) = state.db.write_health().failing() {
            return Err(StoreError::CannotWrite(reason));
        }
        state.db.ping().await?;
        state.db.probe_write().await
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "database": "ok" })),
        ),
        Ok(Err(StoreError::CannotWrite(reason))) => {
            tracing::warn!(reason, "readiness check: the database cannot write");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "database": "cannot write",
                    "reason": reason,
                })),
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: database error");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "error" })),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "database": "timeout" })),
        ),
    }
}

/// Tells the store's [`WriteHealth`](crate::store::health::WriteHealth) what
/// browser-side writes met: a storage failure marks it (the error response
/// carries [`CannotWriteMarker`]), a successful state-changing request clears it.
pub async fn track_writes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let writes = !request.method().is_safe();
    let response = next.run(request).await;
    if let Some(CannotWriteMarker(reason)) = response.extensions().get() {
        state.db.write_health().failed(reason);
    } else if writes && (response.status().is_success() || response.status().is_redirection()) {
        state.db.write_health().succeeded();
    }
    response
}

/// Set on a response by [`AppError::CannotWrite`](crate::error::AppError).
#[derive(Clone, Copy, Debug)]
pub struct CannotWriteMarker(pub &'static str);
