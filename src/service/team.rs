//! What an organization superuser does on the Team page: grant or withdraw
//! the token permission, change roles, disable members, invite people, act
//! on a member's tokens, and set the organization's policy and projects.
//!
//! Like `service::tokens`, each operation checks who may act, validates its
//! input, writes in one transaction with its audit event (and any email, via
//! the outbox), and commits with the invalidation that makes verification
//! see the change on the very next request.

use axum_extra::extract::cookie::Cookie;

use crate::app::AppState;
use crate::auth::secret::Secret;
use crate::auth::session::{SignedIn, start_session};
use crate::domain::EmailAddress;
use crate::mail::{self, Mail, RevokedBy};
use crate::request::RequestMeta;
use crate::service::tokens::FieldErrors;
use crate::store::invalidation::Invalidation;
use crate::store::links::{self, LinkKind, LinkState};
use crate::store::orgs::{self, OrgPolicy, Role};
use crate::store::team::{self, MemberRow};
use crate::store::tokens::{self, Actor, Authority, RevokeReason, TokenRecord};
use crate::store::{AuditEvent, StoreError, projects, record_audit, sessions};
use crate::verify::commit_and_invalidate;

/// Bounds of the policy's numbers: generous, but not absurd.
pub const MAX_PER_MINUTE: i64 = 1_000_000;
pub const MAX_LIFETIME_DAYS: i64 = 3650;
const MAX_PROJECT_NAME: usize = 100;
/// The most projects an organization can have, archived ones included: every
/// create form lists the active ones and the Team page lists them all, so
/// the count is bounded like every other list a page shows.
pub const MAX_PROJECTS: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum TeamOpError {
    #[error("Only an organization superuser can do this.")]
    NotSuperuser,
    #[error("No such member in this organization.")]
    NotFound,
    #[error("Some fields need attention.")]
    Invalid(FieldErrors),
    /// A rule refused the change (the last superuser, acting on oneself…).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TeamOpError> for crate::error::AppError {
    fn from(e: TeamOpError) -> Self {
        use crate::error::AppError;
        match e {
            TeamOpError::NotSuperuser => AppError::Forbidden(e.to_string()),
            TeamOpError::NotFound => AppError::NotFound,
            TeamOpError::Invalid(_) | TeamOpError::Refused(_) => {
                AppError::BadRequest(e.to_string())
            }
            TeamOpError::Store(s) => s.into(),
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> TeamOpError {
    let mut errors = FieldErrors::default();
    errors.add(field, message);
    TeamOpError::Invalid(errors)
}

pub fn require_superuser(who: &SignedIn) -> Result<(), TeamOpError> {
    if who.is_superuser() && !who.membership.disabled {
        Ok(())
    } else {
        Err(TeamOpError::NotSuperuser)
    }
}

/// A member of the superuser's organization, or `NotFound` (another
/// organization's members do not exist here).
pub async fn member(
    state: &AppState,
    who: &SignedIn,
    user_id: i64,
) -> Result<MemberRow, TeamOpError> {
    require_superuser(who)?;
    team::member(
        &state.db,
        who.organization_id(),
        user_id,
        state.clock.unix(),
    )
    .await?
    .ok_or(TeamOpError::NotFound)
}

/// A token of that member, revoked or not.
pub async fn member_token(
    state: &AppState,
    who: &SignedIn,
    user_id: i64,
    token_id: i64,
) -> Result<(MemberRow, TokenRecord), TeamOpError> {
    let m = member(state, who, user_id).await?;
    match tokens::find_in_org(&state.db, who.organization_id(), token_id).await? {
        Some(t) if t.user_id == user_id => Ok((m, t)),
        _ => Err(TeamOpError::NotFound),
    }
}

/// Everything about where an action came from, for the audit log.
struct By<'a> {
    who: &'a SignedIn,
    ip: String,
    user_agent: Option<&'a str>,
}

impl<'a> By<'a> {
    fn new(who: &'a SignedIn, meta: &'a RequestMeta) -> By<'a> {
        By {
            who,
            ip: meta.ip_string(),
            user_agent: meta.user_agent.as_deref(),
        }
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            user_id: Some(self.who.user_id),
            token_id: None,
            ip: Some(&self.ip),
            user_agent: self.user_agent,
        }
    }

    fn event<'b>(
        &'b self,
        subject: Option<i64>,
        action: &'b str,
        detail: Option<&'b str>,
    ) -> AuditEvent<'b> {
        AuditEvent {
            organization_id: Some(self.who.organization_id()),
            actor_user_id: Some(self.who.user_id),
            subject_user_id: subject,
            action,
            detail,
            ip: Some(&self.ip),
            user_agent: self.user_agent,
            ..AuditEvent::default()
        }
    }
}

