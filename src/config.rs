//! The one typed `Config`: loaded once at start-up from the environment and an
//! optional `keysmith.toml`, then passed down. Every value is parsed here, so a
//! bad one stops start-up with a single line naming the setting and the fix.
//! Secrets (SMTP password, introspection secrets) never appear in `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::token::{ScopeCatalogue, TokenPrefix};

/// A configuration value that cannot be used, named by the setting it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Where the data lives: which store backend, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::new("DATABASE_URL", m);
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(err(
                "is empty (use sqlite://FILE or postgres://USER@HOST/DB)".into(),
            ));
        }
        let scheme = raw.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => {
                let rest = &raw["sqlite:".len()..];
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.is_empty() {
                    return Err(err("names no file (use e.g. sqlite://keysmith.db)".into()));
                }
                if path == ":memory:" {
                    return Err(err(
                        "an in-memory SQLite database would lose every token at exit; name a file"
                            .into(),
                    ));
                }
                // Create the file on first start unless the operator chose a mode.
                let url = if query.split('&').any(|kv| kv.starts_with("mode=")) {
                    format!("sqlite://{path}?{query}")
                } else if query.is_empty() {
                    format!("sqlite://{path}?mode=rwc")
                } else {
                    format!("sqlite://{path}?{query}&mode=rwc")
                };
                Ok(DatabaseUrl::Sqlite(url))
            }
            Some("postgres" | "postgresql") => {
                let url = Url::parse(raw).map_err(|e| err(format!("is not a valid URL: {e}")))?;
                if url.host_str().is_none_or(str::is_empty)
                    && !url.query_pairs().any(|(k, _)| k == "host")
                {
                    return Err(err(
                        "names no host (use postgres://USER@HOST:5432/DB)".into()
                    ));
                }
                Ok(DatabaseUrl::Postgres(raw.to_string()))
            }
            Some(other) if !other.is_empty() && !other.contains('/') => Err(err(format!(
                "unsupported scheme \"{other}\" (use sqlite://FILE or postgres://USER@HOST/DB)"
            ))),
            _ => Err(err(
                "is not a database URL (use sqlite://FILE or postgres://USER@HOST/DB)".into(),
            )),
        }
    }

    /// The URL sqlx connects with. Contains the database password, if any: never log it.
    pub fn connect_url(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(u) | DatabaseUrl::Postgres(u) => u,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }

    /// The URL with any password replaced, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(u) => u.clone(),
            DatabaseUrl::Postgres(u) => match Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    url.to_string()
                }
                Err(_) => "postgres://…".into(),
            },
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How mail leaves the process.
#[derive(Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// No SMTP configured: messages are written as `.eml` files for a developer to read.
    DevOutbox(PathBuf),
    Smtp(SmtpSettings),
}

#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://` to a local relay: no TLS.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, refusing to continue without it.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

impl SmtpSettings {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::new("KEYSMITH_SMTP_URL", m);
        let url = Url::parse(raw.trim()).map_err(|e| {
            err(format!(
                "is not a valid URL ({e}); use smtp://HOST:PORT, smtp://USER:PASS@HOST:587?tls=required or smtps://USER:PASS@HOST:465"
            ))
        })?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("names no host".into()))?
            .to_string();
        let mut tls_required = false;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "required") => tls_required = true,
                ("tls", "none") => tls_required = false,
                ("tls", other) => {
                    return Err(err(format!(
                        "tls={other} is not understood (use tls=required or tls=none)"
                    )));
                }
                (other, _) => return Err(err(format!("unknown parameter \"{other}\""))),
            }
        }
        let (security, default_port) = match url.scheme() {
            "smtp" if tls_required => (SmtpSecurity::StartTls, 587),
            "smtp" => (SmtpSecurity::Plain, 25),
            "smtps" => (SmtpSecurity::Tls, 465),
            other => {
                return Err(err(format!(
                    "unsupported scheme \"{other}\" (use smtp:// or smtps://)"
                )));
            }
        };
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| err("user or password is not valid percent-encoding".into()))
        };
        let username = if url.username().is_empty() {
            None
        } else {
            Some(decode(url.username())?)
        };
        let password = url.password().map(decode).transpose()?;
        Ok(SmtpSettings {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            username,
            password,
        })
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailTransport::DevOutbox(p) => f.debug_tuple("DevOutbox").field(p).finish(),
            MailTransport::Smtp(s) => f.debug_tuple("Smtp").field(s).finish(),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An OAuth client allowed to call `/oauth/introspect`.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionClient {
    pub client_id: String,
    secret: String,
}

impl IntrospectionClient {
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IntrospectionClient({}:<redacted>)", self.client_id)
    }
}

