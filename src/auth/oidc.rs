//! Sign-in with OpenID Connect: the authorization code flow with PKCE,
//! `state` and `nonce`, through the `openidconnect` crate over the project's
//! own reqwest client.
//!
//! A sign-in starts with a random browser secret, set as a short-lived
//! cookie: its SHA-256 and the SHA-256 of the `state` sent to the provider
//! are stored (single use, ten minutes); the nonce and the PKCE verifier are
//! derived from the browser secret, so nothing stored can finish a sign-in
//! and a response only completes in the browser that asked for it.
//!
//! The person is matched by a verified email address. Optionally a claim
//! (`groups` by default) maps to organizations: just-in-time membership,
//! disabled again at a later sign-in when the claim no longer names them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse,
};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use url::Url;

use super::secret::Secret;
use crate::config::ConfigError;
use crate::domain::EmailAddress;
use crate::store::invalidation::Invalidation;
use crate::store::oidc::{self as store, LoginState};
use crate::store::{AuditEvent, Db, StoreError, StoreResult, orgs, record_audit, team};

/// A started sign-in must come back within this time.
pub const LOGIN_TTL_SECONDS: i64 = 10 * 60;
/// Discovered metadata (endpoints and signing keys) is fetched again after
/// this long, so a provider's key rotation is picked up.
const METADATA_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Each request to the provider gives up after this long.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a provider response may weigh (discovery, keys, tokens).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The path the provider sends people back to; operators register
/// `KEYSMITH_PUBLIC_URL` + this.
pub const CALLBACK_PATH: &str = "/signin/oidc/callback";
/// Where the "Sign in with …" button points.
pub const START_PATH: &str = "/signin/oidc";

// ------------------------------------------------------------ settings

/// One entry of `KEYSMITH_OIDC_ORGANIZATIONS`: people whose claim holds
/// `claim_value` become members of `organization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgMapping {
    pub claim_value: String,
    pub organization: String,
    /// The mapping grants "Can create and manage personal API tokens".
    pub can_manage_tokens: bool,
}

/// The OpenID Connect settings; present only when an issuer is configured.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuer: Url,
    pub client_id: String,
    client_secret: String,
    /// The provider's name on the button: "Sign in with {label}".
    pub label: String,
    /// Scopes asked for besides `openid email profile` (e.g. `groups`).
    pub extra_scopes: Vec<String>,
    /// The claim read for just-in-time membership; a dotted path reaches
    /// into objects (`realm_access.roles`).
    pub org_claim: String,
    pub org_mappings: Vec<OrgMapping>,
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("label", &self.label)
            .field("extra_scopes", &self.extra_scopes)
            .field("org_claim", &self.org_claim)
            .field("org_mappings", &self.org_mappings)
            .finish()
    }
}

impl OidcSettings {
    /// Reads the `KEYSMITH_OIDC_*` variables through `get` (trimmed, empty
    /// as absent). `None` when no OIDC variable is set at all.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let issuer_raw = get("KEYSMITH_OIDC_ISSUER");
        let client_id = get("KEYSMITH_OIDC_CLIENT_ID");
        let client_secret = get("KEYSMITH_OIDC_CLIENT_SECRET");
        let Some(issuer_raw) = issuer_raw else {
            for (name, value) in [
                ("KEYSMITH_OIDC_CLIENT_ID", &client_id),
                ("KEYSMITH_OIDC_CLIENT_SECRET", &client_secret),
                (
                    "KEYSMITH_OIDC_ORGANIZATIONS",
                    &get("KEYSMITH_OIDC_ORGANIZATIONS"),
                ),
            ] {
                if value.is_some() {
                    return Err(ConfigError::new(
                        name,
                        "is set but KEYSMITH_OIDC_ISSUER is not; set the provider's issuer URL (e.g. https://sso.example.com/realms/acme) or remove this setting",
                    ));
                }
            }
            return Ok(None);
        };
        let issuer = parse_issuer(&issuer_raw)?;
        let client_id = client_id.ok_or_else(|| {
            ConfigError::new(
                "KEYSMITH_OIDC_CLIENT_ID",
                "is required with KEYSMITH_OIDC_ISSUER: the client id the provider gave Keysmith",
            )
        })?;
        let client_secret = client_secret.ok_or_else(|| {
            ConfigError::new(
                "KEYSMITH_OIDC_CLIENT_SECRET",
                "is required with KEYSMITH_OIDC_ISSUER: Keysmith signs in as a confidential client",
            )
        })?;
        let label = get("KEYSMITH_OIDC_LABEL").unwrap_or_else(|| "single sign-on".into());
        if label.chars().count() > 60 {
            return Err(ConfigError::new(
                "KEYSMITH_OIDC_LABEL",
                "is longer than 60 characters; use the provider's short name",
            ));
        }
        let extra_scopes = parse_scopes(get("KEYSMITH_OIDC_SCOPES").as_deref().unwrap_or(""))?;
        let org_claim = get("KEYSMITH_OIDC_ORGANIZATION_CLAIM").unwrap_or_else(|| "groups".into());
        if org_claim.split('.').any(str::is_empty) {
            return Err(ConfigError::new(
                "KEYSMITH_OIDC_ORGANIZATION_CLAIM",
                format!("\"{org_claim}\" is not a claim name (e.g. groups, or realm_access.roles)"),
            ));
        }
        let org_mappings = match get("KEYSMITH_OIDC_ORGANIZATIONS") {
            Some(raw) => parse_org_mappings(&raw)?,
            None => Vec::new(),
        };
        Ok(Some(OidcSettings {
            issuer,
            client_id,
            client_secret,
            label,
            extra_scopes,
            org_claim,
            org_mappings,
        }))
    }

    /// The scopes of the authorization request (`openid` is always sent).
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes = vec!["email".to_string(), "profile".to_string()];
        for s in &self.extra_scopes {
            if !scopes.contains(s) && s != "openid" {
                scopes.push(s.clone());
            }
        }
        scopes
    }
}