fn member_invalidation(who: &SignedIn, user_id: i64) -> Invalidation {
    Invalidation::Member {
        organization_id: who.organization_id(),
        user_id,
    }
}

async fn reload(state: &AppState, who: &SignedIn, user_id: i64) -> Result<MemberRow, TeamOpError> {
    team::member(
        &state.db,
        who.organization_id(),
        user_id,
        state.clock.unix(),
    )
    .await?
    .ok_or(TeamOpError::NotFound)
}

// ---------------------------------------------------------------- members

/// Grants or withdraws "Can create and manage personal API tokens". The
/// member's tokens stop (or start) working on the next request; rows are
/// untouched. The member is told by email.
pub async fn set_permission(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
    allowed: bool,
) -> Result<MemberRow, TeamOpError> {
    let m = member(state, who, user_id).await?;
    if m.role == Role::Superuser {
        return Err(TeamOpError::Refused(
            "Superusers can always create and manage API tokens. Demote them first to change this."
                .into(),
        ));
    }
    let by = By::new(who, meta);
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    if !orgs::set_can_manage_tokens(&mut tx, org, user_id, allowed).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(m);
    }
    let action = if allowed {
        "member.permission_granted"
    } else {
        "member.permission_withdrawn"
    };
    record_audit(&mut tx, &by.event(Some(user_id), action, None)).await?;
    let mail = if allowed {
        Mail::PermissionRestored {
            organization_id: org,
            actor: who.email.clone(),
        }
    } else {
        Mail::PermissionWithdrawn {
            organization_id: org,
            actor: who.email.clone(),
        }
    };
    mail::enqueue(&mut tx, &m.email, &mail, now).await?;
    commit_and_invalidate(tx, &state.verifier, &[member_invalidation(who, user_id)]).await?;
    state.mail.wake();
    tracing::info!(user_id, allowed, "token permission changed");
    reload(state, who, user_id).await
}

fn last_superuser(who: &SignedIn) -> TeamOpError {
    TeamOpError::Refused(format!(
        "This is the last superuser of {}. Promote another member to superuser first.",
        who.membership.organization.name
    ))
}

/// Inside a role or status change's transaction: the organization is
/// locked, the actor is still a working superuser (not demoted a moment
/// ago by someone else), and when `removing` the target's superuser powers
/// (a demotion or a disable) at least one other working superuser remains.
/// Only joined, enabled superusers count: an invitee cannot sign in yet.
async fn superuser_guard(
    tx: &mut sqlx::AnyConnection,
    who: &SignedIn,
    user_id: i64,
    removing: bool,
) -> Result<(), TeamOpError> {
    let org = who.organization_id();
    orgs::lock_organization(tx, org).await?;
    if !team::is_working_superuser(tx, org, who.user_id).await? {
        return Err(TeamOpError::NotSuperuser);
    }
    if removing
        && team::is_working_superuser(tx, org, user_id).await?
        && team::count_working_superusers(tx, org).await? <= 1
    {
        return Err(last_superuser(who));
    }
    Ok(())
}

