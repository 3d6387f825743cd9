//! Per-token request budgets: a fixed one-minute window per token and per
//! class (reads: GET, HEAD, OPTIONS; writes: everything else), counted in
//! memory (in [`super::usage`]), on the program's clock so tests can move
//! time.
//!
//! On SQLite (one instance) a [`Window`] starts with a token's first request
//! and counts everything on this instance. On PostgreSQL, where several
//! instances share the budget, a [`Reservation`] counts in minute-aligned
//! windows (the same on every instance) and accepts only what this
//! instance reserved in the shared ledger (see [`super::cluster`]), plus a
//! small provisional allowance so a request never waits for the ledger
//! unless its instance has used its share.
//!
//! Why the cluster cannot go more than a tenth over: under the ledger's
//! lock an instance's reservation becomes `max(old, used + ceil(R / n))`
//! with `R = limit - (what the other live instances reserved) - used` and
//! `n` the live instances, so the reservations of all instances together
//! never pass the limit (`limit - R + ceil(R / n) <= limit`). Each instance
//! accepts at most its reservation plus its provisional allowance,
//! `max(1, limit / (10 n))` per window. Together: at most
//! `limit + max(n, limit / 10)`, e.g. 66 of 60 with three instances.
//!
//! A fixed window maps one to one onto the IETF httpapi RateLimit fields:
//! `q` is the budget, `w` the window, `r` what is left and `t` the seconds
//! until the window ends.

/// The length of every window.
pub const WINDOW_SECS: i64 = 60;
const WINDOW_MS: i64 = WINDOW_SECS * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    Read,
    Write,
}

impl RequestClass {
    /// GET, HEAD and OPTIONS read; every other method (and anything
    /// unrecognised) writes.
    pub fn of_method(method: &str) -> RequestClass {
        if ["GET", "HEAD", "OPTIONS"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
        {
            RequestClass::Read
        } else {
            RequestClass::Write
        }
    }

    /// The policy name in the RateLimit headers.
    pub fn policy_name(self) -> &'static str {
        match self {
            RequestClass::Read => "reads",
            RequestClass::Write => "writes",
        }
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub class: RequestClass,
    pub allowed: bool,
    /// The budget per window (`q`).
    pub limit: u32,
    /// Requests left in this window (`r`).
    pub remaining: u32,
    /// Whole seconds until the window ends (`t`), at least 1.
    pub reset_secs: i64,
}

/// One budget's current window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    started_ms: i64,
    count: u32,
}

impl Window {
    /// Counts one request of `class` against `limit` per window, at
    /// `now_ms` (unix milliseconds). A refused request is not counted.
    pub(super) fn count(&mut self, class: RequestClass, limit: u32, now_ms: i64) -> RateDecision {
        if self.count == 0 || self.has_ended(now_ms) || now_ms < self.started_ms {
            // A new window starts with this request. (The clock going
            // backwards also starts one rather than stretching the old.)
            *self = Window {
                started_ms: now_ms,
                count: 0,
            };
        }
        let allowed = self.count < limit;
        if allowed {
            self.count += 1;
        }
        let left_ms = (self.started_ms + WINDOW_MS - now_ms).max(1);
        RateDecision {
            class,
            allowed,
            limit,
            remaining: limit.saturating_sub(self.count),
            reset_secs: (left_ms + 999) / 1000,
        }
    }

    pub(super) fn has_ended(&self, now_ms: i64) -> bool {
        now_ms >= self.started_ms + WINDOW_MS
    }
}

/// The start of the minute-aligned window `now_ms` falls in.
pub fn window_start(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(WINDOW_MS)
}

fn seconds_left(window_start: i64, now_ms: i64) -> i64 {
    let left_ms = (window_start + WINDOW_MS - now_ms).max(1);
    (left_ms + 999) / 1000
}

/// What this instance may accept without asking the ledger, per window and
/// per token class: a tenth of the budget shared by the live instances,
/// at least one request.
pub fn provisional_allowance(limit: u32, instances: u32) -> u32 {
    (limit / (10 * instances.max(1))).max(1)
}

/// How one instance's reservation for a token class grows in an exchange:
/// `others` is what the other live instances reserved, `instances` how many
/// are live, this one included. Never shrinks (requests may have been
/// accepted against the old one meanwhile).
pub fn grant(limit: u32, others: u32, used: u32, reserved: u32, instances: u32) -> u32 {
    let left = limit.saturating_sub(others).saturating_sub(used);
    let share = left.div_ceil(instances.max(1));
    reserved.max(used.saturating_add(share))
}

