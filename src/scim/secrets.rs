//! The Team page's SCIM secrets: a superuser makes one (shown once, only
//! its SHA-256 kept) and revokes it; both are audited.

use crate::app::AppState;
use crate::auth::secret::Secret;
use crate::auth::session::SignedIn;
use crate::request::RequestMeta;
use crate::service::team::{TeamOpError, require_superuser};
use sqlx::AnyConnection;

use crate::store::{AuditEvent, StoreError, StoreResult, record_audit, scim as store};

pub const MAX_LABEL: usize = 100;

/// A secret just made: the only moment its plaintext exists.
pub struct NewSecret {
    pub id: i64,
    plaintext: String,
}

impl NewSecret {
    pub fn expose_secret(&self) -> &str {
        &self.plaintext
    }
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewSecret({}, <redacted>)", self.id)
    }
}

pub fn parse_label(raw: &str) -> Result<String, String> {
    crate::domain::parse_name(raw, "label", MAX_LABEL).map_err(|e| e.0)
}

pub async fn create(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    raw_label: &str,
) -> Result<NewSecret, TeamOpError> {
    require_superuser(who)?;
    let label = parse_label(raw_label).map_err(TeamOpError::Refused)?;
    let secret = Secret::generate();
    let plaintext = format!("{}{}", super::auth::SECRET_PREFIX, secret.expose_secret());
    let display_prefix: String = plaintext
        .chars()
        .take(super::auth::SECRET_PREFIX.len() + 4)
        .collect();
    let org = who.organization_id();
    let now = state.clock.unix();
    let mut tx = state.db.begin().await?;
    let id = store::create_token(
        &mut tx,
        org,
        &label,
        &super::auth::digest(&plaintext),
        &display_prefix,
        who.user_id,
        now,
    )
    .await?;
    audit(&mut tx, who, meta, "scim_token.created", &label).await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(id, "SCIM secret created");
    Ok(NewSecret { id, plaintext })
}

/// Revokes a SCIM secret: the next request with it is refused.
pub async fn revoke(
    state: &AppState,
    who: &SignedIn,
    meta: &RequestMeta,
    id: i64,
) -> Result<String, TeamOpError> {
    require_superuser(who)?;
    let org = who.organization_id();
    let mut tx = state.db.begin().await?;
    let Some(label) = store::revoke_token(&mut tx, org, id, state.clock.unix()).await? else {
        return Err(TeamOpError::NotFound);
    };
    audit(&mut tx, who, meta, "scim_token.revoked", &label).await?;
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(id, "SCIM secret revoked");
    Ok(label)
}

/// The audit event of a superuser making or revoking a SCIM secret.
async fn audit(
    tx: &mut AnyConnection,
    who: &SignedIn,
    meta: &RequestMeta,
    action: &str,
    label: &str,
) -> StoreResult<()> {
    let detail = format!("SCIM secret \"{label}\"");
    let ip = meta.ip_string();
    record_audit(
        tx,
        &AuditEvent {
            organization_id: Some(who.organization_id()),
            actor_user_id: Some(who.user_id),
            action,
            detail: Some(&detail),
            ip: Some(&ip),
            user_agent: meta.user_agent.as_deref(),
            ..AuditEvent::default()
        },
    )
    .await
}
