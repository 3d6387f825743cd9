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
use super::rate_limit::{Admission, ClusterView, RateDecision, RequestClass, Reservation, Window};
use crate::store::rate_limits::{Budget, Held, Others};
use crate::store::verification::LastUse;

/// The table's parts; a flush takes them a group at a time ([`UsageTable::take_group`]).
pub(super) const SHARDS: usize = 32;

#[derive(Debug, Default)]
pub struct TokenUsage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    reads: Window,
    writes: Window,
    /// In a cluster (PostgreSQL), these count instead of the windows:
    /// reads, then writes.
    shared: [Reservation; 2],
    pending: Option<Pending>,
    ips: IpTrack,
}

/// The ledger's number for a class.
pub(super) fn class_number(class: RequestClass) -> i32 {
    match class {
        RequestClass::Read => 0,
        RequestClass::Write => 1,
    }
}

/// What an exchange gave one budget, applied once it is committed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Granted {
    pub(super) window_start: i64,
    pub(super) before: u32,
    pub(super) reserved: u32,
    pub(super) others: Others,
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

    /// [`TokenUsage::admit`] for an instance of a cluster: counts against
    /// this instance's reservation (see [`Reservation::count`]). Returns
    /// whether the token now wants the next exchange, too.
    pub fn admit_shared(
        &self,
        class: RequestClass,
        limit: u32,
        now_ms: i64,
        used: Use<'_>,
        view: ClusterView,
        may_wait: bool,
    ) -> (Admission, bool) {
        let mut state = lock(&self.state);
        let reservation = &mut state.shared[class_number(class) as usize];
        let (admission, want) = reservation.count(class, limit, now_ms, view, may_wait);
        if let Admission::Decided(d) = admission
            && d.allowed
        {
            Pending::record(
                &mut state.pending,
                now_ms.div_euclid(1000),
                used.method,
                used.path,
                used.ip,
            );
            state.ips.record(now_ms.div_euclid(1000), &used);
        }
        (admission, want)
    }

    /// For an exchange of the window starting at `window_start`: what this
    /// instance holds of a budget that wants more, and what the ledger then
    /// gives it given what `others` hold among `instances` live ones; `None`
    /// if it wants nothing in that window (any more).
    pub(super) fn ask(
        &self,
        class: i32,
        window_start: i64,
        others: Others,
        instances: u32,
    ) -> Option<(u32, Granted)> {
        let state = lock(&self.state);
        let r = state.shared.get(usize::try_from(class).ok()?)?;
        if !r.wanted || r.window_start != window_start {
            return None;
        }
        let reserved =
            super::rate_limit::grant(r.limit, others.reserved, r.used, r.reserved, instances);
        Some((
            r.used,
            Granted {
                window_start,
                before: r.reserved,
                reserved,
                others,
            },
        ))
    }

    /// Takes what a committed exchange gave (`None`: the exchange failed,
    /// the budget stays queued).
    pub(super) fn granted(&self, class: i32, granted: Granted) {
        let mut state = lock(&self.state);
        let Some(r) = usize::try_from(class)
            .ok()
            .and_then(|c| state.shared.get_mut(c))
        else {
            return;
        };
        if r.window_start != granted.window_start {
            return;
        }
        r.reserved = r.reserved.max(granted.reserved);
        r.last_grant = granted.reserved.saturating_sub(granted.before);
        r.others_used = granted.others.used;
        r.others_reserved = granted.others.reserved;
        r.exhausted = granted.others.reserved.saturating_add(r.reserved) >= r.limit;
        r.wanted = false;
    }

    /// Gives back what this instance reserved and has not used, for the
    /// budgets of the window starting at `window_start` not asked for
    /// since `idle_since_ms`: others may need it. Local at once, so nothing
    /// more is accepted against it while the ledger learns.
    fn release_idle(&self, token_id: i64, window_start: i64, idle_since_ms: i64) -> Vec<Held> {
        let mut state = lock(&self.state);
        let mut held = Vec::new();
        for (class, r) in state.shared.iter_mut().enumerate() {
            if r.window_start == window_start
                && r.last_request_ms < idle_since_ms
                && r.reserved > r.used
                && !r.wanted
            {
                r.reserved = r.used;
                r.last_grant = 0;
                r.exhausted = false;
                held.push(Held {
                    budget: Budget {
                        token_id,
                        class: class as i32,
                    },
                    used: r.used,
                    reserved: r.reserved,
                });
            }
        }
        held
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

    /// The token's entry, if it has one.
    pub(super) fn get(&self, token_id: i64) -> Option<Arc<TokenUsage>> {
        lock(self.shard(token_id)).get(&token_id).cloned()
    }

    /// Gives back the unused reservations of budgets idle since
    /// `idle_since_ms` (see [`TokenUsage::release_idle`]).
    pub(super) fn release_idle(&self, window_start: i64, idle_since_ms: i64) -> Vec<Held> {
        let mut held = Vec::new();
        for shard in self.shards.iter() {
            let entries: Vec<(i64, Arc<TokenUsage>)> = lock(shard)
                .iter()
                .map(|(&id, u)| (id, Arc::clone(u)))
                .collect();
            for (id, usage) in entries {
                held.extend(usage.release_idle(id, window_start, idle_since_ms));
            }
        }
        held
    }

    /// Every pending use, taken out (they are pending no more).
    #[cfg(test)]
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

    /// The pending address uses and last uses of the tokens in the table's
    /// parts from `*part` on, taken out part by part until they hold
    /// `at_least` or the last part is taken; `*part` moves past them. A
    /// flush takes the table a group at a time, so what it holds at once
    /// (the uses, the rows and statements made from them) stays about the
    /// same however many tokens are busy: 200,000 busy tokens taken at
    /// once held tens of megabytes until their batch was written.
    pub(super) fn take_group(
        &self,
        part: &mut usize,
        at_least: usize,
    ) -> (Vec<IpUse>, Vec<LastUse>) {
        let (mut ips, mut uses) = (Vec::new(), Vec::new());
        while *part < SHARDS && ips.len() + uses.len() < at_least {
            for (&token_id, usage) in lock(&self.shards[*part]).iter() {
                let mut state = lock(&usage.state);
                state.ips.take(token_id, &mut ips);
                if let Some(p) = state.pending.take() {
                    uses.push(p.into_last_use(token_id));
                }
            }
            *part += 1;
        }
        (ips, uses)
    }

    /// Puts back uses that could not be written, unless a newer use of the
    /// same token arrived meanwhile.
    pub fn restore(&self, uses: Vec<LastUse>) {
        for u in uses {
            let usage = self.for_token(u.token_id);
            let mut state = lock(&usage.state);
            if state.pending.is_none() {
                state.pending = Some(Pending::from_last_use(u));
            }
        }
    }

    /// Every pending address use, taken out.
    #[cfg(test)]
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
                    || state.shared.iter().any(|r| !r.has_ended(now_ms))
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

    #[test]
    fn a_flush_takes_the_table_in_bounded_groups_each_use_once() {
        let table = UsageTable::default();
        for token_id in 1..=1_000 {
            table
                .for_token(token_id)
                .admit(RequestClass::Read, 10, 100_000, a_use("GET", "/a"));
        }
        let (mut part, mut groups, mut seen) = (0, 0, std::collections::HashSet::new());
        while part < SHARDS {
            let before = part;
            let (ips, uses) = table.take_group(&mut part, 100);
            assert!(part > before, "every call takes at least one part");
            // A group stops at the first part that takes it to 100 or more:
            // one part here holds 31 or 32 tokens (two uses each).
            assert!(
                ips.len() + uses.len() < 100 + 2 * 32,
                "{} + {}",
                ips.len(),
                uses.len()
            );
            assert_eq!(ips.len(), uses.len());
            for u in uses {
                assert!(seen.insert(u.token_id), "token {} twice", u.token_id);
            }
            groups += 1;
        }
        assert_eq!(seen.len(), 1_000);
        assert!(groups >= 16, "{groups} groups");
        assert_eq!(table.pending(), 0);
        assert!(table.take_pending_ips().is_empty());
    }

    const LIVE3: ClusterView = ClusterView {
        instances: 3,
        healthy: true,
    };
    const W0: i64 = 1_700_000_040_000; // a window starts here

    fn shared(usage: &TokenUsage, at: i64) -> bool {
        let (a, _) = usage.admit_shared(RequestClass::Write, 60, at, GET, LIVE3, false);
        matches!(a, Admission::Decided(d) if d.allowed)
    }

    #[test]
    fn an_exchange_grants_a_share_and_idle_reservations_are_given_back() {
        let table = UsageTable::default();
        let usage = table.for_token(1);
        assert!(shared(&usage, W0));
        let others = Others {
            used: 10,
            reserved: 30,
        };
        let (used, granted) = usage.ask(1, W0, others, 3).expect("it wants a share");
        // 60 - 30 - 1 = 29 left, a third of it (rounded up) on top of 1.
        assert_eq!((used, granted.reserved), (1, 11));
        usage.granted(1, granted);
        assert!(usage.ask(1, W0, others, 3).is_none(), "served");
        for n in 0..10 {
            assert!(shared(&usage, W0 + 10 + n), "reserved {n}");
        }
        // Reads were not asked about; another window is not this one.
        assert!(usage.ask(0, W0, others, 3).is_none());
        assert!(table.release_idle(W0 + 60_000, W0 + 120_000).is_empty());
        // Running low, it asked again: 60 - 30 - 11 = 19 left, 7 more.
        let (used, granted) = usage.ask(1, W0, others, 3).expect("it wants more");
        assert_eq!((used, granted.reserved), (11, 18));
        usage.granted(1, granted);
        // Unused and idle, those 7 go back.
        assert!(table.release_idle(W0, W0 + 10).is_empty(), "not idle yet");
        let held = table.release_idle(W0, W0 + 5_000);
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].used, held[0].reserved), (11, 11));
        assert_eq!(lock(&usage.state).shared[1].reserved, 11);
    }
}
