//! Managing API tokens: the operations behind the settings page, its JSON
//! twin and (for superusers) the Team page. Each checks who may act,
//! validates its input into domain types, writes in one transaction with its
//! audit event, and makes a killed token fail on the very next request.

use std::collections::BTreeMap;

use serde::Serialize;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

use crate::app::AppState;
use crate::auth::secret::Secret;
use crate::auth::session::SignedIn;
use crate::domain::TokenLabel;
use crate::mail::{self, Mail, RevokedBy};
use crate::request::RequestMeta;
use crate::store::invalidation::Invalidation;
use crate::store::links::{self, LinkKind, LinkState};
use crate::store::tokens::{self, Actor, Authority, NewToken, RevokeReason, TokenRecord};
use crate::store::{StoreError, orgs, projects};
use crate::token::{Expiry, PlainToken, ScopeSet, expiry_in_days, parse_new_expiry};
use crate::verify::commit_and_invalidate;

/// Messages per field, shown next to the field (pages) or as `errors` (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FieldErrors(pub BTreeMap<&'static str, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenOpError {
    #[error(
        "You cannot create or manage API tokens in this organization. An organization superuser can grant it on the Team page."
    )]
    NotAllowed,
    #[error("No such token.")]
    NotFound,
    #[error("Some fields need attention.")]
    Invalid(FieldErrors),
    /// A superuser's disable holds the token; the owner cannot lift it.
    #[error("A superuser ({0}) disabled this token; ask a superuser to enable it.")]
    Locked(String),
    /// The member holds as many live tokens as the deployment allows.
    #[error("You have {0} live tokens, the most allowed; revoke some first.")]
    TooManyLive(u32),
    /// The member created as many tokens in the past hour as allowed.
    #[error(
        "You have created {limit} tokens in the past hour, the most allowed. Try again in {} minute{}.",
        retry_minutes(*retry_after),
        if retry_minutes(*retry_after) == 1 { "" } else { "s" }
    )]
    CreatingTooFast { limit: u32, retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whole minutes, rounded up, for "try again in N minutes".
fn retry_minutes(seconds: u64) -> u64 {
    seconds.div_ceil(60).max(1)
}

impl From<TokenOpError> for crate::error::AppError {
    fn from(e: TokenOpError) -> Self {
        use crate::error::AppError;
        match e {
            TokenOpError::NotAllowed | TokenOpError::Locked(_) => {
                AppError::Forbidden(e.to_string())
            }
            TokenOpError::NotFound => AppError::NotFound,
            TokenOpError::Invalid(_)
            | TokenOpError::TooManyLive(_)
            | TokenOpError::CreatingTooFast { .. } => AppError::BadRequest(e.to_string()),
            TokenOpError::Store(s) => s.into(),
        }
    }
}

/// How long a new token lives, as chosen in a form or given in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExpiryInput {
    #[default]
    Never,
    Days(u32),
    /// A calendar date (`YYYY-MM-DD`): the token works until the end of that day, UTC.
    Date(String),
    /// An instant (RFC 3339), from the JSON API.
    At(String),
}

/// A token as submitted, before validation.
#[derive(Debug, Clone, Default)]
pub struct NewTokenInput {
    pub label: String,
    pub scopes: Vec<String>,
    pub expiry: ExpiryInput,
    /// Project ids, as submitted.
    pub projects: Vec<String>,
}

struct ValidNewToken {
    label: TokenLabel,
    scopes: ScopeSet,
    expires: Expiry,
    project_ids: Vec<i64>,
}

/// The operations that act on a member's own tokens need the permission.
fn require_permission(who: &SignedIn) -> Result<(), TokenOpError> {
    if who.membership.may_manage_tokens() {
        Ok(())
    } else {
        Err(TokenOpError::NotAllowed)
    }
}

