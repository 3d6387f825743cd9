//! `/settings/api-tokens`: the signed-in person's tokens in the current organization.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::{Html, IntoResponse};

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::SignedIn;
use crate::store::tokens::{self, TokenRecord};
use crate::web::layout::Layout;
use crate::web::pages::PageResult;

#[derive(Template)]
#[template(path = "pages/api_tokens.html")]
struct TokensPage {
    layout: Layout,
    may_manage: bool,
    tokens: Vec<TokenRecord>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    who: SignedIn,
) -> PageResult {
    let may_manage = who.membership.may_manage_tokens();
    let tokens = if may_manage {
        tokens::list_for_owner(&state.db, who.organization_id(), who.user_id, false).await?
    } else {
        Vec::new()
    };
    let page = TokensPage {
        layout: Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens"),
        may_manage,
        tokens,
    };
    Ok(Html(page.render()?).into_response())
}
