//! Sign-in links: minted for a known, active user, valid ten minutes, single
//! use; a new link retires the older ones.

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::links::{self, LinkKind, NewLink};
use crate::store::{Db, StoreError, orgs};

use super::secret::Secret;

pub const SIGNIN_LINK_TTL_SECONDS: i64 = 10 * 60;

#[derive(Debug, thiserror::Error)]
pub enum SigninLinkError {
    #[error("no user has the email address {0}")]
    UnknownUser(EmailAddress),
    #[error("{0} is not an active member of any organization")]
    NoActiveMembership(EmailAddress),
    #[error(
        "{0} is not a superuser, and email sign-in is off (KEYSMITH_EMAIL_SIGNIN=false): only superusers get a break-glass link; others sign in through single sign-on"
    )]
    EmailSigninOff(EmailAddress),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The path a sign-in link points at; the secret is a path segment so the
/// route template, which is all the logs record, never contains it.
pub fn signin_link_path(secret: &Secret) -> String {
    format!("/signin/link/{}", secret.expose_secret())
}

/// Mints a sign-in link for `email` and returns its absolute URL.
pub async fn issue_signin_link(
    db: &Db,
    config: &Config,
    clock: &Clock,
    email: &EmailAddress,
    redirect_to: Option<&str>,
) -> Result<String, SigninLinkError> {
    let user = orgs::find_user_by_email(db, email)
        .await?
        .ok_or_else(|| SigninLinkError::UnknownUser(email.clone()))?;
    let memberships = orgs::active_memberships(db, user.id).await?;
    if memberships.is_empty() {
        return Err(SigninLinkError::NoActiveMembership(email.clone()));
    }
    if !config.email_signin && !memberships.iter().any(|m| m.role == orgs::Role::Superuser) {
        return Err(SigninLinkError::EmailSigninOff(email.clone()));
    }
    let secret = Secret::generate();
    let digest = secret.digest_hex();
    let mut tx = db.begin().await?;
    let now = clock.unix();
    links::retire_for_user(&mut tx, LinkKind::SignIn, user.id, now).await?;
    links::create(
        &mut tx,
        LinkKind::SignIn,
        &NewLink {
            secret_hash: &digest,
            user_id: Some(user.id),
            redirect_to,
            ttl_seconds: SIGNIN_LINK_TTL_SECONDS,
            ..NewLink::default()
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(config.public_link(&signin_link_path(&secret)))
}
