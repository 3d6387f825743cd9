//! A small sliding-window limiter for sign-in link requests, keyed by email
//! address and by client network. In memory, per instance: it slows down
//! abuse of the email sender; it is not a security boundary on its own.
//!
//! Its memory is bounded and no hit scans it: every admitted hit is queued
//! once in time order, and each hit retires the queue's expired front, so
//! forgetting idle keys costs O(1) amortised. Past `capacity` keys the
//! least recently started one is forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// How many keys one throttle remembers at most.
const CAPACITY: usize = 100_000;

pub struct Throttle {
    limit: usize,
    window_seconds: i64,
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each key's admitted hits inside the window, oldest first.
    hits: HashMap<String, VecDeque<i64>>,
    /// Every admitted hit, in time order: what to look at when it expires.
    expiries: VecDeque<(i64, String)>,
}

impl State {
    /// Forgets the hits that left the window, and keys left with none.
    fn retire(&mut self, horizon: i64) {
        while let Some((at, _)) = self.expiries.front() {
            if *at > horizon {
                break;
            }
            let Some((_, key)) = self.expiries.pop_front() else {
                break;
            };
            if let Some(queue) = self.hits.get_mut(&key) {
                while queue.front().is_some_and(|&t| t <= horizon) {
                    queue.pop_front();
                }
                if queue.is_empty() {
                    self.hits.remove(&key);
                }
            }
        }
    }

    /// Forgets the key whose oldest admitted hit is the oldest of all.
    fn evict_oldest(&mut self) {
        while let Some((_, key)) = self.expiries.pop_front() {
            if self.hits.remove(&key).is_some() {
                return;
            }
        }
    }
}

impl Throttle {
    pub fn new(limit: usize, window_seconds: i64) -> Throttle {
        Throttle::with_capacity(limit, window_seconds, CAPACITY)
    }

    pub fn with_capacity(limit: usize, window_seconds: i64, capacity: usize) -> Throttle {
        Throttle {
            limit,
            window_seconds,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Records a hit for `key` at `now`. `Err(seconds)` when over the limit:
    /// how long until the oldest hit leaves the window.
    pub fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = now - self.window_seconds;
        state.retire(horizon);
        if let Some(queue) = state.hits.get_mut(key) {
            // Hits older than the window, should the clock have stepped.
            while queue.front().is_some_and(|&t| t <= horizon) {
                queue.pop_front();
            }
            if queue.len() >= self.limit {
                let oldest = queue.front().copied().unwrap_or(now);
                return Err((oldest + self.window_seconds - now).max(1));
            }
            queue.push_back(now);
        } else {
            if state.hits.len() >= self.capacity {
                state.evict_oldest();
            }
            state.hits.insert(key.to_string(), VecDeque::from([now]));
        }
        state.expiries.push_back((now, key.to_string()));
        Ok(())
    }

    /// How many keys are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hits
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The throttle key of a client address: the address itself for IPv4, its
/// /64 network for IPv6 (one subscriber usually holds a whole /64, so
/// single addresses would let one client spray keys).
pub fn network_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// The limits on sign-in link requests.
pub struct Throttles {
    /// Per email address: 5 links per 15 minutes.
    pub signin_by_email: Throttle,
    /// Per client network ([`network_key`]): 30 requests per 15 minutes.
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

    #[test]
    fn idle_keys_are_forgotten_as_time_passes() {
        let t = Throttle::new(3, 60);
        for i in 0..1_000 {
            t.hit(&format!("k{i}"), 100).unwrap();
        }
        assert_eq!(t.len(), 1_000);
        t.hit("late", 161).unwrap();
        assert_eq!(t.len(), 1, "every key from t=100 left the window");
    }

    #[test]
    fn a_spray_of_keys_stays_within_capacity_and_keeps_limiting_recent_ones() {
        let t = Throttle::with_capacity(2, 600, 100);
        for i in 0..10_000 {
            t.hit(&format!("spray{i}"), 100 + i / 100).unwrap();
        }
        assert!(t.len() <= 100, "{} keys", t.len());
        t.hit("victim", 300).unwrap();
        t.hit("victim", 300).unwrap();
        assert!(
            t.hit("victim", 300).is_err(),
            "a recent key is still limited"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network_key(a), network_key(b));
        assert_ne!(network_key(a), network_key(c));
        assert_eq!(network_key(a), "2001:db8:1:2::/64");
        assert_eq!(network_key("198.51.100.4".parse().unwrap()), "198.51.100.4");
        assert_eq!(
            network_key("::ffff:198.51.100.4".parse().unwrap()),
            "198.51.100.4"
        );
    }
}