/// Promotes to superuser or demotes to member. The last enabled superuser
/// cannot be demoted.
pub async fn set_role(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
    role: Role,
) -> Result<MemberRow, TeamOpError> {
    let m = member(state, who, user_id).await?;
    let by = By::new(who, meta);
    let org = who.organization_id();
    let mut tx = state.db.begin().await?;
    if let Err(e) = superuser_guard(&mut tx, who, user_id, role == Role::Member).await {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(e);
    }
    if !team::set_role(&mut tx, org, user_id, role).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(m);
    }
    let action = match role {
        Role::Superuser => "member.promoted",
        Role::Member => "member.demoted",
    };
    record_audit(&mut tx, &by.event(Some(user_id), action, None)).await?;
    commit_and_invalidate(tx, &state.verifier, &[member_invalidation(who, user_id)]).await?;
    tracing::info!(user_id, role = role.as_str(), "role changed");
    reload(state, who, user_id).await
}

/// Disables a member (their sessions in this organization end, their tokens
/// stop working, every row is kept) or enables them again.
pub async fn set_disabled(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
    disabled: bool,
) -> Result<MemberRow, TeamOpError> {
    let m = member(state, who, user_id).await?;
    let by = By::new(who, meta);
    let org = who.organization_id();
    let mut tx = state.db.begin().await?;
    if let Err(e) = superuser_guard(&mut tx, who, user_id, disabled).await {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(e);
    }
    if disabled && user_id == who.user_id {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(TeamOpError::Refused(
            "You cannot disable yourself. Ask another superuser.".into(),
        ));
    }
    if !orgs::set_member_disabled(&mut tx, org, user_id, disabled, state.clock.unix()).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        return Ok(m);
    }
    let ended = if disabled {
        team::end_sessions_in_org(&mut tx, org, user_id).await?
    } else {
        0
    };
    let action = if disabled {
        "member.disabled"
    } else {
        "member.enabled"
    };
    record_audit(&mut tx, &by.event(Some(user_id), action, None)).await?;
    commit_and_invalidate(tx, &state.verifier, &[member_invalidation(who, user_id)]).await?;
    tracing::info!(
        user_id,
        disabled,
        sessions_ended = ended,
        "member status changed"
    );
    reload(state, who, user_id).await
}

/// What an invitation form submitted.
#[derive(Debug, Clone, Default)]
pub struct InviteInput {
    pub email: String,
    pub can_manage_tokens: bool,
}

