//! Per-token request budgets: a fixed one-minute window per token and per
//! class (reads: GET, HEAD, OPTIONS; writes: everything else), counted in
//! memory on each instance, on the program's clock so tests can move time.
//!
//! A fixed window maps one to one onto the IETF httpapi RateLimit fields:
//! `q` is the budget, `w` the window, `r` what is left and `t` the seconds
//! until the window ends.

use std::collections::HashMap;
use std::sync::Mutex;

/// The length of every window.
pub const WINDOW_SECS: i64 = 60;
const WINDOW_MS: i64 = WINDOW_SECS * 1000;
const SHARDS: usize = 32;

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

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    started_ms: i64,
    count: u32,
}

#[derive(Debug, Default)]
struct Windows {
    read: Window,
    write: Window,
}

pub struct RateLimiter {
    shards: Box<[Mutex<HashMap<i64, Windows>>]>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl RateLimiter {
    fn shard(&self, token_id: i64) -> &Mutex<HashMap<i64, Windows>> {
        &self.shards[token_id.rem_euclid(SHARDS as i64) as usize]
    }

    /// Counts one request of `class` by `token_id` against `limit` per
    /// minute, at `now_ms` (unix milliseconds). A refused request is not
    /// counted.
    pub fn check(
        &self,
        token_id: i64,
        class: RequestClass,
        limit: u32,
        now_ms: i64,
    ) -> RateDecision {
        let mut shard = self
            .shard(token_id)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let windows = shard.entry(token_id).or_default();
        let window = match class {
            RequestClass::Read => &mut windows.read,
            RequestClass::Write => &mut windows.write,
        };
        if window.count == 0
            || now_ms >= window.started_ms + WINDOW_MS
            || now_ms < window.started_ms
        {
            // A new window starts with this request. (The clock going
            // backwards also starts one rather than stretching the old.)
            *window = Window {
                started_ms: now_ms,
                count: 0,
            };
        }
        let allowed = window.count < limit;
        if allowed {
            window.count += 1;
        }
        let left_ms = (window.started_ms + WINDOW_MS - now_ms).max(1);
        RateDecision {
            class,
            allowed,
            limit,
            remaining: limit.saturating_sub(window.count),
            reset_secs: (left_ms + 999) / 1000,
        }
    }

    /// Forgets tokens whose windows have all ended, so memory follows the
    /// tokens in use rather than every token ever seen.
    pub fn prune(&self, now_ms: i64) {
        for shard in self.shards.iter() {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shard.retain(|_, w| {
                now_ms < w.read.started_ms + WINDOW_MS || now_ms < w.write.started_ms + WINDOW_MS
            });
        }
    }

    pub fn tracked_tokens(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
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

    #[test]
    fn the_request_past_the_budget_is_refused_until_the_window_ends() {
        let limiter = RateLimiter::default();
        let t0 = 1_700_000_000_000;
        for n in 0..60 {
            let d = limiter.check(1, RequestClass::Write, 60, t0 + n * 100);
            assert!(d.allowed, "request {}", n + 1);
            assert_eq!(d.remaining, 59 - n as u32);
        }
        let d = limiter.check(1, RequestClass::Write, 60, t0 + 18_000);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 42));
        // Reads have their own budget, other tokens their own windows.
        assert!(
            limiter
                .check(1, RequestClass::Read, 600, t0 + 18_000)
                .allowed
        );
        assert!(
            limiter
                .check(2, RequestClass::Write, 60, t0 + 18_000)
                .allowed
        );
        // Refused requests do not push the window on.
        assert!(
            !limiter
                .check(1, RequestClass::Write, 60, t0 + 59_999)
                .allowed
        );
        let d = limiter.check(1, RequestClass::Write, 60, t0 + 60_000);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (59, 60));
    }

    #[test]
    fn prune_forgets_only_finished_windows() {
        let limiter = RateLimiter::default();
        limiter.check(1, RequestClass::Read, 10, 0);
        limiter.check(2, RequestClass::Read, 10, 30_000);
        limiter.prune(61_000);
        assert_eq!(limiter.tracked_tokens(), 1);
    }
}
