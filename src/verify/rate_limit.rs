//! Per-token request budgets: a fixed one-minute window per token and per
//! class (reads: GET, HEAD, OPTIONS; writes: everything else), counted in
//! memory on each instance (in [`super::usage`]), on the program's clock so
//! tests can move time.
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
}
