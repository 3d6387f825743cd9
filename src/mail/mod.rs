//! Email: what Keysmith sends (`Mail`), how it is rendered from templates,
//! how it leaves the process (`transport`), and the outbox worker that
//! delivers it with retries.
//!
//! A message is written to the outbox table in the transaction of the change
//! it reports, as a template name and a JSON payload that holds no secret.
//! One-time links (sign-in, revoke, invitation) are minted by the worker at
//! delivery time, so the database never holds a usable link.

pub mod notices;
pub mod reminders;
pub mod render;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use tokio::sync::Notify;

use crate::store::{StoreResult, outbox};

/// Every email Keysmith sends, with what its template needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Mail {
    /// A sign-in link for the recipient; `next` is where to land afterwards.
    SignIn {
        next: Option<String>,
    },
    /// A token was created: with a one-click "this wasn't me" revoke link.
    TokenCreated {
        token_id: i64,
        at: i64,
        ip: Option<String>,
        user_agent: Option<String>,
    },
    /// A token was revoked, by its owner, a superuser or the email link.
    TokenRevoked {
        token_id: i64,
        at: i64,
        ip: Option<String>,
        user_agent: Option<String>,
        by: RevokedBy,
        /// The superuser's email, when `by` is `Superuser`.
        actor: Option<String>,
    },
    /// A reminder `days` (7 or 1) before the token expires.
    TokenExpiresSoon {
        token_id: i64,
        days: i64,
    },
    TokenExpired {
        token_id: i64,
    },
    /// A superuser disabled one of the recipient's tokens.
    TokenDisabledBySuperuser {
        token_id: i64,
        at: i64,
        actor: String,
    },
    /// The "can manage tokens" permission was withdrawn: tokens stop working.
    PermissionWithdrawn {
        organization_id: i64,
        actor: String,
    },
    /// The permission was given back: tokens work again.
    PermissionRestored {
        organization_id: i64,
        actor: String,
    },
    /// An invitation to join an organization; its accept link (single use,
    /// 7 days) is minted at delivery.
    Invitation {
        organization_id: i64,
        /// The invited user.
        user_id: i64,
        /// The inviting superuser's email.
        inviter: String,
    },
    /// A token got a new secret (regenerated on a page or the session API,
    /// or rotated by the token itself); the old one works until `grace_until`.
    TokenRegenerated {
        token_id: i64,
        at: i64,
        ip: Option<String>,
        user_agent: Option<String>,
        /// When the replaced secret stops working, if later than `at`.
        grace_until: Option<i64>,
        /// The superuser's email, when someone other than the owner did it.
        by_superuser: Option<String>,
        /// The token rotated itself (`POST /api/v2/tokens/self/rotate`).
        self_rotated: bool,
    },
    /// A secret scanning service reported the token as found in public and
    /// Keysmith revoked it. `url` and `source` say where (as reported).
    TokenLeaked {
        token_id: i64,
        at: i64,
        url: String,
        source: String,
        reporter: String,
    },
    /// A replaced secret of a token was presented after its grace period.
    ReplacedTokenUsed {
        token_id: i64,
        at: i64,
        ip: Option<String>,
        method: String,
        path: String,
        user_agent: Option<String>,
    },
    /// The token was used from an address it had not used in 30 days (after
    /// its first use ever); at most one an hour per token.
    TokenNewIp {
        token_id: i64,
        at: i64,
        ip: String,
        method: String,
        path: String,
        user_agent: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedBy {
    Owner,
    Superuser,
    EmailLink,
}

impl Mail {
    pub fn template_name(&self) -> &'static str {
        match self {
            Mail::SignIn { .. } => "sign_in",
            Mail::TokenCreated { .. } => "token_created",
            Mail::TokenRevoked { .. } => "token_revoked",
            Mail::TokenExpiresSoon { .. } => "token_expires_soon",
            Mail::TokenExpired { .. } => "token_expired",
            Mail::TokenDisabledBySuperuser { .. } => "token_disabled",
            Mail::PermissionWithdrawn { .. } => "permission_withdrawn",
            Mail::PermissionRestored { .. } => "permission_restored",
            Mail::Invitation { .. } => "invitation",
            Mail::TokenRegenerated { .. } => "token_regenerated",
            Mail::ReplacedTokenUsed { .. } => "replaced_token_used",
            Mail::TokenLeaked { .. } => "token_leaked",
            Mail::TokenNewIp { .. } => "token_new_ip",
        }
    }
}

/// Writes `mail` to the outbox inside the caller's transaction.
pub async fn enqueue(
    conn: &mut AnyConnection,
    recipient: &str,
    mail: &Mail,
    now: i64,
) -> StoreResult<i64> {
    // Serialising a plain enum of strings and integers cannot fail.
    let payload = serde_json::to_string(mail).unwrap_or_else(|_| "{}".into());
    outbox::enqueue(conn, mail.template_name(), recipient, &payload, now).await
}

/// Wakes the delivery worker after a commit that enqueued mail, so delivery
/// does not wait for the next poll.
#[derive(Clone, Default, Debug)]
pub struct MailWaker(Arc<Notify>);

impl MailWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn wait(&self) {
        self.0.notified().await;
    }
}
