//! `AppError`: the one error type handlers return. Expected failures map to
//! their status; anything unexpected is logged with its cause chain and shown
//! as a plain 500 without internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("the database is not answering; try again shortly")]
    Unavailable,
    /// The store refused a write (`reason` says why); nothing was changed.
    #[error(
        "Nothing was saved: the server's storage cannot write ({0}). Try again later; if it lasts, tell the operator."
    )]
    CannotWrite(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::NotFound,
            StoreError::Unavailable => AppError::Unavailable,
            StoreError::CannotWrite(reason) => AppError::CannotWrite(reason),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("rendering a template"))
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Unavailable | AppError::CannotWrite(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client may see: never the internals of a 500.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => "Something went wrong on our side. It has been logged.".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Internal(e) => tracing::error!(error = format!("{e:#}"), "request failed"),
            AppError::Unavailable => tracing::warn!("database unavailable"),
            AppError::CannotWrite(reason) => tracing::error!(reason, "the database cannot write"),
            _ => {}
        }
        let mut response =
            (status, Json(json!({ "error": self.public_message() }))).into_response();
        if let AppError::CannotWrite(reason) = self {
            response
                .extensions_mut()
                .insert(crate::web::health::CannotWriteMarker(reason));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}