/// Invites `email` as a member: the membership shows as invited until the
/// link in the invitation email is used.
pub async fn invite(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    input: &InviteInput,
) -> Result<MemberRow, TeamOpError> {
    require_superuser(who)?;
    let email = EmailAddress::parse(&input.email).map_err(|e| invalid("email", e.to_string()))?;
    let by = By::new(who, meta);
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    let user = match team::invite_member(&mut tx, org, &email, input.can_manage_tokens, now).await {
        Ok(user) => user,
        Err(StoreError::Conflict(_)) => {
            return Err(invalid(
                "email",
                format!("{email} is already a member of this organization."),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let detail = if input.can_manage_tokens {
        Some("can manage tokens")
    } else {
        None
    };
    record_audit(&mut tx, &by.event(Some(user.id), "member.invited", detail)).await?;
    let mail = Mail::Invitation {
        organization_id: org,
        user_id: user.id,
        inviter: who.email.clone(),
    };
    mail::enqueue(&mut tx, email.as_str(), &mail, now).await?;
    tx.commit().await.map_err(StoreError::from)?;
    state.mail.wake();
    tracing::info!(user_id = user.id, "member invited");
    reload(state, who, user.id).await
}

/// What an invitation link came to.
pub enum Invitation {
    /// Good, and whoever holds the link may press Accept: the invitee is
    /// signed in, or has no account yet (then accepting is their first
    /// sign-in).
    Ready {
        organization: String,
        email: String,
        /// The invitee is signed in already (accepting adds the
        /// organization to their session).
        signed_in: bool,
    },
    /// For an existing account: only that account, signed in, may accept.
    /// The link alone never signs anyone in to it.
    SignInFirst {
        organization: String,
        email: String,
    },
    /// Someone else is signed in here.
    WrongAccount {
        email: String,
        signed_in_as: String,
    },
    /// Accepted. The new session's cookie when this was the invitee's first
    /// sign-in; `None` when they were signed in already.
    Accepted {
        cookie: Option<Cookie<'static>>,
    },
    Used,
    Expired,
    Unknown,
    /// The membership was disabled or removed since.
    Withdrawn,
}

fn link_outcome(link: &LinkState) -> Invitation {
    match link {
        LinkState::Used | LinkState::Valid(_) => Invitation::Used,
        LinkState::Expired => Invitation::Expired,
        LinkState::Unknown => Invitation::Unknown,
    }
}

/// Who may use a valid invitation for `user_id`, seen from `viewer` (the
/// session in this browser, if any), inside the caller's connection. An
/// address "has an account" once it can sign in: it has joined some
/// organization and is enabled there. Before that, the invitation is the
/// only way in, and accepting it is the first sign-in.
async fn who_may_accept(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
    user_id: i64,
    organization: String,
    viewer: Option<&SignedIn>,
) -> Result<Invitation, StoreError> {
    let email = orgs::user_email(&state.db, user_id)
        .await?
        .unwrap_or_default();
    Ok(match viewer {
        Some(v) if v.user_id != user_id => Invitation::WrongAccount {
            email,
            signed_in_as: v.email.clone(),
        },
        Some(_) => Invitation::Ready {
            organization,
            email,
            signed_in: true,
        },
        None if !orgs::active_memberships_in(conn, user_id).await?.is_empty() => {
            Invitation::SignInFirst {
                organization,
                email,
            }
        }
        None => Invitation::Ready {
            organization,
            email,
            signed_in: false,
        },
    })
}

/// Looks at an invitation link without using it, as `viewer` would see it.
pub async fn inspect_invitation(
    state: &AppState,
    secret: &Secret,
    viewer: Option<&SignedIn>,
) -> Result<Invitation, StoreError> {
    let mut conn = state.db.pool().acquire().await?;
    let link = links::inspect(
        &mut conn,
        LinkKind::Invite,
        &secret.digest_hex(),
        state.clock.unix(),
    )
    .await?;
    let LinkState::Valid(record) = &link else {
        return Ok(link_outcome(&link));
    };
    let (Some(org), Some(user_id)) = (record.organization_id, record.user_id) else {
        return Ok(Invitation::Unknown);
    };
    let Some(organization) = orgs::organization_name(&state.db, org).await? else {
        return Ok(Invitation::Unknown);
    };
    who_may_accept(&mut conn, state, user_id, organization, viewer).await
}

/// Uses an invitation link: marks the membership joined, in one
/// transaction with its audit event. Only the invitee may: signed in as
/// themselves (the session now looks at the new organization), or, for an
/// address without an account yet, by the link alone (which then starts
/// their first session). Anyone else is refused and the link stays unused.
pub async fn accept_invitation(
    state: &AppState,
    secret: &Secret,
    meta: &RequestMeta,
    viewer: Option<&SignedIn>,
) -> Result<Invitation, StoreError> {
    let now = state.clock.unix();
    let ip = meta.ip_string();
    let digest = secret.digest_hex();
    let mut tx = state.db.begin().await?;
    let link = links::inspect(&mut tx, LinkKind::Invite, &digest, now).await?;
    let LinkState::Valid(record) = &link else {
        tx.rollback().await?;
        return Ok(link_outcome(&link));
    };
    let (Some(org), Some(user_id)) = (record.organization_id, record.user_id) else {
        tx.rollback().await?;
        return Ok(Invitation::Unknown);
    };
    let organization = orgs::organization_name(&state.db, org)
        .await?
        .unwrap_or_default();
    let may = who_may_accept(&mut tx, state, user_id, organization, viewer).await?;
    if !matches!(may, Invitation::Ready { .. }) {
        tx.rollback().await?;
        return Ok(may);
    }
    // One atomic use: of two presses at once, one joins.
    let consumed = links::consume(&mut tx, LinkKind::Invite, &digest, now).await?;
    if !matches!(consumed, LinkState::Valid(_)) {
        tx.rollback().await?;
        return Ok(link_outcome(&consumed));
    }
    if !team::accept_invitation(&mut tx, org, user_id, now).await? {
        // The link is spent either way: a withdrawn invitation stays withdrawn.
        tx.commit().await?;
        return Ok(Invitation::Withdrawn);
    }
    record_audit(
        &mut tx,
        &AuditEvent {
            organization_id: Some(org),
            actor_user_id: Some(user_id),
            subject_user_id: Some(user_id),
            action: "member.joined",
            ip: Some(&ip),
            user_agent: meta.user_agent.as_deref(),
            ..AuditEvent::default()
        },
    )
    .await?;
    let cookie = match viewer {
        Some(_) => None,
        None => Some(
            start_session(
                &mut tx,
                &state.config,
                user_id,
                org,
                &ip,
                meta.user_agent.as_deref(),
                sessions::SignInMethod::Invitation,
                now,
            )
            .await?,
        ),
    };
    tx.commit().await?;
    if let Some(v) = viewer {
        sessions::set_current_organization(&state.db, v.session_id, org).await?;
    }
    tracing::info!(
        user_id,
        first_sign_in = viewer.is_none(),
        "invitation accepted"
    );
    Ok(Invitation::Accepted { cookie })
}

// ---------------------------------------------------------------- a member's tokens

/// Disables or re-enables a member's token. Disabling emails the owner,
/// naming the superuser.
pub async fn set_token_disabled(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
    token_id: i64,
    disabled: bool,
) -> Result<TokenRecord, TeamOpError> {
    let (m, t) = member_token(state, who, user_id, token_id).await?;
    if t.revoked_at.is_some() {
        return Err(TeamOpError::NotFound);
    }
    let by = By::new(who, meta);
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    let changed = tokens::set_disabled(
        &mut tx,
        org,
        token_id,
        disabled,
        Authority::Superuser,
        &by.actor(),
        now,
    )
    .await?;
    if changed && disabled {
        let mail = Mail::TokenDisabledBySuperuser {
            token_id,
            at: now,
            actor: who.email.clone(),
        };
        mail::enqueue(&mut tx, &m.email, &mail, now).await?;
    }
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(token_id)]).await?;
    state.mail.wake();
    tokens::find_in_org(&state.db, org, token_id)
        .await?
        .ok_or(TeamOpError::NotFound)
}

async fn revoke_in(
    tx: &mut sqlx::AnyConnection,
    by: &By<'_>,
    owner_email: &str,
    token_id: i64,
    now: i64,
) -> Result<bool, TeamOpError> {
    let org = by.who.organization_id();
    if !tokens::revoke(tx, org, token_id, RevokeReason::Superuser, &by.actor(), now).await? {
        return Ok(false);
    }
    let mail = Mail::TokenRevoked {
        token_id,
        at: now,
        ip: Some(by.ip.clone()),
        user_agent: by.user_agent.map(str::to_string),
        by: RevokedBy::Superuser,
        actor: Some(by.who.email.clone()),
    };
    mail::enqueue(tx, owner_email, &mail, now).await?;
    Ok(true)
}

/// Revokes one of a member's tokens, for good; the owner's email names the
/// superuser.
pub async fn revoke_token(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
    token_id: i64,
) -> Result<TokenRecord, TeamOpError> {
    let (m, t) = member_token(state, who, user_id, token_id).await?;
    if t.revoked_at.is_some() {
        return Err(TeamOpError::NotFound);
    }
    let by = By::new(who, meta);
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    if !revoke_in(&mut tx, &by, &m.email, token_id, now).await? {
        tx.rollback().await.map_err(StoreError::from)?;
        return Err(TeamOpError::NotFound);
    }
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Token(token_id)]).await?;
    state.mail.wake();
    tracing::info!(token_id, "token revoked by a superuser");
    tokens::find_in_org(&state.db, who.organization_id(), token_id)
        .await?
        .ok_or(TeamOpError::NotFound)
}

