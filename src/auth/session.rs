//! Browser sessions. The cookie holds a random id (only its SHA-256 is
//! stored); the record names the user and the organization they are looking
//! at. Sessions end when idle too long, at their absolute lifetime, at sign
//! out, or when the user has no active membership left.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sqlx::AnyConnection;

use super::secret::Secret;
use crate::app::AppState;
use crate::config::Config;
use crate::store::orgs::{self, Membership, Role};
use crate::store::sessions::{self, NewSession, SignInMethod};
use crate::store::{StoreError, StoreResult};

/// Activity is written back at most this often, so page views are reads.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// The session cookie's name: with `__Host-` when served over https, which
/// pins it to this host, path `/` and `Secure`.
pub fn session_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-keysmith_session"
    } else {
        "keysmith_session"
    }
}

/// Builds a cookie with the attributes every Keysmith cookie shares.
pub fn secure_cookie(config: &Config, name: &'static str, value: String) -> Cookie<'static> {
    let mut cookie = Cookie::new(name, value);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Lax);
    cookie.set_path("/");
    cookie.set_secure(config.is_https());
    cookie
}

/// A cookie that removes `name` from the browser.
pub fn removal_cookie(config: &Config, name: &'static str) -> Cookie<'static> {
    let mut cookie = secure_cookie(config, name, String::new());
    cookie.make_removal();
    cookie
}

/// Starts a session for `user_id` inside the caller's transaction (which
/// also records the sign-in and its `method` in the audit log) and returns
/// the cookie to set. Every sign-in gets a fresh id.
#[allow(clippy::too_many_arguments)]
pub async fn start_session(
    conn: &mut AnyConnection,
    config: &Config,
    user_id: i64,
    organization_id: i64,
    ip: &str,
    user_agent: Option<&str>,
    method: SignInMethod,
    now: i64,
) -> StoreResult<Cookie<'static>> {
    let secret = Secret::generate();
    sessions::create(
        conn,
        &NewSession {
            id_hash: &secret.digest_hex(),
            user_id,
            organization_id,
            ip: Some(ip),
            user_agent,
            expires_at: now + config.session_lifetime.as_secs() as i64,
            method,
        },
        now,
    )
    .await?;
    let mut cookie = secure_cookie(
        config,
        session_cookie_name(config),
        secret.expose_secret().to_string(),
    );
    cookie.set_max_age(Some(time::Duration::seconds(
        config.session_lifetime.as_secs() as i64,
    )));
    Ok(cookie)
}

/// The signed-in person, for handlers that require one.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session_id: i64,
    pub user_id: i64,
    pub email: String,
    /// The organization the session is looking at.
    pub membership: Membership,
    /// Every active membership, for the organization switcher.
    pub memberships: Vec<Membership>,
}

impl SignedIn {
    pub fn organization_id(&self) -> i64 {
        self.membership.organization.id
    }

    pub fn is_superuser(&self) -> bool {
        self.membership.role == Role::Superuser
    }
}

/// Looks the session up from the cookie jar; `None` when there is no live
/// session or the user has no active membership left.
pub async fn current_session(state: &AppState, jar: &CookieJar) -> StoreResult<Option<SignedIn>> {
    let Some(cookie) = jar.get(session_cookie_name(&state.config)) else {
        return Ok(None);
    };
    let Some(secret) = Secret::parse(cookie.value()) else {
        return Ok(None);
    };
    let now = state.clock.unix();
    let idle = state.config.session_idle_timeout.as_secs() as i64;
    let Some(record) = sessions::find_live(&state.db, &secret.digest_hex(), now, idle).await?
    else {
        // A session that ran out ends here, on record.
        sessions::end_if_expired(&state.db, &secret.digest_hex(), now, idle).await?;
        return Ok(None);
    };
    let memberships = orgs::active_memberships(&state.db, record.user_id).await?;
    let current = record
        .current_organization_id
        .and_then(|id| memberships.iter().find(|m| m.organization.id == id))
        .or_else(|| memberships.first())
        .cloned();
    let Some(membership) = current else {
        // Disabled everywhere: the session is over.
        sessions::delete(&state.db, record.id).await?;
        return Ok(None);
    };
    if record.current_organization_id != Some(membership.organization.id) {
        sessions::set_current_organization(&state.db, record.id, membership.organization.id)
            .await?;
    }
    if now - record.last_seen_at >= TOUCH_EVERY_SECONDS {
        sessions::touch(&state.db, record.id, now).await?;
    }
    Ok(Some(SignedIn {
        session_id: record.id,
        user_id: record.user_id,
        email: record.email,
        membership,
        memberships,
    }))
}

