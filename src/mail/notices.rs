//! The notification emails about tokens and permissions. Each is built as an
//! `EmailContent` (subject, a short text, the facts, an action) and rendered
//! by one pair of Askama templates, text and HTML, so every notice reads the
//! same way and names its organization.

use askama::Template;

use super::render::{PrepareError, Rendered};
use super::{Mail, RevokedBy};
use crate::auth::secret::Secret;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::links::{self, LinkKind, NewLink};
use crate::store::tokens::{TokenMailFacts, mail_facts};
use crate::store::{Db, StoreError, from_unix, orgs, team};

/// A revoke-from-email link works for a week.
pub const REVOKE_LINK_TTL_SECONDS: i64 = 7 * 24 * 3600;
/// An invitation link works for a week.
pub const INVITE_LINK_TTL_SECONDS: i64 = 7 * 24 * 3600;

pub struct EmailContent {
    pub subject: String,
    pub heading: String,
    pub intro: String,
    pub facts: Vec<(String, String)>,
    pub action: Option<(String, String)>,
    pub action_danger: bool,
    pub secondary: Option<(String, String)>,
    pub outro: String,
    pub org: String,
}

#[derive(Template)]
#[template(path = "emails/notice/body.txt")]
struct NoticeText<'a> {
    c: &'a EmailContent,
    base_url: &'a str,
}

#[derive(Template)]
#[template(path = "emails/notice/body.html")]
struct NoticeHtml<'a> {
    c: &'a EmailContent,
    base_url: &'a str,
}

/// `2026-11-23 17:52:10 UTC`: unambiguous in any inbox.
pub fn mail_time(ts: i64) -> String {
    from_unix(ts)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default()
}

/// "Firefox on macOS (Mozilla/5.0 …)": a readable form next to the raw string.
pub fn describe_agent(raw: Option<&str>) -> String {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return "unknown".into();
    };
    let readable = woothee::parser::Parser::new().parse(raw).and_then(|r| {
        let known = |s: &str| !s.is_empty() && s != "UNKNOWN";
        match (known(r.name), known(r.os)) {
            (true, true) => Some(format!("{} on {}", r.name, r.os)),
            (true, false) => Some(r.name.to_string()),
            _ => None,
        }
    });
    match readable {
        Some(short) => format!("{short} ({raw})"),
        None => raw.to_string(),
    }
}

fn token_facts(f: &TokenMailFacts) -> Vec<(String, String)> {
    let t = &f.token;
    vec![
        (
            "Token".into(),
            format!("{} ({}…)", t.label, t.display_prefix),
        ),
        ("Scopes".into(), t.scopes.names().join(", ")),
        (
            "Expires".into(),
            t.expires_at
                .map(mail_time)
                .unwrap_or_else(|| "never".into()),
        ),
        ("Organization".into(), f.organization_name.clone()),
    ]
}

fn where_from(
    facts: &mut Vec<(String, String)>,
    at: i64,
    ip: Option<&str>,
    user_agent: Option<&str>,
) {
    facts.push(("Time".into(), mail_time(at)));
    facts.push(("IP address".into(), ip.unwrap_or("unknown").to_string()));
    facts.push(("Browser or client".into(), describe_agent(user_agent)));
}

async fn token(db: &Db, token_id: i64) -> Result<TokenMailFacts, PrepareError> {
    mail_facts(db, token_id)
        .await?
        .ok_or_else(|| PrepareError::Drop(format!("token {token_id} no longer exists")))
}

/// The "Wasn't you? Revoke this token" button, while the token is live.
async fn wasnt_you(
    db: &Db,
    config: &Config,
    clock: &Clock,
    f: &TokenMailFacts,
) -> Result<Option<(String, String)>, PrepareError> {
    if f.token.revoked_at.is_some() {
        return Ok(None);
    }
    Ok(Some((
        "Wasn't you? Revoke this token".to_string(),
        revoke_link(db, config, clock, f).await?,
    )))
}