/// The state of the shared ledger as this instance last saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView {
    /// Live instances, this one included; 0 before the first exchange.
    pub instances: u32,
    /// Whether the last exchange worked. While it does not, an instance
    /// accepts up to its fair share (`limit / instances`) on its own.
    pub healthy: bool,
}

/// One token class's budget on an instance of a cluster, in the current
/// minute-aligned window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reservation {
    pub(super) window_start: i64,
    /// The budget when last counted (the ledger needs it).
    pub(super) limit: u32,
    /// Accepted on this instance in this window.
    pub(super) used: u32,
    /// What this instance may accept in total, as the ledger holds it.
    pub(super) reserved: u32,
    /// Accepted past `reserved`, out of the provisional allowance.
    pub(super) provisional: u32,
    /// What the other live instances had used and reserved at the last
    /// exchange.
    pub(super) others_used: u32,
    pub(super) others_reserved: u32,
    /// The growth of the last exchange: when less than half of it is left,
    /// the next exchange asks for more.
    pub(super) last_grant: u32,
    /// Queued for the next exchange.
    pub(super) wanted: bool,
    /// The last exchange found nothing left to reserve.
    pub(super) exhausted: bool,
    pub(super) last_request_ms: i64,
}

/// The answer of [`Reservation::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Decided(RateDecision),
    /// This instance's share is used up but the cluster may have more: an
    /// exchange may reserve it (then count again, without waiting).
    Exchange,
}

impl Reservation {
    /// Counts one request of `class` against `limit` at `now_ms`. Returns
    /// the answer, and whether this entry now wants the next exchange (the
    /// caller queues it). A refused request is not counted.
    pub(super) fn count(
        &mut self,
        class: RequestClass,
        limit: u32,
        now_ms: i64,
        view: ClusterView,
        may_wait: bool,
    ) -> (Admission, bool) {
        let start = window_start(now_ms);
        if start != self.window_start {
            *self = Reservation {
                window_start: start,
                ..Reservation::default()
            };
        }
        if self.limit != limit {
            // The organization changed its budget: ask again.
            self.exhausted = false;
            self.limit = limit;
        }
        self.last_request_ms = now_ms;
        if view.instances == 0 && may_wait {
            // Nobody knows yet how many share the budget.
            return (Admission::Exchange, false);
        }
        let instances = view.instances.max(1);
        // A budget lowered since it was reserved caps what is left.
        let mut ceiling = self.reserved.min(limit);
        if !view.healthy {
            ceiling = ceiling.max(limit.div_ceil(instances));
        }
        let allowed = if self.used < ceiling {
            true
        } else if self.provisional < provisional_allowance(limit, instances) {
            self.provisional += 1;
            true
        } else {
            false
        };
        if allowed {
            self.used += 1;
        }
        let running_low = self.reserved.saturating_sub(self.used) < self.last_grant.div_ceil(2)
            || self.used > self.reserved;
        let want = view.healthy && !self.wanted && !self.exhausted && running_low;
        if want {
            self.wanted = true;
        }
        if !allowed && view.healthy && !self.exhausted && may_wait {
            return (Admission::Exchange, want);
        }
        // Out of budget for the window, or out of this instance's share
        // with more perhaps to come at the next exchange: then a second.
        let reset_secs = if allowed || self.exhausted || !view.healthy {
            seconds_left(start, now_ms)
        } else {
            1
        };
        let decision = RateDecision {
            class,
            allowed,
            limit,
            remaining: limit
                .saturating_sub(self.others_used)
                .saturating_sub(self.used),
            reset_secs,
        };
        (Admission::Decided(decision), want)
    }