fn parse_expiry(input: &ExpiryInput, now: OffsetDateTime) -> Result<Expiry, String> {
    let result = match input {
        ExpiryInput::Never => Ok(Expiry::Never),
        ExpiryInput::Days(days) => expiry_in_days(*days, now),
        ExpiryInput::Date(raw) => {
            let date = Date::parse(raw.trim(), format_description!("[year]-[month]-[day]"))
                .map_err(|_| "Enter the date as YYYY-MM-DD.".to_string())?;
            parse_new_expiry(
                Some(
                    date.with_time(Time::from_hms(23, 59, 59).unwrap_or(Time::MIDNIGHT))
                        .assume_utc(),
                ),
                now,
            )
        }
        ExpiryInput::At(raw) => {
            let at =
                OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                    "Give expiresAt as an RFC 3339 time, e.g. 2030-01-31T00:00:00Z, or null."
                        .to_string()
                })?;
            parse_new_expiry(Some(at), now)
        }
    };
    result.map_err(|e| match e {
        crate::token::ExpiryError::InPast => "The expiry must be in the future.".to_string(),
        crate::token::ExpiryError::TooFar => {
            "The expiry can be at most 10 years ahead.".to_string()
        }
    })
}

async fn validate(
    state: &AppState,
    who: &SignedIn,
    input: &NewTokenInput,
) -> Result<ValidNewToken, TokenOpError> {
    let mut errors = FieldErrors::default();
    let label = TokenLabel::parse(&input.label)
        .map_err(|e| errors.add("label", e.0))
        .ok();

    let policy = orgs::policy(&state.db, who.organization_id()).await?;
    let scopes = match state
        .config
        .scopes
        .parse_set(input.scopes.iter().map(String::as_str))
    {
        Ok(set) => {
            let allowed = policy.allowed_scopes.as_deref().map(ScopeSet::from_stored);
            let forbidden: Vec<String> = set
                .iter()
                .filter(|s| allowed.as_ref().is_some_and(|a| !a.contains(s.as_str())))
                .map(|s| s.to_string())
                .collect();
            if forbidden.is_empty() {
                Some(set)
            } else {
                errors.add(
                    "scopes",
                    format!(
                        "Your organization does not allow members to grant: {}.",
                        forbidden.join(", ")
                    ),
                );
                None
            }
        }
        Err(crate::token::ScopeError::EmptySet) => {
            errors.add("scopes", "Choose at least one scope.");
            None
        }
        Err(e) => {
            errors.add("scopes", format!("{}.", capitalize(&e.to_string())));
            None
        }
    };

    let now = state.clock.now();
    let expires = match parse_expiry(&input.expiry, now) {
        Ok(expires) => {
            if let Some(max_days) = policy.max_token_lifetime_days {
                let limit = now + time::Duration::days(max_days);
                match expires {
                    Expiry::Never => {
                        errors.add("expiry", format!("Your organization requires tokens to expire within {max_days} days."));
                        None
                    }
                    Expiry::At(at) if at > limit => {
                        errors.add("expiry", format!("Your organization requires tokens to expire within {max_days} days."));
                        None
                    }
                    ok => Some(ok),
                }
            } else {
                Some(expires)
            }
        }
        Err(message) => {
            errors.add("expiry", message);
            None
        }
    };

    let available = projects::list_active(&state.db, who.organization_id()).await?;
    let mut project_ids = Vec::new();
    for raw in input
        .projects
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        match raw
            .parse::<i64>()
            .ok()
            .filter(|id| available.iter().any(|p| p.id == *id))
        {
            Some(id) if !project_ids.contains(&id) => project_ids.push(id),
            Some(_) => {}
            None => errors.add(
                "projects",
                "Choose projects of this organization from the list.",
            ),
        }
    }

    match (label, scopes, expires) {
        (Some(label), Some(scopes), Some(expires)) if errors.is_empty() => Ok(ValidNewToken {
            label,
            scopes,
            expires,
            project_ids,
        }),
        _ => Err(TokenOpError::Invalid(errors)),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn actor<'a>(who: &SignedIn, meta: &'a RequestMeta, ip: &'a str) -> Actor<'a> {
    Actor {
        user_id: Some(who.user_id),
        token_id: None,
        ip: Some(ip),
        user_agent: meta.user_agent.as_deref(),
    }
}

/// The per-member limits on creation, checked inside the creating
/// transaction with the membership locked, so two creations at once cannot
/// both take the last place: at most `max_live_tokens_per_member` live
/// tokens, and at most `token_creations_per_hour` created in any hour.
async fn within_limits(
    state: &AppState,
    tx: &mut sqlx::AnyConnection,
    who: &SignedIn,
) -> Result<(), TokenOpError> {
    const HOUR: i64 = 3600;
    let (org, user) = (who.organization_id(), who.user_id);
    let now = state.clock.unix();
    orgs::lock_membership(tx, org, user).await?;
    let max_live = state.config.max_live_tokens_per_member;
    if tokens::count_live(tx, org, user, now).await? >= i64::from(max_live) {
        return Err(TokenOpError::TooManyLive(max_live));
    }
    let per_hour = state.config.token_creations_per_hour;
    let since = now - HOUR;
    if let Some(at) =
        tokens::nth_newest_creation_since(tx, org, user, since, i64::from(per_hour)).await?
    {
        // A place frees up when that creation is an hour old.
        let retry_after = (at + HOUR - now).clamp(1, HOUR) as u64;
        return Err(TokenOpError::CreatingTooFast {
            limit: per_hour,
            retry_after,
        });
    }
    Ok(())
}

/// Creates a token for the signed-in member. The plaintext is returned once
/// and exists nowhere else.
pub async fn create(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    input: &NewTokenInput,
) -> Result<(PlainToken, TokenRecord), TokenOpError> {
    require_permission(who)?;
    let valid = validate(state, who, input).await?;
    let plain = PlainToken::generate(&state.config.token_prefix);
    let ip = meta.ip_string();
    let mut tx = state.db.begin().await?;
    if let Err(e) = within_limits(state, &mut tx, who).await {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(e);
    }
    let created = tokens::create(
        &mut tx,
        &NewToken {
            user_id: who.user_id,
            organization_id: who.organization_id(),
            label: &valid.label,
            display_prefix: &plain.display_prefix(),
            digest: &plain.digest(),
            scopes: &valid.scopes,
            expires_at: valid.expires.to_unix(),
            project_ids: &valid.project_ids,
            created_ip: Some(&ip),
            created_user_agent: meta.user_agent.as_deref(),
        },
    )
    .await;
    let id = match created {
        Ok(id) => id,
        Err(StoreError::Conflict(_)) => {
            let mut errors = FieldErrors::default();
            errors.add(
                "label",
                format!(
                    "You already have a token named “{}”. Choose another label.",
                    valid.label
                ),
            );
            return Err(TokenOpError::Invalid(errors));
        }
        Err(e) => return Err(e.into()),
    };
    // The confirmation email is part of the change: same transaction.
    let mail = Mail::TokenCreated {
        token_id: id,
        at: state.clock.unix(),
        ip: Some(ip.clone()),
        user_agent: meta.user_agent.clone(),
    };
    mail::enqueue(&mut tx, &who.email, &mail, state.clock.unix()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    state.mail.wake();
    let record = tokens::find_in_org(&state.db, who.organization_id(), id)
        .await?
        .ok_or(TokenOpError::NotFound)?;
    tracing::info!(token_id = id, "token created");
    Ok((plain, record))
}

/// A live token of the signed-in member, or `NotFound` (also for another
/// member's token: its existence is not revealed).
pub async fn own_live_token(
    state: &AppState,
    who: &SignedIn,
    id: i64,
) -> Result<TokenRecord, TokenOpError> {
    match tokens::find_in_org(&state.db, who.organization_id(), id).await? {
        Some(t) if t.user_id == who.user_id && t.revoked_at.is_none() => Ok(t),
        _ => Err(TokenOpError::NotFound),
    }
}

/// What a rename/enable/disable request asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenChanges {
    pub label: Option<String>,
    pub enabled: Option<bool>,
}

/// Renames and/or enables/disables one of the member's own live tokens, in
/// one transaction.
pub async fn update(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    id: i64,
    changes: &TokenChanges,
) -> Result<TokenRecord, TokenOpError> {
    require_permission(who)?;
    own_live_token(state, who, id).await?;
    let label = match &changes.label {
        Some(raw) => Some(TokenLabel::parse(raw).map_err(|e| {
            let mut errors = FieldErrors::default();
            errors.add("label", e.0);
            TokenOpError::Invalid(errors)
        })?),
        None => None,
    };
    let ip = meta.ip_string();
    let actor = actor(who, meta, &ip);
    let org = who.organization_id();
    let mut tx = state.db.begin().await?;
    if let Some(label) = &label {
        match tokens::rename(&mut tx, org, id, label, &actor).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                let mut errors = FieldErrors::default();
                errors.add(
                    "label",
                    format!("You already have a token named “{label}”."),
                );
                return Err(TokenOpError::Invalid(errors));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(enabled) = changes.enabled {
        let changed = tokens::set_disabled(
            &mut tx,
            org,
            id,
            !enabled,
            Authority::Owner,
            &actor,
            state.clock.unix(),
        )
        .await?;
        if enabled
            && !changed
            && let Some(by) = tokens::locked_by(&mut tx, org, id).await?
        {
            // Nothing of this request happens, a rename sent along included.
            tx.rollback().await.map_err(StoreError::from)?;
            return Err(TokenOpError::Locked(by));
        }
    }
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(id)]).await?;
    tokens::find_in_org(&state.db, org, id)
        .await?
        .ok_or(TokenOpError::NotFound)
}