/// Mints the single-use "revoke this token" link for a token-created email.
async fn revoke_link(
    db: &Db,
    config: &Config,
    clock: &Clock,
    f: &TokenMailFacts,
) -> Result<String, PrepareError> {
    let secret = Secret::generate();
    let now = clock.unix();
    let mut tx = db.begin().await?;
    links::create(
        &mut tx,
        LinkKind::Revoke,
        &NewLink {
            secret_hash: &secret.digest_hex(),
            user_id: Some(f.token.user_id),
            organization_id: Some(f.token.organization_id),
            token_id: Some(f.token.id),
            ttl_seconds: REVOKE_LINK_TTL_SECONDS,
            ..NewLink::default()
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(config.public_link(&format!("/tokens/revoke/{}", secret.expose_secret())))
}

/// Mints the single-use accept link of an invitation.
async fn invite_link(
    db: &Db,
    config: &Config,
    clock: &Clock,
    organization_id: i64,
    user_id: i64,
) -> Result<String, PrepareError> {
    let secret = Secret::generate();
    let mut tx = db.begin().await?;
    links::create(
        &mut tx,
        LinkKind::Invite,
        &NewLink {
            secret_hash: &secret.digest_hex(),
            user_id: Some(user_id),
            organization_id: Some(organization_id),
            ttl_seconds: INVITE_LINK_TTL_SECONDS,
            ..NewLink::default()
        },
        clock.unix(),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(config.public_link(&format!("/invite/{}", secret.expose_secret())))
}

/// Builds and renders one notice.
pub async fn render_notice(
    db: &Db,
    config: &Config,
    clock: &Clock,
    mail: &Mail,
) -> Result<Rendered, PrepareError> {
    let tokens_page = config.public_link("/settings/api-tokens");
    let page_link = Some(("Your API tokens".to_string(), tokens_page.clone()));
    let content = match mail {
        Mail::SignIn { .. } => return Err(PrepareError::Drop("not a notice".into())),
        Mail::TokenCreated {
            token_id,
            at,
            ip,
            user_agent,
        } => {
            let f = token(db, *token_id).await?;
            let mut facts = token_facts(&f);
            where_from(&mut facts, *at, ip.as_deref(), user_agent.as_deref());
            let action = wasnt_you(db, config, clock, &f).await?;
            let live = action.is_some();
            EmailContent {
                subject: format!(
                    "New API token “{}” created in {}",
                    f.token.label, f.organization_name
                ),
                heading: "A new API token was created".into(),
                intro: format!(
                    "The personal API token “{}” was created for {} in {}. If that was you, there is nothing to do.",
                    f.token.label, f.owner_email, f.organization_name
                ),
                facts,
                action,
                action_danger: true,
                secondary: page_link,
                outro: if live {
                    "The revoke link works once, for 7 days, and needs no sign-in.".into()
                } else {
                    "This token has been revoked since.".into()
                },
                org: f.organization_name.clone(),
            }
        }
        Mail::TokenRevoked {
            token_id,
            at,
            ip,
            user_agent,
            by,
            actor,
        } => {
            let f = token(db, *token_id).await?;
            let who = match by {
                RevokedBy::Owner => "you".to_string(),
                RevokedBy::Superuser => format!(
                    "{}, an organization superuser",
                    actor.as_deref().unwrap_or("an organization superuser")
                ),
                RevokedBy::EmailLink => {
                    "the “Wasn't you? Revoke this token” link in an email".to_string()
                }
            };
            let mut facts = token_facts(&f);
            facts.insert(0, ("Revoked by".into(), who.clone()));
            where_from(&mut facts, *at, ip.as_deref(), user_agent.as_deref());
            EmailContent {
                subject: format!(
                    "API token “{}” was revoked in {}",
                    f.token.label, f.organization_name
                ),
                heading: "An API token was revoked".into(),
                intro: format!(
                    "The API token “{}” was revoked by {who}. It no longer works, and revocation cannot be undone.",
                    f.token.label
                ),
                facts,
                action: None,
                action_danger: false,
                secondary: page_link,
                outro: "If something still needs API access, create a new token.".into(),
                org: f.organization_name.clone(),
            }
        }
        Mail::TokenExpiresSoon { token_id, days } => {
            let f = token(db, *token_id).await?;
            let when = if *days == 1 {
                "tomorrow".to_string()
            } else {
                format!("in {days} days")
            };
            EmailContent {
                subject: format!(
                    "API token “{}” expires {when} ({})",
                    f.token.label, f.organization_name
                ),
                heading: format!("An API token expires {when}"),
                intro: format!(
                    "The API token “{}” stops working {when}. Whatever uses it will need a new one.",
                    f.token.label
                ),
                facts: token_facts(&f),
                action: Some(("Create a replacement".into(), tokens_page)),
                action_danger: false,
                secondary: None,
                outro: "You get this reminder 7 days and 1 day before a token expires.".into(),
                org: f.organization_name.clone(),
            }
        }
        Mail::TokenExpired { token_id } => {
            let f = token(db, *token_id).await?;
            // No request revoked it: the time that matters is the expiry.
            let mut facts = token_facts(&f);
            for (label, _) in &mut facts {
                if label == "Expires" {
                    *label = "Expired".into();
                }
            }
            EmailContent {
                subject: format!(
                    "API token “{}” has expired ({})",
                    f.token.label, f.organization_name
                ),
                heading: "An API token has expired".into(),
                intro: format!(
                    "The API token “{}” has expired and no longer works.",
                    f.token.label
                ),
                facts,
                action: Some(("Create a new token".into(), tokens_page)),
                action_danger: false,
                secondary: None,
                outro: "Expired tokens stay listed on your tokens page.".into(),
                org: f.organization_name.clone(),
            }
        }
        Mail::TokenDisabledBySuperuser {
            token_id,
            at,
            actor,
        } => {
            let f = token(db, *token_id).await?;
            let mut facts = token_facts(&f);
            facts.insert(
                0,
                (
                    "Disabled by".into(),
                    format!("{actor}, an organization superuser"),
                ),
            );
            facts.push(("Time".into(), mail_time(*at)));
            EmailContent {
                subject: format!(
                    "Your API token “{}” was disabled in {}",
                    f.token.label, f.organization_name
                ),
                heading: "An organization superuser disabled your API token".into(),
                intro: format!(
                    "{actor} disabled your API token “{}”. It does not work until it is enabled again.",
                    f.token.label
                ),
                facts,
                action: None,
                action_danger: false,
                secondary: page_link,
                outro: format!("Questions? Ask {actor}."),
                org: f.organization_name.clone(),
            }
        }
        Mail::PermissionWithdrawn {
            organization_id,
            actor,
        }
        | Mail::PermissionRestored {
            organization_id,
            actor,
        } => {
            let org = orgs::organization_name(db, *organization_id)
                .await?
                .ok_or_else(|| PrepareError::Drop("the organization no longer exists".into()))?;
            let withdrawn = matches!(mail, Mail::PermissionWithdrawn { .. });
            EmailContent {
                subject: if withdrawn {
                    format!("Your API tokens in {org} are paused")
                } else {
                    format!("Your API tokens in {org} work again")
                },
                heading: if withdrawn {
                    "Your API token permission was withdrawn".into()
                } else {
                    "Your API token permission is back".into()
                },
                intro: if withdrawn {
                    format!(
                        "{actor} withdrew your permission to create and manage personal API tokens in {org}. Your tokens stop working until it is given back; none are deleted."
                    )
                } else {
                    format!(
                        "{actor} gave you back the permission to create and manage personal API tokens in {org}. Your tokens work again."
                    )
                },
                facts: vec![
                    ("Organization".into(), org.clone()),
                    ("Changed by".into(), actor.clone()),
                ],
                action: None,
                action_danger: false,
                secondary: page_link,
                outro: format!("Questions? Ask {actor}."),
                org,
            }
        }
        Mail::Invitation {
            organization_id,
            user_id,
            inviter,
        } => {
            let org = orgs::organization_name(db, *organization_id)
                .await?
                .ok_or_else(|| PrepareError::Drop("the organization no longer exists".into()))?;
            let email = orgs::user_email(db, *user_id)
                .await?
                .ok_or_else(|| PrepareError::Drop("the invited user no longer exists".into()))?;
            if !team::invitation_pending(db, *organization_id, &email).await? {
                return Err(PrepareError::Drop(
                    "the invitation was accepted or withdrawn".into(),
                ));
            }
            let link = invite_link(db, config, clock, *organization_id, *user_id).await?;
            EmailContent {
                subject: format!("{inviter} invited you to {org} on Keysmith"),
                heading: format!("Join {org}"),
                intro: format!(
                    "{inviter} invited you ({email}) to the organization {org}. Accept to sign in; you can then see and, if allowed, create personal API tokens."
                ),
                facts: vec![
                    ("Organization".into(), org.clone()),
                    ("Invited by".into(), inviter.clone()),
                ],
                action: Some(("Accept the invitation".into(), link)),
                action_danger: false,
                secondary: None,
                outro: "The link works once, for 7 days. If you did not expect this, ignore this email.".into(),
                org,
            }
        }
        Mail::TokenRegenerated { .. } | Mail::ReplacedTokenUsed { .. } => {
            rotation_notice(db, mail, page_link).await?
        }
        Mail::TokenLeaked { .. } => leak_notice(db, mail, page_link).await?,
        Mail::TokenNewIp {
            token_id,
            at,
            ip,
            method,
            path,
            user_agent,
        } => {
            let f = token(db, *token_id).await?;
            let mut facts = token_facts(&f);
            facts.push(("Request".into(), format!("{method} {path}")));
            where_from(&mut facts, *at, Some(ip), user_agent.as_deref());
            let action = wasnt_you(db, config, clock, &f).await?;
            let live = action.is_some();
            EmailContent {
                subject: format!(
                    "API token “{}” was used from a new IP address ({})",
                    f.token.label, f.organization_name
                ),
                heading: "An API token was used from a new address".into(),
                intro: format!(
                    "The API token “{}” was used from {ip}, an address it has not used in the last 30 days. If that was you (a new server, network or VPN), there is nothing to do.",
                    f.token.label
                ),
                facts,
                action,
                action_danger: true,
                secondary: page_link,
                outro: if live {
                    "The revoke link works once, for 7 days, and needs no sign-in. You get at most one of these alerts an hour per token; turn them off on your tokens page.".into()
                } else {
                    "This token has been revoked since.".into()
                },
                org: f.organization_name.clone(),
            }
        }
    };
    let base_url = config.public_link("");
    let mut links: Vec<String> = content
        .action
        .iter()
        .chain(content.secondary.iter())
        .map(|(_, u)| u.clone())
        .collect();
    links.dedup();
    Ok(Rendered {
        subject: content.subject.clone(),
        text: NoticeText {
            c: &content,
            base_url: &base_url,
        }
        .render()?,
        html: NoticeHtml {
            c: &content,
            base_url: &base_url,
        }
        .render()?,
        links,
    })
}

/// The notices about a token's secret being replaced, and a replaced secret
/// being used after its grace period.
async fn rotation_notice(
    db: &Db,
    mail: &Mail,
    page_link: Option<(String, String)>,
) -> Result<EmailContent, PrepareError> {
    match mail {
        Mail::TokenRegenerated {
            token_id,
            at,
            ip,
            user_agent,
            grace_until,
            by_superuser,
            self_rotated,
        } => {
            let f = token(db, *token_id).await?;
            let who = match (by_superuser, self_rotated) {
                (Some(su), _) => format!("{su}, an organization superuser"),
                (None, true) => "the token itself (self-rotation through the API)".to_string(),
                (None, false) => "you".to_string(),
            };
            let old_until = match grace_until {
                Some(until) => format!("until {}", mail_time(*until)),
                None => "no longer (no grace period)".to_string(),
            };
            let mut facts = token_facts(&f);
            facts.insert(0, ("Regenerated by".into(), who.clone()));
            facts.push(("Old secret works".into(), old_until));
            where_from(&mut facts, *at, ip.as_deref(), user_agent.as_deref());
            Ok(EmailContent {
                subject: format!(
                    "API token “{}” was regenerated in {}",
                    f.token.label, f.organization_name
                ),
                heading: "An API token got a new secret".into(),
                intro: format!(
                    "The API token “{}” was regenerated by {who}: same label, scopes and projects, a new secret. Whatever uses the token needs the new secret.",
                    f.token.label
                ),
                facts,
                action: None,
                action_danger: false,
                secondary: page_link,
                outro: "If you did not expect this, revoke the token on your tokens page.".into(),
                org: f.organization_name.clone(),
            })
        }
        Mail::ReplacedTokenUsed {
            token_id,
            at,
            ip,
            method,
            path,
            user_agent,
        } => {
            let f = token(db, *token_id).await?;
            let mut facts = token_facts(&f);
            facts.push(("Request".into(), format!("{method} {path}")));
            where_from(&mut facts, *at, ip.as_deref(), user_agent.as_deref());
            Ok(EmailContent {
                subject: format!(
                    "A replaced secret of API token “{}” was used ({})",
                    f.token.label, f.organization_name
                ),
                heading: "A replaced token was used".into(),
                intro: format!(
                    "Someone presented a secret of the API token “{}” that was replaced and no longer works. The request was refused. Something still holds the old secret: update it, or, if you do not know what it is, revoke the token.",
                    f.token.label
                ),
                facts,
                action: None,
                action_danger: false,
                secondary: page_link,
                outro: "You get at most one of these alerts an hour per token.".into(),
                org: f.organization_name.clone(),
            })
        }
        _ => Err(PrepareError::Drop("not a rotation notice".into())),
    }
}

/// The longest reported location quoted in an email: enough for any real
/// file URL, short enough that a hostile report cannot bloat the message.
const MAX_QUOTED_LOCATION: usize = 500;

fn quoted(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return "not given".into();
    }
    match raw.char_indices().nth(MAX_QUOTED_LOCATION) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_string(),
    }
}

/// The notice that a token was found in public and revoked.
async fn leak_notice(
    db: &Db,
    mail: &Mail,
    page_link: Option<(String, String)>,
) -> Result<EmailContent, PrepareError> {
    let Mail::TokenLeaked {
        token_id,
        at,
        url,
        source,
        reporter,
    } = mail
    else {
        return Err(PrepareError::Drop("not a leak notice".into()));
    };
    let f = token(db, *token_id).await?;
    let mut facts = token_facts(&f);
    facts.insert(0, ("Found at".into(), quoted(url)));
    facts.insert(1, ("Found in".into(), quoted(source)));
    facts.insert(2, ("Reported by".into(), reporter.clone()));
    facts.push(("Revoked".into(), mail_time(*at)));
    Ok(EmailContent {
        subject: format!(
            "API token “{}” was found in public and revoked ({})",
            f.token.label, f.organization_name
        ),
        heading: "An API token was leaked and has been revoked".into(),
        intro: format!(
            "{reporter} found the API token “{}” in public, at the place below. Keysmith revoked it at once, so it no longer works; revocation cannot be undone.",
            f.token.label
        ),
        facts,
        action: None,
        action_danger: false,
        secondary: page_link,
        outro: "Remove the token from where it was found (and from its history), then create a new token for whatever used it.".into(),
        org: f.organization_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_read_as_browser_on_os_next_to_the_raw_string() {
        let firefox =
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 Firefox/128.0";
        let d = describe_agent(Some(firefox));
        assert!(
            d.starts_with("Firefox on Mac OSX (") && d.ends_with(&format!("{firefox})")),
            "{d}"
        );
        assert_eq!(
            describe_agent(Some("curl/8.5.0")),
            "HTTP Library (curl/8.5.0)"
        );
        assert_eq!(describe_agent(Some("my-script")), "my-script");
        assert_eq!(describe_agent(None), "unknown");
    }

    #[test]
    fn reported_locations_are_quoted_within_bounds() {
        assert_eq!(quoted("  "), "not given");
        assert_eq!(quoted("https://github.com/a/b"), "https://github.com/a/b");
        let long = "é".repeat(MAX_QUOTED_LOCATION + 10);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), MAX_QUOTED_LOCATION + 1);
        assert!(q.ends_with('…'));
    }

    #[test]
    fn mail_times_are_utc_with_seconds() {
        assert_eq!(mail_time(0), "1970-01-01 00:00:00 UTC");
    }
}
