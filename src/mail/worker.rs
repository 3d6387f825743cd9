//! The outbox worker: claims due messages one at a time, renders and sends
//! them, and on failure schedules a retry with exponential backoff and
//! jitter, until the message is older than the give-up time; then it is
//! marked failed (`keysmith mail status` shows it, `keysmith mail retry`
//! requeues it). Token actions never wait for any of this.

use std::sync::Arc;
use std::time::Duration;

use rand::TryRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::MailWaker;
use super::render::{PrepareError, prepare};
use super::transport::Transport;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Db, outbox};

/// How long a claimed message stays reserved for the worker that took it.
const LEASE_SECONDS: i64 = 120;
/// How often the worker looks for due mail when nobody wakes it.
const POLL: Duration = Duration::from_millis(1000);
const RETRY_BASE_SECONDS: f64 = 5.0;
const RETRY_MAX_SECONDS: f64 = 600.0;

pub struct MailWorker {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub transport: Transport,
    pub waker: MailWaker,
}

/// Seconds to wait before attempt `attempts + 1`: 5 s, 10 s, 20 s … capped
/// at 10 minutes, each ±20 % so that many failed messages do not retry in step.
pub fn backoff_seconds(attempts: i64) -> i64 {
    let exp = RETRY_BASE_SECONDS * 2f64.powi((attempts.clamp(1, 30) - 1) as i32);
    let mut b = [0u8; 1];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut b);
    let jitter = 0.8 + 0.4 * f64::from(b[0]) / 255.0;
    (exp.min(RETRY_MAX_SECONDS) * jitter).round() as i64
}

impl MailWorker {
    /// Runs until `stop` turns true. A message in hand when it does is
    /// abandoned, not waited for (an SMTP server may stall for minutes and
    /// container runtimes kill after 10 s): it is put back in the queue,
    /// due at once, and its stable Message-ID lets a receiver recognise the
    /// copy if the server had in fact taken it.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                match outbox::claim_next(&self.db, self.clock.unix(), LEASE_SECONDS).await {
                    Ok(Some(row)) => self.deliver(row, &mut stop).await,
                    Ok(None) => {
                        tokio::select! {
                            () = self.waker.wait() => {}
                            () = tokio::time::sleep(POLL) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mail outbox: cannot claim a message; will retry");
                        tokio::select! {
                            () = tokio::time::sleep(POLL) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            }
        })
    }

    #[tracing::instrument(skip_all, fields(outbox_id = row.id, template = %row.template, attempt = row.attempts))]
    async fn deliver(&self, row: outbox::OutboxMessage, stop: &mut watch::Receiver<bool>) {
        let result = match prepare(&self.db, &self.config, &self.clock, &row).await {
            Ok(p) => {
                let message_id = p
                    .message
                    .headers()
                    .get_raw("Message-ID")
                    .unwrap_or_default()
                    .to_string();
                let send = self
                    .transport
                    .send(&p.message, &row.recipient, &p.subject, &p.links);
                let deadline = self.config.smtp_timeout;
                tokio::select! {
                    sent = tokio::time::timeout(deadline, send) => match sent {
                        Ok(sent) => sent.map(|()| message_id).map_err(PrepareError::Retry),
                        Err(_) => Err(PrepareError::Retry(format!(
                            "the SMTP server did not take the message within {} s",
                            deadline.as_secs()
                        ))),
                    },
                    _ = stop.changed() => {
                        self.put_back(&row).await;
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        };
        let now = self.clock.unix();
        crate::metrics::mail_attempt(result.is_ok());
        let outcome = match result {
            Ok(message_id) => {
                tracing::info!("mail delivered");
                outbox::mark_sent(&self.db, row.id, &message_id, now).await
            }
            Err(PrepareError::Drop(reason)) => {
                tracing::warn!(%reason, "mail dropped");
                outbox::mark_failed(&self.db, row.id, &reason, now).await
            }
            Err(PrepareError::Retry(reason)) => {
                let give_up_at = row.created_at + self.config.mail_give_up_after.as_secs() as i64;
                if now >= give_up_at {
                    tracing::error!(%reason, "mail failed for good; `keysmith mail retry` requeues it");
                    outbox::mark_failed(&self.db, row.id, &reason, now).await
                } else {
                    let wait = backoff_seconds(row.attempts);
                    tracing::warn!(%reason, retry_in_seconds = wait, "mail delivery failed; will retry");
                    outbox::mark_retry(&self.db, row.id, &reason, now + wait).await
                }
            }
        };
        if let Err(e) = outcome {
            // The lease runs out and the message is tried again.
            tracing::warn!(error = %e, "mail outbox: cannot record the outcome");
        }
    }
}

impl MailWorker {
    /// Returns an interrupted message to the queue, due now, without
    /// counting it as a failed attempt's backoff.
    async fn put_back(&self, row: &outbox::OutboxMessage) {
        tracing::warn!("shutting down: mail delivery interrupted; the message stays queued");
        let reason = "interrupted by shutdown; sent at the next start";
        if let Err(e) = outbox::mark_retry(&self.db, row.id, reason, self.clock.unix()).await {
            tracing::warn!(error = %e, "mail outbox: cannot put the interrupted message back; its lease runs out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempts in 1..=3 {
            let expected = 5.0 * 2f64.powi(attempts - 1);
            let got = backoff_seconds(i64::from(attempts)) as f64;
            assert!(
                got >= expected * 0.79 && got <= expected * 1.21,
                "attempt {attempts}: {got}"
            );
        }
        assert!(backoff_seconds(50) <= 721);
    }
}
