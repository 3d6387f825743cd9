//! A small sliding-window limiter for sign-in link requests, keyed by email
//! address and by client IP. In memory, per instance: it slows down abuse of
//! the email sender; it is not a security boundary on its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub struct Throttle {
    limit: usize,
    window_seconds: i64,
    hits: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl Throttle {
    pub fn new(limit: usize, window_seconds: i64) -> Throttle {
        Throttle {
            limit,
            window_seconds,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records a hit for `key` at `now`. `Err(seconds)` when over the limit:
    /// how long until the oldest hit leaves the window.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the map from growing without bound under a spray of keys.
        if hits.len() > 100_000 {
            let horizon = now - self.window_seconds;
            hits.retain(|_, q| q.back().is_some_and(|&t| t > horizon));
        }
        let queue = hits.entry(key.to_string()).or_default();
        while queue
            .front()
            .is_some_and(|&t| t <= now - self.window_seconds)
        {
            queue.pop_front();
        }
        if queue.len() >= self.limit {
            let oldest = queue.front().copied().unwrap_or(now);
            return Err((oldest + self.window_seconds - now).max(1));
        }
        queue.push_back(now);
        Ok(())
    }
}

/// The limits on sign-in link requests.
pub struct Throttles {
    /// Per email address: 5 links per 15 minutes.
    pub signin_by_email: Throttle,
    /// Per client IP: 30 requests per 15 minutes.
    pub signin_by_ip: Throttle,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            signin_by_email: Throttle::new(5, 15 * 60),
            signin_by_ip: Throttle::new(30, 15 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_until_the_window_moves() {
        let t = Throttle::new(3, 60);
        for s in 0..3 {
            assert_eq!(t.hit("a", 100 + s), Ok(()));
        }
        assert_eq!(t.hit("a", 110), Err(50));
        assert_eq!(t.hit("b", 110), Ok(()), "keys are independent");
        assert_eq!(t.hit("a", 160), Ok(()), "the first hit has left the window");
    }
}
