//! Cluster-wide rate limits on PostgreSQL: the instances sharing a database
//! share each token's budget through a ledger (`store::rate_limits`), with
//! no database write per request.
//!
//! Every [`EXCHANGE_EVERY`] (and at once when a request finds this
//! instance's share used up) an instance beats its heartbeat and, for the
//! budgets running low here, reads what the other live instances reserved
//! and reserves a share of what is left (see `rate_limit` for the rule and
//! the bound it keeps). Instances whose heartbeat is older than
//! [`LIVE_FOR`] no longer count: their reservations go back to the rest.
//! Every few seconds an exchange also gives back what this instance reserved
//! for tokens it no longer sees, and deletes ended windows.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::TryRng;
use tokio::sync::{Notify, watch};

use super::Verifier;
use super::rate_limit::{ClusterView, window_start};
use crate::store::StoreResult;
use crate::store::rate_limits::{self, Budget, CLEAN_EVERY, Held, Others};

/// How often an instance exchanges with the ledger.
pub const EXCHANGE_EVERY: Duration = Duration::from_millis(200);
/// An instance whose heartbeat is older than this is not counted.
pub const LIVE_FOR: Duration = Duration::from_secs(2);
/// A request that waits for an exchange waits at most this long.
const WAIT_AT_MOST: Duration = Duration::from_millis(500);
/// A budget not asked for in this long gives its unused reservation back.
const IDLE_AFTER: Duration = Duration::from_secs(2);

pub(super) struct Cluster {
    /// This process's random id in the ledger (not a secret).
    instance: String,
    instances: AtomicU32,
    healthy: AtomicBool,
    /// Tokens with a budget that wants the next exchange.
    queue: Mutex<HashSet<i64>>,
    wake: Notify,
    /// Exchanges started, and the number of the last one finished.
    started: AtomicU64,
    finished: watch::Sender<u64>,
}

impl Cluster {
    pub(super) fn new() -> Cluster {
        let mut bytes = [0u8; 8];
        let _ = rand::rngs::SysRng.try_fill_bytes(&mut bytes);
        Cluster {
            instance: hex::encode(bytes),
            instances: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            queue: Mutex::default(),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::channel(0).0,
        }
    }

    pub(super) fn view(&self) -> ClusterView {
        ClusterView {
            instances: self.instances.load(Ordering::Acquire),
            healthy: self.healthy.load(Ordering::Acquire),
        }
    }

    /// How many live instances the last exchange counted (0: none yet).
    pub(super) fn instances(&self) -> u32 {
        self.instances.load(Ordering::Acquire)
    }

    pub(super) fn want(&self, token_id: i64) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token_id);
    }

    /// Waits (up to [`WAIT_AT_MOST`]) for an exchange that starts after
    /// this call, so it sees what was queued before.
    pub(super) async fn exchanged(&self) {
        let target = self.started.load(Ordering::SeqCst) + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(WAIT_AT_MOST, finished.wait_for(|&n| n >= target)).await;
    }
}

pub(super) async fn run(verifier: Arc<Verifier>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = verifier.cluster.as_ref() else {
        return;
    };
    let mut every = tokio::time::interval(EXCHANGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = cluster.wake.notified() => {}
            _ = stop.changed() => return,
        }
        let number = cluster.started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = exchange(&verifier, cluster, number % CLEAN_EVERY == 1).await;
        let was_healthy = cluster.healthy.swap(result.is_ok(), Ordering::AcqRel);
        match result {
            Ok(()) if !was_healthy => tracing::info!("rate-limit exchanges work again"),
            Err(e) if was_healthy => tracing::warn!(
                error = %e,
                "rate-limit exchange failed; each instance keeps to its fair share until one works"
            ),
            _ => {}
        }
        cluster.finished.send_replace(number);
    }
}

/// One exchange: see the module docs.
async fn exchange(verifier: &Verifier, cluster: &Cluster, clean: bool) -> StoreResult<()> {
    let now_ms = verifier.clock.unix_ms();
    let window = window_start(now_ms);
    let queued: Vec<i64> =
        std::mem::take(&mut *cluster.queue.lock().unwrap_or_else(PoisonError::into_inner))
            .into_iter()
            .collect();
    let mut asking = Vec::new();
    for &token_id in &queued {
        if let Some(usage) = verifier.usage.get(token_id) {
            for class in [0, 1] {
                asking.push((Budget { token_id, class }, Arc::clone(&usage)));
            }
        }
    }
    let released = if clean {
        let idle_since = now_ms - IDLE_AFTER.as_millis() as i64;
        verifier.usage.release_idle(window, idle_since)
    } else {
        Vec::new()
    };
    let budgets: Vec<Budget> = asking.iter().map(|(b, _)| *b).collect();
    let fresh_ms = now_ms - LIVE_FOR.as_millis() as i64;
    let asked = rate_limits::Exchange {
        instance: &cluster.instance,
        now_ms,
        fresh_ms,
        window_start: window,
        asking: &budgets,
        clean,
    };
    let decided = rate_limits::exchange(&verifier.db, &asked, |live, others| {
        let mut held: Vec<Held> = released;
        let mut granted = Vec::new();
        for (budget, usage) in &asking {
            let theirs = others.get(budget).copied().unwrap_or(Others::default());
            if let Some((used, g)) = usage.ask(budget.class, window, theirs, live) {
                held.push(Held {
                    budget: *budget,
                    used,
                    reserved: g.reserved,
                });
                granted.push((Arc::clone(usage), budget.class, g));
            }
        }
        (held, granted)
    })
    .await;
    match decided {
        Ok((live, granted)) => {
            cluster.instances.store(live, Ordering::Release);
            for (usage, class, g) in granted {
                usage.granted(class, g);
            }
            Ok(())
        }
        Err(e) => {
            // Asked again next time.
            cluster
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(queued);
            Err(e)
        }
    }
}