/// Revokes one of the member's own live tokens, for good, and confirms it
/// to the owner by email (the page, its plain form and the JSON API all
/// come through here).
pub async fn revoke_own(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    id: i64,
) -> Result<TokenRecord, TokenOpError> {
    require_permission(who)?;
    own_live_token(state, who, id).await?;
    let ip = meta.ip_string();
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    if !tokens::revoke(
        &mut tx,
        org,
        id,
        RevokeReason::Owner,
        &actor(who, meta, &ip),
        now,
    )
    .await?
    {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(TokenOpError::NotFound);
    }
    // The confirmation is part of the revocation: same transaction, so a
    // revocation never goes unreported and a failed one reports nothing.
    let mail = Mail::TokenRevoked {
        token_id: id,
        at: now,
        ip: Some(ip.clone()),
        user_agent: meta.user_agent.clone(),
        by: RevokedBy::Owner,
        actor: None,
    };
    mail::enqueue(&mut tx, &who.email, &mail, now).await?;
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(id)]).await?;
    state.mail.wake();
    tracing::info!(token_id = id, "token revoked by its owner");
    tokens::find_in_org(&state.db, org, id)
        .await?
        .ok_or(TokenOpError::NotFound)
}

/// What following a "revoke this token" email link came to.
#[derive(Debug)]
pub enum LinkRevocation {
    /// The link is good and the token live: ready for the button.
    Ready(TokenRecord),
    Revoked(TokenRecord),
    /// The token had been revoked already (by someone or something else).
    AlreadyRevoked(TokenRecord),
    LinkUsed,
    LinkExpired,
    LinkUnknown,
}

