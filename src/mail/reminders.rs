//! The periodic job behind expiry emails: 7 days and 1 day before a token
//! expires, and once when it has expired. Each (token, notice) is recorded in
//! `token_notices` in the transaction that enqueues the email, so however
//! often the job runs, on however many instances, each goes out once.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Mail, MailWaker, enqueue};
use crate::clock::Clock;
use crate::store::{Db, StoreResult, tokens};

const DAY: i64 = 24 * 3600;
/// Tokens that expired longer ago than this get no "expired" email (e.g.
/// right after an upgrade): old news is noise.
const EXPIRED_LOOKBACK: i64 = 7 * DAY;
const EVERY: Duration = Duration::from_secs(60);

/// One pass: enqueues every reminder that is due at `now`. Returns how many.
pub async fn run_once(db: &Db, now: i64) -> StoreResult<usize> {
    // (notice, expiry window, minimum lifetime, email)
    type Pass = (&'static str, i64, i64, i64, fn(i64) -> Mail);
    let passes: [Pass; 3] = [
        ("7d", now + DAY, now + 7 * DAY, 7 * DAY, |id| {
            Mail::TokenExpiresSoon {
                token_id: id,
                days: 7,
            }
        }),
        ("1d", now, now + DAY, DAY, |id| Mail::TokenExpiresSoon {
            token_id: id,
            days: 1,
        }),
        ("expired", now - EXPIRED_LOOKBACK, now, 0, |id| {
            Mail::TokenExpired { token_id: id }
        }),
    ];
    let mut sent = 0;
    for (notice, after, until, min_lifetime, mail) in passes {
        for (token_id, owner) in
            tokens::due_for_notice(db, notice, after, until, min_lifetime).await?
        {
            let mut tx = db.begin().await?;
            if tokens::claim_notice(&mut tx, token_id, notice, now).await? {
                enqueue(&mut tx, &owner, &mail(token_id), now).await?;
                sent += 1;
            }
            tx.commit().await?;
        }
    }
    Ok(sent)
}

/// Runs `run_once` every minute until `stop`.
pub fn spawn(
    db: Db,
    clock: Clock,
    waker: MailWaker,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_once(&db, clock.unix()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(reminders = n, "expiry reminders queued");
                    waker.wake();
                }
                Err(e) => tracing::warn!(error = %e, "expiry reminders: will try again"),
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
