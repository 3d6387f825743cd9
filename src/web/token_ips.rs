//! "Where a token was used": the details view of a token's recent client
//! addresses (for its owner on the settings page, for a superuser on the
//! member's Team page), and the member's switch for new-address alerts.
//! Each view is a dialog fragment for htmx and a page without it.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::csrf::CsrfToken;
use crate::auth::session::SignedIn;
use crate::error::AppError;
use crate::service::team as team_ops;
use crate::store::token_ips::{self, SeenIp};
use crate::store::tokens::{self, TokenRecord};
use crate::web::flash;
use crate::web::layout::Layout;
use crate::web::pages::{PageError, PageResult, no_store};
use crate::web::team::time_view;
use crate::web::tokens::TimeView;

/// Where the alert switch posts.
pub const ALERTS_PATH: &str = "/settings/api-tokens/alerts";

pub struct IpView {
    pub ip: String,
    pub first_seen: TimeView,
    pub last_seen: TimeView,
}

pub struct IpsView {
    pub label: String,
    pub prefix: String,
    pub ips: Vec<IpView>,
    /// Where "Back" leads on the page without JavaScript.
    pub back: String,
    /// Whose token, when a superuser is looking.
    pub owner: Option<String>,
    /// How many addresses are kept.
    pub kept: i64,
}

impl IpsView {
    fn new(t: &TokenRecord, seen: Vec<SeenIp>, now: i64, back: String) -> IpsView {
        IpsView {
            label: t.label.clone(),
            prefix: t.display_prefix.clone(),
            ips: seen
                .into_iter()
                .map(|s| IpView {
                    ip: s.ip,
                    first_seen: time_view(s.first_seen_at, now),
                    last_seen: time_view(s.last_seen_at, now),
                })
                .collect(),
            back,
            owner: None,
            kept: token_ips::KEPT,
        }
    }
}

#[derive(Template)]
#[template(path = "partials/tokens/ips.html")]
struct IpsPartial {
    v: IpsView,
    full_page: bool,
}

#[derive(Template)]
#[template(path = "pages/token_ips.html")]
struct IpsPage {
    layout: Layout,
    v: IpsView,
    full_page: bool,
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse().map_err(|_| PageError(AppError::NotFound))
}

fn render(headers: &HeaderMap, layout: impl FnOnce() -> Layout, v: IpsView) -> PageResult {
    let html = if is_htmx(headers) {
        IpsPartial {
            v,
            full_page: false,
        }
        .render()?
    } else {
        IpsPage {
            layout: layout(),
            v,
            full_page: true,
        }
        .render()?
    };
    Ok(no_store(Html(html).into_response()))
}

/// `GET /settings/api-tokens/{id}/ips`: the owner's view of one token
/// (revoked ones too: where it was used stays worth knowing).
pub async fn settings_ips(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_id(&id)?;
    let t = match tokens::find_in_org(&state.db, who.organization_id(), id).await? {
        Some(t) if t.user_id == who.user_id => t,
        _ => return Err(PageError(AppError::NotFound)),
    };
    let seen = token_ips::list(&state.db, t.id).await?;
    let v = IpsView::new(&t, seen, state.clock.unix(), "/settings/api-tokens".into());
    render(
        &headers,
        || Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "tokens"),
        v,
    )
}

/// `GET /team/members/{id}/tokens/{token}/ips`: a superuser's view of a
/// member's token.
pub async fn team_ips(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    who: SignedIn,
    Path((uid, tid)): Path<(String, String)>,
) -> PageResult {
    if let Err(r) = crate::web::team::gate(&state, &csrf.0, &who).await {
        return Ok(r);
    }
    let (uid, tid) = (parse_id(&uid)?, parse_id(&tid)?);
    let (m, t) = match team_ops::member_token(&state, &who, uid, tid).await {
        Ok(found) => found,
        Err(e) => return crate::web::team::op_error(&state, &csrf.0, &who, e).await,
    };
    let seen = token_ips::list(&state.db, t.id).await?;
    let mut v = IpsView::new(&t, seen, state.clock.unix(), format!("/team/members/{uid}"));
    v.owner = Some(m.email.clone());
    render(
        &headers,
        || Layout::signed_in(&csrf.0, state.dev_mail_enabled(), &who, "team"),
        v,
    )
}

#[derive(Template)]
#[template(path = "partials/tokens/ip_alerts.html")]
pub struct AlertsPartial {
    pub on: bool,
    pub csrf: String,
    /// The outcome, for the live region, after an htmx change.
    pub message: Option<String>,
}

#[derive(Deserialize)]
pub struct AlertsForm {
    #[serde(default)]
    enabled: String,
}

/// `POST /settings/api-tokens/alerts` (`enabled=true|false`): turns the
/// member's new-address alerts on or off. htmx gets the switch again;
/// a plain form goes back to the page with a message.
pub async fn set_alerts(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    headers: HeaderMap,
    jar: CookieJar,
    who: SignedIn,
    Form(form): Form<AlertsForm>,
) -> PageResult {
    let on = super::tokens::enabled_field(&form.enabled)?;
    let mut tx = state.db.begin().await?;
    token_ips::set_alerts(&mut tx, who.user_id, on).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    let message = if on {
        "You will get an email when a token of yours is used from a new IP address."
    } else {
        "New-IP-address alerts are off."
    };
    if is_htmx(&headers) {
        let html = AlertsPartial {
            on,
            csrf: csrf.0,
            message: Some(message.into()),
        }
        .render()?;
        Ok(Html(html).into_response())
    } else {
        Ok((
            flash::set(jar, &state.config, message),
            Redirect::to("/settings/api-tokens"),
        )
            .into_response())
    }
}