/// Revokes every token of a member (a departing colleague), in one
/// transaction. Returns how many were revoked.
pub async fn revoke_all(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    user_id: i64,
) -> Result<usize, TeamOpError> {
    let m = member(state, who, user_id).await?;
    let by = By::new(who, meta);
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    let ids = team::unrevoked_token_ids(&mut tx, org, user_id).await?;
    let mut revoked = 0;
    for id in &ids {
        if revoke_in(&mut tx, &by, &m.email, *id, now).await? {
            revoked += 1;
        }
    }
    let mut what: Vec<Invalidation> = ids.iter().map(|id| Invalidation::Token(*id)).collect();
    what.push(member_invalidation(who, user_id));
    commit_and_invalidate(tx, &state.verifier, &what).await?;
    state.mail.wake();
    tracing::info!(user_id, revoked, "all tokens of a member revoked");
    Ok(revoked)
}

// ---------------------------------------------------------------- policy

/// The policy form as submitted: empty strings mean "deployment default".
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    pub reads_per_minute: String,
    pub writes_per_minute: String,
    pub max_token_lifetime_days: String,
    /// Scopes members may grant; every scope of the catalogue means "all".
    pub allowed_scopes: Vec<String>,
}

fn bounded(
    errors: &mut FieldErrors,
    field: &'static str,
    raw: &str,
    max: i64,
    what: &str,
) -> Option<i64> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Some(n),
        _ => {
            errors.add(
                field,
                format!("Enter a whole number of {what} from 1 to {max}, or leave it empty for the default."),
            );
            None
        }
    }
}