fn parse_introspection_clients(raw: &str) -> Result<Vec<IntrospectionClient>, ConfigError> {
    let setting = "KEYSMITH_INTROSPECTION_CREDENTIALS";
    let mut clients: Vec<IntrospectionClient> = Vec::new();
    for (n, part) in raw.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let Some((id, secret)) = part.split_once(':') else {
            return Err(ConfigError::new(
                setting,
                format!(
                    "entry {} has no ':' (expected client_id:secret[,client_id:secret…])",
                    n + 1
                ),
            ));
        };
        if id.is_empty() || secret.is_empty() {
            return Err(ConfigError::new(
                setting,
                format!("entry {} has an empty client id or secret", n + 1),
            ));
        }
        if secret.len() < 16 {
            return Err(ConfigError::new(
                setting,
                format!("the secret of client \"{id}\" is shorter than 16 characters"),
            ));
        }
        if clients.iter().any(|c| c.client_id == id) {
            return Err(ConfigError::new(
                setting,
                format!("client \"{id}\" is listed twice"),
            ));
        }
        clients.push(IntrospectionClient {
            client_id: id.to_string(),
            secret: secret.to_string(),
        });
    }
    Ok(clients)
}

/// Per-token request budgets, per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub reads_per_minute: u32,
    pub writes_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            reads_per_minute: 600,
            writes_per_minute: 60,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub public_url: Url,
    pub database_url: DatabaseUrl,
    pub data_dir: PathBuf,
    pub mail: MailTransport,
    pub mail_from: lettre::message::Mailbox,
    /// A message not delivered this long after it was written is marked failed.
    pub mail_give_up_after: Duration,
    /// The most one message may take to hand to the SMTP server, every
    /// phase included (connect, TLS, each command, DATA).
    pub smtp_timeout: Duration,
    /// How many messages the outbox worker hands to the SMTP server at once
    /// (one pooled connection each).
    pub mail_concurrency: usize,
    pub token_prefix: TokenPrefix,
    pub scopes: ScopeCatalogue,
    pub rate_limits: RateLimits,
    pub introspection_clients: Vec<IntrospectionClient>,
    /// `KEYSMITH_SCIM_TOKENS`: SCIM bearer secrets set by the operator, per
    /// organization name (only their digests are kept).
    pub scim_tokens: Vec<crate::scim::auth::ConfiguredToken>,
    /// `/auth/verify` answers a rate-limited request with 403 instead of
    /// 429: nginx `auth_request` turns any status but 2xx/401/403 into a 500.
    pub verify_429_as_403: bool,
    /// Live (unrevoked, unexpired) tokens a member may hold per organization.
    pub max_live_tokens_per_member: u32,
    /// Tokens a member may create per organization in any hour.
    pub token_creations_per_hour: u32,
    /// The MCP server agents connect to with a token; shown on the "shown
    /// once" dialog with ready-made commands. `None` hides that card.
    pub mcp_url: Option<Url>,
    /// The name agents register the MCP server under.
    pub mcp_name: String,
    /// Peers whose client-address header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies write the client's address into.
    pub client_ip_header: crate::request::ClientIpHeader,
    pub session_idle_timeout: Duration,
    pub session_lifetime: Duration,
    /// Where the optional file was read from, for the start-up log.
    pub config_file: Option<PathBuf>,
    /// Where the public keys that sign leaked-token reports come from
    /// (GitHub's secret scanning key document). `None` turns the report
    /// endpoint off.
    pub secret_scanning_keys: Option<KeySource>,
    /// Where Prometheus scrapes `/metrics`: a listener of its own, off
    /// unless set, so the main address never exposes it (see `metrics`).
    pub metrics_addr: Option<SocketAddr>,
    /// Sign-in with OpenID Connect (`KEYSMITH_OIDC_*`); `None`: off.
    pub oidc: Option<crate::auth::oidc::OidcSettings>,
    /// `/signin` offers email links (`KEYSMITH_EMAIL_SIGNIN`, default on).
    /// Off only beside OIDC; `keysmith signin-link` still works for superusers.
    pub email_signin: bool,
}

/// A URL or a file holding GitHub's secret scanning key document,
/// `{"public_keys": [{"key_identifier", "key", "is_current"}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Url(Url),
    File(PathBuf),
}

impl KeySource {
    /// `http://` or `https://` is a URL; anything else is a file path.
    pub fn parse(raw: &str) -> Result<KeySource, ConfigError> {
        let setting = "KEYSMITH_SECRET_SCANNING_KEYS";
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ConfigError::new(
                setting,
                "is empty; give a URL (https://api.github.com/meta/public_keys/secret_scanning) or a file path",
            ));
        }
        let lower = raw.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = Url::parse(raw)
                .map_err(|e| ConfigError::new(setting, format!("\"{raw}\" is not a URL ({e})")))?;
            Ok(KeySource::Url(url))
        } else if lower.contains("://") {
            Err(ConfigError::new(
                setting,
                format!("\"{raw}\" must be an http(s):// URL or a file path"),
            ))
        } else {
            Ok(KeySource::File(PathBuf::from(raw)))
        }
    }
}

