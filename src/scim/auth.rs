//! Who is calling SCIM: an organization's bearer secret, made on the Team
//! page (stored hashed) or set by the operator in `KEYSMITH_SCIM_TOKENS`.
//! It is not a personal token: it acts for the organization, as "SCIM".

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::error::ScimError;
use crate::app::AppState;
use crate::config::ConfigError;
use crate::store::{Db, StoreError, scim as store};

const SETTING: &str = "KEYSMITH_SCIM_TOKENS";
/// Secrets made on the Team page start with this (and scanners can find them).
pub const SECRET_PREFIX: &str = "ksscim_";
const MIN_SECRET_LEN: usize = 16;

/// A secret from `KEYSMITH_SCIM_TOKENS`: the organization it acts for and
/// the SHA-256 of the secret (the secret itself is not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredToken {
    pub organization: String,
    digest: String,
}

impl fmt::Debug for ConfiguredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfiguredToken({}:<redacted>)", self.organization)
    }
}

/// Hex SHA-256 of a presented secret: what is stored and compared.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `ORGANIZATION NAME:SECRET,…`; the secret is what follows the last colon.
pub fn parse_configured_tokens(raw: &str) -> Result<Vec<ConfiguredToken>, ConfigError> {
    let mut out: Vec<ConfiguredToken> = Vec::new();
    for (n, part) in raw.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((org, secret)) = part.rsplit_once(':') else {
            return Err(ConfigError::new(
                SETTING,
                format!(
                    "entry {} has no ':' (expected ORGANIZATION NAME:SECRET[,ORGANIZATION NAME:SECRET…])",
                    n + 1
                ),
            ));
        };
        let org = org.trim();
        if org.is_empty() {
            return Err(ConfigError::new(
                SETTING,
                format!("entry {} has an empty organization name", n + 1),
            ));
        }
        if secret.chars().count() < MIN_SECRET_LEN || secret.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                SETTING,
                format!(
                    "the secret of entry {} (organization \"{org}\") must be at least {MIN_SECRET_LEN} characters without spaces",
                    n + 1
                ),
            ));
        }
        let token = ConfiguredToken {
            organization: org.to_string(),
            digest: digest(secret),
        };
        if out.iter().any(|t| t.digest == token.digest) {
            return Err(ConfigError::new(
                SETTING,
                format!("entry {} repeats a secret given before", n + 1),
            ));
        }
        out.push(token);
    }
    Ok(out)
}

/// At start-up: every configured secret names an organization that exists.
pub async fn check_configured(db: &Db, tokens: &[ConfiguredToken]) -> Result<(), String> {
    for t in tokens {
        let found = store::organization_id_by_name(db, &t.organization)
            .await
            .map_err(|e| e.to_string())?;
        if found.is_none() {
            return Err(format!(
                "names the organization \"{}\", which does not exist (organization names are exact, e.g. as the Team page shows them)",
                t.organization
            ));
        }
    }
    Ok(())
}

/// The organization a SCIM request acts for, and the secret's label for the
/// audit log.
#[derive(Debug, Clone)]
pub struct ScimCaller {
    pub organization_id: i64,
    pub label: String,
}

impl ScimCaller {
    /// How the audit log names this actor.
    pub fn audit_detail(&self) -> String {
        format!("SCIM ({})", self.label)
    }
}

fn unauthorized(detail: &str) -> ScimError {
    ScimError::unauthorized(detail)
}

impl FromRequestParts<AppState> for ScimCaller {
    type Rejection = ScimError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "Send the organization's SCIM secret as Authorization: Bearer <secret>.",
            ));
        };
        let value = value.to_str().unwrap_or_default();
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let secret = match scheme {
            s if s.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => {
                return Err(unauthorized(
                    "The Authorization header must use the Bearer scheme.",
                ));
            }
        };
        if secret.is_empty() {
            return Err(unauthorized("The bearer secret is empty."));
        }
        let d = digest(secret);
        if let Some(t) = state.config.scim_tokens.iter().find(|t| t.digest == d) {
            return match store::organization_id_by_name(&state.db, &t.organization).await {
                Ok(Some(organization_id)) => Ok(ScimCaller {
                    organization_id,
                    label: SETTING.to_string(),
                }),
                Ok(None) => Err(unauthorized("This secret's organization no longer exists.")),
                Err(e) => Err(store_error(e)),
            };
        }
        match store::find_token(&state.db, &d, state.clock.unix()).await {
            Ok(Some((organization_id, label))) => Ok(ScimCaller {
                organization_id,
                label,
            }),
            Ok(None) => Err(unauthorized(
                "This SCIM secret is unknown or revoked. A superuser makes a new one on the Team page.",
            )),
            Err(e) => Err(store_error(e)),
        }
    }
}

fn store_error(e: StoreError) -> ScimError {
    ScimError::from(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_tokens_parse_and_hide_secrets() {
        let t = parse_configured_tokens("Acme Inc:0123456789abcdef, Beta:x:y-0123456789abcdef")
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].organization, "Acme Inc");
        assert_eq!(t[0].digest, digest("0123456789abcdef"));
        assert_eq!(t[1].organization, "Beta:x");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_configured_tokens_are_refused_with_the_entry() {
        for (raw, needle) in [
            ("Acme", "no ':'"),
            (":0123456789abcdef", "empty organization"),
            ("Acme:short", "at least 16"),
            ("A:0123456789abcdef,B:0123456789abcdef", "repeats"),
        ] {
            let e = parse_configured_tokens(raw).unwrap_err();
            assert_eq!(e.setting, SETTING);
            assert!(e.message.contains(needle), "{raw}: {}", e.message);
        }
    }
}
