//! Email: what Keysmith sends (`Mail`), how it is rendered from templates,
//! how it leaves the process (`transport`), and the outbox worker that
//! delivers it with retries.
//!
//! A message is written to the outbox table in the transaction of the change
//! it reports, as a template name and a JSON payload that holds no secret.
//! One-time links (sign-in, revoke, invitation) are minted by the worker at
//! delivery time, so the database never holds a usable link.

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
    SignIn { next: Option<String> },
}

impl Mail {
    pub fn template_name(&self) -> &'static str {
        match self {
            Mail::SignIn { .. } => "sign_in",
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