/// The shape of `keysmith.toml`. Every key is optional; the environment wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<String>,
    public_url: Option<String>,
    database_url: Option<String>,
    data_dir: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    mail_give_up_hours: Option<u64>,
    smtp_timeout_seconds: Option<u64>,
    mail_concurrency: Option<u32>,
    token_prefix: Option<String>,
    trusted_proxies: Option<String>,
    client_ip_header: Option<String>,
    mcp_url: Option<String>,
    mcp_name: Option<String>,
    session_idle_minutes: Option<u64>,
    session_lifetime_hours: Option<u64>,
    rate_limits: Option<RateLimits>,
    verify_429_as_403: Option<bool>,
    max_live_tokens_per_member: Option<u32>,
    token_creations_per_hour: Option<u32>,
    scopes: Option<Vec<FileScope>>,
    metrics_addr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScope {
    name: String,
    #[serde(default)]
    includes: Vec<String>,
}

impl Config {
    /// Loads from the process environment and the config file it points to.
    pub fn from_env() -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("KEYSMITH_") || k == "DATABASE_URL")
            .collect();
        Self::from_vars(&vars)
    }

    /// Loads from the given variables (tests pass their own), reading the file
    /// named by `KEYSMITH_CONFIG`, or `./keysmith.toml` when that exists.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let (file, config_file) = match vars.get("KEYSMITH_CONFIG") {
            Some(path) => {
                let path = PathBuf::from(path);
                (read_file(&path, "KEYSMITH_CONFIG")?, Some(path))
            }
            None => {
                let path = PathBuf::from("keysmith.toml");
                if path.exists() {
                    (read_file(&path, "keysmith.toml")?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let get = |env: &str, file_value: Option<&String>| -> Option<String> {
            vars.get(env)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .or_else(|| file_value.cloned())
        };

        let addr_raw =
            get("KEYSMITH_ADDR", file.addr.as_ref()).unwrap_or_else(|| "127.0.0.1:3000".into());
        let addr: SocketAddr = addr_raw.parse().map_err(|_| {
            ConfigError::new(
                "KEYSMITH_ADDR",
                format!("\"{addr_raw}\" is not an address and port (expected e.g. 127.0.0.1:3000 or [::]:8080)"),
            )
        })?;

        let public_url = match get("KEYSMITH_PUBLIC_URL", file.public_url.as_ref()) {
            Some(raw) => parse_public_url(&raw)?,
            None => {
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else if addr.is_ipv6() {
                    format!("[{}]", addr.ip())
                } else {
                    addr.ip().to_string()
                };
                parse_public_url(&format!("http://{host}:{}", addr.port()))?
            }
        };

        let database_url = DatabaseUrl::parse(
            &get("DATABASE_URL", file.database_url.as_ref())
                .unwrap_or_else(|| "sqlite://keysmith.db".into()),
        )?;

        let data_dir = PathBuf::from(
            get("KEYSMITH_DATA_DIR", file.data_dir.as_ref())
                .unwrap_or_else(|| "keysmith-data".into()),
        );

        let mail = match get("KEYSMITH_SMTP_URL", file.smtp_url.as_ref()) {
            Some(raw) => MailTransport::Smtp(SmtpSettings::parse(&raw)?),
            None => MailTransport::DevOutbox(data_dir.join("mail")),
        };

        let from_raw = get("KEYSMITH_MAIL_FROM", file.mail_from.as_ref())
            .unwrap_or_else(|| "Keysmith <keysmith@localhost>".into());
        let mail_from = from_raw.parse::<lettre::message::Mailbox>().map_err(|e| {
            ConfigError::new(
                "KEYSMITH_MAIL_FROM",
                format!("\"{from_raw}\" is not a mailbox ({e}); expected e.g. Keysmith <keysmith@example.com>"),
            )
        })?;

        let give_up_hours = match vars.get("KEYSMITH_MAIL_GIVE_UP_HOURS") {
            Some(v) => u64::from(parse_positive("KEYSMITH_MAIL_GIVE_UP_HOURS", v)?),
            None => file.mail_give_up_hours.unwrap_or(24),
        };

        let smtp_timeout_seconds = match vars.get("KEYSMITH_SMTP_TIMEOUT_SECONDS") {
            Some(v) => u64::from(parse_positive("KEYSMITH_SMTP_TIMEOUT_SECONDS", v)?),
            None => file.smtp_timeout_seconds.unwrap_or(20),
        };
        if !(1..=300).contains(&smtp_timeout_seconds) {
            return Err(ConfigError::new(
                "KEYSMITH_SMTP_TIMEOUT_SECONDS",
                format!("{smtp_timeout_seconds} is out of range; expected 1 to 300 seconds"),
            ));
        }

        let mail_concurrency = match vars.get("KEYSMITH_MAIL_CONCURRENCY") {
            Some(v) => parse_positive("KEYSMITH_MAIL_CONCURRENCY", v)?,
            None => file.mail_concurrency.unwrap_or(8),
        };
        if !(1..=64).contains(&mail_concurrency) {
            return Err(ConfigError::new(
                "KEYSMITH_MAIL_CONCURRENCY",
                format!("{mail_concurrency} is out of range; expected 1 to 64 messages at once"),
            ));
        }

        let prefix_raw =
            get("KEYSMITH_TOKEN_PREFIX", file.token_prefix.as_ref()).unwrap_or_else(|| "ks".into());
        let token_prefix = TokenPrefix::parse(&prefix_raw).map_err(|e| {
            ConfigError::new("KEYSMITH_TOKEN_PREFIX", format!("\"{prefix_raw}\" {e}"))
        })?;

        let scopes = match file.scopes {
            None => ScopeCatalogue::default(),
            Some(list) => {
                ScopeCatalogue::new(list.into_iter().map(|s| (s.name, s.includes)).collect())
                    .map_err(|e| ConfigError::new("keysmith.toml [[scopes]]", e.to_string()))?
            }
        };

        let mut rate_limits = file.rate_limits.unwrap_or_default();
        if let Some(v) = vars.get("KEYSMITH_READS_PER_MINUTE") {
            rate_limits.reads_per_minute = parse_positive("KEYSMITH_READS_PER_MINUTE", v)?;
        }
        if let Some(v) = vars.get("KEYSMITH_WRITES_PER_MINUTE") {
            rate_limits.writes_per_minute = parse_positive("KEYSMITH_WRITES_PER_MINUTE", v)?;
        }
        if rate_limits.reads_per_minute == 0 || rate_limits.writes_per_minute == 0 {
            return Err(ConfigError::new(
                "keysmith.toml [rate_limits]",
                "limits must be at least 1 per minute",
            ));
        }

        let verify_429_as_403 = match vars.get("KEYSMITH_VERIFY_429_AS_403") {
            Some(v) => parse_bool("KEYSMITH_VERIFY_429_AS_403", v)?,
            None => file.verify_429_as_403.unwrap_or(false),
        };

        let max_live_tokens_per_member = per_member_limit(
            vars,
            "KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER",
            "max_live_tokens_per_member",
            file.max_live_tokens_per_member,
            100,
        )?;
        let token_creations_per_hour = per_member_limit(
            vars,
            "KEYSMITH_TOKEN_CREATIONS_PER_HOUR",
            "token_creations_per_hour",
            file.token_creations_per_hour,
            30,
        )?;

        let introspection_clients = match vars.get("KEYSMITH_INTROSPECTION_CREDENTIALS") {
            Some(raw) => parse_introspection_clients(raw)?,
            None => Vec::new(),
        };

        let scim_tokens = match vars.get("KEYSMITH_SCIM_TOKENS") {
            Some(raw) => crate::scim::auth::parse_configured_tokens(raw)?,
            None => Vec::new(),
        };

        let mcp_url = match get("KEYSMITH_MCP_URL", file.mcp_url.as_ref()) {
            Some(raw) => {
                let url = Url::parse(&raw).map_err(|e| {
                    ConfigError::new("KEYSMITH_MCP_URL", format!("\"{raw}\" is not a URL ({e}); expected e.g. https://api.example.com/mcp"))
                })?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(ConfigError::new(
                        "KEYSMITH_MCP_URL",
                        "must start with http:// or https://",
                    ));
                }
                Some(url)
            }
            None => None,
        };
        let mcp_name =
            get("KEYSMITH_MCP_NAME", file.mcp_name.as_ref()).unwrap_or_else(|| "keysmith".into());
        if mcp_name.is_empty()
            || mcp_name.len() > 40
            || !mcp_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                "KEYSMITH_MCP_NAME",
                format!(
                    "\"{mcp_name}\" must be 1-40 letters, digits, '-' or '_' (it is used in shell commands)"
                ),
            ));
        }

        let trusted_proxies = match get("KEYSMITH_TRUSTED_PROXIES", file.trusted_proxies.as_ref()) {
            Some(raw) => parse_trusted_proxies(&raw)?,
            None => Vec::new(),
        };
        let client_ip_header =
            match get("KEYSMITH_CLIENT_IP_HEADER", file.client_ip_header.as_ref()) {
                Some(raw) => crate::request::ClientIpHeader::parse(&raw).ok_or_else(|| {
                    ConfigError::new(
                        "KEYSMITH_CLIENT_IP_HEADER",
                        format!(
                            "\"{raw}\" is not one of X-Forwarded-For, Forwarded or X-Real-IP (the header your trusted proxy sets)"
                        ),
                    )
                })?,
                None => crate::request::ClientIpHeader::default(),
            };

        let idle_minutes = match vars.get("KEYSMITH_SESSION_IDLE_MINUTES") {
            Some(v) => parse_positive("KEYSMITH_SESSION_IDLE_MINUTES", v)?.into(),
            None => file.session_idle_minutes.unwrap_or(60 * 24),
        };
        let lifetime_hours = match vars.get("KEYSMITH_SESSION_LIFETIME_HOURS") {
            Some(v) => parse_positive("KEYSMITH_SESSION_LIFETIME_HOURS", v)?.into(),
            None => file.session_lifetime_hours.unwrap_or(24 * 14),
        };
        if idle_minutes == 0 || lifetime_hours == 0 {
            return Err(ConfigError::new(
                "keysmith.toml session_idle_minutes/session_lifetime_hours",
                "must be at least 1",
            ));
        }

        let secret_scanning_keys = match vars.get("KEYSMITH_SECRET_SCANNING_KEYS") {
            Some(raw) => Some(KeySource::parse(raw)?),
            None => None,
        };
        let metrics_addr = match get("KEYSMITH_METRICS_ADDR", file.metrics_addr.as_ref()) {
            Some(raw) => Some(parse_metrics_addr(&raw, addr)?),
            None => None,
        };

        let oidc = crate::auth::oidc::OidcSettings::from_vars(|k| {
            vars.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })?;
        let email_signin = match vars.get("KEYSMITH_EMAIL_SIGNIN") {
            Some(v) => parse_bool("KEYSMITH_EMAIL_SIGNIN", v)?,
            None => true,
        };
        if !email_signin && oidc.is_none() {
            return Err(ConfigError::new(
                "KEYSMITH_EMAIL_SIGNIN",
                "is off but no other way to sign in is configured; set KEYSMITH_OIDC_ISSUER (and its client id and secret) first",
            ));
        }

        Ok(Config {
            addr,
            public_url,
            database_url,
            data_dir,
            mail,
            mail_from,
            mail_give_up_after: Duration::from_secs(give_up_hours * 3600),
            smtp_timeout: Duration::from_secs(smtp_timeout_seconds),
            mail_concurrency: mail_concurrency as usize,
            token_prefix,
            scopes,
            rate_limits,
            introspection_clients,
            scim_tokens,
            verify_429_as_403,
            max_live_tokens_per_member,
            token_creations_per_hour,
            mcp_url,
            mcp_name,
            trusted_proxies,
            client_ip_header,
            session_idle_timeout: Duration::from_secs(idle_minutes * 60),
            session_lifetime: Duration::from_secs(lifetime_hours * 3600),
            config_file,
            secret_scanning_keys,
            metrics_addr,
            oidc,
            email_signin,
        })
    }

    /// An absolute URL under the public base, for links in emails and printed output.
    pub fn public_link(&self, path: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }

    pub fn is_https(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

fn read_file(path: &Path, setting: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // toml's messages span several lines with a source excerpt; keep one line.
        let msg = e.message().to_string();
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigError::new(path.display().to_string(), format!("{msg}{at}"))
    })
}