/// Checks a policy form into an `OrgPolicy`, with a message per field.
pub fn parse_policy(state: &AppState, input: &PolicyInput) -> Result<OrgPolicy, FieldErrors> {
    let mut errors = FieldErrors::default();
    let reads_per_minute = bounded(
        &mut errors,
        "reads_per_minute",
        &input.reads_per_minute,
        MAX_PER_MINUTE,
        "requests",
    );
    let writes_per_minute = bounded(
        &mut errors,
        "writes_per_minute",
        &input.writes_per_minute,
        MAX_PER_MINUTE,
        "requests",
    );
    let max_token_lifetime_days = bounded(
        &mut errors,
        "max_token_lifetime_days",
        &input.max_token_lifetime_days,
        MAX_LIFETIME_DAYS,
        "days",
    );
    let catalogue: Vec<String> = state
        .config
        .scopes
        .names()
        .map(|n| n.as_str().to_string())
        .collect();
    let mut chosen: Vec<String> = Vec::new();
    for s in input.allowed_scopes.iter().map(|s| s.trim()) {
        if !catalogue.iter().any(|c| c == s) {
            errors.add(
                "allowed_scopes",
                format!("“{s}” is not a scope of this deployment."),
            );
        } else if !chosen.iter().any(|c| c == s) {
            chosen.push(s.to_string());
        }
    }
    if chosen.is_empty() {
        errors.add(
            "allowed_scopes",
            "Choose at least one scope members may grant.",
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let allowed_scopes = if chosen.len() == catalogue.len() {
        None
    } else {
        // In catalogue order, so the stored value reads the same way every time.
        Some(
            catalogue
                .iter()
                .filter(|c| chosen.contains(c))
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    Ok(OrgPolicy {
        reads_per_minute,
        writes_per_minute,
        max_token_lifetime_days,
        allowed_scopes,
    })
}

fn describe_policy(p: &OrgPolicy) -> String {
    let or_default = |v: Option<i64>| v.map_or("default".to_string(), |n| n.to_string());
    format!(
        "reads/min {}, writes/min {}, max lifetime days {}, scopes {}",
        or_default(p.reads_per_minute),
        or_default(p.writes_per_minute),
        or_default(p.max_token_lifetime_days),
        p.allowed_scopes.as_deref().unwrap_or("all")
    )
}

/// Saves the organization's policy; verification applies it at once.
pub async fn update_policy(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    input: &PolicyInput,
) -> Result<OrgPolicy, TeamOpError> {
    require_superuser(who)?;
    let policy = parse_policy(state, input).map_err(TeamOpError::Invalid)?;
    let by = By::new(who, meta);
    let org = who.organization_id();
    let detail = describe_policy(&policy);
    let mut tx = state.db.begin().await?;
    team::set_policy(&mut tx, org, &policy).await?;
    record_audit(
        &mut tx,
        &by.event(None, "organization.policy_changed", Some(&detail)),
    )
    .await?;
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Organization(org)]).await?;
    tracing::info!(organization_id = org, "policy changed");
    Ok(policy)
}

// ---------------------------------------------------------------- projects

fn project_name(raw: &str) -> Result<String, TeamOpError> {
    crate::domain::parse_name(raw, "project name", MAX_PROJECT_NAME)
        .map_err(|e| invalid("project", e.0))
}

async fn project_write(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    action: &str,
    detail: &str,
    write: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> Result<bool, StoreError>,
) -> Result<(), TeamOpError> {
    let by = By::new(who, meta);
    let org = who.organization_id();
    let mut tx = state.db.begin().await?;
    match write(&mut tx).await {
        Ok(true) => {}
        Ok(false) => return Err(TeamOpError::NotFound),
        Err(StoreError::Conflict(_)) => {
            return Err(invalid(
                "project",
                "A project with this name exists already.",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    record_audit(&mut tx, &by.event(None, action, Some(detail))).await?;
    commit_and_invalidate(tx, &state.verifier, &[Invalidation::Organization(org)]).await?;
    Ok(())
}

pub async fn add_project(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    raw_name: &str,
) -> Result<(), TeamOpError> {
    require_superuser(who)?;
    let name = project_name(raw_name)?;
    let org = who.organization_id();
    if projects::count(&state.db, org).await? >= MAX_PROJECTS {
        return Err(invalid(
            "project",
            format!(
                "This organization has {MAX_PROJECTS} projects, the most it can have. \
                 Rename an archived project to use it again."
            ),
        ));
    }
    let now = state.clock.unix();
    project_write(state, who, meta, "project.created", &name, async |tx| {
        projects::create(tx, org, &name, now).await.map(|_| true)
    })
    .await
}

pub async fn rename_project(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    project_id: i64,
    raw_name: &str,
) -> Result<(), TeamOpError> {
    require_superuser(who)?;
    let name = project_name(raw_name)?;
    let org = who.organization_id();
    project_write(state, who, meta, "project.renamed", &name, async |tx| {
        team::rename_project(tx, org, project_id, &name).await
    })
    .await
}

pub async fn set_project_archived(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    project_id: i64,
    archived: bool,
) -> Result<(), TeamOpError> {
    require_superuser(who)?;
    let org = who.organization_id();
    let now = state.clock.unix();
    let action = if archived {
        "project.archived"
    } else {
        "project.restored"
    };
    let detail = project_id.to_string();
    project_write(state, who, meta, action, &detail, async |tx| {
        team::set_project_archived(tx, org, project_id, archived, now).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &str, max: i64) -> (Option<i64>, Option<String>) {
        let mut errors = FieldErrors::default();
        let n = bounded(&mut errors, "n", raw, max, "days");
        (n, errors.get("n").map(str::to_string))
    }

    #[test]
    fn policy_numbers_are_whole_and_bounded_or_empty() {
        assert_eq!(one("", 10), (None, None));
        assert_eq!(one("  7 ", 10), (Some(7), None));
        assert_eq!(one("10", 10), (Some(10), None));
        for bad in ["0", "-1", "11", "1.5", "ten", "99999999999999999999"] {
            let (n, e) = one(bad, 10);
            assert_eq!(n, None, "{bad}");
            assert!(e.unwrap().contains("from 1 to 10"), "{bad}");
        }
    }

    #[test]
    fn project_names_are_trimmed_and_bounded() {
        assert_eq!(project_name("  billing ").unwrap(), "billing");
        assert!(project_name("   ").is_err());
        assert!(project_name(&"x".repeat(101)).is_err());
        assert!(project_name("a\u{7}b").is_err());
        assert_eq!(project_name(&"é".repeat(100)).unwrap().chars().count(), 100);
    }

    #[test]
    fn policy_descriptions_name_defaults() {
        assert_eq!(
            describe_policy(&OrgPolicy::default()),
            "reads/min default, writes/min default, max lifetime days default, scopes all"
        );
        let p = OrgPolicy {
            writes_per_minute: Some(1),
            allowed_scopes: Some("read".into()),
            ..OrgPolicy::default()
        };
        assert!(
            describe_policy(&p).contains("writes/min 1")
                && describe_policy(&p).ends_with("scopes read")
        );
    }
}