/// Why a request that needs a session did not get one.
pub enum AuthRejection {
    /// Pages: go and sign in, then come back here.
    SignIn { next: String, htmx: bool },
    /// The JSON API: a plain 401.
    Json,
    /// The store failed; `api`: answer as the JSON API does.
    Store { error: StoreError, api: bool },
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::SignIn { next, htmx } => {
                if htmx {
                    // htmx would put a redirect's page inside the fragment:
                    // say so where the person is looking, with a way back.
                    return crate::web::pages::signed_out_fragment_to(&next);
                }
                let location = format!("/signin?next={}", url_encode(&next));
                let mut r = StatusCode::SEE_OTHER.into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            AuthRejection::Json => (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "Sign in first: this API needs a browser session." })),
            )
                .into_response(),
            AuthRejection::Store { error, api: true } => {
                crate::error::AppError::from(error).into_response()
            }
            // Pages: an error page in the site's frame.
            AuthRejection::Store { error, api: false } => {
                crate::web::pages::PageError::from(error).into_response()
            }
        }
    }
}

impl<S> FromRequestParts<S> for SignedIn
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let jar = CookieJar::from_headers(&parts.headers);
        match current_session(&state, &jar).await {
            Ok(Some(signed_in)) => Ok(signed_in),
            Ok(None) if parts.uri.path().starts_with("/api/") => Err(AuthRejection::Json),
            Ok(None) => {
                let htmx = parts.headers.contains_key("hx-request");
                // After signing in, back to the page: for htmx the page the
                // request came from, not the fragment's address.
                let from_page = htmx
                    .then(|| crate::web::pages::current_page(&parts.headers))
                    .flatten();
                let next = from_page.unwrap_or_else(|| {
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into())
                });
                Err(AuthRejection::SignIn { next, htmx })
            }
            Err(error) => Err(AuthRejection::Store {
                error,
                api: parts.uri.path().starts_with("/api/"),
            }),
        }
    }
}

/// Only local paths are accepted as a place to return to after sign-in, so
/// a crafted link cannot send someone to another site.
pub fn safe_next(raw: Option<&str>) -> Option<String> {
    let raw = raw?.trim();
    let local = raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.starts_with("/\\")
        && !raw.chars().any(|c| c.is_control() || c == '\\')
        && raw.len() <= 2000;
    local.then(|| raw.to_string())
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sessions ended per sweep; the next sweep takes the rest.
const SWEEP_BATCH: i64 = 500;
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Every minute, ends the sessions that ran out without their cookie coming
/// back, so each session's end is in the audit log (and its row gone) even
/// when the browser never returns.
pub fn spawn_sweeper(
    db: crate::store::Db,
    clock: crate::clock::Clock,
    idle: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let idle = i64::try_from(idle.as_secs()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        loop {
            match sessions::sweep_expired(&db, clock.unix(), idle, SWEEP_BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "ended sessions that ran out"),
                Err(e) => tracing::warn!(error = %e, "session sweep: will try again"),
            }
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_next_accepts_only_local_paths() {
        assert_eq!(
            safe_next(Some("/settings/api-tokens?x=1")).as_deref(),
            Some("/settings/api-tokens?x=1")
        );
        for bad in [
            "https://evil.example",
            "//evil.example/x",
            "/\\evil.example",
            "evil",
            "",
            "/a\nb",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
    }

    #[test]
    fn url_encode_keeps_paths_readable() {
        assert_eq!(url_encode("/team?q=a b&c"), "/team%3Fq%3Da%20b%26c");
    }
}