/// The metrics listener's address: an address and port, not the main one.
fn parse_metrics_addr(raw: &str, main: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let err = |m: String| ConfigError::new("KEYSMITH_METRICS_ADDR", m);
    let addr: SocketAddr = raw.parse().map_err(|_| {
        err(format!(
            "\"{raw}\" is not an address and port (expected e.g. 127.0.0.1:9464; leave it unset to turn metrics off)"
        ))
    })?;
    if addr.port() != 0 && addr == main {
        return Err(err(format!(
            "{addr} is KEYSMITH_ADDR too; metrics need a port of their own"
        )));
    }
    Ok(addr)
}

fn parse_public_url(raw: &str) -> Result<Url, ConfigError> {
    let err = |m: String| ConfigError::new("KEYSMITH_PUBLIC_URL", m);
    let url = Url::parse(raw).map_err(|e| {
        err(format!(
            "\"{raw}\" is not a URL ({e}); expected e.g. https://keys.example.com"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(err(format!(
            "must start with http:// or https://, not {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("names no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("must not contain a query or fragment".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("must not contain a user name or password".into()));
    }
    Ok(url)
}

fn parse_trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "KEYSMITH_TRUSTED_PROXIES",
                        format!("\"{s}\" is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/8, ::1)"),
                    )
                })
        })
        .collect()
}

