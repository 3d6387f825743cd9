//! The signed-in person's own session: switching the current organization.

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::session::SignedIn;
use crate::error::AppError;
use crate::store::sessions;
use crate::web::pages::PageResult;
use crate::web::signin::HOME;

#[derive(Deserialize)]
pub struct SwitchForm {
    #[serde(default)]
    organization_id: String,
}

pub async fn switch_organization(
    State(state): State<AppState>,
    who: SignedIn,
    Form(form): Form<SwitchForm>,
) -> PageResult {
    let wanted: i64 = form
        .organization_id
        .trim()
        .parse()
        .map_err(|_| AppError::BadRequest("Choose an organization from the list.".into()))?;
    if !who.memberships.iter().any(|m| m.organization.id == wanted) {
        return Err(AppError::Forbidden(
            "You are not an active member of that organization.".into(),
        )
        .into());
    }
    sessions::set_current_organization(&state.db, who.session_id, wanted).await?;
    Ok((StatusCode::SEE_OTHER, Redirect::to(HOME)).into_response())
}
