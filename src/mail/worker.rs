//! The outbox worker: claims due messages in batches, renders and sends up
//! to `KEYSMITH_MAIL_CONCURRENCY` of them at once over pooled SMTP
//! connections, and records what became of them in batches too. On
//! failure a message is scheduled for a retry with exponential backoff and
//! jitter, until it is older than the give-up time; then it is marked
//! failed (`keysmith mail status` shows it, `keysmith mail retry` requeues
//! it). Token actions never wait for any of this.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::TryRng;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::MailWaker;
use super::render::{PrepareError, prepare};
use super::transport::Transport;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::outbox::{self, OutboxMessage, Outcome};
use crate::store::{Db, StoreError, StoreResult};

/// How often the worker looks for due mail when nobody wakes it.
const POLL: Duration = Duration::from_millis(1000);
/// Claimed messages held in hand, in slots (deliveries at once): the worker
/// claims again when fewer than one slot's worth wait, and up to this many.
const QUEUE_SLOTS: usize = 2;
/// Outcomes written in one transaction at most.
const RECORD_BATCH: usize = 256;
/// How long a stopping worker waits for the database (a claim under way,
/// the last outcomes), all told: shutdown must stay well within the 10 s
/// container runtimes allow.
const LAST_RECORD: Duration = Duration::from_secs(5);
const RETRY_BASE_SECONDS: f64 = 5.0;
const RETRY_MAX_SECONDS: f64 = 600.0;
const INTERRUPTED: &str = "interrupted by shutdown; sent at the next start";

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

/// How long a claimed message stays reserved for the worker that took it.
/// A claimed message waits behind at most `QUEUE_SLOTS` rounds of queued
/// deliveries and one round running, then takes its own: each bounded by
/// the SMTP timeout, so the lease outlasts them all with room for
/// rendering and the database. A crashed worker's messages wait this long.
pub fn lease_seconds(smtp_timeout: Duration) -> i64 {
    ((QUEUE_SLOTS as i64 + 2) * smtp_timeout.as_secs() as i64 + 60).max(120)
}