/// Looks at a revoke link without using it: the token it names, if usable.
pub async fn inspect_revoke_link(
    state: &AppState,
    secret: &Secret,
) -> Result<LinkRevocation, StoreError> {
    let mut conn = state.db.pool().acquire().await?;
    let link = links::inspect(
        &mut conn,
        LinkKind::Revoke,
        &secret.digest_hex(),
        state.clock.unix(),
    )
    .await?;
    drop(conn);
    link_outcome(state, link).await
}

async fn link_outcome(state: &AppState, link: LinkState) -> Result<LinkRevocation, StoreError> {
    Ok(match link {
        LinkState::Valid(record) => {
            let token = match record.token_id {
                Some(id) => tokens::find_by_id(&state.db, id).await?,
                None => None,
            };
            match token {
                None => LinkRevocation::LinkUnknown,
                Some(t) if t.revoked_at.is_some() => LinkRevocation::AlreadyRevoked(t),
                Some(t) => LinkRevocation::Ready(t),
            }
        }
        LinkState::Used => LinkRevocation::LinkUsed,
        LinkState::Expired => LinkRevocation::LinkExpired,
        LinkState::Unknown => LinkRevocation::LinkUnknown,
    })
}

/// Uses a revoke link: the link is the credential, no session needed. The
/// revocation is audited as "via email link" and confirmed by email.
pub async fn revoke_by_link(
    state: &AppState,
    secret: &Secret,
    meta: &RequestMeta,
) -> Result<LinkRevocation, StoreError> {
    let now = state.clock.unix();
    let ip = meta.ip_string();
    let mut tx = state.db.begin().await?;
    let link = links::consume(&mut tx, LinkKind::Revoke, &secret.digest_hex(), now).await?;
    let LinkState::Valid(record) = &link else {
        tx.rollback().await?;
        return link_outcome(state, link).await;
    };
    let (Some(token_id), Some(org_id)) = (record.token_id, record.organization_id) else {
        tx.commit().await?;
        return Ok(LinkRevocation::LinkUnknown);
    };
    let actor = Actor {
        user_id: None,
        token_id: None,
        ip: Some(&ip),
        user_agent: meta.user_agent.as_deref(),
    };
    let revoked = tokens::revoke(
        &mut tx,
        org_id,
        token_id,
        RevokeReason::EmailLink,
        &actor,
        now,
    )
    .await?;
    if revoked {
        if let Some(owner) = record.user_id {
            let email = orgs::user_email(&state.db, owner)
                .await?
                .unwrap_or_default();
            let mail = Mail::TokenRevoked {
                token_id,
                at: now,
                ip: Some(ip.clone()),
                user_agent: meta.user_agent.clone(),
                by: RevokedBy::EmailLink,
                actor: None,
            };
            mail::enqueue(&mut tx, &email, &mail, now).await?;
        }
        commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(token_id)]).await?;
        state.mail.wake();
        tracing::info!(token_id, "token revoked through an email link");
    } else {
        tx.commit().await?;
    }
    let token = tokens::find_by_id(&state.db, token_id).await?;
    Ok(match token {
        Some(t) if revoked => LinkRevocation::Revoked(t),
        Some(t) => LinkRevocation::AlreadyRevoked(t),
        None => LinkRevocation::LinkUnknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-23 12:00 UTC)
    }

    #[test]
    fn expiry_presets_and_dates() {
        assert_eq!(parse_expiry(&ExpiryInput::Never, now()), Ok(Expiry::Never));
        assert_eq!(
            parse_expiry(&ExpiryInput::Days(7), now()),
            Ok(Expiry::At(time::macros::datetime!(2026-11-30 12:00 UTC)))
        );
        assert_eq!(
            parse_expiry(&ExpiryInput::Date("2026-12-01".into()), now()),
            Ok(Expiry::At(time::macros::datetime!(2026-12-01 23:59:59 UTC)))
        );
        assert_eq!(
            parse_expiry(&ExpiryInput::Date("2026-11-22".into()), now()),
            Err("The expiry must be in the future.".into())
        );
        assert!(
            parse_expiry(&ExpiryInput::Date("next week".into()), now())
                .unwrap_err()
                .contains("YYYY-MM-DD")
        );
        assert!(
            parse_expiry(&ExpiryInput::At("2020-01-01T00:00:00Z".into()), now())
                .unwrap_err()
                .contains("future")
        );
        assert!(
            parse_expiry(&ExpiryInput::At("tomorrow".into()), now())
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn field_errors_keep_the_first_message_per_field() {
        let mut e = FieldErrors::default();
        e.add("label", "first");
        e.add("label", "second");
        assert_eq!(e.get("label"), Some("first"));
    }
}
