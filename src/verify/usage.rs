//! What each token has done lately, in one place per token: its rate-limit
//! windows and its latest use not yet written.
//!
//! A cached token points straight at its entry, so a verified request
//! takes one small lock and no lookup. The table owns the entries: it finds
//! every pending use for the flush, and gives a re-read of the same token
//! the same entry, so revalidating a token never resets its budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ips::{IpTrack, IpUse, Written};
use super::last_used::Pending;
use super::rate_limit::{RateDecision, RequestClass, Window};
use crate::store::verification::LastUse;

const SHARDS: usize = 32;

#[derive(Debug, Default)]
pub struct TokenUsage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    reads: Window,
    writes: Window,
    pending: Option<Pending>,
    ips: IpTrack,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update of plain
    // data; the data itself is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TokenUsage {
    /// Counts one request of `class` against `limit` per minute at `now_ms`
    /// (unix milliseconds) and, if it is allowed, remembers it as the
    /// token's latest use for the next flush (replacing an earlier one).
    /// A refused request is neither counted nor recorded. `path` must not
    /// contain the query string.
    pub fn admit(
        &self,
        class: RequestClass,
        limit: u32,
        now_ms: i64,
        used: Use<'_>,
    ) -> RateDecision {
        let mut state = lock(&self.state);
        let window = match class {
            RequestClass::Read => &mut state.reads,
            RequestClass::Write => &mut state.writes,
        };
        let decision = window.count(class, limit, now_ms);
        if decision.allowed {
            Pending::record(
                &mut state.pending,
                now_ms.div_euclid(1000),
                used.method,
                used.path,
                used.ip,
            );
            state.ips.record(now_ms.div_euclid(1000), &used);
        }
        decision
    }
}

/// One request's use of a token, as "last used" shows it.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub ip: IpAddr,
    /// The `User-Agent`, kept only for an address that may be new.
    pub user_agent: Option<&'a str>,
}

/// One shard of the table: token id → its usage.
type Shard = Mutex<HashMap<i64, Arc<TokenUsage>>>;

/// Every token's [`TokenUsage`], by token id.
pub struct UsageTable {
    shards: Box<[Shard]>,
}

impl Default for UsageTable {
    fn default() -> Self {
        UsageTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl UsageTable {
    fn shard(&self, token_id: i64) -> &Shard {
        &self.shards[token_id.rem_euclid(SHARDS as i64) as usize]
    }

    /// The token's entry, made if it has none.
    pub fn for_token(&self, token_id: i64) -> Arc<TokenUsage> {
        Arc::clone(lock(self.shard(token_id)).entry(token_id).or_default())
    }

    /// Every pending use, taken out (they are pending no more).
    pub fn take_pending(&self) -> Vec<LastUse> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            for (&token_id, usage) in lock(shard).iter() {
                if let Some(p) = lock(&usage.state).pending.take() {
                    batch.push(p.into_last_use(token_id));
                }
            }
        }
        batch
    }

    /// Puts back uses that could not be written, unless a newer use of the
    /// same token arrived meanwhile.
    pub fn restore(&self, uses: Vec<LastUse>) {
        for u in uses {
            let usage = self.for_token(u.token_id);
            let mut state = lock(&usage.state);
            if state.pending.is_none() {
                state.pending = Pending::from_last_use(u);
            }
        }
    }