/// What the worker holds between passes of its loop.
struct Pipeline {
    /// Claimed, not started yet.
    queue: VecDeque<OutboxMessage>,
    running: JoinSet<Outcome>,
    /// Which outbox row each running task delivers.
    tasks: HashMap<tokio::task::Id, i64>,
    /// A claim under way, and how many rows it asked for.
    claiming: Option<(JoinHandle<StoreResult<Vec<OutboxMessage>>>, usize)>,
    /// When to look for due mail next.
    claim_at: Instant,
    /// To the task that writes outcomes down.
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl MailWorker {
    /// Runs until `stop` turns true. Messages in hand when it does are
    /// abandoned, not waited for (an SMTP server may stall for minutes and
    /// container runtimes kill after 10 s): they are put back in the queue,
    /// due at once, and a stable Message-ID lets a receiver recognise the
    /// copy if the server had in fact taken one.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(Arc::new(self).run(stop))
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let slots = self.config.mail_concurrency.max(1);
        let lease = lease_seconds(self.config.smtp_timeout);
        let (outcomes, written) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(self.db.clone(), self.clock.clone(), written));
        let mut p = Pipeline {
            queue: VecDeque::new(),
            running: JoinSet::new(),
            tasks: HashMap::new(),
            claiming: None,
            claim_at: Instant::now(),
            outcomes,
        };
        loop {
            if *stop.borrow() {
                break;
            }
            while p.running.len() < slots {
                let Some(row) = p.queue.pop_front() else {
                    break;
                };
                let id = row.id;
                let me = Arc::clone(&self);
                let task = p.running.spawn(async move { me.deliver(row).await });
                p.tasks.insert(task.id(), id);
            }
            // Claim in the background, before the queue runs dry, so that
            // a free slot never waits for the database.
            let low = p.queue.len() < slots;
            if low && p.claiming.is_none() && Instant::now() >= p.claim_at {
                let limit = QUEUE_SLOTS * slots - p.queue.len();
                let (db, now) = (self.db.clone(), self.clock.unix());
                let claim = tokio::spawn(async move {
                    outbox::claim_batch(&db, now, lease, limit as i64).await
                });
                p.claiming = Some((claim, limit));
            }
            tokio::select! {
                Some(joined) = p.running.join_next_with_id(), if !p.running.is_empty() => {
                    match joined {
                        Ok((task, outcome)) => {
                            p.tasks.remove(&task);
                            let _ = p.outcomes.send(outcome);
                        }
                        Err(e) => {
                            // A panic while rendering or sending: the lease
                            // runs out and the message is tried again.
                            let row = p.tasks.remove(&e.id());
                            tracing::error!(outbox_id = ?row, error = %e, "mail delivery task failed");
                        }
                    }
                }
                claimed = claim_result(&mut p.claiming) => {
                    let limit = p.claiming.take().map_or(0, |(_, limit)| limit);
                    match claimed {
                        Ok(rows) => {
                            // A full batch may leave more due: claim again
                            // as soon as the queue runs low. Fewer means
                            // none is left for now.
                            p.claim_at = if rows.len() >= limit {
                                Instant::now()
                            } else {
                                Instant::now() + POLL
                            };
                            p.queue.extend(rows);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "mail outbox: cannot claim messages; will retry");
                            p.claim_at = Instant::now() + POLL;
                        }
                    }
                }
                () = tokio::time::sleep_until(p.claim_at), if low && p.claiming.is_none() => {}
                () = self.waker.wait() => {
                    p.claim_at = Instant::now();
                }
                _ = stop.changed() => {}
            }
        }
        self.stop(p, recorder).await;
    }

    /// Abandons the deliveries in progress and puts them back due now;
    /// returns the claimed messages not started to the queue as they were;
    /// writes down everything that did finish.
    async fn stop(&self, mut p: Pipeline, recorder: JoinHandle<()>) {
        p.running.abort_all();
        let now = self.clock.unix();
        let deadline = Instant::now() + LAST_RECORD;
        while let Some(joined) = p.running.join_next_with_id().await {
            match joined {
                // Finished before the abort reached it.
                Ok((task, outcome)) => {
                    p.tasks.remove(&task);
                    let _ = p.outcomes.send(outcome);
                }
                Err(e) => {
                    if let Some(id) = p.tasks.remove(&e.id())
                        && e.is_cancelled()
                    {
                        tracing::warn!(
                            outbox_id = id,
                            "shutting down: mail delivery interrupted; the message stays queued"
                        );
                        let _ = p.outcomes.send(Outcome::Retry {
                            id,
                            error: INTERRUPTED.into(),
                            next_attempt_at: now,
                        });
                    }
                }
            }
        }
        if p.claiming.is_some()
            && let Ok(Ok(rows)) =
                tokio::time::timeout_at(deadline, claim_result(&mut p.claiming)).await
        {
            p.queue.extend(rows);
        }
        for row in p.queue.drain(..) {
            let _ = p.outcomes.send(Outcome::Unclaimed { id: row.id });
        }
        // The recorder writes what it has and ends when the channel closes.
        drop(p.outcomes);
        let abort = recorder.abort_handle();
        if tokio::time::timeout_at(deadline, recorder).await.is_err() {
            abort.abort();
            tracing::warn!("mail outbox: cannot write the last outcomes; their leases run out");
        }
    }

    #[tracing::instrument(skip_all, fields(outbox_id = row.id, template = %row.template, attempt = row.attempts))]
    async fn deliver(&self, row: OutboxMessage) -> Outcome {
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
                match tokio::time::timeout(deadline, send).await {
                    Ok(sent) => sent.map(|()| message_id).map_err(PrepareError::Retry),
                    Err(_) => Err(PrepareError::Retry(format!(
                        "the SMTP server did not take the message within {} s",
                        deadline.as_secs()
                    ))),
                }
            }
            Err(e) => Err(e),
        };
        let now = self.clock.unix();
        crate::metrics::mail_attempt(result.is_ok());
        match result {
            Ok(message_id) => {
                tracing::info!("mail delivered");
                Outcome::Sent {
                    id: row.id,
                    message_id,
                }
            }
            Err(PrepareError::Drop(reason)) => {
                tracing::warn!(%reason, "mail dropped");
                Outcome::Failed {
                    id: row.id,
                    error: reason,
                }
            }
            Err(PrepareError::Retry(reason)) => {
                let give_up_at = row.created_at + self.config.mail_give_up_after.as_secs() as i64;
                if now >= give_up_at {
                    tracing::error!(%reason, "mail failed for good; `keysmith mail retry` requeues it");
                    Outcome::Failed {
                        id: row.id,
                        error: reason,
                    }
                } else {
                    let wait = backoff_seconds(row.attempts);
                    tracing::warn!(%reason, retry_in_seconds = wait, "mail delivery failed; will retry");
                    Outcome::Retry {
                        id: row.id,
                        error: reason,
                        next_attempt_at: now + wait,
                    }
                }
            }
        }
    }
}

/// The result of the claim under way; never ready when there is none.
async fn claim_result(
    claiming: &mut Option<(JoinHandle<StoreResult<Vec<OutboxMessage>>>, usize)>,
) -> StoreResult<Vec<OutboxMessage>> {
    match claiming {
        Some((claim, _)) => match claim.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Connect(format!("the claim task failed: {e}"))),
        },
        None => std::future::pending().await,
    }
}

/// Writes outcomes down as they come, in one transaction for all that
/// arrived while the previous one was being written. If the database does
/// not take them they are kept and tried again shortly (their leases keep
/// them from being sent again meanwhile). Ends when the worker hangs up
/// and everything is written.
async fn record(db: Db, clock: Clock, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
    let mut batch = Vec::new();
    loop {
        if batch.is_empty() {
            if outcomes.recv_many(&mut batch, RECORD_BATCH).await == 0 {
                return;
            }
        } else {
            while batch.len() < RECORD_BATCH
                && let Ok(outcome) = outcomes.try_recv()
            {
                batch.push(outcome);
            }
        }
        match outbox::record(&db, &batch, clock.unix()).await {
            Ok(()) => batch.clear(),
            Err(e) => {
                tracing::warn!(error = %e, count = batch.len(), "mail outbox: cannot record delivery outcomes; will retry");
                tokio::time::sleep(POLL).await;
            }
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

    #[test]
    fn a_lease_outlasts_a_wait_and_a_delivery() {
        assert_eq!(lease_seconds(Duration::from_secs(20)), 140);
        assert!(lease_seconds(Duration::from_secs(300)) > 4 * 300);
    }
}