    /// Whether this entry's window is over.
    pub(super) fn has_ended(&self, now_ms: i64) -> bool {
        now_ms >= self.window_start + WINDOW_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_classified() {
        for m in ["GET", "get", "HEAD", "OPTIONS"] {
            assert_eq!(RequestClass::of_method(m), RequestClass::Read, "{m}");
        }
        for m in ["POST", "PUT", "PATCH", "DELETE", "BREW", ""] {
            assert_eq!(RequestClass::of_method(m), RequestClass::Write, "{m}");
        }
    }

    const LIVE3: ClusterView = ClusterView {
        instances: 3,
        healthy: true,
    };
    const T0: i64 = 1_700_000_040_000; // a window starts here

    fn allowed(a: Admission) -> bool {
        matches!(a, Admission::Decided(d) if d.allowed)
    }

    #[test]
    fn windows_are_minute_aligned() {
        assert_eq!(window_start(T0), T0);
        assert_eq!(window_start(T0 + 59_999), T0);
        assert_eq!(window_start(T0 + 60_000), T0 + 60_000);
        assert_eq!(seconds_left(T0, T0 + 18_500), 42);
    }

    #[test]
    fn the_provisional_allowance_is_a_tenth_of_a_share_and_at_least_one() {
        assert_eq!(provisional_allowance(60, 3), 2);
        assert_eq!(provisional_allowance(60, 1), 6);
        assert_eq!(provisional_allowance(600, 3), 20);
        assert_eq!(provisional_allowance(5, 3), 1);
        assert_eq!(provisional_allowance(60, 0), 6);
    }

    #[test]
    fn a_grant_takes_a_share_of_what_is_left_and_never_shrinks() {
        assert_eq!(grant(60, 0, 0, 0, 3), 20);
        assert_eq!(grant(60, 22, 2, 0, 3), 2 + 12);
        assert_eq!(grant(60, 58, 2, 2, 3), 2);
        // Nothing left: it keeps what it has.
        assert_eq!(grant(60, 70, 5, 9, 3), 9);
        // Alone, it takes everything left.
        assert_eq!(grant(60, 0, 6, 0, 1), 60);
    }

    #[test]
    fn past_its_share_an_instance_asks_for_an_exchange_then_refuses_for_a_second() {
        let mut r = Reservation::default();
        for n in 0..2 {
            let (a, want) = r.count(RequestClass::Write, 60, T0 + n, LIVE3, true);
            assert!(allowed(a), "provisional {n}");
            assert_eq!(want, n == 0, "queued once");
        }
        let (a, _) = r.count(RequestClass::Write, 60, T0 + 5, LIVE3, true);
        assert_eq!(a, Admission::Exchange);
        let (a, _) = r.count(RequestClass::Write, 60, T0 + 5, LIVE3, false);
        match a {
            Admission::Decided(d) => {
                assert!(!d.allowed);
                assert_eq!((d.reset_secs, d.remaining), (1, 58));
            }
            Admission::Exchange => panic!("waited twice"),
        }
        assert_eq!(r.used, 2, "refusals are not counted");
    }

    #[test]
    fn an_exhausted_budget_refuses_until_the_window_ends_without_waiting() {
        let mut r = Reservation {
            window_start: T0,
            limit: 60,
            used: 20,
            reserved: 20,
            provisional: 2,
            others_used: 40,
            others_reserved: 40,
            exhausted: true,
            ..Reservation::default()
        };
        let (a, want) = r.count(RequestClass::Write, 60, T0 + 18_000, LIVE3, true);
        assert!(!want);
        match a {
            Admission::Decided(d) => {
                assert!(!d.allowed);
                assert_eq!((d.reset_secs, d.remaining), (42, 0));
            }
            Admission::Exchange => panic!("an exhausted budget waited"),
        }
        // The next window starts afresh.
        let (a, _) = r.count(RequestClass::Write, 60, T0 + 60_000, LIVE3, true);
        assert!(allowed(a));
    }

    #[test]
    fn without_working_exchanges_an_instance_keeps_to_its_fair_share() {
        let mut r = Reservation::default();
        let down = ClusterView {
            instances: 3,
            healthy: false,
        };
        let accepted = (0..100)
            .filter(|&n| allowed(r.count(RequestClass::Read, 60, T0 + n, down, true).0))
            .count();
        // Its share of 20, then the provisional allowance.
        assert_eq!(accepted, 22);
    }

    /// Three instances, requests round-robin as fast as they come, each
    /// exchanging (serialized, as under the ledger's lock) at its own phase:
    /// the cluster accepts the whole budget and at most a tenth more.
    #[test]
    fn three_instances_round_robin_accept_between_the_budget_and_a_tenth_more() {
        for phase in 0..20u64 {
            let limit = 60;
            let mut r = [Reservation::default(); 3];
            let mut accepted = 0;
            for step in 0..20_000u64 {
                let i = (step % 3) as usize;
                if allowed(r[i].count(RequestClass::Write, limit, T0, LIVE3, false).0) {
                    accepted += 1;
                }
                // Instance k exchanges every 50 requests, offset by phase.
                let k = ((step / 7 + phase) % 3) as usize;
                if step % (50 + phase) == 0 && r[k].wanted {
                    let others: u32 = (0..3).filter(|&j| j != k).map(|j| r[j].reserved).sum();
                    let new = grant(limit, others, r[k].used, r[k].reserved, 3);
                    r[k].last_grant = new - r[k].reserved;
                    r[k].reserved = new;
                    r[k].exhausted = others + new >= limit;
                    r[k].wanted = false;
                }
            }
            assert!((60..=66).contains(&accepted), "phase {phase}: {accepted}");
        }
    }
}