fn parse_bool(setting: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::new(
            setting,
            format!("\"{raw}\" is not true or false"),
        )),
    }
}

/// Upper bound of the per-member token limits: beyond it a limit means nothing.
const MAX_PER_MEMBER_LIMIT: u32 = 1_000_000;

/// A per-member token limit from the environment or the file: a whole
/// number from 1 to a million.
fn per_member_limit(
    vars: &HashMap<String, String>,
    env: &str,
    key: &str,
    file_value: Option<u32>,
    default: u32,
) -> Result<u32, ConfigError> {
    let (setting, n) = match vars.get(env) {
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) => (env.to_string(), n),
            Err(_) => {
                return Err(ConfigError::new(
                    env,
                    format!("\"{raw}\" is not a whole number from 1 to {MAX_PER_MEMBER_LIMIT}"),
                ));
            }
        },
        None => (
            format!("keysmith.toml {key}"),
            file_value.unwrap_or(default),
        ),
    };
    if !(1..=MAX_PER_MEMBER_LIMIT).contains(&n) {
        return Err(ConfigError::new(
            setting,
            format!("{n} is out of range: give a whole number from 1 to {MAX_PER_MEMBER_LIMIT}"),
        ));
    }
    Ok(n)
}

fn parse_positive(setting: &str, raw: &str) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::new(
            setting,
            format!("\"{raw}\" is not a whole number of at least 1"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Never pick up a developer's ./keysmith.toml in unit tests.
        vars.entry("KEYSMITH_CONFIG".into())
            .or_insert_with(|| "/dev/null".into());
        Config::from_vars(&vars)
    }

    #[test]
    fn secret_scanning_keys_are_a_url_or_a_file() {
        assert_eq!(load(&[]).unwrap().secret_scanning_keys, None);
        let url = "https://api.github.com/meta/public_keys/secret_scanning";
        assert_eq!(
            load(&[("KEYSMITH_SECRET_SCANNING_KEYS", url)])
                .unwrap()
                .secret_scanning_keys,
            Some(KeySource::Url(Url::parse(url).unwrap()))
        );
        assert_eq!(
            load(&[("KEYSMITH_SECRET_SCANNING_KEYS", "/etc/keysmith/keys.json")])
                .unwrap()
                .secret_scanning_keys,
            Some(KeySource::File("/etc/keysmith/keys.json".into()))
        );
        for bad in ["", "  ", "ftp://example.com/keys", "https://"] {
            let e = load(&[("KEYSMITH_SECRET_SCANNING_KEYS", bad)]).unwrap_err();
            assert_eq!(e.setting, "KEYSMITH_SECRET_SCANNING_KEYS", "{bad}");
        }
    }

    #[test]
    fn zero_configuration_gives_working_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:3000/");
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("sqlite://keysmith.db?mode=rwc".into())
        );
        assert_eq!(c.token_prefix.as_str(), "ks");
        assert_eq!(
            c.rate_limits,
            RateLimits {
                reads_per_minute: 600,
                writes_per_minute: 60
            }
        );
        assert!(matches!(c.mail, MailTransport::DevOutbox(_)));
        assert_eq!(
            c.scopes.names().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["read", "write"]
        );
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(load(&[]).unwrap().metrics_addr, None);
        let c = load(&[("KEYSMITH_METRICS_ADDR", "127.0.0.1:9464")]).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn bad_metrics_addr_names_the_setting() {
        for bad in ["9464", "localhost:9464", "127.0.0.1:99999"] {
            let e = load(&[("KEYSMITH_METRICS_ADDR", bad)]).unwrap_err();
            assert_eq!(e.setting, "KEYSMITH_METRICS_ADDR", "{bad}");
            assert!(e.message.contains("address and port"), "{e}");
        }
        let e = load(&[
            ("KEYSMITH_ADDR", "127.0.0.1:4000"),
            ("KEYSMITH_METRICS_ADDR", "127.0.0.1:4000"),
        ])
        .unwrap_err();
        assert!(e.message.contains("port of their own"), "{e}");
    }

    #[test]
    fn bad_addr_names_the_setting() {
        let e = load(&[("KEYSMITH_ADDR", "localhost")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_ADDR");
        assert!(e.message.contains("\"localhost\""), "{e}");
    }

    #[test]
    fn database_url_rejects_unparsable_and_unknown_schemes() {
        let e = load(&[("DATABASE_URL", "mysql://root@localhost/db")]).unwrap_err();
        assert_eq!(e.setting, "DATABASE_URL");
        assert!(e.message.contains("unsupported scheme \"mysql\""), "{e}");
        let e = load(&[("DATABASE_URL", "not a url")]).unwrap_err();
        assert!(e.message.contains("not a database URL"), "{e}");
        let e = load(&[("DATABASE_URL", "postgres://:5432")]).unwrap_err();
        assert_eq!(e.setting, "DATABASE_URL");
        let e = load(&[("DATABASE_URL", "sqlite://")]).unwrap_err();
        assert!(e.message.contains("names no file"), "{e}");
    }

    #[test]
    fn sqlite_url_gets_create_mode_unless_one_is_given() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:data/k.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite://data/k.db?mode=rwc".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://k.db?mode=ro").unwrap(),
            DatabaseUrl::Sqlite("sqlite://k.db?mode=ro".into())
        );
    }

    #[test]
    fn database_url_debug_hides_the_password() {
        let u = DatabaseUrl::parse("postgres://app:hunter2hunter2@db.internal/keys").unwrap();
        let shown = format!("{u:?} {}", u.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn smtp_url_forms() {
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (s.port, s.security, s.username.as_deref()),
            (2525, SmtpSecurity::Plain, None)
        );
        let s = SmtpSettings::parse("smtp://me%40x.com:p%3Ass@mail.x.com?tls=required").unwrap();
        assert_eq!((s.port, s.security), (587, SmtpSecurity::StartTls));
        assert_eq!(s.username.as_deref(), Some("me@x.com"));
        assert_eq!(s.password(), Some("p:ss"));
        assert!(!format!("{s:?}").contains("p:ss"));
        let s = SmtpSettings::parse("smtps://u:p@mail.x.com").unwrap();
        assert_eq!((s.port, s.security), (465, SmtpSecurity::Tls));
        assert!(
            SmtpSettings::parse("http://x")
                .unwrap_err()
                .message
                .contains("unsupported scheme")
        );
        assert!(
            SmtpSettings::parse("smtp://x?tls=maybe")
                .unwrap_err()
                .message
                .contains("tls=maybe")
        );
    }

    #[test]
    fn token_prefix_is_validated() {
        let e = load(&[("KEYSMITH_TOKEN_PREFIX", "Bad-Prefix")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_TOKEN_PREFIX");
        assert_eq!(
            load(&[("KEYSMITH_TOKEN_PREFIX", "acme")])
                .unwrap()
                .token_prefix
                .as_str(),
            "acme"
        );
    }

    #[test]
    fn public_url_must_be_http_without_credentials() {
        assert!(load(&[("KEYSMITH_PUBLIC_URL", "ftp://x")]).is_err());
        assert!(load(&[("KEYSMITH_PUBLIC_URL", "https://u:p@x")]).is_err());
        assert!(load(&[("KEYSMITH_PUBLIC_URL", "https://x/?a=b")]).is_err());
        let c = load(&[("KEYSMITH_PUBLIC_URL", "https://keys.example.com/base/")]).unwrap();
        assert!(c.is_https());
        assert_eq!(
            c.public_link("/signin"),
            "https://keys.example.com/base/signin"
        );
    }

    #[test]
    fn introspection_credentials_parse_and_hide_secrets() {
        let c = load(&[(
            "KEYSMITH_INTROSPECTION_CREDENTIALS",
            "gw:0123456789abcdef, api:fedcba9876543210",
        )])
        .unwrap();
        assert_eq!(c.introspection_clients.len(), 2);
        assert_eq!(c.introspection_clients[1].client_id, "api");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let e = load(&[("KEYSMITH_INTROSPECTION_CREDENTIALS", "gw")]).unwrap_err();
        assert!(e.message.contains("no ':'"), "{e}");
        let e = load(&[("KEYSMITH_INTROSPECTION_CREDENTIALS", "gw:short")]).unwrap_err();
        assert!(e.message.contains("shorter than 16"), "{e}");
    }

    #[test]
    fn config_file_scopes_and_unknown_include() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keysmith.toml");
        std::fs::write(
            &path,
            "token_prefix = \"acme\"\n[rate_limits]\nreads_per_minute = 100\nwrites_per_minute = 10\n\
             [[scopes]]\nname = \"read\"\n[[scopes]]\nname = \"comments\"\nincludes = [\"read\"]\n\
             [[scopes]]\nname = \"tickets:write\"\nincludes = [\"read\", \"comments\"]\n",
        )
        .unwrap();
        let c = load(&[("KEYSMITH_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(c.token_prefix.as_str(), "acme");
        assert_eq!(c.rate_limits.writes_per_minute, 10);
        assert_eq!(c.scopes.names().count(), 3);
        // The environment wins over the file.
        let c = load(&[
            ("KEYSMITH_CONFIG", path.to_str().unwrap()),
            ("KEYSMITH_TOKEN_PREFIX", "env"),
        ])
        .unwrap();
        assert_eq!(c.token_prefix.as_str(), "env");

        std::fs::write(
            &path,
            "[[scopes]]\nname = \"write\"\nincludes = [\"admin\"]\n",
        )
        .unwrap();
        let e = load(&[("KEYSMITH_CONFIG", path.to_str().unwrap())]).unwrap_err();
        assert!(e.to_string().contains("\"admin\""), "{e}");

        std::fs::write(&path, "adress = \"x\"\n").unwrap();
        let e = load(&[("KEYSMITH_CONFIG", path.to_str().unwrap())]).unwrap_err();
        assert!(
            e.message.contains("unknown field `adress`") && e.message.contains("line 1"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_ranges() {
        let c = load(&[("KEYSMITH_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1")]).unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        assert!(c.trusted_proxies[1].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        let e = load(&[("KEYSMITH_TRUSTED_PROXIES", "10.0.0.0/33")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_TRUSTED_PROXIES");
        assert!(load(&[]).unwrap().trusted_proxies.is_empty());
    }

    #[test]
    fn client_ip_header_defaults_to_x_forwarded_for_and_names_one_of_three() {
        use crate::request::ClientIpHeader;
        assert_eq!(
            load(&[]).unwrap().client_ip_header,
            ClientIpHeader::XForwardedFor
        );
        let c = load(&[("KEYSMITH_CLIENT_IP_HEADER", "Forwarded")]).unwrap();
        assert_eq!(c.client_ip_header, ClientIpHeader::Forwarded);
        let c = load(&[("KEYSMITH_CLIENT_IP_HEADER", "x-real-ip")]).unwrap();
        assert_eq!(c.client_ip_header, ClientIpHeader::XRealIp);
        let e = load(&[("KEYSMITH_CLIENT_IP_HEADER", "True-Client-IP")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_CLIENT_IP_HEADER");
        assert!(e.message.contains("X-Forwarded-For"), "{}", e.message);
    }

    #[test]
    fn verify_429_as_403_is_a_boolean_off_by_default() {
        assert!(!load(&[]).unwrap().verify_429_as_403);
        assert!(
            load(&[("KEYSMITH_VERIFY_429_AS_403", "true")])
                .unwrap()
                .verify_429_as_403
        );
        let e = load(&[("KEYSMITH_VERIFY_429_AS_403", "maybe")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_VERIFY_429_AS_403");
        assert!(e.message.contains("\"maybe\""), "{e}");
    }

    #[test]
    fn mcp_settings_are_validated() {
        assert!(load(&[]).unwrap().mcp_url.is_none());
        let c = load(&[("KEYSMITH_MCP_URL", "https://api.example.com/mcp")]).unwrap();
        assert_eq!(c.mcp_url.unwrap().as_str(), "https://api.example.com/mcp");
        assert_eq!(
            load(&[("KEYSMITH_MCP_URL", "ftp://x")])
                .unwrap_err()
                .setting,
            "KEYSMITH_MCP_URL"
        );
        assert_eq!(
            load(&[("KEYSMITH_MCP_NAME", "a b; rm -rf")])
                .unwrap_err()
                .setting,
            "KEYSMITH_MCP_NAME"
        );
    }

    #[test]
    fn missing_config_file_is_an_error_when_named() {
        let e = load(&[("KEYSMITH_CONFIG", "/nonexistent/keysmith.toml")]).unwrap_err();
        assert_eq!(e.setting, "KEYSMITH_CONFIG");
        assert!(e.message.contains("cannot read"));
    }

    #[test]
    fn per_member_token_limits_default_and_refuse_bad_values_by_name() {
        let c = load(&[]).unwrap();
        assert_eq!(
            (c.max_live_tokens_per_member, c.token_creations_per_hour),
            (100, 30)
        );
        let c = load(&[
            ("KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER", " 5 "),
            ("KEYSMITH_TOKEN_CREATIONS_PER_HOUR", "1"),
        ])
        .unwrap();
        assert_eq!(
            (c.max_live_tokens_per_member, c.token_creations_per_hour),
            (5, 1)
        );
        for (var, bad) in [
            ("KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER", "0"),
            ("KEYSMITH_MAX_LIVE_TOKENS_PER_MEMBER", "-3"),
            ("KEYSMITH_TOKEN_CREATIONS_PER_HOUR", "lots"),
            ("KEYSMITH_TOKEN_CREATIONS_PER_HOUR", "1000001"),
        ] {
            let e = load(&[(var, bad)]).unwrap_err();
            assert_eq!(e.setting, var, "{bad}");
            assert!(
                e.message.contains("from 1 to 1000000"),
                "{bad}: {}",
                e.message
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keysmith.toml");
        std::fs::write(
            &path,
            "max_live_tokens_per_member = 7\ntoken_creations_per_hour = 0\n",
        )
        .unwrap();
        let e = load(&[("KEYSMITH_CONFIG", path.to_str().unwrap())]).unwrap_err();
        assert_eq!(e.setting, "keysmith.toml token_creations_per_hour");
        std::fs::write(&path, "max_live_tokens_per_member = 7\n").unwrap();
        let c = load(&[("KEYSMITH_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(c.max_live_tokens_per_member, 7);
    }
}