fn parse_issuer(raw: &str) -> Result<Url, ConfigError> {
    let setting = "KEYSMITH_OIDC_ISSUER";
    let url = Url::parse(raw).map_err(|e| {
        ConfigError::new(
            setting,
            format!("\"{raw}\" is not a URL ({e}); use the issuer the provider's discovery document names, e.g. https://sso.example.com/realms/acme"),
        )
    })?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(ConfigError::new(
                setting,
                format!(
                    "\"{raw}\" is plain http; the provider must be reached over https (http only for localhost)"
                ),
            ));
        }
        other => {
            return Err(ConfigError::new(
                setting,
                format!("\"{raw}\" has scheme \"{other}\"; use an https:// URL"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(
            setting,
            format!("\"{raw}\" names no host"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            setting,
            "must not contain credentials; put the secret in KEYSMITH_OIDC_CLIENT_SECRET",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            setting,
            format!("\"{raw}\" has a query or fragment; an issuer URL has neither"),
        ));
    }
    Ok(url)
}

fn parse_scopes(raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut scopes = Vec::new();
    for s in raw.split([' ', ',']).filter(|s| !s.is_empty()) {
        // RFC 6749 §3.3: scope tokens are printable ASCII without space, " or \.
        if !s
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::new(
                "KEYSMITH_OIDC_SCOPES",
                format!("\"{s}\" is not a scope name"),
            ));
        }
        scopes.push(s.to_string());
    }
    Ok(scopes)
}