    /// Every pending address use, taken out.
    pub fn take_pending_ips(&self) -> Vec<IpUse> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            for (&token_id, usage) in lock(shard).iter() {
                lock(&usage.state).ips.take(token_id, &mut batch);
            }
        }
        batch
    }

    /// Puts back address uses that could not be written.
    pub fn restore_ips(&self, uses: Vec<IpUse>) {
        for u in uses {
            lock(&self.for_token(u.token_id).state).ips.restore(u.seen);
        }
    }

    /// Brings each token's view of its addresses up to what was written.
    pub(super) fn learn_ips(&self, written: Written) {
        for (token_id, ip, at) in written.touched {
            lock(&self.for_token(token_id).state).ips.touch(ip, at);
        }
        for (token_id, known) in written.learned {
            lock(&self.for_token(token_id).state).ips.learn(known);
        }
    }

    /// How many uses wait to be written.
    pub fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                lock(s)
                    .values()
                    .filter(|u| lock(&u.state).pending.is_some())
                    .count()
            })
            .sum()
    }

    /// Forgets tokens that no cached token points at, whose windows have
    /// ended and that have nothing to write, so memory follows the tokens
    /// in use rather than every token ever seen.
    pub fn prune(&self, now_ms: i64) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, usage| {
                let state = lock(&usage.state);
                Arc::strong_count(usage) > 1
                    || !state.reads.has_ended(now_ms)
                    || !state.writes.has_ended(now_ms)
                    || state.pending.is_some()
                    || state.ips.has_pending()
            });
        }
    }

    #[cfg(test)]
    fn tracked_tokens(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn a_use(method: &'static str, path: &'static str) -> Use<'static> {
        Use {
            method,
            path,
            ip: IP,
            user_agent: None,
        }
    }

    const GET: Use<'static> = Use {
        method: "GET",
        path: "/",
        ip: IP,
        user_agent: None,
    };

    #[test]
    fn the_request_past_the_budget_is_refused_until_the_window_ends() {
        let table = UsageTable::default();
        let usage = table.for_token(1);
        for n in 0..60 {
            let d = usage.admit(RequestClass::Write, 60, T0 + n * 100, GET);
            assert!(d.allowed, "request {}", n + 1);
            assert_eq!(d.remaining, 59 - n as u32);
        }
        let d = usage.admit(RequestClass::Write, 60, T0 + 18_000, GET);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 42));
        // Reads have their own budget, other tokens their own windows.
        assert!(
            usage
                .admit(RequestClass::Read, 600, T0 + 18_000, GET)
                .allowed
        );
        assert!(
            table
                .for_token(2)
                .admit(RequestClass::Write, 60, T0 + 18_000, GET)
                .allowed
        );
        // Refused requests do not push the window on.
        assert!(
            !usage
                .admit(RequestClass::Write, 60, T0 + 59_999, GET)
                .allowed
        );
        let d = usage.admit(RequestClass::Write, 60, T0 + 60_000, GET);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (59, 60));
    }

    #[test]
    fn only_admitted_requests_are_recorded() {
        let table = UsageTable::default();
        let usage = table.for_token(1);
        assert!(
            usage
                .admit(RequestClass::Write, 1, T0, a_use("POST", "/a"))
                .allowed
        );
        assert!(
            !usage
                .admit(RequestClass::Write, 1, T0 + 5_000, a_use("PUT", "/b"))
                .allowed
        );
        let batch = table.take_pending();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            (
                batch[0].at,
                batch[0].method.as_str(),
                batch[0].path.as_str()
            ),
            (T0 / 1000, "POST", "/a")
        );
    }

    #[test]
    fn a_token_read_again_keeps_its_budget() {
        let table = UsageTable::default();
        for _ in 0..60 {
            table.for_token(1).admit(RequestClass::Write, 60, T0, GET);
        }
        // A new cache entry for the same token gets the same windows.
        assert!(
            !table
                .for_token(1)
                .admit(RequestClass::Write, 60, T0, GET)
                .allowed
        );
    }

    #[test]
    fn prune_forgets_only_finished_unreferenced_idle_tokens() {
        let table = UsageTable::default();
        table.for_token(1).admit(RequestClass::Read, 10, 0, GET);
        table
            .for_token(2)
            .admit(RequestClass::Read, 10, 30_000, GET);
        // Written: only their windows are left.
        assert_eq!(table.take_pending().len(), 2);
        assert_eq!(table.take_pending_ips().len(), 2);
        let held = table.for_token(3);
        table.for_token(4).admit(RequestClass::Read, 10, 1_000, GET);
        table.prune(61_000);
        // 1 is gone; 2's window is running, 3 is cached, 4 has a use to write.
        assert_eq!(table.tracked_tokens(), 3);
        drop(held);
        assert_eq!(table.take_pending().len(), 1);
        assert_eq!(table.take_pending_ips().len(), 1);
        table.prune(91_000);
        assert_eq!(table.tracked_tokens(), 0);
    }

    #[test]
    fn pending_uses_are_taken_once_and_restored_under_newer_ones() {
        let table = UsageTable::default();
        table
            .for_token(1)
            .admit(RequestClass::Read, 10, 100_000, a_use("GET", "/a"));
        table
            .for_token(2)
            .admit(RequestClass::Read, 10, 100_000, a_use("GET", "/c"));
        let mut batch = table.take_pending();
        batch.sort_by_key(|u| u.token_id);
        assert_eq!(batch.len(), 2);
        assert_eq!(table.pending(), 0);
        assert!(table.take_pending().is_empty());
        // The write failed; meanwhile token 2 was used again.
        table
            .for_token(2)
            .admit(RequestClass::Read, 10, 200_000, a_use("DELETE", "/d"));
        table.restore(batch);
        let mut again = table.take_pending();
        again.sort_by_key(|u| u.token_id);
        assert_eq!((again[0].at, again[0].path.as_str()), (100, "/a"));
        assert_eq!((again[1].at, again[1].method.as_str()), (200, "DELETE"));
    }
}