/// `VALUE=ORGANIZATION NAME[:tokens], …`
fn parse_org_mappings(raw: &str) -> Result<Vec<OrgMapping>, ConfigError> {
    let setting = "KEYSMITH_OIDC_ORGANIZATIONS";
    let mut out: Vec<OrgMapping> = Vec::new();
    for (n, part) in raw.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let Some((value, org)) = part.split_once('=') else {
            return Err(ConfigError::new(
                setting,
                format!(
                    "entry {} (\"{part}\") has no '='; expected CLAIM_VALUE=ORGANIZATION NAME[:tokens], e.g. keysmith-acme=Acme:tokens",
                    n + 1
                ),
            ));
        };
        let (org, can_manage_tokens) = match org.rsplit_once(':') {
            Some((name, "tokens")) => (name, true),
            _ => (org, false),
        };
        let (value, org) = (value.trim(), org.trim());
        if value.is_empty() || org.is_empty() {
            return Err(ConfigError::new(
                setting,
                format!(
                    "entry {} has an empty claim value or organization name",
                    n + 1
                ),
            ));
        }
        if out
            .iter()
            .any(|m| m.claim_value == value && m.organization == org)
        {
            return Err(ConfigError::new(
                setting,
                format!("\"{value}={org}\" is listed twice"),
            ));
        }
        out.push(OrgMapping {
            claim_value: value.to_string(),
            organization: org.to_string(),
            can_manage_tokens,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------ HTTP client

/// openidconnect's HTTP client trait over the project's reqwest (0.13,
/// rustls), so there is one TLS stack. Redirects are not followed: the
/// provider's endpoints answer directly (and following them is an SSRF risk).
#[derive(Clone)]
pub struct HttpClient(reqwest::Client);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Reqwest(#[from] reqwest::Error),
    #[error("the provider's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

impl HttpClient {
    pub fn new() -> Result<HttpClient, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            .user_agent(concat!("keysmith/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(HttpClient)
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut response = self.0.execute(request).await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = openidconnect::http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        })
    }
}

// ------------------------------------------------------------ errors

/// Why a sign-in did not complete; each becomes a page saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("this sign-in was not started in this browser (or its cookie is gone)")]
    NotStarted,
    #[error("the provider's answer has no state parameter")]
    MissingState,
    #[error("the state parameter matches no sign-in")]
    UnknownState,
    #[error("this sign-in answer was already used")]
    ReplayedState,
    #[error("this sign-in took longer than 10 minutes")]
    ExpiredState,
    #[error("this sign-in was started in another browser or tab")]
    OtherBrowser,
    #[error("the provider answered {error}")]
    Provider {
        error: String,
        description: Option<String>,
    },
    #[error("the provider's answer has no authorization code")]
    MissingCode,
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider did not accept the authorization code: {0}")]
    Exchange(String),
    #[error("the provider sent no ID token")]
    NoIdToken,
    #[error("the ID token failed verification: {0}")]
    InvalidIdToken(String),
    #[error("the ID token carries no email address")]
    NoEmail,
    #[error("the email address {0} is not verified at the provider")]
    UnverifiedEmail(String),
    #[error("no Keysmith account has the email address {0}")]
    UnknownEmail(String),
    #[error("{0} has no active membership")]
    NoAccess(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An error and its causes on one line (the crate's errors nest the reason).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

// ------------------------------------------------------------ the flow

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The configured provider: settings, HTTP client and discovered metadata.
pub struct Oidc {
    settings: OidcSettings,
    http: HttpClient,
    redirect_uri: RedirectUrl,
    issuer: IssuerUrl,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

/// A sign-in on its way to the provider.
pub struct Begun {
    /// Where to send the browser.
    pub authorize_url: Url,
    /// The browser secret for the cookie.
    pub browser_secret: Secret,
}

/// What the provider's redirect back carried.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A person the provider vouched for.
#[derive(Debug, Clone)]
pub struct Verified {
    pub email: EmailAddress,
    /// The values of the organization claim (empty without one).
    pub claim_values: Vec<String>,
    pub redirect_to: Option<String>,
}

fn derived(browser: &Secret, purpose: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"keysmith-oidc:");
    h.update(purpose.as_bytes());
    h.update(b":");
    h.update(browser.expose_secret().as_bytes());
    hex::encode(h.finalize())
}

impl Oidc {
    pub fn new(settings: OidcSettings, public_url: &Url) -> Result<Oidc, ConfigError> {
        let base = public_url.as_str().trim_end_matches('/');
        let redirect_uri = RedirectUrl::new(format!("{base}{CALLBACK_PATH}"))
            .map_err(|e| ConfigError::new("KEYSMITH_PUBLIC_URL", e.to_string()))?;
        // The issuer exactly as configured (discovery compares it verbatim),
        // without the slash `Url` adds to a bare host.
        let raw = settings.issuer.as_str();
        let raw = if settings.issuer.path() == "/" {
            raw.trim_end_matches('/')
        } else {
            raw
        };
        let issuer = IssuerUrl::new(raw.to_string())
            .map_err(|e| ConfigError::new("KEYSMITH_OIDC_ISSUER", e.to_string()))?;
        let http = HttpClient::new().map_err(|e| {
            ConfigError::new(
                "KEYSMITH_OIDC_ISSUER",
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        Ok(Oidc {
            settings,
            http,
            redirect_uri,
            issuer,
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The redirect URI to register at the provider.
    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// Fetches discovery (and the signing keys) unless a recent copy is
    /// held; `refresh` forces a new fetch.
    pub async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata, OidcError> {
        let mut held = self.metadata.lock().await;
        if let Some((at, md)) = held.as_ref()
            && !refresh
            && at.elapsed() < METADATA_MAX_AGE
        {
            return Ok(md.clone());
        }
        let md = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| {
                OidcError::Unreachable(format!(
                    "discovery at {}/.well-known/openid-configuration failed: {}",
                    self.issuer.as_str().trim_end_matches('/'),
                    chain(&e)
                ))
            })?;
        *held = Some((Instant::now(), md.clone()));
        Ok(md)
    }

    fn client(&self, md: CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    /// Starts a sign-in: records it and returns the provider's URL.
    pub async fn begin(
        &self,
        db: &Db,
        now: i64,
        redirect_to: Option<&str>,
    ) -> Result<Begun, OidcError> {
        let client = self.client(self.metadata(false).await?);
        let browser = Secret::generate();
        let state = Secret::generate();
        let verifier = PkceCodeVerifier::new(derived(&browser, "pkce"));
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let nonce = derived(&browser, "nonce");
        let state_value = state.expose_secret().to_string();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state_value),
            move || Nonce::new(nonce),
        );
        for scope in self.settings.scopes() {
            request = request.add_scope(Scope::new(scope));
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        store::create_login(
            db,
            &state.digest_hex(),
            &browser.digest_hex(),
            redirect_to,
            LOGIN_TTL_SECONDS,
            now,
        )
        .await?;
        Ok(Begun {
            authorize_url: url,
            browser_secret: browser,
        })
    }

    /// Checks the provider's answer: the state (single use, this browser),
    /// the provider's error if any, the code exchange with the PKCE verifier,
    /// and the ID token (signature, issuer, audience, expiry, nonce), then
    /// the verified email.
    pub async fn finish(
        &self,
        db: &Db,
        now: i64,
        params: &CallbackParams,
        browser: Option<Secret>,
    ) -> Result<Verified, OidcError> {
        let provider_error = params.error.as_ref().map(|error| OidcError::Provider {
            error: error.clone(),
            description: params.error_description.clone(),
        });
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(provider_error.unwrap_or(OidcError::MissingState));
        };
        // The state is used up whatever follows: an answer is good once.
        let login = match Secret::parse(state) {
            Some(state) => store::consume_login(db, &state.digest_hex(), now).await?,
            None => LoginState::Unknown,
        };
        let record = match login {
            LoginState::Valid(r) => r,
            LoginState::Used => return Err(OidcError::ReplayedState),
            LoginState::Expired => return Err(OidcError::ExpiredState),
            LoginState::Unknown => return Err(provider_error.unwrap_or(OidcError::UnknownState)),
        };
        let Some(browser) = browser else {
            return Err(OidcError::NotStarted);
        };
        let presented = browser.digest_hex();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            record.browser_hash.as_bytes(),
        )) {
            return Err(OidcError::OtherBrowser);
        }
        if let Some(e) = provider_error {
            return Err(e);
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
            return Err(OidcError::MissingCode);
        };

        let client = self.client(self.metadata(false).await?);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Exchange(chain(&e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(derived(&browser, "pkce")))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    OidcError::Exchange(match r.error_description() {
                        Some(d) => format!("{}: {d}", r.error()),
                        None => r.error().to_string(),
                    })
                }
                RequestTokenError::Request(e) => OidcError::Unreachable(chain(&e)),
                other => OidcError::Exchange(chain(&other)),
            })?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(derived(&browser, "nonce"));
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // Perhaps the provider rotated its keys: fetch them once more.
                let fresh = self.client(self.metadata(true).await?);
                id_token
                    .claims(&fresh.id_token_verifier(), &nonce)
                    .map_err(|_| OidcError::InvalidIdToken(chain(&first)))?
                    .clone()
            }
        };
        let email = verified_email(&claims)?;
        // The same, now verified, token read as plain JSON for the
        // organization claim (the crate's claims type keeps only its own).
        let claim_values = if self.settings.org_mappings.is_empty() {
            Vec::new()
        } else {
            let raw = serde_json::to_value(id_token)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            claim_values(&raw, &self.settings.org_claim)
        };
        Ok(Verified {
            email,
            claim_values,
            redirect_to: record.redirect_to,
        })
    }
}

fn verified_email(claims: &CoreIdTokenClaims) -> Result<EmailAddress, OidcError> {
    let email = claims.email().ok_or(OidcError::NoEmail)?;
    let raw = email.as_str();
    if claims.email_verified() != Some(true) {
        return Err(OidcError::UnverifiedEmail(raw.to_string()));
    }
    EmailAddress::parse(raw).map_err(|_| OidcError::UnverifiedEmail(raw.to_string()))
}

/// The string values at `path` in a JWT's payload: an array of strings, or
/// one string.
fn claim_values(jwt: &str, path: &str) -> Vec<String> {
    use base64::Engine;
    let Some(payload) = jwt.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let mut at = &json;
    for key in path.split('.') {
        match at.get(key) {
            Some(v) => at = v,
            None => return Vec::new(),
        }
    }
    match at {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

// ------------------------------------------------------------ JIT membership

/// What provisioning did, for the caller's commit.
#[derive(Debug, Default)]
pub struct Provisioned {
    pub user_id: Option<i64>,
    pub invalidations: Vec<Invalidation>,
}

/// Finds the person's account and applies the organization mapping inside
/// the caller's transaction: a mapped organization the claim names gets a
/// membership (or has one it disabled re-enabled); a membership this
/// mapping made is disabled when the claim no longer names its
/// organization. Memberships made any other way are never touched.
pub async fn provision(
    conn: &mut AnyConnection,
    settings: &OidcSettings,
    who: &Verified,
    ip: &str,
    user_agent: Option<&str>,
    now: i64,
) -> StoreResult<Provisioned> {
    let mut user_id = store::user_id_by_email(conn, &who.email).await?;
    if settings.org_mappings.is_empty() {
        return Ok(Provisioned {
            user_id,
            invalidations: Vec::new(),
        });
    }
    // Organization id → whether the mapping grants the token permission.
    let mut mapped: Vec<i64> = Vec::new();
    let mut granted: Vec<(i64, bool)> = Vec::new();
    for m in &settings.org_mappings {
        let Some(org_id) = store::organization_id_by_name(conn, &m.organization).await? else {
            tracing::warn!(
                organization = %m.organization,
                "KEYSMITH_OIDC_ORGANIZATIONS names an organization that does not exist; skipped"
            );
            continue;
        };
        if !mapped.contains(&org_id) {
            mapped.push(org_id);
        }
        if who.claim_values.iter().any(|v| v == &m.claim_value) {
            match granted.iter_mut().find(|(id, _)| *id == org_id) {
                Some((_, can)) => *can |= m.can_manage_tokens,
                None => granted.push((org_id, m.can_manage_tokens)),
            }
        }
    }
    if user_id.is_none() && !granted.is_empty() {
        user_id = Some(orgs::find_or_create_user(conn, &who.email).await?.0.id);
    }
    let Some(uid) = user_id else {
        return Ok(Provisioned::default());
    };
    let existing = store::memberships_of(conn, uid).await?;
    let mut invalidations = Vec::new();
    let audit = |organization_id: i64, action: &'static str| AuditEvent {
        organization_id: Some(organization_id),
        subject_user_id: Some(uid),
        action,
        detail: Some("sso"),
        ip: Some(ip),
        user_agent,
        ..AuditEvent::default()
    };
    for &(org_id, can) in &granted {
        match existing.iter().find(|m| m.organization_id == org_id) {
            None => {
                store::add_provisioned_member(conn, org_id, uid, can, now).await?;
                record_audit(conn, &audit(org_id, "member.provisioned")).await?;
                tracing::info!(
                    user_id = uid,
                    organization_id = org_id,
                    "member provisioned from the provider's claim"
                );
            }
            Some(m) if m.disabled && m.oidc_managed => {
                orgs::set_member_disabled(conn, org_id, uid, false, now).await?;
                orgs::set_can_manage_tokens(conn, org_id, uid, can).await?;
                record_audit(conn, &audit(org_id, "member.enabled")).await?;
                invalidations.push(Invalidation::Member {
                    organization_id: org_id,
                    user_id: uid,
                });
            }
            Some(_) => {}
        }
    }
    for m in &existing {
        let withdrawn = m.oidc_managed
            && !m.disabled
            && mapped.contains(&m.organization_id)
            && !granted.iter().any(|(id, _)| *id == m.organization_id);
        if withdrawn {
            orgs::set_member_disabled(conn, m.organization_id, uid, true, now).await?;
            team::end_sessions_in_org(conn, m.organization_id, uid).await?;
            record_audit(conn, &audit(m.organization_id, "member.disabled")).await?;
            invalidations.push(Invalidation::Member {
                organization_id: m.organization_id,
                user_id: uid,
            });
            tracing::info!(
                user_id = uid,
                organization_id = m.organization_id,
                "membership disabled: the provider's claim no longer names the organization"
            );
        }
    }
    Ok(Provisioned {
        user_id: Some(uid),
        invalidations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OidcSettings>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OidcSettings::from_vars(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        (
            "KEYSMITH_OIDC_ISSUER",
            "https://sso.example.com/realms/acme",
        ),
        ("KEYSMITH_OIDC_CLIENT_ID", "keysmith"),
        ("KEYSMITH_OIDC_CLIENT_SECRET", "s3cret-s3cret"),
    ];

    #[test]
    fn no_oidc_variables_means_no_oidc() {
        assert_eq!(settings(&[]).unwrap(), None);
    }

    #[test]
    fn issuer_without_client_id_names_the_missing_setting() {
        let e = settings(&[BASE[0], BASE[2]]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_OIDC_CLIENT_ID");
        let e = settings(&[BASE[0], BASE[1]]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_OIDC_CLIENT_SECRET");
        let e = settings(&[BASE[1], BASE[2]]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_OIDC_CLIENT_ID");
        assert!(e.message.contains("KEYSMITH_OIDC_ISSUER"), "{e}");
    }

    #[test]
    fn issuer_must_be_an_https_url() {
        for (bad, needle) in [
            ("not a url", "is not a URL"),
            ("http://sso.example.com", "plain http"),
            ("ftp://sso.example.com", "scheme"),
            ("https://u:p@sso.example.com", "credentials"),
            ("https://sso.example.com/?a=b", "query"),
        ] {
            let e = settings(&[("KEYSMITH_OIDC_ISSUER", bad), BASE[1], BASE[2]]).unwrap_err();
            assert_eq!(e.setting, "KEYSMITH_OIDC_ISSUER");
            assert!(e.message.contains(needle), "{bad}: {e}");
        }
        let ok = settings(&[
            ("KEYSMITH_OIDC_ISSUER", "http://127.0.0.1:8080"),
            BASE[1],
            BASE[2],
        ]);
        assert!(ok.unwrap().is_some());
    }

    #[test]
    fn organization_mappings_parse_with_the_token_permission() {
        let s = settings(&[
            BASE[0],
            BASE[1],
            BASE[2],
            (
                "KEYSMITH_OIDC_ORGANIZATIONS",
                "keysmith-acme=Acme, acme-devs = Acme:tokens,x=Org: with colon",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s.org_mappings,
            vec![
                OrgMapping {
                    claim_value: "keysmith-acme".into(),
                    organization: "Acme".into(),
                    can_manage_tokens: false
                },
                OrgMapping {
                    claim_value: "acme-devs".into(),
                    organization: "Acme".into(),
                    can_manage_tokens: true
                },
                OrgMapping {
                    claim_value: "x".into(),
                    organization: "Org: with colon".into(),
                    can_manage_tokens: false
                },
            ]
        );
        assert_eq!(s.org_claim, "groups");
        for bad in ["novalue", "=Acme", "a=", "a=Acme,a=Acme"] {
            let e = settings(&[
                BASE[0],
                BASE[1],
                BASE[2],
                ("KEYSMITH_OIDC_ORGANIZATIONS", bad),
            ])
            .unwrap_err();
            assert_eq!(e.setting, "KEYSMITH_OIDC_ORGANIZATIONS", "{bad}");
        }
    }

    #[test]
    fn the_client_secret_never_prints() {
        let s = settings(&BASE).unwrap().unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn claim_values_read_arrays_strings_and_paths() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            format!(
                "h.{}.s",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            )
        };
        let jwt = enc(
            serde_json::json!({"groups": ["a", "b", 3], "org": "acme", "realm_access": {"roles": ["r"]}}),
        );
        assert_eq!(claim_values(&jwt, "groups"), vec!["a", "b"]);
        assert_eq!(claim_values(&jwt, "org"), vec!["acme"]);
        assert_eq!(claim_values(&jwt, "realm_access.roles"), vec!["r"]);
        assert!(claim_values(&jwt, "missing").is_empty());
        assert!(claim_values("garbage", "groups").is_empty());
    }

    #[test]
    fn nonce_and_verifier_differ_per_browser_and_purpose() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(derived(&a, "nonce"), derived(&a, "pkce"));
        assert_ne!(derived(&a, "nonce"), derived(&b, "nonce"));
        assert_eq!(derived(&a, "pkce").len(), 64);
    }
}
